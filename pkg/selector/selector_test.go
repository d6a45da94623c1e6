package selector

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

const (
	spot     = providers.Spot
	onDemand = providers.OnDemand
)

// mk returns an available offer whose id is provider/gpu-<count>x/<region>/<capacity>.
func mk(provider, gpu string, count int, region string, capacity providers.CapacityType, price float64) providers.Offer {
	return providers.Offer{
		Provider:       provider,
		InstanceType:   gpu + "-" + strings.Repeat("x", count),
		GPUType:        gpu,
		GPUCount:       count,
		Region:         region,
		ProviderRegion: region,
		Capacity:       capacity,
		HourlyPrice:    price,
		Available:      true,
		PriceSource:    providers.PriceSourceAPI,
	}
}

func withInstanceType(o providers.Offer, instanceType string) providers.Offer {
	o.InstanceType = instanceType
	return o
}

func asContainer(o providers.Offer) providers.Offer {
	o.Kind = providers.Container
	return o
}

func soldOut(o providers.Offer) providers.Offer {
	o.Available = false
	return o
}

func ids(offers []providers.Offer) []string {
	var out []string
	for _, o := range offers {
		out = append(out, o.ID())
	}
	return out
}

func reasonsByID(rejected []Rejection) map[string]Reason {
	out := make(map[string]Reason, len(rejected))
	for _, r := range rejected {
		out[r.Offer.ID()] = r.Reason
	}
	return out
}

// Offers of the contract's examples.
var (
	rtxSpotWest2   = mk("runpod", "RTX4090", 1, "us-west-2", spot, 0.22)
	rtxSpotWest1   = mk("runpod", "RTX4090", 1, "us-west-1", spot, 0.30)
	rtxSpotEast    = mk("runpod", "RTX4090", 1, "us-east-1", spot, 0.10)
	rtxODWest1     = mk("lambdalabs", "RTX4090", 1, "us-west-1", onDemand, 0.45)
	rtxODWest1Dear = mk("paperspace", "RTX4090", 1, "us-west-1", onDemand, 0.60)
	a100West       = mk("lambdalabs", "A100", 1, "us-west-1", onDemand, 1.10)

	spotTrainingJob  = Request{GPUType: "RTX4090", GPUCount: 1, Regions: []string{"us-west"}, Spot: true, MaxSpotPrice: 0.25, MaxPrice: 0.50}
	multiGPUTraining = Request{GPUType: "A100", GPUCount: 4, Regions: []string{"us-east"}, MaxPrice: 10.0}
	regionAwareJob   = Request{GPUType: "H100", GPUCount: 1, Regions: []string{"us-west-1", "us-east-1", "eu-west-1"}, MaxPrice: 3.0, Spot: true}
)

