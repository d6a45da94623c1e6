// Package spectest checks HTTP traffic against a provider's official OpenAPI
// document, so that an adapter and a simulator written from the same
// assumptions cannot agree with each other and drift from the provider
// unnoticed.
//
// Load reads one provider's document from the shared provider-specs
// directory (never from a copy in the repository); Transport wraps an
// http.RoundTripper so that every request an adapter sends and every
// response it gets back, error responses included, is validated with
// kin-openapi's openapi3filter; Middleware does the same around an
// http.Handler. A mismatch is a t.Errorf naming the provider, the method,
// the path, the status and the validator's message.
//
// OpenAPI 3.1 documents (Lambda's, RunPod's REST v2, Vast.ai's) are
// validated as 3.1, with JSON Schema 2020-12 semantics: kin-openapi reads
// them natively, so they are not rewritten into 3.0 first: the rewrite that
// feeds oapi-codegen (hack/providers/openapi30) drops keywords that only
// constrain validation, "unevaluatedProperties" and "if"/"then" among them
// (RunPod's CreatePodRequest has both), and validation must keep them.
package spectest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

// EnvSpecs names the environment variable that overrides where the
// provider-specs directory is.
const EnvSpecs = "PROVIDER_SPECS"

// VastAI names Vast.ai's document, as providers.VastAI names its adapter.
const VastAI = providers.VastAI

// document says where one provider's OpenAPI document is, relative to the
// provider-specs directory, and which of its known defects are tolerated.
type document struct {
	file string
	// validate relaxes doc.Validate for defects of the published document
	// that say nothing about the shape of traffic.
	validate []openapi3.ValidationOption
	// trailingSlash: a request path ending in "/" that matches no path of
	// the document is matched again without the slash.
	trailingSlash bool
}

// documents are the official documents, one per provider (see each
// directory's SOURCE.md).
var documents = map[string]document{
	providers.LambdaLabs: {file: "lambda/openapi-1.8.3.json"},
	// REST v1 was retired on 2026-11-15; v2 is the only RunPod API.
	providers.RunPod:     {file: "runpod/rest-v2-openapi.json"},
	providers.Paperspace: {file: "paperspace/openapi.json"},
	VastAI: {
		file: "vastai/openapi.yaml",
		// Three of its examples contradict their own schemas (the
		// Instance example, two in POST /api/v0/bundles); examples are
		// documentation and are not used to validate traffic.
		// One pattern (the e-mail of POST /api/v0/users, signing up)
		// uses a lookahead, "(?!.*@vast)", which Go's regexp cannot
		// compile; a request checked against it would be reported.
		validate: []openapi3.ValidationOption{
			openapi3.DisableExamplesValidation(),
			openapi3.DisableSchemaPatternValidation(),
		},
		// The document writes its paths without the trailing slash that
		// Vast.ai's own guide (creating-instances-with-api.mdx) and CLI
		// send: PUT /api/v0/asks/{id}/, POST /api/v0/bundles/.
		trailingSlash: true,
	},
}

// Spec is one provider's loaded OpenAPI document and a router over it.
type Spec struct {
	// Provider is the name Load was given.
	Provider string
	// File is the document's path on disk.
	File string

	doc           *openapi3.T
	router        routers.Router
	trailingSlash bool
}

// Doc returns the parsed document. It is shared between tests and must not
// be modified.
func (s *Spec) Doc() *openapi3.T { return s.doc }

var (
	loadedMu sync.Mutex
	loaded   = map[string]*Spec{} // by File
)

