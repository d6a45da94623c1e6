package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"sigs.k8s.io/yaml"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	lambdasim "github.com/solanyn/gpu-operator/pkg/cloudsim/lambda"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	"github.com/solanyn/gpu-operator/pkg/controller"
	"github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned"
)

// The tenancy test runs the real controller as the operator's ServiceAccount
// under the shipped RBAC (manifests/20-rbac.yaml), watching two tenant
// namespaces, and lets tenants who may write their requests' status attack
// each other, the operator's namespace and the workers. Each sub-test states
// one guarantee of DESIGN.md's "Tenancy and safety".

const (
	operatorNamespace = "gpu-operator"
	operatorSA        = "system:serviceaccount:gpu-operator:gpu-operator"
	// tenancyLabel scopes the test's controller to the test's requests: it
	// watches every namespace (the tenants' and the operator's own), but the
	// apiserver is shared with the package's other tests.
	tenancyLabel = "tenancy-test.tgp-e2e/rig"
	// bootstrapLabel is the opt-in a bootstrap Secret must carry.
	bootstrapLabel = "tgp.solanyn.com/bootstrap"

	dbPassword  = "hunter2-db-secret"
	operatorKey = "sk-operator-credential-5f3a9c"
	// Distinctive pieces of the tenants' templates: template text must not
	// show up in status, Events, metrics or logs either.
	bombMarker    = "{{range $.Labels}}"
	fillerMarker  = "oversized-filler-7c1e"
	refusalWithin = 10 * time.Second
	bombWithin    = 5 * time.Second
)

// tenancyCatalog gives every attack its own offering, so that harm done by
// one attack (an offering marked unavailable, say) cannot pass or fail
// another.
func tenancyCatalog() stack.Config {
	return stack.Config{
		Lambda: simConfig(
			cloudsim.CatalogEntry{InstanceType: "gpu_1x_a10", GPUs: 1, Region: "us-east-1", OnDemandPrice: 0.75, Capacity: -1},       // forged status: bob
			cloudsim.CatalogEntry{InstanceType: "gpu_1x_a10", GPUs: 1, Region: "us-west-1", OnDemandPrice: 0.75, Capacity: -1},       // (a second region, should the first be marked unavailable)
			cloudsim.CatalogEntry{InstanceType: "gpu_1x_a40", GPUs: 1, Region: "us-east-1", OnDemandPrice: 0.80, Capacity: -1},       // secrets by consent
			cloudsim.CatalogEntry{InstanceType: "gpu_1x_a100", GPUs: 1, Region: "us-east-1", OnDemandPrice: 1.29, Capacity: -1},      // template bomb
			cloudsim.CatalogEntry{InstanceType: "gpu_1x_h100_pcie", GPUs: 1, Region: "us-west-1", OnDemandPrice: 2.49, Capacity: -1}, // offering poison
		),
		// forged status: alice, on another provider than bob
		Paperspace: simConfig(cloudsim.CatalogEntry{InstanceType: "A6000", GPUs: 1, Region: "ny2", Capacity: -1}),
	}
}

