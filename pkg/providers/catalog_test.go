package providers_test

import (
	"context"
	"maps"
	"sync"
	"testing"
	"time"

	testclock "k8s.io/utils/clock/testing"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	lambdasim "github.com/solanyn/gpu-operator/pkg/cloudsim/lambda"
	paperspacesim "github.com/solanyn/gpu-operator/pkg/cloudsim/paperspace"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/paperspace"
)

const (
	apiKey          = "catalog-test-key"
	catalogInterval = time.Minute
	lookups         = 500
)

var epoch = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// catalogCalls is, per provider, the simulator endpoints one catalog refresh
// calls and how often.
func catalogCalls(t *testing.T) map[string]map[string]int {
	t.Helper()
	// Paperspace asks machine-availability once per (priced machine type
	// with a canonical GPU, region).
	pairs := 0
	for _, mt := range paperspace.DefaultPriceTable().MachineTypes() {
		if _, _, ok := paperspace.ParseMachineType(mt); ok {
			pairs += len(paperspace.Regions)
		}
	}
	if pairs == 0 {
		t.Fatal("the shipped Paperspace price table prices no GPU machine")
	}
	return map[string]map[string]int{
		providers.LambdaLabs: {lambdasim.EndpointInstanceTypes: 1},
		providers.RunPod:     {"GET /v2/catalog/gpus": 1},
		providers.Paperspace: {"GET /v1/os-templates": 1, "GET /v1/machine-availability": pairs},
	}
}

// startSims runs the three simulators, each with a small catalog.
func startSims(t *testing.T, faults cloudsim.Faults) *stack.Stack {
	t.Helper()
	st, err := stack.Start(stack.Config{
		Lambda: &cloudsim.Config{APIKey: apiKey, Faults: faults, Catalog: []cloudsim.CatalogEntry{
			{InstanceType: "gpu_1x_h100_pcie", GPUs: 1, Region: "us-west-1", OnDemandPrice: 2.49, Capacity: -1},
			{InstanceType: "gpu_8x_a100_80gb_sxm4", GPUs: 8, Region: "us-east-1", OnDemandPrice: 14.32, Capacity: 2},
		}},
		RunPod: &cloudsim.Config{APIKey: apiKey, Faults: faults, Catalog: []cloudsim.CatalogEntry{
			{InstanceType: "NVIDIA GeForce RTX 4090", GPUs: 2, Region: "US-CA-2", OnDemandPrice: 0.69, SpotPrice: 0.34, Capacity: -1},
			{InstanceType: "NVIDIA H100 80GB HBM3", GPUs: 8, Region: "US-DE-1", OnDemandPrice: 2.99, Capacity: 4},
		}},
		Paperspace: &cloudsim.Config{APIKey: apiKey, Faults: faults, Catalog: paperspacesim.DefaultCatalog(3)},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	return st
}

// requests snapshots every simulator's request counters, per provider.
func requests(st *stack.Stack) map[string]map[string]int {
	out := map[string]map[string]int{}
	for _, sim := range st.Simulators() {
		out[sim.Provider()] = sim.Core().Counters().Requests
	}
	return out
}

// delta is the requests made per provider and endpoint since before.
func delta(before, after map[string]map[string]int) map[string]map[string]int {
	out := map[string]map[string]int{}
	for p, eps := range after {
		d := map[string]int{}
		for ep, n := range eps {
			if n -= before[p][ep]; n != 0 {
				d[ep] = n
			}
		}
		out[p] = d
	}
	return out
}

// lookup is what one of the concurrent callers saw.
type lookup struct {
	version    uint64
	byProvider map[string]int
}

// lookupConcurrently calls cat.Offers from lookups goroutines released at once.
func lookupConcurrently(ctx context.Context, cat *providers.Catalog) []lookup {
	out := make([]lookup, lookups)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range out {
		wg.Go(func() {
			<-start
			offers, version := cat.Offers(ctx)
			l := lookup{version: version, byProvider: map[string]int{}}
			for _, o := range offers {
				l.byProvider[o.Provider]++
			}
			out[i] = l
		})
	}
	close(start)
	wg.Wait()
	return out
}

// refreshCounter counts Catalog.OnRefresh calls per provider.
type refreshCounter struct {
	mu    sync.Mutex
	calls map[string]int
	errs  map[string]error
}

func (r *refreshCounter) observe(provider string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls[provider]++
	r.errs[provider] = err
}

func (r *refreshCounter) lastErr(provider string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.errs[provider]
}

func (r *refreshCounter) snapshot() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.calls)
}

