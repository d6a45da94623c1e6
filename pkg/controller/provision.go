package controller

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"text/template"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/selector"
	"github.com/solanyn/gpu-operator/pkg/selector/specreq"
)

// summaryLen keeps the selection summary short enough for kubectl describe.
const summaryLen = 320

// Select ranks the cached offers for a request exactly as the controller
// launches from them (the offers CLI ranks with the same specreq mapping and
// selector, over a catalog it fetches itself).
func (c *Controller) Select(ctx context.Context, req *tgpv1.GPURequest) selector.Result {
	offers, version := c.catalog.Current(ctx)
	c.indexMu.Lock()
	if c.index == nil || c.indexVersion != version {
		c.index, c.indexVersion = selector.NewIndex(offers), version
		c.publishOfferPrices(offers)
	}
	idx := c.index
	c.indexMu.Unlock()
	return idx.Select(specreq.RequestFromSpec(req.Spec), c.unavailableNow())
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
func (c *Controller) provision(ctx context.Context, req *tgpv1.GPURequest) (time.Duration, error) {
	logger := klog.FromContext(ctx)
	st := &req.Status
	c.ensureConditions(req)
	res := c.Select(ctx, req)
	summary := res.Summary(summaryLen)
	if res.Eligible == 0 {
		return c.noOffers(ctx, req, res, summary)
	}
	var (
		failures []string
		// skip holds providers not to ask again in this sync (rate limited
		// or rejecting our credentials); their other offers are passed over.
		skip      = map[string]bool{}
		throttled time.Duration
		launches  int
	)
	newName := st.MachineName == ""
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
		if newName {
			st.Attempt++
			st.MachineName = machineName(req.UID, st.Attempt)
			newName = false
		}
		userData, err := c.renderBootstrap(ctx, req, offer)
		if err != nil {
			msg := fmt.Sprintf("cannot render the bootstrap user data: %v", err)
			st.Phase, st.Message = tgpv1.PhasePending, msg
			c.setCondition(req, tgpv1.ConditionLaunched, metav1.ConditionFalse, "BootstrapError", msg)
			c.event(req, corev1.EventTypeWarning, "BootstrapError", "%s", msg)
			if _, err := c.writeStatus(ctx, req); err != nil {
				return 0, err
			}
			return 30 * time.Second, nil
		}
		// The machine name and the chosen offer reach the API server before
		// the launch call: after a crash the instance is found by that name.
		st.Phase = tgpv1.PhaseProvisioning
		setOffer(st, offer)
		st.InstanceID, st.NodeName, st.PublicIP, st.LaunchedAt = "", "", "", nil
		st.Selection = summary
		st.Message = fmt.Sprintf("launching %s as %s", offer.ID(), st.MachineName)
		c.setCondition(req, tgpv1.ConditionOffersAvailable, metav1.ConditionTrue, "OffersFound", summary)
		out, err := c.writeStatus(ctx, req)
		if err != nil {
			return 0, err
		}
		req, st = out, &out.Status

		if launches++; len(failures) > 0 {
			c.metrics.Failovers.Inc() // the previous offer failed; this is the next
		}
		inst, err := p.Launch(ctx, providers.LaunchRequest{Name: st.MachineName, Offer: offer, UserData: userData, Tags: c.machineTags(req)})
		c.metrics.observeCall(offer.Provider, "launch", err)
		result := "success"
		if err != nil {
			result = string(providers.ClassOf(err))
		}
		c.metrics.Launches.WithLabelValues(offer.Provider, offer.Region, fmt.Sprint(offer.Capacity == providers.Spot), result).Inc()
		if err == nil {
			// The name and offer are in status already; the instance is
			// recorded when the poller first lists it, in the same write as
			// its state (one status write per launch instead of two).
			c.launchedHere.Store(st.MachineName, c.clock.Now())
			c.event(req, corev1.EventTypeNormal, "Launched", "launched %s as %s (instance %s) at $%.2f/h", offer.ID(), st.MachineName, inst.ID, offer.HourlyPrice)
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
		case providers.ClassTransient:
			// The outcome is unknown: the provider may have created the
			// machine. Never reuse the name; the collector reaps it if so.
			c.unavailable.Mark(offer.Key(), string(providers.ClassTransient))
			newName = true
		default:
			c.unavailable.Mark(offer.Key(), string(providers.ClassOf(err)))
		}
	}
	msg := fmt.Sprintf("launch failed on %d offer(s): %s", len(failures), joinMax(failures, 4))
	if len(failures) == 0 {
		msg = "every eligible offer's provider is rate limiting or rejecting the credentials; retrying"
	}
	st.Phase, st.Message = tgpv1.PhasePending, msg
	c.setCondition(req, tgpv1.ConditionLaunched, metav1.ConditionFalse, "LaunchFailed", msg)
	if _, err := c.writeStatus(ctx, req); err != nil {
		return 0, err
	}
	delay := c.retryDelay()
	if throttled > 0 {
		// Spread the retries of requests throttled together.
		delay = min(delay, throttled+rand.N(throttled/2+time.Millisecond))
	}
	return delay, nil
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

func (c *Controller) noOffers(ctx context.Context, req *tgpv1.GPURequest, res selector.Result, summary string) (time.Duration, error) {
	st := &req.Status
	reason := "NoEligibleOffers"
	if res.Considered > 0 && res.Counts[selector.WrongGPUType] == res.Considered {
		reason = "UnknownGPUType"
		summary = fmt.Sprintf("no provider offers GPU type %q (%d offers considered); check spec.gpuType", req.Spec.GPUType, res.Considered)
	} else if res.Considered == 0 {
		reason = "NoCatalog"
		summary = "no provider catalog is available yet"
	}
	changed := st.Phase != tgpv1.PhasePending || st.Message != summary || st.ObservedGeneration != req.Generation
	if changed {
		st.Phase, st.Message, st.Selection = tgpv1.PhasePending, summary, summary
		c.setCondition(req, tgpv1.ConditionOffersAvailable, metav1.ConditionFalse, reason, summary)
		c.setCondition(req, tgpv1.ConditionReady, metav1.ConditionFalse, reason, summary)
		c.event(req, corev1.EventTypeWarning, reason, "%s", summary)
		if _, err := c.writeStatus(ctx, req); err != nil {
			return 0, err
		}
	}
	return c.retryDelay(), nil
}

// recordLaunch records, in memory, that the request's machine exists: the
// caller's next status write persists it.
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
func (c *Controller) resumeProvisioning(ctx context.Context, req *tgpv1.GPURequest) (time.Duration, error) {
	st := &req.Status
	inst, found, listedAt := c.inventory.Lookup(st.Provider, st.MachineName)
	if listedAt.IsZero() {
		// The provider has not been listed since this process started.
		return c.cfg.PollInterval, nil
	}
	at, ours := c.launchedHere.Load(st.MachineName)
	switch {
	case found && inst.State.Alive():
		launchedAt := c.clock.Now()
		if ours {
			launchedAt = at.(time.Time)
		} else {
			c.event(req, corev1.EventTypeNormal, "Adopted", "found instance %s launched as %s; adopting it", inst.ID, st.MachineName)
		}
		c.recordLaunch(req, inst, launchedAt)
		return c.track(ctx, req, true)
	case ours && listedAt.After(at.(time.Time).Add(listMargin)):
		return c.interrupt(ctx, req, "InstanceVanished", fmt.Sprintf("instance %s disappeared before %s listed it", st.MachineName, st.Provider))
	case ours:
		return c.cfg.PollInterval, nil // the poller enqueues the request when it lists the machine
	case found:
		// Launched once already and gone: a name is never launched twice.
		st.MachineName = ""
	}
	return c.provision(ctx, req)
}

// machineTags label the machine at the provider, where tags exist.
func (c *Controller) machineTags(req *tgpv1.GPURequest) map[string]string {
	return map[string]string{
		"tgp.solanyn.com/request":   req.Name,
		"tgp.solanyn.com/namespace": req.Namespace,
	}
}

// bootstrapData is what a bootstrap template sees.
type bootstrapData struct {
	NodeName         string
	RequestName      string
	RequestNamespace string
	Provider         string
	Region           string
	Labels           map[string]string
	Taints           []tgpv1.NodeTaint
	// KubeletLabels and KubeletTaints are Labels and Taints in the form of
	// kubelet's --node-labels and --register-with-taints flags, so the Node
	// registers already labelled and tainted (no workload lands on it first).
	KubeletLabels string
	KubeletTaints string
}

// defaultBootstrap is used without spec.bootstrap: it names the host and
// hands the labels and taints to the kubelet of a pre-baked image.
const defaultBootstrap = `#cloud-config
hostname: {{ .NodeName }}
write_files:
  - path: /etc/default/kubelet
    content: |
      KUBELET_EXTRA_ARGS="--node-labels={{ .KubeletLabels }} --register-with-taints={{ .KubeletTaints }}"
`

func kubeletLabels(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + labels[k]
	}
	return strings.Join(parts, ",")
}

