package selector

import (
	"cmp"
	"hash/maphash"
	"slices"
	"sort"
	"strings"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

// Select builds an Index of offers and selects against it. Callers deciding
// repeatedly against one catalog should build the Index once instead.
func Select(req Request, offers []providers.Offer, unavailable Unavailable) Result {
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

// reason is a Reason as a small integer: its index in reasonOrder.
type reason uint8

const (
	rProviderPinnedElsewhere reason = iota
	rWrongGPUType
	rWrongGPUCount
	rWrongMachineKind
	rNoBootstrapForProvider
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

// decision is a request compiled against one type group, and what Select
// found in the group's offers of the requested count.
type decision struct {
	g *typeGroup
	// cg is the group's offers of the requested count; nil when it has none.
	cg     *countGroup
	policy Policy
	pinned bool
	pin    int32 // provider id when pinned; -1 when the pinned provider has no offer here
	// kind is the id of the requested machine kind, wantKind, in the
	// group; -1 when no offer of the group is of that kind.
	kind     int32
	wantKind providers.MachineKind
	// noBootstrap marks the group's providers in Request.NoBootstrap; nil
	// when none is.
	noBootstrap []bool
	// regions are the group's regions the request prefers, by ascending
	// region id, with their positions; regionBuf backs it for the usual
	// handful.
	regions        []regionMatch
	regionBuf      [32]regionMatch
	onDemand, spot capRule
	// blocked marks the group's providers that are unavailable as a whole;
	// nil when none is.
	blocked []bool
	// marked holds, sorted, the positions in cg.entries of the offers whose
	// offering is unavailable.
	marked []int32
	// live are the runs of cg that pass every rule before the price cap,
	// by ascending run.
	live []liveRun
	// best is the position in cg.entries of the best eligible offer.
	best int32
}

// liveRun is a run of the decision's count group that passes every rule
// before the price cap, the end of its prefix under the cap and the
// position of its region in the request.
type liveRun struct {
	run   int32 // index into countGroup.runs
	limit int32 // entries[run.start:limit] are under the cap
	pos   int32 // the position of the run's region in Request.Regions
}

// regionMatch is a region of a type group that a request prefers.
type regionMatch struct {
	region int32 // index into typeGroup.regions
	pos    int32 // the position of its first match in Request.Regions
}

// Select ranks the catalog's offers for req, passing over the offerings
// and providers in unavailable. Its cost grows with the providers of the
// requested GPU type, the runs (capacity type, provider, availability) of
// its requested count and machine kind in the preferred regions, and the
// unavailable offerings, each looked up by hash; not with the number of
// offers, of their instance types, or of the runs of other regions or
// machine kinds, which are only counted, from the index's totals.
func (ix *Index) Select(req Request, unavailable Unavailable) Result {
	g := ix.byType[req.GPUType]
	if g == nil {
		g = &typeGroup{}
	}
	d := &decision{g: g, policy: req.Policy, pinned: req.Provider != "", pin: -1}
	pinnedInGroup := 0
	if i := slices.Index(g.providers, req.Provider); d.pinned && i >= 0 {
		d.pin, pinnedInGroup = int32(i), g.perProvider[i]
	}
	d.wantKind = req.kind()
	d.kind = int32(slices.Index(g.kinds, d.wantKind))
	d.noBootstrap = providerSet(g.providers, req.NoBootstrap)
	// Offers of other GPU types are only counted. With a pin, those of other
	// providers lose to the pin first.
	var counts [numReasons]int
	counts[rWrongGPUType] = ix.total - g.size
	if d.pinned {
		pinnedOthers := ix.perProvider[req.Provider] - pinnedInGroup
		counts[rProviderPinnedElsewhere] = counts[rWrongGPUType] - pinnedOthers
		counts[rWrongGPUType] = pinnedOthers
	}
	for i := range g.counts {
		cg := &g.counts[i]
		if cg.count == req.GPUCount {
			d.cg = cg
			continue
		}
		n, ofPin := len(cg.entries), 0
		if d.pinned {
			if d.pin >= 0 {
				ofPin = cg.perProvider[d.pin]
			}
			counts[rProviderPinnedElsewhere] += n - ofPin
			n = ofPin
		}
		counts[rWrongGPUCount] += n
	}
	d.regions = g.preferred(d.regionBuf[:0], req.Regions)
	d.spot, d.onDemand = capRules(req)
	res := Result{Request: req, Considered: ix.total, d: d}
	if d.cg != nil {
		res.Eligible = d.decide(ix.seed, unavailable, &counts)
	}
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

// decide classifies the offers of d.cg, counting their reasons into counts,
// and returns the number eligible, having set d.live and d.best. Offers
// failing the pin, the machine kind or the bootstrap are counted from the
// group's totals by provider and kind, and those of the requested kind in
// other regions as what remains of those totals once the preferred regions'
// cells are visited: only those cells' runs are looked at.
func (d *decision) decide(seed maphash.Seed, unavailable Unavailable, counts *[numReasons]int) int {
	cg, g := d.cg, d.g
	d.blocked = providerSet(g.providers, unavailable.Providers)
	for _, key := range unavailable.Offerings {
		d.marked = cg.appendWithKey(d.marked, key, hashKey(seed, key))
	}
	slices.Sort(d.marked)
	d.marked = slices.Compact(d.marked)

	// The pin, the machine kind and the bootstrap, provider by provider.
	numProviders := len(g.providers)
	admitted := 0 // offers of the requested kind that pass all three
	for p := range numProviders {
		n := cg.perProvider[p]
		if d.pinned && int32(p) != d.pin {
			counts[rProviderPinnedElsewhere] += n
			continue
		}
		inKind := 0
		if d.kind >= 0 {
			inKind = cg.perKindProvider[int(d.kind)*numProviders+p]
		}
		counts[rWrongMachineKind] += n - inKind
		if d.noBootstrap != nil && d.noBootstrap[p] {
			counts[rNoBootstrapForProvider] += inKind
			continue
		}
		admitted += inKind
	}
	if admitted == 0 {
		return 0
	}
	// The preferred regions' cells of the requested kind.
	size := 0
	for _, m := range d.regions {
		start, end := cg.cell(g, d.kind, m.region)
		size += int(end - start)
	}
	d.live = make([]liveRun, 0, size)
	inRegions, nEligible := 0, 0
	for _, m := range d.regions {
		start, end := cg.cell(g, d.kind, m.region)
		for i := start; i < end; i++ {
			r := &cg.runs[i]
			if !d.admits(r.provider) {
				continue // counted above
			}
			n := int(r.end - r.start)
			inRegions += n
			rule := d.rule(r.spot)
			if !rule.allowed {
				counts[rule.notAllowed] += n
				continue
			}
			limit := r.end
			if rule.capped {
				run := cg.entries[r.start:r.end]
				limit = r.start + int32(sort.Search(len(run), func(j int) bool { return !(run[j].price <= rule.cap) }))
			}
			d.live = append(d.live, liveRun{run: i, limit: limit, pos: m.pos})
			counts[rule.over] += int(r.end - limit)
			switch in := int(limit - r.start); {
			case d.isBlocked(r.provider):
				counts[rMarkedUnavailable] += in
			case r.available:
				nEligible += in
			default:
				counts[rNoCapacity] += in
			}
		}
	}
	counts[rRegionNotPreferred] += admitted - inRegions
	// Marked offers under their cap lose as MarkedUnavailable instead of
	// being eligible or lacking capacity.
	for _, pos := range d.marked {
		e := &cg.entries[pos]
		r := &cg.runs[e.run]
		li, ok := d.liveOf(e.run)
		if !ok || pos >= d.live[li].limit || d.isBlocked(r.provider) {
			continue // lost to an earlier rule, or counted already
		}
		counts[rMarkedUnavailable]++
		if r.available {
			nEligible--
		} else {
			counts[rNoCapacity]--
		}
	}
	if nEligible == 0 {
		return 0
	}
	best := cursor{pos: -1}
	for li, lr := range d.live {
		if head, ok := d.head(li, cg.runs[lr.run].start); ok {
			if c := (cursor{pos: head, live: int32(li)}); best.pos < 0 || d.outranks(c, best) {
				best = c
			}
		}
	}
	d.best = best.pos
	return nEligible
}

// liveOf returns the index in d.live of run, if it is live.
func (d *decision) liveOf(run int32) (int, bool) {
	return slices.BinarySearchFunc(d.live, run, func(lr liveRun, run int32) int { return cmp.Compare(lr.run, run) })
}

// admits reports whether the request's pin and bootstrap admit provider.
func (d *decision) admits(provider int32) bool {
	return (!d.pinned || provider == d.pin) && (d.noBootstrap == nil || !d.noBootstrap[provider])
}

// passes returns the first rule before the price cap that every offer of r
// fails, or eligible when it passes them all.
func (d *decision) passes(r *run) reason {
	if d.pinned && r.provider != d.pin {
		return rProviderPinnedElsewhere
	}
	if r.kind != d.kind {
		return rWrongMachineKind
	}
	if d.noBootstrap != nil && d.noBootstrap[r.provider] {
		return rNoBootstrapForProvider
	}
	if d.regionPos(r.region) < 0 {
		return rRegionNotPreferred
	}
	if rule := d.rule(r.spot); !rule.allowed {
		return rule.notAllowed
	}
	return eligible
}

func (d *decision) rule(spot bool) *capRule {
	if spot {
		return &d.spot
	}
	return &d.onDemand
}

// providerSet marks which of the group's providers (ids into group) are
// among names; nil when none is.
func providerSet(group, names []string) []bool {
	var set []bool
	for _, name := range names {
		if i := slices.Index(group, name); i >= 0 {
			if set == nil {
				set = make([]bool, len(group))
			}
			set[i] = true
		}
	}
	return set
}

func (d *decision) isBlocked(provider int32) bool {
	return d.blocked != nil && d.blocked[provider]
}

func (d *decision) isMarked(pos int32) bool {
	_, found := slices.BinarySearch(d.marked, pos)
	return found
}

// head returns the first eligible offer of live run li at or after pos, if
// any.
func (d *decision) head(li int, pos int32) (int32, bool) {
	lr := &d.live[li]
	r := &d.cg.runs[lr.run]
	if !r.available || d.isBlocked(r.provider) {
		return 0, false
	}
	for ; pos < lr.limit; pos++ {
		if !d.isMarked(pos) {
			return pos, true
		}
	}
	return 0, false
}

// outranks reports whether the eligible offer at a ranks above the one at b:
// spot before on-demand, then region position and price as the policy
// says, then provider and offer id.
func (d *decision) outranks(a, b cursor) bool {
	ea, eb := &d.cg.entries[a.pos], &d.cg.entries[b.pos]
	ra, rb := &d.cg.runs[ea.run], &d.cg.runs[eb.run]
	if ra.spot != rb.spot {
		return ra.spot
	}
	pa, pb := d.live[a.live].pos, d.live[b.live].pos
	var c int
	if d.policy == LowestPrice {
		c = cmp.Or(cmp.Compare(ea.price, eb.price), cmp.Compare(pa, pb))
	} else {
		c = cmp.Or(cmp.Compare(pa, pb), cmp.Compare(ea.price, eb.price))
	}
	return cmp.Or(c, cmp.Compare(ea.ord, eb.ord)) < 0
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

// preferred appends to dst the group's regions that match prefs, each with
// the position of the first pref it matches, by ascending region id. With
// no prefs every region is at position 0. A pref is looked up among the
// regions by name: the region equal to it, then those continuing it at a
// "-", which are contiguous in name order; so it costs two binary searches
// and the regions it matches, not all.
func (g *typeGroup) preferred(dst []regionMatch, prefs []string) []regionMatch {
	if len(prefs) == 0 {
		for id := range g.regions {
			dst = append(dst, regionMatch{region: int32(id)})
		}
		return dst
	}
	byName := g.regionsByName
	for i, pref := range prefs {
		if j, ok := slices.BinarySearchFunc(byName, pref, func(id int32, pref string) int {
			return strings.Compare(g.regions[id], pref)
		}); ok {
			dst = append(dst, regionMatch{region: byName[j], pos: int32(i)})
		}
		j, _ := slices.BinarySearchFunc(byName, pref, func(id int32, pref string) int {
			return compareDashed(g.regions[id], pref)
		})
		for ; j < len(byName) && regionMatches(g.regions[byName[j]], pref); j++ {
			dst = append(dst, regionMatch{region: byName[j], pos: int32(i)})
		}
	}
	slices.SortFunc(dst, func(a, b regionMatch) int { return cmp.Or(cmp.Compare(a.region, b.region), cmp.Compare(a.pos, b.pos)) })
	return slices.CompactFunc(dst, func(a, b regionMatch) bool { return a.region == b.region })
}

// regionPos returns the position in the request of the group's region, -1
// when the request does not prefer it.
func (d *decision) regionPos(region int32) int32 {
	i, ok := slices.BinarySearchFunc(d.regions, region, func(m regionMatch, region int32) int { return cmp.Compare(m.region, region) })
	if !ok {
		return -1
	}
	return d.regions[i].pos
}

// compareDashed compares s with pref+"-" without building it.
func compareDashed(s, pref string) int {
	if len(s) <= len(pref) {
		// pref+"-" is longer than s: s is lower if it is a prefix of it.
		return cmp.Or(strings.Compare(s, pref[:len(s)]), -1)
	}
	return cmp.Or(strings.Compare(s[:len(pref)], pref), cmp.Compare(s[len(pref)], '-'), cmp.Compare(len(s), len(pref)+1))
}

// regionMatches reports whether region is pref or continues it at a "-".
func regionMatches(region, pref string) bool {
	rest, ok := strings.CutPrefix(region, pref)
	return ok && (rest == "" || rest[0] == '-')
}
