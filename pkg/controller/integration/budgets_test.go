package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/yaml"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/budget"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	"github.com/solanyn/gpu-operator/pkg/controller"
)

// The budget tests buy Lambda A10 VMs at $0.75/h.
func budgetSims() stack.Config {
	return stack.Config{Lambda: simConfig(
		cloudsim.CatalogEntry{InstanceType: "gpu_1x_a10", GPUs: 1, Region: "us-east-1", OnDemandPrice: 0.75, Capacity: -1},
	)}
}

const a10Request = "metadata: {name: %s}\nspec: {gpuType: A10, maxPrice: 1.0}"

func (r *rig) createBudget(manifest string) *tgpv1.GPUBudget {
	r.t.Helper()
	var b tgpv1.GPUBudget
	if err := yaml.UnmarshalStrict([]byte(manifest), &b); err != nil {
		r.t.Fatal(err)
	}
	b.Namespace = r.ns
	out, err := r.client.TgpV1().GPUBudgets(r.ns).Create(r.t.Context(), &b, metav1.CreateOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	return out
}

func (r *rig) editBudget(name string, edit func(*tgpv1.GPUBudgetSpec)) {
	r.t.Helper()
	b, err := r.client.TgpV1().GPUBudgets(r.ns).Get(r.t.Context(), name, metav1.GetOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	edit(&b.Spec)
	if _, err := r.client.TgpV1().GPUBudgets(r.ns).Update(r.t.Context(), b, metav1.UpdateOptions{}); err != nil {
		r.t.Fatal(err)
	}
}

// waitBudget polls the budget until cond holds.
func (r *rig) waitBudget(name string, timeout time.Duration, what string, cond func(*tgpv1.GPUBudget) bool) *tgpv1.GPUBudget {
	r.t.Helper()
	var last *tgpv1.GPUBudget
	err := wait.PollUntilContextTimeout(r.t.Context(), 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		b, err := r.client.TgpV1().GPUBudgets(r.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = b
		return cond(b), nil
	})
	if err != nil {
		r.t.Fatalf("GPUBudget %s: %s not reached within %s; last status: %+v", name, what, timeout, last)
	}
	return last
}

func heldBy(budgetName string) func(*tgpv1.GPURequest) bool {
	return func(req *tgpv1.GPURequest) bool {
		for _, c := range req.Status.Conditions {
			if c.Type == tgpv1.ConditionOffersAvailable && c.Status == metav1.ConditionFalse && c.Reason == budget.ReasonOverBudget {
				return req.Status.Phase == tgpv1.PhasePending && strings.Contains(c.Message, "GPUBudget "+budgetName)
			}
		}
		return false
	}
}

func exceeded(reason string) func(*tgpv1.GPUBudget) bool {
	return func(b *tgpv1.GPUBudget) bool {
		for _, c := range b.Status.Conditions {
			if c.Type == tgpv1.BudgetConditionExceeded {
				return c.Status == metav1.ConditionTrue && c.Reason == reason
			}
		}
		return false
	}
}

// maxHourlySpend holds the request that would cross it and launches it
// once the budget is raised; maxGPUs counts gpuCount the same way.
func TestBudgetHoldsUntilRaised(t *testing.T) {
	for _, tc := range []struct {
		name, budget, limit string
		raise               func(*tgpv1.GPUBudgetSpec)
	}{
		{"maxHourlySpend", "spec: {maxHourlySpend: 1.0}", "maxHourlySpend", func(s *tgpv1.GPUBudgetSpec) { s.MaxHourlySpend = ptr.To(1.5) }},
		{"maxGPUs", "spec: {maxGPUs: 1}", "maxGPUs", func(s *tgpv1.GPUBudgetSpec) { s.MaxGPUs = ptr.To(int32(2)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, rigOptions{sims: budgetSims(), config: controller.Config{PollInterval: pollInterval}})
			r.createBudget("metadata: {name: team}\n" + tc.budget)
			r.create(fmt.Sprintf(a10Request, "first"))
			r.waitPhase("first", tgpv1.PhaseReady, readyTimeout)
			r.create(fmt.Sprintf(a10Request, "second"))
			held := r.waitFor("second", readyTimeout, "held by GPUBudget team", heldBy("team"))
			if !strings.Contains(held.Status.Message, tc.limit) {
				t.Errorf("message %q does not name %s", held.Status.Message, tc.limit)
			}
			r.waitBudget("team", readyTimeout, "GPUs in use 1 at 0.75/h", func(b *tgpv1.GPUBudget) bool {
				return b.Status.GPUsInUse != nil && *b.Status.GPUsInUse == 1 && b.Status.HourlySpend != nil && *b.Status.HourlySpend == 0.75
			})
			if n := len(r.liveMachines()); n != 1 {
				t.Fatalf("%d live machines while the second request is held, want 1", n)
			}
			r.editBudget("team", tc.raise)
			r.waitPhase("second", tgpv1.PhaseReady, readyTimeout)
			if evs := r.events("second"); !containsAll(evs, budget.ReasonOverBudget, "Launched") {
				t.Errorf("events %v, want OverBudget then Launched", evs)
			}
			if evs := r.events("team"); !containsAll(evs, "RequestHeld") {
				t.Errorf("budget events %v, want RequestHeld", evs)
			}
		})
	}
}

// Fifty requests at once against a budget that fits exactly seven machines:
// seven are launched, ever, and the rest wait.
func TestBudgetConcurrentRequestsNeverOvershoot(t *testing.T) {
	const n, fits = 50, 7
	r := newRig(t, rigOptions{sims: budgetSims(), config: controller.Config{PollInterval: pollInterval}})
	r.createBudget(fmt.Sprintf("metadata: {name: team}\nspec: {maxHourlySpend: %.2f}", fits*0.75))
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { r.create(fmt.Sprintf(a10Request, fmt.Sprintf("r-%02d", i))) })
	}
	wg.Wait()
	err := wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 2*readyTimeout, true, func(ctx context.Context) (bool, error) {
		list, err := r.client.TgpV1().GPURequests(r.ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		ready, held := 0, 0
		for i := range list.Items {
			switch req := &list.Items[i]; {
			case req.Status.Phase == tgpv1.PhaseReady:
				ready++
			case heldBy("team")(req):
				held++
			}
		}
		return ready == fits && held == n-fits, nil
	})
	if err != nil {
		t.Fatalf("not %d Ready and %d held: %v", fits, n-fits, err)
	}
	launched := 0
	for _, c := range r.stack.Lambda.Core().Counters().Launches {
		launched += c
	}
	spend := 0.75 * float64(len(r.liveMachines()))
	if launched != fits || spend > fits*0.75+1e-9 {
		t.Fatalf("%d launches, %.2f USD/h live; the budget fits %d machines, %.2f USD/h", launched, spend, fits, fits*0.75)
	}
}

