package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestPushUsesDockerConfigCredentials pushes the built layout to a registry
// on loopback that demands basic auth, with the credentials only in a docker
// config.json (what docker login writes), and reads the index back.
func TestPushUsesDockerConfigCredentials(t *testing.T) {
	res, dir := builtImage(t)
	const user, pass = "ci", "s3cret"
	var unauthorized atomic.Int32
	reg := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, ok := r.BasicAuth(); !ok || u != user || p != pass {
			unauthorized.Add(1)
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")

	cfg := t.TempDir()
	auth := map[string]any{"auths": map[string]any{host: map[string]string{
		"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))}}}
	b, err := json.Marshal(auth)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cfg, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("DOCKER_CONFIG", cfg)
	t.Setenv("REGISTRY_AUTH_FILE", filepath.Join(cfg, "none.json"))

	ref := host + "/solanyn/gpu-operator:test"
	pushed, err := push(context.Background(), filepath.Join(dir, ociLayoutDir), ref)
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	if want := host + "/solanyn/gpu-operator@" + res.Digest.String(); pushed != want {
		t.Errorf("push returned %q, want %q", pushed, want)
	}
	if unauthorized.Load() == 0 {
		t.Error("the registry never challenged: the test does not show credentials were needed")
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	got, err := remote.Index(r, remote.WithAuth(&authn.Basic{Username: user, Password: pass}))
	if err != nil {
		t.Fatalf("reading back %s: %v", ref, err)
	}
	if d, err := got.Digest(); err != nil || d != res.Digest {
		t.Errorf("registry holds %s (%v), want %s", d, err, res.Digest)
	}
	m, err := got.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, desc := range m.Manifests {
		img, err := got.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := img.Layers(); err != nil {
			t.Errorf("%s: %v", desc.Platform, err)
		}
	}

	t.Setenv("DOCKER_CONFIG", t.TempDir())
	if _, err := push(context.Background(), filepath.Join(dir, ociLayoutDir), host+"/solanyn/gpu-operator:nocreds"); err == nil {
		t.Error("push without credentials succeeded against a registry that demands them")
	}
}
