package spectest

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

func TestLoad(t *testing.T) {
	for _, c := range []struct {
		provider, version string
		// servers are the base paths left once hosts are dropped.
		servers []string
		path    string // one path of the document
	}{
		{providers.LambdaLabs, "3.1.0", []string{"/"}, "/api/v1/instances"},
		{providers.RunPod, "3.1.0", []string{"/"}, "/v2/pods"},
		{providers.Paperspace, "3.0.3", []string{"/v1"}, "/machines"},
		{VastAI, "3.1.0", []string{"/"}, "/api/v0/asks/{id}"},
	} {
		t.Run(c.provider, func(t *testing.T) {
			t.Parallel()
			s := Load(t, c.provider)
			if s.Provider != c.provider {
				t.Errorf("Provider = %q, want %q", s.Provider, c.provider)
			}
			if got := s.Doc().OpenAPI; got != c.version {
				t.Errorf("openapi = %q, want %q (the document, not a rewrite of it)", got, c.version)
			}
			var servers []string
			for _, srv := range s.Doc().Servers {
				servers = append(servers, srv.URL)
			}
			if strings.Join(servers, " ") != strings.Join(c.servers, " ") {
				t.Errorf("servers = %q, want %q", servers, c.servers)
			}
			if s.Doc().Paths.Value(c.path) == nil {
				t.Errorf("document has no path %s", c.path)
			}
			if again := Load(t, c.provider); again != s {
				t.Error("a second Load parsed the document again")
			}
		})
	}
}

func TestLoadUnknownProvider(t *testing.T) {
	rec := &recorder{TB: t}
	rec.fatal(func(tb testing.TB) { Load(tb, "coreweave") })
	if f := rec.failures(); len(f) != 1 || !strings.Contains(f[0], `"coreweave"`) {
		t.Errorf("failures = %q, want one fatal naming the provider", f)
	}
}

func TestServerPath(t *testing.T) {
	for in, want := range map[string]string{
		"https://cloud.lambda.ai/":          "/",
		"https://api.runpod.io":             "/",
		"https://api.paperspace.com/v1":     "/v1",
		"https://api.paperspace.com/v1/":    "/v1",
		"https://{region}.example.com/v2/x": "/v2/x",
		"/api":                              "/api",
		"":                                  "/",
	} {
		if got := serverPath(in); got != want {
			t.Errorf("serverPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// The specs directory comes from $PROVIDER_SPECS when set; a missing one is
// a fatal failure naming the path, never a skip.
func TestDir(t *testing.T) {
	t.Run("Default", func(t *testing.T) {
		t.Setenv(EnvSpecs, "")
		wd, err := os.Getwd()
		if err != nil {
			t.Fatal(err)
		}
		// This package is pkg/providers/spectest in the module.
		want := filepath.Join(wd, "..", "..", "..", "..", "shared", "provider-specs")
		if got := Dir(t); got != filepath.Clean(want) {
			t.Errorf("Dir = %s, want %s", got, filepath.Clean(want))
		}
	})
	t.Run("FromEnv", func(t *testing.T) {
		dir := Dir(t)
		t.Setenv(EnvSpecs, dir)
		if got := Dir(t); got != dir {
			t.Errorf("Dir = %s, want $%s = %s", got, EnvSpecs, dir)
		}
	})
	t.Run("Missing", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "no-such-specs")
		t.Setenv(EnvSpecs, missing)
		rec := &recorder{TB: t}
		rec.fatal(func(tb testing.TB) { Load(tb, providers.LambdaLabs) })
		f := rec.failures()
		if len(f) != 1 || !strings.Contains(f[0], missing) || !strings.Contains(f[0], EnvSpecs) {
			t.Errorf("failures = %q, want one fatal naming %s and %s", f, missing, EnvSpecs)
		}
	})
	t.Run("DocumentMissing", func(t *testing.T) {
		empty := t.TempDir()
		t.Setenv(EnvSpecs, empty)
		rec := &recorder{TB: t}
		rec.fatal(func(tb testing.TB) { Load(tb, providers.RunPod) })
		f := rec.failures()
		if len(f) != 1 || !strings.Contains(f[0], filepath.Join(empty, "runpod", "rest-v2-openapi.json")) {
			t.Errorf("failures = %q, want one fatal naming the missing document", f)
		}
	})
}

// Middleware checks what a simulator serves, from the server side.
func TestMiddleware(t *testing.T) {
	t.Parallel()
	spec := Load(t, providers.RunPod)
	sim := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Path == "/v2/pods" {
			_, _ = io.WriteString(w, `{"pods": []}`)
			return
		}
		w.WriteHeader(http.StatusNotFound) // drift: RunPod's errors are problem+json
		_, _ = io.WriteString(w, `{"error": "not found"}`)
	})
	rec := &recorder{TB: t}
	srv := httptest.NewServer(spec.Middleware(rec, sim))
	defer srv.Close()

	get := func(path string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer test-key")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/v2/pods"); code != 200 || body != `{"pods": []}` {
		t.Errorf("GET /v2/pods = %d %q, want the simulator's answer", code, body)
	}
	if f := rec.failures(); len(f) != 0 {
		t.Errorf("valid exchange reported: %q", f)
	}
	if code, body := get("/v2/pods/abc"); code != 404 || body != `{"error": "not found"}` {
		t.Errorf("GET /v2/pods/abc = %d %q, want the simulator's answer", code, body)
	}
	f := rec.failures()
	if len(f) != 1 || !strings.Contains(f[0], "GET /v2/pods/abc -> 404") || !strings.Contains(f[0], "application/json") {
		t.Errorf("failures = %q, want one about the 404's content type", f)
	}
}
