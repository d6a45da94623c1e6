package runpod

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod/runpodv2"
)

// Offers returns RunPod's catalog as offers: for every mapped GPU type, data
// center and count in Config.GPUCounts (up to the type's secure-cloud
// maxCount), one on-demand offer and, when RunPod quotes a spot price for that
// count, one spot offer. It makes exactly two calls: the v2 catalog with
// availability for pods in the secure cloud, and one GraphQL query for the
// spot prices of every type and count.
func (a *Adapter) Offers(ctx context.Context) ([]providers.Offer, error) {
	const op = "Offers"
	catalog, err := a.calls.Call(ctx, op, func(ctx context.Context) (*http.Response, error) {
		return a.v2.ListGpuTypes(ctx, &runpodv2.ListGpuTypesParams{
			Include: &[]runpodv2.CatalogInclude{runpodv2.AVAILABILITY},
			Product: &[]runpodv2.Product{runpodv2.POD},
			Cloud:   new(runpodv2.SECURE),
		})
	})
	if err != nil {
		return nil, err
	}
	spot, err := a.calls.Call(ctx, op, func(ctx context.Context) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.graphql, bytes.NewReader(a.spotQuery))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		return a.calls.Do(req)
	})
	if err != nil {
		return nil, err
	}
	quotes, err := DecodeQuotes(spot)
	if err != nil {
		return nil, a.calls.Wrap(op, err)
	}
	offers, err := NormalizeOffers(catalog, quotes, a.cfg.GPUCounts)
	if err != nil {
		return nil, a.calls.Wrap(op, err)
	}
	return offers, nil
}

// quoteAlias is the GraphQL alias prefix of the lowestPrice field for one GPU
// count: count4 is lowestPrice(input: {gpuCount: 4}).
const quoteAlias = "count"

// spotQuery is the GraphQL request body asking, in one query, for the lowest
// spot bid and stock of every GPU type at every count. (lowestPrice also has
// uninterruptablePrice; the on-demand price comes from the v2 catalog.)
func spotQuery(counts []int) []byte {
	var b strings.Builder
	b.WriteString("query SpotPrices { gpuTypes { id")
	for _, n := range counts {
		fmt.Fprintf(&b, " %s%d: lowestPrice(input: {gpuCount: %d, secureCloud: true}) { minimumBidPrice stockStatus }", quoteAlias, n, n)
	}
	b.WriteString(" } }")
	body, _ := json.Marshal(map[string]string{"query": b.String()}) // cannot fail for a string map
	return body
}

// Quote is RunPod's lowest price for one GPU type at one GPU count.
type Quote struct {
	// SpotPerGPU is the minimum winning spot bid, USD/h per GPU; 0: none.
	SpotPerGPU float64
	// InStock reports whether RunPod has a machine free at this count
	// (stockStatus is set and not "None").
	InStock bool
}

// Quotes are the GraphQL lowestPrice answers: GPU type id -> GPU count ->
// quote. A type that is present but lacks a count had no lowestPrice at that
// count: no machine of that size can be rented now.
type Quotes map[string]map[int]Quote

// lowestPrice is GraphQL's LowestPrice, the fields the adapter asks for.
type lowestPrice struct {
	MinimumBidPrice *float64 `json:"minimumBidPrice"`
	StockStatus     *string  `json:"stockStatus"`
}