func TestTenancy(t *testing.T) {
	logs := captureKlog(t, 4)
	admin := kubernetes.NewForConfigOrDie(env.Config)
	applyShippedRBAC(t, admin)
	operator := &apiRecorder{}
	asOperator := func(cfg *rest.Config) *rest.Config {
		cfg.Impersonate = rest.ImpersonationConfig{UserName: operatorSA,
			Groups: []string{"system:serviceaccounts", "system:serviceaccounts:gpu-operator", "system:authenticated"}}
		inner := cfg.WrapTransport
		cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
			if inner != nil {
				rt = inner(rt)
			}
			return operator.wrap(rt)
		}
		return cfg
	}
	saKube := kubernetes.NewForConfigOrDie(asOperator(rest.CopyConfig(env.Config)))
	assertIdentity(t, saKube, operatorSA)
	waitAllowed(t, saKube, "the operator's ServiceAccount",
		authorizationv1.ResourceAttributes{Group: tgpv1.GroupName, Resource: "gpurequests", Verb: "watch"},
		authorizationv1.ResourceAttributes{Group: tgpv1.GroupName, Resource: "gpurequests", Subresource: "status", Verb: "update"},
		authorizationv1.ResourceAttributes{Resource: "nodes", Verb: "watch"},
		authorizationv1.ResourceAttributes{Resource: "pods", Verb: "watch"})
	operator.reset() // what the setup's own checks were answered is not the controller's

	id := fmt.Sprintf("%08x", time.Now().UnixNano()&0xffffffff)
	r := newRig(t, rigOptions{
		sims:            tenancyCatalog(),
		config:          controller.Config{PollInterval: 300 * time.Millisecond},
		operatorConfig:  asOperator,
		requestSelector: tenancyLabel + "=" + id,
		stopTimeout:     20 * time.Second,
	})
	ts := &tenancy{r: r, admin: admin, id: id}
	alice := ts.tenant(t, "alice", r.ns+"-a", true)
	bob := ts.tenant(t, "bob", r.ns+"-b", false)

	t.Run("forged status only hurts the forger", func(t *testing.T) { ts.forgedStatus(t, alice, bob) })
	t.Run("secrets only by consent", func(t *testing.T) { ts.confusedDeputy(t, bob) })
	t.Run("oversized user data fails only its own request", func(t *testing.T) { ts.offeringPoison(t, alice, bob) })
	// Last: on a controller without a render limit the bomb holds its
	// workers for good (the rig gives up waiting for them after stopTimeout).
	t.Run("template bomb is refused and starves no worker", func(t *testing.T) { ts.templateBomb(t, alice, bob) })

	t.Run("no Secret value or template text leaks", func(t *testing.T) {
		ts.assertNoLeak(t, logs.String(), []string{dbPassword, operatorKey}, []string{bombMarker, fillerMarker})
	})
	t.Run("the shipped RBAC is enough", func(t *testing.T) {
		total, denied := operator.snapshot()
		t.Logf("the controller made %d API requests as %s", total, operatorSA)
		if total == 0 {
			t.Errorf("the controller made no API request through the impersonating client")
		}
		for _, d := range denied {
			t.Errorf("the operator's ServiceAccount was forbidden: %s", d)
		}
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, "forbidden") {
				t.Errorf("controller log: %s", line)
			}
		}
	})
}

// tenancy is the shared state of the sub-tests.
type tenancy struct {
	r     *rig
	admin kubernetes.Interface
	id    string
}

// tenant is a user who may manage GPURequests (status included) in one namespace.
type tenant struct {
	user   string
	ns     string
	client versioned.Interface
	kube   kubernetes.Interface
}

// tenant makes a namespace and a user with a Role in it: GPURequests and
// their status, and with secrets also get/create on Secrets.
func (ts *tenancy) tenant(t *testing.T, user, ns string, secrets bool) tenant {
	t.Helper()
	ctx := t.Context()
	if _, err := ts.admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rules := []rbacv1.PolicyRule{
		{APIGroups: []string{tgpv1.GroupName}, Resources: []string{"gpurequests"}, Verbs: []string{"create", "get", "list", "watch", "update", "patch", "delete"}},
		{APIGroups: []string{tgpv1.GroupName}, Resources: []string{"gpurequests/status"}, Verbs: []string{"update", "patch"}},
	}
	if secrets {
		rules = append(rules, rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "create"}})
	}
	if _, err := ts.admin.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "tenant"}, Rules: rules}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.admin.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "tenant"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "tenant"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user}
	tn := tenant{user: user, ns: ns, client: versioned.NewForConfigOrDie(cfg), kube: kubernetes.NewForConfigOrDie(cfg)}
	assertIdentity(t, tn.kube, user)
	waitAllowed(t, tn.kube, user,
		authorizationv1.ResourceAttributes{Namespace: ns, Group: tgpv1.GroupName, Resource: "gpurequests", Verb: "create"},
		authorizationv1.ResourceAttributes{Namespace: ns, Group: tgpv1.GroupName, Resource: "gpurequests", Subresource: "status", Verb: "patch"})
	if secrets {
		waitAllowed(t, tn.kube, user, authorizationv1.ResourceAttributes{Namespace: ns, Resource: "secrets", Verb: "create"})
	} else if allowed(t, tn.kube, authorizationv1.ResourceAttributes{Namespace: ns, Resource: "secrets", Verb: "get"}) {
		t.Fatalf("%s may read Secrets in %s; the confused-deputy attack needs a tenant who may not", user, ns)
	}
	t.Logf("tenant %s in namespace %s (secrets: %v)", user, ns, secrets)
	return tn
}

