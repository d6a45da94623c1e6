package nodeagent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport"
	certutil "k8s.io/client-go/util/cert"
	"k8s.io/client-go/util/certificate/csr"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
)

// TLSBootstrap makes the agent join machines as a kubelet does: with the
// bootstrap token found in the machine's user data it asks for a client
// certificate for system:node:<name> through a CertificateSigningRequest,
// waits for kube-controller-manager to approve and sign it, and then
// registers and updates its Node with that certificate only. Node
// authorization and the NodeRestriction admission plugin thus apply to
// everything the machine does; a machine whose user data carries no token
// the API server accepts never joins.
//
// This models the kubelet as Kubernetes documents it, not as the operator
// would like it: the flow is that of "TLS bootstrapping"
// (kubernetes.io/docs/reference/access-authn-authz/kubelet-tls-bootstrapping/:
// a key, a CSR for signer kubernetes.io/kube-apiserver-client-kubelet with
// CN system:node:<name> and O system:nodes, usages digital signature and
// client auth), and every step is checked by the real kube-apiserver and
// kube-controller-manager of the test control plane (authentication,
// approval, signing, Node authorization, NodeRestriction), not by code of
// ours. What is ours, not documented: the 2 s retry of a token the API
// server has not learnt yet (a kubelet retries with its own backoff).
//
// User data that pins the cluster CA as kubeadm join does
// (--discovery-token-ca-cert-hash sha256:...) gets kubeadm's token
// discovery first (discovery.go): the kube-public/cluster-info ConfigMap,
// read anonymously, must carry a JWS signature made with the token, and
// its CA must match the pin; the kubelet then trusts that CA. The agent
// does not resolve the API server address from the user data: every
// machine reaches Host (the test control plane), as a bootstrap kubeconfig
// pointing at the cluster would.
type TLSBootstrap struct {
	// Host is the API server URL; CAData the cluster CA's PEM, which its
	// serving certificate chains to.
	Host   string
	CAData []byte
	// Timeout bounds the wait for the CSR to be signed (default 30s).
	Timeout time.Duration
}

// bootstrapTokenRE finds a bootstrap token ("<6>.<16>", lower-case
// letters and digits: the format kube-apiserver's bootstrap authenticator
// accepts) anywhere in user data: kubeadm join --token, a bootstrap
// kubeconfig's token field.
var bootstrapTokenRE = regexp.MustCompile(`\b[a-z0-9]{6}\.[a-z0-9]{16}\b`)

// ErrNoBootstrapToken is the join error of a machine whose user data holds
// no bootstrap token.
var ErrNoBootstrapToken = errors.New("no bootstrap token in the machine's user data")

// kubelet is one machine's client with its own node credentials.
type kubelet struct {
	machine   string // provider/id: a new machine under the same name bootstraps anew
	client    kubernetes.Interface
	transport *http.Transport
}

// kubeletUserAgent is the simulated kubelets' user agent: the field
// manager of what they write.
const kubeletUserAgent = "cloudsim-kubelet"

// kubeletFor returns the node client of machine m registering as name,
// bootstrapping its credentials first if it has none.
func (a *Agent) kubeletFor(ctx context.Context, name string, m cloudsim.Machine) (*kubelet, error) {
	key := m.Provider + "/" + m.ID
	a.mu.Lock()
	k, ok := a.kubelets[name]
	a.mu.Unlock()
	if ok && k.machine == key {
		return k, nil
	}
	token := bootstrapTokenRE.FindString(m.UserData)
	if token == "" {
		return nil, ErrNoBootstrapToken
	}
	b := *a.TLSBootstrap
	if pin := caPinRE.FindStringSubmatch(m.UserData); pin != nil {
		ca, err := b.discover(ctx, token, pin[1])
		if err != nil {
			return nil, err
		}
		b.CAData = ca
	}
	k, err := b.join(ctx, name, token)
	if err != nil {
		return nil, err
	}
	k.machine = key
	a.mu.Lock()
	a.kubelets[name] = k
	a.mu.Unlock()
	return k, nil
}

