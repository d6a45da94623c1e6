package vastai

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/vastai/vastaiapi"
)

// Search types (the spec's searchOffers "type" enum).
const (
	searchOnDemand = vastaiapi.SearchOffersJSONBodyType("ondemand")
	searchBid      = vastaiapi.SearchOffersJSONBodyType("bid")
)

// Offers returns the marketplace as offers, in exactly two calls: one
// search of on-demand offers and one of interruptible (bid) offers (see
// SearchBody for the filters, NormalizeOffers for the rules). Either failing
// fails the refresh, so the catalog never holds one capacity type without
// the other.
func (a *Adapter) Offers(ctx context.Context) ([]providers.Offer, error) {
	const op = "Offers"
	var bodies [2][]byte
	for i, typ := range []vastaiapi.SearchOffersJSONBodyType{searchOnDemand, searchBid} {
		body, err := a.calls.Call(ctx, op, func(ctx context.Context) (*http.Response, error) {
			return a.api.SearchOffers(ctx, a.SearchBody(typ))
		})
		if err != nil {
			return nil, err
		}
		bodies[i] = body
	}
	offers, err := NormalizeOffers(bodies[0], bodies[1], a.cfg.Filters)
	if err != nil {
		return nil, a.calls.Wrap(op, err)
	}
	return offers, nil
}

// SearchBody is the search of one type: the adapter's filters (verified,
// rentable, not rented by the account, reliability, the GPU names of
// GPUTypes), allocated_storage of DiskGB (so dph_total prices the disk a
// launch asks for), the price order (dph_total for on-demand, min_bid for
// bids, cheapest first, then id) and SearchLimit.
func (a *Adapter) SearchBody(typ vastaiapi.SearchOffersJSONBodyType) vastaiapi.SearchOffersJSONRequestBody {
	f := a.cfg.Filters
	yes, no := true, false
	names := append([]string(nil), gpuNames...)
	order := "dph_total"
	if typ == searchBid {
		order = "min_bid"
	}
	body := vastaiapi.SearchOffersJSONRequestBody{
		Type:             &typ,
		Limit:            new(a.cfg.SearchLimit),
		AllocatedStorage: new(a.cfg.DiskGB),
		// The spec constrains order to exactly two [field, direction]
		// pairs (minItems and maxItems 2 on the list): price, then id, which
		// also makes ties deterministic.
		Order: &[][]string{{order, "asc"}, {"id", "asc"}},
		GpuName: &struct {
			In *[]string `json:"in,omitempty"`
		}{In: &names},
		Rented: &struct {
			Eq *bool `json:"eq,omitempty"`
		}{Eq: &no},
	}
	// The spec gives verified and rentable a default of {"eq": true}: to
	// lift them, the filter is sent empty ({}), which constrains nothing
	// (an ASSUMPTION about the server; the simulator works so).
	body.Verified = &struct {
		Eq *bool `json:"eq,omitempty"`
	}{}
	if !f.AllowUnverified {
		body.Verified.Eq = &yes
	}
	body.Rentable = &struct {
		Eq *bool `json:"eq,omitempty"`
	}{}
	if !f.IncludeUnrentable {
		body.Rentable.Eq = &yes
	}
	if f.MinReliability > 0 {
		body.Reliability = &map[string]any{"gte": f.MinReliability}
	}
	return body
}

// offerJSON is the part of a search result the adapter reads (the spec
// gives results as free-form objects; these fields are its example's).
// Numbers are read as float64 (an id or count that is not a whole number is
// skipped, not a decoding error that would fail the whole catalog); fields
// whose absence means something are pointers.
type offerJSON struct {
	ID          float64  `json:"id"`
	GPUName     string   `json:"gpu_name"`
	NumGPUs     float64  `json:"num_gpus"`
	GPURAM      float64  `json:"gpu_ram"`
	Geolocation string   `json:"geolocation"`
	DPHTotal    float64  `json:"dph_total"`
	MinBid      float64  `json:"min_bid"`
	Reliability *float64 `json:"reliability"`
	Rentable    *bool    `json:"rentable"`
	Verified    *string  `json:"verification"`
	VMsEnabled  bool     `json:"vms_enabled"`
}

