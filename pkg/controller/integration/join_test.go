package integration

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	lambdasim "github.com/solanyn/gpu-operator/pkg/cloudsim/lambda"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/nodeagent"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	"github.com/solanyn/gpu-operator/pkg/controller"
	"github.com/solanyn/gpu-operator/pkg/testenv"
)

// The joins here go through the real TLS bootstrap: the machine's user
// data carries the token the operator minted, the node agent creates a CSR
// with it, kube-controller-manager approves and signs it, and the Node is
// written with the resulting system:node:<name> certificate, under Node
// authorization and NodeRestriction.

// recipe reads the bootstrap Secret of a shipped join recipe and creates
// it in the rig's namespace.
func (r *rig) recipe(file string) *corev1.Secret {
	r.t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "..", "manifests", "examples", "bootstrap", file))
	if err != nil {
		r.t.Fatal(err)
	}
	var s corev1.Secret
	if err := yaml.UnmarshalStrict(raw, &s); err != nil {
		r.t.Fatal(err)
	}
	s.Namespace = r.ns
	out, err := r.kube.CoreV1().Secrets(r.ns).Create(r.t.Context(), &s, metav1.CreateOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	return out
}

// tokenSecrets are the minted bootstrap token Secrets of machine.
func (r *rig) tokenSecrets(machine string) []corev1.Secret {
	r.t.Helper()
	list, err := r.kube.CoreV1().Secrets(controller.TokenNamespace).List(r.t.Context(), metav1.ListOptions{LabelSelector: controller.LabelTokenMachine + "=" + machine})
	if err != nil {
		r.t.Fatal(err)
	}
	return list.Items
}

