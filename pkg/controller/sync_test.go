package controller

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/informers"
	kubefake "k8s.io/client-go/kubernetes/fake"
	core "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned/fake"
	tgpinformers "github.com/solanyn/gpu-operator/pkg/generated/informers/externalversions"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/selector"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// gpurequestsResource addresses GPURequests in the fake client's tracker.
var gpurequestsResource = schema.GroupVersionResource{Group: tgpv1.GroupName, Version: tgpv1.GroupVersion.Version, Resource: "gpurequests"}

// fakeProvider is an in-memory provider for unit tests: one offer, and
// launches recorded together with the status the API held at that moment.
type fakeProvider struct {
	mu        sync.Mutex
	offers    []providers.Offer
	instances []providers.Instance
	launchErr error
	// seen is the status of the request at launch time, read by the hook.
	onLaunch func(req providers.LaunchRequest)
	launches []string
	// createThenFail creates the instance and then answers this error, as
	// a provider that timed out or sent a 500 after the create does.
	createThenFail error
	terminated     []string
}

func (f *fakeProvider) Name() string { return "runpod" }
func (f *fakeProvider) Offers(context.Context) ([]providers.Offer, error) {
	return f.offers, nil
}
func (f *fakeProvider) Launch(_ context.Context, req providers.LaunchRequest) (providers.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.onLaunch != nil {
		f.onLaunch(req)
	}
	if f.launchErr != nil {
		return providers.Instance{}, f.launchErr
	}
	f.launches = append(f.launches, req.Name)
	in := providers.Instance{Provider: "runpod", ID: fmt.Sprintf("pod-%d", len(f.launches)), Name: req.Name, State: providers.StatePending}
	f.instances = append(f.instances, in)
	if f.createThenFail != nil {
		return providers.Instance{}, f.createThenFail
	}
	return in, nil
}
func (f *fakeProvider) Instances(context.Context) ([]providers.Instance, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]providers.Instance(nil), f.instances...), nil
}
func (f *fakeProvider) Terminate(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.terminated = append(f.terminated, id)
	return nil
}

type fixture struct {
	t        *testing.T
	client   *fake.Clientset
	kube     *kubefake.Clientset
	clock    *clocktesting.FakeClock
	provider *fakeProvider
	ctrl     *Controller
	recorder *record.FakeRecorder
	kubeInf  informers.SharedInformerFactory
	tgpInf   tgpinformers.SharedInformerFactory
}

func newFixture(t *testing.T, reqs ...*tgpv1.GPURequest) *fixture {
	t.Helper()
	return newFixtureWith(t, nil, reqs...)
}

