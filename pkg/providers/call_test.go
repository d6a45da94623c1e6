package providers

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	testclock "k8s.io/utils/clock/testing"
)

const callTestKey = "call-test-secret-key"

// answer is what the test server sends for one request.
type answer struct {
	status     int
	retryAfter string
	body       string
	// echoKey appends the request's Authorization header to the body, as a
	// careless provider might.
	echoKey bool
	// hang holds the answer until the request's context ends.
	hang bool
}

// callStep is one call through the Caller.
type callStep struct {
	name string
	// clock moves the Retry-After clock before the call; pace moves the
	// limiters' clock.
	clock, pace time.Duration
	launch      bool
	// deadline is the call's context deadline (0: none).
	deadline time.Duration
	// wait is how long the call must wait for its turn before it is sent.
	wait   time.Duration
	answer answer
	// want: the class of the error ("": success), its RetryAfter (checked
	// to the millisecond), whether the request reached the server, and the
	// body returned or a text the error must contain.
	wantClass      ErrorClass
	wantRetryAfter time.Duration
	wantSent       bool
	wantBody       string
	wantText       string
	// wantStatus is the error's HTTPStatus.
	wantStatus int
}

// testClassify is a minimal provider Classifier: 418 is an answer it cannot
// read (a plain error quoting the body), 429 is rate limited with the
// header's Retry-After (0 when absent), the rest goes by status.
func testClassify(status int, h http.Header, body []byte, now time.Time) error {
	if status == http.StatusTeapot {
		return fmt.Errorf("unreadable answer %q", body)
	}
	e := &Error{Provider: "test", HTTPStatus: status, Class: ClassForStatus(status), Message: string(body)}
	if status == http.StatusTooManyRequests {
		e.RetryAfter = ParseRetryAfter(h, now)
	}
	return e
}

