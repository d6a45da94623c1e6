package controller

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// Termination: maxLifetime, idleTimeout, deletion and the join timeout end
// a machine: cordon and drain, terminate (once), confirm, delete the Node.
// It owns the Terminating and Terminated phases.

// drainPoll is how often a drain in progress is looked at again.
const drainPoll = 2 * time.Second

// terminate ends a request's machines: cordon and drain its Nodes (Eviction
// API, so PodDisruptionBudgets hold, bounded by the drain timeout),
// terminate every live instance named with the request's machine prefix
// (one terminate call each), wait until the providers' listings confirm,
// delete the Nodes, then mark the request Terminated, or release its
// finalizer when it is being deleted. Only what ownership proves is the
// request's is touched (ownership.go).
func (c *Controller) terminate(s *syncCtx, reason string) (time.Duration, error) {
	ctx, req := s.ctx, s.req
	logger := klog.FromContext(ctx)
	st := &req.Status
	now := c.clock.Now()
	if st.Phase != tgpv1.PhaseTerminating || st.TerminationStartedAt == nil {
		st.Phase, st.TerminationReason = tgpv1.PhaseTerminating, reason
		st.TerminationStartedAt = ptr(metav1.NewTime(now))
		st.Message = fmt.Sprintf("terminating (%s): draining the Node, then terminating the instance", reason)
		c.setCondition(req, tgpv1.ConditionReady, metav1.ConditionFalse, reason, st.Message)
		c.event(req, corev1.EventTypeNormal, "Terminating", "%s: cordoning and draining Node %s, then terminating %s instance %s", reason, st.NodeName, st.Provider, st.InstanceID)
		logger.Info("terminating", "reason", reason, "machine", st.MachineName)
		// The termination record is written ahead of the terminate calls: a
		// crash after them resumes terminating, never tracking.
		if err := c.writeAhead(s); err != nil {
			return 0, err
		}
	}
	nodes := c.ownedNodes(req)
	remaining := 0
	for _, node := range nodes {
		n, err := c.drain(ctx, node)
		if err != nil {
			return 0, err
		}
		remaining += n
	}
	if remaining > 0 && now.Before(st.TerminationStartedAt.Add(c.cfg.DrainTimeout)) {
		return drainPoll, nil
	}
	if remaining > 0 {
		c.event(req, corev1.EventTypeWarning, "DrainTimeout", "%d pod(s) still running after %s; terminating anyway", remaining, c.cfg.DrainTimeout)
	}

	// Terminate every live instance of the request, then wait until the
	// providers' listings show none.
	live := c.ownedInstances(req)
	for _, in := range live {
		if in.State == providers.StateTerminating {
			continue
		}
		if err := c.terminateInstance(ctx, in); err != nil {
			if wait, ok := providers.RetryAfterOf(err); ok {
				return wait, nil
			}
			return 0, err
		}
	}
	if len(live) > 0 {
		return c.cfg.PollInterval, nil // the poller enqueues the request when they are gone
	}
	// Nothing is listed. A machine launched under the write-ahead record may
	// not be listed yet: wait until its provider was listed after the
	// termination started. No provider in the record means no launch call
	// was ever made (a failed render, no offer): nothing to wait for.
	if st.Provider != "" && currentMachine(req) != "" {
		if _, known := c.providers[st.Provider]; known && !c.inventory.ListedAt(st.Provider).After(st.TerminationStartedAt.Add(listMargin)) {
			return c.cfg.PollInterval, nil
		}
	}
	for _, node := range c.ownedNodes(req) {
		if err := c.deleteNode(ctx, node); err != nil {
			return 0, err
		}
	}
	c.accrue(req)
	st.CostUpdatedAt = nil
	c.forgetReservation(req)
	c.deleteJoinToken(ctx, st.MachineName)
	msg := fmt.Sprintf("instance %s terminated (%s)", st.InstanceID, reason)
	if st.InstanceID == "" {
		msg = fmt.Sprintf("no instance was running (%s)", reason)
	}
	c.event(req, corev1.EventTypeNormal, "Terminated", "%s", msg)
	logger.Info("terminated", "reason", reason, "machine", st.MachineName)
	if !req.DeletionTimestamp.IsZero() {
		return 0, c.release(s)
	}
	st.Phase, st.Message = tgpv1.PhaseTerminated, msg
	c.setCondition(req, tgpv1.ConditionReady, metav1.ConditionFalse, "Terminated", msg)
	c.setCondition(req, tgpv1.ConditionNodeJoined, metav1.ConditionFalse, "Terminated", msg)
	return 0, nil
}