// create creates a GPURequest from YAML as the tenant, in its namespace.
func (ts *tenancy) create(t *testing.T, client versioned.Interface, ns, manifest string) *tgpv1.GPURequest {
	t.Helper()
	var req tgpv1.GPURequest
	if err := yaml.UnmarshalStrict([]byte(manifest), &req); err != nil {
		t.Fatal(err)
	}
	req.Namespace = ns
	if req.Labels == nil {
		req.Labels = map[string]string{}
	}
	req.Labels[tenancyLabel] = ts.id
	out, err := client.TgpV1().GPURequests(ns).Create(t.Context(), &req, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating %s/%s: %v", ns, req.Name, err)
	}
	return out
}

// bootstrapSecret creates a bootstrap Secret with the client given (a
// tenant's or the admin's); optIn sets the opt-in label.
func bootstrapSecret(t *testing.T, kube kubernetes.Interface, ns, name, key, value string, optIn bool) {
	t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, StringData: map[string]string{key: value}}
	if optIn {
		s.Labels = map[string]string{bootstrapLabel: "true"}
	}
	_, err := kube.CoreV1().Secrets(ns).Create(t.Context(), s, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// Shared apiserver: make the existing one say what this test needs.
		var cur *corev1.Secret
		if cur, err = kube.CoreV1().Secrets(ns).Get(t.Context(), name, metav1.GetOptions{}); err == nil {
			if cur.Labels == nil {
				cur.Labels = map[string]string{}
			}
			if optIn {
				cur.Labels[bootstrapLabel] = "true"
			} else {
				delete(cur.Labels, bootstrapLabel)
			}
			cur.StringData = map[string]string{key: value}
			_, err = kube.CoreV1().Secrets(ns).Update(t.Context(), cur, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		t.Fatalf("creating Secret %s/%s: %v", ns, name, err)
	}
}

// get reads a request as the admin; nil when it is gone.
func (ts *tenancy) get(ctx context.Context, ns, name string) (*tgpv1.GPURequest, error) {
	req, err := ts.r.client.TgpV1().GPURequests(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return req, err
}

// waitReq polls a request until cond holds (a nil request: it is gone) or
// the timeout passes; it returns the last request seen, how long it took
// and whether cond held.
func (ts *tenancy) waitReq(t *testing.T, ns, name string, timeout time.Duration, cond func(*tgpv1.GPURequest) bool) (*tgpv1.GPURequest, time.Duration, bool) {
	t.Helper()
	start := time.Now()
	var last *tgpv1.GPURequest
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		req, err := ts.get(ctx, ns, name)
		if err != nil {
			return false, nil
		}
		last = req
		return cond(req), nil
	})
	return last, time.Since(start), err == nil
}

func isReady(req *tgpv1.GPURequest) bool { return req != nil && req.Status.Phase == tgpv1.PhaseReady }

// mustReady waits for Ready and fails the (sub-)test when it is not reached.
func (ts *tenancy) mustReady(t *testing.T, ns, name string) (*tgpv1.GPURequest, time.Duration) {
	t.Helper()
	req, took, ok := ts.waitReq(t, ns, name, readyTimeout, isReady)
	if !ok {
		t.Fatalf("%s/%s not Ready within %s: %s", ns, name, readyTimeout, describe(req))
	}
	return req, took
}

// refusal is the condition (False) or status message of a request that
// mentions any of the words (case-insensitively), or nil.
func refusal(req *tgpv1.GPURequest, words ...string) *metav1.Condition {
	if req == nil {
		return nil
	}
	has := func(s string) bool {
		for _, w := range words {
			if strings.Contains(strings.ToLower(s), strings.ToLower(w)) {
				return true
			}
		}
		return false
	}
	for _, c := range req.Status.Conditions {
		if c.Status == metav1.ConditionFalse && has(c.Reason+" "+c.Message) {
			return &c
		}
	}
	if has(req.Status.Message) {
		return &metav1.Condition{Type: "status.message", Message: req.Status.Message}
	}
	return nil
}

