package main

import (
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/selector"
	"github.com/solanyn/gpu-operator/pkg/selector/specreq"
)

// marketplace is a Vast.ai-shaped catalog of n offers: one host per offer
// (its own instance type), 40 GPU types, 1-8 GPUs, 60 regions, both
// capacity types, VMs and containers.
func marketplace(n int) []providers.Offer {
	rng := rand.New(rand.NewPCG(1, 2))
	gpus := append([]string(nil), providers.CanonicalGPUTypes...)
	for len(gpus) < 40 {
		gpus = append(gpus, fmt.Sprintf("GPU%02d", len(gpus)))
	}
	counts := []int{1, 2, 4, 8}
	out := make([]providers.Offer, n)
	for i := range out {
		capacity, kind := providers.OnDemand, providers.VM
		if i%2 == 1 {
			capacity = providers.Spot
		}
		if i%3 == 0 {
			kind = providers.Container
		}
		count := counts[rng.IntN(len(counts))]
		out[i] = providers.Offer{Provider: providers.VastAI, InstanceType: fmt.Sprint(100000 + i/2), GPUType: gpus[rng.IntN(len(gpus))],
			GPUCount: count, Region: fmt.Sprintf("r%02d-west-1", rng.IntN(60)), ProviderRegion: fmt.Sprint(rng.IntN(60)),
			Capacity: capacity, HourlyPrice: float64(count) * (0.1 + rng.Float64()), Available: true,
			PriceSource: providers.PriceSourceAPI, Kind: kind}
	}
	return out
}

// BenchmarkOffersTable50k is what `gpu-operator offers` does once it has
// the catalog: rank 50,000 offers for one request and print the table.
func BenchmarkOffersTable50k(b *testing.B) {
	offers := marketplace(50_000)
	spec := tgpv1.GPURequestSpec{GPUType: "RTX4090", GPUCount: 1, SpotInstance: true, MaxSpotPrice: ptrTo(0.9), MaxPrice: ptrTo(1.2),
		RegionPreference: []string{"r01", "r02", "r03"}, RegionPolicy: tgpv1.RegionPolicyOrdered}
	req := specreq.RequestFromSpec(spec)
	for _, verbose := range []bool{false, true} {
		b.Run(fmt.Sprintf("verbose=%v", verbose), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				res := selector.Select(req, offers, selector.Unavailable{})
				if err := writeOffersTable(io.Discard, res, verbose, budgetVerdict{chosen: 0}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func ptrTo[T any](v T) *T { return &v }
