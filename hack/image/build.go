package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/solanyn/gpu-operator/pkg/version"
)

const (
	// defaultRepository is where releases are published; with version.Version
	// as the tag it is the image manifests/30-deployment.yaml runs.
	defaultRepository = "ghcr.io/solanyn/gpu-operator"
	sourceURL         = "https://github.com/solanyn/gpu-operator"

	// entrypoint is the operator's path in the image.
	entrypoint = "/usr/local/bin/gpu-operator"
	// nonroot is the user and group the image runs as; the Deployment's
	// securityContext names the same.
	nonroot = 65532

	ociLayoutDir  = "oci"
	ociTarball    = "gpu-operator.tar"
	dockerTarball = "gpu-operator-linux-%s.docker.tar"

	// refNameAnnotation and containerdNameAnnotation name the image in the
	// layout's index.json: the first is the OCI one (podman, skopeo), the
	// second is what containerd (ctr, kind, Docker's containerd store) reads.
	refNameAnnotation        = "org.opencontainers.image.ref.name"
	containerdNameAnnotation = "io.containerd.image.name"
)

// defaultImage is the reference the manifests use and `make image` builds.
func defaultImage() string { return defaultRepository + ":" + version.Version }

// architectures the image is built for, all linux.
var architectures = []string{"amd64", "arm64"}

type options struct {
	Image    string // the name written into the tarballs
	Out      string // output directory
	Revision string // empty: from git
	Epoch    string // SOURCE_DATE_EPOCH; empty: the commit time
	Root     string // the module's root; empty: from `go env GOMOD`
}

func defaultOptions() options { return options{Image: defaultImage(), Out: "bin/image"} }

type platformResult struct {
	Platform         string // linux/amd64
	Digest           v1.Hash
	CompressedSize   int64 // manifest, config and layer as stored and pulled
	UncompressedSize int64 // the layer's tar
}

type result struct {
	Image     string
	Digest    v1.Hash // the image index's
	Revision  string
	Created   time.Time
	Platforms []platformResult
}

func build(ctx context.Context, o options) (*result, error) {
	tag, err := name.NewTag(o.Image)
	if err != nil {
		return nil, fmt.Errorf("image name: %w", err)
	}
	if o.Root == "" {
		if o.Root, err = moduleRoot(ctx); err != nil {
			return nil, err
		}
	}
	if o.Revision == "" {
		o.Revision = gitRevision(ctx, o.Root)
	}
	created, err := sourceDate(ctx, o.Root, o.Epoch)
	if err != nil {
		return nil, err
	}

	tmp, err := os.MkdirTemp("", "gpu-operator-image-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	binaries := make([]string, len(architectures))
	errs := make([]error, len(architectures))
	var wg sync.WaitGroup
	for i, arch := range architectures {
		binaries[i] = filepath.Join(tmp, "gpu-operator-linux-"+arch)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = goBuild(ctx, o.Root, arch, o.Revision, binaries[i])
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	labels := map[string]string{
		"org.opencontainers.image.source":      sourceURL,
		"org.opencontainers.image.revision":    o.Revision,
		"org.opencontainers.image.version":     version.Version,
		"org.opencontainers.image.created":     created.UTC().Format(time.RFC3339),
		"org.opencontainers.image.title":       "gpu-operator",
		"org.opencontainers.image.description": "Kubernetes operator that rents cloud GPUs for GPURequest objects",
	}
	res := &result{Image: tag.String(), Revision: o.Revision, Created: created}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	images := make([]v1.Image, len(architectures))
	for i, arch := range architectures {
		img, uncompressed, err := platformImage(binaries[i], arch, created, labels)
		if err != nil {
			return nil, fmt.Errorf("linux/%s: %w", arch, err)
		}
		images[i] = img
		pr := platformResult{Platform: "linux/" + arch, UncompressedSize: uncompressed}
		if pr.Digest, err = img.Digest(); err != nil {
			return nil, err
		}
		if pr.CompressedSize, err = storedSize(img); err != nil {
			return nil, err
		}
		res.Platforms = append(res.Platforms, pr)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}},
		})
	}
	idx = mutate.Annotations(idx, labels).(v1.ImageIndex)
	if res.Digest, err = idx.Digest(); err != nil {
		return nil, err
	}

	if err := writeOutputs(o.Out, tag, idx, images, created); err != nil {
		return nil, err
	}
	return res, nil
}

// goBuild cross-compiles the operator for linux/arch: static (no cgo), no
// local paths or VCS stamp in the binary, symbols stripped, the revision
// linked in. The environment is pinned so a user's GOAMD64, GOFLAGS or
// GOEXPERIMENT cannot change the output.
//
// k8s.io/api is compiled without inlining. Importing any client-go typed
// client or leaderelection links every API group, and because text/template
// (pkg/bootstrap) looks methods up by name the linker keeps every exported
// method of their types: protobuf marshalling, deep copies, swagger docs,
// most of which the operator (a JSON client) never runs. Inlined into each
// other they cost 1.6 MB of the binary (42.5 to 40.9 MB on amd64); a call
// in place of an inlined body in a deep copy is nothing next to the API
// request that fetched the object.
func goBuild(ctx context.Context, root, arch, revision, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false",
		"-gcflags", "k8s.io/api/...=-l",
		"-ldflags", "-s -w -X github.com/solanyn/gpu-operator/pkg/version.Revision="+revision,
		"-o", out, "./cmd/gpu-operator")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch,
		"GOAMD64=v1", "GOARM64=v8.0", "GOFLAGS=", "GOEXPERIMENT=")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build for linux/%s: %w\n%s", arch, err, b)
	}
	return nil
}