func kubeletTaints(taints []tgpv1.NodeTaint) string {
	parts := make([]string, len(taints))
	for i, t := range taints {
		parts[i] = t.Key + "=" + t.Value + ":" + string(t.Effect)
	}
	return strings.Join(parts, ",")
}

// renderBootstrap renders the request's user-data template for one machine.
func (c *Controller) renderBootstrap(ctx context.Context, req *tgpv1.GPURequest, offer providers.Offer) (string, error) {
	text := defaultBootstrap
	if b := req.Spec.Bootstrap; b != nil {
		secret, err := c.kube.CoreV1().Secrets(req.Namespace).Get(ctx, b.SecretName, metav1.GetOptions{})
		if err != nil {
			return "", fmt.Errorf("reading Secret %s/%s: %w", req.Namespace, b.SecretName, err)
		}
		key := b.Key
		if key == "" {
			key = "userdata"
		}
		data, ok := secret.Data[key]
		if !ok {
			return "", fmt.Errorf("Secret %s/%s has no key %q", req.Namespace, b.SecretName, key)
		}
		text = string(data)
	}
	tmpl, err := template.New("bootstrap").Option("missingkey=error").Parse(text)
	if err != nil {
		return "", fmt.Errorf("parsing the template: %w", err)
	}
	var buf bytes.Buffer
	labels := nodeLabels(req, offer.Provider, offer.Region, offer.Capacity == providers.Spot)
	err = tmpl.Execute(&buf, bootstrapData{
		NodeName:         req.Status.MachineName,
		RequestName:      req.Name,
		RequestNamespace: req.Namespace,
		Provider:         offer.Provider,
		Region:           offer.Region,
		Labels:           labels,
		Taints:           req.Spec.NodeTaints,
		KubeletLabels:    kubeletLabels(labels),
		KubeletTaints:    kubeletTaints(req.Spec.NodeTaints),
	})
	if err != nil {
		return "", fmt.Errorf("rendering the template: %w", err)
	}
	return buf.String(), nil
}
