package runpod

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod/runpodv2"
)

// maxGPUCount bounds the counts offered per type, whatever maxCount says
// (the API's gpuCount is 1..16: ../shared/DESIGN.md).
const maxGPUCount = 16

// Offers returns RunPod's catalog for the adapter's cloud as offers, in one
// call: GET /v2/catalog/gpus?include=AVAILABILITY&product=POD&cloud=<Cloud>
// (listGpuTypes), which gives per GPU type the list price of one GPU per
// cloud, the largest pod per cloud (maxCount) and, with include=AVAILABILITY,
// the stock per data center for pods. See NormalizeOffers.
func (a *Adapter) Offers(ctx context.Context) ([]providers.Offer, error) {
	const op = "Offers"
	body, err := a.calls.Call(ctx, op, func(ctx context.Context) (*http.Response, error) {
		return a.api.ListGpuTypes(ctx, &runpodv2.ListGpuTypesParams{
			Include: &runpodv2.CatalogIncludeParam{runpodv2.AVAILABILITY},
			Product: &runpodv2.GpuProductFilter{runpodv2.POD},
			Cloud:   new(runpodv2.GpuCloudFilter(a.cfg.Cloud)),
		})
	})
	if err != nil {
		return nil, err
	}
	offers, err := NormalizeOffers(body, a.cfg.Cloud)
	if err != nil {
		return nil, a.calls.Wrap(op, err)
	}
	return offers, nil
}

// NormalizeOffers turns a /v2/catalog/gpus answer (asked for with
// include=AVAILABILITY&product=POD&cloud=<cloud>) into offers. Rules:
//   - types not in GPUTypes, not sold in the cloud (GpuType.secure or
//     .community false), or without per-data-center availability (the
//     catalog omits dataCenters when the type is unavailable everywhere)
//     are skipped, as are data centers not in Regions;
//   - every count from 1 to the type's maxCount in the cloud (at most 16)
//     is offered: RunPod rents any number of GPUs up to the largest machine;
//   - the price is the cloud's list price of one GPU times the count, the
//     whole machine's USD/h, as the spec's GpuType.price says ("the rate for
//     a unit is the figure times gpu.count"); a type without a positive
//     price is skipped;
//   - every offer is on-demand (RunPod sells no spot) and a container;
//   - Available is the data center's availability (LOW, MEDIUM or HIGH;
//     NONE or anything else is unavailable). The catalog is read for pods of
//     one GPU (count defaults to 1): a larger count is offered as available
//     where one GPU is, an optimistic reading that one catalog call per
//     refresh buys; a create that then finds no room is ClassCapacity and
//     marks the offering unavailable.
func NormalizeOffers(catalog []byte, cloud Cloud) ([]providers.Offer, error) {
	var resp runpodv2.ListGpuTypesResponse
	if err := json.Unmarshal(catalog, &resp); err != nil {
		return nil, fmt.Errorf("decoding GPU catalog: %w", err)
	}
	// Two passes over the same walk: count, then fill an exact-size slice
	// (a large catalog yields hundreds of thousands of offers).
	n := 0
	walkOffers(&resp, cloud, func(providers.Offer) { n++ })
	offers := make([]providers.Offer, 0, n)
	walkOffers(&resp, cloud, func(o providers.Offer) { offers = append(offers, o) })
	return offers, nil
}

// walkOffers calls emit for every offer of the catalog, per NormalizeOffers.
func walkOffers(resp *runpodv2.ListGpuTypesResponse, cloud Cloud, emit func(providers.Offer)) {
	for i := range resp.Gpus {
		g := &resp.Gpus[i]
		canonical, ok := GPUTypes[g.Id]
		if !ok || g.DataCenters == nil {
			continue
		}
		sold, perGPU, maxCount := g.Secure, g.Price.Secure, g.MaxCount.Secure
		if cloud == CommunityCloud {
			sold, perGPU, maxCount = g.Community, g.Price.Community, g.MaxCount.Community
		}
		if !sold {
			continue
		}
		for n := 1; n <= min(maxCount, maxGPUCount); n++ {
			price := machinePrice(perGPU, n)
			if price == 0 {
				break
			}
			for _, dc := range *g.DataCenters {
				region, ok := Regions[dc.Id]
				if !ok {
					continue
				}
				emit(providers.Offer{
					Provider:       providers.RunPod,
					InstanceType:   g.Id,
					GPUType:        canonical,
					GPUCount:       n,
					Region:         region,
					ProviderRegion: dc.Id,
					Capacity:       providers.OnDemand,
					HourlyPrice:    price,
					Available:      available(dc.Availability),
					PriceSource:    providers.PriceSourceAPI,
					Kind:           providers.Container,
				})
			}
		}
	}
}

// available reports whether a catalog availability level means "some free".
func available(l runpodv2.AvailabilityLevel) bool {
	switch l {
	case runpodv2.LOW, runpodv2.MEDIUM, runpodv2.HIGH:
		return true
	}
	return false
}

// machinePrice is the whole-machine USD/h of n GPUs at perGPU each, rounded
// to a millionth of a dollar to drop float noise (0.44*3 = 1.32, not
// 1.3200000000000003). Non-positive, NaN or infinite prices yield 0: no offer.
func machinePrice(perGPU float64, n int) float64 {
	p := math.Round(perGPU*float64(n)*1e6) / 1e6
	if !(p > 0) || math.IsInf(p, 0) {
		return 0
	}
	return p
}