func TestCaller(t *testing.T) {
	ok := answer{status: 200, body: "ok"}
	tests := []struct {
		name  string
		cfg   func(*CallConfig)
		steps []callStep
	}{
		{
			name: "a turn that fits in the deadline is waited for",
			cfg:  func(c *CallConfig) { c.RequestsPerSecond = 1 },
			steps: []callStep{
				{name: "burst", answer: ok, wantSent: true, wantBody: "ok"},
				{name: "waits 1s", deadline: time.Minute, wait: time.Second, answer: ok, wantSent: true, wantBody: "ok"},
			},
		},
		{
			name: "a turn past the deadline or CallTimeout fails at once",
			cfg:  func(c *CallConfig) { c.RequestsPerSecond = 0.1; c.CallTimeout = 5 * time.Second },
			steps: []callStep{
				{name: "burst", answer: ok, wantSent: true, wantBody: "ok"},
				{name: "deadline 1s", deadline: time.Second, wantClass: ClassRateLimited, wantRetryAfter: 10 * time.Second},
				{name: "CallTimeout 5s", wantClass: ClassRateLimited, wantRetryAfter: 10 * time.Second},
				// The refused calls gave their slots back: the next turn is
				// 10s after the first call, not 30s.
				{name: "10s later", pace: 10 * time.Second, answer: ok, wantSent: true, wantBody: "ok"},
			},
		},
		{
			name: "the launch limiter fails fast and limits launches only",
			cfg:  func(c *CallConfig) { c.LaunchInterval = time.Hour },
			steps: []callStep{
				{name: "launch", launch: true, answer: ok, wantSent: true, wantBody: "ok"},
				{name: "launch again", launch: true, deadline: 2 * time.Hour, wantClass: ClassRateLimited, wantRetryAfter: time.Hour},
				{name: "a plain call", answer: ok, wantSent: true, wantBody: "ok"},
				{name: "launch later", pace: time.Hour, launch: true, answer: ok, wantSent: true, wantBody: "ok"},
			},
		},
		{
			name: "a refused launch does not use a launch slot",
			cfg:  func(c *CallConfig) { c.LaunchInterval = time.Hour; c.RequestsPerSecond = 0.1 },
			steps: []callStep{
				{name: "plain call", answer: ok, wantSent: true, wantBody: "ok"},
				{name: "launch without a turn", launch: true, deadline: time.Second, wantClass: ClassRateLimited, wantRetryAfter: 10 * time.Second},
				{name: "launch with one", launch: true, deadline: time.Minute, wait: 10 * time.Second, answer: ok, wantSent: true, wantBody: "ok"},
			},
		},
		{
			name: "Retry-After blocks every call until it has passed",
			steps: []callStep{
				{name: "429", answer: answer{status: 429, retryAfter: "2", body: "slow down"},
					wantClass: ClassRateLimited, wantRetryAfter: 2 * time.Second, wantSent: true, wantStatus: 429, wantText: "slow down"},
				{name: "at once", answer: ok, wantClass: ClassRateLimited, wantRetryAfter: 2 * time.Second, wantText: "Retry-After"},
				{name: "a launch after 1.5s", clock: 1500 * time.Millisecond, launch: true, answer: ok,
					wantClass: ClassRateLimited, wantRetryAfter: 500 * time.Millisecond},
				{name: "after 2s", clock: 500 * time.Millisecond, answer: ok, wantSent: true, wantBody: "ok"},
			},
		},
		{
			name: "a 429 without Retry-After blocks for DefaultRetryAfter",
			steps: []callStep{
				{name: "429", answer: answer{status: 429}, wantClass: ClassRateLimited, wantRetryAfter: DefaultRetryAfter, wantSent: true, wantStatus: 429},
				{name: "at once", answer: ok, wantClass: ClassRateLimited, wantRetryAfter: DefaultRetryAfter},
				{name: "after it", clock: DefaultRetryAfter, answer: ok, wantSent: true, wantBody: "ok"},
			},
		},
		{
			name: "a 503 with Retry-After is transient and blocks nothing",
			steps: []callStep{
				{name: "503", answer: answer{status: 503, retryAfter: "30"}, wantClass: ClassTransient, wantSent: true, wantStatus: 503},
				{name: "next", answer: ok, wantSent: true, wantBody: "ok"},
			},
		},
		{
			name: "bodies are capped",
			cfg:  func(c *CallConfig) { c.MaxBody = 16 },
			steps: []callStep{
				{name: "at the cap", answer: answer{status: 200, body: strings.Repeat("a", 16)}, wantSent: true, wantBody: strings.Repeat("a", 16)},
				{name: "over it", answer: answer{status: 200, body: strings.Repeat("a", 17)},
					wantClass: ClassTransient, wantSent: true, wantStatus: 200, wantText: "larger than 16 bytes"},
				{name: "an error over it is classified on the cap", answer: answer{status: 400, body: strings.Repeat("b", 16) + "TAIL"},
					wantClass: ClassInvalid, wantSent: true, wantStatus: 400, wantText: strings.Repeat("b", 16)},
			},
		},
		{
			name: "CallTimeout ends a slow answer",
			cfg:  func(c *CallConfig) { c.CallTimeout = 50 * time.Millisecond },
			steps: []callStep{
				{name: "hangs", answer: answer{hang: true}, wantClass: ClassTransient, wantSent: true, wantText: context.DeadlineExceeded.Error()},
			},
		},
		{
			name: "no key: nothing is sent",
			cfg:  func(c *CallConfig) { c.Key = func() string { return "" } },
			steps: []callStep{
				{name: "call", answer: ok, wantClass: ClassUnauthorized, wantText: "no API key"},
			},
		},
		{
			name: "the key never reaches an error",
			steps: []callStep{
				{name: "echoed in a 400", answer: answer{status: 400, body: "you sent ", echoKey: true},
					wantClass: ClassInvalid, wantSent: true, wantStatus: 400, wantText: "you sent Bearer [redacted]"},
				{name: "echoed into an unreadable answer", answer: answer{status: 418, body: "tea for ", echoKey: true},
					wantClass: ClassInvalid, wantSent: true, wantStatus: 418, wantText: "tea for Bearer [redacted]"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				mu      sync.Mutex
				current answer
				sent    int
				auth    []string
			)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				a := current
				sent++
				auth = append(auth, r.Header.Get("Authorization"))
				mu.Unlock()
				if a.hang {
					<-r.Context().Done()
					return
				}
				if a.retryAfter != "" {
					w.Header().Set("Retry-After", a.retryAfter)
				}
				w.WriteHeader(a.status)
				body := a.body
				if a.echoKey {
					body += r.Header.Get("Authorization")
				}
				fmt.Fprint(w, body)
			}))
			t.Cleanup(srv.Close)
			sentSoFar := func() int {
				mu.Lock()
				defer mu.Unlock()
				return sent
			}

			retryClock := testclock.NewFakePassiveClock(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
			pace := testclock.NewFakeClock(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
			cfg := CallConfig{Provider: "test", Key: func() string { return callTestKey }, Classify: testClassify,
				HTTPClient: srv.Client(), Clock: retryClock}
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			c, err := NewCaller(cfg)
			if err != nil {
				t.Fatal(err)
			}
			c.pace = pace

			for _, st := range tt.steps {
				retryClock.SetTime(retryClock.Now().Add(st.clock))
				pace.Step(st.pace)
				mu.Lock()
				current = st.answer
				mu.Unlock()
				before := sentSoFar()

				ctx := context.Background()
				if st.deadline > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, st.deadline)
					defer cancel()
				}
				type result struct {
					body []byte
					err  error
				}
				done := make(chan result, 1)
				go func() {
					call := c.Call
					if st.launch {
						call = c.CallLaunch
					}
					body, err := call(ctx, "Op", func(ctx context.Context) (*http.Response, error) {
						req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/thing", nil)
						if err != nil {
							return nil, err
						}
						return c.Do(req)
					})
					done <- result{body, err}
				}()
				if st.wait > 0 {
					// The call waits for its turn on the pace clock: not sent
					// a moment before it, sent when it comes.
					waitFor(t, st.name, pace.HasWaiters)
					pace.Step(st.wait - time.Millisecond)
					if !pace.HasWaiters() || sentSoFar() != before {
						t.Fatalf("%s: the call did not wait %s for its turn", st.name, st.wait)
					}
					pace.Step(time.Millisecond)
				}
				var r result
				select {
				case r = <-done:
				case <-time.After(10 * time.Second):
					t.Fatalf("%s: the call never returned", st.name)
				}

				if got := sentSoFar() - before; got != map[bool]int{false: 0, true: 1}[st.wantSent] {
					t.Errorf("%s: %d requests reached the server, want sent=%v", st.name, got, st.wantSent)
				}
				if st.wantSent {
					mu.Lock()
					if got := auth[len(auth)-1]; got != "Bearer "+callTestKey {
						t.Errorf("%s: Authorization %q, want the bearer key", st.name, got)
					}
					mu.Unlock()
				}
				if st.wantClass == "" {
					if r.err != nil || string(r.body) != st.wantBody {
						t.Errorf("%s: got %q, %v; want %q", st.name, r.body, r.err, st.wantBody)
					}
					continue
				}
				var pe *Error
				if !errors.As(r.err, &pe) {
					t.Fatalf("%s: error %v (%T), want a *Error", st.name, r.err, r.err)
				}
				if pe.Class != st.wantClass || pe.Provider != "test" || pe.Operation != "Op" || pe.HTTPStatus != st.wantStatus {
					t.Errorf("%s: got %s %s %s HTTP %d (%v), want test Op %s HTTP %d",
						st.name, pe.Provider, pe.Operation, pe.Class, pe.HTTPStatus, r.err, st.wantClass, st.wantStatus)
				}
				if d := pe.RetryAfter - st.wantRetryAfter; d < -time.Millisecond || d > time.Millisecond {
					t.Errorf("%s: RetryAfter %s, want %s", st.name, pe.RetryAfter, st.wantRetryAfter)
				}
				if msg := r.err.Error(); !strings.Contains(msg, st.wantText) || strings.Contains(msg, callTestKey) {
					t.Errorf("%s: error %q, want it to contain %q and not the key", st.name, msg, st.wantText)
				}
			}
		})
	}
}

