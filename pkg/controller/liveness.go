package controller

import (
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// Liveness: a machine lost to the provider (preempted, stopped, vanished)
// or a Node gone or NotReady is an interruption, recovered by a relaunch. It
// owns the Interrupted condition and phase.

// interrupt records that the current machine was lost, cleans it up and
// launches a replacement in the same sync.
func (c *Controller) interrupt(s *syncCtx, inst *providers.Instance, cause, msg string) (time.Duration, error) {
	ctx, req := s.ctx, s.req
	st := &req.Status
	nodes := c.ownedNodes(req)
	c.unavailable.Mark(offeringOf(st), cause)
	c.metrics.Interruptions.WithLabelValues(st.Provider, st.Region, req.Spec.GPUType).Inc()
	c.accrue(req)
	c.deleteJoinToken(ctx, st.MachineName)
	st.Interruptions++
	st.Phase, st.Message = tgpv1.PhaseInterrupted, msg
	st.MachineName, st.InstanceID, st.NodeName, st.PublicIP, st.Ports = "", "", "", "", nil
	st.CostUpdatedAt, st.IdleSince, st.ReadyAt, st.LaunchedAt = nil, nil, nil, nil
	c.setCondition(req, tgpv1.ConditionInterrupted, metav1.ConditionTrue, cause, msg)
	c.setCondition(req, tgpv1.ConditionReady, metav1.ConditionFalse, "Interrupted", msg)
	c.setCondition(req, tgpv1.ConditionNodeJoined, metav1.ConditionFalse, "Interrupted", msg)
	c.setCondition(req, tgpv1.ConditionLaunched, metav1.ConditionFalse, "Interrupted", msg)
	c.event(req, corev1.EventTypeWarning, "Interrupted", "%s; relaunching", msg)
	// No write here: the relaunch below writes its write-ahead record (or,
	// with nothing to launch, its final status), and that write carries the
	// interruption. Until then the stored status still names the old
	// machine; a crash in between finds it interrupted again.
	klog.FromContext(ctx).Info("interrupted; relaunching", "cause", cause, "message", msg)
	// The old machine is no longer claimed: if anything below fails, the
	// leaked-instance collector terminates it after its grace period.
	if inst != nil {
		if err := c.terminateInstance(ctx, *inst); err != nil {
			klog.FromContext(ctx).Error(err, "terminating the interrupted instance; the collector will retry", "instance", inst.ID)
		}
	}
	for _, n := range nodes {
		if err := c.deleteNode(ctx, n); err != nil {
			klog.FromContext(ctx).Error(err, "deleting the interrupted machine's Node", "node", klog.KObj(n))
		}
	}
	return c.provision(s)
}

// offeringOf is the offering of the request's current machine, as status records it.
func offeringOf(st *tgpv1.GPURequestStatus) providers.OfferingKey {
	return providers.OfferingKey{Provider: st.Provider, InstanceType: st.InstanceType, Region: st.ProviderRegion, Capacity: capacity(st.Spot)}
}

func capacity(spot bool) providers.CapacityType {
	if spot {
		return providers.Spot
	}
	return providers.OnDemand
}
