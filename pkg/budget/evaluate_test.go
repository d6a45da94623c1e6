package budget_test

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/budget"
)

// summary is the part of a GPUBudgetStatus the tables compare.
type summary struct {
	month                   string
	hourly, monthSpend      float64
	gpus                    int32
	hourlyRoom, monthlyRoom *float64
	gpuRoom                 *int32
	exceeded                metav1.ConditionStatus
	reason                  string
}

func summarize(st tgpv1.GPUBudgetStatus) summary {
	s := summary{month: st.Month, hourly: *st.HourlySpend, monthSpend: *st.MonthToDateSpend, gpus: *st.GPUsInUse}
	s.hourlyRoom, s.monthlyRoom, s.gpuRoom = st.Headroom.Hourly, st.Headroom.Monthly, st.Headroom.GPUs
	if c := meta.FindStatusCondition(st.Conditions, tgpv1.BudgetConditionExceeded); c != nil {
		s.exceeded, s.reason = c.Status, c.Reason
	}
	return s
}

func same(a, b *float64) bool {
	return a == nil && b == nil || a != nil && b != nil && math.Abs(*a-*b) < 1e-9
}

func TestEvaluate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		budget *tgpv1.GPUBudget
		reqs   []*tgpv1.GPURequest
		now    time.Time
		want   summary
		msg    string // in the Exceeded condition's message
	}{
		{
			name:   "no requests",
			budget: newBudget("b", maxHourly(10), monthly(500, tgpv1.MonthlyLimitHold), maxGPUs(8)),
			now:    t0,
			want: summary{month: "2026-12", hourlyRoom: ptr(10.0), monthlyRoom: ptr(500.0), gpuRoom: ptr(int32(8)),
				exceeded: metav1.ConditionFalse, reason: tgpv1.BudgetReasonWithinBudget},
		},
		{
			name:   "live machines count for the hour and GPUs; pending, interrupted and terminated ones do not",
			budget: newBudget("b", maxHourly(10), monthly(500, tgpv1.MonthlyLimitHold), maxGPUs(8)),
			reqs: []*tgpv1.GPURequest{
				request("ready", running(2.5, t0), gpus(2), spent("2026-12", 20)),
				request("launching", writeAhead(1, "tgp-launching-1"), gpus(1)),
				request("pending", gpus(4)),
				request("done", terminated(9), gpus(8), spent("2026-12", 30)),
			},
			now: t0,
			want: summary{month: "2026-12", hourly: 3.5, monthSpend: 50, gpus: 3,
				hourlyRoom: ptr(6.5), monthlyRoom: ptr(450.0), gpuRoom: ptr(int32(5)),
				exceeded: metav1.ConditionFalse, reason: tgpv1.BudgetReasonWithinBudget},
		},
		{
			name:   "the month includes what accrued since costUpdatedAt",
			budget: newBudget("b", monthly(100, tgpv1.MonthlyLimitHold)),
			reqs:   []*tgpv1.GPURequest{request("ready", running(4, t0), spent("2026-12", 10))},
			now:    t0.Add(90 * time.Minute),
			want: summary{month: "2026-12", hourly: 4, monthSpend: 16, gpus: 1, monthlyRoom: ptr(84.0),
				exceeded: metav1.ConditionFalse, reason: tgpv1.BudgetReasonWithinBudget},
		},
		{
			name:   "monthlyLimit reached exactly: exceeded, Hold",
			budget: newBudget("b", monthly(50, tgpv1.MonthlyLimitHold)),
			reqs:   []*tgpv1.GPURequest{request("done", terminated(1), spent("2026-12", 50))},
			now:    t0,
			want: summary{month: "2026-12", monthSpend: 50, monthlyRoom: ptr(0.0),
				exceeded: metav1.ConditionTrue, reason: tgpv1.BudgetReasonMonthlyLimitReached},
			msg: "month-to-date spend $50.00 has reached monthlyLimit $50.00: no new launches (Hold)",
		},
		{
			name:   "monthlyLimit passed with Terminate",
			budget: newBudget("b", monthly(50, tgpv1.MonthlyLimitTerminate)),
			reqs:   []*tgpv1.GPURequest{request("ready", running(1, t0), spent("2026-12", 60))},
			now:    t0,
			want: summary{month: "2026-12", hourly: 1, monthSpend: 60, gpus: 1, monthlyRoom: ptr(0.0),
				exceeded: metav1.ConditionTrue, reason: tgpv1.BudgetReasonMonthlyLimitReached},
			msg: "running machines are terminated (Terminate)",
		},
		{
			name:   "hourly spend exactly at maxHourlySpend is full, not exceeded",
			budget: newBudget("b", maxHourly(0.7)),
			reqs: []*tgpv1.GPURequest{
				request("a", running(0.1, t0)), request("b", running(0.1, t0)), request("c", running(0.1, t0)), request("d", running(0.1, t0)),
				request("e", running(0.1, t0)), request("f", running(0.1, t0)), request("g", running(0.1, t0)),
			},
			now: t0,
			want: summary{month: "2026-12", hourly: 0.7, gpus: 7, hourlyRoom: ptr(0.0),
				exceeded: metav1.ConditionFalse, reason: tgpv1.BudgetReasonWithinBudget},
		},
		{
			name:   "maxHourlySpend lowered below what runs",
			budget: newBudget("b", maxHourly(2)),
			reqs:   []*tgpv1.GPURequest{request("a", running(1.5, t0)), request("b", running(1.5, t0))},
			now:    t0,
			want: summary{month: "2026-12", hourly: 3, gpus: 2, hourlyRoom: ptr(0.0),
				exceeded: metav1.ConditionTrue, reason: tgpv1.BudgetReasonHourlySpendExceeded},
			msg: "live machines cost $3.00/h, over maxHourlySpend $2.00/h",
		},
		{
			name:   "maxGPUs lowered below what runs",
			budget: newBudget("b", maxGPUs(4)),
			reqs:   []*tgpv1.GPURequest{request("a", running(1, t0), gpus(8))},
			now:    t0,
			want: summary{month: "2026-12", hourly: 1, gpus: 8, gpuRoom: ptr(int32(0)),
				exceeded: metav1.ConditionTrue, reason: tgpv1.BudgetReasonGPULimitExceeded},
			msg: "live machines have 8 GPUs, over maxGPUs 4",
		},
		{
			name:   "a spec stored around admission is reported, not enforced",
			budget: newBudget("b", maxHourly(-1)),
			reqs:   []*tgpv1.GPURequest{request("a", running(1, t0))},
			now:    t0,
			want: summary{month: "2026-12", hourly: 1, gpus: 1, hourlyRoom: ptr(0.0),
				exceeded: metav1.ConditionUnknown, reason: budget.BudgetReasonInvalidSpec},
			msg: "spec.maxHourlySpend",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := budget.Evaluate(tc.budget, nil, tc.reqs, tc.now)
			got := summarize(st)
			if got.month != tc.want.month || math.Abs(got.hourly-tc.want.hourly) > 1e-9 || math.Abs(got.monthSpend-tc.want.monthSpend) > 1e-9 ||
				got.gpus != tc.want.gpus || !same(got.hourlyRoom, tc.want.hourlyRoom) || !same(got.monthlyRoom, tc.want.monthlyRoom) ||
				(got.gpuRoom == nil) != (tc.want.gpuRoom == nil) || got.gpuRoom != nil && *got.gpuRoom != *tc.want.gpuRoom ||
				got.exceeded != tc.want.exceeded || got.reason != tc.want.reason {
				t.Errorf("got  %s\nwant %s", show(got), show(tc.want))
			}
			c := meta.FindStatusCondition(st.Conditions, tgpv1.BudgetConditionExceeded)
			if tc.msg != "" && !strings.Contains(c.Message, tc.msg) {
				t.Errorf("Exceeded message %q does not say %q", c.Message, tc.msg)
			}
			if st.ObservedGeneration != tc.budget.Generation || c.ObservedGeneration != tc.budget.Generation {
				t.Errorf("observedGeneration %d (condition %d), want %d", st.ObservedGeneration, c.ObservedGeneration, tc.budget.Generation)
			}
			if tc.budget.Status.Month != "" {
				t.Error("Evaluate modified the budget")
			}
		})
	}
}

