// Package testenv starts a real control plane (etcd, kube-apiserver and
// kube-controller-manager, built from Go modules into bin/ by
// hack/build-tools.sh) on free loopback ports for integration tests, the
// benchmark harness and the local demo, installs the operator's CRDs from
// manifests/, and hands back a *rest.Config.
//
// It is set up as kubeadm init sets up a cluster, so machines join as real
// kubelets do: one cluster CA signs the API server's serving certificate,
// is the CA of client certificates (--client-ca-file) and signs the
// kubelets' CSRs (kube-controller-manager's csrsigning); bootstrap tokens
// authenticate (--enable-bootstrap-token-auth) and the bootstrappers group
// may create node-client CSRs, which csrapproving approves; Node
// authorization and the NodeRestriction admission plugin confine each
// kubelet to its own Node; tokencleaner removes expired tokens,
// root-ca-cert-publisher writes the CA to every namespace's
// kube-root-ca.crt ConfigMap, and kube-public/cluster-info, readable
// anonymously and signed by the bootstrap signer with each token, serves
// kubeadm join's token discovery.
package testenv

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
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

	kube   kubernetes.Interface
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

// Start builds nothing: it runs bin/etcd, bin/kube-apiserver and
// bin/kube-controller-manager (run `make tools` first), waits until the API
// server is ready, the controller manager healthy and the CRDs established.
// Call Stop when done.
func Start(ctx context.Context, opts Options) (_ *Env, err error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	etcdBin := filepath.Join(root, "bin", "etcd")
	apiBin := filepath.Join(root, "bin", "kube-apiserver")
	kcmBin := filepath.Join(root, "bin", "kube-controller-manager")
	for _, b := range []string{etcdBin, apiBin, kcmBin} {
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
	ports, err := freePorts(4)
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
	caData, err := writeClusterCA(certDir)
	if err != nil {
		return nil, err
	}
	apiPort := ports[2]
	if err := env.start(apiBin, "kube-apiserver.log",
		"--etcd-servers="+etcdURL,
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", apiPort),
		"--tls-cert-file="+filepath.Join(certDir, "apiserver.crt"),
		"--tls-private-key-file="+filepath.Join(certDir, "apiserver.key"),
		"--client-ca-file="+filepath.Join(certDir, "ca.crt"),
		"--enable-bootstrap-token-auth",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+filepath.Join(certDir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(certDir, "sa.key"),
		"--token-auth-file="+filepath.Join(certDir, "tokens.csv"),
		"--authorization-mode=Node,RBAC",
		"--service-cluster-ip-range=10.0.0.0/24",
		"--enable-admission-plugins=NodeRestriction",
		"--disable-admission-plugins=ServiceAccount",
		"--v=0",
	); err != nil {
		return nil, err
	}
	host := fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caData)
	if err := waitHTTP(ctx, host+"/readyz", token, &tls.Config{RootCAs: pool}); err != nil {
		return nil, fmt.Errorf("kube-apiserver not ready (log %s): %w", filepath.Join(env.Dir, "kube-apiserver.log"), err)
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
	if env.kube, err = kubernetes.NewForConfig(env.Config); err != nil {
		return nil, err
	}
	if err := grantBootstrappers(ctx, env.kube); err != nil {
		return nil, err
	}
	if err := publishClusterInfo(ctx, env.kube, host, caData); err != nil {
		return nil, err
	}
	kcmPort := ports[3]
	if err := env.start(kcmBin, "kube-controller-manager.log",
		"--kubeconfig="+env.Kubeconfig,
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", kcmPort),
		"--leader-elect=false",
		"--use-service-account-credentials=false",
		// Its client's default, 20 QPS, would make thousands of joins at
		// once (an approval and a signature each) wait on it for minutes:
		// the benchmarks' control plane is not what they measure.
		"--kube-api-qps=500", "--kube-api-burst=1000",
		"--controllers="+strings.Join(controllers, ","),
		"--cluster-signing-cert-file="+filepath.Join(certDir, "ca.crt"),
		"--cluster-signing-key-file="+filepath.Join(certDir, "ca.key"),
		"--root-ca-file="+filepath.Join(certDir, "ca.crt"),
		"--v=0",
	); err != nil {
		return nil, err
	}
	// /healthz is served without authentication; the serving certificate
	// is the controller manager's own self-signed one.
	kcmTLS := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // a loopback health probe of a self-signed server
	if err := waitHTTP(ctx, fmt.Sprintf("https://127.0.0.1:%d/healthz", kcmPort), "", kcmTLS); err != nil {
		return nil, fmt.Errorf("kube-controller-manager not healthy (log %s): %w", filepath.Join(env.Dir, "kube-controller-manager.log"), err)
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

// RootCA waits until kube-controller-manager has published the cluster CA
// to namespace (its kube-root-ca.crt ConfigMap, which --mint-join-tokens
// reads), creating the namespace if it does not exist, and returns the PEM.
func (e *Env) RootCA(ctx context.Context, namespace string) (string, error) {
	kube := e.kube
	_, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return "", err
	}
	var ca string
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		cm, err := kube.CoreV1().ConfigMaps(namespace).Get(ctx, "kube-root-ca.crt", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		ca = cm.Data["ca.crt"]
		return ca != "", nil
	})
	if err != nil {
		return "", fmt.Errorf("kube-root-ca.crt not published in namespace %s: %w", namespace, err)
	}
	return ca, nil
}

// BootstrapToken creates a bootstrap token in kube-system shaped as the
// operator's --mint-join-tokens makes them: kubeadm's node group, the
// authentication usage (and signing, for kubeadm's discovery, when
// signing), expiring after ttl. It returns the token ("<id>.<secret>")
// and its Secret's name.
func BootstrapToken(ctx context.Context, kube kubernetes.Interface, signing bool, ttl time.Duration) (token, secretName string, err error) {
	data := map[string]string{
		"usage-bootstrap-authentication": "true",
		"auth-extra-groups":              bootstrapGroup,
		"expiration":                     time.Now().Add(ttl).UTC().Format(time.RFC3339),
	}
	if signing {
		data["usage-bootstrap-signing"] = "true"
	}
	// A 6-character id is 30 bits: thousands of tokens may meet one.
	for range 5 {
		id, secret := strings.ToLower(rand.Text())[:6], strings.ToLower(rand.Text())[:16]
		data["token-id"], data["token-secret"] = id, secret
		name := "bootstrap-token-" + id
		_, err = kube.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name}, Type: corev1.SecretTypeBootstrapToken, StringData: data,
		}, metav1.CreateOptions{})
		if !apierrors.IsAlreadyExists(err) {
			return id + "." + secret, name, err
		}
	}
	return "", "", err
}