// TestTLSBootstrapKubeadmRecipe: a request with the kubeadm recipe and a
// minted token reaches Ready with a Node registered under credentials
// issued through an approved CSR; the token exists while the request is
// Joining and is gone once it is Ready.
func TestTLSBootstrapKubeadmRecipe(t *testing.T) {
	r := newRig(t, rigOptions{
		sims: stack.Config{Lambda: simConfig(
			cloudsim.CatalogEntry{InstanceType: "gpu_1x_a100", GPUs: 1, Region: "us-east-1", OnDemandPrice: 1.29, Capacity: -1},
		)},
		config: controller.Config{PollInterval: pollInterval, GPUResourceName: controller.DefaultGPUResource},
	})
	secret := r.recipe("kubeadm-join.yaml")
	req := r.create(`
metadata: {name: kubeadm}
spec: {gpuType: A100, gpuCount: 1, bootstrap: {secretName: ` + secret.Name + `}}`)
	node := machinePrefix(req) + "1"
	// The Node registers but holds its GPUs: the request stays Joining, so
	// the token can be seen while it does.
	r.agent.HoldGPUs(node, true)
	r.waitFor(req.Name, readyTimeout, "Joining with a registered Node", func(g *tgpv1.GPURequest) bool {
		c := meta.FindStatusCondition(g.Status.Conditions, tgpv1.ConditionReady)
		return g.Status.Phase == tgpv1.PhaseJoining && c != nil && c.Reason == "GPUsNotAllocatable"
	})
	tokens := r.tokenSecrets(node)
	if len(tokens) != 1 || tokens[0].Type != corev1.SecretTypeBootstrapToken {
		t.Fatalf("while Joining: %d token Secrets for %s, want its one bootstrap token", len(tokens), node)
	}
	tokenID := string(tokens[0].Data["token-id"])
	// The recipe pins the CA (--discovery-token-ca-cert-hash), so the
	// kubelet ran kubeadm's discovery first: cluster-info signed with this
	// token by the bootstrap signer, its CA matching the pin.
	info, err := r.kube.CoreV1().ConfigMaps(metav1.NamespacePublic).Get(t.Context(), "cluster-info", metav1.GetOptions{})
	if err != nil || info.Data["jws-kubeconfig-"+tokenID] == "" {
		t.Fatalf("cluster-info carries no signature for the minted token %s (%v)", tokenID, err)
	}

	// The Node's credentials: a CSR made with the token, approved by
	// kube-controller-manager and signed for system:node:<name>.
	csrs, err := r.kube.CertificatesV1().CertificateSigningRequests().List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var signed *certificatesv1.CertificateSigningRequest
	for i, c := range csrs.Items {
		if c.Spec.Username == "system:bootstrap:"+tokenID {
			signed = &csrs.Items[i]
		}
	}
	if signed == nil {
		t.Fatalf("no CSR by system:bootstrap:%s among %d", tokenID, len(csrs.Items))
	}
	approved := false
	for _, c := range signed.Status.Conditions {
		approved = approved || (c.Type == certificatesv1.CertificateApproved && c.Status == corev1.ConditionTrue && c.Reason == "AutoApproved")
	}
	block, _ := pem.Decode(signed.Status.Certificate)
	if !approved || block == nil || signed.Spec.SignerName != certificatesv1.KubeAPIServerClientKubeletSignerName {
		t.Fatalf("CSR %s: signer %s, conditions %+v, certificate issued %v; want auto-approved and signed for the kubelet signer", signed.Name, signed.Spec.SignerName, signed.Status.Conditions, block != nil)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil || cert.Subject.CommonName != "system:node:"+node {
		t.Fatalf("CSR %s issued %v (%v), want a certificate for system:node:%s", signed.Name, cert.Subject, err, node)
	}
	// The agent writes the Node as that identity and nothing else.
	kubelet := r.agent.Kubelet(node)
	if kubelet == nil {
		t.Fatalf("the agent has no kubelet credentials for %s", node)
	}
	who, err := kubelet.AuthenticationV1().SelfSubjectReviews().Create(t.Context(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if u := who.Status.UserInfo; u.Username != "system:node:"+node || !slices.Contains(u.Groups, "system:nodes") {
		t.Fatalf("the Node's credentials are %s %v, want system:node:%s in system:nodes", u.Username, u.Groups, node)
	}
	n, err := r.kube.CoreV1().Nodes().Get(t.Context(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range n.ManagedFields {
		if f.Operation == metav1.ManagedFieldsOperationUpdate && f.Subresource == "" && f.Manager != "cloudsim-kubelet" && f.Manager != controller.FieldManager {
			t.Errorf("Node %s written by %q too", node, f.Manager)
		}
	}
	if _, err := kubelet.CoreV1().Nodes().Get(t.Context(), "someone-else", metav1.GetOptions{}); !apierrors.IsForbidden(err) {
		t.Errorf("the kubelet credentials read another Node: %v, want Forbidden by Node authorization", err)
	}

	r.agent.HoldGPUs(node, false)
	got := r.waitPhase(req.Name, tgpv1.PhaseReady, readyTimeout)
	if got.Status.NodeName != node {
		t.Fatalf("nodeName %q, want %s", got.Status.NodeName, node)
	}
	if left := r.tokenSecrets(node); len(left) != 0 {
		t.Fatalf("Ready with %d token Secrets left for %s, want none", len(left), node)
	}
}

// TestNodeRestrictionRefusesRoleLabel: a kubelet whose flags set a
// node-role.kubernetes.io/ label cannot register (NodeRestriction refuses
// it for the node's own credentials), and the operator refuses a template
// that would start one, before launching anything, saying why.
func TestNodeRestrictionRefusesRoleLabel(t *testing.T) {
	// The API server itself refuses: a machine with a valid bootstrap
	// token and the label in its kubelet flags never gets its Node.
	token := bootstrapToken(t)
	name := "restricted-" + token[:6]
	joinRefused(t, name, "#cloud-config\nhostname: "+name+"\nruncmd:\n  - [kubeadm, join, --token, "+token+"]\n"+
		"write_files: [{path: /etc/default/kubelet, content: \"KUBELET_EXTRA_ARGS='--node-labels=node-role.kubernetes.io/gpu='\"}]\n",
		"Forbidden by NodeRestriction", func(err error) bool {
			return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "node-role.kubernetes.io")
		})

	// The operator sees it coming: no launch, a clear BootstrapError.
	r := newRig(t, rigOptions{
		sims: stack.Config{Lambda: simConfig(
			cloudsim.CatalogEntry{InstanceType: "gpu_1x_a100", GPUs: 1, Region: "us-east-1", OnDemandPrice: 1.29, Capacity: -1},
		)},
		config: controller.Config{PollInterval: pollInterval},
	})
	secret := r.recipe("kubeadm-join.yaml")
	secret.StringData = nil
	secret.Data["userdata"] = []byte(strings.Replace(string(secret.Data["userdata"]), "--node-labels={{ .KubeletLabels }}", "--node-labels=node-role.kubernetes.io/gpu=,{{ .KubeletLabels }}", 1))
	if _, err := r.kube.CoreV1().Secrets(r.ns).Update(t.Context(), secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	req := r.create(`
metadata: {name: role}
spec: {gpuType: A100, gpuCount: 1, bootstrap: {secretName: ` + secret.Name + `}}`)
	got := r.waitFor(req.Name, readyTimeout, "BootstrapError", func(g *tgpv1.GPURequest) bool {
		c := meta.FindStatusCondition(g.Status.Conditions, tgpv1.ConditionLaunched)
		return c != nil && c.Reason == "BootstrapError"
	})
	if got.Status.Phase != tgpv1.PhasePending || !strings.Contains(got.Status.Message, "node-role.kubernetes.io/") || !strings.Contains(got.Status.Message, "NodeRestriction") {
		t.Fatalf("phase %s message %q, want Pending saying the node-role label cannot be set by the kubelet", got.Status.Phase, got.Status.Message)
	}
	if n := r.stack.Lambda.Core().Counters().Requests[lambdasim.EndpointLaunch]; n != 0 {
		t.Fatalf("%d launches, want none", n)
	}
	if left := r.tokenSecrets(machinePrefix(req) + "1"); len(left) != 0 {
		t.Fatalf("%d token Secrets left for a machine never launched", len(left))
	}
}

// TestDiscoveryRefusesAWrongCAPin: kubeadm's discovery trusts the cluster
// only when its CA matches the pin in the user data; with a wrong pin the
// machine never joins, even with a valid token.
func TestDiscoveryRefusesAWrongCAPin(t *testing.T) {
	token := bootstrapToken(t)
	name := "pinned-" + token[:6]
	joinRefused(t, name, "#cloud-config\nhostname: "+name+"\nruncmd:\n  - [kubeadm, join, --token, "+token+
		", --discovery-token-ca-cert-hash, \"sha256:"+strings.Repeat("0", 64)+"\"]\n",
		"discovery refusing the cluster's CA", func(err error) bool {
			return err != nil && strings.Contains(err.Error(), "matches --discovery-token-ca-cert-hash")
		})
}

// joinRefused runs the node agent alone (no operator) for one active
// machine with userData until its join error is what refused accepts
// (the agent retries each pass, as a kubelet does), then checks that no
// Node of that name exists.
func joinRefused(t *testing.T, name, userData, want string, refused func(error) bool) {
	t.Helper()
	agent := &nodeagent.Agent{Kube: kubeClient(t), TLSBootstrap: tlsBootstrap(), Simulators: []cloudsim.Simulator{staticSim{{
		Provider: "lambdalabs", ID: "i-" + name, Name: name, GPUs: 1, Active: true, Live: true, UserData: userData,
	}}}}
	if err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, readyTimeout, true, func(ctx context.Context) (bool, error) {
		if err := agent.Sync(ctx); err != nil {
			return false, err
		}
		return refused(agent.JoinError(name)), nil
	}); err != nil {
		t.Fatalf("machine %s: join error %v, want %s", name, agent.JoinError(name), want)
	}
	if _, err := kubeClient(t).CoreV1().Nodes().Get(t.Context(), name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("Node %s: %v, want none", name, err)
	}
}

// TestNoJoinCredentialsNeverJoins: without a minted token in its user data
// a machine has nothing the API server accepts, never registers a Node,
// and the request ends in JoinTimeout with the machine terminated.
func TestNoJoinCredentialsNeverJoins(t *testing.T) {
	r := newRig(t, rigOptions{
		sims: stack.Config{Lambda: simConfig(
			cloudsim.CatalogEntry{InstanceType: "gpu_1x_a100", GPUs: 1, Region: "us-east-1", OnDemandPrice: 1.29, Capacity: -1},
		)},
		config: controller.Config{PollInterval: 300 * time.Millisecond, JoinTimeout: 5 * time.Second},
		noMint: true,
	})

	req := r.create(`
metadata: {name: nocreds}
spec: {gpuType: A100, gpuCount: 1}`)
	node := machinePrefix(req) + "1"
	// The machine boots and its kubelet finds nothing to authenticate with.
	if err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, readyTimeout, true, func(context.Context) (bool, error) {
		return errors.Is(r.agent.JoinError(node), nodeagent.ErrNoBootstrapToken), nil
	}); err != nil {
		t.Fatalf("machine %s: join error %v, want %v", node, r.agent.JoinError(node), nodeagent.ErrNoBootstrapToken)
	}
	got := r.waitFor(req.Name, 3*readyTimeout, "JoinTimeout", func(g *tgpv1.GPURequest) bool {
		c := meta.FindStatusCondition(g.Status.Conditions, tgpv1.ConditionReady)
		return c != nil && c.Reason == "JoinTimeout"
	})
	if _, err := r.kube.CoreV1().Nodes().Get(t.Context(), node, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("Node %s: %v, want none", node, err)
	}
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, readyTimeout, true, func(context.Context) (bool, error) {
		for _, m := range r.stack.Lambda.Machines() {
			if m.Live {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("machine still live after JoinTimeout (%s): %v", got.Status.Message, err)
	}
}

// bootstrapToken is a token like the operator's for kubeadm's discovery
// (authentication and signing), valid for ten minutes.
func bootstrapToken(t *testing.T) string {
	t.Helper()
	token, _, err := testenv.BootstrapToken(t.Context(), kubeClient(t), true, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// staticSim is a simulator with a fixed list of machines, for the agent
// alone.
type staticSim []cloudsim.Machine

func (s staticSim) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusNotFound)
}
func (s staticSim) Provider() string             { return "static" }
func (s staticSim) Machines() []cloudsim.Machine { return s }
func (s staticSim) Preempt(string) error         { return nil }
func (s staticSim) Core() *cloudsim.Core         { return nil }

func kubeClient(t *testing.T) kubernetes.Interface {
	t.Helper()
	return kubernetes.NewForConfigOrDie(env.Config)
}