func show(s summary) string {
	f := func(p *float64) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprint(*p)
	}
	g := func(p *int32) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprint(*p)
	}
	return fmt.Sprintf("month=%s hourly=%v monthSpend=%v gpus=%d headroom=(%s %s %s) exceeded=%s/%s",
		s.month, s.hourly, s.monthSpend, s.gpus, f(s.hourlyRoom), f(s.monthlyRoom), g(s.gpuRoom), s.exceeded, s.reason)
}

func TestEvaluateKeepsTheTransitionTime(t *testing.T) {
	b := newBudget("b", maxHourly(10))
	b.Status = budget.Evaluate(b, nil, nil, t0)
	later := budget.Evaluate(b, nil, []*tgpv1.GPURequest{request("a", running(1, t0))}, t0.Add(time.Hour))
	c := meta.FindStatusCondition(later.Conditions, tgpv1.BudgetConditionExceeded)
	if !c.LastTransitionTime.Time.Equal(t0) {
		t.Errorf("lastTransitionTime %v, want %v (Exceeded stayed False)", c.LastTransitionTime, t0)
	}
}

// The month's spend of a deleted request is counted once, before and after
// its deletion, across retries and restarts, and not at all next month.
func TestDeletedSpendSurvivesAndIsNeverCountedTwice(t *testing.T) {
	b := newBudget("b", monthly(100, tgpv1.MonthlyLimitHold))
	gone := request("gone", terminated(1), spent("2026-12", 30))
	stays := request("stays", terminated(1), spent("2026-12", 10))
	both := []*tgpv1.GPURequest{gone, stays}
	monthOf := func(st tgpv1.GPUBudgetStatus) float64 { return *st.MonthToDateSpend }

	b.Status = budget.Evaluate(b, nil, both, t0)
	if got := monthOf(b.Status); got != 40 {
		t.Fatalf("before the deletion: %v, want 40", got)
	}

	// The controller records the deletion on a copy and writes it.
	stored := b.DeepCopy()
	if !budget.RecordDeletion(stored, nil, gone, t0) {
		t.Fatal("RecordDeletion reported no change for a request that spent $30")
	}
	b = stored
	// A retry (the finalizer release failed, or a new leader repeats it
	// from the stored budget) changes nothing.
	if retry := b.DeepCopy(); budget.RecordDeletion(retry, nil, gone, t0.Add(time.Minute)) {
		t.Errorf("a repeated RecordDeletion changed the budget: %+v", retry.Status.Deleted)
	}

	// Still listed (finalizer not yet released): counted once.
	if got := monthOf(budget.Evaluate(b, nil, both, t0)); got != 40 {
		t.Errorf("recorded and still listed: %v, want 40", got)
	}
	// Gone: folded into deleted.cost.
	b.Status = budget.Evaluate(b, nil, []*tgpv1.GPURequest{stays}, t0)
	if got := monthOf(b.Status); got != 40 {
		t.Errorf("after the deletion: %v, want 40", got)
	}
	if d := b.Status.Deleted; d == nil || d.Cost != 30 || len(d.Requests) != 0 {
		t.Errorf("deleted %+v, want cost 30 and no entries", d)
	}
	// A restart evaluates from the stored status again: same total.
	if got := monthOf(budget.Evaluate(b.DeepCopy(), nil, []*tgpv1.GPURequest{stays}, t0.Add(time.Hour))); got != 40 {
		t.Errorf("after a restart: %v, want 40", got)
	}
	// The next month starts from zero.
	newYear := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	next := budget.Evaluate(b, nil, []*tgpv1.GPURequest{stays}, newYear)
	if next.Month != "2027-01" || monthOf(next) != 0 || next.Deleted == nil || next.Deleted.Cost != 0 {
		t.Errorf("at 00:00 UTC on the 1st: month %s, spend %v, deleted %+v; want 2027-01, 0, empty", next.Month, monthOf(next), next.Deleted)
	}
	// A request deleted last month and retried this month records nothing.
	if late := b.DeepCopy(); budget.RecordDeletion(late, nil, request("late", terminated(1), spent("2026-12", 5)), newYear) {
		t.Errorf("last month's spend recorded in the new month: %+v", late.Status.Deleted)
	}
}

