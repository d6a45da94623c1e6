package vastai

import "math"

// The bid policy (BidFor). Vast.ai's interruptible instances are bids: a
// create with "price" bids that much per hour for the whole machine
// (createInstance: "Bid price per machine (in $/hour). Only for
// interruptible instances"), among interruptible instances "highest bid
// wins", and an instance that loses is stopped and "resume[s]
// automatically when priority returns" (rental-types.mdx; Vast.ai's
// instance-types guide, guides/instances/choosing/instance-types.mdx).
const (
	// BidMargin is what the policy bids above the minimum bid, as a
	// fraction of it: 5%, so that a small rise of the competing bids does not
	// stop the instance at once.
	BidMargin = 0.05
	// BidStep is the bid's resolution, USD/h: bids are whole tenths of a
	// cent ($0.001 is the smallest bid both createInstance and changeBid
	// accept, "minimum: 0.001").
	BidStep = 0.001
	// MaxCreateBid and MaxChangeBid are the largest bids Vast.ai's spec
	// accepts on a create ("maximum: 128.0") and on a change of bid
	// ("maximum: 32.0").
	MaxCreateBid = 128.0
	MaxChangeBid = 32.0
)

// BidFor is the bid policy: the bid to place on a machine whose minimum
// bid is minBid (USD/h, whole machine: a Spot offer's HourlyPrice at launch,
// an outbid instance's MinBid on a re-bid) under the request's spot cap
// (maxSpotPrice, or maxPrice when that is unset). It bids minBid plus
// BidMargin, rounded up to BidStep, and never above cap: when the margin
// does not fit, it bids cap itself (rounded down to BidStep) if that still
// reaches minBid. ok is false when no bid at or under cap reaches minBid
// (the offer is not eligible; an outbid instance cannot be won back), or
// when minBid or cap is not a positive number.
//
// A bid at minBid wins the machine now (min_bid is the lowest bid that
// does; the simulator works the same way); the margin is headroom.
func BidFor(minBid, cap float64) (float64, bool) {
	if !(minBid > 0) || !(cap > 0) || math.IsInf(minBid, 0) || math.IsNaN(cap) {
		return 0, false
	}
	floor := roundUp(minBid) // a bid below min_bid loses
	bid := max(roundUp(minBid*(1+BidMargin)), floor)
	if limit := roundDown(cap); bid > limit {
		bid = limit
	}
	if bid < floor {
		return 0, false
	}
	return bid, true
}

// roundUp rounds to BidStep upwards, ignoring float noise below a millionth
// of a step (0.2*1.05 is 0.21000000000000002, which is 0.21).
func roundUp(x float64) float64 {
	return math.Ceil(x*bidSteps-1e-6) / bidSteps
}

// roundDown rounds to BidStep downwards, ignoring the same noise.
func roundDown(x float64) float64 {
	return math.Floor(x*bidSteps+1e-6) / bidSteps
}

// bidSteps is the number of BidSteps in a dollar: dividing by it gives the
// float nearest to the decimal (0.21, not 0.21000000000000002).
const bidSteps = 1 / BidStep
