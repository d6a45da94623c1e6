// Package testenv starts a real control plane (etcd and kube-apiserver built
// from Go modules into bin/ by hack/build-tools.sh) on free loopback ports for
// integration tests and the local demo, installs the operator's CRDs from
// manifests/, and hands back a *rest.Config.
package testenv

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"
)

// Env is a running control plane.
type Env struct {
	// Config reaches the API server as a cluster admin.
	Config *rest.Config
	// Kubeconfig is a kubeconfig file for Config (for kubectl and the operator binary).
	Kubeconfig string
	// Root is the repository root.
	Root string
	// Dir holds the control plane's data, certificates and logs.
	Dir string

	procs  []*exec.Cmd
	done   []chan struct{}
	ownDir bool
}

// Options tune Start.
type Options struct {
	// Dir keeps data and logs there instead of a fresh temporary directory.
	Dir string
	// SkipCRDs leaves the CRDs uninstalled.
	SkipCRDs bool
}

// RepoRoot finds the repository root (the directory holding go.mod and
// manifests/) from the working directory upwards.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			if _, err := os.Stat(filepath.Join(dir, "manifests")); err == nil {
				return dir, nil
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("repository root (go.mod with manifests/) not found above the working directory")
		}
		dir = parent
	}
}

// StartT starts a control plane for a test and stops it when the test ends,
// whether it passed or not.
func StartT(t testing.TB) *Env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env, err := Start(ctx, Options{})
	if err != nil {
		t.Fatalf("starting control plane: %v", err)
	}
	t.Cleanup(env.Stop)
	return env
}

// Start builds nothing: it runs bin/etcd and bin/kube-apiserver (run
// `make tools` first), waits until the API server is ready and the CRDs are
// established. Call Stop when done.
func Start(ctx context.Context, opts Options) (_ *Env, err error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	etcdBin := filepath.Join(root, "bin", "etcd")
	apiBin := filepath.Join(root, "bin", "kube-apiserver")
	for _, b := range []string{etcdBin, apiBin} {
		if _, err := os.Stat(b); err != nil {
			return nil, fmt.Errorf("%s is missing: run `make tools` (hack/build-tools.sh) first", b)
		}
	}
	env := &Env{Root: root, Dir: opts.Dir}
	if env.Dir == "" {
		if env.Dir, err = os.MkdirTemp("", "gpu-operator-testenv-"); err != nil {
			return nil, err
		}
		env.ownDir = true
	}
	defer func() {
		if err != nil {
			env.Stop()
		}
	}()
	certDir := filepath.Join(env.Dir, "certs")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return nil, err
	}
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", ports[0])
	if err := env.start(etcdBin, "etcd.log",
		"--data-dir", filepath.Join(env.Dir, "etcd"),
		"--listen-client-urls", etcdURL,
		"--advertise-client-urls", etcdURL,
		"--listen-peer-urls", fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		"--log-level", "warn",
	); err != nil {
		return nil, err
	}
	if err := waitHTTP(ctx, etcdURL+"/health", "", nil); err != nil {
		return nil, fmt.Errorf("etcd not healthy (log %s): %w", filepath.Join(env.Dir, "etcd.log"), err)
	}

	token, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(certDir, "tokens.csv"), []byte(token+",admin,admin,system:masters\n"), 0o600); err != nil {
		return nil, err
	}
	if err := writeServiceAccountKeys(certDir); err != nil {
		return nil, err
	}
	apiPort := ports[2]
	if err := env.start(apiBin, "kube-apiserver.log",
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", apiPort),
		"--cert-dir="+certDir,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+filepath.Join(certDir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(certDir, "sa.key"),
		"--token-auth-file="+filepath.Join(certDir, "tokens.csv"),
		"--authorization-mode=RBAC",
		"--service-cluster-ip-range=10.0.0.0/24",
		"--disable-admission-plugins=ServiceAccount",
		"--v=0",
	); err != nil {
		return nil, err
	}
	host := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	insecure := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // only until the self-signed cert exists
	if err := waitHTTP(ctx, host+"/readyz", token, insecure); err != nil {
		return nil, fmt.Errorf("kube-apiserver not ready (log %s): %w", filepath.Join(env.Dir, "kube-apiserver.log"), err)
	}
	caData, err := os.ReadFile(filepath.Join(certDir, "apiserver.crt"))
	if err != nil {
		return nil, fmt.Errorf("reading the API server's self-signed certificate: %w", err)
	}
	env.Config = &rest.Config{
		Host:            host,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: caData},
		QPS:             200,
		Burst:           400,
	}
	env.Kubeconfig = filepath.Join(env.Dir, "kubeconfig")
	if err := writeKubeconfig(env.Kubeconfig, host, token, caData); err != nil {
		return nil, err
	}
	if !opts.SkipCRDs {
		if err := InstallCRDs(ctx, env.Config, filepath.Join(root, "manifests")); err != nil {
			return nil, err
		}
	}
	return env, nil
}