func TestRecordDeletion(t *testing.T) {
	t.Run("nothing spent this month: no write", func(t *testing.T) {
		b := newBudget("b", monthly(100, tgpv1.MonthlyLimitHold))
		if budget.RecordDeletion(b, nil, request("never-launched"), t0) {
			t.Error("changed")
		}
	})
	t.Run("the in-memory request's final accrual is recorded", func(t *testing.T) {
		b := newBudget("b", monthly(100, tgpv1.MonthlyLimitHold))
		r := request("r", running(6, t0), spent("2026-12", 1))
		if !budget.RecordDeletion(b, nil, r, t0.Add(30*time.Minute)) {
			t.Fatal("not recorded")
		}
		if e := b.Status.Deleted.Requests; len(e) != 1 || e[0].UID != r.UID || e[0].Name != "r" || e[0].Cost != 4 {
			t.Errorf("entries %+v, want one for r at $4", e)
		}
	})
	t.Run("a larger amount raises the entry, a smaller one never lowers it", func(t *testing.T) {
		b := newBudget("b", monthly(100, tgpv1.MonthlyLimitHold))
		budget.RecordDeletion(b, nil, request("r", terminated(1), spent("2026-12", 5)), t0)
		if budget.RecordDeletion(b, nil, request("r", terminated(1), spent("2026-12", 3)), t0) {
			t.Error("lowered")
		}
		if !budget.RecordDeletion(b, nil, request("r", terminated(1), spent("2026-12", 8)), t0) || b.Status.Deleted.Requests[0].Cost != 8 {
			t.Errorf("not raised: %+v", b.Status.Deleted)
		}
	})
	t.Run("a budget last counted last month rolls over first", func(t *testing.T) {
		b := newBudget("b", monthly(100, tgpv1.MonthlyLimitHold))
		b.Status.Month, b.Status.Deleted = "2026-11", &tgpv1.DeletedSpend{Cost: 70, Requests: []tgpv1.DeletedRequest{{UID: "old", Cost: 3}}}
		budget.RecordDeletion(b, nil, request("r", terminated(1), spent("2026-12", 5)), t0)
		if d := b.Status.Deleted; b.Status.Month != "2026-12" || d.Cost != 0 || len(d.Requests) != 1 || d.Requests[0].Cost != 5 {
			t.Errorf("month %s deleted %+v, want 2026-12 with only r's $5", b.Status.Month, d)
		}
	})
}

