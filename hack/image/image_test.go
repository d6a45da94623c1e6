package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	appsv1 "k8s.io/api/apps/v1"
	"sigs.k8s.io/yaml"

	"github.com/solanyn/gpu-operator/pkg/version"
)

// The image is built once (into a temporary directory) for all tests but the
// reproducibility one, which builds it a second time.
var shared struct {
	once    sync.Once
	dir     string
	res     *result
	elapsed time.Duration
	err     error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// builtImage builds the image as `make image` does, into a temporary out
// directory, and returns the result and that directory.
func builtImage(t *testing.T) (*result, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the image for two architectures; skipped with -short")
	}
	shared.once.Do(func() {
		if shared.dir, shared.err = os.MkdirTemp("", "gpu-operator-image-test-"); shared.err != nil {
			return
		}
		start := time.Now()
		shared.res, shared.err = build(context.Background(), options{Image: defaultImage(), Out: shared.dir})
		shared.elapsed = time.Since(start)
	})
	if shared.err != nil {
		t.Fatalf("building the image: %v", shared.err)
	}
	return shared.res, shared.dir
}

// platformImages reads the image index back from the OCI layout on disk (not
// from memory: what a user gets is what is checked) and returns its images
// by architecture.
func platformImages(t *testing.T, dir string) (v1.ImageIndex, map[string]v1.Image) {
	t.Helper()
	root, err := layout.ImageIndexFromPath(filepath.Join(dir, ociLayoutDir))
	if err != nil {
		t.Fatal(err)
	}
	rm, err := root.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(rm.Manifests) != 1 || rm.Manifests[0].MediaType != types.OCIImageIndex {
		t.Fatalf("layout index.json holds %+v, want one OCI image index", rm.Manifests)
	}
	for _, a := range []string{refNameAnnotation, containerdNameAnnotation} {
		if got := rm.Manifests[0].Annotations[a]; got != defaultImage() {
			t.Errorf("index.json annotation %s = %q, want %q", a, got, defaultImage())
		}
	}
	idx, err := root.ImageIndex(rm.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	images := map[string]v1.Image{}
	for _, d := range im.Manifests {
		if d.Platform == nil {
			t.Fatalf("index entry %s has no platform", d.Digest)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		images[d.Platform.OS+"/"+d.Platform.Architecture] = img
	}
	return idx, images
}

func TestImageIndexHasBothArchitectures(t *testing.T) {
	res, dir := builtImage(t)
	t.Logf("built in %s: %s@%s", shared.elapsed.Round(100*time.Millisecond), res.Image, res.Digest)
	idx, images := platformImages(t, dir)
	if d, err := idx.Digest(); err != nil || d != res.Digest {
		t.Errorf("layout's index digest = %s (%v), build reported %s", d, err, res.Digest)
	}
	var got []string
	for p, img := range images {
		got = append(got, p)
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cf.OS+"/"+cf.Architecture != p {
			t.Errorf("%s image's config says %s/%s", p, cf.OS, cf.Architecture)
		}
		if mt, _ := img.MediaType(); mt != types.OCIManifestSchema1 {
			t.Errorf("%s manifest media type %s, want %s", p, mt, types.OCIManifestSchema1)
		}
	}
	sort.Strings(got)
	if want := []string{"linux/amd64", "linux/arm64"}; !slices.Equal(got, want) {
		t.Errorf("platforms %v, want %v", got, want)
	}
}

func TestImageConfig(t *testing.T) {
	res, dir := builtImage(t)
	idx, images := platformImages(t, dir)
	wantLabels := map[string]string{
		"org.opencontainers.image.source":   sourceURL,
		"org.opencontainers.image.version":  version.Version,
		"org.opencontainers.image.revision": res.Revision,
		"org.opencontainers.image.created":  res.Created.Format(time.RFC3339),
	}
	if res.Revision == "" || res.Revision == "unknown" {
		t.Errorf("revision %q: the build should find the git commit", res.Revision)
	}
	for p, img := range images {
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		c := cf.Config
		if c.User != "65532:65532" {
			t.Errorf("%s: user %q, want 65532:65532 (the Deployment's runAsUser and runAsGroup)", p, c.User)
		}
		if !slices.Equal(c.Entrypoint, []string{"/usr/local/bin/gpu-operator"}) || len(c.Cmd) != 0 {
			t.Errorf("%s: entrypoint %q cmd %q, want the operator and no cmd", p, c.Entrypoint, c.Cmd)
		}
		for k, v := range wantLabels {
			if c.Labels[k] != v {
				t.Errorf("%s: label %s = %q, want %q", p, k, c.Labels[k], v)
			}
		}
		if !cf.Created.Time.Equal(res.Created) {
			t.Errorf("%s: created %s, want the source date %s", p, cf.Created.Time, res.Created)
		}
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range wantLabels {
		if im.Annotations[k] != v {
			t.Errorf("image index annotation %s = %q, want %q", k, im.Annotations[k], v)
		}
	}
}

// layerFiles lists every entry in every layer of img, with the contents of
// the entrypoint.
func layerFiles(t *testing.T, img v1.Image) (names []string, binary []byte) {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			names = append(names, h.Name)
			if "/"+h.Name == entrypoint {
				if h.Mode&0o111 == 0 || h.Uid != 0 {
					t.Errorf("%s: mode %o uid %d, want executable and owned by root (the user cannot replace it)", h.Name, h.Mode, h.Uid)
				}
				if binary, err = io.ReadAll(tr); err != nil {
					t.Fatal(err)
				}
			}
		}
		rc.Close()
	}
	return names, binary
}

func TestImageHasNoShell(t *testing.T) {
	_, dir := builtImage(t)
	_, images := platformImages(t, dir)
	want := []string{"etc/", "etc/group", "etc/passwd", "home/", "home/nonroot/", "tmp/",
		"usr/", "usr/local/", "usr/local/bin/", "usr/local/bin/gpu-operator"}
	for p, img := range images {
		names, _ := layerFiles(t, img)
		for _, n := range names {
			switch filepath.Base(strings.TrimSuffix(n, "/")) {
			case "sh", "bash", "ash", "dash", "busybox":
				t.Errorf("%s: layer holds a shell: %s", p, n)
			}
		}
		if !slices.Equal(names, want) {
			t.Errorf("%s: layers hold %q, want exactly %q", p, names, want)
		}
	}
}

func TestImageBinaryIsStaticPerArchitecture(t *testing.T) {
	_, dir := builtImage(t)
	_, images := platformImages(t, dir)
	machines := map[string]elf.Machine{"linux/amd64": elf.EM_X86_64, "linux/arm64": elf.EM_AARCH64}
	for p, img := range images {
		_, bin := layerFiles(t, img)
		f, err := elf.NewFile(bytes.NewReader(bin))
		if err != nil {
			t.Fatalf("%s: the entrypoint is not an ELF binary: %v", p, err)
		}
		if f.Machine != machines[p] {
			t.Errorf("%s: ELF machine %s, want %s", p, f.Machine, machines[p])
		}
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				t.Errorf("%s: the binary has a dynamic loader (PT_INTERP): not static", p)
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Errorf("%s: the binary needs %v", p, libs)
		}
	}
}