func TestCatalogOneRefreshPerProviderPerInterval(t *testing.T) {
	st := startSims(t, cloudsim.Faults{})
	ps, err := st.Adapters(stack.AdapterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	clk := testclock.NewFakeClock(epoch)
	cat := providers.NewCatalog(ps, catalogInterval, clk)
	refreshes := &refreshCounter{calls: map[string]int{}, errs: map[string]error{}}
	cat.OnRefresh = refreshes.observe
	perRefresh := catalogCalls(t)
	names := []string{providers.LambdaLabs, providers.RunPod, providers.Paperspace}
	ctx := context.Background()

	// round looks the offers up from lookups goroutines and checks that each
	// provider's catalog was fetched `want` times (0 or 1) meanwhile: the
	// simulators saw exactly that many refreshes' worth of catalog calls
	// and nothing else, and OnRefresh ran that often.
	var last []lookup
	round := func(t *testing.T, want int) {
		t.Helper()
		before, beforeRefreshes := requests(st), refreshes.snapshot()
		last = lookupConcurrently(ctx, cat)
		got, gotRefreshes := delta(before, requests(st)), refreshes.snapshot()
		for _, p := range names {
			wantCalls := map[string]int{}
			for ep, n := range perRefresh[p] {
				if n*want != 0 {
					wantCalls[ep] = n * want
				}
			}
			if !maps.Equal(got[p], wantCalls) {
				t.Errorf("%s: %d concurrent lookups made calls %v, want %v (%d refresh)", p, lookups, got[p], wantCalls, want)
			}
			if n := gotRefreshes[p] - beforeRefreshes[p]; n != want {
				t.Errorf("%s: OnRefresh ran %d times, want %d", p, n, want)
			}
		}
	}
	// offersFromAll checks every lookup saw every provider's current
	// catalog, at catalog version v.
	offersFromAll := func(t *testing.T, v uint64) {
		t.Helper()
		status := cat.Status()
		for i, l := range last {
			if l.version != v {
				t.Fatalf("lookup %d saw catalog version %d, want %d", i, l.version, v)
			}
			for _, p := range names {
				if n := len(status[p].Offers); n == 0 || l.byProvider[p] != n {
					t.Fatalf("lookup %d saw %d %s offers, want its catalog's %d (> 0)", i, l.byProvider[p], p, n)
				}
			}
		}
	}
	wantStatus := func(t *testing.T, stale bool, fetchedAt time.Time) {
		t.Helper()
		status := cat.Status()
		for _, p := range names {
			s, ok := status[p]
			switch {
			case !ok:
				t.Errorf("%s: no catalog status", p)
			case s.Stale != stale:
				t.Errorf("%s: Stale = %v, want %v (err %v)", p, s.Stale, stale, s.Err)
			case stale && !providers.IsClass(s.Err, providers.ClassTransient):
				t.Errorf("%s: refresh error %v, want a transient provider error", p, s.Err)
			case !stale && s.Err != nil:
				t.Errorf("%s: refresh error %v on a fresh catalog", p, s.Err)
			case !s.FetchedAt.Equal(fetchedAt):
				t.Errorf("%s: FetchedAt %v, want %v (the last successful refresh)", p, s.FetchedAt, fetchedAt)
			}
		}
	}

	// The phases build on each other; the first failure ends the test.
	phases := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"first lookups share one refresh", func(t *testing.T) {
			round(t, 1)
			offersFromAll(t, 3) // one successful refresh per provider
			wantStatus(t, false, epoch)
			if next := cat.NextRefresh(); !next.Equal(epoch.Add(catalogInterval)) {
				t.Errorf("NextRefresh %v, want %v", next, epoch.Add(catalogInterval))
			}
		}},
		{"within the interval nothing is fetched", func(t *testing.T) {
			round(t, 0)
			clk.Step(catalogInterval - time.Nanosecond)
			round(t, 0)
			offersFromAll(t, 3)
		}},
		{"after the interval exactly one more refresh", func(t *testing.T) {
			clk.Step(time.Nanosecond)
			round(t, 1)
			offersFromAll(t, 6)
			wantStatus(t, false, epoch.Add(catalogInterval))
			round(t, 0)
		}},
		{"a failed refresh keeps the last good catalog, stale", func(t *testing.T) {
			good := cat.Status()
			for _, sim := range st.Simulators() {
				sim.Core().SetFaults(cloudsim.Faults{Down: true})
			}
			clk.Step(catalogInterval)
			before, beforeRefreshes := requests(st), refreshes.snapshot()
			last = lookupConcurrently(ctx, cat)
			got, gotRefreshes := delta(before, requests(st)), refreshes.snapshot()
			for _, p := range names {
				// A failed refresh stops at its first failed call (Paperspace's
				// concurrent availability calls may have a few in flight): at
				// least one call, at most one refresh's worth.
				calls, most := 0, 0
				for _, n := range got[p] {
					calls += n
				}
				for _, n := range perRefresh[p] {
					most += n
				}
				if calls < 1 || calls > most {
					t.Errorf("%s: the failed refresh made %d calls (%v), want 1..%d", p, calls, got[p], most)
				}
				if n := gotRefreshes[p] - beforeRefreshes[p]; n != 1 {
					t.Errorf("%s: OnRefresh ran %d times, want 1", p, n)
				}
				if refreshes.lastErr(p) == nil {
					t.Errorf("%s: OnRefresh was not told the refresh failed", p)
				}
				if now := cat.Status()[p].Offers; len(now) != len(good[p].Offers) {
					t.Errorf("%s: %d offers kept, want the last good %d", p, len(now), len(good[p].Offers))
				}
			}
			offersFromAll(t, 6) // still returned, unchanged
			wantStatus(t, true, epoch.Add(catalogInterval))
			// The failed attempt, not the last success, sets the next one.
			if next, want := cat.NextRefresh(), clk.Now().Add(catalogInterval); !next.Equal(want) {
				t.Errorf("NextRefresh %v, want %v", next, want)
			}
			// A provider that is down is asked once per interval, not per caller.
			round(t, 0)
			offersFromAll(t, 6)
		}},
		{"the next good refresh clears stale", func(t *testing.T) {
			for _, sim := range st.Simulators() {
				sim.Core().SetFaults(cloudsim.Faults{})
			}
			clk.Step(catalogInterval)
			round(t, 1)
			offersFromAll(t, 9)
			wantStatus(t, false, epoch.Add(3*catalogInterval))
		}},
	}
	for _, ph := range phases {
		if !t.Run(ph.name, ph.run) {
			return
		}
	}
}

