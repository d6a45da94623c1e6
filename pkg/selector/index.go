package selector

import (
	"cmp"
	"hash/maphash"
	"math"
	"slices"
	"strings"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

// Index is one catalog prepared for selection whose cost does not grow with
// the number of offers, of instance types or of runs. Offers are grouped by
// GPU type, then GPU count; each count group is cut into runs of offers that
// every rule but the price cap treats alike (same machine kind, region,
// capacity type, provider and provider-reported capacity), and each run is
// sorted by price. Runs are ordered by machine kind and region, so the runs
// of one kind in one region are a contiguous cell, and the group keeps its
// offers' totals by provider and machine kind. A decision then visits only
// the cells of the requested kind in the preferred regions, costing a
// binary search for the price cap in each run there that the request
// admits, a hashed lookup per unavailable offering and a merge of the
// admitted runs' heads; offers of other GPU types, counts, machine kinds,
// providers and regions are only counted, from the totals. The instance
// type (on a marketplace, one per host) is in no run's key, so any number
// of them changes nothing but the lookups' hashes. An Index is immutable and
// safe for concurrent use.
type Index struct {
	total int
	// perProvider counts the catalog's offers by provider name.
	perProvider map[string]int
	byType      map[string]*typeGroup
	// seed hashes offering keys (hashKey).
	seed maphash.Seed
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
	// regions are the canonical regions in the group, regionsByName their
	// ids in the order of their names.
	regions       []string
	regionsByName []int32
	// kinds are the machine kinds (providers.KindOf) in the group.
	kinds []providers.MachineKind
}

// countGroup is every offer of one GPU type with one GPU count.
type countGroup struct {
	count int
	// entries are the offers ordered by run, then price, then the
	// contract's final tie-break (provider, offer id).
	entries []entry
	// runs are ordered by machine kind, region, capacity type, provider,
	// then availability.
	runs []run
	// cells are the runs of one machine kind in one region, by ascending
	// kind then region, each ending where the next starts.
	cells []cell
	// perProvider[i] is the number of offers from the type group's
	// providers[i]; perKindProvider[k*P+i], for P providers, the number of
	// those of machine kind k.
	perProvider     []int
	perKindProvider []int
	// byKey holds the positions in entries ordered by the hash of their
	// offering key (hashKey), keyHash the hashes in the same order, to find
	// the offers an unavailable offering names without a scan.
	byKey   []int32
	keyHash []uint64
}

// cell is where the runs of one machine kind k in one region r of a count
// group start.
type cell struct {
	key   int32 // k*R+r, for R regions in the type group
	start int32 // index into countGroup.runs
}

// run is the entries of a countGroup of one machine kind, region, capacity
// type and provider, with one provider-reported availability, sorted by
// price.
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
		seed:        maphash.MakeSeed(),
	}
	ids := make([]string, len(offers))
	// typeIDs numbers the GPU types in the order of their names, so the
	// sort below compares numbers.
	typeIDs := make(map[string]int32)
	var typeNames []string
	for i := range offers {
		ix.perProvider[offers[i].Provider]++
		ids[i] = offers[i].ID()
		intern(typeIDs, &typeNames, offers[i].GPUType)
	}
	slices.Sort(typeNames)
	for i, name := range typeNames {
		typeIDs[name] = int32(i)
	}
	typeOf := make([]int32, len(offers))
	order := make([]int32, len(offers))
	for i := range order {
		typeOf[i], order[i] = typeIDs[offers[i].GPUType], int32(i)
	}
	slices.SortFunc(order, func(i, j int32) int {
		a, b := &offers[i], &offers[j]
		if c := cmp.Compare(typeOf[i], typeOf[j]); c != 0 {
			return c
		}
		if c := cmp.Compare(a.GPUCount, b.GPUCount); c != 0 {
			return c
		}
		return offerOrder(a, b, ids[i], ids[j])
	})
	// All groups share one array of entries and one each of key positions
	// and hashes.
	entries := make([]entry, len(offers))
	byKey := make([]int32, len(offers))
	keyHash := make([]uint64, len(offers))
	for start := 0; start < len(order); {
		gpuType := offers[order[start]].GPUType
		end := start + 1
		for end < len(order) && offers[order[end]].GPUType == gpuType {
			end++
		}
		g := &typeGroup{size: end - start}
		g.fill(ix.seed, offers, order[start:end], entries[start:end:end], byKey[start:end:end], keyHash[start:end:end])
		ix.byType[gpuType] = g
		start = end
	}
	return ix
}