// NormalizeOffers turns the answers of an on-demand and a bid search into
// offers. Rules:
//   - an offer's id must be a positive integer (it is the ask a create
//     takes), its gpu_name one of GPUTypes (with gpu_ram splitting A100 and
//     V100 by memory) and its num_gpus a positive count; others are skipped,
//     as are ids a search returns twice;
//   - Region maps its geolocation (never dropping one; an offer without
//     any is kept under zz-unknown-1) and ProviderRegion is the geolocation
//     as Vast.ai writes it;
//   - an on-demand result is an OnDemand offer at dph_total, a bid result a
//     Spot offer at min_bid; one without a positive, finite price is skipped;
//   - a host with vms_enabled is a VM offer (unless Filters.NoVMs), any
//     other a Container offer;
//   - hosts the search should not have returned (reliability below the
//     minimum, an unverified host, one not rentable) are dropped again
//     client-side, so a server that ignored a filter cannot slip them in;
//     with IncludeUnrentable a host not rentable is kept with Available
//     false, every other offer is Available.
func NormalizeOffers(ondemand, bid []byte, f Filters) ([]providers.Offer, error) {
	var out []providers.Offer
	regions := map[string]string{}
	for _, in := range []struct {
		body     []byte
		capacity providers.CapacityType
	}{{ondemand, providers.OnDemand}, {bid, providers.Spot}} {
		var resp struct {
			Offers []offerJSON `json:"offers"`
		}
		if err := json.Unmarshal(in.body, &resp); err != nil {
			return nil, fmt.Errorf("decoding the %s search: %w", in.capacity, err)
		}
		if out == nil {
			out = make([]providers.Offer, 0, len(resp.Offers)*2)
		}
		seen := make(map[string]bool, len(resp.Offers))
		for i := range resp.Offers {
			o, ok := normalizeOffer(&resp.Offers[i], in.capacity, f, regions)
			if !ok {
				continue
			}
			if seen[o.InstanceType] {
				continue
			}
			seen[o.InstanceType] = true
			out = append(out, o)
		}
	}
	return out, nil
}

func normalizeOffer(r *offerJSON, capacity providers.CapacityType, f Filters, regions map[string]string) (providers.Offer, bool) {
	id, count := r.ID, r.NumGPUs
	if !(id >= 1 && id <= 1<<53 && id == math.Trunc(id)) || !(count >= 1 && count <= 1024 && count == math.Trunc(count)) {
		return providers.Offer{}, false
	}
	gpu, ok := GPUType(r.GPUName, int(min(max(r.GPURAM, 0), 1<<30)))
	if !ok {
		return providers.Offer{}, false
	}
	price := r.DPHTotal
	if capacity == providers.Spot {
		price = r.MinBid
	}
	// Rounded to a millionth of a dollar, which also drops float noise; a
	// price that rounds to nothing, or overflows, is no offer.
	hourly := math.Round(price*1e6) / 1e6
	if !(hourly > 0) || math.IsInf(hourly, 0) {
		return providers.Offer{}, false
	}
	if f.MinReliability > 0 && r.Reliability != nil && *r.Reliability < f.MinReliability {
		return providers.Offer{}, false
	}
	if !f.AllowUnverified && r.Verified != nil && *r.Verified != "verified" {
		return providers.Offer{}, false
	}
	available := r.Rentable == nil || *r.Rentable
	if !available && !f.IncludeUnrentable {
		return providers.Offer{}, false
	}
	loc := strings.TrimSpace(r.Geolocation)
	region, ok := regions[loc]
	if !ok {
		region = Region(loc)
		regions[loc] = region
	}
	providerRegion := loc
	if providerRegion == "" {
		providerRegion = "unknown"
	}
	kind := providers.Container
	if r.VMsEnabled && !f.NoVMs {
		kind = providers.VM
	}
	return providers.Offer{
		Provider:       providers.VastAI,
		InstanceType:   strconv.FormatInt(int64(id), 10),
		GPUType:        gpu,
		GPUCount:       int(count),
		Region:         region,
		ProviderRegion: providerRegion,
		Capacity:       capacity,
		HourlyPrice:    hourly,
		Available:      available,
		PriceSource:    providers.PriceSourceAPI,
		Kind:           kind,
	}, true
}
