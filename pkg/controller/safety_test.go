package controller

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	core "k8s.io/client-go/testing"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// The tests in this file reproduce what careless and hostile tenants did
// (../shared/DESIGN.md "Tenancy and safety"); each failed before the fix.

const (
	ownMachine    = "gpur-0f8fad5bd9cb469f-1"
	victimUID     = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
	victimMachine = "gpur-aaaaaaaabbbbcccc-1"
)

// readyNode is a Ready Node registered for a machine.
func readyNode(name, uid, providerID string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{LabelRequestUID: uid}},
		Spec:       corev1.NodeSpec{ProviderID: providerID},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(t0)}}},
	}
}

// addNode puts a Node in the informer cache and the fake API.
func (f *fixture) addNode(n *corev1.Node) {
	f.t.Helper()
	if err := f.kubeInf.Core().V1().Nodes().Informer().GetIndexer().Add(n); err != nil {
		f.t.Fatal(err)
	}
	if _, err := f.kube.CoreV1().Nodes().Create(f.t.Context(), n, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

// reload copies the stored request into the informer cache, as a watch would.
func (f *fixture) reload(name string) *tgpv1.GPURequest {
	f.t.Helper()
	obj, err := f.client.Tracker().Get(gpurequestsResource, "default", name)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.ctrl.requestIdx.Update(obj); err != nil {
		f.t.Fatal(err)
	}
	return obj.(*tgpv1.GPURequest)
}

// nodeActions lists the fake kube client's writes to Nodes as "verb name".
func (f *fixture) nodeActions() []string {
	var out []string
	for _, a := range f.kube.Actions() {
		if a.GetResource().Resource != "nodes" || a.GetVerb() == "list" || a.GetVerb() == "watch" || a.GetVerb() == "get" {
			continue
		}
		name := ""
		switch a := a.(type) {
		case core.PatchAction:
			name = a.GetName()
		case core.DeleteAction:
			name = a.GetName()
		case core.CreateAction: // also matches UpdateAction (the same methods)
			name = a.GetObject().(metav1.Object).GetName()
		}
		out = append(out, a.GetVerb()+" "+name)
	}
	return out
}

// readyRequest is a Ready request on its own machine and Node.
func readyRequest(name string, mutate ...func(*tgpv1.GPURequest)) *tgpv1.GPURequest {
	start := metav1.NewTime(t0)
	return newRequest(name, append([]func(*tgpv1.GPURequest){func(r *tgpv1.GPURequest) {
		r.Finalizers = []string{tgpv1.Finalizer}
		r.Status = tgpv1.GPURequestStatus{Phase: tgpv1.PhaseReady, MachineName: ownMachine, Attempt: 1, InstanceID: "pod-1", NodeName: ownMachine,
			Provider: "runpod", Region: "us-west-1", ProviderRegion: "US-CA-2", InstanceType: "NVIDIA GeForce RTX 4090", Spot: true,
			HourlyPrice: ptr(0.22), AccumulatedCost: ptr(0.0), CostUpdatedAt: &start, LaunchedAt: &start, ProvisionedAt: &start,
			ReadyAt: &start, ObservedGeneration: 1}
	}}, mutate...)...)
}

func TestForgedStatusHurtsOnlyTheForger(t *testing.T) {
	// The forger points status at another tenant's Node and instance, then
	// deletes its request.
	now := metav1.NewTime(t0.Add(time.Minute))
	req := readyRequest("forger", func(r *tgpv1.GPURequest) {
		r.DeletionTimestamp = &now
		r.Status.NodeName, r.Status.InstanceID = victimMachine, "pod-victim"
	})
	f := newFixture(t, req)
	f.provider.instances = []providers.Instance{
		{Provider: "runpod", ID: "pod-1", Name: ownMachine, State: providers.StateRunning},
		{Provider: "runpod", ID: "pod-victim", Name: victimMachine, State: providers.StateRunning},
	}
	f.ctrl.inventory.Poll(t.Context(), "runpod", f.provider)
	f.addNode(readyNode(victimMachine, victimUID, "runpod://pod-victim"))
	f.addNode(readyNode(ownMachine, string(req.UID), "runpod://pod-1"))
	f.kube.ClearActions()

	f.sync("forger")
	if diff := cmp.Diff([]string{"pod-1"}, f.provider.terminated); diff != "" {
		t.Errorf("terminate calls (-want +got):\n%s", diff)
	}
	for _, a := range f.nodeActions() {
		if strings.HasSuffix(a, " "+victimMachine) {
			t.Errorf("the victim's Node was written: %s", a)
		}
	}
	if !slices.Contains(f.nodeActions(), "patch "+ownMachine) {
		t.Errorf("node actions %v, want the forger's own Node cordoned", f.nodeActions())
	}

	// Same forgery with a machine name that is not the forger's: the victim's
	// machine is still never touched, and the forger's is found by its prefix.
	req2 := readyRequest("forger2", func(r *tgpv1.GPURequest) {
		r.DeletionTimestamp = &now
		r.Status.MachineName, r.Status.NodeName, r.Status.InstanceID = victimMachine, victimMachine, "pod-victim"
	})
	f = newFixture(t, req2)
	f.provider.instances = []providers.Instance{
		{Provider: "runpod", ID: "pod-1", Name: ownMachine, State: providers.StateRunning},
		{Provider: "runpod", ID: "pod-victim", Name: victimMachine, State: providers.StateRunning},
	}
	f.ctrl.inventory.Poll(t.Context(), "runpod", f.provider)
	f.addNode(readyNode(victimMachine, victimUID, "runpod://pod-victim"))
	f.kube.ClearActions()
	f.sync("forger2")
	if diff := cmp.Diff([]string{"pod-1"}, f.provider.terminated); diff != "" {
		t.Errorf("forged machine name: terminate calls (-want +got):\n%s", diff)
	}
	if acts := f.nodeActions(); len(acts) != 0 {
		t.Errorf("forged machine name: node actions %v, want none", acts)
	}
	// A forged name claims nothing: the collector sees the victim's
	// instance as claimed only by the victim, and the forger's as unclaimed.
	if objs, _ := f.ctrl.requestIdx.ByIndex(byMachineName, victimMachine); len(objs) != 0 {
		t.Errorf("a forged machine name claims the victim's instance")
	}
}

func TestDeletingAnUnlaunchedRequestFinishesAtOnce(t *testing.T) {
	// A machine name is in status (written before a render failed) but no
	// launch call was ever made: nothing to wait for.
	now := metav1.NewTime(t0)
	f := newFixture(t, newRequest("gpu", func(r *tgpv1.GPURequest) {
		r.Finalizers = []string{tgpv1.Finalizer}
		r.DeletionTimestamp = &now
		r.Status = tgpv1.GPURequestStatus{Phase: tgpv1.PhasePending, MachineName: ownMachine, Attempt: 1}
	}))
	after := f.sync("gpu")
	if got := f.verbs(); !slices.Contains(got, "patch gpurequests") || after != 0 {
		t.Fatalf("actions %v, requeue %s; want the finalizer removed in this sync", got, after)
	}
	if patch := string(f.client.Actions()[len(f.client.Actions())-1].(core.PatchAction).GetPatch()); !strings.Contains(patch, `"finalizers":[]`) {
		t.Errorf("last patch %s, want the finalizer removed", patch)
	}
}

func TestOneTerminateCallPerTermination(t *testing.T) {
	now := metav1.NewTime(t0.Add(time.Minute))
	req := readyRequest("gpu", func(r *tgpv1.GPURequest) { r.DeletionTimestamp = &now })
	f := newFixture(t, req)
	f.provider.instances = []providers.Instance{{Provider: "runpod", ID: "pod-1", Name: ownMachine, State: providers.StateRunning}}
	f.ctrl.inventory.Poll(t.Context(), "runpod", f.provider)
	f.addNode(readyNode(ownMachine, string(req.UID), "runpod://pod-1"))
	// Several syncs (pod evictions, Node events) before the next listing.
	for range 3 {
		f.sync("gpu")
		f.reload("gpu")
		f.clock.Step(100 * time.Millisecond)
	}
	if diff := cmp.Diff([]string{"pod-1"}, f.provider.terminated); diff != "" {
		t.Errorf("terminate calls (-want +got):\n%s", diff)
	}
	// The provider lists it as gone: the Node is deleted and the finalizer released.
	f.provider.instances = nil
	f.clock.Step(5 * time.Second)
	f.ctrl.inventory.Poll(t.Context(), "runpod", f.provider)
	f.client.ClearActions()
	f.sync("gpu")
	if got := f.verbs(); !slices.Contains(got, "patch gpurequests") {
		t.Errorf("actions %v after the instance is gone, want the finalizer released", got)
	}
	if !slices.Contains(f.nodeActions(), "delete "+ownMachine) {
		t.Errorf("node actions %v, want the Node deleted", f.nodeActions())
	}
	if len(f.provider.terminated) != 1 {
		t.Errorf("%d terminate calls, want 1", len(f.provider.terminated))
	}
}

func TestAmbiguousLaunchAnswerAdoptsTheMachine(t *testing.T) {
	// The provider creates the machine but answers like a timeout: the
	// operator finds it by name instead of launching another.
	f := newFixture(t, newRequest("gpu", func(r *tgpv1.GPURequest) { r.Finalizers = []string{tgpv1.Finalizer} }))
	f.provider.createThenFail = &providers.Error{Provider: "runpod", Operation: "launch", Class: providers.ClassTransient, HTTPStatus: 500}
	f.sync("gpu")
	if diff := cmp.Diff([]string{ownMachine}, f.provider.launches); diff != "" {
		t.Fatalf("launches (-want +got):\n%s", diff)
	}
	if f.ctrl.unavailable.Len() != 0 {
		t.Errorf("%d offerings marked unavailable, want 0 (the launch worked)", f.ctrl.unavailable.Len())
	}
	var events []string
	for len(f.recorder.Events) > 0 {
		events = append(events, <-f.recorder.Events)
	}
	if !slices.ContainsFunc(events, func(e string) bool { return strings.HasPrefix(e, "Normal Adopted") }) {
		t.Errorf("events %v, want Adopted", events)
	}
	f.reload("gpu")
	f.clock.Step(3 * time.Second)
	f.ctrl.inventory.Poll(t.Context(), "runpod", f.provider)
	f.client.ClearActions()
	f.sync("gpu")
	if len(f.provider.launches) != 1 {
		t.Errorf("launches %v, want 1", f.provider.launches)
	}
	if st := f.reload("gpu").Status; st.Phase != tgpv1.PhaseBooting || st.InstanceID != "pod-1" {
		t.Errorf("status %s %q, want Booting on pod-1", st.Phase, st.InstanceID)
	}
}

func TestInvalidRequestAnswerFailsOnlyThatRequest(t *testing.T) {
	f := newFixture(t, newRequest("gpu", func(r *tgpv1.GPURequest) { r.Finalizers = []string{tgpv1.Finalizer} }))
	f.provider.launchErr = &providers.Error{Provider: "runpod", Operation: "launch", Class: providers.ClassInvalid, HTTPStatus: 400, Message: "request body too large"}
	f.sync("gpu")
	if f.ctrl.unavailable.Len() != 0 {
		t.Errorf("%d offerings marked unavailable, want 0: an invalid request says nothing about the offering", f.ctrl.unavailable.Len())
	}
	st := f.reload("gpu").Status
	if c := meta.FindStatusCondition(st.Conditions, tgpv1.ConditionLaunched); c == nil || c.Reason != string(providers.ClassInvalid) {
		t.Errorf("Launched condition %+v, want reason InvalidRequest", c)
	}
	if res := f.ctrl.Select(t.Context(), newRequest("other")); res.Eligible != 1 {
		t.Errorf("another request sees %d eligible offers, want 1", res.Eligible)
	}
}

func TestBootstrapSecretsOnlyByConsent(t *testing.T) {
	const secretText = "hunter2-db-password"
	withBootstrap := func(r *tgpv1.GPURequest) {
		r.Finalizers = []string{tgpv1.Finalizer}
		r.Spec.Bootstrap = &tgpv1.BootstrapSource{SecretName: "db", Key: "password"}
	}
	for _, tc := range []struct {
		name, opNamespace string
		labelled          bool
		wantLaunch        bool
		wantMessage       string
	}{
		{name: "no consent label", wantMessage: "lacks the label tgp.solanyn.com/bootstrap"},
		{name: "labelled", labelled: true, wantLaunch: true},
		{name: "operator namespace", opNamespace: "default", labelled: true, wantMessage: "operator's own namespace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, newRequest("gpu", withBootstrap))
			f.ctrl.cfg.OperatorNamespace = tc.opNamespace
			secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "default"},
				Data: map[string][]byte{"password": []byte("#cloud-config\nhostname: {{ .NodeName }}\n# " + secretText + "\n")}}
			if tc.labelled {
				secret.Labels = map[string]string{LabelBootstrapConsent: "true"}
			}
			if _, err := f.kube.CoreV1().Secrets("default").Create(t.Context(), secret, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			f.sync("gpu")
			if got := len(f.provider.launches) == 1; got != tc.wantLaunch {
				t.Fatalf("launched %v, want launch %v", f.provider.launches, tc.wantLaunch)
			}
			st := f.reload("gpu").Status
			if tc.wantMessage != "" {
				c := meta.FindStatusCondition(st.Conditions, tgpv1.ConditionLaunched)
				if c == nil || c.Reason != "BootstrapError" || !strings.Contains(c.Message, tc.wantMessage) {
					t.Errorf("Launched condition %+v, want BootstrapError saying %q", c, tc.wantMessage)
				}
			}
			var events []string
			for len(f.recorder.Events) > 0 {
				events = append(events, <-f.recorder.Events)
			}
			if text := st.Message + st.Selection + strings.Join(events, "\n"); !tc.wantLaunch && strings.Contains(text, secretText) {
				t.Errorf("Secret text in status or events: %s", text)
			}
		})
	}
}