// terminationDue evaluates maxLifetime and idleTimeout for a Ready machine,
// updating terminationScheduledAt and idleSince; it returns how long until
// the earliest one ends the machine (<= 0: now) and why.
func (c *Controller) terminationDue(req *tgpv1.GPURequest, now time.Time) (time.Duration, string, bool) {
	st := &req.Status
	var (
		due    time.Duration
		reason string
	)
	if lifetime, set := parsed(req.Spec.MaxLifetime); set && st.ProvisionedAt != nil {
		at := metav1.NewTime(st.ProvisionedAt.Add(lifetime))
		if st.TerminationScheduledAt == nil || !st.TerminationScheduledAt.Equal(&at) {
			st.TerminationScheduledAt = &at
		}
		due, reason = at.Sub(now), "MaxLifetime"
	} else if st.TerminationScheduledAt != nil {
		st.TerminationScheduledAt = nil
	}
	// The idle clock runs whether or not idleTimeout is set, so a timeout
	// set later counts from when the Node really became idle.
	// A container machine has no Node and no idle time (admission refuses
	// idleTimeout for it).
	if req.Spec.Container != nil || st.NodeName == "" {
		return due, reason, reason != ""
	}
	if c.nodeBusy(st.NodeName) {
		if st.IdleSince != nil {
			st.IdleSince = nil
		}
	} else if st.IdleSince == nil {
		st.IdleSince = ptr(metav1.NewTime(now))
	}
	if timeout, set := parsed(req.Spec.IdleTimeout); set && st.IdleSince != nil {
		if idle := st.IdleSince.Add(timeout).Sub(now); reason == "" || idle < due {
			due, reason = idle, "IdleTimeout"
		}
	}
	return due, reason, reason != ""
}

// terminateInstance asks the instance's provider to terminate it, once: a
// second call for the same instance within terminateRetry is skipped (the
// poller shows the result), so a termination costs one provider call even
// when several syncs run before the next listing. A missing instance is
// success.
func (c *Controller) terminateInstance(ctx context.Context, in providers.Instance) error {
	p, ok := c.providers[in.Provider]
	if !ok || in.ID == "" {
		return nil
	}
	if c.terminateSentRecently(in) {
		return nil
	}
	key := in.Provider + "/" + in.ID
	c.terminateSent.Store(key, c.clock.Now())
	err := p.Terminate(ctx, in.ID)
	c.metrics.observeCall(in.Provider, "terminate", err)
	klog.FromContext(ctx).Info("terminate requested", "provider", in.Provider, "instance", in.ID, "machine", in.Name, "err", err)
	if providers.IsClass(err, providers.ClassNotFound) {
		return nil
	}
	if err != nil {
		c.terminateSent.Delete(key)
	}
	return err
}

// terminateSentRecently reports whether a terminate call for the instance
// went out less than terminateRetry ago.
func (c *Controller) terminateSentRecently(in providers.Instance) bool {
	at, sent := c.terminateSent.Load(in.Provider + "/" + in.ID)
	return sent && c.clock.Now().Sub(at.(time.Time)) < c.terminateRetry()
}

// terminateRetry is how long a terminate call is trusted before it is sent
// again for an instance that is still listed as alive.
func (c *Controller) terminateRetry() time.Duration { return max(4*c.cfg.PollInterval, time.Minute) }

// drain cordons the Node and evicts its workload pods, returning how many
// are still there.
func (c *Controller) drain(ctx context.Context, node *corev1.Node) (int, error) {
	if !node.Spec.Unschedulable {
		patch := []byte(`{"spec":{"unschedulable":true}}`)
		if _, err := c.kube.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager}); err != nil && !apierrors.IsNotFound(err) {
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