// TestCatalogCallerGivingUpDoesNotFailTheSharedRefresh: the caller that
// happens to start a refresh gives up while it is in flight; the refresh
// must still complete for everyone else instead of failing and leaving the
// catalog stale for an interval.
func TestCatalogCallerGivingUpDoesNotFailTheSharedRefresh(t *testing.T) {
	st, err := stack.Start(stack.Config{Lambda: &cloudsim.Config{
		APIKey: apiKey,
		Faults: cloudsim.Faults{Latency: 300 * time.Millisecond},
		Catalog: []cloudsim.CatalogEntry{
			{InstanceType: "gpu_1x_h100_pcie", GPUs: 1, Region: "us-west-1", OnDemandPrice: 2.49, Capacity: -1},
		},
	}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	ps, err := st.Adapters(stack.AdapterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cat := providers.NewCatalog(ps, catalogInterval, testclock.NewFakeClock(epoch))
	sim := st.Simulator(providers.LambdaLabs)
	catalogCalls := func() int { return sim.Core().Counters().Requests[lambdasim.EndpointInstanceTypes] }

	impatient, giveUp := context.WithCancel(context.Background())
	defer giveUp()
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		cat.Offers(impatient)
	}()
	// Wait (polling, with a deadline) until the refresh has reached the
	// provider, then give up on it.
	deadline := time.Now().Add(10 * time.Second)
	for catalogCalls() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the refresh never reached the simulator")
		}
		time.Sleep(time.Millisecond)
	}
	giveUp()
	select {
	case <-returned:
	case <-time.After(10 * time.Second):
		t.Fatal("a caller whose context ended is still waiting")
	}

	offers, _ := cat.Offers(context.Background())
	if len(offers) != 1 {
		t.Errorf("got %d offers after the first caller gave up, want 1", len(offers))
	}
	if s := cat.Status()[providers.LambdaLabs]; s.Stale || s.Err != nil {
		t.Errorf("catalog stale %v (err %v) because one caller gave up", s.Stale, s.Err)
	}
	if n := catalogCalls(); n != 1 {
		t.Errorf("made %d catalog calls, want the one shared refresh", n)
	}
}
