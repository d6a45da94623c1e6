package controller

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	core "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// The lifecycle stages, one key's sync at a time, on a fake clock: the
// instance poller is run by hand (f.ctrl.inventory.Poll) and time passes
// only by f.clock.Step. Launch with the write-ahead record and adoption
// after a restart are in sync_test.go.

// stageNextMachine is the request's machine name for its second attempt.
const stageNextMachine = "gpur-0f8fad5bd9cb469f-2"

// stageSecondOffer is a dearer offering of the same GPU in another region:
// where a failover or a relaunch goes once the first is unavailable.
var stageSecondOffer = providers.Offer{
	Provider: "runpod", InstanceType: "NVIDIA GeForce RTX 4090", GPUType: "RTX4090", GPUCount: 1,
	Region: "us-east-1", ProviderRegion: "US-GA-1", Capacity: providers.Spot, HourlyPrice: 0.30,
	Available: true, PriceSource: providers.PriceSourceAPI,
}

// stageFixture is newFixture with the second offering in the catalog (the
// catalog is first read by a sync, so the offers may still change here).
func stageFixture(t *testing.T, reqs ...*tgpv1.GPURequest) *fixture {
	t.Helper()
	f := newFixture(t, reqs...)
	f.provider.offers = append(f.provider.offers, stageSecondOffer)
	return f
}

func stageInstance(id, name string, state providers.InstanceState) providers.Instance {
	return providers.Instance{Provider: "runpod", ID: id, Name: name, State: state}
}

// stageList makes the provider list exactly these instances and runs the
// poller once.
func stageList(f *fixture, in ...providers.Instance) {
	f.t.Helper()
	f.provider.mu.Lock()
	f.provider.instances = append([]providers.Instance(nil), in...)
	f.provider.mu.Unlock()
	f.ctrl.inventory.Poll(f.t.Context(), "runpod", f.provider)
}

// stageSetState changes the state of the instance the provider holds under
// id (launched by a sync) and runs the poller once.
func stageSetState(f *fixture, id string, state providers.InstanceState) {
	f.t.Helper()
	f.provider.mu.Lock()
	found := false
	for i := range f.provider.instances {
		if f.provider.instances[i].ID == id {
			f.provider.instances[i].State, found = state, true
		}
	}
	f.provider.mu.Unlock()
	if !found {
		f.t.Fatalf("the provider holds no instance %s", id)
	}
	f.ctrl.inventory.Poll(f.t.Context(), "runpod", f.provider)
}

// stageEdit applies a spec edit to the cached request as the API server
// would: a new generation, the status as last written.
func stageEdit(f *fixture, name string, edit func(*tgpv1.GPURequest)) {
	f.t.Helper()
	r := f.reload(name).DeepCopy()
	edit(r)
	r.Generation++
	if err := f.ctrl.requestIdx.Update(r); err != nil {
		f.t.Fatal(err)
	}
}

// stageFailFirst makes the provider's first n launch calls answer err and
// records every call, failed or not.
func stageFailFirst(f *fixture, n int, err error) *[]providers.LaunchRequest {
	var calls []providers.LaunchRequest
	f.provider.launchErr = err
	f.provider.onLaunch = func(req providers.LaunchRequest) { // called with f.provider.mu held
		calls = append(calls, req)
		if len(calls) > n {
			f.provider.launchErr = nil
		}
	}
	return &calls
}

// stageOneWrite asserts that the client saw exactly one status write and
// returns what it wrote.
func stageOneWrite(t *testing.T, f *fixture, what string) tgpv1.GPURequestStatus {
	t.Helper()
	writes := f.statusWrites()
	if len(writes) != 1 {
		t.Fatalf("%s: %d status writes, want 1 (actions %v)", what, len(writes), f.verbs())
	}
	return writes[0].Status
}

func stageCondition(t *testing.T, st tgpv1.GPURequestStatus, typ string, want metav1.ConditionStatus, reason string) {
	t.Helper()
	c := meta.FindStatusCondition(st.Conditions, typ)
	if c == nil || c.Status != want || (reason != "" && c.Reason != reason) {
		t.Errorf("condition %s = %+v, want %s/%s", typ, c, want, reason)
	}
}

func stageEvents(f *fixture) []string {
	var out []string
	for len(f.recorder.Events) > 0 {
		out = append(out, <-f.recorder.Events)
	}
	return out
}

func stagePod(name, node string, mutate ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec:       corev1.PodSpec{NodeName: node},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, m := range mutate {
		m(p)
	}
	return p
}

// stageAddPod puts a pod in the pod informer's cache and, with inAPI, in the
// fake API (an eviction needs the pod there).
func stageAddPod(f *fixture, p *corev1.Pod, inAPI bool) {
	f.t.Helper()
	if err := f.kubeInf.Core().V1().Pods().Informer().GetIndexer().Add(p); err != nil {
		f.t.Fatal(err)
	}
	if inAPI {
		if _, err := f.kube.CoreV1().Pods(p.Namespace).Create(f.t.Context(), p, metav1.CreateOptions{}); err != nil {
			f.t.Fatal(err)
		}
	}
}

// stageNodePatches returns the bodies of the merge patches sent to Nodes.
func stageNodePatches(f *fixture) []string {
	var out []string
	for _, a := range f.kube.Actions() {
		if p, ok := a.(core.PatchAction); ok && a.GetResource().Resource == "nodes" {
			out = append(out, string(p.GetPatch()))
		}
	}
	return out
}

func stageEvictions(f *fixture) []string {
	var out []string
	for _, a := range f.kube.Actions() {
		if a.GetVerb() == "create" && a.GetResource().Resource == "pods" && a.GetSubresource() == "eviction" {
			out = append(out, a.(core.CreateAction).GetObject().(metav1.Object).GetName())
		}
	}
	return out
}

// stageReady is a Ready request (readyRequest) whose instance pod-1 the
// poller lists as running and whose Ready Node is registered.
func stageReady(t *testing.T, mutate ...func(*tgpv1.GPURequest)) (*fixture, *tgpv1.GPURequest) {
	t.Helper()
	req := readyRequest("gpu", mutate...)
	f := stageFixture(t, req)
	stageList(f, stageInstance("pod-1", ownMachine, providers.StateRunning))
	f.addNode(readyNode(ownMachine, string(req.UID), "runpod://pod-1"))
	f.kube.ClearActions()
	return f, req
}

