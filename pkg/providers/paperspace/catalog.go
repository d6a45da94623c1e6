package paperspace

import (
	"maps"
	"slices"
	"strings"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

// GPUModels maps the model part of a Paperspace machine type label (the label
// without its "x<N>" GPU-count suffix) to the canonical GPU type. Models with
// no canonical name (RTX4000, the CPU-only C* types, ...) are absent, and
// their machine types yield no offers.
var GPUModels = map[string]string{
	"A100-80G": "A100-80GB",
	"A100":     "A100",
	"H100":     "H100",
	"A6000":    "A6000",
	"A5000":    "A5000",
	"A4000":    "A4000",
	"V100-32G": "V100-32GB",
	"V100":     "V100",
	"P4000":    "P4000",
}

// Regions maps Paperspace's native regions to canonical regions.
var Regions = map[string]string{
	"ny2":  "us-east-1",
	"ca1":  "us-west-1",
	"ams1": "eu-west-1",
}

// nativeRegions are the keys of Regions, sorted.
var nativeRegions = slices.Sorted(maps.Keys(Regions))

// ParseMachineType splits a machine type label of the form <model>[x<N>]
// (A100-80G, A100-80Gx8, H100x8) into its canonical GPU type and GPU count.
// ok is false for labels whose model has no canonical name and for malformed
// counts (x0, x01, x-1).
func ParseMachineType(label string) (gpuType string, count int, ok bool) {
	model, count := label, 1
	if i := strings.LastIndexByte(label, 'x'); i > 0 {
		if n, valid := parseCount(label[i+1:]); valid {
			model, count = label[:i], n
		}
	}
	gpuType, ok = GPUModels[model]
	if !ok {
		return "", 0, false
	}
	return gpuType, count, true
}

// parseCount reads a GPU count: 1 to 64, decimal, no sign or leading zero.
func parseCount(s string) (int, bool) {
	if s == "" || len(s) > 2 || s[0] == '0' {
		return 0, false
	}
	n := 0
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, n <= 64
}

// Availability is one machine-availability answer: whether a machine type
// can be created in a native region right now.
type Availability struct {
	MachineType string
	Region      string
	Available   bool
}

// NormalizeOffers turns availability answers into on-demand offers (Paperspace
// sells no spot capacity) priced from the table, in input order. Answers for
// machine types with no canonical GPU or no price, and for unknown regions,
// are dropped.
func NormalizeOffers(prices *PriceTable, avail []Availability) []providers.Offer {
	offers := make([]providers.Offer, 0, len(avail))
	for _, a := range avail {
		gpu, count, ok := ParseMachineType(a.MachineType)
		if !ok {
			continue
		}
		region, ok := Regions[a.Region]
		if !ok {
			continue
		}
		usd, ok := prices.Price(a.MachineType)
		if !ok {
			continue
		}
		offers = append(offers, providers.Offer{
			Provider:       providers.Paperspace,
			InstanceType:   a.MachineType,
			GPUType:        gpu,
			GPUCount:       count,
			Region:         region,
			ProviderRegion: a.Region,
			Capacity:       providers.OnDemand,
			HourlyPrice:    usd,
			Available:      a.Available,
			PriceSource:    providers.PriceSourceStatic,
		})
	}
	return offers
}

// offerTypes are the priced machine types that map to a canonical GPU, sorted.
func offerTypes(prices *PriceTable) []string {
	var types []string
	for _, mt := range prices.MachineTypes() {
		if _, _, ok := ParseMachineType(mt); ok {
			types = append(types, mt)
		}
	}
	return types
}
