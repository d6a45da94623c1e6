package controller

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/budget"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/selector"
	"github.com/solanyn/gpu-operator/pkg/selector/specreq"
)

// The launch stage: select an offer, write the write-ahead record, launch,
// fail over; adopt a machine found by name. It owns the OffersAvailable and
// Launched conditions and the Pending and Provisioning phases.

// summaryLen keeps the selection summary short enough for kubectl describe.
const summaryLen = 320

// Select ranks the cached offers for a request exactly as the controller
// launches from them (the offers CLI ranks with the same specreq mapping and
// selector, over a catalog it fetches itself).
// A request with a bootstrap Secret is ranked as if every provider could run
// it (the offers CLI does not read Secrets); one without is ranked with the
// default template, as the controller does.
func (c *Controller) Select(ctx context.Context, req *tgpv1.GPURequest) selector.Result {
	sreq := specreq.RequestFromSpec(req.Spec)
	if req.Spec.Container == nil && req.Spec.Bootstrap == nil {
		sreq.NoBootstrap = c.noBootstrap(defaultBootstrap())
	}
	return c.selectFor(ctx, sreq)
}

// selectFor ranks the cached offers for a selector request, passing over
// what availability.go says is unavailable now.
func (c *Controller) selectFor(ctx context.Context, sreq selector.Request) selector.Result {
	offers, version := c.catalog.Current(ctx)
	c.indexMu.Lock()
	if c.index == nil || c.indexVersion != version {
		c.index, c.indexVersion = selector.NewIndex(offers), version
		c.publishOfferPrices(offers)
	}
	idx := c.index
	c.indexMu.Unlock()
	return idx.Select(sreq, c.unavailableNow())
}

// publishOfferPrices exports the lowest price per offer group.
func (c *Controller) publishOfferPrices(offers []providers.Offer) {
	c.metrics.OfferPrice.Reset()
	type k struct{ p, r, g, n, cap string }
	low := map[k]float64{}
	for _, o := range offers {
		key := k{o.Provider, o.Region, o.GPUType, fmt.Sprint(o.GPUCount), string(o.Capacity)}
		if v, ok := low[key]; !ok || o.HourlyPrice < v {
			low[key] = o.HourlyPrice
		}
	}
	for key, v := range low {
		c.metrics.OfferPrice.WithLabelValues(key.p, key.r, key.g, key.n, key.cap).Set(v)
	}
}