// waitFor polls cond until it holds, failing the test after 10s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: timed out", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// A request that a generated client sends without Call goes through the
// same checks, named by its method and path.
func TestCallerDoWithoutCall(t *testing.T) {
	c, err := NewCaller(CallConfig{Provider: "test", Key: func() string { return "" }, Classify: testClassify})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:1/api/things", nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Do(req)
	var pe *Error
	if !errors.As(err, &pe) || pe.Class != ClassUnauthorized || pe.Operation != "GET /api/things" {
		t.Errorf("Do = %v, want Unauthorized for GET /api/things", err)
	}
}

func TestNewCallerValidates(t *testing.T) {
	key := func() string { return "k" }
	for name, cfg := range map[string]CallConfig{
		"no provider": {Key: key, Classify: testClassify},
		"no key":      {Provider: "test", Classify: testClassify},
		"no classify": {Provider: "test", Key: key},
		"NaN rate":    {Provider: "test", Key: key, Classify: testClassify, RequestsPerSecond: nan()},
	} {
		if _, err := NewCaller(cfg); err == nil {
			t.Errorf("%s: NewCaller succeeded", name)
		}
	}
}

func nan() float64 {
	f, _ := strconv.ParseFloat("NaN", 64)
	return f
}

func TestOrDefault(t *testing.T) {
	if OrDefault(0, 2.0) != 2 || OrDefault(-1, 2.0) != -1 || OrDefault(time.Duration(5), time.Second) != 5 {
		t.Error("OrDefault: zero takes the default, anything else stays")
	}
}

// TestReadBody: a declared length sizes the buffer, but what arrives is the
// body, within the cap, whether it is shorter or longer than declared.
func TestReadBody(t *testing.T) {
	for _, tc := range []struct {
		name     string
		body     string
		declared int64
		max      int64
		want     string
		tooLarge bool
	}{
		{name: "as declared", body: "abcdef", declared: 6, max: 16, want: "abcdef"},
		{name: "undeclared", body: "abcdef", declared: -1, max: 16, want: "abcdef"},
		{name: "shorter than declared", body: "abc", declared: 6, max: 16, want: "abc"},
		{name: "longer than declared", body: "abcdefgh", declared: 6, max: 16, want: "abcdefgh"},
		{name: "longer than declared and the cap", body: "abcdefghijklmnopqrs", declared: 6, max: 16, want: "abcdefghijklmnop", tooLarge: true},
		{name: "declared over the cap", body: "abcdefghijklmnopqrs", declared: 19, max: 16, want: "abcdefghijklmnop", tooLarge: true},
		{name: "no cap", body: "abcdefghijklmnopqrs", declared: 19, want: "abcdefghijklmnopqrs"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := &Caller{maxBody: tc.max}
			got, tooLarge, err := c.readBody(strings.NewReader(tc.body), tc.declared)
			if err != nil || string(got) != tc.want || tooLarge != tc.tooLarge {
				t.Errorf("readBody = %q, %v, %v; want %q, %v, nil", got, tooLarge, err, tc.want, tc.tooLarge)
			}
		})
	}
}
