// Package vastaispec validates Vast.ai traffic against Vast.ai's official
// OpenAPI document, for tests: spectest's transport with the statuses and
// the one field where the adapter follows Vast.ai's guide rather than the
// spec.
package vastaispec

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/solanyn/gpu-operator/pkg/providers/spectest"
)

// Options are the statuses Vast.ai answers that an operation of its
// document does not declare, each with where it comes from:
//   - 401 on destroyInstance and changeBid: every authenticated operation
//     answers a bad key with 401 auth_error (declared, with the Error
//     schema, by createInstance, showInstances and createSshKey);
//   - 429 on searchOffers and getSshKeysUser: Vast.ai rate-limits every
//     endpoint (the other operations declare 429 "API requests too frequent
//     endpoint threshold=..."); the simulators inject them;
//   - 500 and 503: injected faults (no operation declares a 5xx).
func Options() []spectest.Option {
	return []spectest.Option{
		spectest.AllowStatus(http.StatusUnauthorized, "Vast.ai answers a bad key with 401 auth_error on every authenticated operation; destroyInstance and changeBid do not declare it"),
		spectest.AllowStatus(http.StatusTooManyRequests, "Vast.ai rate-limits every endpoint; searchOffers and getSshKeysUser do not declare 429"),
		spectest.AllowStatus(http.StatusInternalServerError, "injected fault"),
		spectest.AllowStatus(http.StatusServiceUnavailable, "injected fault"),
	}
}

// Transport returns a RoundTripper that validates every request and answer
// against Vast.ai's document (spectest.Transport with Options), sending the
// traffic through next (http.DefaultTransport when nil) unchanged.
//
// One deviation is validated in the spec's terms: createInstance's env.
// The spec types it as a Docker-flag string ("-e K=V -p 8000:8000"); the
// guide (creating-instances-with-api.mdx) says it "must be a JSON object
// (dict), not a Docker flag string" for environment variables to take
// effect, and Vast.ai's CLI sends an object, so the adapter sends the
// object. The validator is shown the same request with env written as the
// Docker-flag string it stands for (each "NAME": "v" as "-e NAME=v", each
// "-p ..." key as itself), so every other field is still checked; the
// request sent on is the original.
func Transport(t testing.TB, next http.RoundTripper) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	spec := spectest.Load(t, spectest.VastAI)
	return &envAsSpec{inner: spec.Transport(t, restore{next}, Options()...)}
}

type originalKey struct{}

type envAsSpec struct{ inner http.RoundTripper }

func (e *envAsSpec) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPut || !strings.HasPrefix(req.URL.Path, "/api/v0/asks/") || req.Body == nil {
		return e.inner.RoundTrip(req)
	}
	orig, err := io.ReadAll(req.Body)
	req.Body.Close()
	if err != nil {
		return nil, err
	}
	shown := asSpec(orig)
	out := req.Clone(context.WithValue(req.Context(), originalKey{}, orig))
	out.Body = io.NopCloser(bytes.NewReader(shown))
	out.ContentLength = int64(len(shown))
	out.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(shown)), nil }
	return e.inner.RoundTrip(out)
}

// asSpec rewrites an object env as the Docker-flag string of the spec.
func asSpec(body []byte) []byte {
	var doc map[string]json.RawMessage
	if json.Unmarshal(body, &doc) != nil {
		return body
	}
	var env map[string]string
	if raw, ok := doc["env"]; !ok || json.Unmarshal(raw, &env) != nil {
		return body
	}
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	flags := make([]string, 0, len(keys))
	for _, k := range keys {
		if strings.HasPrefix(k, "-") {
			flags = append(flags, k)
			continue
		}
		flags = append(flags, "-e "+k+"="+env[k])
	}
	s, _ := json.Marshal(strings.Join(flags, " "))
	doc["env"] = s
	out, err := json.Marshal(doc)
	if err != nil {
		return body
	}
	return out
}

// restore sends the original request body on.
type restore struct{ next http.RoundTripper }

func (r restore) RoundTrip(req *http.Request) (*http.Response, error) {
	if orig, ok := req.Context().Value(originalKey{}).([]byte); ok {
		req = req.Clone(req.Context())
		req.Body = io.NopCloser(bytes.NewReader(orig))
		req.ContentLength = int64(len(orig))
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(orig)), nil }
	}
	return r.next.RoundTrip(req)
}