// waitRefused waits until the request is refused for one of the words and
// reports an error naming what was wanted and what was seen when it is not.
func (ts *tenancy) waitRefused(t *testing.T, ns, name string, timeout time.Duration, what string, words ...string) (*tgpv1.GPURequest, time.Duration, bool) {
	t.Helper()
	req, took, ok := ts.waitReq(t, ns, name, timeout, func(req *tgpv1.GPURequest) bool {
		return req != nil && req.Status.Phase != tgpv1.PhaseReady && refusal(req, words...) != nil
	})
	if !ok {
		t.Errorf("%s/%s: no False condition or message mentioning %q (%s) within %s; %s", ns, name, words, what, timeout, describe(req))
		return req, took, false
	}
	c := refusal(req, words...)
	t.Logf("%s/%s refused after %s: %s %s: %q", ns, name, took.Round(time.Millisecond), c.Type, c.Reason, c.Message)
	return req, took, true
}

// describe is a request's status in one line, for failure messages.
func describe(req *tgpv1.GPURequest) string {
	if req == nil {
		return "request gone (or never read)"
	}
	st := req.Status
	var b strings.Builder
	fmt.Fprintf(&b, "phase=%q provider=%q machine=%q instance=%q node=%q interruptions=%d message=%q", st.Phase, st.Provider, st.MachineName, st.InstanceID, st.NodeName, st.Interruptions, st.Message)
	for _, c := range st.Conditions {
		fmt.Fprintf(&b, "; %s=%s %s: %q", c.Type, c.Status, c.Reason, c.Message)
	}
	return b.String()
}

// machinesOf are the simulator machines ever created for a request; live
// only the ones still existing.
func (ts *tenancy) machinesOf(req *tgpv1.GPURequest, live bool) []cloudsim.Machine {
	var out []cloudsim.Machine
	for _, m := range ts.r.stack.Machines() {
		if strings.HasPrefix(m.Name, machinePrefix(req)) && (!live || m.Live) {
			out = append(out, m)
		}
	}
	return out
}

func machineNames(ms []cloudsim.Machine) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = fmt.Sprintf("%s %s/%s (%s)", m.Name, m.Provider, m.ID, m.NativeState)
	}
	return out
}

// launchCalls counts Lambda launch calls and the launches that made a machine.
func (ts *tenancy) launchCalls() (calls, made int) {
	c := ts.r.stack.Lambda.Core().Counters()
	for _, n := range c.Launches {
		made += n
	}
	return c.Requests[lambdasim.EndpointLaunch], made
}

// forgedStatus: alice writes bob's node, instance and provider (and in the
// second case his machine name) into her own request's status and deletes
// it. Only alice's machine may go; bob's stays exactly as it was.
func (ts *tenancy) forgedStatus(t *testing.T, alice, bob tenant) {
	for i, tc := range []struct {
		name   string
		forged func(bob tgpv1.GPURequestStatus) map[string]any
	}{
		{"nodeName, instanceID and provider", func(b tgpv1.GPURequestStatus) map[string]any {
			return map[string]any{"nodeName": b.NodeName, "instanceID": b.InstanceID, "provider": b.Provider}
		}},
		{"and machineName too", func(b tgpv1.GPURequestStatus) map[string]any {
			return map[string]any{"nodeName": b.NodeName, "instanceID": b.InstanceID, "provider": b.Provider, "machineName": b.MachineName}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A fresh victim each time: harm done in an earlier case must
			// not fail this one.
			bobName, name := fmt.Sprintf("bob-train-%d", i+1), fmt.Sprintf("alice-forger-%d", i+1)
			ts.create(t, bob.client, bob.ns, "metadata: {name: "+bobName+"}\nspec: {gpuType: A10, provider: lambdalabs}")
			bobReq, _ := ts.mustReady(t, bob.ns, bobName)
			victim := bobReq.Status
			ts.create(t, alice.client, alice.ns, "metadata: {name: "+name+"}\nspec: {gpuType: A6000, provider: paperspace}")
			aliceReq, took := ts.mustReady(t, alice.ns, name)
			t.Logf("bob Ready on %s/%s (Node %s); alice Ready on %s/%s (Node %s) after %s", victim.Provider, victim.InstanceID, victim.NodeName,
				aliceReq.Status.Provider, aliceReq.Status.InstanceID, aliceReq.Status.NodeName, took.Round(time.Millisecond))
			if len(ts.machinesOf(aliceReq, true)) == 0 {
				t.Fatalf("alice's request is Ready but no live machine carries its prefix %s", machinePrefix(aliceReq))
			}

			forged := tc.forged(victim)
			patch, _ := json.Marshal(map[string]any{"status": forged})
			out, err := alice.client.TgpV1().GPURequests(alice.ns).Patch(t.Context(), name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
			if err != nil {
				t.Fatalf("alice could not patch her request's status (the attack needs a tenant who can): %v", err)
			}
			t.Logf("alice's status now says provider=%s instance=%s node=%s machine=%s", out.Status.Provider, out.Status.InstanceID, out.Status.NodeName, out.Status.MachineName)
			if err := alice.client.TgpV1().GPURequests(alice.ns).Delete(t.Context(), name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			deleted := time.Now()

			last, took, gone := ts.waitReq(t, alice.ns, name, readyTimeout, func(req *tgpv1.GPURequest) bool { return req == nil })
			if gone {
				t.Logf("alice's deletion finished %s after the delete", took.Round(time.Millisecond))
			} else {
				t.Errorf("alice's forged request still exists %s after its deletion (finalizer not released): %s", readyTimeout, describe(last))
			}
			var leaked []cloudsim.Machine
			if err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 15*time.Second, true, func(context.Context) (bool, error) {
				leaked = ts.machinesOf(aliceReq, true)
				return len(leaked) == 0, nil
			}); err != nil {
				t.Errorf("alice's own machine was not terminated %s after her deletion: still live %v", time.Since(deleted).Round(time.Second), machineNames(leaked))
			}

			// Watch bob over a few poll intervals more: harm done to him (a
			// cordon, a terminate, an interruption) shows up within them.
			// The poll ends early on the first harm seen; its timeout is the
			// observation window, not an error.
			_ = wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 2*time.Second, true, func(context.Context) (bool, error) {
				return ts.bobIntact(t, bob, bobName, victim) != nil, nil
			})
			for _, e := range ts.bobIntact(t, bob, bobName, victim) {
				t.Error(e)
			}
		})
	}
}

