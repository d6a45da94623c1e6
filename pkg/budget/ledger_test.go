package budget_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/tools/cache"
	clocktesting "k8s.io/utils/clock/testing"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/budget"
	listers "github.com/solanyn/gpu-operator/pkg/generated/listers/tgp/v1"
)

func claim(r *tgpv1.GPURequest, price float64, gpus int32) budget.Claim {
	return budget.Claim{Namespace: r.Namespace, Request: r.UID, Name: r.Name, Machine: fmt.Sprintf("tgp-%s-%d", r.Name, r.Status.Attempt+1),
		HourlyPrice: price, GPUs: gpus}
}

func pendingRequests(n int) []*tgpv1.GPURequest {
	reqs := make([]*tgpv1.GPURequest, n)
	for i := range reqs {
		reqs[i] = request(fmt.Sprintf("job-%02d", i))
	}
	return reqs
}

// 50 requests launch at once against a budget that fits exactly 7: exactly
// 7 reservations succeed, the rest are refused naming the budget, and what
// is held never exceeds the budget by a micro-dollar.
func TestReserveConcurrentlyNeverOvershoots(t *testing.T) {
	for _, tc := range []struct {
		name      string
		budget    *tgpv1.GPUBudget
		price     float64
		gpus      int32
		wantLimit string
	}{
		{"maxHourlySpend $7/h, machines at $1/h", newBudget("team", maxHourly(7)), 1, 1, budget.LimitMaxHourlySpend},
		{"maxHourlySpend $0.70/h, machines at $0.10/h (no float drift)", newBudget("team", maxHourly(0.7)), 0.1, 1, budget.LimitMaxHourlySpend},
		{"maxHourlySpend $2.03/h, machines at $0.29/h", newBudget("team", maxHourly(2.03)), 0.29, 1, budget.LimitMaxHourlySpend},
		{"maxGPUs 28, machines with 4 GPUs", newBudget("team", maxGPUs(28)), 2.5, 4, budget.LimitMaxGPUs},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reqs := pendingRequests(50)
			src := &fakeSource{budgets: []*tgpv1.GPUBudget{tc.budget}, requests: reqs}
			ledger := budget.NewLedger(src, clocktesting.NewFakeClock(t0))

			var (
				ok       atomic.Int32
				wg       sync.WaitGroup
				start    = make(chan struct{})
				mu       sync.Mutex
				held     []*budget.Reservation
				refusals []error
			)
			for _, r := range reqs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					res, err := ledger.Reserve(claim(r, tc.price, tc.gpus))
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						refusals = append(refusals, err)
						return
					}
					ok.Add(1)
					held = append(held, res)
				}()
			}
			close(start)
			wg.Wait()

			if ok.Load() != 7 {
				t.Fatalf("%d reservations succeeded, want exactly 7", ok.Load())
			}
			for _, err := range refusals {
				e, isOver := budget.AsOverBudget(err)
				if !isOver || e.Budget != "team" || e.Namespace != ns || e.Limit != tc.wantLimit {
					t.Fatalf("refusal %v, want an OverBudgetError naming %s/team and %s", err, ns, tc.wantLimit)
				}
			}
			if !strings.Contains(refusals[0].Error(), "GPUBudget team-a/team: ") {
				t.Errorf("refusal %q does not name the budget", refusals[0])
			}
			hourly, inUse, n := ledger.InFlight(ns)
			if n != 7 || inUse != int64(7*tc.gpus) || fmt.Sprintf("%.6f", hourly) != fmt.Sprintf("%.6f", 7*tc.price) {
				t.Errorf("in flight: $%v/h, %d GPUs, %d reservations; want 7 at $%v/h and %d GPUs each", hourly, inUse, n, tc.price, tc.gpus)
			}

			// The launches succeed and the informer catches up with their
			// write-ahead records: the reservations give way to the status,
			// and the budget is still full.
			for _, res := range held {
				res.Commit()
				c := res.Claim()
				src.set(request(c.Name, writeAhead(c.HourlyPrice, c.Machine), gpus(c.GPUs), func(r *tgpv1.GPURequest) { r.UID = c.Request }))
			}
			late := request("late")
			src.set(late)
			if _, err := ledger.Reserve(claim(late, tc.price, tc.gpus)); err == nil {
				t.Error("an eighth launch fitted after the seven were committed and listed")
			}
		})
	}
}

