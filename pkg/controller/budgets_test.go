package controller

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/budget"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

var gpubudgetsResource = schema.GroupVersionResource{Group: tgpv1.GroupName, Version: tgpv1.GroupVersion.Version, Resource: "gpubudgets"}

func newBudget(name, ns string, spec tgpv1.GPUBudgetSpec) *tgpv1.GPUBudget {
	return &tgpv1.GPUBudget{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Generation: 1}, Spec: spec}
}

// addBudget stores b in the fake API and the informer cache, as a watch would.
func (f *fixture) addBudget(b *tgpv1.GPUBudget) {
	f.t.Helper()
	if _, err := f.client.TgpV1().GPUBudgets(b.Namespace).Create(f.t.Context(), b, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	if err := f.tgpInf.Tgp().V1().GPUBudgets().Informer().GetIndexer().Add(b); err != nil {
		f.t.Fatal(err)
	}
}

// reloadBudget copies the stored budget into the informer cache.
func (f *fixture) reloadBudget(ns, name string) *tgpv1.GPUBudget {
	f.t.Helper()
	obj, err := f.client.Tracker().Get(gpubudgetsResource, ns, name)
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.tgpInf.Tgp().V1().GPUBudgets().Informer().GetIndexer().Update(obj); err != nil {
		f.t.Fatal(err)
	}
	return obj.(*tgpv1.GPUBudget)
}

// addRequest stores one more request in the fake API and the cache.
func (f *fixture) addRequest(r *tgpv1.GPURequest) {
	f.t.Helper()
	if _, err := f.client.TgpV1().GPURequests(r.Namespace).Create(f.t.Context(), r, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
	if err := f.ctrl.requestIdx.Add(r); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) syncBudgets(ns string) {
	f.t.Helper()
	if _, err := f.ctrl.syncBudgets(f.t.Context(), ns); err != nil {
		f.t.Fatalf("syncBudgets: %v", err)
	}
}

func TestBudgetHoldsARequestAndReleasesItWhenRaised(t *testing.T) {
	f := newFixture(t, newRequest("gpu"))
	f.addBudget(newBudget("team", "default", tgpv1.GPUBudgetSpec{MaxHourlySpend: ptr(0.20)}))

	f.sync("gpu")
	st := f.reload("gpu").Status
	if len(f.provider.launches) != 0 {
		t.Fatalf("launched %v over the budget", f.provider.launches)
	}
	if st.Phase != tgpv1.PhasePending || !strings.Contains(st.Message, "GPUBudget team") {
		t.Fatalf("phase %s, message %q; want Pending naming GPUBudget team", st.Phase, st.Message)
	}
	stageCondition(t, st, tgpv1.ConditionOffersAvailable, metav1.ConditionFalse, budget.ReasonOverBudget)
	if ev := strings.Join(stageEvents(f), "\n"); !strings.Contains(ev, "RequestHeld") || !strings.Contains(ev, "OverBudget") {
		t.Errorf("events %s; want OverBudget on the request and RequestHeld on the budget", ev)
	}

	// Raising the budget: the next sync launches.
	b := f.reloadBudget("default", "team").DeepCopy()
	b.Spec.MaxHourlySpend, b.Generation = ptr(0.50), 2
	if _, err := f.client.TgpV1().GPUBudgets("default").Update(t.Context(), b, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	f.reloadBudget("default", "team")
	f.sync("gpu")
	if len(f.provider.launches) != 1 {
		t.Fatalf("launches %v after raising the budget, want 1", f.provider.launches)
	}
}

func TestBudgetInAnotherNamespaceDoesNotApply(t *testing.T) {
	f := newFixture(t, newRequest("gpu"))
	f.addBudget(newBudget("tight", "team-b", tgpv1.GPUBudgetSpec{MaxHourlySpend: ptr(0.01)}))
	f.sync("gpu")
	if len(f.provider.launches) != 1 {
		t.Fatalf("launches %v; a budget in another namespace must not hold this one", f.provider.launches)
	}
}

func TestBudgetMaxGPUsCountsGPUCount(t *testing.T) {
	running := readyRequest("big", func(r *tgpv1.GPURequest) {
		r.UID, r.Spec.GPUCount = "11111111-2222-3333-4444-555555555555", 2
		r.Status.MachineName = machineName(r.UID, 1)
	})
	f := newFixture(t, newRequest("gpu"), running)
	f.addBudget(newBudget("gpus", "default", tgpv1.GPUBudgetSpec{MaxGPUs: ptr(int32(2))}))
	f.sync("gpu")
	if len(f.provider.launches) != 0 {
		t.Fatalf("launched %v with 2 of maxGPUs 2 in use", f.provider.launches)
	}
	if st := f.reload("gpu").Status; !strings.Contains(st.Message, "maxGPUs") {
		t.Errorf("message %q, want it to name maxGPUs", st.Message)
	}
}

// Fifty requests synced at once against a budget that fits exactly seven
// machines: seven launch, never an eighth.
func TestBudgetConcurrentLaunchesNeverOvershoot(t *testing.T) {
	const n, fits = 50, 7
	f := newFixture(t)
	f.addBudget(newBudget("team", "default", tgpv1.GPUBudgetSpec{MaxHourlySpend: ptr(fits * 0.22)}))
	for i := range n {
		f.addRequest(newRequest(fmt.Sprintf("r-%02d", i), func(r *tgpv1.GPURequest) {
			r.UID = types.UID(fmt.Sprintf("%08d-0000-0000-0000-000000000000", i))
		}))
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { f.sync(fmt.Sprintf("r-%02d", i)) })
	}
	wg.Wait()
	if got := len(f.provider.launches); got != fits {
		t.Fatalf("%d launches against a budget that fits %d", got, fits)
	}
	held := 0
	for i := range n {
		if st := f.reload(fmt.Sprintf("r-%02d", i)).Status; st.Phase == tgpv1.PhasePending && strings.Contains(st.Message, "GPUBudget team") {
			held++
			if st.Provider != "" || st.MachineName != "" || st.HourlyPrice != nil {
				t.Errorf("held request r-%02d records offer %s/%s at %v: nothing was launched for it", i, st.Provider, st.MachineName, st.HourlyPrice)
			}
		}
	}
	if held != n-fits {
		t.Errorf("%d requests held by the budget, want %d", held, n-fits)
	}
}

func TestBudgetMonthlyLimitHoldKeepsRunningMachines(t *testing.T) {
	spent := readyRequest("spent", func(r *tgpv1.GPURequest) {
		r.Status.MonthCost = &tgpv1.MonthCost{Month: "2026-11", Cost: 12}
	})
	f := newFixture(t, spent)
	f.addRequest(newRequest("new", func(r *tgpv1.GPURequest) { r.UID = "22222222-2222-3333-4444-555555555555" }))
	f.addBudget(newBudget("month", "default", tgpv1.GPUBudgetSpec{MonthlyLimit: ptr(10.0)}))
	f.syncBudgets("default")
	b := f.reloadBudget("default", "month")
	stageBudgetExceeded(t, b, tgpv1.BudgetReasonMonthlyLimitReached)

	f.sync("new")
	if len(f.provider.launches) != 0 {
		t.Fatalf("launched %v after the monthly limit was reached", f.provider.launches)
	}
	stageList(f, stageInstance("pod-1", ownMachine, providers.StateRunning))
	f.addNode(readyNode(ownMachine, string(spent.UID), "runpod://pod-1"))
	f.sync("spent")
	if st := f.reload("spent").Status; st.Phase != tgpv1.PhaseReady || len(f.provider.terminated) != 0 {
		t.Fatalf("Hold: running request is %s, terminated %v; want it kept Ready", st.Phase, f.provider.terminated)
	}
}

func TestBudgetMonthlyLimitTerminateEndsRunningMachines(t *testing.T) {
	spent := readyRequest("spent", func(r *tgpv1.GPURequest) {
		r.Status.MonthCost = &tgpv1.MonthCost{Month: "2026-11", Cost: 12}
	})
	f := newFixture(t, spent)
	stageList(f, stageInstance("pod-1", ownMachine, providers.StateRunning))
	f.addNode(readyNode(ownMachine, string(spent.UID), "runpod://pod-1"))
	f.addBudget(newBudget("month", "default", tgpv1.GPUBudgetSpec{MonthlyLimit: ptr(10.0), OnMonthlyLimit: tgpv1.MonthlyLimitTerminate}))
	f.syncBudgets("default")
	f.sync("spent")
	st := f.reload("spent").Status
	if st.Phase != tgpv1.PhaseTerminating || st.TerminationReason != "MonthlyLimit" {
		t.Fatalf("phase %s (reason %q), want Terminating for MonthlyLimit", st.Phase, st.TerminationReason)
	}
	if len(stageNodePatches(f)) == 0 {
		t.Errorf("the Node was not cordoned before the terminate")
	}
	if ev := strings.Join(stageEvents(f), "\n"); !strings.Contains(ev, "Terminating") {
		t.Errorf("events %s; want a Terminating Event on the budget", ev)
	}
}

// A new month starts at zero at 00:00 UTC on the 1st: a request held in
// November launches in December.
func TestBudgetMonthRollsOverAtMidnightUTC(t *testing.T) {
	spent := readyRequest("spent", func(r *tgpv1.GPURequest) {
		r.Status.MonthCost = &tgpv1.MonthCost{Month: "2026-11", Cost: 12}
	})
	f := newFixture(t, spent)
	f.addRequest(newRequest("new", func(r *tgpv1.GPURequest) { r.UID = "22222222-2222-3333-4444-555555555555" }))
	f.addBudget(newBudget("month", "default", tgpv1.GPUBudgetSpec{MonthlyLimit: ptr(10.0)}))
	f.syncBudgets("default")
	f.sync("new")
	if len(f.provider.launches) != 0 {
		t.Fatalf("launched %v in November", f.provider.launches)
	}
	// The running request accrues 0.22/h: by the month's end it has spent
	// more, but in December only what accrues after midnight counts.
	f.clock.SetTime(time.Date(2026, 12, 1, 0, 0, 1, 0, time.UTC))
	f.syncBudgets("default")
	if b := f.reloadBudget("default", "month"); b.Status.Month != "2026-12" {
		t.Fatalf("budget month %q after midnight, want 2026-12", b.Status.Month)
	}
	f.sync("new")
	if len(f.provider.launches) != 1 {
		t.Fatalf("launches %v in December, want 1", f.provider.launches)
	}
}

// A deleted request's month spend is kept in the budget before its
// finalizer goes, once.
func TestBudgetDeletionKeepsTheMonthsSpend(t *testing.T) {
	now := metav1.NewTime(t0)
	gone := newRequest("gone", func(r *tgpv1.GPURequest) {
		r.Finalizers, r.DeletionTimestamp = []string{tgpv1.Finalizer}, &now
		r.Status.Phase = tgpv1.PhaseTerminated
		r.Status.MonthCost = &tgpv1.MonthCost{Month: "2026-11", Cost: 3.5}
	})
	f := newFixture(t, gone)
	f.addBudget(newBudget("month", "default", tgpv1.GPUBudgetSpec{MonthlyLimit: ptr(10.0)}))
	f.sync("gone")
	b := f.reloadBudget("default", "month")
	if d := b.Status.Deleted; d == nil || len(d.Requests) != 1 || d.Requests[0].Cost != 3.5 || d.Requests[0].UID != gone.UID {
		t.Fatalf("deleted record %+v, want the request's 3.5", b.Status.Deleted)
	}
	if obj, err := f.client.Tracker().Get(gpurequestsResource, "default", "gone"); err == nil && len(obj.(*tgpv1.GPURequest).Finalizers) != 0 {
		t.Errorf("finalizer kept after the spend was recorded")
	}
}

func stageBudgetExceeded(t *testing.T, b *tgpv1.GPUBudget, reason string) {
	t.Helper()
	for _, c := range b.Status.Conditions {
		if c.Type == tgpv1.BudgetConditionExceeded {
			if c.Status != metav1.ConditionTrue || c.Reason != reason {
				t.Fatalf("Exceeded %s/%s, want True/%s", c.Status, c.Reason, reason)
			}
			return
		}
	}
	t.Fatalf("no Exceeded condition in %+v", b.Status)
}

// The budget gauges follow each budget's spec and status, one series per
// limit it sets.
func TestBudgetMetrics(t *testing.T) {
	f := newFixture(t)
	b := newBudget("team", "default", tgpv1.GPUBudgetSpec{MaxHourlySpend: ptr(2.0), MaxGPUs: ptr(int32(4))})
	b.Status = tgpv1.GPUBudgetStatus{HourlySpend: ptr(1.5), GPUsInUse: ptr(int32(3)),
		Headroom:   &tgpv1.BudgetHeadroom{Hourly: ptr(0.5), GPUs: ptr(int32(1))},
		Conditions: []metav1.Condition{{Type: tgpv1.BudgetConditionExceeded, Status: metav1.ConditionFalse, Reason: tgpv1.BudgetReasonWithinBudget}}}
	f.addBudget(b)
	want := `
# HELP gpu_operator_budget_exceeded 1 when a GPUBudget's Exceeded condition is True.
# TYPE gpu_operator_budget_exceeded gauge
gpu_operator_budget_exceeded{budget="team",namespace="default",reason="WithinBudget"} 0
# HELP gpu_operator_budget_headroom What a GPUBudget still allows under each limit.
# TYPE gpu_operator_budget_headroom gauge
gpu_operator_budget_headroom{budget="team",limit="gpus",namespace="default"} 1
gpu_operator_budget_headroom{budget="team",limit="hourly",namespace="default"} 0.5
# HELP gpu_operator_budget_limit A GPUBudget's limit: maxHourlySpend (USD/h), monthlyLimit (USD) or maxGPUs.
# TYPE gpu_operator_budget_limit gauge
gpu_operator_budget_limit{budget="team",limit="gpus",namespace="default"} 4
gpu_operator_budget_limit{budget="team",limit="hourly",namespace="default"} 2
# HELP gpu_operator_budget_spend What a GPUBudget counts against each limit: hourly spend (USD/h), month-to-date spend (USD), GPUs in use.
# TYPE gpu_operator_budget_spend gauge
gpu_operator_budget_spend{budget="team",limit="gpus",namespace="default"} 3
gpu_operator_budget_spend{budget="team",limit="hourly",namespace="default"} 1.5
`
	if err := testutil.CollectAndCompare(&budgetCollector{c: f.ctrl}, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
}