func TestStageLaunchFailsOverToTheNextOffer(t *testing.T) {
	for _, class := range []providers.ErrorClass{providers.ClassCapacity, providers.ClassQuota} {
		t.Run(string(class), func(t *testing.T) {
			f := stageFixture(t, newRequest("gpu", func(r *tgpv1.GPURequest) { r.Finalizers = []string{tgpv1.Finalizer} }))
			calls := stageFailFirst(f, 1, &providers.Error{Provider: "runpod", Operation: "launch", Class: class})
			after := f.sync("gpu")

			var regions, names []string
			for _, c := range *calls {
				regions, names = append(regions, c.Offer.Region), append(names, c.Name)
			}
			if diff := cmp.Diff([]string{"us-west-1", "us-east-1"}, regions); diff != "" {
				t.Fatalf("launch calls by region (-want +got):\n%s", diff)
			}
			// A definite refusal created nothing: the name is kept for the next offer.
			if diff := cmp.Diff([]string{ownMachine, ownMachine}, names); diff != "" {
				t.Errorf("launch calls by machine name (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{ownMachine}, f.provider.launches); diff != "" {
				t.Errorf("launched (-want +got):\n%s", diff)
			}
			if f.ctrl.unavailable.Len() != 1 || !f.ctrl.unavailable.IsUnavailable(f.provider.offers[0].Key()) || f.ctrl.unavailable.IsUnavailable(stageSecondOffer.Key()) {
				t.Errorf("%d offerings unavailable; want only the refused one", f.ctrl.unavailable.Len())
			}
			// One write-ahead record per offer tried: each launch call's offer is
			// in status before the call.
			writes := f.statusWrites()
			if len(writes) != 2 {
				t.Fatalf("%d status writes, want 2 (one write-ahead record per launch call)", len(writes))
			}
			if first := writes[0].Status; first.Region != "us-west-1" || first.MachineName != ownMachine {
				t.Errorf("first write-ahead record: region %s machine %s, want us-west-1 %s", first.Region, first.MachineName, ownMachine)
			}
			st := writes[1].Status
			if st.Phase != tgpv1.PhaseProvisioning || st.MachineName != ownMachine || st.Attempt != 1 || st.Region != "us-east-1" ||
				st.ProviderRegion != "US-GA-1" || st.HourlyPrice == nil || *st.HourlyPrice != 0.30 {
				t.Errorf("status after the failover: phase %s machine %s attempt %d region %s/%s price %v; want Provisioning on the second offer",
					st.Phase, st.MachineName, st.Attempt, st.Region, st.ProviderRegion, st.HourlyPrice)
			}
			if after != f.ctrl.cfg.PollInterval {
				t.Errorf("requeue after %s, want the poll interval %s", after, f.ctrl.cfg.PollInterval)
			}
			if got := testutil.ToFloat64(f.ctrl.metrics.Failovers); got != 1 {
				t.Errorf("failovers metric %v, want 1", got)
			}
			events := stageEvents(f)
			if len(events) != 2 || !strings.HasPrefix(events[0], "Warning LaunchFailed") || !strings.HasPrefix(events[1], "Normal Launched") {
				t.Errorf("events %q, want LaunchFailed then Launched", events)
			}
		})
	}
}

func TestStageJoinBootingJoiningReady(t *testing.T) {
	req := newRequest("gpu", func(r *tgpv1.GPURequest) {
		r.Finalizers = []string{tgpv1.Finalizer}
		r.Spec.NodeLabels = map[string]string{"team": "a"}
		r.Spec.NodeTaints = []tgpv1.NodeTaint{{Key: "gpu", Value: "true", Effect: corev1.TaintEffectNoSchedule}}
	})
	f := stageFixture(t, req)
	if f.sync("gpu"); len(f.provider.launches) != 1 {
		t.Fatalf("launched %v, want one machine", f.provider.launches)
	}
	join := f.ctrl.cfg.JoinTimeout
	notReady := readyNode(ownMachine, string(req.UID), "runpod://pod-1")
	notReady.Status.Conditions[0].Status = corev1.ConditionFalse

	for _, step := range []struct {
		name    string
		advance time.Duration
		act     func()
		phase   tgpv1.Phase
		writes  int
		after   time.Duration
		check   func(t *testing.T, st tgpv1.GPURequestStatus)
	}{{
		name: "listed pending", advance: 3 * time.Second,
		act:   func() { f.ctrl.inventory.Poll(t.Context(), "runpod", f.provider) },
		phase: tgpv1.PhaseBooting, writes: 1, after: join - 3*time.Second,
		check: func(t *testing.T, st tgpv1.GPURequestStatus) {
			if st.InstanceID != "pod-1" || st.LaunchedAt == nil || !st.LaunchedAt.Time.Equal(t0) {
				t.Errorf("instance %q launchedAt %v, want pod-1 launched at %s", st.InstanceID, st.LaunchedAt, t0)
			}
			stageCondition(t, st, tgpv1.ConditionLaunched, metav1.ConditionTrue, "Launched")
		},
	}, {
		name: "still pending", advance: 12 * time.Second,
		act:   func() { f.ctrl.inventory.Poll(t.Context(), "runpod", f.provider) },
		phase: tgpv1.PhaseBooting, writes: 0, after: join - 15*time.Second,
	}, {
		name: "running, no Node", advance: 15 * time.Second,
		act:   func() { stageSetState(f, "pod-1", providers.StateRunning) },
		phase: tgpv1.PhaseJoining, writes: 1, after: join - 30*time.Second,
		check: func(t *testing.T, st tgpv1.GPURequestStatus) {
			stageCondition(t, st, tgpv1.ConditionNodeJoined, metav1.ConditionUnknown, "")
			stageCondition(t, st, tgpv1.ConditionReady, metav1.ConditionUnknown, "")
		},
	}, {
		name: "Node registered, NotReady", advance: 30 * time.Second,
		act:   func() { f.addNode(notReady) },
		phase: tgpv1.PhaseJoining, writes: 0, after: join - time.Minute,
	}, {
		name: "Node Ready", advance: 10 * time.Second,
		act: func() {
			ready := readyNode(ownMachine, string(req.UID), "runpod://pod-1")
			if err := f.kubeInf.Core().V1().Nodes().Informer().GetIndexer().Update(ready); err != nil {
				t.Fatal(err)
			}
		},
		phase: tgpv1.PhaseReady, writes: 1, after: f.ctrl.cfg.CostInterval,
		check: func(t *testing.T, st tgpv1.GPURequestStatus) {
			if st.NodeName != ownMachine || st.ReadyAt == nil || !st.ReadyAt.Time.Equal(f.clock.Now()) {
				t.Errorf("nodeName %q readyAt %v, want %s at %s", st.NodeName, st.ReadyAt, ownMachine, f.clock.Now())
			}
			stageCondition(t, st, tgpv1.ConditionNodeJoined, metav1.ConditionTrue, "NodeReady")
			stageCondition(t, st, tgpv1.ConditionReady, metav1.ConditionTrue, "NodeReady")
			// One patch: labels and taints are applied once, not once per stage.
			if patches := stageNodePatches(f); len(patches) != 1 {
				t.Errorf("%d Node patches, want 1: %q", len(patches), patches)
			}
			if acts := f.nodeActions(); slices.ContainsFunc(acts, func(a string) bool { return strings.HasPrefix(a, "update") }) {
				t.Errorf("node actions %v: Nodes are patched, never updated", acts)
			}
			node, err := f.kube.CoreV1().Nodes().Get(t.Context(), ownMachine, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]string{LabelRequestUID: string(req.UID), LabelRequest: "gpu", LabelRequestNamespace: "default",
				LabelProvider: "runpod", LabelRegion: "us-west-1", LabelGPUType: "RTX4090", LabelSpot: "true", "team": "a"}
			if diff := cmp.Diff(want, node.Labels); diff != "" {
				t.Errorf("Node labels (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]corev1.Taint{{Key: "gpu", Value: "true", Effect: corev1.TaintEffectNoSchedule}}, node.Spec.Taints); diff != "" {
				t.Errorf("Node taints (-want +got):\n%s", diff)
			}
		},
	}} {
		f.clock.Step(step.advance)
		step.act()
		f.reload("gpu")
		f.client.ClearActions()
		f.kube.ClearActions()
		after := f.sync("gpu")
		writes := f.statusWrites()
		if len(writes) != step.writes {
			t.Fatalf("%s: %d status writes, want %d", step.name, len(writes), step.writes)
		}
		st := f.reload("gpu").Status
		if st.Phase != step.phase {
			t.Fatalf("%s: phase %s, want %s (message %q)", step.name, st.Phase, step.phase, st.Message)
		}
		if after != step.after {
			t.Errorf("%s: requeue after %s, want %s", step.name, after, step.after)
		}
		if step.check != nil {
			t.Run(step.name, func(t *testing.T) { step.check(t, st) })
		}
	}
	if len(f.provider.launches) != 1 || len(f.provider.terminated) != 0 {
		t.Errorf("launched %v, terminated %v; want one launch and no terminate call", f.provider.launches, f.provider.terminated)
	}
}

func TestStageJoinTimeout(t *testing.T) {
	booting := func(r *tgpv1.GPURequest) {
		r.Status.Phase, r.Status.NodeName, r.Status.ReadyAt = tgpv1.PhaseBooting, "", nil
	}
	for _, tc := range []struct {
		name     string
		state    providers.InstanceState
		node     bool // a Node registered that never became Ready
		elapsed  time.Duration
		wantFail bool
	}{
		{name: "booting, a second before the deadline", state: providers.StateBooting, elapsed: 15*time.Minute - time.Second},
		{name: "booting, at the deadline", state: providers.StateBooting, elapsed: 15 * time.Minute, wantFail: true},
		{name: "running without a Node, past the deadline", state: providers.StateRunning, elapsed: 16 * time.Minute, wantFail: true},
		{name: "Node never Ready, past the deadline", state: providers.StateRunning, node: true, elapsed: 15*time.Minute + time.Second, wantFail: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := readyRequest("gpu", booting)
			f := stageFixture(t, req)
			if f.ctrl.cfg.JoinTimeout != 15*time.Minute {
				t.Fatalf("join timeout %s, want the 15m default", f.ctrl.cfg.JoinTimeout)
			}
			stageList(f, stageInstance("pod-1", ownMachine, tc.state))
			if tc.node {
				n := readyNode(ownMachine, string(req.UID), "runpod://pod-1")
				n.Status.Conditions[0].Status = corev1.ConditionFalse
				f.addNode(n)
			}
			f.clock.Step(tc.elapsed)
			stageList(f, stageInstance("pod-1", ownMachine, tc.state))
			after := f.sync("gpu")
			st := f.reload("gpu").Status
			if !tc.wantFail {
				if st.Phase == tgpv1.PhaseFailed || len(f.provider.terminated) != 0 {
					t.Fatalf("phase %s, terminated %v before the deadline", st.Phase, f.provider.terminated)
				}
				if after != time.Second {
					t.Errorf("requeue after %s, want 1s (the time left to the deadline)", after)
				}
				return
			}
			if st.Phase != tgpv1.PhaseFailed || st.TerminationReason != "JoinTimeout" {
				t.Fatalf("phase %s reason %q, want Failed/JoinTimeout", st.Phase, st.TerminationReason)
			}
			stageCondition(t, st, tgpv1.ConditionReady, metav1.ConditionFalse, "JoinTimeout")
			stageCondition(t, st, tgpv1.ConditionNodeJoined, metav1.ConditionFalse, "JoinTimeout")
			if after != 0 {
				t.Errorf("requeue after %s, want none: Failed is final", after)
			}
			// Failed is final: more syncs send no more terminate calls.
			f.clock.Step(time.Minute)
			f.sync("gpu")
			if diff := cmp.Diff([]string{"pod-1"}, f.provider.terminated); diff != "" {
				t.Errorf("terminate calls (-want +got):\n%s", diff)
			}
			if len(f.provider.launches) != 0 {
				t.Errorf("relaunched %v after a join timeout", f.provider.launches)
			}
		})
	}
}

func TestStageInterruptionRelaunches(t *testing.T) {
	notReady := func(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionFalse }
	for _, tc := range []struct {
		name      string
		instances []providers.Instance
		node      func(*corev1.Node) // nil: no Node
		advance   time.Duration      // before the poll and the sync
		cause     string
		wantTerm  []string
	}{{
		name:      "the provider interrupts the instance",
		instances: []providers.Instance{stageInstance("pod-1", ownMachine, providers.StateInterrupted)},
		node:      func(*corev1.Node) {}, advance: 10 * time.Second,
		cause: "InstanceInterrupted", wantTerm: []string{"pod-1"},
	}, {
		name: "the instance vanishes from the listing",
		node: func(*corev1.Node) {}, advance: 10 * time.Second,
		cause: "InstanceVanished",
	}, {
		name:      "the Node is deleted",
		instances: []providers.Instance{stageInstance("pod-1", ownMachine, providers.StateRunning)},
		advance:   10 * time.Second,
		cause:     "NodeDeleted", wantTerm: []string{"pod-1"},
	}, {
		name:      "the Node is NotReady past the grace",
		instances: []providers.Instance{stageInstance("pod-1", ownMachine, providers.StateRunning)},
		node:      notReady, advance: 2 * time.Minute,
		cause: "NodeNotReady", wantTerm: []string{"pod-1"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			req := readyRequest("gpu")
			f := stageFixture(t, req)
			if tc.node != nil {
				n := readyNode(ownMachine, string(req.UID), "runpod://pod-1")
				tc.node(n)
				f.addNode(n)
			}
			f.clock.Step(tc.advance)
			stageList(f, tc.instances...)
			f.client.ClearActions()
			f.kube.ClearActions()
			f.sync("gpu")

			// One status write: the new attempt's write-ahead record carries
			// the interruption.
			st := stageOneWrite(t, f, "interruption and relaunch")
			if diff := cmp.Diff([]string{stageNextMachine}, f.provider.launches); diff != "" {
				t.Fatalf("launches (-want +got):\n%s", diff)
			}
			if st.Phase != tgpv1.PhaseProvisioning || st.MachineName != stageNextMachine || st.Attempt != 2 || st.Interruptions != 1 {
				t.Errorf("phase %s machine %s attempt %d interruptions %d; want Provisioning %s, attempt 2, 1 interruption",
					st.Phase, st.MachineName, st.Attempt, st.Interruptions, stageNextMachine)
			}
			if st.Region != "us-east-1" || st.InstanceID != "" || st.NodeName != "" || st.ReadyAt != nil {
				t.Errorf("region %s instance %q node %q readyAt %v; want the second offer and nothing of the old machine",
					st.Region, st.InstanceID, st.NodeName, st.ReadyAt)
			}
			stageCondition(t, st, tgpv1.ConditionInterrupted, metav1.ConditionTrue, tc.cause)
			stageCondition(t, st, tgpv1.ConditionReady, metav1.ConditionFalse, "Interrupted")
			if diff := cmp.Diff(tc.wantTerm, f.provider.terminated); diff != "" {
				t.Errorf("terminate calls (-want +got):\n%s", diff)
			}
			if f.ctrl.unavailable.Len() != 1 || !f.ctrl.unavailable.IsUnavailable(f.provider.offers[0].Key()) {
				t.Errorf("%d offerings unavailable, want the interrupted one", f.ctrl.unavailable.Len())
			}
			if tc.node != nil && !slices.Contains(f.nodeActions(), "delete "+ownMachine) {
				t.Errorf("node actions %v, want the old Node deleted", f.nodeActions())
			}
			if got := testutil.ToFloat64(f.ctrl.metrics.Interruptions.WithLabelValues("runpod", "us-west-1", "RTX4090")); got != 1 {
				t.Errorf("interruptions metric %v, want 1", got)
			}
		})
	}
}

func TestStageLifetime(t *testing.T) {
	for _, tc := range []struct {
		name     string
		lifetime string
		elapsed  time.Duration
		edit     string // a new maxLifetime after a first sync at elapsed
		want     tgpv1.Phase
		after    time.Duration
	}{
		{name: "wakes at the end of the lifetime", lifetime: "1h", elapsed: 59*time.Minute + 30*time.Second, want: tgpv1.PhaseReady, after: 30 * time.Second},
		{name: "the cost interval comes first", lifetime: "1h", elapsed: 20 * time.Minute, want: tgpv1.PhaseReady, after: time.Minute},
		{name: "at the end of the lifetime", lifetime: "1h", elapsed: time.Hour, want: tgpv1.PhaseTerminating},
		{name: "shortened below the time already run", lifetime: "1h", elapsed: 20 * time.Minute, edit: "10m", want: tgpv1.PhaseTerminating},
		{name: "lengthened", lifetime: "1h", elapsed: 59*time.Minute + 30*time.Second, edit: "2h", want: tgpv1.PhaseReady, after: time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, _ := stageReady(t, func(r *tgpv1.GPURequest) { r.Spec.MaxLifetime = ptr(tgpv1.Duration(tc.lifetime)) })
			f.clock.Step(tc.elapsed)
			after := f.sync("gpu")
			end, _ := tgpv1.Duration(tc.lifetime).Parse()
			if tc.edit != "" {
				if st := f.reload("gpu").Status; st.Phase != tgpv1.PhaseReady {
					t.Fatalf("before the edit: phase %s, want Ready", st.Phase)
				}
				stageEdit(f, "gpu", func(r *tgpv1.GPURequest) { r.Spec.MaxLifetime = ptr(tgpv1.Duration(tc.edit)) })
				end, _ = tgpv1.Duration(tc.edit).Parse()
				f.client.ClearActions()
				after = f.sync("gpu")
			}
			writes := f.statusWrites()
			if len(writes) == 0 {
				t.Fatalf("no status write")
			}
			st := writes[0].Status
			if st.Phase != tc.want {
				t.Fatalf("phase %s, want %s", st.Phase, tc.want)
			}
			if at := t0.Add(end); st.TerminationScheduledAt == nil || !st.TerminationScheduledAt.Time.Equal(at) {
				t.Errorf("terminationScheduledAt %v, want provisionedAt+%s = %s", st.TerminationScheduledAt, end, at)
			}
			if tc.want == tgpv1.PhaseReady {
				if after != tc.after {
					t.Errorf("requeue after %s, want %s", after, tc.after)
				}
				if len(f.provider.terminated) != 0 {
					t.Errorf("terminated %v while the lifetime runs", f.provider.terminated)
				}
				return
			}
			if st.TerminationReason != "MaxLifetime" || st.ObservedGeneration != writes[0].Generation {
				t.Errorf("reason %q observedGeneration %d, want MaxLifetime at generation %d", st.TerminationReason, st.ObservedGeneration, writes[0].Generation)
			}
			if diff := cmp.Diff([]string{"pod-1"}, f.provider.terminated); diff != "" {
				t.Errorf("terminate calls (-want +got):\n%s", diff)
			}
		})
	}
}

