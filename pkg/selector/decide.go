package selector

import (
	"cmp"
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
	// regionPos is the request position of each of the group's regions, -1
	// for none; posBuf backs it for the usual handful of regions.
	regionPos      []int32
	posBuf         [32]int32
	onDemand, spot capRule
	// blocked marks the group's providers that are unavailable as a whole;
	// nil when none is.
	blocked []bool
	// marked holds, sorted, the positions in cg.entries of the offers whose
	// offering is unavailable.
	marked []int32
	// limits[i] ends the prefix of cg.runs[i] that passes every rule up to
	// the price cap: runs failing an earlier rule end at their start.
	limits []int32
	// best is the position in cg.entries of the best eligible offer.
	best int32
}

// Select ranks the catalog's offers for req, passing over the offerings
// and providers in unavailable. Its cost grows with the number of runs
// (provider, capacity type, region, machine kind) of the requested GPU type
// and count, the number of unavailable offerings and of providers without
// a bootstrap, not with the number of offers.
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
	d.regionPos = regionPositions(d.posBuf[:0], g.regions, req.Regions)
	d.spot, d.onDemand = capRules(req)
	res := Result{Request: req, Considered: ix.total, d: d}
	if d.cg != nil {
		res.Eligible = d.decide(unavailable, &counts)
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

// decide classifies the offers of d.cg run by run, counting their reasons
// into counts, and returns the number eligible, having set d.best.
func (d *decision) decide(unavailable Unavailable, counts *[numReasons]int) int {
	cg := d.cg
	d.blocked = providerSet(d.g.providers, unavailable.Providers)
	for _, key := range unavailable.Offerings {
		d.marked = append(d.marked, cg.withKey(key)...)
	}
	slices.Sort(d.marked)
	d.marked = slices.Compact(d.marked)

	nEligible := 0
	d.limits = make([]int32, len(cg.runs))
	for i := range cg.runs {
		r := &cg.runs[i]
		n := int(r.end - r.start)
		d.limits[i] = r.start
		if why := d.passes(r); why != eligible {
			counts[why] += n
			continue
		}
		rule := d.rule(r.spot)
		limit := r.end
		if rule.capped {
			run := cg.entries[r.start:r.end]
			limit = r.start + int32(sort.Search(len(run), func(j int) bool { return !(run[j].price <= rule.cap) }))
		}
		d.limits[i] = limit
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
	// Marked offers under their cap lose as MarkedUnavailable instead of
	// being eligible or lacking capacity.
	for _, pos := range d.marked {
		e := &cg.entries[pos]
		r := &cg.runs[e.run]
		if pos >= d.limits[e.run] || d.isBlocked(r.provider) {
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
	d.best = -1
	for i := range cg.runs {
		if head, ok := d.head(i, cg.runs[i].start); ok && (d.best < 0 || d.outranks(head, d.best)) {
			d.best = head
		}
	}
	return nEligible
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
	if d.regionPos[r.region] < 0 {
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

// head returns the first eligible offer of run i at or after pos, if any.
func (d *decision) head(i int, pos int32) (int32, bool) {
	r := &d.cg.runs[i]
	if !r.available || d.isBlocked(r.provider) {
		return 0, false
	}
	for ; pos < d.limits[i]; pos++ {
		if !d.isMarked(pos) {
			return pos, true
		}
	}
	return 0, false
}

// outranks reports whether the eligible offer at a ranks above the one at b:
// spot before on-demand, then region position and price as the policy
// says, then provider and offer id.
func (d *decision) outranks(a, b int32) bool {
	ea, eb := &d.cg.entries[a], &d.cg.entries[b]
	ra, rb := &d.cg.runs[ea.run], &d.cg.runs[eb.run]
	if ra.spot != rb.spot {
		return ra.spot
	}
	pa, pb := d.regionPos[ra.region], d.regionPos[rb.region]
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
