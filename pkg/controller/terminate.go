package controller

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// drainPoll is how often a drain in progress is looked at again.
const drainPoll = 2 * time.Second

// terminate ends a request's machine: cordon and drain its Node (Eviction
// API, so PodDisruptionBudgets hold, bounded by the drain timeout), terminate
// the instance, wait until the provider confirms, delete the Node, then mark
// the request Terminated, or release its finalizer when it is being deleted.
func (c *Controller) terminate(ctx context.Context, req *tgpv1.GPURequest, reason string) (time.Duration, error) {
	logger := klog.FromContext(ctx)
	st := &req.Status
	now := c.clock.Now()
	if st.Phase != tgpv1.PhaseTerminating {
		st.Phase, st.TerminationReason = tgpv1.PhaseTerminating, reason
		st.TerminationStartedAt = ptr(metav1.NewTime(now))
		st.Message = fmt.Sprintf("terminating (%s): draining Node, then terminating instance %s", reason, st.InstanceID)
		c.setCondition(req, tgpv1.ConditionReady, metav1.ConditionFalse, reason, st.Message)
		c.event(req, corev1.EventTypeNormal, "Terminating", "%s: cordoning and draining Node %s, then terminating %s instance %s", reason, st.NodeName, st.Provider, st.InstanceID)
		out, err := c.writeStatus(ctx, req)
		if err != nil {
			return 0, err
		}
		req, st = out, &out.Status
	}
	if node := c.findNode(req); node != nil {
		remaining, err := c.drain(ctx, node)
		if err != nil {
			return 0, err
		}
		if remaining > 0 && now.Before(st.TerminationStartedAt.Add(c.cfg.DrainTimeout)) {
			return drainPoll, nil
		}
		if remaining > 0 {
			c.event(req, corev1.EventTypeWarning, "DrainTimeout", "%d pod(s) still on Node %s after %s; terminating anyway", remaining, node.Name, c.cfg.DrainTimeout)
		}
	}

	// Terminate and wait for the provider to confirm.
	inst, found, listedAt := c.inventory.Lookup(st.Provider, st.MachineName)
	gone := (found && inst.State == providers.StateTerminated) ||
		(!found && listedAt.After(st.TerminationStartedAt.Add(listMargin)))
	if !gone {
		id := st.InstanceID
		if id == "" && found {
			id = inst.ID // launched, then the operator restarted before recording it
		}
		if id != "" && !(found && inst.State == providers.StateTerminating) {
			if err := c.terminateInstance(ctx, st.Provider, id); err != nil {
				if wait, ok := providers.RetryAfterOf(err); ok {
					return wait, nil
				}
				return 0, err
			}
			logger.Info("terminate requested", "instance", id, "reason", reason)
		}
		if id == "" && listedAt.IsZero() {
			return c.cfg.PollInterval, nil
		}
		if id != "" || !listedAt.After(st.TerminationStartedAt.Add(listMargin)) {
			// The poller enqueues the request when the instance disappears.
			return c.cfg.PollInterval, nil
		}
	}
	for _, name := range []string{st.NodeName, st.MachineName} {
		if err := c.deleteNode(ctx, name); err != nil {
			return 0, err
		}
	}
	c.accrue(req)
	st.CostUpdatedAt = nil
	msg := fmt.Sprintf("instance %s terminated (%s)", st.InstanceID, reason)
	c.event(req, corev1.EventTypeNormal, "Terminated", "%s", msg)
	if !req.DeletionTimestamp.IsZero() {
		return 0, c.removeFinalizer(ctx, req)
	}
	st.Phase, st.Message = tgpv1.PhaseTerminated, msg
	c.setCondition(req, tgpv1.ConditionReady, metav1.ConditionFalse, "Terminated", msg)
	c.setCondition(req, tgpv1.ConditionNodeJoined, metav1.ConditionFalse, "Terminated", msg)
	_, err := c.writeStatus(ctx, req)
	return 0, err
}

// drain cordons the Node and evicts its workload pods, returning how many
// are still there.
func (c *Controller) drain(ctx context.Context, node *corev1.Node) (int, error) {
	if !node.Spec.Unschedulable {
		n := node.DeepCopy()
		n.Spec.Unschedulable = true
		if _, err := c.kube.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return 0, err
		}
	}
	pods := c.workloadPods(node.Name)
	for _, p := range pods {
		if !p.DeletionTimestamp.IsZero() {
			continue
		}
		err := c.kube.PolicyV1().Evictions(p.Namespace).Evict(ctx, &policyv1.Eviction{
			ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace},
		})
		switch {
		case err == nil, apierrors.IsNotFound(err):
		case apierrors.IsTooManyRequests(err):
			// A PodDisruptionBudget does not allow it yet; try again later.
		default:
			return 0, err
		}
	}
	return len(pods), nil
}