// bobIntact lists what no longer holds of bob's request, Node and machine.
func (ts *tenancy) bobIntact(t *testing.T, bob tenant, name string, was tgpv1.GPURequestStatus) []string {
	var bad []string
	node, err := ts.admin.CoreV1().Nodes().Get(t.Context(), was.NodeName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		bad = append(bad, fmt.Sprintf("bob's Node %s was deleted", was.NodeName))
	case err != nil:
		bad = append(bad, fmt.Sprintf("reading bob's Node %s: %v", was.NodeName, err))
	case node.Spec.Unschedulable:
		bad = append(bad, fmt.Sprintf("bob's Node %s was cordoned (spec.unschedulable=true)", was.NodeName))
	}
	found := false
	for _, m := range ts.r.stack.Machines() {
		if m.Provider == was.Provider && m.ID == was.InstanceID {
			found = true
			if !m.Live {
				bad = append(bad, fmt.Sprintf("bob's machine %s (%s/%s) was terminated: state %s", m.Name, m.Provider, m.ID, m.NativeState))
			}
		}
	}
	if !found {
		bad = append(bad, fmt.Sprintf("bob's machine %s/%s is unknown to the simulator", was.Provider, was.InstanceID))
	}
	req, err := ts.get(t.Context(), bob.ns, name)
	if err != nil || req == nil || req.Status.Phase != tgpv1.PhaseReady || req.Status.MachineName != was.MachineName || req.Status.Interruptions != was.Interruptions {
		bad = append(bad, fmt.Sprintf("bob's request is no longer Ready on its machine %s with %d interruption(s): %s (err %v)", was.MachineName, was.Interruptions, describe(req), err))
	}
	return bad
}