// fill builds the group from the offers at order, which are of one GPU type
// and sorted by GPU count then offerOrder, into entries, byKey and keyHash.
func (g *typeGroup) fill(seed maphash.Seed, offers []providers.Offer, order []int32, entries []entry, byKey []int32, keyHash []uint64) {
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
	g.regionsByName = make([]int32, len(g.regions))
	for i := range g.regionsByName {
		g.regionsByName[i] = int32(i)
	}
	slices.SortFunc(g.regionsByName, func(a, b int32) int { return strings.Compare(g.regions[a], g.regions[b]) })
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
		cg := countGroup{
			count:           count,
			perProvider:     make([]int, len(g.providers)),
			perKindProvider: make([]int, len(g.kinds)*len(g.providers)),
		}
		for i, p := range provider[start:end] {
			cg.perProvider[p]++
			cg.perKindProvider[int(kind[start+i])*len(g.providers)+int(p)]++
		}
		cg.fill(g, seed, offers, order[start:end], provider[start:end], region[start:end], kind[start:end],
			entries[start:end:end], byKey[start:end:end], keyHash[start:end:end])
		g.counts = append(g.counts, cg)
		start = end
	}
}

// fill sets the count group's entries, runs, cells, byKey and keyHash from
// the offers at order (sorted by offerOrder) with their provider, region and
// machine kind interned in g.
func (cg *countGroup) fill(g *typeGroup, seed maphash.Seed, offers []providers.Offer, order, provider, region, kind []int32,
	entries []entry, byKey []int32, keyHash []uint64) {
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
			cmp.Compare(kind[i], kind[j]),
			cmp.Compare(region[i], region[j]),
			boolCompare(a.Capacity == providers.Spot, b.Capacity == providers.Spot),
			cmp.Compare(provider[i], provider[j]),
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
	for i := range cg.runs {
		key := g.cellKey(cg.runs[i].kind, cg.runs[i].region)
		if n := len(cg.cells); n == 0 || cg.cells[n-1].key != key {
			cg.cells = append(cg.cells, cell{key: key, start: int32(i)})
		}
	}
	hashes := make([]uint64, len(entries))
	for i := range byKey {
		byKey[i] = int32(i)
		hashes[i] = hashKey(seed, entries[i].offer.Key())
	}
	slices.SortFunc(byKey, func(i, j int32) int {
		return cmp.Or(cmp.Compare(hashes[i], hashes[j]), cmp.Compare(i, j))
	})
	for i, pos := range byKey {
		keyHash[i] = hashes[pos]
	}
	cg.byKey, cg.keyHash = byKey, keyHash
}

// cellKey is the key of the cell of machine kind and region in g's count
// groups.
func (g *typeGroup) cellKey(kind, region int32) int32 {
	return kind*int32(len(g.regions)) + region
}

// cell returns the runs of machine kind k in region r, cg.runs[start:end].
func (cg *countGroup) cell(g *typeGroup, k, r int32) (start, end int32) {
	i, ok := slices.BinarySearchFunc(cg.cells, g.cellKey(k, r), func(c cell, key int32) int { return cmp.Compare(c.key, key) })
	if !ok {
		return 0, 0
	}
	end = int32(len(cg.runs))
	if i+1 < len(cg.cells) {
		end = cg.cells[i+1].start
	}
	return cg.cells[i].start, end
}

func (r *run) sameKey(o *run) bool {
	return r.provider == o.provider && r.spot == o.spot && r.region == o.region && r.kind == o.kind &&
		r.available == o.available
}

// hashKey hashes an offering key with seed, field by field.
func hashKey(seed maphash.Seed, k providers.OfferingKey) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	for _, s := range [...]string{k.Provider, k.InstanceType, k.Region, string(k.Capacity)} {
		_, _ = h.WriteString(s)
		_ = h.WriteByte(0)
	}
	return h.Sum64()
}

// appendWithKey appends to dst the positions in cg.entries of the offers
// whose offering key is key, of hash h (hashKey).
func (cg *countGroup) appendWithKey(dst []int32, key providers.OfferingKey, h uint64) []int32 {
	for i, _ := slices.BinarySearch(cg.keyHash, h); i < len(cg.keyHash) && cg.keyHash[i] == h; i++ {
		if pos := cg.byKey[i]; cg.entries[pos].offer.Key() == key {
			dst = append(dst, pos)
		}
	}
	return dst
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