func TestSelect(t *testing.T) {
	h100SpotWest := mk("runpod", "H100", 1, "us-west-1", spot, 2.50)
	h100SpotEast := mk("runpod", "H100", 1, "us-east-1", spot, 2.00)
	h100SpotEU := mk("lambdalabs", "H100", 1, "eu-west-1", spot, 1.00)
	h100ODWest := mk("lambdalabs", "H100", 1, "us-west-1", onDemand, 2.00)
	h100ODEast := mk("lambdalabs", "H100", 1, "us-east-1", onDemand, 1.50)
	h100SpotCentral := mk("runpod", "H100", 1, "us-central-1", spot, 0.50)

	tests := []struct {
		name         string
		req          Request
		offers       []providers.Offer
		unavailable  []providers.OfferingKey
		blocked      []string
		wantRanked   []string
		wantRejected map[string]Reason
		wantCounts   map[Reason]int
	}{
		{
			name:       "spot-training-job: spot under its cap beats on-demand",
			req:        spotTrainingJob,
			offers:     []providers.Offer{rtxODWest1, rtxSpotWest1, rtxODWest1Dear, rtxSpotWest2, rtxSpotEast, a100West},
			wantRanked: []string{rtxSpotWest2.ID(), rtxODWest1.ID()},
			wantRejected: map[string]Reason{
				rtxSpotWest1.ID():   OverSpotCap,
				rtxODWest1Dear.ID(): OverOnDemandCap,
				rtxSpotEast.ID():    RegionNotPreferred,
			},
			wantCounts: map[Reason]int{OverSpotCap: 1, OverOnDemandCap: 1, RegionNotPreferred: 1, WrongGPUType: 1},
		},
		{
			name:       "spot-training-job without spot offers: on-demand under maxPrice wins",
			req:        spotTrainingJob,
			offers:     []providers.Offer{rtxODWest1Dear, rtxODWest1},
			wantRanked: []string{rtxODWest1.ID()},
			wantRejected: map[string]Reason{
				rtxODWest1Dear.ID(): OverOnDemandCap,
			},
		},
		{
			name:   "spot-training-job with neither under its cap: no result",
			req:    spotTrainingJob,
			offers: []providers.Offer{rtxSpotWest1, rtxODWest1Dear, a100West},
			wantRejected: map[string]Reason{
				rtxSpotWest1.ID():   OverSpotCap,
				rtxODWest1Dear.ID(): OverOnDemandCap,
			},
			wantCounts: map[Reason]int{OverSpotCap: 1, OverOnDemandCap: 1, WrongGPUType: 1},
		},
		{
			name: "multi-gpu-training: exactly 4 A100 in us-east under 10.0",
			req:  multiGPUTraining,
			offers: []providers.Offer{
				mk("lambdalabs", "A100", 8, "us-east-1", onDemand, 9.00),
				mk("lambdalabs", "A100", 4, "us-east-2", onDemand, 12.00),
				mk("lambdalabs", "A100", 4, "us-east-1", onDemand, 8.00),
				mk("runpod", "A100", 4, "us-east-1", spot, 5.00),
				mk("runpod", "A100", 4, "us-west-1", onDemand, 7.00),
			},
			wantRanked: []string{"lambdalabs/A100-xxxx/us-east-1/on-demand"},
			wantRejected: map[string]Reason{
				"lambdalabs/A100-xxxxxxxx/us-east-1/on-demand": WrongGPUCount,
				"lambdalabs/A100-xxxx/us-east-2/on-demand":     OverOnDemandCap,
				"runpod/A100-xxxx/us-east-1/spot":              SpotNotRequested,
				"runpod/A100-xxxx/us-west-1/on-demand":         RegionNotPreferred,
			},
		},
		{
			name:       "region-aware-job Ordered: region position before price, spot before on-demand",
			req:        regionAwareJob,
			offers:     []providers.Offer{h100ODEast, h100SpotEU, h100SpotEast, h100ODWest, h100SpotWest, h100SpotCentral},
			wantRanked: []string{h100SpotWest.ID(), h100SpotEast.ID(), h100SpotEU.ID(), h100ODWest.ID(), h100ODEast.ID()},
			wantRejected: map[string]Reason{
				h100SpotCentral.ID(): RegionNotPreferred,
			},
		},
		{
			name: "region-aware-job LowestPrice: price before region position",
			req: func() Request {
				r := regionAwareJob
				r.Policy = LowestPrice
				return r
			}(),
			offers:     []providers.Offer{h100ODEast, h100SpotEU, h100SpotEast, h100ODWest, h100SpotWest, h100SpotCentral},
			wantRanked: []string{h100SpotEU.ID(), h100SpotEast.ID(), h100SpotWest.ID(), h100ODEast.ID(), h100ODWest.ID()},
			wantRejected: map[string]Reason{
				h100SpotCentral.ID(): RegionNotPreferred,
			},
		},
		{
			name: "LowestPrice: equal prices fall back to region position",
			req:  Request{GPUType: "H100", GPUCount: 1, Regions: []string{"us-east-1", "us-west-1"}, Policy: LowestPrice},
			offers: []providers.Offer{
				mk("aaa", "H100", 1, "us-west-1", onDemand, 2.00),
				mk("zzz", "H100", 1, "us-east-1", onDemand, 2.00),
			},
			wantRanked: []string{"zzz/H100-x/us-east-1/on-demand", "aaa/H100-x/us-west-1/on-demand"},
		},
		{
			name: "Ordered: equal regions fall back to price",
			req:  Request{GPUType: "H100", GPUCount: 1, Regions: []string{"us"}},
			offers: []providers.Offer{
				mk("aaa", "H100", 1, "us-west-1", onDemand, 2.50),
				mk("zzz", "H100", 1, "us-east-1", onDemand, 2.00),
			},
			wantRanked: []string{"zzz/H100-x/us-east-1/on-demand", "aaa/H100-x/us-west-1/on-demand"},
		},
		{
			name: "remaining ties: provider name, then offer id",
			req:  Request{GPUType: "H100", GPUCount: 1},
			offers: []providers.Offer{
				withInstanceType(mk("runpod", "H100", 1, "us-west-1", onDemand, 2.00), "b"),
				withInstanceType(mk("runpod", "H100", 1, "us-west-1", onDemand, 2.00), "a"),
				withInstanceType(mk("lambdalabs", "H100", 1, "us-west-1", onDemand, 2.00), "z"),
			},
			wantRanked: []string{"lambdalabs/z/us-west-1/on-demand", "runpod/a/us-west-1/on-demand", "runpod/b/us-west-1/on-demand"},
		},
		{
			name: "no regions: any region, ranked by price",
			req:  Request{GPUType: "H100", GPUCount: 1},
			offers: []providers.Offer{
				mk("runpod", "H100", 1, "eu-north-1", onDemand, 3.00),
				mk("runpod", "H100", 1, "ap-south-1", onDemand, 1.00),
			},
			wantRanked: []string{"runpod/H100-x/ap-south-1/on-demand", "runpod/H100-x/eu-north-1/on-demand"},
		},
		{
			name: "region prefix matches exactly or at a dash, never mid-word",
			req:  Request{GPUType: "H100", GPUCount: 1, Regions: []string{"us-west"}},
			offers: []providers.Offer{
				mk("runpod", "H100", 1, "us-west", onDemand, 1.00),
				mk("runpod", "H100", 1, "us-west-2", onDemand, 2.00),
				mk("runpod", "H100", 1, "us-westfoo", onDemand, 0.10),
				mk("runpod", "H100", 1, "us-wes", onDemand, 0.10),
				mk("runpod", "H100", 1, "xus-west-1", onDemand, 0.10),
			},
			wantRanked: []string{"runpod/H100-x/us-west/on-demand", "runpod/H100-x/us-west-2/on-demand"},
			wantRejected: map[string]Reason{
				"runpod/H100-x/us-westfoo/on-demand": RegionNotPreferred,
				"runpod/H100-x/us-wes/on-demand":     RegionNotPreferred,
				"runpod/H100-x/xus-west-1/on-demand": RegionNotPreferred,
			},
		},
		{
			name: "a region takes the position of the first entry it matches",
			req:  Request{GPUType: "H100", GPUCount: 1, Regions: []string{"eu", "us-west-1", "us"}},
			offers: []providers.Offer{
				mk("runpod", "H100", 1, "us-east-1", onDemand, 1.00),
				mk("runpod", "H100", 1, "us-west-1", onDemand, 3.00),
				mk("runpod", "H100", 1, "eu-west-1", onDemand, 5.00),
			},
			wantRanked: []string{"runpod/H100-x/eu-west-1/on-demand", "runpod/H100-x/us-west-1/on-demand", "runpod/H100-x/us-east-1/on-demand"},
		},
		{
			name: "spot without maxPrice: on-demand not allowed, spot uncapped",
			req:  Request{GPUType: "H100", GPUCount: 1, Spot: true},
			offers: []providers.Offer{
				mk("runpod", "H100", 1, "us-west-1", spot, 99.00),
				mk("runpod", "H100", 1, "us-west-1", onDemand, 0.01),
			},
			wantRanked:   []string{"runpod/H100-x/us-west-1/spot"},
			wantRejected: map[string]Reason{"runpod/H100-x/us-west-1/on-demand": OnDemandNotAllowed},
		},
		{
			name: "spot cap falls back to maxPrice, and a price equal to the cap is under it",
			req:  Request{GPUType: "H100", GPUCount: 1, Spot: true, MaxPrice: 3.00},
			offers: []providers.Offer{
				mk("runpod", "H100", 1, "us-west-1", spot, 3.00),
				mk("runpod", "H100", 1, "us-east-1", spot, 3.01),
				mk("runpod", "H100", 1, "us-west-1", onDemand, 3.00),
			},
			wantRanked: []string{"runpod/H100-x/us-west-1/spot", "runpod/H100-x/us-west-1/on-demand"},
			wantRejected: map[string]Reason{
				"runpod/H100-x/us-east-1/spot": OverSpotCap,
			},
		},
		{
			name: "maxSpotPrice caps spot, maxPrice caps on-demand",
			req:  Request{GPUType: "H100", GPUCount: 1, Spot: true, MaxSpotPrice: 1.00, MaxPrice: 3.00},
			offers: []providers.Offer{
				mk("runpod", "H100", 1, "us-west-1", spot, 1.50),
				mk("runpod", "H100", 1, "us-west-1", onDemand, 2.50),
			},
			wantRanked:   []string{"runpod/H100-x/us-west-1/on-demand"},
			wantRejected: map[string]Reason{"runpod/H100-x/us-west-1/spot": OverSpotCap},
		},
		{
			name: "no spot requested: spot offers lose, on-demand uncapped without maxPrice",
			req:  Request{GPUType: "H100", GPUCount: 1},
			offers: []providers.Offer{
				mk("runpod", "H100", 1, "us-west-1", spot, 0.10),
				mk("runpod", "H100", 1, "us-west-1", onDemand, 50.00),
			},
			wantRanked:   []string{"runpod/H100-x/us-west-1/on-demand"},
			wantRejected: map[string]Reason{"runpod/H100-x/us-west-1/spot": SpotNotRequested},
		},
		{
			name: "provider pin",
			req:  Request{GPUType: "H100", GPUCount: 1, Provider: "runpod"},
			offers: []providers.Offer{
				mk("lambdalabs", "H100", 1, "us-west-1", onDemand, 1.00),
				mk("lambdalabs", "H100", 2, "us-west-1", onDemand, 1.00),
				mk("runpod", "H100", 2, "us-west-1", onDemand, 1.00),
				mk("runpod", "H100", 1, "us-west-1", onDemand, 2.00),
				mk("runpod", "A100", 1, "us-west-1", onDemand, 1.00),
				mk("lambdalabs", "A100", 1, "us-west-1", onDemand, 1.00),
				mk("lambdalabs", "A100", 2, "us-west-1", onDemand, 1.00),
			},
			wantRanked: []string{"runpod/H100-x/us-west-1/on-demand"},
			wantRejected: map[string]Reason{
				"lambdalabs/H100-x/us-west-1/on-demand":  ProviderPinnedElsewhere,
				"lambdalabs/H100-xx/us-west-1/on-demand": ProviderPinnedElsewhere,
				"runpod/H100-xx/us-west-1/on-demand":     WrongGPUCount,
			},
			wantCounts: map[Reason]int{ProviderPinnedElsewhere: 4, WrongGPUCount: 1, WrongGPUType: 1},
		},
		{
			name: "pin to a provider with no offers of the type",
			req:  Request{GPUType: "H100", GPUCount: 1, Provider: "paperspace"},
			offers: []providers.Offer{
				mk("runpod", "H100", 1, "us-west-1", onDemand, 1.00),
				mk("paperspace", "A100", 1, "us-west-1", onDemand, 1.00),
			},
			wantRejected: map[string]Reason{"runpod/H100-x/us-west-1/on-demand": ProviderPinnedElsewhere},
			wantCounts:   map[Reason]int{ProviderPinnedElsewhere: 1, WrongGPUType: 1},
		},
		{
			name: "unavailable offerings and sold-out offers lose",
			req:  Request{GPUType: "H100", GPUCount: 1},
			offers: []providers.Offer{
				mk("runpod", "H100", 1, "us-west-1", onDemand, 1.00),
				mk("runpod", "H100", 1, "us-west-2", onDemand, 2.00),
				soldOut(mk("runpod", "H100", 1, "us-west-3", onDemand, 0.50)),
			},
			unavailable: []providers.OfferingKey{mk("runpod", "H100", 1, "us-west-1", onDemand, 1.00).Key()},
			wantRanked:  []string{"runpod/H100-x/us-west-2/on-demand"},
			wantRejected: map[string]Reason{
				"runpod/H100-x/us-west-1/on-demand": MarkedUnavailable,
				"runpod/H100-x/us-west-3/on-demand": NoCapacity,
			},
		},
		{
			name: "the first reason in checking order is reported",
			req:  Request{GPUType: "H100", GPUCount: 1, Regions: []string{"us-west"}, MaxPrice: 2.00, Provider: "runpod"},
			offers: []providers.Offer{
				soldOut(mk("lambdalabs", "H100", 2, "eu-west-1", spot, 9.00)),
				soldOut(mk("runpod", "H100", 2, "eu-west-1", spot, 9.00)),
				soldOut(mk("runpod", "H100", 1, "eu-west-1", spot, 9.00)),
				soldOut(mk("runpod", "H100", 1, "us-west-1", spot, 9.00)),
				soldOut(mk("runpod", "H100", 1, "us-west-1", onDemand, 9.00)),
				soldOut(mk("runpod", "H100", 1, "us-west-2", onDemand, 1.00)),
				soldOut(mk("runpod", "H100", 1, "us-west-3", onDemand, 1.00)),
			},
			unavailable: []providers.OfferingKey{
				mk("runpod", "H100", 1, "us-west-1", onDemand, 0).Key(),
				mk("runpod", "H100", 1, "us-west-2", onDemand, 0).Key(),
			},
			wantRejected: map[string]Reason{
				"lambdalabs/H100-xx/eu-west-1/spot": ProviderPinnedElsewhere,
				"runpod/H100-xx/eu-west-1/spot":     WrongGPUCount,
				"runpod/H100-x/eu-west-1/spot":      RegionNotPreferred,
				"runpod/H100-x/us-west-1/spot":      SpotNotRequested,
				"runpod/H100-x/us-west-1/on-demand": OverOnDemandCap,
				"runpod/H100-x/us-west-2/on-demand": MarkedUnavailable,
				"runpod/H100-x/us-west-3/on-demand": NoCapacity,
			},
		},
		{
			name: "container request: container offers rank, VM offers lose as WrongMachineKind",
			req:  Request{GPUType: "RTX4090", GPUCount: 1, Regions: []string{"us-west"}, MaxPrice: 1.00, Kind: providers.Container},
			offers: []providers.Offer{
				asContainer(withInstanceType(mk("runpod", "RTX4090", 1, "us-west-1", onDemand, 0.69), "pod")),
				withInstanceType(mk("runpod", "RTX4090", 1, "us-west-1", onDemand, 0.30), "vm"),
				asContainer(mk("vast", "RTX4090", 1, "us-west-2", onDemand, 0.40)),
				mk("lambdalabs", "RTX4090", 1, "us-west-1", onDemand, 0.20),
				asContainer(mk("vast", "RTX4090", 2, "us-west-2", onDemand, 0.80)),
				asContainer(mk("vast", "RTX4090", 1, "eu-west-1", onDemand, 0.10)),
			},
			wantRanked: []string{"vast/RTX4090-x/us-west-2/on-demand", "runpod/pod/us-west-1/on-demand"},
			wantRejected: map[string]Reason{
				"runpod/vm/us-west-1/on-demand":            WrongMachineKind,
				"lambdalabs/RTX4090-x/us-west-1/on-demand": WrongMachineKind,
				"vast/RTX4090-xx/us-west-2/on-demand":      WrongGPUCount,
				"vast/RTX4090-x/eu-west-1/on-demand":       RegionNotPreferred,
			},
			wantCounts: map[Reason]int{WrongMachineKind: 2, WrongGPUCount: 1, RegionNotPreferred: 1},
		},
		{
			name: "VM request (kind unset) where only container offers exist: no result",
			req:  Request{GPUType: "RTX4090", GPUCount: 1},
			offers: []providers.Offer{
				asContainer(mk("runpod", "RTX4090", 1, "us-west-1", onDemand, 0.69)),
				asContainer(mk("runpod", "RTX4090", 1, "us-east-1", spot, 0.34)),
				asContainer(a100West),
			},
			wantRejected: map[string]Reason{
				"runpod/RTX4090-x/us-west-1/on-demand": WrongMachineKind,
				"runpod/RTX4090-x/us-east-1/spot":      WrongMachineKind,
			},
			wantCounts: map[Reason]int{WrongMachineKind: 2, WrongGPUType: 1},
		},
		{
			name: "VM request: an offer without a kind is a VM",
			req:  Request{GPUType: "H100", GPUCount: 1, Kind: providers.VM},
			offers: []providers.Offer{
				mk("lambdalabs", "H100", 1, "us-west-1", onDemand, 2.50),
				func() providers.Offer {
					o := mk("paperspace", "H100", 1, "us-west-1", onDemand, 2.00)
					o.Kind = providers.VM
					return o
				}(),
				asContainer(mk("runpod", "H100", 1, "us-west-1", onDemand, 1.00)),
			},
			wantRanked:   []string{"paperspace/H100-x/us-west-1/on-demand", "lambdalabs/H100-x/us-west-1/on-demand"},
			wantRejected: map[string]Reason{"runpod/H100-x/us-west-1/on-demand": WrongMachineKind},
		},
		{
			name: "NoBootstrap excludes the cheapest provider; unknown names are ignored",
			req:  Request{GPUType: "H100", GPUCount: 1, Regions: []string{"us"}, NoBootstrap: []string{"paperspace", "nowhere", "paperspace"}},
			offers: []providers.Offer{
				mk("paperspace", "H100", 1, "us-east-1", onDemand, 1.50),
				mk("paperspace", "H100", 1, "us-west-1", onDemand, 1.80),
				mk("lambdalabs", "H100", 1, "us-west-1", onDemand, 2.50),
				mk("lambdalabs", "H100", 1, "us-east-1", onDemand, 2.00),
				mk("paperspace", "A100", 1, "us-east-1", onDemand, 1.00),
			},
			wantRanked: []string{"lambdalabs/H100-x/us-east-1/on-demand", "lambdalabs/H100-x/us-west-1/on-demand"},
			wantRejected: map[string]Reason{
				"paperspace/H100-x/us-east-1/on-demand": NoBootstrapForProvider,
				"paperspace/H100-x/us-west-1/on-demand": NoBootstrapForProvider,
			},
			wantCounts: map[Reason]int{NoBootstrapForProvider: 2, WrongGPUType: 1},
		},
		{
			name: "pinned to a provider without a bootstrap: its offers report NoBootstrapForProvider",
			req:  Request{GPUType: "H100", GPUCount: 1, Provider: "paperspace", NoBootstrap: []string{"paperspace"}},
			offers: []providers.Offer{
				mk("paperspace", "H100", 1, "us-east-1", onDemand, 1.50),
				soldOut(mk("paperspace", "H100", 1, "us-west-1", spot, 0.80)),
				mk("paperspace", "H100", 8, "us-east-1", onDemand, 12.00),
				mk("lambdalabs", "H100", 1, "us-west-1", onDemand, 2.50),
				mk("paperspace", "A100", 1, "us-east-1", onDemand, 1.00),
			},
			wantRejected: map[string]Reason{
				"paperspace/H100-x/us-east-1/on-demand":        NoBootstrapForProvider,
				"paperspace/H100-x/us-west-1/spot":             NoBootstrapForProvider,
				"paperspace/H100-xxxxxxxx/us-east-1/on-demand": WrongGPUCount,
				"lambdalabs/H100-x/us-west-1/on-demand":        ProviderPinnedElsewhere,
			},
			wantCounts: map[Reason]int{NoBootstrapForProvider: 2, WrongGPUCount: 1, ProviderPinnedElsewhere: 1, WrongGPUType: 1},
		},
		{
			name: "machine kind is checked after the GPU count, the bootstrap after the kind, both before the region",
			req:  Request{GPUType: "H100", GPUCount: 1, Regions: []string{"us-west"}, Kind: providers.Container, NoBootstrap: []string{"runpod"}},
			offers: []providers.Offer{
				mk("runpod", "H100", 2, "eu-west-1", spot, 9.00),
				mk("runpod", "H100", 1, "eu-west-1", spot, 9.00),
				asContainer(withInstanceType(mk("runpod", "H100", 1, "eu-west-1", spot, 9.00), "pod")),
				asContainer(mk("vast", "H100", 1, "eu-west-1", spot, 9.00)),
				asContainer(mk("vast", "H100", 1, "us-west-1", onDemand, 9.00)),
			},
			wantRanked: []string{"vast/H100-x/us-west-1/on-demand"},
			wantRejected: map[string]Reason{
				"runpod/H100-xx/eu-west-1/spot": WrongGPUCount,
				"runpod/H100-x/eu-west-1/spot":  WrongMachineKind,
				"runpod/pod/eu-west-1/spot":     NoBootstrapForProvider,
				"vast/H100-x/eu-west-1/spot":    RegionNotPreferred,
			},
		},
		{
			name:       "a GPU type missing from the catalog: everything counted, nothing listed",
			req:        Request{GPUType: "B200", GPUCount: 8},
			offers:     []providers.Offer{a100West, rtxODWest1},
			wantCounts: map[Reason]int{WrongGPUType: 2},
		},
		{
			name: "empty catalog",
			req:  Request{GPUType: "B200", GPUCount: 8},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := Select(tt.req, tt.offers, Unavailable{Offerings: tt.unavailable, Providers: tt.blocked})
			if diff := cmp.Diff(tt.wantRanked, ids(res.RankedOffers())); diff != "" {
				t.Errorf("Ranked (-want +got):\n%s", diff)
			}
			if tt.wantRejected == nil {
				tt.wantRejected = map[string]Reason{}
			}
			if diff := cmp.Diff(tt.wantRejected, reasonsByID(res.Rejected())); diff != "" {
				t.Errorf("Rejected (-want +got):\n%s", diff)
			}
			if res.Considered != len(tt.offers) {
				t.Errorf("Considered = %d, want %d", res.Considered, len(tt.offers))
			}
			if tt.wantCounts != nil {
				if diff := cmp.Diff(tt.wantCounts, res.Counts); diff != "" {
					t.Errorf("Counts (-want +got):\n%s", diff)
				}
			}
			best, ok := res.Best()
			if ok != (len(tt.wantRanked) > 0) || ok && best.ID() != tt.wantRanked[0] {
				t.Errorf("Best() = %s, %v; want the first of %v", best.ID(), ok, tt.wantRanked)
			}
		})
	}
}