func TestTemplateBombIsRefusedWithoutLaunch(t *testing.T) {
	bomb := strings.Repeat("{{range $.Labels}}", 8) + "x" + strings.Repeat("{{end}}", 8)
	f := newFixture(t, newRequest("gpu", func(r *tgpv1.GPURequest) {
		r.Finalizers = []string{tgpv1.Finalizer}
		r.Spec.Bootstrap = &tgpv1.BootstrapSource{SecretName: "bomb", Key: "userdata"}
		r.Spec.NodeLabels = map[string]string{}
		for i := range 20 {
			r.Spec.NodeLabels[strings.Repeat("k", i+1)] = "v"
		}
	}))
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bomb", Namespace: "default", Labels: map[string]string{LabelBootstrapConsent: "true"}},
		Data: map[string][]byte{"userdata": []byte(bomb)}}
	if _, err := f.kube.CoreV1().Secrets("default").Create(t.Context(), secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	f.sync("gpu")
	t.Logf("refused in %s", time.Since(start))
	if len(f.provider.launches) != 0 {
		t.Fatalf("launched %v", f.provider.launches)
	}
	c := meta.FindStatusCondition(f.reload("gpu").Status.Conditions, tgpv1.ConditionLaunched)
	if c == nil || c.Reason != "BootstrapError" || !strings.Contains(c.Message, "TooComplex") || strings.Contains(c.Message, "{{") {
		t.Errorf("Launched condition %+v, want BootstrapError without template text", c)
	}
}