func TestStageEarliestEndWins(t *testing.T) {
	// maxLifetime and idleTimeout both set: whichever ends first ends the
	// machine, and the sync wakes for the earlier one.
	for _, tc := range []struct {
		name           string
		lifetime, idle string
		idleSince      time.Duration // after provisionedAt
		now            time.Duration
		reason         string // "" when still Ready
		after          time.Duration
	}{
		{name: "idle ends first", lifetime: "2h", idle: "10m", idleSince: 20 * time.Minute, now: 30 * time.Minute, reason: "IdleTimeout"},
		{name: "lifetime ends first", lifetime: "1h", idle: "30m", idleSince: 40 * time.Minute, now: time.Hour, reason: "MaxLifetime"},
		{name: "wakes for the idle end", lifetime: "2h", idle: "10m", idleSince: 20 * time.Minute, now: 29*time.Minute + 40*time.Second, after: 20 * time.Second},
		{name: "wakes for the lifetime end", lifetime: "1h", idle: "30m", idleSince: 40 * time.Minute, now: 59*time.Minute + 30*time.Second, after: 30 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, _ := stageReady(t, func(r *tgpv1.GPURequest) {
				r.Spec.MaxLifetime, r.Spec.IdleTimeout = ptr(tgpv1.Duration(tc.lifetime)), ptr(tgpv1.Duration(tc.idle))
				r.Status.IdleSince = ptr(metav1.NewTime(t0.Add(tc.idleSince)))
			})
			f.clock.Step(tc.now)
			after := f.sync("gpu")
			st := f.reload("gpu").Status
			if tc.reason == "" {
				if st.Phase != tgpv1.PhaseReady || after != tc.after {
					t.Errorf("phase %s, requeue after %s; want Ready, %s", st.Phase, after, tc.after)
				}
				return
			}
			if st.Phase != tgpv1.PhaseTerminating || st.TerminationReason != tc.reason {
				t.Errorf("phase %s reason %q, want Terminating/%s", st.Phase, st.TerminationReason, tc.reason)
			}
		})
	}
}

