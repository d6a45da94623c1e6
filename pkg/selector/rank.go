package selector

import (
	"iter"
	"math"
	"slices"
	"strconv"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

// Ranked yields the eligible offers, best first. It merges the runs the
// decision admitted, each already in price order, so taking the first k
// offers costs about k times the logarithm of the number of those runs:
// a caller that stops after a few launch attempts never pays for ranking
// the rest. Each call starts again from the best offer.
func (r Result) Ranked() iter.Seq[providers.Offer] {
	return func(yield func(providers.Offer) bool) {
		if r.Eligible == 0 {
			return
		}
		m := merge{d: r.d, heads: make([]cursor, 0, len(r.d.live))}
		for li, lr := range r.d.live {
			if head, ok := r.d.head(li, r.d.cg.runs[lr.run].start); ok {
				m.heads = append(m.heads, cursor{pos: head, live: int32(li)})
			}
		}
		for i := len(m.heads)/2 - 1; i >= 0; i-- {
			m.down(i)
		}
		for len(m.heads) > 0 {
			top := &m.heads[0]
			if !yield(r.d.cg.entries[top.pos].offer) {
				return
			}
			if next, ok := r.d.head(int(top.live), top.pos+1); ok {
				top.pos = next
			} else {
				last := len(m.heads) - 1
				m.heads[0] = m.heads[last]
				m.heads = m.heads[:last]
			}
			m.down(0)
		}
	}
}

// RankedOffers returns every eligible offer, best first.
func (r Result) RankedOffers() []providers.Offer {
	if r.Eligible == 0 {
		return nil
	}
	return slices.AppendSeq(make([]providers.Offer, 0, r.Eligible), r.Ranked())
}

// cursor is the next eligible offer of one live run.
type cursor struct {
	pos  int32 // index into countGroup.entries
	live int32 // index into decision.live
}

// merge is a binary min-heap of run cursors, best offer on top.
type merge struct {
	d     *decision
	heads []cursor
}

func (m *merge) down(i int) {
	for {
		best, l, r := i, 2*i+1, 2*i+2
		if l < len(m.heads) && m.d.outranks(m.heads[l], m.heads[best]) {
			best = l
		}
		if r < len(m.heads) && m.d.outranks(m.heads[r], m.heads[best]) {
			best = r
		}
		if best == i {
			return
		}
		m.heads[i], m.heads[best] = m.heads[best], m.heads[i]
		i = best
	}
}

// Rejected lists every ineligible offer of the requested GPU type with the
// reason it lost, ordered by GPU count, provider, then offer id; offers of
// other GPU types are only counted, in Counts. Unlike a decision it visits
// every offer of the type, so it is for explaining a decision (the offers
// CLI, tests), not for making one.
func (r Result) Rejected() []Rejection {
	d := r.d
	if d == nil || d.g.size == r.Eligible {
		return nil
	}
	out := make([]Rejection, 0, d.g.size-r.Eligible)
	var pinDetail string
	if d.pinned {
		pinDetail = "pinned to " + r.Request.Provider
	}
	for ci := range d.g.counts {
		cg := &d.g.counts[ci]
		byOrd := make([]int32, len(cg.entries))
		for pos := range cg.entries {
			byOrd[cg.entries[pos].ord] = int32(pos)
		}
		countDetail := "has " + strconv.Itoa(cg.count) + " GPUs"
		for _, pos := range byOrd {
			e := &cg.entries[pos]
			run := &cg.runs[e.run]
			switch why := d.reasonAt(cg, pos); why {
			case eligible:
			case rProviderPinnedElsewhere:
				out = append(out, Rejection{Offer: e.offer, Reason: ProviderPinnedElsewhere, Detail: pinDetail})
			case rWrongGPUCount:
				out = append(out, Rejection{Offer: e.offer, Reason: WrongGPUCount, Detail: countDetail})
			default:
				detail := string(d.appendDetail(nil, why, e, run))
				out = append(out, Rejection{Offer: e.offer, Reason: reasonOrder[why], Detail: detail})
			}
		}
	}
	return out
}

// reasonAt returns why the offer at pos in cg loses, or eligible. It checks
// the rules in the order Select counts them.
func (d *decision) reasonAt(cg *countGroup, pos int32) reason {
	e := &cg.entries[pos]
	r := &cg.runs[e.run]
	if d.pinned && r.provider != d.pin {
		return rProviderPinnedElsewhere
	}
	if cg != d.cg {
		return rWrongGPUCount
	}
	if why := d.passes(r); why != eligible {
		return why
	}
	if li, _ := d.liveOf(e.run); pos >= d.live[li].limit {
		return d.rule(r.spot).over
	}
	if d.isBlocked(r.provider) || d.isMarked(pos) {
		return rMarkedUnavailable
	}
	if !r.available {
		return rNoCapacity
	}
	return eligible
}

// appendDetail appends the explanation of why e, of run, lost for r, a
// reason other than the provider pin and the GPU count.
func (d *decision) appendDetail(buf []byte, r reason, e *entry, run *run) []byte {
	switch r {
	case rWrongMachineKind:
		buf = append(append(buf, d.g.kinds[run.kind]...), " offer, "...)
		return append(append(buf, d.wantKind...), " requested"...)
	case rNoBootstrapForProvider:
		return append(append(buf, "no bootstrap for provider "...), d.g.providers[run.provider]...)
	case rRegionNotPreferred:
		buf = append(append(buf, "region "...), d.g.regions[run.region]...)
		return append(buf, " not requested"...)
	case rSpotNotRequested:
		return append(buf, "spot offer, spot not requested"...)
	case rOnDemandNotAllowed:
		return append(buf, "spot requested without maxPrice for an on-demand fallback"...)
	case rOverSpotCap:
		return appendOverCap(buf, e.offer.HourlyPrice, d.spot.cap)
	case rOverOnDemandCap:
		return appendOverCap(buf, e.offer.HourlyPrice, d.onDemand.cap)
	case rMarkedUnavailable:
		if d.isBlocked(run.provider) {
			return append(buf, "provider unavailable, e.g. rejecting the credentials"...)
		}
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