func TestStoredInvalidSpecFailsWithoutLaunch(t *testing.T) {
	// An object stored before admission refused "1d".
	f := newFixture(t, newRequest("gpu", func(r *tgpv1.GPURequest) {
		r.Finalizers = []string{tgpv1.Finalizer}
		r.Spec.MaxLifetime = ptr(tgpv1.Duration("1d"))
	}))
	f.sync("gpu")
	if len(f.provider.launches) != 0 {
		t.Fatalf("launched %v", f.provider.launches)
	}
	st := f.reload("gpu").Status
	c := meta.FindStatusCondition(st.Conditions, tgpv1.ConditionReady)
	if st.Phase != tgpv1.PhaseFailed || c == nil || c.Reason != "InvalidSpec" || !strings.Contains(c.Message, "spec.maxLifetime") {
		t.Errorf("phase %s, Ready condition %+v; want Failed/InvalidSpec naming spec.maxLifetime", st.Phase, c)
	}
	// Another sync of the same generation does nothing more.
	f.sync("gpu")
	if len(f.provider.launches) != 0 {
		t.Fatalf("launched %v", f.provider.launches)
	}
	// The user fixes the field: the request is provisioned.
	fixed := f.reload("gpu").DeepCopy()
	fixed.Spec.MaxLifetime = ptr(tgpv1.Duration("24h"))
	fixed.Generation = 2
	if err := f.ctrl.requestIdx.Update(fixed); err != nil {
		t.Fatal(err)
	}
	f.sync("gpu")
	if len(f.provider.launches) != 1 {
		t.Errorf("after the fix: launches %v, want 1", f.provider.launches)
	}
}

