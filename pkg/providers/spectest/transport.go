package spectest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
)

// maxShown is how much of an offending body a failure quotes.
const maxShown = 1024

// Option tunes a Transport or a Middleware.
type Option func(*options)

type options struct {
	allowed map[int]string // undeclared statuses accepted, with the reason
}

// AllowStatus accepts responses with status even where the operation does
// not declare it, and without validating their body. It is for statuses the
// provider documents outside the operations (Lambda's rate limits are only
// described in prose); reason says where, and is logged when it applies.
// Undeclared statuses fail by default.
func AllowStatus(status int, reason string) Option {
	return func(o *options) {
		if o.allowed == nil {
			o.allowed = map[int]string{}
		}
		o.allowed[status] = reason
	}
}

// Transport returns a RoundTripper that sends each request through next
// (http.DefaultTransport when nil) and validates it and its response
// against the document. Every mismatch is a t.Errorf; the exchange itself
// goes on unchanged, and the response body the caller reads is the one the
// server sent. Wire it into an adapter with
//
//	spec := spectest.Load(t, providers.LambdaLabs)
//	client := &http.Client{Transport: spec.Transport(t, nil)}
//	lambda.New(lambda.Config{BaseURL: srv.URL, HTTPClient: client, ...})
//
// What is checked: the request matches a path and method of the document;
// its parameters and body match their schemas (a body on an operation that
// takes none is a failure); the credentials its security requirements name
// are present (their value is not checked: validation is about shapes); the
// response status is declared by the operation, or its "default" applies;
// the response's content type is declared for that status and its body
// matches the schema. application/problem+json bodies (RunPod's errors) are
// decoded as JSON.
func (s *Spec) Transport(t testing.TB, next http.RoundTripper, opts ...Option) http.RoundTripper {
	if next == nil {
		next = http.DefaultTransport
	}
	o := options{}
	for _, opt := range opts {
		opt(&o)
	}
	return &transport{spec: s, t: t, next: next, opts: o}
}

// Middleware validates the requests a handler (a simulator) receives and
// the responses it writes, as Transport does on the client side. The
// handler's response is buffered whole before it is validated and sent on.
func (s *Spec) Middleware(t testing.TB, next http.Handler, opts ...Option) http.Handler {
	rt := s.Transport(t, handlerTransport{next}, opts...)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		resp, err := rt.RoundTrip(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer resp.Body.Close()
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	})
}

// handlerTransport serves a request with a handler in-process.
type handlerTransport struct{ h http.Handler }

func (h handlerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	h.h.ServeHTTP(rec, req)
	return rec.Result(), nil
}

type transport struct {
	spec *Spec
	t    testing.TB
	next http.RoundTripper
	opts options
}

func (rt *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := drain(req.Body)
	if err != nil {
		return nil, fmt.Errorf("spectest: reading the request body: %w", err)
	}
	out := req.Clone(req.Context())
	out.Body, out.GetBody = bodyOf(req.Body, body)

	in, err := rt.spec.validateRequest(req, body)
	if err != nil {
		rt.t.Errorf("spectest: %s: %s %s: request does not match %s: %s%s",
			rt.spec.Provider, req.Method, req.URL.RequestURI(), rt.spec.File, message(err), quote(body))
	}

	resp, err := rt.next.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	respBody, err := drain(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("spectest: reading the response body: %w", err)
	}
	resp.Body = io.NopCloser(bytes.NewReader(respBody))
	if in == nil {
		return resp, nil // no operation to check the response against: reported above
	}
	if err := rt.validateResponse(in, resp, respBody); err != nil {
		rt.t.Errorf("spectest: %s: %s %s -> %d: response does not match %s: %s%s",
			rt.spec.Provider, req.Method, req.URL.RequestURI(), resp.StatusCode, rt.spec.File, message(err), quote(respBody))
	}
	return resp, nil
}

// validateRequest finds the request's operation and validates the request
// against it. The returned input (nil when no operation matches) is what
// its response is validated with.
func (s *Spec) validateRequest(req *http.Request, body []byte) (*openapi3filter.RequestValidationInput, error) {
	vreq := req.Clone(context.Background())
	vreq.Body, vreq.GetBody = bodyOf(req.Body, body)
	route, params, err := s.router.FindRoute(vreq)
	if errors.Is(err, routers.ErrPathNotFound) && s.trailingSlash && len(vreq.URL.Path) > 1 && strings.HasSuffix(vreq.URL.Path, "/") {
		u := *vreq.URL
		u.Path = strings.TrimSuffix(u.Path, "/")
		u.RawPath = ""
		vreq.URL = &u
		route, params, err = s.router.FindRoute(vreq)
	}
	switch {
	case errors.Is(err, routers.ErrPathNotFound):
		return nil, errors.New("no path of the document matches")
	case errors.Is(err, routers.ErrMethodNotAllowed):
		return nil, fmt.Errorf("the document's path has no %s operation", req.Method)
	case err != nil:
		return nil, err
	}
	in := &openapi3filter.RequestValidationInput{
		Request:    vreq,
		PathParams: params,
		Route:      route,
		Options:    validationOptions(),
	}
	return in, openapi3filter.ValidateRequest(vreq.Context(), in)
}