// Reservations released as fast as they are taken: at no moment does the
// ledger hold more than the budget.
func TestReserveAndReleaseConcurrently(t *testing.T) {
	reqs := pendingRequests(50)
	src := &fakeSource{budgets: []*tgpv1.GPUBudget{newBudget("team", maxHourly(7))}, requests: reqs}
	ledger := budget.NewLedger(src, clocktesting.NewFakeClock(t0))
	var wg sync.WaitGroup
	var over atomic.Int32
	for _, r := range reqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				res, err := ledger.Reserve(claim(r, 1, 1))
				if err != nil {
					continue
				}
				if hourly, _, _ := ledger.InFlight(ns); hourly > 7 {
					over.Add(1)
				}
				res.Release()
			}
		}()
	}
	wg.Wait()
	if over.Load() > 0 {
		t.Errorf("the ledger held more than $7/h %d times", over.Load())
	}
	if _, _, n := ledger.InFlight(ns); n != 0 {
		t.Errorf("%d reservations left after every one was released", n)
	}
}

func TestReserve(t *testing.T) {
	type step func(t *testing.T, l *budget.Ledger, src *fakeSource, clk *clocktesting.FakeClock)
	refused := func(r *tgpv1.GPURequest, price float64, gpus int32, budgetName, limit string) step {
		return func(t *testing.T, l *budget.Ledger, _ *fakeSource, _ *clocktesting.FakeClock) {
			t.Helper()
			_, err := l.Reserve(claim(r, price, gpus))
			e, ok := budget.AsOverBudget(err)
			if !ok || e.Budget != budgetName || e.Limit != limit {
				t.Fatalf("Reserve(%s at $%v/h, %d GPUs) = %v, want OverBudget by %s (%s)", r.Name, price, gpus, err, budgetName, limit)
			}
		}
	}
	var last *budget.Reservation
	fits := func(r *tgpv1.GPURequest, price float64, gpus int32) step {
		return func(t *testing.T, l *budget.Ledger, _ *fakeSource, _ *clocktesting.FakeClock) {
			t.Helper()
			res, err := l.Reserve(claim(r, price, gpus))
			if err != nil {
				t.Fatalf("Reserve(%s at $%v/h, %d GPUs): %v, want it to fit", r.Name, price, gpus, err)
			}
			last = res
		}
	}
	do := func(f step) step { return f }
	a, b, c := request("a"), request("b"), request("c")
	newYear := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)

	for _, tc := range []struct {
		name    string
		budgets []*tgpv1.GPUBudget
		reqs    []*tgpv1.GPURequest
		now     time.Time
		steps   []step
	}{
		{
			name: "no budget: everything fits", reqs: []*tgpv1.GPURequest{a, b},
			steps: []step{fits(a, 1000, 16), fits(b, 1000, 16)},
		},
		{
			name:    "live machines count: $3 of $4 used leaves $1",
			budgets: []*tgpv1.GPUBudget{newBudget("team", maxHourly(4))},
			reqs:    []*tgpv1.GPURequest{request("busy", running(3, t0)), a, b},
			steps:   []step{refused(a, 1.01, 1, "team", budget.LimitMaxHourlySpend), fits(a, 1, 1), refused(b, 0.01, 1, "team", budget.LimitMaxHourlySpend)},
		},
		{
			name:    "Release gives the headroom back; Release after Commit does not",
			budgets: []*tgpv1.GPUBudget{newBudget("team", maxHourly(1))},
			reqs:    []*tgpv1.GPURequest{a, b, c},
			steps: []step{
				fits(a, 1, 1), refused(b, 1, 1, "team", budget.LimitMaxHourlySpend),
				do(func(*testing.T, *budget.Ledger, *fakeSource, *clocktesting.FakeClock) { last.Release(); last.Release() }),
				fits(b, 1, 1),
				do(func(*testing.T, *budget.Ledger, *fakeSource, *clocktesting.FakeClock) { last.Commit(); last.Release() }),
				refused(c, 1, 1, "team", budget.LimitMaxHourlySpend),
			},
		},
		{
			name:    "a committed reservation holds until the informer shows the machine, then the status does",
			budgets: []*tgpv1.GPUBudget{newBudget("team", maxHourly(1))},
			reqs:    []*tgpv1.GPURequest{a, b},
			steps: []step{
				fits(a, 1, 1),
				do(func(*testing.T, *budget.Ledger, *fakeSource, *clocktesting.FakeClock) { last.Commit() }),
				refused(b, 1, 1, "team", budget.LimitMaxHourlySpend),
				do(func(_ *testing.T, _ *budget.Ledger, src *fakeSource, _ *clocktesting.FakeClock) {
					src.set(request("a", running(1, t0), func(r *tgpv1.GPURequest) { r.Status.MachineName = "tgp-a-1" }))
				}),
				refused(b, 1, 1, "team", budget.LimitMaxHourlySpend),
				do(func(t *testing.T, l *budget.Ledger, _ *fakeSource, _ *clocktesting.FakeClock) {
					if _, _, n := l.InFlight(ns); n != 0 {
						t.Errorf("%d reservations still held after the informer showed the machine", n)
					}
				}),
			},
		},
		{
			name:    "a committed reservation the informer never shows expires after CommitTTL",
			budgets: []*tgpv1.GPUBudget{newBudget("team", maxHourly(1))},
			reqs:    []*tgpv1.GPURequest{a, b},
			steps: []step{
				fits(a, 1, 1),
				do(func(*testing.T, *budget.Ledger, *fakeSource, *clocktesting.FakeClock) { last.Commit() }),
				do(func(_ *testing.T, _ *budget.Ledger, _ *fakeSource, clk *clocktesting.FakeClock) {
					clk.Step(budget.CommitTTL)
				}),
				refused(b, 1, 1, "team", budget.LimitMaxHourlySpend),
				do(func(_ *testing.T, _ *budget.Ledger, _ *fakeSource, clk *clocktesting.FakeClock) {
					clk.Step(time.Second)
				}),
				fits(b, 1, 1),
			},
		},
		{
			name:    "a pending reservation never expires",
			budgets: []*tgpv1.GPUBudget{newBudget("team", maxHourly(1))},
			reqs:    []*tgpv1.GPURequest{a, b},
			steps: []step{
				fits(a, 1, 1),
				do(func(_ *testing.T, _ *budget.Ledger, _ *fakeSource, clk *clocktesting.FakeClock) {
					clk.Step(24 * time.Hour)
				}),
				refused(b, 1, 1, "team", budget.LimitMaxHourlySpend),
			},
		},
		{
			name:    "a committed reservation of a deleted request is dropped",
			budgets: []*tgpv1.GPUBudget{newBudget("team", maxHourly(1))},
			reqs:    []*tgpv1.GPURequest{a, b},
			steps: []step{
				fits(a, 1, 1),
				do(func(_ *testing.T, _ *budget.Ledger, src *fakeSource, _ *clocktesting.FakeClock) {
					last.Commit()
					src.remove(a.UID)
				}),
				fits(b, 1, 1),
			},
		},
		{
			name:    "Forget drops a reservation at once",
			budgets: []*tgpv1.GPUBudget{newBudget("team", maxHourly(1))},
			reqs:    []*tgpv1.GPURequest{a, b},
			steps: []step{
				fits(a, 1, 1),
				do(func(t *testing.T, l *budget.Ledger, _ *fakeSource, _ *clocktesting.FakeClock) {
					last.Commit()
					l.Forget(ns, a.UID)
				}),
				fits(b, 1, 1),
			},
		},
		{
			name:    "a relaunch after an interruption replaces the request's own machine, and counts like a launch",
			budgets: []*tgpv1.GPUBudget{newBudget("team", maxHourly(2))},
			// The informer still shows the interrupted machine as Ready: the
			// interruption is written with the relaunch's write-ahead record.
			reqs: []*tgpv1.GPURequest{request("a", running(1, t0)), request("other", running(1, t0)), b},
			steps: []step{
				fits(request("a"), 1, 1),
				refused(request("a"), 1.5, 1, "team", budget.LimitMaxHourlySpend),
				refused(b, 0.5, 1, "team", budget.LimitMaxHourlySpend),
			},
		},
		{
			name:    "a failover's second Reserve for one request replaces its first",
			budgets: []*tgpv1.GPUBudget{newBudget("team", maxHourly(2))},
			reqs:    []*tgpv1.GPURequest{a, b},
			steps:   []step{fits(a, 1.5, 1), fits(a, 2, 1), refused(b, 0.01, 1, "team", budget.LimitMaxHourlySpend)},
		},
		{
			name:    "after a restart the write-ahead record of a launch in flight counts",
			budgets: []*tgpv1.GPUBudget{newBudget("team", maxHourly(2))},
			reqs:    []*tgpv1.GPURequest{request("a", writeAhead(1.5, "tgp-a-1")), b},
			steps:   []step{refused(b, 1, 1, "team", budget.LimitMaxHourlySpend), fits(b, 0.5, 1)},
		},
		{
			name:    "maxGPUs counts gpuCount",
			budgets: []*tgpv1.GPUBudget{newBudget("gpus", maxGPUs(8))},
			reqs:    []*tgpv1.GPURequest{request("big", running(1, t0), gpus(4)), a, b},
			steps:   []step{fits(a, 1, 4), refused(b, 1, 1, "gpus", budget.LimitMaxGPUs)},
		},
		{
			name: "every budget applies; the first refusing one by name is named",
			budgets: []*tgpv1.GPUBudget{
				newBudget("z-hourly", maxHourly(10)),
				newBudget("m-gpus", maxGPUs(2)),
				newBudget("a-roomy", maxHourly(100), maxGPUs(100)),
			},
			reqs:  []*tgpv1.GPURequest{a, b, c},
			steps: []step{refused(a, 1, 4, "m-gpus", budget.LimitMaxGPUs), refused(a, 11, 1, "z-hourly", budget.LimitMaxHourlySpend), fits(a, 5, 2), refused(b, 1, 1, "m-gpus", budget.LimitMaxGPUs)},
		},
		{
			name:    "an invalid budget refuses nothing",
			budgets: []*tgpv1.GPUBudget{newBudget("broken", maxHourly(-5))},
			reqs:    []*tgpv1.GPURequest{a},
			steps:   []step{fits(a, 100, 1)},
		},
		{
			name:    "monthlyLimit reached holds every launch, however cheap",
			budgets: []*tgpv1.GPUBudget{newBudget("month", monthly(100, tgpv1.MonthlyLimitHold), maxHourly(50))},
			reqs:    []*tgpv1.GPURequest{request("done", terminated(1), spent("2026-12", 100)), a},
			steps:   []step{refused(a, 0.01, 1, "month", budget.LimitMonthlyLimit)},
		},
		{
			name: "the month spend resets at 00:00 UTC on the 1st",
			budgets: []*tgpv1.GPUBudget{newBudget("month", monthly(100, tgpv1.MonthlyLimitTerminate), func(b *tgpv1.GPUBudget) {
				b.Status.Month, b.Status.Deleted = "2026-12", &tgpv1.DeletedSpend{Cost: 60}
			})},
			reqs: []*tgpv1.GPURequest{request("done", terminated(1), spent("2026-12", 40)), a},
			now:  newYear.Add(-time.Nanosecond),
			steps: []step{
				refused(a, 1, 1, "month", budget.LimitMonthlyLimit),
				do(func(_ *testing.T, _ *budget.Ledger, _ *fakeSource, clk *clocktesting.FakeClock) { clk.SetTime(newYear) }),
				fits(a, 1, 1),
			},
		},
		{
			name:    "another namespace is unaffected",
			budgets: []*tgpv1.GPUBudget{newBudget("team", maxHourly(1))},
			reqs:    []*tgpv1.GPURequest{a, func() *tgpv1.GPURequest { r := request("x"); r.Namespace = "team-b"; return r }()},
			steps: []step{
				fits(a, 1, 1),
				do(func(t *testing.T, l *budget.Ledger, _ *fakeSource, _ *clocktesting.FakeClock) {
					if _, err := l.Reserve(budget.Claim{Namespace: "team-b", Request: "uid-x", Machine: "m", HourlyPrice: 50, GPUs: 8}); err != nil {
						t.Errorf("team-b: %v", err)
					}
				}),
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := tc.now
			if now.IsZero() {
				now = t0
			}
			clk := clocktesting.NewFakeClock(now)
			src := &fakeSource{budgets: tc.budgets, requests: append([]*tgpv1.GPURequest(nil), tc.reqs...)}
			l := budget.NewLedger(src, clk)
			for _, s := range tc.steps {
				s(t, l, src, clk)
			}
		})
	}
}