func TestSelectRejectionOrderAndDetails(t *testing.T) {
	req := Request{GPUType: "A100", GPUCount: 4, Regions: []string{"us-east"}, MaxPrice: 2.00, Spot: true, MaxSpotPrice: 1.00}
	offers := []providers.Offer{
		mk("runpod", "A100", 4, "us-east-1", onDemand, 2.10),
		mk("runpod", "A100", 4, "us-east-1", spot, 1.225),
		mk("lambdalabs", "A100", 8, "us-east-1", onDemand, 1.00),
		mk("lambdalabs", "A100", 4, "eu-west-1", onDemand, 1.00),
		mk("runpod", "A100", 2, "us-east-1", onDemand, 1.00),
		mk("lambdalabs", "A100", 4, "us-east-1", onDemand, 1.00),
	}
	res := Select(req, offers, Unavailable{})
	type rejection struct{ ID, Reason, Detail string }
	var got []rejection
	for _, r := range res.Rejected() {
		got = append(got, rejection{r.Offer.ID(), string(r.Reason), r.Detail})
	}
	want := []rejection{
		{"runpod/A100-xx/us-east-1/on-demand", "WrongGPUCount", "has 2 GPUs"},
		{"lambdalabs/A100-xxxx/eu-west-1/on-demand", "RegionNotPreferred", "region eu-west-1 not requested"},
		{"runpod/A100-xxxx/us-east-1/on-demand", "OverOnDemandCap", "2.10 > cap 2.00"},
		{"runpod/A100-xxxx/us-east-1/spot", "OverSpotCap", "1.225 > cap 1.00"},
		{"lambdalabs/A100-xxxxxxxx/us-east-1/on-demand", "WrongGPUCount", "has 8 GPUs"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Rejected (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(offers[5:], res.RankedOffers()); diff != "" {
		t.Errorf("Ranked (-want +got):\n%s", diff)
	}
}

func TestSelectDetails(t *testing.T) {
	tests := []struct {
		req   Request
		offer providers.Offer
		want  string
	}{
		{Request{GPUType: "H100", GPUCount: 1, Provider: "runpod"}, mk("lambdalabs", "H100", 1, "us-west-1", onDemand, 1), "pinned to runpod"},
		{Request{GPUType: "H100", GPUCount: 1, Provider: "runpod"}, mk("lambdalabs", "H100", 2, "us-west-1", onDemand, 1), "pinned to runpod"},
		{Request{GPUType: "H100", GPUCount: 1}, mk("runpod", "H100", 1, "us-west-1", spot, 1), "spot offer, spot not requested"},
		{Request{GPUType: "H100", GPUCount: 1, Spot: true}, mk("runpod", "H100", 1, "us-west-1", onDemand, 1), "spot requested without maxPrice for an on-demand fallback"},
		{Request{GPUType: "H100", GPUCount: 1, MaxPrice: 2}, mk("runpod", "H100", 1, "us-west-1", onDemand, 20), "20.00 > cap 2.00"},
		{Request{GPUType: "H100", GPUCount: 1}, soldOut(mk("runpod", "H100", 1, "us-west-1", onDemand, 1)), "provider reports no capacity"},
		{Request{GPUType: "H100", GPUCount: 1}, asContainer(mk("runpod", "H100", 1, "us-west-1", onDemand, 1)), "container offer, vm requested"},
		{Request{GPUType: "H100", GPUCount: 1, Kind: providers.Container}, mk("lambdalabs", "H100", 1, "us-west-1", onDemand, 1), "vm offer, container requested"},
		{Request{GPUType: "H100", GPUCount: 1, NoBootstrap: []string{"paperspace"}}, mk("paperspace", "H100", 1, "us-west-1", onDemand, 1), "no bootstrap for provider paperspace"},
	}
	for _, tt := range tests {
		res := Select(tt.req, []providers.Offer{tt.offer}, Unavailable{})
		if rejected := res.Rejected(); len(rejected) != 1 || rejected[0].Detail != tt.want {
			t.Errorf("Select(%+v, %s).Rejected() = %+v, want one with detail %q", tt.req, tt.offer.ID(), rejected, tt.want)
		}
	}
	offer := mk("runpod", "H100", 1, "us-west-1", onDemand, 1)
	res := Select(Request{GPUType: "H100", GPUCount: 1}, []providers.Offer{offer}, Unavailable{Offerings: []providers.OfferingKey{offer.Key()}})
	if diff := cmp.Diff([]Rejection{{Offer: offer, Reason: MarkedUnavailable, Detail: "recently failed to launch, marked unavailable"}}, res.Rejected()); diff != "" {
		t.Errorf("Rejected (-want +got):\n%s", diff)
	}
	res = Select(Request{GPUType: "H100", GPUCount: 1}, []providers.Offer{offer}, Unavailable{Providers: []string{"runpod"}})
	if diff := cmp.Diff([]Rejection{{Offer: offer, Reason: MarkedUnavailable, Detail: "provider unavailable, e.g. rejecting the credentials"}}, res.Rejected()); diff != "" {
		t.Errorf("Rejected with the provider blocked (-want +got):\n%s", diff)
	}
}

func TestIndexReuse(t *testing.T) {
	offers := []providers.Offer{rtxSpotWest2, rtxODWest1, a100West}
	ix := NewIndex(offers)
	offers[0] = a100West // the index keeps its own copy
	if ix.Len() != 3 {
		t.Errorf("Len() = %d, want 3", ix.Len())
	}
	for range 2 {
		best, ok := ix.Select(spotTrainingJob, Unavailable{}).Best()
		if !ok || best != rtxSpotWest2 {
			t.Errorf("Best() = %s, %v; want %s", best.ID(), ok, rtxSpotWest2.ID())
		}
	}
	if best, ok := ix.Select(Request{GPUType: "A100", GPUCount: 1}, Unavailable{}).Best(); !ok || best != a100West {
		t.Errorf("Best() = %s, %v; want %s", best.ID(), ok, a100West.ID())
	}

	// A Result reads the unavailable offerings once, and what it returns
	// belongs to the caller: modifying either changes no later answer.
	req := Request{GPUType: "RTX4090", GPUCount: 1, Spot: true, MaxPrice: 0.50}
	unavailable := Unavailable{Offerings: []providers.OfferingKey{rtxODWest1.Key()}}
	first := ix.Select(req, unavailable)
	want := observe(ix.Select(req, unavailable))
	unavailable.Offerings[0] = rtxSpotWest2.Key()
	for _, s := range [][]Rejection{first.Rejected(), want.Rejected} {
		clear(s)
	}
	clear(first.RankedOffers())
	want = observe(ix.Select(req, Unavailable{Offerings: []providers.OfferingKey{rtxODWest1.Key()}}))
	if diff := cmp.Diff(want, observe(first)); diff != "" {
		t.Errorf("a Result after its inputs and outputs were modified (-want +got):\n%s", diff)
	}
	if len(want.Ranked) != 1 || want.Ranked[0] != rtxSpotWest2 || want.Counts[MarkedUnavailable] != 1 {
		t.Errorf("Select(%+v) = %+v, want %s ranked and one offer marked unavailable", req, want, rtxSpotWest2.ID())
	}
}

func TestValidate(t *testing.T) {
	valid := Request{GPUType: "A100", GPUCount: 1}
	tests := []struct {
		name    string
		mutate  func(*Request)
		wantErr string
	}{
		{"valid", func(*Request) {}, ""},
		{"valid with everything", func(r *Request) {
			*r = Request{GPUType: "H100", GPUCount: 8, Regions: []string{"us"}, Policy: LowestPrice, Spot: true, MaxSpotPrice: 1, MaxPrice: 2,
				Provider: "runpod", Kind: providers.Container, NoBootstrap: []string{"paperspace"}}
		}, ""},
		{"valid VM kind", func(r *Request) { r.Kind = providers.VM }, ""},
		{"unknown kind", func(r *Request) { r.Kind = "Container" }, `unknown machine kind "Container"`},
		{"empty type", func(r *Request) { r.GPUType = "" }, "gpuType must not be empty"},
		{"zero count", func(r *Request) { r.GPUCount = 0 }, "gpuCount must be at least 1, got 0"},
		{"negative count", func(r *Request) { r.GPUCount = -2 }, "gpuCount must be at least 1, got -2"},
		{"unknown policy", func(r *Request) { r.Policy = "Cheapest" }, `unknown region policy "Cheapest"`},
		{"negative maxPrice", func(r *Request) { r.MaxPrice = -1 }, "maxPrice must not be negative"},
		{"negative maxSpotPrice", func(r *Request) { r.MaxSpotPrice = -1 }, "maxSpotPrice must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := valid
			tt.mutate(&r)
			err := r.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Errorf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestSummary(t *testing.T) {
	chosen := mk("runpod", "RTX4090", 1, "us-west-2", spot, 0.22)
	chosen.InstanceType, chosen.ProviderRegion = "NVIDIA RTX 4090", "US-CA-2"
	catalog := []providers.Offer{chosen, mk("runpod", "RTX4090", 1, "us-west-1", spot, 0.30), mk("runpod", "RTX4090", 1, "us-west-3", spot, 0.40)}
	catalog = append(catalog, mk("runpod", "RTX4090", 1, "eu-west-1", spot, 0.20))
	for i := range 9 {
		catalog = append(catalog, withInstanceType(a100West, fmt.Sprint(i)))
	}
	won := Select(spotTrainingJob, catalog, Unavailable{})
	lost := Select(Request{GPUType: "RTX4090", GPUCount: 1, Spot: true, MaxSpotPrice: 0.10, MaxPrice: 0.20, Regions: []string{"us-west"}},
		append(slices.Delete(slices.Clone(catalog), 2, 3), mk("lambdalabs", "RTX4090", 1, "us-west-1", onDemand, 0.45), mk("paperspace", "RTX4090", 1, "us-west-2", onDemand, 0.50)),
		Unavailable{})
	// A VM request with a cloud-init bootstrap: RunPod's pods and
	// Paperspace's VMs cannot serve it.
	wrongMachine := Select(Request{GPUType: "RTX4090", GPUCount: 1, NoBootstrap: []string{"paperspace"}},
		[]providers.Offer{asContainer(chosen), asContainer(rtxSpotEast), rtxODWest1Dear}, Unavailable{})
	tests := []struct {
		name   string
		res    Result
		maxLen int
		want   string
	}{
		{"chosen", won, 0, "chose runpod/NVIDIA RTX 4090/US-CA-2 spot at $0.22/h; 13 offers considered: 9 WrongGPUType, 2 OverSpotCap, 1 RegionNotPreferred"},
		{"none eligible, equal counts in checking order", lost, 200, "no eligible offer among 14 for RTX4090 x1: 9 WrongGPUType, 2 OverSpotCap, 2 OverOnDemandCap, 1 RegionNotPreferred"},
		{"exactly maxLen", lost, 113, "no eligible offer among 14 for RTX4090 x1: 9 WrongGPUType, 2 OverSpotCap, 2 OverOnDemandCap, 1 RegionNotPreferred"},
		{"drops whole reasons", lost, 112, "no eligible offer among 14 for RTX4090 x1: 9 WrongGPUType, 2 OverSpotCap, 2 OverOnDemandCap, ..."},
		{"drops every reason", lost, 60, "no eligible offer among 14 for RTX4090 x1: ..."},
		{"cuts the head", lost, 20, "no eligible offer..."},
		{"tiny", lost, 2, "no"},
		{"nothing considered", Result{Request: Request{GPUType: "B200", GPUCount: 8}}, 0, "no eligible offer among 0 for B200 x8"},
		{"head only when it fits without reasons", lost, 45, "no eligible offer among 14 for RTX4090 x1"},
		{"machine kind and bootstrap reasons", wrongMachine, 0, "no eligible offer among 3 for RTX4090 x1: 2 WrongMachineKind, 1 NoBootstrapForProvider"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.res.Summary(tt.maxLen)
			if got != tt.want {
				t.Errorf("Summary(%d) = %q, want %q", tt.maxLen, got, tt.want)
			}
			if tt.maxLen > 0 && len(got) > tt.maxLen {
				t.Errorf("Summary(%d) is %d bytes long", tt.maxLen, len(got))
			}
		})
	}
}

func TestSummaryCutsAtRuneBoundary(t *testing.T) {
	res := Result{Request: Request{GPUType: "RTX4090™™™", GPUCount: 1}}
	for maxLen := 1; maxLen < 60; maxLen++ {
		got := res.Summary(maxLen)
		if len(got) > maxLen || !strings.HasPrefix(res.Summary(0), strings.TrimSuffix(got, "...")) {
			t.Errorf("Summary(%d) = %q, not a prefix of the full summary within the limit", maxLen, got)
		}
	}
}

func TestSelectManyTies(t *testing.T) {
	var offers, want []providers.Offer
	for i := range 60 {
		offers = append(offers, withInstanceType(mk("runpod", "H100", 1, "us-west-1", onDemand, float64(3-i%3)), fmt.Sprintf("t%02d", 59-i)))
	}
	for price := 1; price <= 3; price++ {
		for i := range 60 {
			if o := offers[59-i]; o.HourlyPrice == float64(price) {
				want = append(want, o)
			}
		}
	}
	if diff := cmp.Diff(ids(want), ids(Select(Request{GPUType: "H100", GPUCount: 1}, offers, Unavailable{}).RankedOffers())); diff != "" {
		t.Errorf("Ranked (-want +got):\n%s", diff)
	}
}
