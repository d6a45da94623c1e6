package main

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	vastaisim "github.com/solanyn/gpu-operator/pkg/cloudsim/vastai"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/vastai"
	"github.com/solanyn/gpu-operator/pkg/selector"
)

// marketSection heads BENCHMARKS.md's marketplace section.
const marketSection = "## Marketplace scale (Vast.ai)"

// marketResult is a Vast.ai-sized catalog through the real adapter and the
// selector: the refresh (over loopback HTTP to the simulator, whose search
// and encoding are included), the index, one decision, and memory.
type marketResult struct {
	Hosts, Offers, GPUTypes, Regions int
	Calls                            int
	Refresh                          time.Duration // best of three
	RefreshAllocs                    uint64
	IndexBuild                       time.Duration
	CatalogMiB, IndexMiB             float64
	Decision                         testing.BenchmarkResult
	Request                          selector.Request
	Eligible                         int
	Err                              error
}

// runMarket generates a market of hosts (40 GPU models, 60 locations, 1-8
// GPUs, on-demand and interruptible, VMs and containers), refreshes it
// through the Vast.ai adapter with the search's filters lifted (every host
// the operator maps becomes an offer), and measures a decision for the
// product's first example on it.
func runMarket(ctx context.Context, hosts int, logf func(string, ...any)) (res marketResult) {
	res.Hosts = hosts
	market := vastaisim.Market{Hosts: hosts, Seed: 1}
	st, err := stack.Start(stack.Config{VastAI: &vastaisim.Config{Config: cloudsim.Config{APIKey: "bench"}, Market: &market}}, nil)
	if err != nil {
		res.Err = err
		return res
	}
	defer st.Close()
	ps, err := st.Adapters(stack.AdapterOptions{Unlimited: true, VastAI: func(c *vastai.Config) {
		c.Filters = vastai.Filters{AllowUnverified: true, MinReliability: -1}
		c.SearchLimit = 2 * hosts
	}})
	if err != nil {
		res.Err = err
		return res
	}
	a := ps[0]
	var offers []providers.Offer
	for i := range 3 {
		before := st.Simulator(providers.VastAI).Core().Counters().Requests
		var m0, m1 runtime.MemStats
		runtime.ReadMemStats(&m0)
		start := time.Now()
		got, err := a.Offers(ctx)
		took := time.Since(start)
		runtime.ReadMemStats(&m1)
		if err != nil {
			res.Err = err
			return res
		}
		if i == 0 || took < res.Refresh {
			res.Refresh = took
		}
		res.RefreshAllocs = m1.Mallocs - m0.Mallocs
		calls := 0
		for k, v := range st.Simulator(providers.VastAI).Core().Counters().Requests {
			calls += v - before[k]
		}
		res.Calls = calls
		offers = got
	}
	res.Offers = len(offers)
	types, regions := map[string]bool{}, map[string]bool{}
	for _, o := range offers {
		types[o.GPUType], regions[o.Region] = true, true
	}
	res.GPUTypes, res.Regions = len(types), len(regions)

	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	offers = nil
	h0 := heap()
	if offers, err = a.Offers(ctx); err != nil {
		res.Err = err
		return res
	}
	h1 := heap()
	start := time.Now()
	idx := selector.NewIndex(offers)
	res.IndexBuild = time.Since(start)
	h2 := heap()
	_ = h0
	res.CatalogMiB, res.IndexMiB = float64(catalogBytes(offers))/(1<<20), float64(int64(h2)-int64(h1))/(1<<20)

	// The product's first example: RTX4090, spot capped at $0.25/h with an
	// on-demand fallback under $0.50/h, in us-west.
	res.Request = selector.Request{GPUType: "RTX4090", GPUCount: 1, Regions: []string{"us-west"}, Spot: true, MaxSpotPrice: 0.25, MaxPrice: 0.50}
	res.Eligible = idx.Select(res.Request, selector.Unavailable{}).Eligible
	res.Decision = testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			r := idx.Select(res.Request, selector.Unavailable{})
			if _, ok := r.Best(); !ok && r.Eligible > 0 {
				b.Fatal("no best offer")
			}
		}
	})
	runtime.KeepAlive(idx)
	runtime.KeepAlive(offers)
	logf("marketplace: %d hosts -> %d offers in %s (%d calls); decision %s, %d allocs", hosts, res.Offers,
		res.Refresh.Round(time.Millisecond), res.Calls, time.Duration(res.Decision.NsPerOp()), res.Decision.AllocsPerOp())
	return res
}

// catalogBytes is the memory of a catalog: the offers and the bytes of
// their strings (counted once per offer, so an upper bound where strings
// are shared).
func catalogBytes(offers []providers.Offer) int {
	n := len(offers) * int(unsafe.Sizeof(providers.Offer{}))
	for _, o := range offers {
		n += len(o.Provider) + len(o.InstanceType) + len(o.GPUType) + len(o.Region) + len(o.ProviderRegion) +
			len(o.Capacity) + len(o.PriceSource) + len(o.Kind)
	}
	return n
}

func (r marketResult) markdown() string {
	var b strings.Builder
	b.WriteString(marketSection + "\n\n")
	if r.Err != nil {
		fmt.Fprintf(&b, "The run failed: %v\n", r.Err)
		return b.String()
	}
	fmt.Fprintf(&b, "A generated Vast.ai market of %d hosts (`pkg/cloudsim/vastai.GenerateHosts`, seed 1: 40 GPU models, 60 locations, 1, 2, 4 or 8 GPUs, "+
		"most hosts renting interruptible bids, some with VMs enabled), served by the simulator on loopback and read by the real adapter with the "+
		"search's default filters lifted (every host the operator maps is offered), then indexed and ranked by `pkg/selector` in this process.\n\n", r.Hosts)
	b.WriteString("| measure | value | target |\n|---|---|---|\n")
	fmt.Fprintf(&b, "| catalog refresh (two searches over HTTP, the simulator's search and encoding included; best of 3) | %s, %d calls, %d allocations (adapter and simulator, one process) | a bounded number of calls independent of requests |\n",
		r.Refresh.Round(time.Millisecond), r.Calls, r.RefreshAllocs)
	fmt.Fprintf(&b, "| offers | %d (%d GPU types, %d canonical regions) | |\n", r.Offers, r.GPUTypes, r.Regions)
	fmt.Fprintf(&b, "| catalog memory (the []providers.Offer and their strings) | %.1f MiB | stated |\n", r.CatalogMiB)
	fmt.Fprintf(&b, "| index build (`selector.NewIndex`, once per refresh; live heap it adds) | %s, %.1f MiB | |\n", r.IndexBuild.Round(time.Millisecond), r.IndexMiB)
	fmt.Fprintf(&b, "| one decision (`Index.Select` + `Best`) for RTX4090 x1 spot ≤ $0.25, on-demand ≤ $0.50, us-west (%d eligible) | %s, %d allocations, %d B | < 1 ms, < 20 allocations: %s |\n",
		r.Eligible, time.Duration(r.Decision.NsPerOp()), r.Decision.AllocsPerOp(), r.Decision.AllocedBytesPerOp(),
		verdict(r.Decision.NsPerOp() < int64(time.Millisecond) && r.Decision.AllocsPerOp() < 20))
	b.WriteString("\nThe offers CLI ranks and prints such a catalog in about 0.1 s once it has it (`go test ./cmd/gpu-operator -bench OffersTable50k`: " +
		"Select and the table for 50,000 offers); fetching it is the refresh above.\n")
	return b.String()
}
