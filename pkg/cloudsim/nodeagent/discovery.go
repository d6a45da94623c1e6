package nodeagent

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"regexp"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	"k8s.io/cluster-bootstrap/token/jws"
)

// caPinRE finds kubeadm join's CA pin in user data: the flag, then
// "=", spaces, quotes or a YAML list's comma, then the pin.
var caPinRE = regexp.MustCompile(`--discovery-token-ca-cert-hash[=\s"',]+(sha256:[0-9a-f]{64})`)

// discover is kubeadm's token discovery, as "kubeadm join" documents it
// (kubernetes.io/docs/reference/setup-tools/kubeadm/kubeadm-join/, token-based
// discovery with CA pinning: the pin is the SHA-256 of the CA's Subject
// Public Key Info). The pin is computed here independently of the
// operator's .CACertHash, which it checks. It reads cluster-info from
// kube-public anonymously and without trusting the server (the pin is the
// trust), check that its kubeconfig is signed with the token (the
// bootstrap signer signs it for every token with usage-bootstrap-signing)
// and that its CA matches the pin; the CA's PEM is returned.
func (b *TLSBootstrap) discover(ctx context.Context, token, pin string) ([]byte, error) {
	id, secret, _ := strings.Cut(token, ".")
	anon, err := kubernetes.NewForConfig(&rest.Config{Host: b.Host, TLSClientConfig: rest.TLSClientConfig{Insecure: true}, UserAgent: "cloudsim-kubeadm"})
	if err != nil {
		return nil, err
	}
	cm, err := anon.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(ctx, bootstrapapi.ConfigMapClusterInfo, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("discovery: reading %s/%s: %w", metav1.NamespacePublic, bootstrapapi.ConfigMapClusterInfo, err)
	}
	content := cm.Data[bootstrapapi.KubeConfigKey]
	sig, ok := cm.Data[bootstrapapi.JWSSignatureKeyPrefix+id]
	if !ok {
		// The signer has not signed for this token (yet, or it lacks
		// usage-bootstrap-signing): kubeadm retries.
		return nil, fmt.Errorf("discovery: %s has no signature for token id %s", bootstrapapi.ConfigMapClusterInfo, id)
	}
	if !jws.DetachedTokenIsValid(sig, content, id, secret) {
		return nil, errors.New("discovery: the cluster-info signature does not match the token")
	}
	cfg, err := clientcmd.Load([]byte(content))
	if err != nil || len(cfg.Clusters) != 1 {
		return nil, fmt.Errorf("discovery: cluster-info's kubeconfig is not one cluster (%v)", err)
	}
	for _, cluster := range cfg.Clusters {
		ca := cluster.CertificateAuthorityData
		for rest := ca; ; {
			var block *pem.Block
			if block, rest = pem.Decode(rest); block == nil {
				break
			}
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				continue
			}
			sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
			if "sha256:"+hex.EncodeToString(sum[:]) == pin {
				return ca, nil
			}
		}
	}
	return nil, fmt.Errorf("discovery: no CA in cluster-info matches --discovery-token-ca-cert-hash %s", pin)
}
