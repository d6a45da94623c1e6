package controller

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/bootstrap"
)

// Join tokens (--mint-join-tokens): one kubeadm bootstrap token per
// machine, a bootstrap.kubernetes.io/token Secret in kube-system that
// authenticates as the kubeadm node group and expires with the join
// timeout. The template gets it as .JoinToken with .APIServerURL,
// .CACertHash and .CACertData; the Secret is deleted once the Node has
// joined or the machine is gone. The token never appears in a log line,
// Event, condition or status.

const (
	// TokenNamespace is where bootstrap tokens live.
	TokenNamespace = "kube-system"
	// LabelTokenMachine names the machine a minted token is for.
	LabelTokenMachine = "tgp.solanyn.com/machine"
	// tokenGroup is the group kubeadm's node bootstrap RBAC binds.
	tokenGroup = "system:bootstrappers:kubeadm:default-node-token"
	// caConfigMap is the cluster CA every namespace carries.
	caConfigMap = "kube-root-ca.crt"
)

// joinValues is what a minted token gives a template.
type joinValues struct {
	Token, APIServerURL, CACertHash, CACertData string
}

// into is data with the join values.
func (v joinValues) into(data bootstrap.Data) bootstrap.Data {
	data.JoinToken, data.APIServerURL, data.CACertHash, data.CACertData = v.Token, v.APIServerURL, v.CACertHash, v.CACertData
	return data
}

// tokenSecretName is the bootstrap token Secret of a machine: the token id
// is derived from the machine name, so a render repeated for the same
// machine (a retried launch, an SSH delivery) finds the same token.
func tokenID(machine string) string {
	sum := sha256.Sum256([]byte(machine))
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	id := make([]byte, 6)
	for i := range id {
		id[i] = alphabet[int(sum[i])%len(alphabet)]
	}
	return string(id)
}

func tokenSecretName(machine string) string { return "bootstrap-token-" + tokenID(machine) }

// joinTokens is the minting's memory: the cluster CA, read at most once a
// caTTL (a rotated CA reaches new user data within it), and the UID of each
// token this process created, so deleting it needs no read first. A
// restarted operator has neither and reads them back.
type joinTokens struct {
	mu   sync.Mutex
	ca   clusterCA
	caAt time.Time
	// uids maps a machine name to its token Secret's UID and when it was
	// learnt. A machine whose launch failed is never joined nor
	// terminated, so its entry is dropped once its token has expired.
	uids     map[string]tokenUID
	prunedAt time.Time
}

type tokenUID struct {
	uid types.UID
	at  time.Time
}

// caTTL is how long a read of the cluster CA is reused.
const caTTL = time.Minute

// errTokenExists is mint's answer when the machine's token Secret exists
// already (a repeated render, a restarted operator): render again with it.
var errTokenExists = errors.New("the machine's bootstrap token exists")

// joinToken returns new join values for the machine with mint, which
// creates their token Secret (errTokenExists when the machine has one: then
// existingJoinToken has its values). The caller renders with the values
// first and mints only user data it will launch, so a refused template
// leaves no token behind. signing gives the token the signing usage, which
// kubeadm's token discovery needs (the bootstrap signer signs cluster-info
// with it) and which costs a rewrite of cluster-info when the token comes
// and goes; user data that does not pin the CA has no use for it. Errors
// say what failed, never the token.
func (c *Controller) joinToken(ctx context.Context, req *tgpv1.GPURequest, machine string) (v joinValues, mint func(ctx context.Context, signing bool) error, err error) {
	ca, err := c.clusterCA(ctx)
	if err != nil {
		return joinValues{}, nil, err
	}
	v = joinValues{APIServerURL: c.cfg.APIServerURL, CACertHash: ca.hash, CACertData: ca.data}
	secret := randomTokenSecret()
	v.Token = tokenID(machine) + "." + secret
	mint = func(ctx context.Context, signing bool) error {
		name := tokenSecretName(machine)
		expires := c.clock.Now().Add(c.cfg.JoinTimeout).UTC().Format(time.RFC3339)
		token := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: TokenNamespace,
				Labels: map[string]string{LabelTokenMachine: machine, LabelRequestUID: string(req.UID)}},
			Type: corev1.SecretTypeBootstrapToken,
			Data: map[string][]byte{
				"description":                    []byte(fmt.Sprintf("gpu-operator join token of machine %s (GPURequest %s/%s)", machine, req.Namespace, req.Name)),
				"token-id":                       []byte(tokenID(machine)),
				"token-secret":                   []byte(secret),
				"expiration":                     []byte(expires),
				"usage-bootstrap-authentication": []byte("true"),
				"auth-extra-groups":              []byte(tokenGroup),
			},
		}
		if signing {
			token.Data["usage-bootstrap-signing"] = []byte("true")
		}
		created, err := c.kube.CoreV1().Secrets(TokenNamespace).Create(ctx, token, metav1.CreateOptions{FieldManager: FieldManager})
		if apierrors.IsAlreadyExists(err) {
			return errTokenExists
		}
		if err != nil {
			return fmt.Errorf("creating bootstrap token Secret %s/%s: %s", TokenNamespace, name, apierrors.ReasonForError(err))
		}
		c.tokens.remember(machine, created.UID, c.clock.Now(), c.cfg.JoinTimeout)
		klog.FromContext(ctx).Info("minted a join token", "machine", machine, "secret", klog.KRef(TokenNamespace, name), "expires", expires)
		return nil
	}
	return v, mint, nil
}