// DecodeQuotes decodes the GraphQL response to the spot query. GraphQL
// reports errors with HTTP 200 and an "errors" list; those come back as a
// classified *providers.Error.
func DecodeQuotes(body []byte) (Quotes, error) {
	var resp struct {
		graphQLErrors
		Data *struct {
			GPUTypes []map[string]json.RawMessage `json:"gpuTypes"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		return nil, fmt.Errorf("decoding GraphQL spot prices: %w", err)
	}
	if len(resp.Errors) > 0 {
		msg := resp.joined()
		if msg == "" {
			msg = "GraphQL error without a message"
		}
		return nil, classifyGraphQL("", truncate(strings.ToValidUTF8(msg, "\uFFFD"), maxMessage))
	}
	if resp.Data == nil {
		return nil, fmt.Errorf("GraphQL response has neither data nor errors")
	}
	quotes := make(Quotes, len(resp.Data.GPUTypes))
	for _, t := range resp.Data.GPUTypes {
		var id string
		if raw, ok := t["id"]; !ok || json.Unmarshal(raw, &id) != nil || id == "" {
			continue // unusable entry
		}
		counts := quotes[id]
		if counts == nil {
			counts = map[int]Quote{}
			quotes[id] = counts
		}
		for field, raw := range t {
			n, err := strconv.Atoi(strings.TrimPrefix(field, quoteAlias))
			if !strings.HasPrefix(field, quoteAlias) || err != nil || n < 1 {
				continue
			}
			var lp *lowestPrice
			if err := json.Unmarshal(raw, &lp); err != nil {
				return nil, fmt.Errorf("decoding GraphQL lowestPrice of %q at %d GPUs: %w", id, n, err)
			}
			if lp == nil {
				continue // null: nothing of that size
			}
			q := Quote{InStock: lp.StockStatus != nil && *lp.StockStatus != "" && !strings.EqualFold(*lp.StockStatus, "none")}
			if lp.MinimumBidPrice != nil && *lp.MinimumBidPrice > 0 && !math.IsInf(*lp.MinimumBidPrice, 0) {
				q.SpotPerGPU = *lp.MinimumBidPrice
			}
			counts[n] = q
		}
	}
	return quotes, nil
}

// NormalizeOffers turns a v2 /catalog/gpus response (requested with
// include=AVAILABILITY&product=POD&cloud=SECURE) and the spot quotes into
// offers. Rules:
//   - types not in GPUTypes, not sold in the secure cloud, or without
//     per-data-center availability are skipped, as are data centers not in
//     Regions;
//   - counts are those in counts up to the type's secure maxCount;
//   - prices are RunPod's per-GPU prices times the count (whole machine);
//     on-demand is the secure list price, spot the quoted minimum bid;
//   - Available is the data center's availability (LOW, MEDIUM or HIGH; NONE
//     or anything else is unavailable), and false for a count RunPod quotes
//     out of stock. The catalog's availability is for one GPU; the quote
//     refines it per count, for all data centers at once.
func NormalizeOffers(catalog []byte, quotes Quotes, counts []int) ([]providers.Offer, error) {
	var resp runpodv2.ListGpuTypesResponse
	if err := json.Unmarshal(catalog, &resp); err != nil {
		return nil, fmt.Errorf("decoding GPU catalog: %w", err)
	}
	// Two passes over the same walk: count, then fill an exact-size slice
	// (a large catalog yields hundreds of thousands of offers).
	n := 0
	walkOffers(&resp, quotes, counts, func(providers.Offer) { n++ })
	offers := make([]providers.Offer, 0, n)
	walkOffers(&resp, quotes, counts, func(o providers.Offer) { offers = append(offers, o) })
	return offers, nil
}

// walkOffers calls emit for every offer of the catalog, per NormalizeOffers.
func walkOffers(resp *runpodv2.ListGpuTypesResponse, quotes Quotes, counts []int, emit func(providers.Offer)) {
	for i := range resp.Gpus {
		g := &resp.Gpus[i]
		canonical, ok := GPUTypes[g.Id]
		if !ok || !g.Secure || g.DataCenters == nil {
			continue
		}
		typeQuotes, typeQuoted := quotes[g.Id]
		for _, n := range counts {
			if n < 1 || n > g.MaxCount.Secure {
				continue
			}
			q, countQuoted := typeQuotes[n]
			// Without any quote for the type, the catalog alone decides.
			inStock := !typeQuoted || (countQuoted && q.InStock)
			onDemand := machinePrice(g.Price.Secure, n)
			spot := machinePrice(q.SpotPerGPU, n)
			for _, dc := range *g.DataCenters {
				region, ok := Regions[dc.Id]
				if !ok {
					continue
				}
				o := providers.Offer{
					Provider:       providers.RunPod,
					InstanceType:   g.Id,
					GPUType:        canonical,
					GPUCount:       n,
					Region:         region,
					ProviderRegion: dc.Id,
					Available:      inStock && available(dc.Availability),
					PriceSource:    providers.PriceSourceAPI,
				}
				if onDemand > 0 {
					o.Capacity, o.HourlyPrice = providers.OnDemand, onDemand
					emit(o)
				}
				if spot > 0 {
					o.Capacity, o.HourlyPrice = providers.Spot, spot
					emit(o)
				}
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