// manifestImage is the operator's image in manifests/30-deployment.yaml.
func manifestImage(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../../manifests/30-deployment.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict(b, &d); err != nil {
		t.Fatal(err)
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == "operator" {
			return c.Image
		}
	}
	t.Fatal("manifests/30-deployment.yaml has no container named operator")
	return ""
}

func TestManifestsReferenceTheVersion(t *testing.T) {
	// The one source is pkg/version; the manifests carry a copy that kubectl
	// can apply as it is, and `make image` tags what it builds with it.
	if got, want := manifestImage(t), defaultImage(); got != want {
		t.Errorf("manifests/30-deployment.yaml runs %q; make image builds %q (pkg/version.Version %s): change both together",
			got, want, version.Version)
	}
}

func TestImageBinaryReportsManifestVersion(t *testing.T) {
	_, dir := builtImage(t)
	_, images := platformImages(t, dir)
	p := "linux/" + runtime.GOARCH
	img, ok := images[p]
	if runtime.GOOS != "linux" || !ok {
		t.Skipf("cannot run a linux/amd64 or linux/arm64 binary on %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	_, bin := layerFiles(t, img)
	exe := filepath.Join(t.TempDir(), "gpu-operator")
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(exe, "version").Output()
	if err != nil {
		t.Fatalf("%s version: %v", p, err)
	}
	checkVersionOutput(t, string(out), runtime.GOARCH)
}

// checkVersionOutput checks a `gpu-operator version` line against the tag
// the manifests run.
func checkVersionOutput(t *testing.T, out, arch string) {
	t.Helper()
	img := manifestImage(t)
	tag := img[strings.LastIndex(img, ":")+1:]
	f := strings.Fields(out)
	if len(f) < 2 || f[0] != "gpu-operator" || f[1] != tag {
		t.Errorf("version printed %q, want gpu-operator %s (the manifests' tag)", out, tag)
	}
	if !strings.Contains(out, "linux/"+arch) || strings.Contains(out, "revision unknown") {
		t.Errorf("version printed %q, want linux/%s and the revision linked in", out, arch)
	}
}

// TestImageSize: each architecture's image is under 40 MiB unpacked (the
// layer's tar, which is the binary and a few small files) and so also to
// pull.
func TestImageSize(t *testing.T) {
	res, _ := builtImage(t)
	const limit = 40 << 20
	for _, p := range res.Platforms {
		t.Logf("%s: %.2f MiB compressed (pulled and stored), %.2f MiB uncompressed",
			p.Platform, mib(p.CompressedSize), mib(p.UncompressedSize))
		if p.CompressedSize >= limit {
			t.Errorf("%s: %.2f MiB compressed, want under 40 MiB", p.Platform, mib(p.CompressedSize))
		}
		if p.UncompressedSize >= limit {
			t.Errorf("%s: %.2f MiB uncompressed, want under 40 MiB", p.Platform, mib(p.UncompressedSize))
		}
	}
}

// TestImageTarballs checks the files users load: the OCI tarball is the
// layout byte for byte, and each docker tarball holds its architecture's
// image under the manifests' name.
func TestImageTarballs(t *testing.T) {
	_, dir := builtImage(t)
	_, images := platformImages(t, dir)

	f, err := os.Open(filepath.Join(dir, ociTarball))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	files := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		files++
		got, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(dir, ociLayoutDir, filepath.FromSlash(h.Name)))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s in %s differs from the layout (%v)", h.Name, ociTarball, err)
		}
	}
	// oci-layout, index.json, the image index, and per image a manifest, a config and a layer.
	if want := 3 + 3*len(architectures); files != want {
		t.Errorf("%s holds %d files, want %d", ociTarball, files, want)
	}

	for _, arch := range architectures {
		path := filepath.Join(dir, fmt.Sprintf(dockerTarball, arch))
		img, err := tarball.ImageFromPath(path, nil)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		got, err := img.ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		want, err := images["linux/"+arch].ConfigName()
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s holds config %s, want linux/%s's %s", path, got, arch, want)
		}
		m, err := tarball.LoadManifest(func() (io.ReadCloser, error) { return os.Open(path) })
		if err != nil {
			t.Fatal(err)
		}
		if len(m) != 1 || !slices.Equal(m[0].RepoTags, []string{defaultImage()}) {
			t.Errorf("%s manifest.json %+v, want one image tagged %s", path, m, defaultImage())
		}
	}
}