// provision selects the best offer and launches it, failing over to the
// next ranked offer on capacity, quota or provider errors, up to a bound.
func (c *Controller) provision(s *syncCtx) (time.Duration, error) {
	ctx, req := s.ctx, s.req
	logger := klog.FromContext(ctx)
	st := &req.Status
	c.ensureConditions(req)
	// What the machine runs comes first: it decides which providers can
	// serve the request (a VM needs a bootstrap its provider runs).
	var (
		templates bootstrapSet
		values    map[string]string
		container *providers.ContainerSpec
		err       error
	)
	sreq := specreq.RequestFromSpec(req.Spec)
	if req.Spec.Container != nil {
		container, err = c.containerSpec(ctx, req)
	} else if templates, values, err = c.bootstrapTemplates(ctx, req); err == nil {
		sreq.NoBootstrap = c.noBootstrap(templates)
	}
	if err != nil {
		return c.bootstrapError(s, err)
	}
	res := c.selectFor(ctx, sreq)
	summary := res.Summary(summaryLen)
	if res.Eligible == 0 {
		return c.noOffers(s, res, summary)
	}
	// What the namespace's GPUBudgets still allow, read once; the offer
	// chosen is reserved again under the ledger's lock before its launch.
	room, err := c.headroom(req)
	if err != nil {
		return 0, err
	}
	var (
		failures []string
		// skip holds providers not to ask again in this sync (rate limited,
		// rejecting our credentials, or an ambiguous launch answer); their
		// other offers are passed over.
		skip      = map[string]bool{}
		throttled time.Duration
		launches  int
		invalid   int
		// refused is the first budget refusal; overBudget counts them.
		refused    *budget.OverBudgetError
		overBudget int
		// unbiddable counts Spot offers on a bid market passed over
		// because no bid at or under the spot cap wins them (bids.go).
		unbiddable int
	)
	if currentMachine(req) == "" {
		st.MachineName = "" // a name that is not the request's is never launched
	}
	// Ranked merges the offers lazily: a sync that launches after a few
	// attempts never ranks the rest.
	for offer := range res.Ranked() {
		if launches >= c.cfg.MaxLaunchesPerSync {
			break
		}
		p, ok := c.providers[offer.Provider]
		if !ok || skip[offer.Provider] || c.isUnavailable(offer.Key()) {
			continue
		}
		// What the machine costs: the offer's price, or on a bid market
		// the bid placed for a Spot offer (bids.go).
		price, bid, biddable := launchPrice(p, offer, req.Spec)
		if !biddable {
			unbiddable++
			continue
		}
		if err := room.Admit(price, int32(offer.GPUCount)); err != nil {
			refused, overBudget = firstRefusal(refused, err), overBudget+1
			continue
		}
		if container == nil && providers.DeliveryOf(p) == providers.DeliverOverSSH {
			// The adapter registers the operator's public key before it
			// creates the VM; the key pair is read or made here (ssh.go).
			if _, err := c.sshKeys.Ensure(ctx); err != nil {
				return 0, err
			}
		}
		name, attempt := st.MachineName, st.Attempt
		if name == "" {
			attempt++
			name = machineName(req.UID, attempt)
		}
		// The headroom is held from here, before the render (which may mint
		// a join token) and the write-ahead record, until the launch's
		// outcome is known: another worker launching in the same namespace
		// meanwhile sees it taken, and an offer it loses to leaves nothing
		// behind.
		priced := offer
		priced.HourlyPrice = price // the budget holds what is paid: the bid
		held, err := c.reserve(req, name, priced)
		if _, over := budget.AsOverBudget(err); over {
			refused, overBudget = firstRefusal(refused, err), overBudget+1
			continue
		}
		if err != nil {
			return 0, err
		}
		template, _ := templates.pick(p) // selection passed over providers without one
		userData, err := c.render(ctx, req, template, values, name, offer)
		if err != nil {
			held.release()
			return c.bootstrapError(s, err)
		}
		// The write-ahead record: the machine name and the chosen offer reach
		// the API server before the launch call, so after a crash the
		// instance is found by that name and adopted, never launched twice.
		st.Phase, st.MachineName, st.Attempt = tgpv1.PhaseProvisioning, name, attempt
		setOffer(st, offer)
		st.HourlyPrice = ptr(price)
		st.InstanceID, st.NodeName, st.PublicIP, st.LaunchedAt, st.Ports = "", "", "", nil, nil
		st.Selection = summary
		st.Message = fmt.Sprintf("launching %s as %s", offer.ID(), st.MachineName)
		c.setCondition(req, tgpv1.ConditionOffersAvailable, metav1.ConditionTrue, "OffersFound", summary)
		if err := c.writeAhead(s); err != nil {
			held.release()
			return 0, err
		}

		if launches++; len(failures) > 0 {
			c.metrics.Failovers.Inc() // the previous offer failed; this is the next
		}
		inst, err := p.Launch(ctx, providers.LaunchRequest{Name: st.MachineName, Offer: offer, UserData: userData, Container: container, Tags: c.machineTags(req), BidPrice: bid})
		c.metrics.observeCall(offer.Provider, "launch", err)
		result := "success"
		if err != nil {
			result = string(providers.ClassOf(err))
		}
		if err == nil || providers.ClassOf(err) == providers.ClassTransient {
			held.commit() // launched, or maybe: the machine counts until status shows it or it is gone
		} else {
			held.release()
		}
		c.metrics.Launches.WithLabelValues(offer.Provider, offer.Region, fmt.Sprint(offer.Capacity == providers.Spot), result).Inc()
		if err == nil {
			// The name and offer are in status already; the instance is
			// recorded when the poller first lists it, in the same write as
			// its state (one status write per launch instead of two).
			c.launchedHere.Store(st.MachineName, c.clock.Now())
			if bid > 0 {
				c.event(req, corev1.EventTypeNormal, "Launched", "launched %s as %s (instance %s) with a bid of $%.3f/h (minimum bid $%.3f/h, spot cap %s)",
					offer.ID(), st.MachineName, inst.ID, bid, offer.HourlyPrice, capString(spotCap(req.Spec)))
			} else {
				c.event(req, corev1.EventTypeNormal, "Launched", "launched %s as %s (instance %s) at $%.2f/h", offer.ID(), st.MachineName, inst.ID, offer.HourlyPrice)
			}
			logger.Info("launched", "machine", st.MachineName, "provider", offer.Provider, "instanceType", offer.InstanceType,
				"region", offer.Region, "capacity", offer.Capacity, "price", price, "bid", bid)
			return c.cfg.PollInterval, nil
		}
		logger.Info("launch failed", "offer", offer.ID(), "machine", st.MachineName, "err", err)
		c.event(req, corev1.EventTypeWarning, "LaunchFailed", "%s: %v", offer.ID(), err)
		failures = append(failures, fmt.Sprintf("%s: %s", offer.ID(), providers.ClassOf(err)))
		switch providers.ClassOf(err) {
		case providers.ClassRateLimited:
			// Nothing was created. Try other providers now, this one when
			// it allows.
			wait, _ := providers.RetryAfterOf(err)
			throttled = max(throttled, wait, time.Second)
			skip[offer.Provider] = true
		case providers.ClassUnauthorized:
			// The offer is fine, the key is not: skip the provider until the
			// block expires or the credentials Secret changes.
			c.blockProvider(offer.Provider, c.cfg.AuthRetryDelay)
			skip[offer.Provider] = true
		case providers.ClassInvalid:
			// The provider refused this request's input (too large, a field
			// it does not accept): that says nothing about the offering, so
			// it is not marked unavailable for anyone else. The name was
			// never used; the next offer may take it.
			invalid++
		case providers.ClassTransient:
			// The outcome is unknown: the provider may have created the
			// machine (a timeout, a 500 after the create). Look for it by
			// name before retiring the name.
			if found, ok := c.findLaunched(ctx, p, st.MachineName); ok {
				c.launchedHere.Store(st.MachineName, c.clock.Now())
				c.event(req, corev1.EventTypeNormal, "Adopted", "%s answered %s, but instance %s exists as %s; adopting it", offer.Provider, providers.ClassTransient, found.ID, st.MachineName)
				logger.Info("adopted after an ambiguous launch answer", "machine", st.MachineName, "instance", found.ID)
				return c.cfg.PollInterval, nil
			}
			// Not listed (yet): the machine may still appear (RunPod has
			// answered 500 after creating a pod). Launch nothing else until a
			// listing that starts after this answer settles it: the request
			// stays Provisioning under this name, adopted if the machine
			// shows up, and only then failed over (resumeProvisioning).
			c.ambiguous.Store(st.MachineName, c.clock.Now())
			st.Message = fmt.Sprintf("%s gave no definite answer to the launch of %s; waiting for its listing before launching anything else", offer.Provider, st.MachineName)
			logger.Info("ambiguous launch answer; waiting for a listing", "machine", st.MachineName, "offer", offer.ID(), "err", err)
			return c.cfg.PollInterval, nil
		default:
			c.unavailable.Mark(offer.Key(), string(providers.ClassOf(err)))
		}
	}
	if launches == 0 && refused != nil {
		return c.heldByBudget(s, refused, fmt.Sprintf("%s; %d offer(s) %s", summary, overBudget, budget.ReasonOverBudget))
	}
	msg := fmt.Sprintf("launch failed on %d offer(s): %s", len(failures), joinMax(failures, 4))
	reason := "LaunchFailed"
	switch {
	case len(failures) == 0 && unbiddable > 0:
		reason = "NoWinningBid"
		msg = "no offer could be launched"
	case len(failures) == 0:
		msg = "every eligible offer's provider is rate limiting or rejecting the credentials; retrying"
	case invalid == len(failures):
		reason = string(providers.ClassInvalid)
		msg = fmt.Sprintf("every provider tried refused this request as invalid: %s", joinMax(failures, 4))
	}
	if unbiddable > 0 {
		msg += fmt.Sprintf("; %d spot offer(s) passed over: no bid at or under the spot cap (%s) wins them", unbiddable, capString(spotCap(req.Spec)))
	}
	st.Phase, st.Message = tgpv1.PhasePending, msg
	c.setCondition(req, tgpv1.ConditionLaunched, metav1.ConditionFalse, reason, msg)
	delay := c.retryDelay()
	if throttled > 0 {
		// Spread the retries of requests throttled together.
		delay = min(delay, throttled+rand.N(throttled/2+time.Millisecond))
	}
	return delay, nil
}