func TestStageIdleWhichPodsKeepTheNodeBusy(t *testing.T) {
	yes := true
	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
		busy bool
	}{
		{name: "workload pod", pod: stagePod("train", ownMachine), busy: true},
		{name: "pending workload pod", pod: stagePod("train", ownMachine, func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }), busy: true},
		{name: "DaemonSet pod", pod: stagePod("ds", ownMachine, func(p *corev1.Pod) {
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "ds", UID: "u", Controller: &yes}}
		})},
		{name: "mirror pod", pod: stagePod("static", ownMachine, func(p *corev1.Pod) {
			p.Annotations = map[string]string{corev1.MirrorPodAnnotationKey: "x"}
		})},
		{name: "succeeded pod", pod: stagePod("done", ownMachine, func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded })},
		{name: "failed pod", pod: stagePod("crashed", ownMachine, func(p *corev1.Pod) { p.Status.Phase = corev1.PodFailed })},
		{name: "pod on another Node", pod: stagePod("elsewhere", victimMachine)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, _ := stageReady(t, func(r *tgpv1.GPURequest) { r.Spec.IdleTimeout = ptr(tgpv1.Duration("10m")) })
			stageAddPod(f, tc.pod, false)
			f.clock.Step(time.Hour)
			f.sync("gpu")
			st := stageOneWrite(t, f, "first sync")
			if st.Phase != tgpv1.PhaseReady {
				t.Fatalf("phase %s, want Ready", st.Phase)
			}
			if got := st.IdleSince != nil; got == tc.busy {
				t.Errorf("idleSince %v, want busy=%v", st.IdleSince, tc.busy)
			}
		})
	}
}

