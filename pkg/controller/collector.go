package controller

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
)

var labelsEverything = labels.Everything()

// runCollector is the leaked-instance collector: every GCInterval it
// terminates provider instances that carry the operator's name prefix but
// that no GPURequest's status claims, once they are older than GCGrace (a
// launch in flight has its name in status already, so it is claimed).
func (c *Controller) runCollector(ctx context.Context) {
	t := c.clock.NewTicker(c.cfg.GCInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			c.CollectOrphans(ctx)
		}
	}
}

// CollectOrphans runs one pass of the leaked-instance collector.
func (c *Controller) CollectOrphans(ctx context.Context) int {
	logger := klog.FromContext(ctx)
	claimed := func(name string) bool {
		objs, err := c.requestIdx.ByIndex(byMachineName, name)
		return err != nil || len(objs) > 0
	}
	n := 0
	for _, o := range c.inventory.Unclaimed(claimed, c.clock.Now().Add(-c.cfg.GCGrace)) {
		if err := c.terminateInstance(ctx, o.Instance); err != nil {
			logger.Error(err, "terminating orphaned instance", "provider", o.Provider, "instance", o.ID, "name", o.Name)
			continue
		}
		logger.Info("terminated orphaned instance", "provider", o.Provider, "instance", o.ID, "name", o.Name, "firstSeen", o.FirstSeen.Format(time.RFC3339))
		c.metrics.OrphansTerminated.WithLabelValues(o.Provider).Inc()
		n++
	}
	return n
}

// requestCollector exports gauges computed from the informer cache at
// scrape time: requests by phase and the hourly spend of launched machines.
type requestCollector struct{ c *Controller }

var (
	phaseDesc = prometheus.NewDesc("gpu_operator_requests", "GPURequests by phase.", []string{"phase"}, nil)
	spendDesc = prometheus.NewDesc("gpu_operator_hourly_spend_dollars", "Summed hourly price of the machines currently launched, by provider.", []string{"provider"}, nil)
)

func (rc *requestCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- phaseDesc
	ch <- spendDesc
}

func (rc *requestCollector) Collect(ch chan<- prometheus.Metric) {
	reqs, err := rc.c.requests.List(labelsEverything)
	if err != nil {
		return
	}
	phases := map[tgpv1.Phase]int{}
	for _, p := range []tgpv1.Phase{tgpv1.PhasePending, tgpv1.PhaseProvisioning, tgpv1.PhaseBooting, tgpv1.PhaseJoining,
		tgpv1.PhaseReady, tgpv1.PhaseInterrupted, tgpv1.PhaseTerminating, tgpv1.PhaseTerminated, tgpv1.PhaseFailed} {
		phases[p] = 0
	}
	spend := map[string]float64{}
	for _, r := range reqs {
		phase := r.Status.Phase
		if phase == "" {
			phase = tgpv1.PhasePending
		}
		phases[phase]++
		if billing(&r.Status) {
			spend[r.Status.Provider] += *r.Status.HourlyPrice
		}
	}
	for p, n := range phases {
		ch <- prometheus.MustNewConstMetric(phaseDesc, prometheus.GaugeValue, float64(n), string(p))
	}
	for p, v := range spend {
		ch <- prometheus.MustNewConstMetric(spendDesc, prometheus.GaugeValue, v, p)
	}
}