func TestHeadroomAdmit(t *testing.T) {
	src := &fakeSource{
		budgets:  []*tgpv1.GPUBudget{newBudget("team", maxHourly(5), maxGPUs(4))},
		requests: []*tgpv1.GPURequest{request("busy", running(3, t0), gpus(2)), request("a")},
	}
	l := budget.NewLedger(src, clocktesting.NewFakeClock(t0))
	h, err := l.Headroom(ns, "uid-a")
	if err != nil {
		t.Fatal(err)
	}
	if !h.Limited() {
		t.Fatal("Limited() = false with a budget")
	}
	for _, tc := range []struct {
		price   float64
		gpus    int32
		wantErr string
	}{
		{2, 2, ""},
		{2.000001, 1, "a machine at $2.000001/h would take hourly spend to $5.000001/h, over maxHourlySpend $5.00/h (headroom $2.00/h)"},
		{1, 3, "3 GPUs would take GPUs in use to 5, over maxGPUs 4 (headroom 2)"},
	} {
		err := h.Admit(tc.price, tc.gpus)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("Admit(%v, %d) = %v, want nil", tc.price, tc.gpus, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("Admit(%v, %d) = %v, want %q", tc.price, tc.gpus, err, tc.wantErr)
		}
	}
	// The request's own live machine is not in its headroom.
	h, _ = l.Headroom(ns, "uid-busy")
	if err := h.Admit(5, 4); err != nil {
		t.Errorf("busy's own headroom: %v, want the whole budget", err)
	}
	// No budget: not limited.
	if h, _ := l.Headroom("elsewhere", "uid-x"); h.Limited() || h.Admit(1e6, 16) != nil {
		t.Error("a namespace without budgets is limited")
	}
}