func TestStageIdleTimeout(t *testing.T) {
	f, _ := stageReady(t, func(r *tgpv1.GPURequest) { r.Spec.IdleTimeout = ptr(tgpv1.Duration("10m")) })
	pod := stagePod("train", ownMachine)
	stageAddPod(f, pod, false)
	pods := f.kubeInf.Core().V1().Pods().Informer().GetIndexer()
	var idleFrom time.Time

	for _, step := range []struct {
		name    string
		advance time.Duration
		act     func()
		phase   tgpv1.Phase
		idle    bool
		after   time.Duration
	}{
		{name: "busy for an hour", advance: time.Hour, act: func() {}, phase: tgpv1.PhaseReady, after: time.Minute},
		{name: "the pod ends", advance: time.Minute, act: func() {
			if err := pods.Delete(pod); err != nil {
				t.Fatal(err)
			}
			idleFrom = t0.Add(time.Hour + time.Minute)
		}, phase: tgpv1.PhaseReady, idle: true, after: time.Minute},
		{name: "idle 9m30s", advance: 9*time.Minute + 30*time.Second, act: func() {}, phase: tgpv1.PhaseReady, idle: true, after: 30 * time.Second},
		{name: "idle 10m", advance: 30 * time.Second, act: func() {}, phase: tgpv1.PhaseTerminating, idle: true},
	} {
		f.clock.Step(step.advance)
		step.act()
		f.reload("gpu")
		f.client.ClearActions()
		after := f.sync("gpu")
		st := f.reload("gpu").Status
		if st.Phase != step.phase {
			t.Fatalf("%s: phase %s, want %s", step.name, st.Phase, step.phase)
		}
		if step.idle != (st.IdleSince != nil) || (step.idle && !st.IdleSince.Time.Equal(idleFrom)) {
			t.Errorf("%s: idleSince %v, want idle=%v since %s", step.name, st.IdleSince, step.idle, idleFrom)
		}
		if step.phase == tgpv1.PhaseTerminating {
			if st.TerminationReason != "IdleTimeout" {
				t.Errorf("%s: reason %q, want IdleTimeout", step.name, st.TerminationReason)
			}
			continue
		}
		if after != step.after {
			t.Errorf("%s: requeue after %s, want %s", step.name, after, step.after)
		}
	}
	if diff := cmp.Diff([]string{"pod-1"}, f.provider.terminated); diff != "" {
		t.Errorf("terminate calls (-want +got):\n%s", diff)
	}
}

