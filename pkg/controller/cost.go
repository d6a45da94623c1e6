package controller

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
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
func billing(st *tgpv1.GPURequestStatus) bool {
	switch st.Phase {
	case tgpv1.PhaseBooting, tgpv1.PhaseJoining, tgpv1.PhaseReady, tgpv1.PhaseTerminating:
		return st.InstanceID != "" && st.HourlyPrice != nil
	}
	return false
}

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

func (c *Controller) accrued(req *tgpv1.GPURequest) float64 {
	st := &req.Status
	now := metav1.NewTime(c.clock.Now())
	if !billing(st) {
		return 0
	}
	if st.CostUpdatedAt == nil {
		st.CostUpdatedAt = &now
		if st.AccumulatedCost == nil {
			st.AccumulatedCost = ptr(0.0)
		}
		return 0
	}
	hours := now.Sub(st.CostUpdatedAt.Time).Hours()
	if hours <= 0 {
		return 0
	}
	delta := *st.HourlyPrice * hours
	total := delta
	if st.AccumulatedCost != nil {
		total += *st.AccumulatedCost
	}
	st.AccumulatedCost = ptr(roundCents(total))
	st.CostUpdatedAt = &now
	return delta
}

// roundCents keeps accumulatedCost readable (micro-dollar precision).
func roundCents(v float64) float64 {
	return float64(int64(v*1e6+0.5)) / 1e6
}
