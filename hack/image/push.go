package main

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// push sends the image index in the OCI layout at from (what build wrote)
// and both its images to ref, authenticating as docker login, podman login
// or a configured credential helper would (authn.DefaultKeychain reads
// $DOCKER_CONFIG/config.json, else ~/.docker/config.json, and
// $REGISTRY_AUTH_FILE or ${XDG_RUNTIME_DIR}/containers/auth.json). It returns
// the pushed reference by digest.
func push(ctx context.Context, from, ref string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("image name: %w", err)
	}
	root, err := layout.ImageIndexFromPath(from)
	if err != nil {
		return "", fmt.Errorf("reading %s (run make image first): %w", from, err)
	}
	m, err := root.IndexManifest()
	if err != nil {
		return "", err
	}
	if len(m.Manifests) != 1 {
		return "", fmt.Errorf("%s holds %d entries, want the one image index build writes", from, len(m.Manifests))
	}
	idx, err := root.ImageIndex(m.Manifests[0].Digest)
	if err != nil {
		return "", err
	}
	if err := remote.WriteIndex(r, idx, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
		return "", fmt.Errorf("pushing to %s: %w", r, err)
	}
	return r.Context().Digest(m.Manifests[0].Digest.String()).String(), nil
}
