package controller

import (
	"context"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	"github.com/solanyn/gpu-operator/pkg/providers"
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
		if !providers.IsOperatorMachine(o.Name) {
			continue // adapters list only the operator's machines; never rely on it alone
		}
		if c.terminateSentRecently(o.Instance) {
			continue // a call is out already; counted when it was sent
		}
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
