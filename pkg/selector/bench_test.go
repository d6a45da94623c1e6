package selector

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

var (
	benchCounts    = []int{1, 2, 4, 8, 16}
	benchProviders = []string{providers.LambdaLabs, providers.RunPod, providers.Paperspace, "vast", "tensordock", "fluidstack"}
	benchRegions   = []string{
		"us-west-1", "us-west-2", "us-west-3", "us-east-1", "us-east-2", "us-central-1", "us-south-1",
		"ca-central-1", "eu-west-1", "eu-west-2", "eu-central-1", "eu-north-1", "eu-south-1",
		"ap-northeast-1", "ap-northeast-2", "ap-south-1", "ap-southeast-1", "ap-southeast-2",
		"sa-east-1", "me-west-1", "af-south-1", "us-westfoo-1",
	}
	benchRequest = Request{
		GPUType: "RTX4090", GPUCount: 1, Regions: []string{"us-west", "us-east-1", "eu"},
		Spot: true, MaxSpotPrice: 0.40, MaxPrice: 0.60,
	}
)

// benchCatalog returns n offers spread evenly over every canonical GPU type
// and five GPU counts, with random providers, regions and prices.
func benchCatalog(n int) []providers.Offer {
	r := rand.New(rand.NewPCG(1, 2))
	types := providers.CanonicalGPUTypes
	offers := make([]providers.Offer, n)
	for i := range offers {
		count := benchCounts[(i/len(types))%len(benchCounts)]
		region := benchRegions[r.IntN(len(benchRegions))]
		o := providers.Offer{
			Provider:       benchProviders[r.IntN(len(benchProviders))],
			InstanceType:   fmt.Sprintf("gpu-%d", i),
			GPUType:        types[i%len(types)],
			GPUCount:       count,
			Region:         region,
			ProviderRegion: region,
			Capacity:       providers.OnDemand,
			HourlyPrice:    float64(count) * (0.2 + r.Float64()),
			Available:      r.IntN(10) != 0,
			PriceSource:    providers.PriceSourceAPI,
		}
		if r.IntN(2) == 0 {
			o.Capacity = providers.Spot
			o.HourlyPrice /= 2
		}
		offers[i] = o
	}
	return offers
}

// benchIndex returns an index of benchCatalog(n) and 20 of its offerings
// marked unavailable, some of them of the requested GPU type (the snapshot
// the controller hands to every decision).
func benchIndex(n int) (*Index, unavailableKeys) {
	offers := benchCatalog(n)
	keys := make(unavailableKeys, 0, 20)
	for _, o := range offers[:20] {
		keys = append(keys, o.Key())
	}
	return NewIndex(offers), keys
}

type unavailableKeys []providers.OfferingKey

// Keys returns a copy, as the controller's cache does per decision.
func (k unavailableKeys) Keys() []providers.OfferingKey {
	return append([]providers.OfferingKey(nil), k...)
}

// benchmarkSelect measures one decision as the controller makes it: a
// snapshot of the unavailable offerings, Select and the best offer.
func benchmarkSelect(b *testing.B, n int) {
	ix, cache := benchIndex(n)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, ok := ix.Select(benchRequest, Unavailable{Offerings: cache.Keys()}).Best(); !ok {
			b.Fatal("no eligible offer")
		}
	}
}

// benchKindsRequest is benchRequest served by containers, with two
// providers lacking a bootstrap; withKinds makes a third of a catalog's
// offers containers.
var benchKindsRequest = func() Request {
	r := benchRequest
	r.Kind, r.NoBootstrap = providers.Container, []string{"vast", "fluidstack"}
	return r
}()

func withKinds(offers []providers.Offer) []providers.Offer {
	for i := range offers {
		if i%3 == 0 {
			offers[i].Kind = providers.Container
		}
	}
	return offers
}

// BenchmarkSelectKinds100k is a decision over a catalog of both machine
// kinds for a container request with providers lacking a bootstrap: the
// kind splits runs, so it costs about what BenchmarkSelect100k does.
func BenchmarkSelectKinds100k(b *testing.B) {
	ix := NewIndex(withKinds(benchCatalog(100_000)))
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := ix.Select(benchKindsRequest, Unavailable{}).Best(); !ok {
			b.Fatal("no eligible offer")
		}
	}
}

func BenchmarkSelect1k(b *testing.B)   { benchmarkSelect(b, 1_000) }
func BenchmarkSelect10k(b *testing.B)  { benchmarkSelect(b, 10_000) }
func BenchmarkSelect100k(b *testing.B) { benchmarkSelect(b, 100_000) }
func BenchmarkSelect1M(b *testing.B)   { benchmarkSelect(b, 1_000_000) }

// benchmarkSelectTop5 adds taking the first five ranked offers, the most
// one sync launches (MaxLaunchesPerSync).
func benchmarkSelectTop5(b *testing.B, n int) {
	ix, cache := benchIndex(n)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		taken := 0
		for range ix.Select(benchRequest, Unavailable{Offerings: cache.Keys()}).Ranked() {
			if taken++; taken == 5 {
				break
			}
		}
		if taken != 5 {
			b.Fatalf("ranked %d offers, want 5", taken)
		}
	}
}

func BenchmarkSelectTop5_10k(b *testing.B)  { benchmarkSelectTop5(b, 10_000) }
func BenchmarkSelectTop5_100k(b *testing.B) { benchmarkSelectTop5(b, 100_000) }

// BenchmarkRejected10k is the cost of explaining a decision offer by offer
// (the offers CLI's -v), which is linear in the offers of the GPU type.
func BenchmarkRejected10k(b *testing.B) {
	ix, cache := benchIndex(10_000)
	res := ix.Select(benchRequest, Unavailable{Offerings: cache.Keys()})
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if len(res.Rejected()) == 0 {
			b.Fatal("nothing rejected")
		}
	}
}

// TestSelectAllocations holds the allocation target of a decision, which,
// unlike its time, is exact: under 20 whatever the catalog's size.
func TestSelectAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a 100,000-offer index")
	}
	for _, n := range []int{1_000, 10_000, 100_000} {
		ix, cache := benchIndex(n)
		allocs := testing.AllocsPerRun(20, func() {
			ix.Select(benchRequest, Unavailable{Offerings: cache.Keys()}).Best()
		})
		if allocs >= 20 {
			t.Errorf("a decision over %d offers allocates %.0f times, want < 20", n, allocs)
		}
		kinds := NewIndex(withKinds(benchCatalog(n)))
		allocs = testing.AllocsPerRun(20, func() {
			kinds.Select(benchKindsRequest, Unavailable{Offerings: cache.Keys()}).Best()
		})
		if allocs >= 20 {
			t.Errorf("a container decision over %d offers allocates %.0f times, want < 20", n, allocs)
		}
	}
}

func BenchmarkNewIndex10k(b *testing.B) {
	offers := benchCatalog(10_000)
	b.ReportAllocs()
	for b.Loop() {
		NewIndex(offers)
	}
}