// A budget created mid-month takes the deleted record of the sibling that
// has recorded the most this month, so deletions before it existed count.
func TestNewBudgetSeedsFromSiblings(t *testing.T) {
	old := newBudget("old", maxHourly(10))
	old.Status = tgpv1.GPUBudgetStatus{Month: "2026-12", Deleted: &tgpv1.DeletedSpend{Cost: 25, Requests: []tgpv1.DeletedRequest{{UID: "uid-x", Cost: 5}}}}
	stale := newBudget("stale", maxHourly(10))
	stale.Status = tgpv1.GPUBudgetStatus{Month: "2026-11", Deleted: &tgpv1.DeletedSpend{Cost: 900}}
	fresh := newBudget("fresh", monthly(100, tgpv1.MonthlyLimitHold))
	siblings := []*tgpv1.GPUBudget{old, stale, fresh}
	x := request("x", terminated(1), spent("2026-12", 5))

	st := budget.Evaluate(fresh, siblings, []*tgpv1.GPURequest{x}, t0)
	if got := *st.MonthToDateSpend; got != 30 {
		t.Errorf("new budget's month-to-date %v, want 30 (25 deleted earlier, x's 5 once)", got)
	}
	// An existing budget is never re-seeded.
	fresh.Status = st
	fresh.Status.Deleted = &tgpv1.DeletedSpend{}
	if got := *budget.Evaluate(fresh, siblings, nil, t0).MonthToDateSpend; got != 0 {
		t.Errorf("re-seeded: %v", got)
	}
}
