package selector

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

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

func benchmarkSelect(b *testing.B, n int) {
	offers := benchCatalog(n)
	ix := NewIndex(offers)
	cache := NewUnavailableCache(clocktesting.NewFakePassiveClock(time.Now()), 0)
	for _, o := range offers[:20] {
		cache.Mark(o.Key(), "capacity")
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, ok := ix.Select(benchRequest, Unavailable{Offerings: cache.Keys()}).Best(); !ok {
			b.Fatal("no eligible offer")
		}
	}
}

func BenchmarkSelect1k(b *testing.B)   { benchmarkSelect(b, 1_000) }
func BenchmarkSelect10k(b *testing.B)  { benchmarkSelect(b, 10_000) }
func BenchmarkSelect100k(b *testing.B) { benchmarkSelect(b, 100_000) }

func BenchmarkNewIndex10k(b *testing.B) {
	offers := benchCatalog(10_000)
	b.ReportAllocs()
	for b.Loop() {
		NewIndex(offers)
	}
}
