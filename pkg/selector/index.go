package selector

import (
	"cmp"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

// Index is one catalog prepared for fast selection: offers grouped by GPU
// type, then by GPU count, each group sorted by provider and offer id, with
// regions and providers interned per GPU type. Offers of other GPU types are
// never visited by Select, only counted. An Index is immutable and safe for
// concurrent use.
type Index struct {
	total int
	// perProvider counts the catalog's offers by provider name.
	perProvider map[string]int
	byType      map[string]*typeGroup
}

// typeGroup holds every offer of one GPU type.
type typeGroup struct {
	// entries holds the offers sorted by GPU count, then offerOrder;
	// counts slices it into one run per count.
	entries []entry
	counts  []countGroup
	// wrongCount holds, in the order of entries, each offer rejected for
	// its GPU count, ready to be copied in bulk into a Result.
	wrongCount []Rejection
	// providers are the provider names in the group, perProvider[i] the
	// number of the group's offers from providers[i].
	providers   []string
	perProvider []int
	// regions are the canonical regions in the group.
	regions []string
}

// countGroup is the run of a typeGroup's offers with one GPU count.
type countGroup struct {
	count      int
	entries    []entry
	wrongCount []Rejection
}

// entry is an offer with what Select needs precomputed.
type entry struct {
	offer providers.Offer
	// price is the offer's price with NaN as +Inf, so a NaN price ranks
	// last and fails every cap.
	price    float64
	provider int32 // index into typeGroup.providers
	region   int32 // index into typeGroup.regions
	spot     bool
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
	// All groups share one array of entries and one of rejections.
	entries := make([]entry, len(offers))
	wrongCount := make([]Rejection, len(offers))
	for start := 0; start < len(order); {
		gpuType := offers[order[start]].GPUType
		end := start + 1
		for end < len(order) && offers[order[end]].GPUType == gpuType {
			end++
		}
		g := &typeGroup{entries: entries[start:end:end], wrongCount: wrongCount[start:end:end]}
		g.fill(offers, order[start:end])
		ix.byType[gpuType] = g
		start = end
	}
	return ix
}

// fill sets the group's entries and wrongCount from the offers at order,
// which are of one GPU type and sorted by GPU count then offerOrder.
func (g *typeGroup) fill(offers []providers.Offer, order []int32) {
	providerIDs := make(map[string]int32)
	regionIDs := make(map[string]int32)
	for i, oi := range order {
		o := &offers[oi]
		p := intern(providerIDs, &g.providers, o.Provider)
		if int(p) == len(g.perProvider) {
			g.perProvider = append(g.perProvider, 0)
		}
		g.perProvider[p]++
		price := o.HourlyPrice
		if math.IsNaN(price) {
			price = math.Inf(1)
		}
		g.entries[i] = entry{
			offer:    *o,
			price:    price,
			provider: p,
			region:   intern(regionIDs, &g.regions, o.Region),
			spot:     o.Capacity == providers.Spot,
		}
	}
	for start := 0; start < len(g.entries); {
		count := g.entries[start].offer.GPUCount
		detail := "has " + strconv.Itoa(count) + " GPUs"
		end := start
		for ; end < len(g.entries) && g.entries[end].offer.GPUCount == count; end++ {
			g.wrongCount[end] = Rejection{Offer: g.entries[end].offer, Reason: WrongGPUCount, Detail: detail}
		}
		g.counts = append(g.counts, countGroup{
			count:      count,
			entries:    g.entries[start:end:end],
			wrongCount: g.wrongCount[start:end:end],
		})
		start = end
	}
}

// intern returns the id of s in names, appending it when new.
func intern(ids map[string]int32, names *[]string, s string) int32 {
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

// Select builds an Index of offers and selects against it. Callers deciding
// repeatedly against one catalog should build the Index once instead.
func Select(req Request, offers []providers.Offer, unavailable func(providers.OfferingKey) bool) Result {
	return NewIndex(offers).Select(req, unavailable)
}

// capRule is how a request treats one capacity type.
type capRule struct {
	allowed    bool
	notAllowed reason // when !allowed
	capped     bool
	cap        float64
	over       reason // when over cap
}

// plan is a request compiled against one typeGroup.
type plan struct {
	pinned bool
	pin    int32 // provider id when pinned; -1 when the pinned provider has no offer here
	// regionPos is the request position of each of the group's regions, -1
	// for none.
	regionPos   []int32
	onDemand    capRule
	spot        capRule
	unavailable func(providers.OfferingKey) bool
}

// reason is a Reason as a small integer: its index in reasonOrder.
type reason uint8

const (
	rProviderPinnedElsewhere reason = iota
	rWrongGPUType
	rWrongGPUCount
	rRegionNotPreferred
	rSpotNotRequested
	rOnDemandNotAllowed
	rOverSpotCap
	rOverOnDemandCap
	rMarkedUnavailable
	rNoCapacity
	numReasons
	eligible = numReasons
)

// check returns why e is not eligible under the plan, or eligible. The GPU
// type and count are already known to match.
func (p *plan) check(e *entry) reason {
	if p.pinned && e.provider != p.pin {
		return rProviderPinnedElsewhere
	}
	if p.regionPos[e.region] < 0 {
		return rRegionNotPreferred
	}
	rule := &p.onDemand
	if e.spot {
		rule = &p.spot
	}
	if !rule.allowed {
		return rule.notAllowed
	}
	if rule.capped && !(e.price <= rule.cap) {
		return rule.over
	}
	if p.unavailable != nil && p.unavailable(e.offer.Key()) {
		return rMarkedUnavailable
	}
	if !e.offer.Available {
		return rNoCapacity
	}
	return eligible
}

// candidate is an eligible offer with its region position.
type candidate struct {
	e   *entry
	pos int32
}

// Select ranks the catalog's offers for req. unavailable reports offerings
// to skip (typically (*UnavailableCache).IsUnavailable); nil skips none. It
// is called only for offers that pass every other rule but capacity.
func (ix *Index) Select(req Request, unavailable func(providers.OfferingKey) bool) Result {
	g := ix.byType[req.GPUType]
	if g == nil {
		g = &typeGroup{}
	}
	p := plan{pinned: req.Provider != "", pin: -1, unavailable: unavailable}
	pinnedInGroup := 0
	if i := slices.Index(g.providers, req.Provider); p.pinned && i >= 0 {
		p.pin, pinnedInGroup = int32(i), g.perProvider[i]
	}
	// Offers of other GPU types are only counted. With a pin, those of other
	// providers lose to the pin first.
	var counts [numReasons]int
	counts[rWrongGPUType] = ix.total - len(g.entries)
	if p.pinned {
		pinnedOthers := ix.perProvider[req.Provider] - pinnedInGroup
		counts[rProviderPinnedElsewhere] = counts[rWrongGPUType] - pinnedOthers
		counts[rWrongGPUType] = pinnedOthers
	}
	// A catalog rarely has more regions per GPU type than fit on the stack.
	var posBuf [32]int32
	p.regionPos = regionPositions(posBuf[:0], g.regions, req.Regions)
	p.spot, p.onDemand = capRules(req)
	res := Result{Request: req, Considered: ix.total}
	res.Ranked, res.Rejected = p.run(g, req, &counts)
	nonzero := 0
	for _, n := range counts {
		if n > 0 {
			nonzero++
		}
	}
	res.Counts = make(map[Reason]int, nonzero)
	for r, n := range counts {
		if n > 0 {
			res.Counts[reasonOrder[r]] = n
		}
	}
	return res
}

// capRules returns how req treats spot and on-demand offers.
func capRules(req Request) (spot, onDemand capRule) {
	spot = capRule{allowed: req.Spot, notAllowed: rSpotNotRequested, over: rOverSpotCap}
	switch {
	case req.MaxSpotPrice > 0:
		spot.capped, spot.cap = true, req.MaxSpotPrice
	case req.MaxPrice > 0:
		spot.capped, spot.cap = true, req.MaxPrice
	}
	onDemand = capRule{
		allowed:    !req.Spot || req.MaxPrice > 0,
		notAllowed: rOnDemandNotAllowed,
		capped:     req.MaxPrice > 0,
		cap:        req.MaxPrice,
		over:       rOverOnDemandCap,
	}
	return spot, onDemand
}

// regionPositions appends to dst the position in prefs of each region, -1
// when it matches none. With no prefs every region is at position 0.
func regionPositions(dst []int32, regions, prefs []string) []int32 {
	for _, r := range regions {
		pos := int32(-1)
		if len(prefs) == 0 {
			pos = 0
		}
		for i, pref := range prefs {
			if regionMatches(r, pref) {
				pos = int32(i)
				break
			}
		}
		dst = append(dst, pos)
	}
	return dst
}

// regionMatches reports whether region is pref or continues it at a "-".
func regionMatches(region, pref string) bool {
	rest, ok := strings.CutPrefix(region, pref)
	return ok && (rest == "" || rest[0] == '-')
}

// run classifies every offer of g, counting reasons into counts, and returns
// the eligible offers ranked and the rest with their reasons.
func (p *plan) run(g *typeGroup, req Request, counts *[numReasons]int) ([]providers.Offer, []Rejection) {
	// Classify the offers of the requested count first, so that every slice
	// of the result is allocated once at its final size.
	var match *countGroup
	var verdicts []reason
	nEligible := 0
	if i := slices.IndexFunc(g.counts, func(cg countGroup) bool { return cg.count == req.GPUCount }); i >= 0 {
		match = &g.counts[i]
		verdicts = make([]reason, len(match.entries))
		for i := range match.entries {
			verdicts[i] = p.check(&match.entries[i])
			if verdicts[i] == eligible {
				nEligible++
			}
		}
	}
	var pinDetail string
	if p.pinned {
		pinDetail = "pinned to " + req.Provider
	}
	var rejected []Rejection
	if n := len(g.entries) - nEligible; n > 0 {
		rejected = make([]Rejection, 0, n)
	}
	for ci := range g.counts {
		cg := &g.counts[ci]
		if cg == match {
			rejected = p.appendRejected(rejected, g, cg, verdicts, pinDetail, counts)
			continue
		}
		first := len(rejected)
		rejected = append(rejected, cg.wrongCount...)
		counts[rWrongGPUCount] += len(cg.wrongCount)
		if p.pinned {
			for i := range cg.entries {
				if cg.entries[i].provider != p.pin {
					rejected[first+i].Reason, rejected[first+i].Detail = ProviderPinnedElsewhere, pinDetail
					counts[rWrongGPUCount]--
					counts[rProviderPinnedElsewhere]++
				}
			}
		}
	}
	if nEligible == 0 {
		return nil, rejected
	}
	return rank(match, verdicts, nEligible, p.regionPos, req.Policy), rejected
}

// appendRejected appends the offers of cg that lost, as verdicts says, and
// counts their reasons.
func (p *plan) appendRejected(rejected []Rejection, g *typeGroup, cg *countGroup, verdicts []reason, pinDetail string, counts *[numReasons]int) []Rejection {
	// Details are written into one buffer and cut from one string, so the
	// number of allocations does not grow with the number of rejections;
	// spans holds each one's index in rejected, start and end in buf.
	buf := make([]byte, 0, 32*len(verdicts))
	spans := make([]int32, 0, 3*len(verdicts))
	for i, r := range verdicts {
		if r == eligible {
			continue
		}
		e := &cg.entries[i]
		counts[r]++
		if r == rProviderPinnedElsewhere {
			rejected = append(rejected, Rejection{Offer: e.offer, Reason: ProviderPinnedElsewhere, Detail: pinDetail})
			continue
		}
		start := int32(len(buf))
		buf = p.appendDetail(buf, r, e, g)
		spans = append(spans, int32(len(rejected)), start, int32(len(buf)))
		rejected = append(rejected, Rejection{Offer: e.offer, Reason: reasonOrder[r]})
	}
	details := string(buf)
	for i := 0; i < len(spans); i += 3 {
		rejected[spans[i]].Detail = details[spans[i+1]:spans[i+2]]
	}
	return rejected
}

// rank returns the nEligible offers of cg that verdicts finds eligible, best
// first.
func rank(cg *countGroup, verdicts []reason, nEligible int, regionPos []int32, policy Policy) []providers.Offer {
	cands := make([]candidate, 0, nEligible)
	for i, r := range verdicts {
		if r == eligible {
			e := &cg.entries[i]
			cands = append(cands, candidate{e: e, pos: regionPos[e.region]})
		}
	}
	byPolicy := byRegionThenPrice
	if policy == LowestPrice {
		byPolicy = byPriceThenRegion
	}
	// cands are in offerOrder, the final tie-break, which a stable sort keeps.
	slices.SortStableFunc(cands, func(a, b candidate) int {
		return cmp.Or(boolCompare(b.e.spot, a.e.spot), byPolicy(a, b))
	})
	ranked := make([]providers.Offer, len(cands))
	for i := range cands {
		ranked[i] = cands[i].e.offer
	}
	return ranked
}

func byRegionThenPrice(a, b candidate) int {
	return cmp.Or(cmp.Compare(a.pos, b.pos), cmp.Compare(a.e.price, b.e.price))
}

func byPriceThenRegion(a, b candidate) int {
	return cmp.Or(cmp.Compare(a.e.price, b.e.price), cmp.Compare(a.pos, b.pos))
}

// appendDetail appends the explanation of why e lost for r, a reason found
// by check other than the provider pin.
func (p *plan) appendDetail(buf []byte, r reason, e *entry, g *typeGroup) []byte {
	switch r {
	case rRegionNotPreferred:
		buf = append(append(buf, "region "...), g.regions[e.region]...)
		return append(buf, " not requested"...)
	case rSpotNotRequested:
		return append(buf, "spot offer, spot not requested"...)
	case rOnDemandNotAllowed:
		return append(buf, "spot requested without maxPrice for an on-demand fallback"...)
	case rOverSpotCap:
		return appendOverCap(buf, e.offer.HourlyPrice, p.spot.cap)
	case rOverOnDemandCap:
		return appendOverCap(buf, e.offer.HourlyPrice, p.onDemand.cap)
	case rMarkedUnavailable:
		return append(buf, "recently failed to launch, marked unavailable"...)
	default: // rNoCapacity
		return append(buf, "provider reports no capacity"...)
	}
}

func appendOverCap(buf []byte, price, limit float64) []byte {
	buf = appendPrice(buf, price)
	buf = append(buf, " > cap "...)
	return appendPrice(buf, limit)
}

// appendPrice formats a price with at least two decimals and as many more
// as it needs to be exact, so 2.1 reads "2.10" and 0.225 stays "0.225".
func appendPrice(buf []byte, price float64) []byte {
	start := len(buf)
	buf = strconv.AppendFloat(buf, price, 'f', -1, 64)
	if math.IsInf(price, 0) || math.IsNaN(price) {
		return buf
	}
	dot := slices.Index(buf[start:], '.')
	if dot < 0 {
		return append(buf, ".00"...)
	}
	for decimals := len(buf) - start - dot - 1; decimals < 2; decimals++ {
		buf = append(buf, '0')
	}
	return buf
}