func TestStageDeletionDrainsThenTerminates(t *testing.T) {
	deleted := metav1.NewTime(t0.Add(time.Minute))
	f, _ := stageReady(t, func(r *tgpv1.GPURequest) { r.DeletionTimestamp = &deleted })
	stageAddPod(f, stagePod("train", ownMachine), true)
	stageAddPod(f, stagePod("ds", ownMachine, func(p *corev1.Pod) {
		yes := true
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "ds", UID: "u", Controller: &yes}}
	}), true)
	f.kube.ClearActions()
	f.clock.Step(time.Minute)

	// The first sync records the termination, cordons and evicts.
	after := f.sync("gpu")
	st := stageOneWrite(t, f, "termination start")
	if st.Phase != tgpv1.PhaseTerminating || st.TerminationReason != "Deleted" || st.TerminationStartedAt == nil || !st.TerminationStartedAt.Time.Equal(f.clock.Now()) {
		t.Fatalf("phase %s reason %q startedAt %v, want Terminating/Deleted now", st.Phase, st.TerminationReason, st.TerminationStartedAt)
	}
	if patches := stageNodePatches(f); len(patches) != 1 || !strings.Contains(patches[0], `"unschedulable":true`) {
		t.Errorf("Node patches %q, want one cordon (spec.unschedulable)", patches)
	}
	if diff := cmp.Diff([]string{"train"}, stageEvictions(f)); diff != "" {
		t.Errorf("evictions (-want +got):\n%s", diff)
	}
	if after != drainPoll || len(f.provider.terminated) != 0 {
		t.Fatalf("requeue after %s, terminated %v; want the drain poll and no terminate call while the pod runs", after, f.provider.terminated)
	}

	// The pod stays (a PodDisruptionBudget, a slow shutdown): the drain is
	// polled, nothing more is written, until the drain timeout.
	f.reload("gpu")
	f.clock.Step(f.ctrl.cfg.DrainTimeout - time.Second)
	f.client.ClearActions()
	if after := f.sync("gpu"); after != drainPoll || len(f.provider.terminated) != 0 || len(f.statusWrites()) != 0 {
		t.Fatalf("a second before the drain timeout: requeue after %s, terminated %v, %d status writes; want the drain poll, nothing else",
			after, f.provider.terminated, len(f.statusWrites()))
	}
	f.clock.Step(time.Second)
	if after := f.sync("gpu"); after != f.ctrl.cfg.PollInterval {
		t.Errorf("at the drain timeout: requeue after %s, want the poll interval", after)
	}
	if diff := cmp.Diff([]string{"pod-1"}, f.provider.terminated); diff != "" {
		t.Fatalf("terminate calls at the drain timeout (-want +got):\n%s", diff)
	}
	if events := stageEvents(f); !slices.ContainsFunc(events, func(e string) bool { return strings.HasPrefix(e, "Warning DrainTimeout") }) {
		t.Errorf("events %q, want DrainTimeout", events)
	}

	// Still listed (terminating): the finalizer stays.
	f.clock.Step(5 * time.Second)
	stageList(f, stageInstance("pod-1", ownMachine, providers.StateTerminating))
	f.client.ClearActions()
	f.sync("gpu")
	if got := f.verbs(); slices.Contains(got, "patch gpurequests") {
		t.Fatalf("actions %v while the instance is listed, want the finalizer kept", got)
	}
	// Gone: the Node is deleted and the finalizer released, with no status write.
	f.clock.Step(5 * time.Second)
	stageList(f)
	f.client.ClearActions()
	f.kube.ClearActions()
	if after := f.sync("gpu"); after != 0 {
		t.Errorf("requeue after %s once released, want none", after)
	}
	if diff := cmp.Diff([]string{"patch gpurequests"}, f.verbs()); diff != "" {
		t.Fatalf("actions once the instance is gone (-want +got):\n%s", diff)
	}
	if patch := string(f.client.Actions()[0].(core.PatchAction).GetPatch()); !strings.Contains(patch, `"finalizers":[]`) {
		t.Errorf("finalizer patch %s, want an empty list", patch)
	}
	if !slices.Contains(f.nodeActions(), "delete "+ownMachine) {
		t.Errorf("node actions %v, want the Node deleted", f.nodeActions())
	}
	if len(f.provider.terminated) != 1 {
		t.Errorf("%d terminate calls, want 1", len(f.provider.terminated))
	}
}

