package controller

import (
	"fmt"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/budget"
)

// Cost: accumulatedCost is the hourly price times the time billed. A sync
// may accrue more than once before its one status write (an interruption
// accrues the old machine's last minutes before the relaunch's write-ahead
// record); what it accrued is counted in gpu_operator_cost_dollars_total
// only once that write succeeds (pendingCost), so a failed write, retried
// from the stored status, is never counted twice.

// costDelta is cost accrued in memory, not yet written.
type costDelta struct {
	provider, gpuType, spot string
	dollars                 float64
}

// billing reports whether the request's current machine is (or may be) billing.
func billing(st *tgpv1.GPURequestStatus) bool { return budget.Billing(st) }

// accrue adds the current machine's price times the time since the last
// update to accumulatedCost and remembers the amount for the metric.
func (c *Controller) accrue(req *tgpv1.GPURequest) {
	if d := c.accrued(req); d > 0 {
		st := &req.Status
		delta := costDelta{provider: st.Provider, gpuType: req.Spec.GPUType, spot: fmt.Sprint(st.Spot), dollars: d}
		prev, _ := c.pendingCost.Load(req.UID)
		list, _ := prev.([]costDelta)
		c.pendingCost.Store(req.UID, append(list, delta))
	}
}

// countCost moves what was accrued for a request into the cost metric,
// after its status was written (or drops it when the write failed).
func (c *Controller) countCost(req *tgpv1.GPURequest, written bool) {
	v, ok := c.pendingCost.LoadAndDelete(req.UID)
	if !ok || !written {
		return
	}
	for _, d := range v.([]costDelta) {
		c.metrics.Cost.WithLabelValues(d.provider, d.gpuType, d.spot).Add(d.dollars)
	}
}

// accrued brings accumulatedCost and monthCost up to now together
// (budget.Accrue: GPUBudgets count monthCost) and returns the dollars added.
func (c *Controller) accrued(req *tgpv1.GPURequest) float64 {
	return budget.Accrue(&req.Status, c.clock.Now())
}