// existingJoinToken returns the join values of the machine's token Secret,
// which must be labelled as this machine's.
func (c *Controller) existingJoinToken(ctx context.Context, machine string) (joinValues, error) {
	ca, err := c.clusterCA(ctx)
	if err != nil {
		return joinValues{}, err
	}
	name := tokenSecretName(machine)
	existing, err := c.kube.CoreV1().Secrets(TokenNamespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return joinValues{}, fmt.Errorf("reading bootstrap token Secret %s/%s: %s", TokenNamespace, name, apierrors.ReasonForError(err))
	}
	if existing.Labels[LabelTokenMachine] != machine {
		return joinValues{}, fmt.Errorf("bootstrap token Secret %s/%s exists and is not this machine's", TokenNamespace, name)
	}
	c.tokens.remember(machine, existing.UID, c.clock.Now(), c.cfg.JoinTimeout)
	return joinValues{Token: string(existing.Data["token-id"]) + "." + string(existing.Data["token-secret"]),
		APIServerURL: c.cfg.APIServerURL, CACertHash: ca.hash, CACertData: ca.data}, nil
}

// remember records the UID of the machine's token, learnt at now; entries
// older than ttl (the tokens' lifetime) are dropped on the way, at most
// once a minute.
func (t *joinTokens) remember(machine string, uid types.UID, now time.Time, ttl time.Duration) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.uids == nil {
		t.uids = map[string]tokenUID{}
	}
	if now.Sub(t.prunedAt) > time.Minute {
		t.prunedAt = now
		for m, e := range t.uids {
			if now.Sub(e.at) > ttl {
				delete(t.uids, m)
			}
		}
	}
	t.uids[machine] = tokenUID{uid: uid, at: now}
}

// forget returns the remembered UID of the machine's token and forgets it.
func (t *joinTokens) forget(machine string) (types.UID, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.uids[machine]
	delete(t.uids, machine)
	return e.uid, ok
}

// randomTokenSecret is a bootstrap token's 16-character secret, from
// [a-z0-9] as kubeadm requires: crypto/rand's base32 text, lower-cased
// (80 bits, no modulo bias).
func randomTokenSecret() string { return strings.ToLower(rand.Text())[:16] }

// deleteJoinToken deletes the machine's minted token, if any: the Node has
// joined, or the machine is gone. Only a Secret labelled for this machine
// is deleted.
func (c *Controller) deleteJoinToken(ctx context.Context, machine string) {
	if !c.cfg.MintJoinTokens || machine == "" {
		return
	}
	secrets := c.kube.CoreV1().Secrets(TokenNamespace)
	name := tokenSecretName(machine)
	// The UID precondition is the proof: this process created that Secret,
	// or read it back labelled as this machine's.
	uid, ok := c.tokens.forget(machine)
	if !ok {
		existing, err := secrets.Get(ctx, name, metav1.GetOptions{})
		if err != nil || existing.Labels[LabelTokenMachine] != machine {
			return
		}
		uid = existing.UID
	}
	if err := secrets.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}); err != nil && !apierrors.IsNotFound(err) {
		klog.FromContext(ctx).Error(err, "deleting the join token; it expires by itself", "secret", klog.KRef(TokenNamespace, name))
		return
	}
	klog.FromContext(ctx).V(2).Info("deleted the join token", "machine", machine)
}

// clusterCA is the cluster's CA as kubeadm join wants it.
type clusterCA struct{ hash, data string }

// clusterCA reads the CA bundle of the kube-root-ca.crt ConfigMap in the
// operator's namespace: CACertData is the PEM, base64 (a kubeconfig's
// certificate-authority-data), CACertHash "sha256:" and the hex SHA-256 of
// the first certificate's public key (kubeadm's
// --discovery-token-ca-cert-hash).
func (c *Controller) clusterCA(ctx context.Context) (clusterCA, error) {
	t := &c.tokens
	t.mu.Lock()
	if ca, at := t.ca, t.caAt; !at.IsZero() && c.clock.Since(at) < caTTL {
		t.mu.Unlock()
		return ca, nil
	}
	t.mu.Unlock()
	ca, err := c.readClusterCA(ctx)
	if err != nil {
		return clusterCA{}, err
	}
	t.mu.Lock()
	t.ca, t.caAt = ca, c.clock.Now()
	t.mu.Unlock()
	return ca, nil
}

// readClusterCA reads kube-root-ca.crt.
func (c *Controller) readClusterCA(ctx context.Context) (clusterCA, error) {
	cm, err := c.kube.CoreV1().ConfigMaps(c.cfg.OperatorNamespace).Get(ctx, caConfigMap, metav1.GetOptions{})
	if err != nil {
		return clusterCA{}, fmt.Errorf("reading ConfigMap %s/%s: %s", c.cfg.OperatorNamespace, caConfigMap, apierrors.ReasonForError(err))
	}
	bundle := cm.Data["ca.crt"]
	block, _ := pem.Decode([]byte(bundle))
	if block == nil {
		return clusterCA{}, fmt.Errorf("ConfigMap %s/%s has no PEM certificate under ca.crt", c.cfg.OperatorNamespace, caConfigMap)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return clusterCA{}, fmt.Errorf("ConfigMap %s/%s: the CA certificate does not parse: %v", c.cfg.OperatorNamespace, caConfigMap, err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return clusterCA{hash: "sha256:" + hex.EncodeToString(sum[:]), data: base64.StdEncoding.EncodeToString([]byte(bundle))}, nil
}