// newFixtureWith is newFixture with the controller given wrap(provider)
// instead of the fake provider itself (nil: the provider as it is).
func newFixtureWith(t *testing.T, wrap func(*fakeProvider) providers.Provider, reqs ...*tgpv1.GPURequest) *fixture {
	t.Helper()
	objs := make([]runtime.Object, 0, len(reqs))
	for _, r := range reqs {
		objs = append(objs, r)
	}
	f := &fixture{
		t:        t,
		client:   fake.NewSimpleClientset(objs...),
		kube:     kubefake.NewSimpleClientset(),
		clock:    clocktesting.NewFakeClock(t0),
		recorder: record.NewFakeRecorder(100),
		provider: &fakeProvider{offers: []providers.Offer{{
			Provider: "runpod", InstanceType: "NVIDIA GeForce RTX 4090", GPUType: "RTX4090", GPUCount: 1,
			Region: "us-west-1", ProviderRegion: "US-CA-2", Capacity: providers.Spot, HourlyPrice: 0.22,
			Available: true, PriceSource: providers.PriceSourceAPI,
		}}},
	}
	var provider providers.Provider = f.provider
	if wrap != nil {
		provider = wrap(f.provider)
	}
	tgpFactory := tgpinformers.NewSharedInformerFactory(f.client, 0)
	kubeFactory := informers.NewSharedInformerFactory(f.kube, 0)
	ctrl, err := New(Options{
		KubeClient: f.kube, Client: f.client,
		Requests: tgpFactory.Tgp().V1().GPURequests(), Budgets: tgpFactory.Tgp().V1().GPUBudgets(), Nodes: kubeFactory.Core().V1().Nodes(), Pods: kubeFactory.Core().V1().Pods(),
		Providers: []providers.Provider{provider}, Recorder: f.recorder, Clock: f.clock, Registry: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range reqs {
		if err := tgpFactory.Tgp().V1().GPURequests().Informer().GetIndexer().Add(r); err != nil {
			t.Fatal(err)
		}
	}
	f.ctrl, f.kubeInf, f.tgpInf = ctrl, kubeFactory, tgpFactory
	// The instance poller has listed the provider once.
	ctrl.inventory.Poll(t.Context(), "runpod", f.provider)
	f.client.ClearActions()
	return f
}

func (f *fixture) sync(name string) time.Duration {
	f.t.Helper()
	d, err := f.ctrl.sync(f.t.Context(), cache.ObjectName{Namespace: "default", Name: name})
	if err != nil {
		f.t.Fatalf("sync: %v", err)
	}
	return d
}

// verbs lists the client's actions as "verb resource[/subresource]".
func (f *fixture) verbs() []string {
	var out []string
	for _, a := range f.client.Actions() {
		s := a.GetVerb() + " " + a.GetResource().Resource
		if a.GetSubresource() != "" {
			s += "/" + a.GetSubresource()
		}
		out = append(out, s)
	}
	return out
}

func (f *fixture) statusWrites() []*tgpv1.GPURequest {
	var out []*tgpv1.GPURequest
	for _, a := range f.client.Actions() {
		if u, ok := a.(core.UpdateAction); ok && a.GetSubresource() == "status" {
			out = append(out, u.GetObject().(*tgpv1.GPURequest))
		}
	}
	return out
}

func newRequest(name string, mutate ...func(*tgpv1.GPURequest)) *tgpv1.GPURequest {
	r := &tgpv1.GPURequest{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: "0f8fad5b-d9cb-469f-a165-70867728950e", Generation: 1},
		Spec:       tgpv1.GPURequestSpec{GPUType: "RTX4090", GPUCount: 1, SpotInstance: true, MaxPrice: ptr(0.5), RegionPolicy: tgpv1.RegionPolicyOrdered},
	}
	for _, m := range mutate {
		m(r)
	}
	return r
}

func TestSyncNewRequestWithoutOffers(t *testing.T) {
	f := newFixture(t, newRequest("gpu", func(r *tgpv1.GPURequest) { r.Spec.GPUType = "B200" }))
	f.sync("gpu")
	if diff := cmp.Diff([]string{"patch gpurequests", "update gpurequests/status"}, f.verbs()); diff != "" {
		t.Fatalf("actions (-want +got):\n%s", diff)
	}
	if patch := string(f.client.Actions()[0].(core.PatchAction).GetPatch()); !strings.Contains(patch, `"finalizers":["tgp.solanyn.com/instance"]`) || strings.Contains(patch, "spec") {
		t.Errorf("finalizer patch %s, want only metadata.finalizers", patch)
	}
	st := f.statusWrites()[0].Status
	if st.Phase != tgpv1.PhasePending || st.ObservedGeneration != 1 {
		t.Errorf("phase %q observedGeneration %d, want Pending and 1", st.Phase, st.ObservedGeneration)
	}
	c := meta.FindStatusCondition(st.Conditions, tgpv1.ConditionOffersAvailable)
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != "UnknownGPUType" || !c.LastTransitionTime.Time.Equal(t0) {
		t.Errorf("OffersAvailable condition %+v, want False/UnknownGPUType at the fake clock's time", c)
	}
	for _, typ := range []string{tgpv1.ConditionReady, tgpv1.ConditionLaunched, tgpv1.ConditionNodeJoined, tgpv1.ConditionInterrupted} {
		if meta.FindStatusCondition(st.Conditions, typ) == nil {
			t.Errorf("condition %s missing", typ)
		}
	}
	if ev := <-f.recorder.Events; ev != "Warning UnknownGPUType no provider offers GPU type \"B200\" (1 offers considered); check spec.gpuType" {
		t.Errorf("event %q", ev)
	}
	if len(f.provider.launches) != 0 {
		t.Errorf("launched %v", f.provider.launches)
	}
}

func TestSyncWritesMachineNameBeforeLaunch(t *testing.T) {
	req := newRequest("gpu", func(r *tgpv1.GPURequest) { r.Finalizers = []string{tgpv1.Finalizer} })
	f := newFixture(t, req)
	var atLaunch tgpv1.GPURequestStatus
	f.provider.onLaunch = func(providers.LaunchRequest) {
		// Read the tracker directly: no client action is recorded.
		obj, err := f.client.Tracker().Get(gpurequestsResource, "default", "gpu")
		if err != nil {
			t.Error(err)
			return
		}
		atLaunch = obj.(*tgpv1.GPURequest).Status
	}
	after := f.sync("gpu")
	want := "gpur-0f8fad5bd9cb469f-1"
	if diff := cmp.Diff([]string{want}, f.provider.launches); diff != "" {
		t.Fatalf("launches (-want +got):\n%s", diff)
	}
	if atLaunch.MachineName != want || atLaunch.Phase != tgpv1.PhaseProvisioning || atLaunch.Provider != "runpod" || atLaunch.InstanceID != "" {
		t.Errorf("status at launch time %+v, want Provisioning with machine name %s", atLaunch, want)
	}
	// One write per launch: the instance is recorded once the poller lists it.
	if diff := cmp.Diff([]string{"update gpurequests/status"}, f.verbs()); diff != "" {
		t.Fatalf("actions (-want +got):\n%s", diff)
	}
	if after != 15*time.Second {
		t.Errorf("requeue after %s, want the poll interval", after)
	}
	if ev := <-f.recorder.Events; !strings.HasPrefix(ev, "Normal Launched launched runpod/") {
		t.Errorf("event %q, want Launched", ev)
	}

	// The poller lists the machine; the next sync records it, with the
	// launch time, without launching again or calling it adopted.
	launchedAt := f.clock.Now()
	f.clock.Step(3 * time.Second)
	f.ctrl.inventory.Poll(t.Context(), "runpod", f.provider)
	obj, err := f.client.Tracker().Get(gpurequestsResource, "default", "gpu")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.ctrl.requestIdx.Update(obj); err != nil {
		t.Fatal(err)
	}
	f.client.ClearActions()
	f.sync("gpu")
	if len(f.provider.launches) != 1 {
		t.Errorf("launched again: %v", f.provider.launches)
	}
	st := f.statusWrites()[0].Status
	if st.Phase != tgpv1.PhaseBooting || st.InstanceID != "pod-1" || !st.LaunchedAt.Time.Equal(launchedAt) || !st.ProvisionedAt.Time.Equal(launchedAt) ||
		!st.Spot || *st.HourlyPrice != 0.22 {
		t.Errorf("status after the poll %+v", st)
	}
	select {
	case ev := <-f.recorder.Events:
		t.Errorf("unexpected event %q", ev)
	default:
	}
}

func TestSyncAdoptsLaunchedInstanceAfterRestart(t *testing.T) {
	// Status names a machine but no instance: the operator died around the
	// launch call. The provider lists the machine, so it is adopted.
	req := newRequest("gpu", func(r *tgpv1.GPURequest) {
		r.Finalizers = []string{tgpv1.Finalizer}
		r.Status = tgpv1.GPURequestStatus{Phase: tgpv1.PhaseProvisioning, MachineName: "gpur-0f8fad5bd9cb469f-1", Attempt: 1,
			Provider: "runpod", InstanceType: "NVIDIA GeForce RTX 4090", Region: "us-west-1", ProviderRegion: "US-CA-2", Spot: true, HourlyPrice: ptr(0.22)}
	})
	f := newFixture(t, req)
	f.provider.instances = []providers.Instance{{Provider: "runpod", ID: "pod-7", Name: "gpur-0f8fad5bd9cb469f-1", State: providers.StateBooting}}
	f.ctrl.inventory.Poll(t.Context(), "runpod", f.provider)
	f.client.ClearActions()
	f.sync("gpu")
	if len(f.provider.launches) != 0 {
		t.Fatalf("launched %v, want the existing instance adopted", f.provider.launches)
	}
	if st := f.statusWrites()[0].Status; st.Phase != tgpv1.PhaseBooting || st.InstanceID != "pod-7" {
		t.Errorf("status %+v, want Booting with instance pod-7", st)
	}
}

func TestSyncDeletionWithoutMachineRemovesFinalizer(t *testing.T) {
	now := metav1.NewTime(t0)
	f := newFixture(t, newRequest("gpu", func(r *tgpv1.GPURequest) {
		r.Finalizers = []string{tgpv1.Finalizer}
		r.DeletionTimestamp = &now
		r.Status.Phase = tgpv1.PhasePending
	}))
	f.sync("gpu")
	if diff := cmp.Diff([]string{"patch gpurequests"}, f.verbs()); diff != "" {
		t.Fatalf("actions (-want +got):\n%s", diff)
	}
	if patch := string(f.client.Actions()[0].(core.PatchAction).GetPatch()); !strings.Contains(patch, `"finalizers":[]`) {
		t.Errorf("finalizer patch %s, want an empty list", patch)
	}
}

func TestSyncCapacityErrorFailsOverAndRequeues(t *testing.T) {
	f := newFixture(t, newRequest("gpu", func(r *tgpv1.GPURequest) { r.Finalizers = []string{tgpv1.Finalizer} }))
	f.provider.launchErr = &providers.Error{Provider: "runpod", Operation: "launch", Class: providers.ClassCapacity}
	after := f.sync("gpu")
	writes := f.statusWrites()
	last := writes[len(writes)-1].Status
	if last.Phase != tgpv1.PhasePending || f.ctrl.unavailable.Len() != 1 {
		t.Errorf("phase %s, %d unavailable offerings; want Pending and the offering marked", last.Phase, f.ctrl.unavailable.Len())
	}
	// Nothing else to try: look again when the offering comes back (3m TTL)
	// or the catalog refreshes (2m), whichever is first.
	if after != 2*time.Minute {
		t.Errorf("requeue after %s, want 2m (the catalog refresh)", after)
	}
	if last.MachineName != "gpur-0f8fad5bd9cb469f-1" || last.Attempt != 1 {
		t.Errorf("machine %s attempt %d: a definite capacity error keeps the name", last.MachineName, last.Attempt)
	}
}

func TestAccumulatedCostAfterASimulatedHour(t *testing.T) {
	const machine = "gpur-0f8fad5bd9cb469f-1"
	start := metav1.NewTime(t0)
	req := newRequest("gpu", func(r *tgpv1.GPURequest) {
		r.Finalizers = []string{tgpv1.Finalizer}
		r.Status = tgpv1.GPURequestStatus{Phase: tgpv1.PhaseReady, MachineName: machine, InstanceID: "pod-1", NodeName: machine,
			Provider: "runpod", Region: "us-west-1", ProviderRegion: "US-CA-2", InstanceType: "NVIDIA GeForce RTX 4090",
			HourlyPrice: ptr(2.00), AccumulatedCost: ptr(0.0), CostUpdatedAt: &start, LaunchedAt: &start, ProvisionedAt: &start,
			ReadyAt: &start, ObservedGeneration: 1}
	})
	f := newFixture(t, req)
	f.provider.instances = []providers.Instance{{Provider: "runpod", ID: "pod-1", Name: machine, State: providers.StateRunning}}
	f.ctrl.inventory.Poll(t.Context(), "runpod", f.provider)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: machine, Labels: map[string]string{LabelRequestUID: string(req.UID)}}, Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
		{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastTransitionTime: start}}}}
	f.addNode(node)
	f.clock.Step(time.Hour)
	f.client.ClearActions()
	after := f.sync("gpu")
	writes := f.statusWrites()
	if len(writes) != 1 {
		t.Fatalf("%d status writes, want 1", len(writes))
	}
	if got := *writes[0].Status.AccumulatedCost; got < 1.99 || got > 2.01 {
		t.Errorf("accumulatedCost %.4f after an hour at $2.00/h, want 2.00 within a cent", got)
	}
	if got := testutil.ToFloat64(f.ctrl.metrics.Cost.WithLabelValues("runpod", "RTX4090", "false")); got < 1.99 || got > 2.01 {
		t.Errorf("gpu_operator_cost_dollars_total %.4f, want 2.00", got)
	}
	if after != time.Minute {
		t.Errorf("requeue after %s, want the 1m cost interval", after)
	}
}