// confusedDeputy: bob may not read Secrets, but names one in spec.bootstrap;
// the admin names the operator's own credentials Secret from the operator's
// namespace. Neither is read into user data, neither request launches.
func (ts *tenancy) confusedDeputy(t *testing.T, bob tenant) {
	bootstrapSecret(t, ts.admin, bob.ns, "db-password", "password", dbPassword, false)
	t.Run("a Secret without the opt-in label", func(t *testing.T) {
		req := ts.create(t, bob.client, bob.ns, `
metadata: {name: bob-deputy}
spec: {gpuType: A40, provider: lambdalabs, bootstrap: {secretName: db-password, key: password}}`)
		last, _, _ := ts.waitRefused(t, bob.ns, req.Name, refusalWithin, "the Secret lacks the opt-in label", bootstrapLabel)
		if isReady(last) {
			t.Errorf("bob's request naming a Secret he may not read is Ready: %s", describe(last))
		}
		if ms := ts.machinesOf(req, false); len(ms) > 0 {
			t.Errorf("a machine was launched for bob's request naming an unlabelled Secret: %v (user data %q)", machineNames(ms), ms[0].UserData)
		}
	})
	t.Run("the operator's own namespace", func(t *testing.T) {
		// Labelled: the label alone must not make the operator's namespace a source.
		bootstrapSecret(t, ts.admin, operatorNamespace, "gpu-operator-credentials", "userdata",
			"#cloud-config\nhostname: {{ .NodeName }}\n# lambda key: "+operatorKey+"\n", true)
		name := "tenancy-" + ts.id
		req := ts.create(t, ts.r.client, operatorNamespace, "metadata: {name: "+name+"}\nspec: {gpuType: A40, provider: lambdalabs, bootstrap: {secretName: gpu-operator-credentials}}")
		last, _, _ := ts.waitRefused(t, operatorNamespace, name, refusalWithin, "the operator's namespace is never a source", "namespace")
		if isReady(last) {
			t.Errorf("a request in the operator's namespace bootstrapped from gpu-operator-credentials is Ready: %s", describe(last))
		}
		if ms := ts.machinesOf(req, false); len(ms) > 0 {
			t.Errorf("a machine was launched with the operator's credentials Secret as user data: %v (user data %q)", machineNames(ms), ms[0].UserData)
		}
	})
	ts.assertNoLeak(t, "", []string{dbPassword, operatorKey}, nil)
}

// offeringPoison: alice's template renders over 2 MiB (a 105 KiB body once
// per label, 20 of them hers), over Lambda's 1 MB user-data limit; a simple
// template otherwise (one range, no define). It is refused before any
// launch call, and bob's request for the same offering launches right after.
func (ts *tenancy) offeringPoison(t *testing.T, alice, bob tenant) {
	chunk := strings.Repeat(fillerMarker+" ", 105<<10/(len(fillerMarker)+1))
	tmpl := "#cloud-config\nhostname: {{ .NodeName }}\n{{range $.Labels}}" + chunk + "\n{{end}}"
	bootstrapSecret(t, alice.kube, alice.ns, "big-userdata", "userdata", tmpl, true)
	calls0, made0 := ts.launchCalls()
	req := ts.create(t, alice.client, alice.ns, fmt.Sprintf(`
metadata: {name: alice-oversized}
spec: {gpuType: H100, provider: lambdalabs, region: us-west-1, bootstrap: {secretName: big-userdata}, nodeLabels: {%s}}`, twentyLabels()))
	// The reason alone (BootstrapError, say) is not enough: the refusal
	// must be for the size.
	ts.waitRefused(t, alice.ns, req.Name, refusalWithin, "user data over the provider's limit", "limit", "large", "exceed", "size", "bytes")
	rejected := func() int { calls, made := ts.launchCalls(); return (calls - calls0) - (made - made0) }
	if n := rejected(); n > 0 {
		t.Errorf("%d launch call(s) reached Lambda and were rejected while alice's oversized request was handled: the 2 MiB user data went to the provider", n)
	}
	if ms := ts.machinesOf(req, false); len(ms) > 0 {
		t.Errorf("alice's oversized request launched %v", machineNames(ms))
	}

	ts.create(t, bob.client, bob.ns, `
metadata: {name: bob-same-offering}
spec: {gpuType: H100, provider: lambdalabs, region: us-west-1}`)
	last, took, ok := ts.waitReq(t, bob.ns, "bob-same-offering", readyTimeout, isReady)
	if !ok {
		t.Errorf("bob's request for the same offering (lambdalabs gpu_1x_h100_pcie us-west-1) not Ready within %s: %s", readyTimeout, describe(last))
	} else {
		t.Logf("bob's request for the same offering Ready after %s", took.Round(time.Millisecond))
		if last.Status.InstanceType != "gpu_1x_h100_pcie" || last.Status.ProviderRegion != "us-west-1" {
			t.Errorf("bob Ready on %s/%s, want the offering alice's request had: gpu_1x_h100_pcie/us-west-1", last.Status.InstanceType, last.Status.ProviderRegion)
		}
	}
	if n := rejected(); n > 0 {
		t.Errorf("%d rejected launch call(s) at Lambda by the end of the step (alice's oversized user data, retried?)", n)
	}
}