// findLaunched lists the provider's instances once and returns the live one
// launched under name, if any.
func (c *Controller) findLaunched(ctx context.Context, p providers.Provider, name string) (providers.Instance, bool) {
	list, err := p.Instances(ctx)
	c.metrics.observeCall(p.Name(), "list_instances", err)
	if err != nil {
		return providers.Instance{}, false
	}
	for _, in := range list {
		if in.Name == name && in.State.Alive() {
			return in, true
		}
	}
	return providers.Instance{}, false
}

// firstRefusal keeps the first budget refusal of a sync, for its message.
func firstRefusal(first *budget.OverBudgetError, err error) *budget.OverBudgetError {
	if first != nil {
		return first
	}
	obe, _ := budget.AsOverBudget(err)
	return obe
}

func setOffer(st *tgpv1.GPURequestStatus, o providers.Offer) {
	st.Provider, st.Region, st.ProviderRegion = o.Provider, o.Region, o.ProviderRegion
	st.InstanceType, st.Spot = o.InstanceType, o.Capacity == providers.Spot
	st.HourlyPrice, st.PriceSource = ptr(o.HourlyPrice), string(o.PriceSource)
}

func joinMax(items []string, n int) string {
	if len(items) <= n {
		return fmt.Sprint(items)
	}
	return fmt.Sprintf("%v and %d more", items[:n], len(items)-n)
}