func TestStageCost(t *testing.T) {
	for _, tc := range []struct {
		name          string
		price         *float64
		before        float64
		elapsed       time.Duration
		want, counted float64
	}{
		{name: "an hour at $2.00", price: ptr(2.00), elapsed: time.Hour, want: 2.00, counted: 2.00},
		{name: "half an hour at $0.22", price: ptr(0.22), elapsed: 30 * time.Minute, want: 0.11, counted: 0.11},
		{name: "90 minutes at $1.50 on top of $1.00", price: ptr(1.50), before: 1.00, elapsed: 90 * time.Minute, want: 3.25, counted: 2.25},
		{name: "a minute at $0.60", price: ptr(0.60), elapsed: time.Minute, want: 0.01, counted: 0.01},
		{name: "no price known", before: 0.50, elapsed: time.Hour, want: 0.50},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, _ := stageReady(t, func(r *tgpv1.GPURequest) {
				r.Status.HourlyPrice, r.Status.AccumulatedCost = tc.price, ptr(tc.before)
			})
			f.clock.Step(tc.elapsed)
			after := f.sync("gpu")
			st := stageOneWrite(t, f, "cost update")
			if st.AccumulatedCost == nil || math.Abs(*st.AccumulatedCost-tc.want) > 1e-6 {
				t.Errorf("accumulatedCost %v, want %.6f", st.AccumulatedCost, tc.want)
			}
			if tc.price != nil && (st.CostUpdatedAt == nil || !st.CostUpdatedAt.Time.Equal(f.clock.Now())) {
				t.Errorf("costUpdatedAt %v, want now", st.CostUpdatedAt)
			}
			if got := testutil.ToFloat64(f.ctrl.metrics.Cost.WithLabelValues("runpod", "RTX4090", "true")); math.Abs(got-tc.counted) > 1e-6 {
				t.Errorf("cost metric %.6f, want %.6f (what this sync added)", got, tc.counted)
			}
			if after != f.ctrl.cfg.CostInterval {
				t.Errorf("requeue after %s, want the cost interval", after)
			}
		})
	}
}

func TestStageCollector(t *testing.T) {
	const orphan = "gpur-ffffffffffffffff-1"
	for _, tc := range []struct {
		name  string
		inst  providers.Instance
		age   time.Duration
		reaps bool
	}{
		{name: "unclaimed, past the grace", inst: stageInstance("pod-9", orphan, providers.StateRunning), age: 2*time.Minute + time.Second, reaps: true},
		{name: "unclaimed, booting, past the grace", inst: stageInstance("pod-9", orphan, providers.StateBooting), age: time.Hour, reaps: true},
		{name: "unclaimed, at the grace", inst: stageInstance("pod-9", orphan, providers.StateRunning), age: 2 * time.Minute},
		{name: "unclaimed, young", inst: stageInstance("pod-9", orphan, providers.StateRunning), age: 30 * time.Second},
		{name: "claimed by a request", inst: stageInstance("pod-1", ownMachine, providers.StateRunning), age: time.Hour},
		{name: "claimed by a write-ahead record", inst: stageInstance("pod-2", victimMachine, providers.StateRunning), age: time.Hour},
		{name: "unclaimed, already terminating", inst: stageInstance("pod-9", orphan, providers.StateTerminating), age: time.Hour},
		{name: "unclaimed, terminated", inst: stageInstance("pod-9", orphan, providers.StateTerminated), age: time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A request being provisioned claims its machine by name before
			// any instance is recorded.
			provisioning := newRequest("other", func(r *tgpv1.GPURequest) {
				r.UID, r.Finalizers = victimUID, []string{tgpv1.Finalizer}
				r.Status = tgpv1.GPURequestStatus{Phase: tgpv1.PhaseProvisioning, MachineName: victimMachine, Attempt: 1, Provider: "runpod"}
			})
			f := stageFixture(t, readyRequest("gpu"), provisioning)
			if f.ctrl.cfg.GCGrace != 2*time.Minute {
				t.Fatalf("GC grace %s, want the 2m default", f.ctrl.cfg.GCGrace)
			}
			stageList(f, tc.inst) // first seen now
			f.clock.Step(tc.age)
			stageList(f, tc.inst)
			n := f.ctrl.CollectOrphans(t.Context())
			var want []string
			if tc.reaps {
				want = []string{tc.inst.ID}
			}
			if diff := cmp.Diff(want, f.provider.terminated); diff != "" || n != len(want) {
				t.Errorf("collected %d; terminate calls (-want +got):\n%s", n, diff)
			}
			if got := testutil.ToFloat64(f.ctrl.metrics.OrphansTerminated.WithLabelValues("runpod")); got != float64(len(want)) {
				t.Errorf("orphans metric %v, want %d", got, len(want))
			}
			// Another pass before the listing shows it gone sends no second call.
			f.ctrl.CollectOrphans(t.Context())
			if len(f.provider.terminated) != len(want) {
				t.Errorf("terminate calls %v after a second pass, want %v", f.provider.terminated, want)
			}
		})
	}
}