// templateBomb: alice's template nests eight ranges over .Labels (28 labels:
// 28^8 iterations). As many of her requests as the rig has workers are
// refused within seconds, none launches, and bob's request created right
// after them reaches Ready.
func (ts *tenancy) templateBomb(t *testing.T, alice, bob tenant) {
	tmpl := "#cloud-config\nhostname: {{ .NodeName }}\n" + strings.Repeat(bombMarker, 8) + "x" + strings.Repeat("{{end}}", 8) + "\n"
	bootstrapSecret(t, alice.kube, alice.ns, "bomb", "userdata", tmpl, true)
	const workers = 2 // rig.start runs the controller with two workers
	var bombs []*tgpv1.GPURequest
	for i := range workers {
		bombs = append(bombs, ts.create(t, alice.client, alice.ns, fmt.Sprintf(`
metadata: {name: alice-bomb-%d}
spec: {gpuType: A100, provider: lambdalabs, bootstrap: {secretName: bomb}, nodeLabels: {%s}}`, i+1, twentyLabels())))
	}
	ts.create(t, bob.client, bob.ns, `
metadata: {name: bob-after-bomb}
spec: {gpuType: A100, provider: lambdalabs}`)
	for _, b := range bombs {
		_, took, ok := ts.waitRefused(t, alice.ns, b.Name, bombWithin, "the template is too complex", "Bootstrap", "template")
		if ok {
			t.Logf("%s refused %s after its creation", b.Name, took.Round(time.Millisecond))
		}
		if ms := ts.machinesOf(b, false); len(ms) > 0 {
			t.Errorf("%s launched %v", b.Name, machineNames(ms))
		}
	}
	last, took, ok := ts.waitReq(t, bob.ns, "bob-after-bomb", readyTimeout, isReady)
	if !ok {
		t.Errorf("bob's request created right after %d template bombs not Ready within %s (workers starved?): %s", workers, readyTimeout, describe(last))
	} else {
		t.Logf("bob's request created right after the bombs Ready after %s", took.Round(time.Millisecond))
	}
}

// twentyLabels are nodeLabels in YAML flow form, without braces.
func twentyLabels() string {
	var labels []string
	for i := range 20 {
		labels = append(labels, fmt.Sprintf("l%02d: v", i))
	}
	return strings.Join(labels, ", ")
}

// assertNoLeak checks that no secret value appears in any Event, any of the
// test's requests, any metric, the captured logs or any machine's user data,
// and that no template text appears in the first four.
func (ts *tenancy) assertNoLeak(t *testing.T, logs string, secrets, templates []string) {
	t.Helper()
	events, err := ts.admin.CoreV1().Events("").List(t.Context(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	reqs, err := ts.r.client.TgpV1().GPURequests("").List(t.Context(), metav1.ListOptions{LabelSelector: tenancyLabel + "=" + ts.id})
	if err != nil {
		t.Fatal(err)
	}
	mfs, err := ts.r.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := json.Marshal(mfs)
	var markers []string
	for _, s := range secrets {
		markers = append(markers, s, base64.StdEncoding.EncodeToString([]byte(s)))
	}
	markers = append(markers, templates...)
	for _, m := range markers {
		for _, e := range events.Items {
			if strings.Contains(e.Message, m) {
				t.Errorf("Event %s/%s (%s, on %s) contains %q: %q", e.Namespace, e.Name, e.Reason, e.InvolvedObject.Name, m, e.Message)
			}
		}
		for _, r := range reqs.Items {
			if b, _ := json.Marshal(r.Status); bytes.Contains(b, []byte(m)) {
				t.Errorf("the status of %s/%s contains %q: %s", r.Namespace, r.Name, m, describe(&r))
			}
		}
		if bytes.Contains(metrics, []byte(m)) {
			t.Errorf("a metric contains %q", m)
		}
		if logs != "" {
			for _, line := range strings.Split(logs, "\n") {
				if strings.Contains(line, m) {
					t.Errorf("a log line contains %q: %.300s", m, line)
				}
			}
		}
	}
	for _, s := range secrets {
		for _, m := range ts.r.stack.Machines() {
			if strings.Contains(m.UserData, s) {
				t.Errorf("machine %s (%s/%s) was launched with user data containing the Secret value %q", m.Name, m.Provider, m.ID, s)
			}
		}
	}
}

// applyShippedRBAC creates the operator's namespace, ServiceAccount and
// RBAC from manifests/ with the typed clients, leaving what exists.
func applyShippedRBAC(t *testing.T, kube kubernetes.Interface) {
	t.Helper()
	ctx := t.Context()
	for _, file := range []string{"00-namespace.yaml", "20-rbac.yaml"} {
		f, err := os.Open(filepath.Join(env.Root, "manifests", file))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		docs := utilyaml.NewYAMLReader(bufio.NewReader(f))
		for {
			doc, err := docs.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if len(bytes.TrimSpace(stripComments(doc))) == 0 {
				continue
			}
			obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			if err := createTyped(ctx, kube, obj); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatalf("%s: creating %T: %v", file, obj, err)
			}
		}
	}
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(append(out, line...), '\n')
		}
	}
	return out
}