// retryDelay is when a request with no launchable offer looks again: when an
// unavailable offering expires or the catalog refreshes, whichever is first.
func (c *Controller) retryDelay() time.Duration {
	next := c.catalog.NextRefresh()
	if exp, ok := c.unavailable.NextExpiry(); ok && exp.Before(next) {
		next = exp
	}
	// A refresh also enqueues every Pending request; this is the fallback.
	return max(next.Sub(c.clock.Now()), 5*time.Second)
}

func (c *Controller) noOffers(s *syncCtx, res selector.Result, summary string) (time.Duration, error) {
	req := s.req
	st := &req.Status
	reason := "NoEligibleOffers"
	if res.Considered > 0 && res.Counts[selector.WrongGPUType] == res.Considered {
		reason = "UnknownGPUType"
		summary = fmt.Sprintf("no provider offers GPU type %q (%d offers considered); check spec.gpuType", req.Spec.GPUType, res.Considered)
	} else if res.Considered == 0 {
		reason = "NoCatalog"
		summary = "no provider catalog is available yet"
	}
	if st.Phase != tgpv1.PhasePending || st.Message != summary || st.ObservedGeneration != req.Generation {
		st.Phase, st.Message, st.Selection = tgpv1.PhasePending, summary, summary
		c.setCondition(req, tgpv1.ConditionOffersAvailable, metav1.ConditionFalse, reason, summary)
		c.setCondition(req, tgpv1.ConditionReady, metav1.ConditionFalse, reason, summary)
		c.event(req, corev1.EventTypeWarning, reason, "%s", summary)
	}
	return c.retryDelay(), nil
}

