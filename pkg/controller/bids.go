package controller

import (
	"fmt"
	"math"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/budget"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// Bids: on a bid market (a provider that implements providers.Bidder,
// Vast.ai), a Spot offer is launched with a bid from the provider's policy
// (Bidder.BidFor) under the request's spot cap, and an instance that loses
// its bid is first re-bid within the cap; one that cannot be won back is an
// interruption (liveness.go). The bid is what the machine costs:
// status.hourlyPrice, the budget reservation and accrued cost use it.

// spotCap is the request's spot cap, USD/h for the whole machine:
// maxSpotPrice, or maxPrice when that is unset, as the selector caps spot
// offers (pkg/selector/specreq). A request with neither is uncapped: the
// policy then bids its margin over the minimum bid with no ceiling.
func spotCap(spec tgpv1.GPURequestSpec) float64 {
	switch {
	case spec.MaxSpotPrice != nil && *spec.MaxSpotPrice > 0:
		return *spec.MaxSpotPrice
	case spec.MaxPrice != nil && *spec.MaxPrice > 0:
		return *spec.MaxPrice
	}
	return math.Inf(1)
}

// capString prints a spot cap for messages.
func capString(cap float64) string {
	if math.IsInf(cap, 1) {
		return "no cap"
	}
	return fmt.Sprintf("$%.3f/h", cap)
}

// launchPrice is what launching offer on p costs and the bid to send: for
// a Spot offer on a bid market the policy's bid (ok false when no bid under
// the spot cap can win: the offer is passed over), otherwise the offer's
// price and no bid.
func launchPrice(p providers.Provider, offer providers.Offer, spec tgpv1.GPURequestSpec) (price, bid float64, ok bool) {
	b, isBidder := p.(providers.Bidder)
	if !isBidder || offer.Capacity != providers.Spot {
		return offer.HourlyPrice, 0, true
	}
	bid, ok = b.BidFor(offer.HourlyPrice, spotCap(spec))
	return bid, bid, ok
}

// rebidWait is how long after raising a bid the operator waits for the
// provider to list the instance running again before it counts as still
// outbid (a few polls: the raise and the next listing race).
func (c *Controller) rebidWait() time.Duration { return 3 * c.cfg.PollInterval }

// rebidRecord is the last bid this process placed on an outbid machine.
type rebidRecord struct {
	bid float64
	at  time.Time
}

// rebid handles a listed instance that lost its bid (inst.Outbid): it
// raises the bid within the spot cap when that can win, and reports
// handled=false with the cause and message of the interruption otherwise:
// the provider is no bid market, no bid at or under the cap wins, the raise
// would take the namespace over a GPUBudget's hourly limit (the stopped
// machine then gives way to a relaunch that the budget can hold: provision
// checks every offer against the budgets, and waits Pending when none fits),
// the instance is gone or refuses the bid, or a raised bid still loses
// after rebidWait. An error is returned only when a retry can help (the
// provider throttled or failed the raise).
func (c *Controller) rebid(s *syncCtx, inst providers.Instance) (delay time.Duration, handled bool, cause, msg string, err error) {
	req := s.req
	st := &req.Status
	logger := klog.FromContext(s.ctx)
	cause = "Outbid"
	b, ok := c.providers[st.Provider].(providers.Bidder)
	if !ok {
		return 0, false, cause, fmt.Sprintf("%s reports instance %s as %s", st.Provider, inst.ID, inst.NativeState), nil
	}
	cap := spotCap(req.Spec)
	current := inst.BidPrice
	if current == 0 && st.HourlyPrice != nil {
		current = *st.HourlyPrice
	}
	bid, ok := b.BidFor(inst.MinBid, cap)
	if !ok {
		return 0, false, cause, fmt.Sprintf("instance %s was outbid on %s: winning it back takes more than $%.3f/h, over the spot cap (%s)",
			inst.ID, st.Provider, inst.MinBid, capString(cap)), nil
	}
	now := c.clock.Now()
	if bid <= current {
		// Our bid already reaches what would win: the provider has not
		// resumed the instance yet. Wait a few polls after our raise; past
		// that it stays outbid and is an interruption.
		if r, ok := c.rebids.Load(st.MachineName); ok && now.Sub(r.(rebidRecord).at) < c.rebidWait() {
			return c.cfg.PollInterval, true, "", "", nil
		}
		return 0, false, cause, fmt.Sprintf("instance %s stays outbid on %s at a bid of $%.3f/h (minimum bid $%.3f/h, spot cap %s)",
			inst.ID, st.Provider, current, inst.MinBid, capString(cap)), nil
	}
	room, err := c.headroom(req)
	if err != nil {
		return 0, false, "", "", err
	}
	if err := room.Admit(bid, budget.GPUs(req)); err != nil {
		if obe, over := budget.AsOverBudget(err); over {
			return 0, false, "OutbidOverBudget", fmt.Sprintf("instance %s was outbid on %s; a bid of $%.3f/h would take the namespace over GPUBudget %s (%s)",
				inst.ID, st.Provider, bid, obe.Budget, obe.Limit), nil
		}
		return 0, false, "", "", err
	}
	err = b.RaiseBid(s.ctx, inst.ID, bid)
	c.metrics.observeCall(st.Provider, "raise_bid", err)
	switch {
	case providers.IsClass(err, providers.ClassNotFound), providers.IsClass(err, providers.ClassInvalid):
		return 0, false, cause, fmt.Sprintf("instance %s was outbid on %s and its bid cannot be raised: %v", inst.ID, st.Provider, err), nil
	case err != nil:
		logger.Info("raising the bid failed; retrying", "machine", st.MachineName, "instance", inst.ID, "err", err)
		return 0, true, "", "", err
	}
	// Cost so far accrues at the old bid; from now on at the new one.
	c.accrue(req)
	st.HourlyPrice = ptr(bid)
	c.rebids.Store(st.MachineName, rebidRecord{bid: bid, at: now})
	c.metrics.Rebids.WithLabelValues(st.Provider).Inc()
	st.Message = fmt.Sprintf("instance %s was outbid (minimum bid $%.3f/h); bid raised from $%.3f to $%.3f/h (spot cap %s), waiting for it to resume",
		inst.ID, inst.MinBid, current, bid, capString(cap))
	c.event(req, corev1.EventTypeNormal, "Rebid", "%s", st.Message)
	logger.Info("outbid; bid raised", "machine", st.MachineName, "instance", inst.ID, "from", current, "to", bid, "minBid", inst.MinBid, "cap", cap)
	return c.cfg.PollInterval, true, "", "", nil
}

// lostBidNodeGrace decides whether a Ready bid-market spot machine whose
// Node is gone may be waited for instead of interrupted: an outbid machine
// stops, its kubelet with it, and its Node may go before the provider's
// listing shows the lost bid; a re-bid machine's Node comes back when it
// resumes. It waits (ok) until a listing that started after the Node was
// found gone (plus listMargin) has been seen, and for NodeNotReadyGrace
// after a re-bid. Anything else is the NodeDeleted interruption.
func (c *Controller) lostBidNodeGrace(s *syncCtx, listedAt time.Time) (time.Duration, bool) {
	st := &s.req.Status
	if _, ok := c.providers[st.Provider].(providers.Bidder); !ok || !st.Spot {
		return 0, false
	}
	now := c.clock.Now()
	v, _ := c.nodeGone.LoadOrStore(st.MachineName, now)
	gone := v.(time.Time)
	if r, ok := c.rebids.Load(st.MachineName); ok {
		if until := r.(rebidRecord).at.Add(c.cfg.NodeNotReadyGrace); now.Before(until) {
			return clampDelay(min(c.cfg.PollInterval, until.Sub(now))), true
		}
	}
	if !listedAt.After(gone.Add(listMargin)) {
		return clampDelay(min(c.cfg.PollInterval, gone.Add(listMargin).Sub(now)+c.cfg.PollInterval)), true
	}
	c.nodeGone.Delete(st.MachineName)
	return 0, false
}