func createTyped(ctx context.Context, kube kubernetes.Interface, obj runtime.Object) error {
	var err error
	switch o := obj.(type) {
	case *corev1.Namespace:
		_, err = kube.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
	case *corev1.ServiceAccount:
		_, err = kube.CoreV1().ServiceAccounts(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *rbacv1.ClusterRole:
		_, err = kube.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
	case *rbacv1.ClusterRoleBinding:
		_, err = kube.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
	case *rbacv1.Role:
		_, err = kube.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	case *rbacv1.RoleBinding:
		_, err = kube.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
	default:
		err = fmt.Errorf("unexpected kind %T in the RBAC manifests", obj)
	}
	return err
}

// assertIdentity checks who the apiserver thinks the client is.
func assertIdentity(t *testing.T, kube kubernetes.Interface, user string) {
	t.Helper()
	rev, err := kube.AuthenticationV1().SelfSubjectReviews().Create(t.Context(), &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("who am I (%s): %v", user, err)
	}
	if got := rev.Status.UserInfo.Username; got != user {
		t.Fatalf("impersonation: the apiserver sees %q, want %q", got, user)
	}
}

func allowed(t *testing.T, kube kubernetes.Interface, attrs authorizationv1.ResourceAttributes) bool {
	t.Helper()
	rev, err := kube.AuthorizationV1().SelfSubjectAccessReviews().Create(t.Context(), &authorizationv1.SelfSubjectAccessReview{
		Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &attrs},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return rev.Status.Allowed
}

// waitAllowed waits until RBAC just created is in force for the client.
func waitAllowed(t *testing.T, kube kubernetes.Interface, who string, attrs ...authorizationv1.ResourceAttributes) {
	t.Helper()
	for _, a := range attrs {
		err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			return allowed(t, kube, a), nil
		})
		if err != nil {
			t.Fatalf("%s may not %s %s/%s in %q: the RBAC under test does not allow it", who, a.Verb, a.Resource, a.Subresource, a.Namespace)
		}
	}
}

// apiRecorder counts the operator's API requests and records the ones the
// apiserver answered 403, with the apiserver's message.
type apiRecorder struct {
	mu     sync.Mutex
	total  int
	denied []string
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func (a *apiRecorder) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := rt.RoundTrip(req)
		a.mu.Lock()
		defer a.mu.Unlock()
		a.total++
		if err == nil && resp.StatusCode == http.StatusForbidden {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			resp.Body = io.NopCloser(bytes.NewReader(body))
			msg := string(body)
			var status metav1.Status
			if json.Unmarshal(body, &status) == nil && status.Message != "" {
				msg = status.Message
			}
			a.denied = append(a.denied, fmt.Sprintf("%s %s: %s", req.Method, req.URL.RequestURI(), msg))
		}
		return resp, err
	})
}

func (a *apiRecorder) reset() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.total, a.denied = 0, nil
}

func (a *apiRecorder) snapshot() (int, []string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.total, append([]string(nil), a.denied...)
}

// syncBuffer is a bytes.Buffer safe for klog's concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// captureKlog raises klog's verbosity and copies its output into a buffer
// (still printing it) until the test ends.
func captureKlog(t *testing.T, v int) *syncBuffer {
	var fs flag.FlagSet
	klog.InitFlags(&fs)
	buf := &syncBuffer{}
	set := func(k, val string) {
		if err := fs.Set(k, val); err != nil {
			t.Fatal(err)
		}
	}
	set("v", fmt.Sprint(v))
	set("logtostderr", "false")
	set("alsologtostderr", "true")
	klog.SetOutput(buf)
	t.Cleanup(func() {
		klog.Flush()
		set("v", "0")
		set("alsologtostderr", "false")
		set("logtostderr", "true")
	})
	return buf
}
