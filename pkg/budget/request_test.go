package budget_test

import (
	"math"
	"testing"
	"time"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/budget"
)

func TestMonthIsUTC(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Skipf("no time zone data: %v", err)
	}
	tokyo, err := time.LoadLocation("Asia/Tokyo")
	if err != nil {
		t.Skipf("no time zone data: %v", err)
	}
	for _, tc := range []struct {
		name string
		t    time.Time
		want string
	}{
		{"mid-month", t0, "2026-12"},
		{"the last nanosecond of the year", time.Date(2026, 12, 31, 23, 59, 59, 999999999, time.UTC), "2026-12"},
		{"00:00 UTC on the 1st", time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC), "2027-01"},
		{"still the 31st in New York, already January in UTC", time.Date(2026, 12, 31, 20, 0, 0, 0, ny), "2027-01"},
		{"already the 1st in Tokyo, still November in UTC", time.Date(2026, 12, 1, 8, 59, 0, 0, tokyo), "2026-11"},
		{"February of a leap year", time.Date(2028, 2, 29, 12, 0, 0, 0, time.UTC), "2028-02"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := budget.MonthOf(tc.t)
			if m.String() != tc.want {
				t.Fatalf("MonthOf(%v) = %s, want %s", tc.t, m, tc.want)
			}
			if tc.t.Before(m.Start()) || !tc.t.Before(m.End()) {
				t.Errorf("%v not in [%v, %v)", tc.t, m.Start(), m.End())
			}
			if m.Start().Location() != time.UTC || m.Start().Day() != 1 || m.Start().Hour() != 0 {
				t.Errorf("Start %v is not 00:00 UTC on the 1st", m.Start())
			}
			if p, err := budget.ParseMonth(m.String()); err != nil || p != m {
				t.Errorf("ParseMonth(%q) = %v, %v", m.String(), p, err)
			}
		})
	}
	if got := budget.MonthOf(t0).End(); !got.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("December's End = %v, want 2027-01-01T00:00Z", got)
	}
	for _, bad := range []string{"", "2026-13", "2026-1", "26-12", "2026/12"} {
		if _, err := budget.ParseMonth(bad); err == nil {
			t.Errorf("ParseMonth(%q) accepted", bad)
		}
	}
}

func TestLiveAndBilling(t *testing.T) {
	for _, tc := range []struct {
		name          string
		req           *tgpv1.GPURequest
		live, billing bool
	}{
		{"pending", request("a"), false, false},
		{"write-ahead record", request("a", writeAhead(1, "m")), true, false},
		{"booting", request("a", running(1, t0), func(r *tgpv1.GPURequest) { r.Status.Phase = tgpv1.PhaseBooting }), true, true},
		{"ready", request("a", running(1, t0)), true, true},
		{"terminating", request("a", running(1, t0), func(r *tgpv1.GPURequest) { r.Status.Phase = tgpv1.PhaseTerminating }), true, true},
		{"terminated", request("a", terminated(1)), false, false},
		{"interrupted (machine gone, price kept)", request("a", running(1, t0), func(r *tgpv1.GPURequest) {
			r.Status.Phase, r.Status.MachineName, r.Status.InstanceID = tgpv1.PhaseInterrupted, "", ""
		}), false, false},
		{"terminating a request that never launched", request("a", func(r *tgpv1.GPURequest) {
			r.Status.Phase, r.Status.HourlyPrice = tgpv1.PhaseTerminating, ptr(1.0)
		}), false, false},
		{"failed", request("a", running(1, t0), func(r *tgpv1.GPURequest) { r.Status.Phase = tgpv1.PhaseFailed }), false, false},
		{"ready without a price", request("a", running(1, t0), func(r *tgpv1.GPURequest) { r.Status.HourlyPrice = nil }), false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := budget.Live(&tc.req.Status); got != tc.live {
				t.Errorf("Live = %v, want %v", got, tc.live)
			}
			if got := budget.Billing(&tc.req.Status); got != tc.billing {
				t.Errorf("Billing = %v, want %v", got, tc.billing)
			}
		})
	}
	if got := budget.GPUs(request("a", gpus(0))); got != 1 {
		t.Errorf("GPUs with gpuCount unset = %d, want 1 (the default)", got)
	}
	if got := budget.GPUs(request("a", gpus(8))); got != 8 {
		t.Errorf("GPUs = %d, want 8", got)
	}
}