func TestImageIsReproducible(t *testing.T) {
	first, dir := builtImage(t)
	again := t.TempDir()
	start := time.Now()
	second, err := build(context.Background(), options{Image: defaultImage(), Out: again})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("second (warm) build: %s", time.Since(start).Round(100*time.Millisecond))
	if first.Digest != second.Digest {
		t.Errorf("two builds of one tree: index digests %s and %s", first.Digest, second.Digest)
	}
	for _, name := range []string{ociTarball, fmt.Sprintf(dockerTarball, "amd64"), fmt.Sprintf(dockerTarball, "arm64")} {
		if a, b := fileSHA(t, filepath.Join(dir, name)), fileSHA(t, filepath.Join(again, name)); a != b {
			t.Errorf("%s differs between two builds: %s and %s", name, a, b)
		}
	}
}

func fileSHA(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// sandboxErrors are what a container runtime says when the machine, not the
// image, keeps a container from starting (missing capabilities or cgroup
// setups that sandboxes have).
var sandboxErrors = []string{"setrlimit", "cgroup", "namespace", "unshare", "pivot_root", "sethostname"}

// TestImagePodman loads both kinds of tarball into podman (in a private,
// temporary store) and runs `gpu-operator version` in a container.
func TestImagePodman(t *testing.T) {
	_, dir := builtImage(t)
	podman, err := exec.LookPath("podman")
	if err != nil {
		t.Skip("podman is not installed (apt-get install podman runc); the image is checked without a runtime by the other tests")
	}
	if runtime.GOOS != "linux" || (runtime.GOARCH != "amd64" && runtime.GOARCH != "arm64") {
		t.Skipf("no image for %s/%s", runtime.GOOS, runtime.GOARCH)
	}
	tmp := t.TempDir()
	global := []string{"--root", filepath.Join(tmp, "storage"), "--runroot", filepath.Join(tmp, "run"),
		"--tmpdir", filepath.Join(tmp, "tmp"), "--storage-driver", "vfs", "--events-backend", "none"}
	run := func(args ...string) (string, error) {
		out, err := exec.Command(podman, append(slices.Clone(global), args...)...).CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	if out, err := run("info"); err != nil {
		t.Skipf("podman cannot run here: podman info: %v\n%s", err, out)
	}
	t.Cleanup(func() { run("rmi", "--all", "--force") })

	// crun (podman's default) refuses cgroup v1/v2 hybrid hosts; runc runs
	// there. The ulimits are lowered, never raised: podman's defaults raise
	// nofile, which needs CAP_SYS_RESOURCE, and sandboxes drop it.
	runtimes := [][]string{nil}
	if runc, err := exec.LookPath("runc"); err == nil {
		runtimes = append(runtimes, []string{"--runtime", runc})
	}
	for _, archive := range []string{ociTarball, fmt.Sprintf(dockerTarball, runtime.GOARCH)} {
		t.Run(archive, func(t *testing.T) {
			out, err := run("load", "--input", filepath.Join(dir, archive))
			if err != nil || !strings.Contains(out, "Loaded image: "+defaultImage()) {
				t.Fatalf("podman load %s: %v\n%s", archive, err, out)
			}
			defer run("rmi", "--force", defaultImage())
			if out, err := run("image", "inspect", "--format", "{{.Architecture}} {{.Config.User}}", defaultImage()); err != nil ||
				out != runtime.GOARCH+" 65532:65532" {
				t.Errorf("podman image inspect: %q (%v), want %s 65532:65532", out, err, runtime.GOARCH)
			}
			var failures []string
			for _, rt := range runtimes {
				args := append(slices.Clone(rt), "run", "--rm", "--network=none",
					"--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024", defaultImage(), "version")
				out, err := run(args...)
				if err == nil {
					for _, f := range failures {
						t.Logf("before that, %s", f)
					}
					t.Logf("podman %s: %s", strings.Join(args, " "), out)
					checkVersionOutput(t, out, runtime.GOARCH)
					return
				}
				failures = append(failures, fmt.Sprintf("podman %s: %v: %s", strings.Join(args, " "), err, out))
			}
			for _, f := range failures {
				if !slices.ContainsFunc(sandboxErrors, func(s string) bool { return strings.Contains(f, s) }) {
					t.Fatalf("the container did not run:\n%s", strings.Join(failures, "\n"))
				}
			}
			t.Skipf("podman loaded the image but this machine cannot start containers:\n%s", strings.Join(failures, "\n"))
		})
	}
}