// platformImage is the operator on an empty base: one layer with the binary,
// /etc/passwd and /etc/group naming the non-root user (so its home and name
// resolve), and /tmp. Nothing else: no shell, no package manager, no CA
// files (the binary carries its roots: golang.org/x/crypto/x509roots/fallback).
func platformImage(binary, arch string, created time.Time, labels map[string]string) (v1.Image, int64, error) {
	bin, err := os.ReadFile(binary)
	if err != nil {
		return nil, 0, err
	}
	layerTar, err := rootfs(bin, created)
	if err != nil {
		return nil, 0, err
	}
	// Compressed once, here: given gzip, go-containerregistry stores it as it
	// is instead of compressing again for every digest and every output.
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return nil, 0, err
	}
	if _, err := zw.Write(layerTar); err != nil {
		return nil, 0, err
	}
	if err := zw.Close(); err != nil {
		return nil, 0, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(gz.Bytes())), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, 0, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: "go run ./hack/image build",
			Comment:   "gpu-operator " + version.Version + ", static linux/" + arch + " binary",
		},
	})
	if err != nil {
		return nil, 0, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, 0, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	cf.Created = v1.Time{Time: created}
	cf.Config = v1.Config{
		Entrypoint: []string{entrypoint},
		User:       fmt.Sprintf("%d:%d", nonroot, nonroot),
		WorkingDir: "/",
		Env:        []string{"PATH=/usr/local/bin"},
		Labels:     labels,
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, 0, err
	}
	return img, int64(len(layerTar)), nil
}

// rootfs is the layer's tar. Every entry has the same timestamp and a fixed
// owner, in a fixed order, so the layer's digest depends on the binary alone.
func rootfs(bin []byte, mtime time.Time) ([]byte, error) {
	type entry struct {
		name     string
		mode     int64
		uid      int
		contents []byte // nil for a directory
	}
	entries := []entry{
		{name: "etc/", mode: 0o755},
		{name: "etc/group", mode: 0o644, contents: []byte(fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", nonroot))},
		{name: "etc/passwd", mode: 0o644, contents: []byte(fmt.Sprintf(
			"root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", nonroot, nonroot))},
		{name: "home/", mode: 0o755},
		{name: "home/nonroot/", mode: 0o700, uid: nonroot},
		{name: "tmp/", mode: 0o1777},
		{name: "usr/", mode: 0o755},
		{name: "usr/local/", mode: 0o755},
		{name: "usr/local/bin/", mode: 0o755},
		{name: strings.TrimPrefix(entrypoint, "/"), mode: 0o755, contents: bin},
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.uid, ModTime: mtime, Format: tar.FormatPAX}
		if e.contents == nil {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.contents))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.contents); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// storedSize is what a registry stores and a pull transfers for one image.
func storedSize(img v1.Image) (int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return 0, err
	}
	n := int64(len(raw)) + m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n, nil
}

// writeOutputs replaces out's layout and tarballs (and nothing else in it).
func writeOutputs(out string, tag name.Tag, idx v1.ImageIndex, images []v1.Image, mtime time.Time) error {
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	layoutDir := filepath.Join(out, ociLayoutDir)
	if err := os.RemoveAll(layoutDir); err != nil {
		return err
	}
	p, err := layout.Write(layoutDir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		refNameAnnotation:        tag.String(),
		containerdNameAnnotation: tag.String(),
	})); err != nil {
		return err
	}
	if err := tarDir(layoutDir, filepath.Join(out, ociTarball), mtime); err != nil {
		return err
	}
	for i, arch := range architectures {
		if err := tarball.WriteToFile(filepath.Join(out, fmt.Sprintf(dockerTarball, arch)), tag, images[i]); err != nil {
			return err
		}
	}
	return nil
}

// tarDir writes dir's tree to dst as a tar with fixed timestamps, owners and
// modes, in lexical order, written to a temporary name and renamed.
func tarDir(dir, dst string, mtime time.Time) error {
	f, err := os.CreateTemp(filepath.Dir(dst), ".tmp-"+filepath.Base(dst))
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: mtime, Format: tar.FormatPAX}
		if d.IsDir() {
			h.Typeflag, h.Name, h.Mode = tar.TypeDir, h.Name+"/", 0o755
			return tw.WriteHeader(h)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, int64(len(b))
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err == nil {
		err = tw.Close()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Chmod(f.Name(), 0o644); err != nil {
		return err
	}
	return os.Rename(f.Name(), dst)
}

func moduleRoot(ctx context.Context) (string, error) {
	b, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	gomod := strings.TrimSpace(string(b))
	if err != nil || gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("finding the module root (go env GOMOD): %v", err)
	}
	return filepath.Dir(gomod), nil
}

// gitRevision is HEAD's commit, with -dirty when tracked or untracked files
// differ from it (the binary then is not HEAD's), or "unknown" outside git.
func gitRevision(ctx context.Context, root string) string {
	rev, err := git(ctx, root, "rev-parse", "HEAD")
	if err != nil {
		return "unknown"
	}
	if st, err := git(ctx, root, "status", "--porcelain"); err != nil || st != "" {
		rev += "-dirty"
	}
	return rev
}

// sourceDate is the time every timestamp in the image carries:
// SOURCE_DATE_EPOCH when given, else HEAD's commit time, else 1970.
func sourceDate(ctx context.Context, root, epoch string) (time.Time, error) {
	if epoch == "" {
		if ct, err := git(ctx, root, "log", "-1", "--format=%ct"); err == nil {
			epoch = ct
		} else {
			epoch = "0"
		}
	}
	sec, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", epoch, err)
	}
	return time.Unix(sec, 0).UTC(), nil
}

func git(ctx context.Context, root string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", root}, args...)...)
	b, err := cmd.Output()
	return strings.TrimSpace(string(b)), err
}