func TestAccrue(t *testing.T) {
	newYear := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name      string
		req       *tgpv1.GPURequest
		now       time.Time
		wantDelta float64
		wantTotal float64
		wantMonth *tgpv1.MonthCost
	}{
		{
			name: "one hour at $2 in the month",
			req:  request("a", running(2, t0), spent("2026-12", 5)), now: t0.Add(time.Hour),
			wantDelta: 2, wantTotal: 2, wantMonth: &tgpv1.MonthCost{Month: "2026-12", Cost: 7},
		},
		{
			name: "across 00:00 UTC on the 1st only the new month's part counts in monthCost",
			req: request("a", running(2, newYear.Add(-90*time.Minute)), spent("2026-12", 40), func(r *tgpv1.GPURequest) {
				r.Status.AccumulatedCost = ptr(100.0)
			}),
			now:       newYear.Add(30 * time.Minute),
			wantDelta: 4, wantTotal: 104, wantMonth: &tgpv1.MonthCost{Month: "2027-01", Cost: 1},
		},
		{
			name: "a status from before monthCost, provisioned this month, is seeded with its accumulatedCost",
			req: request("a", running(1, t0), func(r *tgpv1.GPURequest) {
				r.Status.AccumulatedCost = ptr(3.0)
				r.Status.ProvisionedAt = at(t0.Add(-72 * time.Hour))
			}),
			now:       t0.Add(30 * time.Minute),
			wantDelta: 0.5, wantTotal: 3.5, wantMonth: &tgpv1.MonthCost{Month: "2026-12", Cost: 3.5},
		},
		{
			name: "a status from before monthCost, provisioned last month, counts from now on",
			req: request("a", running(1, t0), func(r *tgpv1.GPURequest) {
				r.Status.AccumulatedCost = ptr(300.0)
				r.Status.ProvisionedAt = at(t0.AddDate(0, -1, 0))
			}),
			now:       t0.Add(time.Hour),
			wantDelta: 1, wantTotal: 301, wantMonth: &tgpv1.MonthCost{Month: "2026-12", Cost: 1},
		},
		{
			name: "billing starts when costUpdatedAt is unset",
			req: request("a", running(1, t0), func(r *tgpv1.GPURequest) {
				r.Status.CostUpdatedAt, r.Status.AccumulatedCost = nil, nil
			}),
			now:       t0.Add(time.Hour),
			wantDelta: 0, wantTotal: 0, wantMonth: &tgpv1.MonthCost{Month: "2026-12", Cost: 0},
		},
		{
			name: "a write-ahead record does not bill",
			req:  request("a", writeAhead(1, "m")), now: t0.Add(time.Hour),
		},
		{
			name: "the clock going back accrues nothing",
			req:  request("a", running(1, t0), spent("2026-12", 2)), now: t0.Add(-time.Minute),
			wantMonth: &tgpv1.MonthCost{Month: "2026-12", Cost: 2},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := &tc.req.Status
			delta := budget.Accrue(st, tc.now)
			if math.Abs(delta-tc.wantDelta) > 1e-9 {
				t.Errorf("delta %v, want %v", delta, tc.wantDelta)
			}
			if tc.wantTotal != 0 || st.AccumulatedCost != nil {
				if st.AccumulatedCost == nil || math.Abs(*st.AccumulatedCost-tc.wantTotal) > 1e-9 {
					t.Errorf("accumulatedCost %v, want %v", st.AccumulatedCost, tc.wantTotal)
				}
			}
			switch {
			case tc.wantMonth == nil && st.MonthCost != nil:
				t.Errorf("monthCost %+v, want none", *st.MonthCost)
			case tc.wantMonth != nil && (st.MonthCost == nil || st.MonthCost.Month != tc.wantMonth.Month || math.Abs(st.MonthCost.Cost-tc.wantMonth.Cost) > 1e-9):
				t.Errorf("monthCost %+v, want %+v", st.MonthCost, *tc.wantMonth)
			}
			if budget.Billing(st) && tc.now.After(t0) && !st.CostUpdatedAt.Time.Equal(tc.now) {
				t.Errorf("costUpdatedAt %v, want %v", st.CostUpdatedAt, tc.now)
			}
		})
	}
}

func TestMonthSpend(t *testing.T) {
	newYear := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name string
		req  *tgpv1.GPURequest
		now  time.Time
		want float64
	}{
		{"recorded this month", request("a", terminated(1), spent("2026-12", 12.5)), t0, 12.5},
		{"recorded last month", request("a", terminated(1), spent("2026-11", 12.5)), t0, 0},
		{"recorded, plus what accrued since costUpdatedAt", request("a", running(3, t0), spent("2026-12", 1)), t0.Add(20 * time.Minute), 2},
		{"last month's record and a machine billing across the 1st", request("a", running(2, newYear.Add(-time.Hour)), spent("2026-12", 50)),
			newYear.Add(15 * time.Minute), 0.5},
		{"no record, provisioned this month: accumulatedCost", request("a", terminated(1), func(r *tgpv1.GPURequest) {
			r.Status.AccumulatedCost, r.Status.ProvisionedAt = ptr(7.0), at(t0.Add(-time.Hour))
		}), t0, 7},
		{"no record, provisioned last month", request("a", terminated(1), func(r *tgpv1.GPURequest) {
			r.Status.AccumulatedCost, r.Status.ProvisionedAt = ptr(7.0), at(t0.AddDate(0, -1, 0))
		}), t0, 0},
		{"a forged negative record counts as zero", request("a", terminated(1), spent("2026-12", -100)), t0, 0},
		{"never launched", request("a"), t0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := budget.MonthSpend(&tc.req.Status, tc.now); math.Abs(got-tc.want) > 1e-9 {
				t.Errorf("MonthSpend = %v, want %v", got, tc.want)
			}
		})
	}
}

// Accrue and MonthSpend agree: what MonthSpend estimates before a write is
// what Accrue records.
func TestMonthSpendMatchesAccrue(t *testing.T) {
	r := request("a", running(1.37, t0.Add(-2*time.Hour)), spent("2026-12", 4.2))
	now := t0.Add(47 * time.Minute)
	before := budget.MonthSpend(&r.Status, now)
	budget.Accrue(&r.Status, now)
	if after := budget.MonthSpend(&r.Status, now); math.Abs(before-after) > 1e-6 {
		t.Errorf("MonthSpend %v before Accrue, %v after", before, after)
	}
}