// controllers are the kube-controller-manager controllers a joining node
// needs: approving and signing its client CSR, cleaning CSRs and expired
// bootstrap tokens, publishing the CA in every namespace, and signing
// cluster-info with each signing token for kubeadm's discovery.
var controllers = []string{
	"certificatesigningrequest-approving-controller",
	"certificatesigningrequest-signing-controller",
	"certificatesigningrequest-cleaner-controller",
	"token-cleaner-controller",
	"root-ca-certificate-publisher-controller",
	"bootstrap-signer-controller",
}

// bootstrapGroup is the group of kubeadm's bootstrap tokens (the group the
// operator's minted tokens carry).
const bootstrapGroup = "system:bootstrappers:kubeadm:default-node-token"

// grantBootstrappers binds what kubeadm init binds for its bootstrap
// tokens: creating a CSR (system:node-bootstrapper) and having a
// node-client CSR auto-approved by csrapproving.
func grantBootstrappers(ctx context.Context, kube kubernetes.Interface) error {
	for name, role := range map[string]string{
		"kubeadm:kubelet-bootstrap":          "system:node-bootstrapper",
		"kubeadm:node-autoapprove-bootstrap": "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
	} {
		_, err := kube.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.GroupKind, Name: bootstrapGroup}},
		}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("binding %s for bootstrap tokens: %w", role, err)
		}
	}
	return nil
}

// publishClusterInfo writes what kubeadm init writes for kubeadm join's
// token discovery: kube-public/cluster-info holding a kubeconfig with the
// API server and its CA (the bootstrap signer adds a JWS signature per
// signing token), readable anonymously.
func publishClusterInfo(ctx context.Context, kube kubernetes.Interface, host string, ca []byte) error {
	info := clientcmdapi.NewConfig()
	info.Clusters[""] = &clientcmdapi.Cluster{Server: host, CertificateAuthorityData: ca}
	kubeconfig, err := clientcmd.Write(*info)
	if err != nil {
		return err
	}
	const name = "cluster-info"
	_, err = kube.CoreV1().ConfigMaps(metav1.NamespacePublic).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"kubeconfig": string(kubeconfig)},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating %s/%s: %w", metav1.NamespacePublic, name, err)
	}
	role := "kubeadm:bootstrap-signer-clusterinfo"
	_, err = kube.RbacV1().Roles(metav1.NamespacePublic).Create(ctx, &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: role},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, ResourceNames: []string{name}, Verbs: []string{"get"}}},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	_, err = kube.RbacV1().RoleBindings(metav1.NamespacePublic).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "system:anonymous"}},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// Stop stops the controller manager, the API server, then etcd, waits for both to exit (so their
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

// writeClusterCA makes the cluster CA (ca.crt, ca.key) and the API
// server's serving certificate signed by it (apiserver.crt, apiserver.key,
// for 127.0.0.1, localhost and the kubernetes Service), and returns the
// CA's PEM.
func writeClusterCA(dir string) ([]byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "testenv-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("10.0.0.1")},
	}, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	for name, block := range map[string]*pem.Block{
		"ca.crt":        {Type: "CERTIFICATE", Bytes: caDER},
		"apiserver.crt": {Type: "CERTIFICATE", Bytes: der},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
			return nil, err
		}
	}
	for name, k := range map[string]*ecdsa.PrivateKey{"ca.key": caKey, "apiserver.key": key} {
		b, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: b}), 0o600); err != nil {
			return nil, err
		}
	}
	return caPEM, nil
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