func TestSyncNeverRelaunchesAGoneName(t *testing.T) {
	// After a restart the status names a machine the provider lists as
	// terminated: that name was launched once, so a new attempt gets a new one.
	req := newRequest("gpu", func(r *tgpv1.GPURequest) {
		r.Finalizers = []string{tgpv1.Finalizer}
		r.Status = tgpv1.GPURequestStatus{Phase: tgpv1.PhaseProvisioning, MachineName: "gpur-0f8fad5bd9cb469f-1", Attempt: 1, Provider: "runpod"}
	})
	f := newFixture(t, req)
	f.provider.instances = []providers.Instance{{Provider: "runpod", ID: "pod-7", Name: "gpur-0f8fad5bd9cb469f-1", State: providers.StateTerminated}}
	f.ctrl.inventory.Poll(t.Context(), "runpod", f.provider)
	f.sync("gpu")
	if diff := cmp.Diff([]string{"gpur-0f8fad5bd9cb469f-2"}, f.provider.launches); diff != "" {
		t.Errorf("launches (-want +got):\n%s", diff)
	}
}

func TestSyncUnauthorizedBlocksTheProviderInSelection(t *testing.T) {
	req := newRequest("gpu", func(r *tgpv1.GPURequest) { r.Finalizers = []string{tgpv1.Finalizer} })
	f := newFixture(t, req)
	calls := 0
	f.provider.onLaunch = func(providers.LaunchRequest) { calls++ }
	f.provider.launchErr = &providers.Error{Provider: "runpod", Operation: "launch", Class: providers.ClassUnauthorized}
	f.sync("gpu")
	if calls != 1 || f.ctrl.unavailable.Len() != 0 {
		t.Fatalf("%d launch calls, %d offerings marked; want 1 call and the provider blocked, not the offering", calls, f.ctrl.unavailable.Len())
	}
	res := f.ctrl.Select(t.Context(), req)
	if res.Eligible != 0 || res.Counts[selector.MarkedUnavailable] != 1 {
		t.Errorf("while blocked: %d eligible, counts %v; want the offer marked unavailable", res.Eligible, res.Counts)
	}
	if rejected := res.Rejected(); len(rejected) != 1 || !strings.Contains(rejected[0].Detail, "provider unavailable") {
		t.Errorf("while blocked: rejected %+v, want the offer with the provider named unavailable", rejected)
	}
	f.sync("gpu")
	if calls != 1 {
		t.Errorf("%d launch calls while the provider is blocked, want 1", calls)
	}
	f.clock.Step(f.ctrl.cfg.AuthRetryDelay)
	if res := f.ctrl.Select(t.Context(), req); res.Eligible != 1 {
		t.Errorf("after the block expired: %d eligible, counts %v; want the offer back", res.Eligible, res.Counts)
	}
	f.ctrl.blockProvider("runpod", time.Hour)
	f.ctrl.UnblockProviders()
	if res := f.ctrl.Select(t.Context(), req); res.Eligible != 1 {
		t.Errorf("after the credentials changed: %d eligible, want the offer back", res.Eligible)
	}
}