func (e *Env) start(bin, logName string, args ...string) error {
	logFile, err := os.Create(filepath.Join(e.Dir, logName))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// The servers die with the process that started them, even on SIGKILL.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("starting %s: %w", bin, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(done)
	}()
	e.procs = append(e.procs, cmd)
	e.done = append(e.done, done)
	return nil
}

// Stop stops the API server, then etcd, waits for both to exit (so their
// ports are free again) and removes the data directory it created.
func (e *Env) Stop() {
	for i := len(e.procs) - 1; i >= 0; i-- {
		p := e.procs[i]
		_ = p.Process.Signal(syscall.SIGTERM)
		select {
		case <-e.done[i]:
		case <-time.After(15 * time.Second):
			_ = p.Process.Kill()
			<-e.done[i]
		}
	}
	e.procs, e.done = nil, nil
	if e.ownDir {
		_ = os.RemoveAll(e.Dir)
	}
}

// InstallCRDs creates (or updates) every CustomResourceDefinition found in
// the YAML files of dir and waits until each is Established.
func InstallCRDs(ctx context.Context, cfg *rest.Config, dir string) error {
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return err
	}
	gvr := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	crds, err := readCRDs(dir)
	if err != nil {
		return err
	}
	for _, crd := range crds {
		name := crd.GetName()
		existing, err := client.Resource(gvr).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			crd.SetResourceVersion(existing.GetResourceVersion())
			_, err = client.Resource(gvr).Update(ctx, crd, metav1.UpdateOptions{})
		} else {
			_, err = client.Resource(gvr).Create(ctx, crd, metav1.CreateOptions{})
		}
		if err != nil {
			return fmt.Errorf("installing CRD %s: %w", name, err)
		}
		err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			got, err := client.Resource(gvr).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			conds, _, _ := unstructured.NestedSlice(got.Object, "status", "conditions")
			for _, c := range conds {
				m, _ := c.(map[string]any)
				if m["type"] == "Established" && m["status"] == "True" {
					return true, nil
				}
			}
			return false, nil
		})
		if err != nil {
			return fmt.Errorf("CRD %s not established: %w", name, err)
		}
	}
	return nil
}

func readCRDs(dir string) ([]*unstructured.Unstructured, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	var out []*unstructured.Unstructured
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for _, doc := range strings.Split(string(data), "\n---") {
			var obj map[string]any
			if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			if obj["kind"] == "CustomResourceDefinition" {
				out = append(out, &unstructured.Unstructured{Object: obj})
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no CustomResourceDefinition in %s", dir)
	}
	return out, nil
}

// FreeAddr returns a loopback address ("127.0.0.1:port") whose port is free
// right now, for a server a test or the demo is about to start.
func FreeAddr() (string, error) {
	ports, err := freePorts(1)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", ports[0]), nil
}

func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func waitHTTP(ctx context.Context, url, token string, tlsCfg *tls.Config) error {
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsCfg}}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return false, err
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
}

func writeServiceAccountKeys(dir string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600)
}

func writeKubeconfig(path, host, token string, ca []byte) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: host, CertificateAuthorityData: ca}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: "admin", Namespace: "default"}
	cfg.CurrentContext = "local"
	return clientcmd.WriteToFile(*cfg, path)
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}
