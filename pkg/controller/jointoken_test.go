package controller

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// testCA is a self-signed CA certificate (PEM) and its public-key hash as
// kubeadm computes it.
func testCA(t *testing.T) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"}, IsCA: true,
		NotBefore: t0, NotAfter: t0.Add(time.Hour), BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), "sha256:" + hex.EncodeToString(sum[:])
}

// With --mint-join-tokens each VM gets its own bootstrap token: a
// bootstrap.kubernetes.io/token Secret in kube-system for the kubeadm node
// group, expiring with the join timeout, handed to the template with the
// API server's address and the CA's hash, never shown in status or
// Events, and deleted once the Node has joined.
func TestJoinTokenMintedAndDeletedOnJoin(t *testing.T) {
	req := newRequest("gpu", func(r *tgpv1.GPURequest) {
		r.Finalizers = []string{tgpv1.Finalizer}
		r.Spec.Bootstrap = &tgpv1.BootstrapSource{SecretName: "join", Key: "userdata"}
	})
	f := stageFixture(t, req)
	f.ctrl.cfg.MintJoinTokens, f.ctrl.cfg.APIServerURL = true, "https://10.0.0.10:6443"
	caPEM, caHash := testCA(t)
	for _, obj := range []struct {
		ns string
		cm *corev1.ConfigMap
		s  *corev1.Secret
	}{
		{ns: f.ctrl.cfg.OperatorNamespace, cm: &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "kube-root-ca.crt"}, Data: map[string]string{"ca.crt": caPEM}}},
		{ns: "default", s: &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "join", Labels: map[string]string{LabelBootstrapConsent: "true"}},
			Data: map[string][]byte{"userdata": []byte("#!/bin/bash\nkubeadm join {{ .APIServerURL }} --token {{ .JoinToken }} --discovery-token-ca-cert-hash {{ .CACertHash }} --node-name {{ .NodeName }}\n")}}},
	} {
		var err error
		if obj.cm != nil {
			_, err = f.kube.CoreV1().ConfigMaps(obj.ns).Create(t.Context(), obj.cm, metav1.CreateOptions{})
		} else {
			_, err = f.kube.CoreV1().Secrets(obj.ns).Create(t.Context(), obj.s, metav1.CreateOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	var userData string
	f.provider.onLaunch = func(r providers.LaunchRequest) { userData = r.UserData }
	f.sync("gpu")
	if len(f.provider.launches) != 1 {
		t.Fatalf("launched %v, want one machine", f.provider.launches)
	}
	token, err := f.kube.CoreV1().Secrets(TokenNamespace).Get(t.Context(), tokenSecretName(ownMachine), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("no bootstrap token Secret: %v", err)
	}
	d := map[string]string{}
	for k, v := range token.Data {
		d[k] = string(v)
	}
	expires, _ := time.Parse(time.RFC3339, d["expiration"])
	if token.Type != corev1.SecretTypeBootstrapToken || d["usage-bootstrap-authentication"] != "true" || d["auth-extra-groups"] != tokenGroup ||
		d["usage-bootstrap-signing"] != "true" || // the template pins the CA: kubeadm's discovery needs the signature
		len(d["token-id"]) != 6 || len(d["token-secret"]) != 16 || !expires.Equal(t0.Add(f.ctrl.cfg.JoinTimeout)) || token.Labels[LabelTokenMachine] != ownMachine {
		t.Fatalf("token Secret %+v", token)
	}
	secret := d["token-id"] + "." + d["token-secret"]
	want := "kubeadm join https://10.0.0.10:6443 --token " + secret + " --discovery-token-ca-cert-hash " + caHash + " --node-name " + ownMachine
	if !strings.Contains(userData, want) {
		t.Fatalf("user data %q, want %q", userData, want)
	}

	// A second render for the machine (an SSH delivery, a retried launch)
	// finds the same token.
	again, err := f.ctrl.render(t.Context(), f.reload("gpu"), "#cloud-config\n# {{ .JoinToken }}\n", nil, ownMachine,
		providers.Offer{Provider: providers.RunPod, Region: "us-east-1"})
	if err != nil || !strings.Contains(again, secret) {
		t.Fatalf("second render: %v, the same token %v", err, strings.Contains(again, secret))
	}
	// User data that does not pin the CA gets a token without the signing
	// usage (the bootstrap signer then leaves cluster-info alone).
	const other = "gpur-other-1"
	if _, err := f.ctrl.render(t.Context(), f.reload("gpu"), "#!/bin/bash\n# {{ .JoinToken }}\n", nil, other,
		providers.Offer{Provider: providers.RunPod, Region: "us-east-1"}); err != nil {
		t.Fatal(err)
	}
	plain, err := f.kube.CoreV1().Secrets(TokenNamespace).Get(t.Context(), tokenSecretName(other), metav1.GetOptions{})
	if err != nil || plain.Data["usage-bootstrap-authentication"] == nil || plain.Data["usage-bootstrap-signing"] != nil {
		t.Fatalf("token of user data without the CA pin: %v, usages %v", err, plain.Data)
	}
	// A restarted operator, which remembers nothing, renders with it too.
	f.ctrl.tokens = joinTokens{}
	again, err = f.ctrl.render(t.Context(), f.reload("gpu"), "#cloud-config\n# {{ .JoinToken }}\n", nil, ownMachine,
		providers.Offer{Provider: providers.RunPod, Region: "us-east-1"})
	if err != nil || !strings.Contains(again, secret) {
		t.Fatalf("render after a restart: %v, the same token %v", err, strings.Contains(again, secret))
	}

	// Booting, Joining, then the Node joins: the token goes.
	stageSetState(f, "pod-1", providers.StateRunning)
	f.addNode(readyNode(ownMachine, string(req.UID), "runpod://pod-1"))
	for range 3 {
		f.reload("gpu")
		f.sync("gpu")
	}
	st := f.reload("gpu").Status
	if st.Phase != tgpv1.PhaseReady {
		t.Fatalf("phase %s (%s), want Ready", st.Phase, st.Message)
	}
	if _, err := f.kube.CoreV1().Secrets(TokenNamespace).Get(t.Context(), tokenSecretName(ownMachine), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("the token Secret is still there after the join (%v)", err)
	}
	var events []string
	for len(f.recorder.Events) > 0 {
		events = append(events, <-f.recorder.Events)
	}
	if text := st.Message + st.Selection + conditionText(st) + strings.Join(events, "\n"); strings.Contains(text, d["token-secret"]) {
		t.Errorf("the token reached status or Events: %s", text)
	}
}

// TestJoinTokenUIDsExpire: the UIDs of tokens whose machines never joined
// nor terminated (a failed launch) are dropped once the tokens expired.
func TestJoinTokenUIDsExpire(t *testing.T) {
	var tokens joinTokens
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	tokens.remember("failed-launch", "uid-1", t0, 15*time.Minute)
	tokens.remember("joining", "uid-2", t0.Add(10*time.Minute), 15*time.Minute)
	tokens.remember("new", "uid-3", t0.Add(16*time.Minute), 15*time.Minute)
	if _, ok := tokens.forget("failed-launch"); ok {
		t.Error("an expired token's UID is still remembered")
	}
	for _, m := range []string{"joining", "new"} {
		if _, ok := tokens.forget(m); !ok {
			t.Errorf("%s: a live token's UID was dropped", m)
		}
	}
}