// TestStageStatusWritesPerTransition counts the status writes the fake
// client sees for each stage transition.
func TestStageStatusWritesPerTransition(t *testing.T) {
	pending := func(t *testing.T) *fixture {
		return stageFixture(t, newRequest("gpu", func(r *tgpv1.GPURequest) { r.Finalizers = []string{tgpv1.Finalizer} }))
	}
	expired := func(t *testing.T) *fixture {
		f, _ := stageReady(t, func(r *tgpv1.GPURequest) { r.Spec.MaxLifetime = ptr(tgpv1.Duration("1h")) })
		f.clock.Step(time.Hour)
		return f
	}
	for _, tc := range []struct {
		name string
		// setup returns a fixture whose next sync makes the transition.
		setup  func(t *testing.T) *fixture
		writes int
		want   tgpv1.Phase
	}{{
		// The write-ahead record; the instance is recorded once listed.
		name: "launch", setup: pending, writes: 1, want: tgpv1.PhaseProvisioning,
	}, {
		name: "first listed running with the Node already Ready",
		setup: func(t *testing.T) *fixture {
			f := pending(t)
			f.sync("gpu")
			f.addNode(readyNode(ownMachine, "0f8fad5b-d9cb-469f-a165-70867728950e", "runpod://pod-1"))
			f.clock.Step(3 * time.Second)
			stageSetState(f, "pod-1", providers.StateRunning)
			f.reload("gpu")
			return f
		},
		writes: 1, want: tgpv1.PhaseReady,
	}, {
		name: "Ready, nothing changed within the cost interval",
		setup: func(t *testing.T) *fixture {
			f, _ := stageReady(t)
			f.sync("gpu") // starts the idle clock
			f.reload("gpu")
			f.clock.Step(10 * time.Second)
			return f
		},
		writes: 0, want: tgpv1.PhaseReady,
	}, {
		// The new attempt's write-ahead record carries the interruption.
		name: "interruption and relaunch",
		setup: func(t *testing.T) *fixture {
			f, _ := stageReady(t)
			f.clock.Step(10 * time.Second)
			stageList(f, stageInstance("pod-1", ownMachine, providers.StateInterrupted))
			return f
		},
		writes: 1, want: tgpv1.PhaseProvisioning,
	}, {
		// The termination record.
		name: "termination starts", setup: expired, writes: 1, want: tgpv1.PhaseTerminating,
	}, {
		name: "the provider confirms the termination",
		setup: func(t *testing.T) *fixture {
			f := expired(t)
			f.sync("gpu")
			f.reload("gpu")
			f.clock.Step(5 * time.Second)
			stageList(f)
			return f
		},
		writes: 1, want: tgpv1.PhaseTerminated,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.setup(t)
			f.client.ClearActions()
			f.sync("gpu")
			if writes := f.statusWrites(); len(writes) != tc.writes {
				t.Fatalf("%d status writes, want %d (actions %v)", len(writes), tc.writes, f.verbs())
			}
			if st := f.reload("gpu").Status; st.Phase != tc.want {
				t.Errorf("phase %s, want %s", st.Phase, tc.want)
			}
		})
	}
}

// TestStageFailedWriteCountsNoCost: a sync whose final write fails writes
// nothing else and adds nothing to the cost metric; the retry, from the
// stored status, counts the hour once.
func TestStageFailedWriteCountsNoCost(t *testing.T) {
	f, _ := stageReady(t, func(r *tgpv1.GPURequest) { r.Status.HourlyPrice = ptr(2.00) })
	f.clock.Step(time.Hour)
	failing := true
	f.client.PrependReactor("update", "gpurequests", func(a core.Action) (bool, runtime.Object, error) {
		if failing && a.GetSubresource() == "status" {
			return true, nil, apierrors.NewConflict(schema.GroupResource{Group: tgpv1.GroupName, Resource: "gpurequests"}, "gpu", errors.New("stale"))
		}
		return false, nil, nil
	})
	if _, err := f.ctrl.sync(t.Context(), cache.ObjectName{Namespace: "default", Name: "gpu"}); !apierrors.IsConflict(err) {
		t.Fatalf("sync error %v, want the conflict", err)
	}
	cost := f.ctrl.metrics.Cost.WithLabelValues("runpod", "RTX4090", "true")
	if got := testutil.ToFloat64(cost); got != 0 {
		t.Fatalf("cost metric %.6f after a failed write, want 0", got)
	}
	failing = false
	f.client.ClearActions()
	f.sync("gpu")
	st := stageOneWrite(t, f, "the retry")
	if got := *st.AccumulatedCost; math.Abs(got-2.00) > 1e-6 {
		t.Errorf("accumulatedCost %.6f, want 2.00", got)
	}
	if got := testutil.ToFloat64(cost); math.Abs(got-2.00) > 1e-6 {
		t.Errorf("cost metric %.6f, want 2.00 (counted once)", got)
	}
}

// TestStageAmbiguousLaunchWaitsForAListing: after a launch answer that
// leaves the outcome unknown and no machine listed yet, nothing else is
// launched until a listing that started after the answer settles it: the
// machine is adopted if it shows up, the next offer launched if not.
func TestStageAmbiguousLaunchWaitsForAListing(t *testing.T) {
	ambiguous := &providers.Error{Provider: "runpod", Operation: "launch", Class: providers.ClassTransient, HTTPStatus: 500}
	for _, tc := range []struct {
		name string
		// appears says the provider lists the machine after all.
		appears bool
		want    tgpv1.Phase
		calls   []string
	}{
		{name: "the machine appears: adopted", appears: true, want: tgpv1.PhaseBooting, calls: []string{ownMachine}},
		{name: "the listing shows none: the next offer", want: tgpv1.PhaseProvisioning, calls: []string{ownMachine, stageNextMachine}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := stageFixture(t, newRequest("gpu", func(r *tgpv1.GPURequest) { r.Finalizers = []string{tgpv1.Finalizer} }))
			calls := stageFailFirst(f, 1, ambiguous)
			f.sync("gpu")
			st := f.reload("gpu").Status
			if len(*calls) != 1 || st.Phase != tgpv1.PhaseProvisioning || st.MachineName != ownMachine {
				t.Fatalf("after the ambiguous answer: %d launch calls, phase %s, machine %q; want 1, Provisioning, %s", len(*calls), st.Phase, st.MachineName, ownMachine)
			}
			// A sync before any new listing waits.
			f.sync("gpu")
			if len(*calls) != 1 {
				t.Fatalf("%d launch calls before a listing, want 1", len(*calls))
			}
			f.clock.Step(5 * time.Second)
			if tc.appears {
				stageList(f, stageInstance("pod-7", ownMachine, providers.StatePending))
			} else {
				stageList(f)
			}
			f.sync("gpu")
			var names []string
			for _, c := range *calls {
				names = append(names, c.Name)
			}
			if diff := cmp.Diff(tc.calls, names); diff != "" {
				t.Errorf("launch calls (-want +got):\n%s", diff)
			}
			st = f.reload("gpu").Status
			if st.Phase != tc.want {
				t.Errorf("phase %s, want %s", st.Phase, tc.want)
			}
			adopted := slices.ContainsFunc(stageEvents(f), func(e string) bool { return strings.Contains(e, "Adopted") })
			if adopted != tc.appears {
				t.Errorf("Adopted event %v, want %v", adopted, tc.appears)
			}
			if !tc.appears && st.Region != stageSecondOffer.Region {
				t.Errorf("relaunched in %s, want the next offer's %s", st.Region, stageSecondOffer.Region)
			}
		})
	}
}
