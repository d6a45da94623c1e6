package selector

import (
	"cmp"
	"math"
	"slices"
	"strings"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

// Index is one catalog prepared for selection whose cost does not grow with
// the number of offers. Offers are grouped by GPU type, then GPU count; each
// count group is cut into runs of offers that every rule but the price cap
// treats alike (same provider, capacity type, region, machine kind and
// provider-reported capacity), and each run is sorted by price. A decision
// then costs a binary search per run for the price cap, a lookup per
// unavailable offering and a merge of the runs' heads; offers of other GPU
// types and counts are only counted. An Index is immutable and safe for
// concurrent use.
type Index struct {
	total int
	// perProvider counts the catalog's offers by provider name.
	perProvider map[string]int
	byType      map[string]*typeGroup
}

// typeGroup holds every offer of one GPU type.
type typeGroup struct {
	size int
	// counts holds one group per GPU count, by ascending count.
	counts []countGroup
	// providers are the provider names in the group, perProvider[i] the
	// number of the group's offers from providers[i].
	providers   []string
	perProvider []int
	// regions are the canonical regions in the group.
	regions []string
	// kinds are the machine kinds (providers.KindOf) in the group.
	kinds []providers.MachineKind
}

// countGroup is every offer of one GPU type with one GPU count.
type countGroup struct {
	count int
	// entries are the offers ordered by run, then price, then the
	// contract's final tie-break (provider, offer id).
	entries []entry
	runs    []run
	// perProvider[i] is the number of offers from the type group's
	// providers[i].
	perProvider []int
	// byKey holds the positions in entries ordered by offering key, to find
	// the offers an unavailable offering names without a scan.
	byKey []int32
}

// run is the entries of a countGroup from one provider, capacity type,
// region and machine kind, with one provider-reported availability, sorted
// by price.
type run struct {
	start, end int32 // entries[start:end]
	provider   int32 // index into typeGroup.providers
	region     int32 // index into typeGroup.regions
	kind       int32 // index into typeGroup.kinds
	spot       bool
	available  bool
}

// entry is an offer with what Select needs precomputed.
type entry struct {
	offer providers.Offer
	// price is the offer's price with NaN as +Inf, so a NaN price ranks
	// last and fails every cap.
	price float64
	// ord is the offer's position in the contract's final tie-break
	// (provider, offer id) among the offers of its count group.
	ord int32
	run int32 // index into countGroup.runs
}

// NewIndex prepares a catalog for Select. It copies the offers; the slice may
// be reused afterwards.
func NewIndex(offers []providers.Offer) *Index {
	ix := &Index{
		total:       len(offers),
		perProvider: make(map[string]int),
		byType:      make(map[string]*typeGroup),
	}
	for i := range offers {
		ix.perProvider[offers[i].Provider]++
	}
	ids := make([]string, len(offers))
	for i := range offers {
		ids[i] = offers[i].ID()
	}
	order := make([]int32, len(offers))
	for i := range order {
		order[i] = int32(i)
	}
	slices.SortFunc(order, func(i, j int32) int {
		a, b := &offers[i], &offers[j]
		if c := strings.Compare(a.GPUType, b.GPUType); c != 0 {
			return c
		}
		if c := cmp.Compare(a.GPUCount, b.GPUCount); c != 0 {
			return c
		}
		return offerOrder(a, b, ids[i], ids[j])
	})
	// All groups share one array of entries and one of key positions.
	entries := make([]entry, len(offers))
	byKey := make([]int32, len(offers))
	for start := 0; start < len(order); {
		gpuType := offers[order[start]].GPUType
		end := start + 1
		for end < len(order) && offers[order[end]].GPUType == gpuType {
			end++
		}
		g := &typeGroup{size: end - start}
		g.fill(offers, order[start:end], entries[start:end:end], byKey[start:end:end])
		ix.byType[gpuType] = g
		start = end
	}
	return ix
}

// fill builds the group from the offers at order, which are of one GPU type
// and sorted by GPU count then offerOrder, into entries and byKey.
func (g *typeGroup) fill(offers []providers.Offer, order []int32, entries []entry, byKey []int32) {
	providerIDs := make(map[string]int32)
	regionIDs := make(map[string]int32)
	kindIDs := make(map[providers.MachineKind]int32)
	provider := make([]int32, len(order))
	region := make([]int32, len(order))
	kind := make([]int32, len(order))
	for i, oi := range order {
		o := &offers[oi]
		provider[i] = intern(providerIDs, &g.providers, o.Provider)
		region[i] = intern(regionIDs, &g.regions, o.Region)
		kind[i] = intern(kindIDs, &g.kinds, providers.KindOf(*o))
	}
	g.perProvider = make([]int, len(g.providers))
	for _, p := range provider {
		g.perProvider[p]++
	}
	for start := 0; start < len(order); {
		count := offers[order[start]].GPUCount
		end := start + 1
		for end < len(order) && offers[order[end]].GPUCount == count {
			end++
		}
		cg := countGroup{count: count, perProvider: make([]int, len(g.providers))}
		for _, p := range provider[start:end] {
			cg.perProvider[p]++
		}
		cg.fill(offers, order[start:end], provider[start:end], region[start:end], kind[start:end],
			entries[start:end:end], byKey[start:end:end])
		g.counts = append(g.counts, cg)
		start = end
	}
}

// fill sets the count group's entries, runs and byKey from the offers at
// order (sorted by offerOrder) with their interned provider, region and
// machine kind.
func (cg *countGroup) fill(offers []providers.Offer, order, provider, region, kind []int32, entries []entry, byKey []int32) {
	// runOf sorts the positions in order by run, then price, then order.
	price := func(o *providers.Offer) float64 {
		if math.IsNaN(o.HourlyPrice) {
			return math.Inf(1)
		}
		return o.HourlyPrice
	}
	byRun := make([]int32, len(order))
	for i := range byRun {
		byRun[i] = int32(i)
	}
	slices.SortFunc(byRun, func(i, j int32) int {
		a, b := &offers[order[i]], &offers[order[j]]
		return cmp.Or(
			cmp.Compare(provider[i], provider[j]),
			boolCompare(a.Capacity == providers.Spot, b.Capacity == providers.Spot),
			cmp.Compare(region[i], region[j]),
			cmp.Compare(kind[i], kind[j]),
			boolCompare(a.Available, b.Available),
			cmp.Compare(price(a), price(b)),
			cmp.Compare(i, j),
		)
	})
	for pos, i := range byRun {
		o := &offers[order[i]]
		r := run{
			provider:  provider[i],
			region:    region[i],
			kind:      kind[i],
			spot:      o.Capacity == providers.Spot,
			available: o.Available,
		}
		if n := len(cg.runs); n == 0 || !r.sameKey(&cg.runs[n-1]) {
			r.start = int32(pos)
			cg.runs = append(cg.runs, r)
		}
		cg.runs[len(cg.runs)-1].end = int32(pos) + 1
		entries[pos] = entry{offer: *o, price: price(o), ord: i, run: int32(len(cg.runs) - 1)}
	}
	cg.entries = entries
	for i := range byKey {
		byKey[i] = int32(i)
	}
	slices.SortFunc(byKey, func(i, j int32) int {
		return cmp.Or(compareKeys(entries[i].offer.Key(), entries[j].offer.Key()), cmp.Compare(i, j))
	})
	cg.byKey = byKey
}

func (r *run) sameKey(o *run) bool {
	return r.provider == o.provider && r.spot == o.spot && r.region == o.region && r.kind == o.kind &&
		r.available == o.available
}

// compareKeys orders offering keys field by field.
func compareKeys(a, b providers.OfferingKey) int {
	return cmp.Or(
		strings.Compare(a.Provider, b.Provider),
		strings.Compare(a.InstanceType, b.InstanceType),
		strings.Compare(a.Region, b.Region),
		strings.Compare(string(a.Capacity), string(b.Capacity)),
	)
}

// withKey returns the positions in cg.entries of the offers whose
// offering key is key.
func (cg *countGroup) withKey(key providers.OfferingKey) []int32 {
	cmpKey := func(pos int32, key providers.OfferingKey) int { return compareKeys(cg.entries[pos].offer.Key(), key) }
	lo, _ := slices.BinarySearchFunc(cg.byKey, key, cmpKey)
	hi := lo
	for hi < len(cg.byKey) && cmpKey(cg.byKey[hi], key) == 0 {
		hi++
	}
	return cg.byKey[lo:hi]
}

// intern returns the id of s in names, appending it when new.
func intern[T comparable](ids map[T]int32, names *[]T, s T) int32 {
	id, ok := ids[s]
	if !ok {
		id = int32(len(*names))
		ids[s] = id
		*names = append(*names, s)
	}
	return id
}

// offerOrder is the contract's final tie-break, provider name then offer id
// (idA and idB), extended over the remaining fields so that even duplicate
// ids order the same whatever the input order.
func offerOrder(a, b *providers.Offer, idA, idB string) int {
	if c := strings.Compare(a.Provider, b.Provider); c != 0 {
		return c
	}
	if c := strings.Compare(idA, idB); c != 0 {
		return c
	}
	return cmp.Or(
		cmp.Compare(a.HourlyPrice, b.HourlyPrice),
		strings.Compare(a.Region, b.Region),
		strings.Compare(string(a.PriceSource), string(b.PriceSource)),
		boolCompare(a.Available, b.Available),
		strings.Compare(string(providers.KindOf(*a)), string(providers.KindOf(*b))),
	)
}

func boolCompare(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	default:
		return -1
	}
}

// Len returns the number of offers in the catalog.
func (ix *Index) Len() int { return ix.total }