// A reached monthlyLimit holds new launches; with Hold running machines keep
// running, with Terminate they are drained and terminated.
func TestBudgetMonthlyLimit(t *testing.T) {
	for _, action := range []tgpv1.MonthlyLimitAction{tgpv1.MonthlyLimitHold, tgpv1.MonthlyLimitTerminate} {
		t.Run(string(action), func(t *testing.T) {
			r := newRig(t, rigOptions{sims: budgetSims(), config: controller.Config{PollInterval: pollInterval, CostInterval: 200 * time.Millisecond}})
			// $0.75/h reaches $0.0002 in about a second.
			r.createBudget("metadata: {name: month}\nspec: {monthlyLimit: 0.0002, onMonthlyLimit: " + string(action) + "}")
			r.create(fmt.Sprintf(a10Request, "running"))
			r.waitPhase("running", tgpv1.PhaseReady, readyTimeout)
			r.waitBudget("month", readyTimeout, "Exceeded/MonthlyLimitReached", exceeded(tgpv1.BudgetReasonMonthlyLimitReached))
			r.create(fmt.Sprintf(a10Request, "new"))
			r.waitFor("new", readyTimeout, "held by GPUBudget month", heldBy("month"))
			switch action {
			case tgpv1.MonthlyLimitHold:
				if st := r.get("running").Status; st.Phase != tgpv1.PhaseReady {
					t.Fatalf("Hold: the running request is %s (%s), want Ready", st.Phase, st.Message)
				}
				if n := len(r.liveMachines()); n != 1 {
					t.Fatalf("Hold: %d live machines, want the running one", n)
				}
			case tgpv1.MonthlyLimitTerminate:
				done := r.waitPhase("running", tgpv1.PhaseTerminated, readyTimeout)
				if done.Status.TerminationReason != "MonthlyLimit" {
					t.Errorf("termination reason %q, want MonthlyLimit", done.Status.TerminationReason)
				}
				if n := len(r.liveMachines()); n != 0 {
					t.Fatalf("Terminate: %d live machines, want none", n)
				}
				if evs := r.events("month"); !containsAll(evs, "Terminating") {
					t.Errorf("budget events %v, want Terminating", evs)
				}
			}
		})
	}
}

// offsetClock is the real clock moved to another instant: time passes at
// its real rate, so the controller's pollers and queues work as usual, and
// a month boundary can be a few seconds away.
type offsetClock struct {
	clock.RealClock
	offset time.Duration
}

func (c offsetClock) Now() time.Time                  { return time.Now().Add(c.offset) }
func (c offsetClock) Since(t time.Time) time.Duration { return c.Now().Sub(t) }

