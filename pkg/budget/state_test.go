package budget_test

import (
	"strings"
	"testing"
	"time"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/budget"
)

func TestState(t *testing.T) {
	spentFifty := []*tgpv1.GPURequest{request("a", running(1, t0), spent("2026-12", 50))}
	for _, tc := range []struct {
		name       string
		budgets    []*tgpv1.GPUBudget
		reqs       []*tgpv1.GPURequest
		now        time.Time
		want       budget.Mode
		wantBudget string
	}{
		{"no budgets", nil, spentFifty, t0, budget.Open, ""},
		{"under the limit", []*tgpv1.GPUBudget{newBudget("b", monthly(51, tgpv1.MonthlyLimitTerminate))}, spentFifty, t0, budget.Open, ""},
		{"at the limit, Hold", []*tgpv1.GPUBudget{newBudget("b", monthly(50, tgpv1.MonthlyLimitHold))}, spentFifty, t0, budget.Hold, "b"},
		{"onMonthlyLimit unset is Hold", []*tgpv1.GPUBudget{newBudget("b", monthly(50, ""))}, spentFifty, t0, budget.Hold, "b"},
		{"over the limit, Terminate", []*tgpv1.GPUBudget{newBudget("b", monthly(10, tgpv1.MonthlyLimitTerminate))}, spentFifty, t0, budget.Terminate, "b"},
		{"the accrual not yet written reaches the limit", []*tgpv1.GPUBudget{newBudget("b", monthly(50.5, tgpv1.MonthlyLimitHold))},
			spentFifty, t0.Add(30 * time.Minute), budget.Hold, "b"},
		{"Terminate wins over Hold", []*tgpv1.GPUBudget{
			newBudget("a-hold", monthly(10, tgpv1.MonthlyLimitHold)),
			newBudget("z-terminate", monthly(20, tgpv1.MonthlyLimitTerminate)),
		}, spentFifty, t0, budget.Terminate, "z-terminate"},
		{"two that hold: the first by name", []*tgpv1.GPUBudget{
			newBudget("second", monthly(10, tgpv1.MonthlyLimitHold)),
			newBudget("first", monthly(20, tgpv1.MonthlyLimitHold)),
		}, spentFifty, t0, budget.Hold, "first"},
		{"hourly and GPU limits never hold a namespace", []*tgpv1.GPUBudget{newBudget("b", maxHourly(0.5), maxGPUs(1))},
			[]*tgpv1.GPURequest{request("a", running(1, t0), gpus(4))}, t0, budget.Open, ""},
		{"an invalid budget is not enforced", []*tgpv1.GPUBudget{newBudget("b", monthly(-1, tgpv1.MonthlyLimitTerminate))}, spentFifty, t0, budget.Open, ""},
		{"a new month opens the namespace again", []*tgpv1.GPUBudget{newBudget("b", monthly(50, tgpv1.MonthlyLimitTerminate))},
			[]*tgpv1.GPURequest{request("a", terminated(1), spent("2026-12", 50))}, time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), budget.Open, ""},
		{"deleted requests count", []*tgpv1.GPUBudget{newBudget("b", monthly(50, tgpv1.MonthlyLimitHold), func(b *tgpv1.GPUBudget) {
			b.Status.Month, b.Status.Deleted = "2026-12", &tgpv1.DeletedSpend{Cost: 45}
		})}, []*tgpv1.GPURequest{request("a", terminated(1), spent("2026-12", 5))}, t0, budget.Hold, "b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := budget.State(tc.budgets, tc.reqs, tc.now)
			if got.Mode != tc.want || got.Budget != tc.wantBudget {
				t.Fatalf("State = %+v, want %s by %q", got, tc.want, tc.wantBudget)
			}
			if got.Mode != budget.Open && !strings.Contains(got.Message, "GPUBudget "+tc.wantBudget+": month-to-date spend") {
				t.Errorf("message %q", got.Message)
			}
		})
	}
}

func TestTerminationOrder(t *testing.T) {
	reqs := []*tgpv1.GPURequest{
		request("cheap", running(0.5, t0)),
		request("pending"),
		request("h100-old", running(3, t0.Add(-2*time.Hour))),
		request("h100-new", running(3, t0)),
		request("terminated", terminated(9)),
		request("launching", writeAhead(3, "tgp-launching-1")),
		request("h100-new-b", running(3, t0)),
		request("a100", running(1.2, t0)),
	}
	var got []string
	for _, r := range budget.TerminationOrder(reqs) {
		got = append(got, r.Name)
	}
	want := "launching h100-new h100-new-b h100-old a100 cheap"
	if strings.Join(got, " ") != want {
		t.Errorf("order %v, want %s", got, want)
	}
}