func TestLedgerSourceErrors(t *testing.T) {
	src := &fakeSource{budgets: []*tgpv1.GPUBudget{newBudget("team", maxHourly(5))}, err: errListing}
	l := budget.NewLedger(src, clocktesting.NewFakeClock(t0))
	if _, err := l.Reserve(claim(request("a"), 1, 1)); !errors.Is(err, errListing) {
		t.Errorf("Reserve = %v, want the Source's error", err)
	}
	if _, ok := budget.AsOverBudget(errListing); ok {
		t.Error("a Source error is not OverBudget")
	}
	if _, err := l.Reserve(budget.Claim{Namespace: ns, HourlyPrice: 1}); err == nil {
		t.Error("a claim without a request UID was accepted")
	}
	if _, _, n := l.InFlight(ns); n != 0 {
		t.Errorf("%d reservations after failed Reserves", n)
	}
}

// ListerSource reads one namespace from the informers' listers.
func TestListerSource(t *testing.T) {
	budgets := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	requests := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	other := newBudget("other", maxHourly(1))
	other.Namespace = "team-b"
	for _, b := range []*tgpv1.GPUBudget{newBudget("team", maxHourly(1)), other} {
		if err := budgets.Add(b); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range []*tgpv1.GPURequest{request("busy", running(1, t0)), request("a")} {
		if err := requests.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	src := budget.ListerSource(listers.NewGPUBudgetLister(budgets), listers.NewGPURequestLister(requests))
	if bs, err := src.Budgets(ns); err != nil || len(bs) != 1 || bs[0].Name != "team" {
		t.Errorf("Budgets(%s) = %v, %v", ns, bs, err)
	}
	if rs, err := src.Requests(ns); err != nil || len(rs) != 2 {
		t.Errorf("Requests(%s) = %v, %v", ns, rs, err)
	}
	l := budget.NewLedger(src, clocktesting.NewFakeClock(t0))
	if _, err := l.Reserve(claim(request("a"), 0.5, 1)); err == nil {
		t.Error("a launch fitted a budget the listed machine fills")
	}
}