// A leader restart mid-month keeps the month's spend (it lives in the
// requests' status and the budget's), and the spend starts again from zero
// at 00:00 UTC on the 1st.
func TestBudgetSpendSurvivesRestartAndResetsAtTheMonthStart(t *testing.T) {
	midnight := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	clk := offsetClock{offset: time.Until(midnight.Add(-12 * time.Second))}
	// adminJoin: the controller's clock is hours behind the API server's,
	// so the tokens it minted would have expired on arrival.
	r := newRig(t, rigOptions{sims: budgetSims(), clock: clk, adminJoin: true, config: controller.Config{PollInterval: pollInterval, CostInterval: 200 * time.Millisecond}})
	// The budget allows a lot per month but is exceeded only by a tiny spend
	// in November: a new request is held until the month turns.
	r.createBudget("metadata: {name: month}\nspec: {monthlyLimit: 0.0004}")
	r.create(fmt.Sprintf(a10Request, "running"))
	r.waitPhase("running", tgpv1.PhaseReady, readyTimeout)
	before := r.waitBudget("month", readyTimeout, "November spend", func(b *tgpv1.GPUBudget) bool {
		return b.Status.Month == "2026-11" && b.Status.MonthToDateSpend != nil && *b.Status.MonthToDateSpend > 0.0001
	})
	beforeAt := time.Now()
	if !clk.Now().Before(midnight) {
		t.Skip("the machine was too slow to launch before the simulated midnight")
	}
	r.restart()
	after := r.waitBudget("month", readyTimeout, "spend re-evaluated by the new leader", func(b *tgpv1.GPUBudget) bool {
		return b.Status.ObservedGeneration == b.Generation && b.Status.MonthToDateSpend != nil &&
			(b.Status.Month != before.Status.Month || *b.Status.MonthToDateSpend >= *before.Status.MonthToDateSpend)
	})
	if after.Status.Month == "2026-11" {
		// Neither reset nor doubled: at most what 0.75/h adds in the time
		// since, plus a margin.
		if got, limit := *after.Status.MonthToDateSpend, *before.Status.MonthToDateSpend+0.75*time.Since(beforeAt).Hours()+0.0001; got > limit {
			t.Errorf("month-to-date %.6f after the restart, more than the machine could have spent (%.6f): counted twice?", got, limit)
		}
	}
	// After midnight the month starts at zero: only December's accrual counts.
	dec := r.waitBudget("month", 30*time.Second, "December", func(b *tgpv1.GPUBudget) bool { return b.Status.Month == "2026-12" })
	if got := *dec.Status.MonthToDateSpend; got > 0.75*clk.Since(midnight).Hours()+0.0001 {
		t.Errorf("December month-to-date %.6f, more than accrued since midnight", got)
	}
}

// A budget applies to its own namespace only: the same request in another
// namespace launches while the budget holds the one beside it.
func TestBudgetOtherNamespaceUnaffected(t *testing.T) {
	sel := fmt.Sprintf("budget-test=%s", strings.ToLower(t.Name()))
	r := newRig(t, rigOptions{sims: budgetSims(), requestSelector: sel, config: controller.Config{PollInterval: pollInterval}})
	other := r.ns + "-other"
	if _, err := r.kube.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: other}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{"budget-test": strings.ToLower(t.Name())}
	b := &tgpv1.GPUBudget{ObjectMeta: metav1.ObjectMeta{Name: "tight", Namespace: r.ns, Labels: labels}, Spec: tgpv1.GPUBudgetSpec{MaxHourlySpend: ptr.To(0.5)}}
	if _, err := r.client.TgpV1().GPUBudgets(r.ns).Create(t.Context(), b, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{r.ns, other} {
		req := &tgpv1.GPURequest{ObjectMeta: metav1.ObjectMeta{Name: "a10", Namespace: ns, Labels: labels},
			Spec: tgpv1.GPURequestSpec{GPUType: "A10", MaxPrice: ptr.To(1.0)}}
		if _, err := r.client.TgpV1().GPURequests(ns).Create(t.Context(), req, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	r.waitFor("a10", readyTimeout, "held by GPUBudget tight", heldBy("tight"))
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, readyTimeout, true, func(ctx context.Context) (bool, error) {
		req, err := r.client.TgpV1().GPURequests(other).Get(ctx, "a10", metav1.GetOptions{})
		return err == nil && req.Status.Phase == tgpv1.PhaseReady, nil
	})
	if err != nil {
		t.Fatalf("the request in namespace %s did not become Ready beside the held one: %v", other, err)
	}
	if n := len(r.liveMachines()); n != 1 {
		t.Errorf("%d live machines, want the other namespace's one", n)
	}
}
