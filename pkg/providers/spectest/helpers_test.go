package spectest

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
)

// recorder is a testing.TB that records failures instead of failing, so a
// test can prove the validator catches a drift and still pass.
type recorder struct {
	testing.TB
	mu     sync.Mutex
	errs   []string
	fatals []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func (r *recorder) Error(args ...any) { r.Errorf("%s", fmt.Sprint(args...)) }

// Fatalf records and stops the goroutine, as testing.T's does; call what
// may fail fatally through fatal.
func (r *recorder) Fatalf(format string, args ...any) {
	r.mu.Lock()
	r.fatals = append(r.fatals, fmt.Sprintf(format, args...))
	r.mu.Unlock()
	runtime.Goexit()
}

func (r *recorder) Fatal(args ...any) { r.Fatalf("%s", fmt.Sprint(args...)) }

func (r *recorder) failures() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append(append([]string(nil), r.errs...), r.fatals...)
}

// fatal runs f with r on its own goroutine, so that r.Fatalf can stop it.
func (r *recorder) fatal(f func(testing.TB)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
}

// exchange is one request an adapter sends and the answer a server gives.
type exchange struct {
	name string
	// request
	method, path, reqBody string
	// auth is the Authorization header; "" sends "Bearer test-key", "-"
	// sends none.
	auth string
	// header are more request headers.
	header map[string]string
	// response
	status      int
	contentType string // "" is application/json
	respBody    string
	// want are substrings the single reported failure must contain; none
	// means the exchange must pass.
	want []string
}

// run plays the exchange through spec.Transport against an httptest server
// and checks what the validator reported, and that neither side lost a body.
func (e exchange) run(t *testing.T, spec *Spec, opts ...Option) {
	t.Helper()
	var gotReq string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		gotReq = string(b)
		ct := e.contentType
		if ct == "" {
			ct = "application/json"
		}
		w.Header().Set("Content-Type", ct)
		w.WriteHeader(e.status)
		_, _ = io.WriteString(w, e.respBody)
	}))
	defer srv.Close()

	rec := &recorder{TB: t}
	client := &http.Client{Transport: spec.Transport(rec, nil, opts...)}
	var body io.Reader
	if e.reqBody != "" {
		body = strings.NewReader(e.reqBody)
	}
	req, err := http.NewRequest(e.method, srv.URL+e.path, body)
	if err != nil {
		t.Fatal(err)
	}
	if e.reqBody != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	switch e.auth {
	case "":
		req.Header.Set("Authorization", "Bearer test-key")
	case "-":
	default:
		req.Header.Set("Authorization", e.auth)
	}
	for k, v := range e.header {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != e.respBody {
		t.Errorf("caller read body %q after validation, server sent %q", got, e.respBody)
	}
	if gotReq != e.reqBody {
		t.Errorf("server read request body %q, client sent %q", gotReq, e.reqBody)
	}
	if resp.StatusCode != e.status {
		t.Errorf("caller got status %d, server sent %d", resp.StatusCode, e.status)
	}

	fails := rec.failures()
	if len(e.want) == 0 {
		for _, f := range fails {
			t.Errorf("valid exchange reported: %s", f)
		}
		return
	}
	if len(fails) != 1 {
		t.Fatalf("want exactly one failure containing %q, got %d: %q", e.want, len(fails), fails)
	}
	for _, w := range e.want {
		if !strings.Contains(fails[0], w) {
			t.Errorf("failure does not mention %q:\n%s", w, fails[0])
		}
	}
	t.Logf("caught as expected: %s", fails[0])
}

func runAll(t *testing.T, spec *Spec, cases []exchange) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t, spec)
		})
	}
}