// recordLaunch records, in memory, that the request's machine exists: the
// sync's final write persists it.
func (c *Controller) recordLaunch(req *tgpv1.GPURequest, inst providers.Instance, launchedAt time.Time) {
	st := &req.Status
	at := metav1.NewTime(launchedAt)
	st.Phase, st.InstanceID, st.PublicIP = tgpv1.PhaseBooting, inst.ID, inst.PublicIP
	st.LaunchedAt = &at
	if st.ProvisionedAt == nil {
		st.ProvisionedAt = &at
	}
	st.CostUpdatedAt = &at // billing starts at the launch
	if st.AccumulatedCost == nil {
		st.AccumulatedCost = ptr(0.0)
	}
	st.Message = fmt.Sprintf("%s instance %s launched, booting", st.Provider, inst.ID)
	price := 0.0
	if st.HourlyPrice != nil {
		price = *st.HourlyPrice
	}
	c.setCondition(req, tgpv1.ConditionLaunched, metav1.ConditionTrue, "Launched",
		fmt.Sprintf("%s %s in %s (%s) at $%.2f/h as %s", st.Provider, st.InstanceType, st.Region, capacity(st.Spot), price, st.MachineName))
}

// resumeProvisioning continues a request whose status names a machine but no
// instance: launched by this process and not listed yet, or found after a
// crash, or not launched (a rate-limited attempt, or a crash before the
// call). A listed machine is recorded (adopted if another process launched
// it); an unlaunched name is launched.
func (c *Controller) resumeProvisioning(s *syncCtx) (time.Duration, error) {
	req := s.req
	st := &req.Status
	if currentMachine(req) == "" {
		return c.provision(s)
	}
	inst, found, listedAt := c.inventory.Lookup(st.Provider, st.MachineName)
	if listedAt.IsZero() {
		// The provider has not been listed since this process started.
		return c.cfg.PollInterval, nil
	}
	at, ours := c.launchedHere.Load(st.MachineName)
	answeredAt, ambiguous := c.ambiguous.Load(st.MachineName)
	switch {
	case found && inst.State.Alive():
		launchedAt := c.clock.Now()
		switch {
		case ours:
			launchedAt = at.(time.Time)
		case ambiguous:
			c.ambiguous.Delete(st.MachineName)
			c.event(req, corev1.EventTypeNormal, "Adopted", "%s answered the launch ambiguously, but instance %s exists as %s; adopting it", st.Provider, inst.ID, st.MachineName)
			klog.FromContext(s.ctx).Info("adopted after an ambiguous launch answer", "machine", st.MachineName, "instance", inst.ID)
		default:
			c.event(req, corev1.EventTypeNormal, "Adopted", "found instance %s launched as %s; adopting it", inst.ID, st.MachineName)
		}
		c.recordLaunch(req, inst, launchedAt)
		return c.track(s)
	case ambiguous && listedAt.After(answeredAt.(time.Time).Add(listMargin)):
		// Listed after the answer and not there: nothing was created. The
		// name is retired all the same (a machine that appears even later
		// is unclaimed and the collector reaps it), the offering marked,
		// and the next offer launched.
		c.ambiguous.Delete(st.MachineName)
		c.unavailable.Mark(offeringOf(st), string(providers.ClassTransient))
		st.MachineName = ""
		return c.provision(s)
	case ambiguous:
		return c.cfg.PollInterval, nil // the poller enqueues the request when it lists
	case ours && listedAt.After(at.(time.Time).Add(listMargin)):
		return c.interrupt(s, nil, "InstanceVanished", fmt.Sprintf("instance %s disappeared before %s listed it", st.MachineName, st.Provider))
	case ours:
		return c.cfg.PollInterval, nil // the poller enqueues the request when it lists the machine
	case found:
		// Launched once already and gone: a name is never launched twice.
		st.MachineName = ""
	}
	return c.provision(s)
}

// machineTags label the machine at the provider, where tags exist.
func (c *Controller) machineTags(req *tgpv1.GPURequest) map[string]string {
	return map[string]string{
		"tgp.solanyn.com/request":   req.Name,
		"tgp.solanyn.com/namespace": req.Namespace,
	}
}