// Load reads, validates and routes the provider's official OpenAPI
// document. provider is providers.LambdaLabs, providers.RunPod,
// providers.Paperspace or VastAI. A missing provider-specs directory or
// document, or a document kin-openapi rejects, fails the test: it is never
// a skip. Documents are parsed once per test binary.
func Load(t testing.TB, provider string) *Spec {
	t.Helper()
	d, ok := documents[provider]
	if !ok {
		t.Fatalf("spectest: no OpenAPI document known for provider %q", provider)
	}
	dir := Dir(t)
	file := filepath.Join(dir, filepath.FromSlash(d.file))
	loadedMu.Lock()
	defer loadedMu.Unlock()
	if s, ok := loaded[file]; ok {
		return s
	}
	if _, err := os.Stat(file); err != nil {
		t.Fatalf("spectest: %s: the OpenAPI document is missing from %s: %v", provider, dir, err)
	}
	s, err := load(provider, file, d)
	if err != nil {
		t.Fatalf("spectest: %s: %v", provider, err)
	}
	loaded[file] = s
	return s
}

func load(provider, file string, d document) (*Spec, error) {
	loader := openapi3.NewLoader()
	loader.IsExternalRefsAllowed = false
	doc, err := loader.LoadFromFile(file)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", file, err)
	}
	if err := doc.Validate(context.Background(), d.validate...); err != nil {
		return nil, fmt.Errorf("%s is not a valid OpenAPI %s document: %w", file, doc.OpenAPI, err)
	}
	doc.Servers = relativeServers(doc.Servers)
	for _, item := range doc.Paths.Map() {
		if len(item.Servers) > 0 {
			item.Servers = relativeServers(item.Servers)
		}
	}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("routing %s: %w", file, err)
	}
	return &Spec{Provider: provider, File: file, doc: doc, router: router, trailingSlash: d.trailingSlash}, nil
}

// relativeServers keeps only the base path of each server URL, so that a
// request to any host (a test server on 127.0.0.1, a simulator) matches a
// path of the document exactly when it would on the provider's own host:
// Paperspace's https://api.paperspace.com/v1 becomes /v1, and a request for
// /v1/machines matches the document's /machines; Lambda's
// https://cloud.lambda.ai/ becomes /, and its paths carry /api/v1 themselves.
func relativeServers(in openapi3.Servers) openapi3.Servers {
	if len(in) == 0 {
		return openapi3.Servers{{URL: "/"}}
	}
	var out openapi3.Servers
	seen := map[string]bool{}
	for _, srv := range in {
		p := serverPath(srv.URL)
		if seen[p] {
			continue
		}
		seen[p] = true
		rel := &openapi3.Server{URL: p, Description: srv.Description}
		if strings.Contains(p, "{") {
			rel.Variables = srv.Variables
		}
		out = append(out, rel)
	}
	return out
}

// serverPath is the path of a server URL, which may hold {variables} in its
// host and so cannot always be parsed by net/url: "/" when it has none.
func serverPath(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		u = u[i+len("://"):]
		j := strings.IndexByte(u, '/')
		if j < 0 {
			return "/"
		}
		u = u[j:]
	}
	if u = strings.TrimRight(u, "/"); u == "" {
		return "/"
	}
	if !strings.HasPrefix(u, "/") {
		u = "/" + u
	}
	return u
}

// Dir returns the provider-specs directory: $PROVIDER_SPECS when set,
// otherwise ../shared/provider-specs relative to the module root (the
// nearest directory above the working directory that holds go.mod). A
// directory that does not exist fails the test, naming the path.
func Dir(t testing.TB) string {
	t.Helper()
	dir, err := specsDir()
	if err != nil {
		t.Fatalf("spectest: %v", err)
	}
	return dir
}

func specsDir() (string, error) {
	dir := os.Getenv(EnvSpecs)
	from := "$" + EnvSpecs
	if dir == "" {
		root, err := moduleRoot()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, "..", "shared", "provider-specs")
		from = "the module root " + root
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("provider-specs directory %s (from %s) is missing: %w; set %s to where the providers' OpenAPI documents are", abs, from, err, EnvSpecs)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("provider-specs %s (from %s) is not a directory", abs, from)
	}
	return abs, nil
}

// moduleRoot walks up from the working directory to the directory holding
// go.mod.
func moduleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", err
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod in %s or any directory above it; set %s", wd, EnvSpecs)
		}
		dir = parent
	}
}