func TestIdleClockCountsFromWhenTheNodeBecameIdle(t *testing.T) {
	req := readyRequest("gpu")
	f := newFixture(t, req)
	f.provider.instances = []providers.Instance{{Provider: "runpod", ID: "pod-1", Name: ownMachine, State: providers.StateRunning}}
	f.ctrl.inventory.Poll(t.Context(), "runpod", f.provider)
	f.addNode(readyNode(ownMachine, string(req.UID), "runpod://pod-1"))
	f.sync("gpu") // idle, no idleTimeout yet
	f.reload("gpu")
	f.clock.Step(14 * time.Second)
	edited := f.reload("gpu").DeepCopy()
	edited.Spec.IdleTimeout = ptr(tgpv1.Duration("3s"))
	edited.Generation = 2
	if err := f.ctrl.requestIdx.Update(edited); err != nil {
		t.Fatal(err)
	}
	f.client.ClearActions()
	f.sync("gpu")
	writes := f.statusWrites()
	if len(writes) == 0 || writes[0].Status.Phase != tgpv1.PhaseTerminating || writes[0].Status.TerminationReason != "IdleTimeout" {
		t.Fatalf("status writes %v, want Terminating for IdleTimeout at once (idle for 14s, timeout 3s)", writes)
	}
}

func TestNodeLabelEditsAfterReadyReachTheNode(t *testing.T) {
	req := readyRequest("gpu", func(r *tgpv1.GPURequest) { r.Spec.NodeLabels = map[string]string{"team": "a", "old": "x"} })
	f := newFixture(t, req)
	f.provider.instances = []providers.Instance{{Provider: "runpod", ID: "pod-1", Name: ownMachine, State: providers.StateRunning}}
	f.ctrl.inventory.Poll(t.Context(), "runpod", f.provider)
	node := readyNode(ownMachine, string(req.UID), "runpod://pod-1")
	node.Labels["team"], node.Labels["old"] = "a", "x"
	node.Annotations = map[string]string{AnnotationAppliedLabels: "old,team"}
	f.addNode(node)
	edited := req.DeepCopy()
	edited.Spec.NodeLabels = map[string]string{"team": "b"}
	edited.Spec.NodeTaints = []tgpv1.NodeTaint{{Key: "gpu", Value: "true", Effect: corev1.TaintEffectNoSchedule}}
	edited.Generation = 2
	if err := f.ctrl.requestIdx.Update(edited); err != nil {
		t.Fatal(err)
	}
	f.kube.ClearActions()
	f.sync("gpu")
	got, err := f.kube.CoreV1().Nodes().Get(t.Context(), ownMachine, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Labels["team"] != "b" || got.Labels["old"] != "" || got.Labels[LabelRequestUID] != string(req.UID) {
		t.Errorf("labels %v, want team=b, old removed, the UID label kept", got.Labels)
	}
	if len(got.Spec.Taints) != 1 || got.Spec.Taints[0].Key != "gpu" {
		t.Errorf("taints %v, want gpu=true:NoSchedule", got.Spec.Taints)
	}
	if slices.ContainsFunc(f.nodeActions(), func(a string) bool { return strings.HasPrefix(a, "update") }) {
		t.Errorf("node actions %v: Nodes are patched, never updated from the cache", f.nodeActions())
	}
}

func TestLongRequestNameStillLabelsByUID(t *testing.T) {
	req := newRequest(strings.Repeat("n", 100))
	labels := nodeLabels(req, "runpod", "us-west-1", false)
	if labels[LabelRequestUID] != string(req.UID) {
		t.Errorf("UID label %q, want %q", labels[LabelRequestUID], req.UID)
	}
	if _, ok := labels[LabelRequest]; ok {
		t.Errorf("a 100-character name was put in a label value")
	}
}

func TestReservedLabelsFromAStoredSpecNeverReachTheNode(t *testing.T) {
	// An object stored before admission refused these keys.
	req := newRequest("gpu", func(r *tgpv1.GPURequest) {
		r.Spec.NodeLabels = map[string]string{
			"kubernetes.io/hostname": "other", "node-role.kubernetes.io/control-plane": "", "node-restriction.kubernetes.io/x": "y",
			LabelRequestUID: victimUID, "bad key": "v", "team": "a",
		}
	})
	labels := nodeLabels(req, "runpod", "us-west-1", false)
	for k := range req.Spec.NodeLabels {
		if k == "team" {
			continue
		}
		if v, ok := labels[k]; ok && !(k == LabelRequestUID && v == string(req.UID)) {
			t.Errorf("label %s=%s from the spec would reach the Node", k, v)
		}
	}
	if labels["team"] != "a" || labels[LabelRequestUID] != string(req.UID) {
		t.Errorf("labels %v, want team=a and the request's own UID", labels)
	}
}

func TestCollectorCountsEachOrphanOnceAndKeepsToItsPrefix(t *testing.T) {
	f := newFixture(t)
	f.provider.instances = []providers.Instance{
		{Provider: "runpod", ID: "pod-9", Name: "gpur-0000000000000000-1", State: providers.StateRunning},
		{Provider: "runpod", ID: "pod-user", Name: "someone-elses-pod", State: providers.StateRunning},
	}
	f.ctrl.inventory.Poll(t.Context(), "runpod", f.provider)
	f.clock.Step(f.ctrl.cfg.GCGrace + time.Second)
	f.ctrl.inventory.Poll(t.Context(), "runpod", f.provider)
	for range 2 {
		f.ctrl.CollectOrphans(t.Context())
		f.clock.Step(10 * time.Second)
	}
	if diff := cmp.Diff([]string{"pod-9"}, f.provider.terminated); diff != "" {
		t.Errorf("terminate calls (-want +got):\n%s", diff)
	}
	if got := testutil.ToFloat64(f.ctrl.metrics.OrphansTerminated.WithLabelValues("runpod")); got != 1 {
		t.Errorf("gpu_operator_orphans_terminated_total %v after two passes, want 1", got)
	}
}