func (rt *transport) validateResponse(in *openapi3filter.RequestValidationInput, resp *http.Response, body []byte) error {
	op := in.Route.Operation
	if reason, ok := rt.opts.allowed[resp.StatusCode]; ok && op.Responses.Status(resp.StatusCode) == nil && op.Responses.Default() == nil {
		rt.t.Logf("spectest: %s: %s %s -> %d: status not declared by the operation, allowed: %s",
			rt.spec.Provider, in.Request.Method, in.Request.URL.Path, resp.StatusCode, reason)
		return nil
	}
	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Body:                   io.NopCloser(bytes.NewReader(body)),
		Options:                in.Options,
	}
	err := openapi3filter.ValidateResponse(context.Background(), out)
	var re *openapi3filter.ResponseError
	if errors.As(err, &re) && re.Reason == "status is not supported" {
		return fmt.Errorf("status %d is not declared by operation %s, which declares %s",
			resp.StatusCode, operationName(in.Route), strings.Join(statuses(op.Responses), ", "))
	}
	return err
}

// validationOptions are the openapi3filter options for every check.
func validationOptions() *openapi3filter.Options {
	o := &openapi3filter.Options{
		IncludeResponseStatus:             true,
		RejectWhenRequestBodyNotSpecified: true,
		MultiError:                        true,
		SkipSettingDefaults:               true,
		AuthenticationFunc:                credentialsPresent,
	}
	o.WithCustomSchemaErrorFunc(schemaMessage)
	return o
}

// credentialsPresent accepts a security scheme when the request carries
// credentials of its kind, whatever their value.
func credentialsPresent(_ context.Context, in *openapi3filter.AuthenticationInput) error {
	ss := in.SecurityScheme
	req := in.RequestValidationInput.Request
	switch ss.Type {
	case "http":
		scheme, cred, _ := strings.Cut(req.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, ss.Scheme) || strings.TrimSpace(cred) == "" {
			return fmt.Errorf("no %q credentials in the Authorization header (scheme %q)", ss.Scheme, in.SecuritySchemeName)
		}
	case "apiKey":
		var v string
		switch ss.In {
		case "header":
			v = req.Header.Get(ss.Name)
		case "query":
			v = req.URL.Query().Get(ss.Name)
		case "cookie":
			if c, err := req.Cookie(ss.Name); err == nil {
				v = c.Value
			}
		}
		if v == "" {
			return fmt.Errorf("no API key in %s %q (scheme %q)", ss.In, ss.Name, in.SecuritySchemeName)
		}
	default: // oauth2, openIdConnect: a bearer token
		if scheme, cred, _ := strings.Cut(req.Header.Get("Authorization"), " "); !strings.EqualFold(scheme, "bearer") || cred == "" {
			return fmt.Errorf("no bearer token in the Authorization header (scheme %q)", in.SecuritySchemeName)
		}
	}
	return nil
}

// schemaMessage keeps a schema error to its place and reason: by default
// kin-openapi appends the whole schema and value, which for a list of
// machines is pages long.
func schemaMessage(err *openapi3.SchemaError) string {
	if err.Origin != nil {
		return "" // a wrapper: the default prints the path and the cause
	}
	if errors.Unwrap(err) != nil {
		// Converted from the JSON Schema 2020-12 validator (3.1
		// documents): its reason already names the place. It calls a
		// property refused by "unevaluatedProperties: false" a "false
		// schema".
		if at, ok := strings.CutSuffix(err.Reason, ": false schema"); ok {
			return at + ": property not allowed"
		}
		return err.Reason
	}
	reason := err.Reason
	if reason == "" {
		reason = fmt.Sprintf("doesn't match schema %q", err.SchemaField)
	}
	return fmt.Sprintf("at %q: %s", "/"+strings.Join(err.JSONPointer(), "/"), reason)
}

func operationName(r *routers.Route) string {
	if id := r.Operation.OperationID; id != "" {
		return fmt.Sprintf("%s (%s %s)", id, r.Method, r.Path)
	}
	return r.Method + " " + r.Path
}

func statuses(r *openapi3.Responses) []string {
	var out []string
	for code := range r.Map() {
		out = append(out, code)
	}
	slices.Sort(out)
	return out
}

// drain reads and closes a body; nil and http.NoBody read as nil.
func drain(rc io.ReadCloser) ([]byte, error) {
	if rc == nil || rc == http.NoBody {
		return nil, nil
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// bodyOf makes a fresh, re-readable body from data read out of orig; a
// request that had no body keeps none.
func bodyOf(orig io.ReadCloser, data []byte) (io.ReadCloser, func() (io.ReadCloser, error)) {
	if orig == nil {
		return nil, nil
	}
	if orig == http.NoBody {
		return http.NoBody, func() (io.ReadCloser, error) { return http.NoBody, nil }
	}
	get := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }
	b, _ := get()
	return b, get
}

// doubledPlace is a place named twice, once by kin-openapi's wrapper and
// once by the JSON Schema 2020-12 validator's own message.
var doubledPlace = regexp.MustCompile(`(?i)error at "[^"]*": (at '[^']*':)`)

// message is a validator error as a failure shows it.
func message(err error) string {
	s := strings.ReplaceAll(err.Error(), "validation failed due to: ", "")
	return doubledPlace.ReplaceAllString(s, "$1")
}

// quote shows a body in a failure, cut to maxShown bytes.
func quote(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if len(b) > maxShown {
		return fmt.Sprintf("\n  body (first %d of %d bytes): %s…", maxShown, len(b), b[:maxShown])
	}
	return "\n  body: " + string(b)
}