// Join is one kubelet's TLS bootstrap with token for the Node name; it
// returns a client with the signed credentials and a function that closes
// its idle connections.
func (b *TLSBootstrap) Join(ctx context.Context, name, token string) (kubernetes.Interface, func(), error) {
	k, err := b.join(ctx, name, token)
	if err != nil {
		return nil, nil, err
	}
	return k.client, k.transport.CloseIdleConnections, nil
}

func (b *TLSBootstrap) join(ctx context.Context, name, token string) (*kubelet, error) {
	certPEM, keyPEM, err := b.requestCertificate(ctx, name, token)
	if err != nil {
		return nil, err
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("the signed certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b.CAData) {
		return nil, errors.New("TLSBootstrap.CAData holds no certificate")
	}
	// An http.Client of its own rather than rest.Config's CertData:
	// client-go caches a transport per distinct TLS config for the life of
	// the process, which for thousands of simulated kubelets would never be
	// freed.
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2: true,
		IdleConnTimeout:   30 * time.Second,
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: transport.NewUserAgentRoundTripper(kubeletUserAgent, tr)}
	client, err := kubernetes.NewForConfigAndClient(&rest.Config{Host: b.Host}, hc)
	if err != nil {
		return nil, err
	}
	return &kubelet{client: client, transport: tr}, nil
}

// requestCertificate is a kubelet's TLS bootstrap: a new key, a CSR for
// the kube-apiserver-client-kubelet signer made with the bootstrap token,
// and the wait for its signed certificate.
func (b *TLSBootstrap) requestCertificate(ctx context.Context, name, token string) (certPEM, keyPEM []byte, err error) {
	boot, err := kubernetes.NewForConfig(&rest.Config{
		Host:            b.Host,
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAData: b.CAData},
		UserAgent:       "cloudsim-kubelet-bootstrap",
	})
	if err != nil {
		return nil, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	csrPEM, err := certutil.MakeCSR(key, &pkix.Name{CommonName: "system:node:" + name, Organization: []string{"system:nodes"}}, nil, nil)
	if err != nil {
		return nil, nil, err
	}
	var (
		reqName string
		reqUID  types.UID
		last    error
	)
	// The API server learns of a new token from its informer, a moment
	// after the Secret is written; until then the token is Unauthorized and
	// a kubelet tries again. The window is short: a token that is not
	// learnt by then is refused for this pass.
	err = wait.PollUntilContextTimeout(ctx, 25*time.Millisecond, unknownTokenWindow, true, func(ctx context.Context) (bool, error) {
		reqName, reqUID, last = csr.RequestCertificateWithContext(ctx, boot, csrPEM, "", certificatesv1.KubeAPIServerClientKubeletSignerName, nil,
			[]certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}, key)
		return last == nil, ignoreUnauthorized(last)
	})
	if wait.Interrupted(err) && last != nil && ctx.Err() == nil {
		err = last // still Unauthorized: say so, not "timed out"
	}
	if err != nil {
		return nil, nil, fmt.Errorf("creating the CSR with the bootstrap token: %w", err)
	}
	timeout := b.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	certPEM, err = csr.WaitForCertificate(wctx, boot, reqName, reqUID)
	if err != nil {
		return nil, nil, fmt.Errorf("waiting for CSR %s to be approved and signed: %w", reqName, err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

// Kubelet is the client the Node name was registered with, made from its
// signed certificate (tests ask it who it is); nil when the agent does not
// bootstrap or name has no credentials yet.
func (a *Agent) Kubelet(name string) kubernetes.Interface {
	a.mu.Lock()
	defer a.mu.Unlock()
	if k, ok := a.kubelets[name]; ok {
		return k.client
	}
	return nil
}

// unknownTokenWindow bounds the retries of a CSR whose token the API
// server does not know yet.
const unknownTokenWindow = 2 * time.Second

// ignoreUnauthorized is err unless it is Unauthorized (nil then: retry).
func ignoreUnauthorized(err error) error {
	if apierrors.IsUnauthorized(err) {
		return nil
	}
	return err
}
