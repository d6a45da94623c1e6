package controller

import (
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/budget"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// The join stage: Booting until the provider says running, Joining until
// the Node is Ready, labelled and carries its GPUs, then Ready; the join
// timeout. It owns the
// NodeJoined and Ready conditions and the Booting, Joining and Ready phases.

// track follows a launched machine: Booting until the provider says running,
// Joining until its Node is Ready and labelled, then Ready, watching for
// interruption, the end of its lifetime or idle time, and accruing cost.
func (c *Controller) track(s *syncCtx) (time.Duration, error) {
	ctx, req := s.ctx, s.req
	st := &req.Status
	now := c.clock.Now()
	machine := currentMachine(req)
	if machine == "" {
		return c.fail(s, "InvalidStatus", fmt.Sprintf("status.machineName %q is not one of this request's machine names; the operator acts only on machines it can prove are this request's", st.MachineName))
	}
	inst, found, listedAt := c.inventory.Lookup(st.Provider, machine)
	// launched is when the launch call returned: a list that started after
	// it (plus the timestamps' second precision) must show the instance.
	launched := now
	if st.LaunchedAt != nil {
		launched = st.LaunchedAt.Time
	}
	switch {
	case !found && listedAt.After(launched.Add(listMargin)):
		return c.interrupt(s, nil, "InstanceVanished", fmt.Sprintf("instance %s is no longer listed by %s", machine, st.Provider))
	case found && inst.Outbid && inst.State == providers.StateInterrupted:
		// A lost bid: raised within the spot cap when that can win
		// (bids.go), an interruption otherwise.
		delay, handled, cause, msg, err := c.rebid(s, inst)
		if handled || err != nil {
			return delay, err
		}
		return c.interrupt(s, &inst, cause, msg)
	case found && (inst.State == providers.StateInterrupted || inst.State == providers.StateTerminated ||
		inst.State == providers.StateFailed || inst.State == providers.StateTerminating):
		return c.interrupt(s, &inst, "Instance"+camel(string(inst.State)), fmt.Sprintf("%s reports instance %s as %s", st.Provider, inst.ID, inst.NativeState))
	}
	var current *providers.Instance
	if found {
		current = &inst
		st.InstanceID = inst.ID // the provider's record wins over status
		if inst.PublicIP != "" {
			st.PublicIP = inst.PublicIP
		}
	}
	if req.Spec.Container != nil {
		return c.trackContainer(s, current, launched, now)
	}
	if st.Phase == tgpv1.PhaseBooting && found && inst.State == providers.StateRunning {
		st.Phase, st.Message = tgpv1.PhaseJoining, "instance running, waiting for its Node"
		c.event(req, corev1.EventTypeNormal, "InstanceRunning", "%s instance %s is running; waiting for Node %s", st.Provider, inst.ID, machine)
		klog.FromContext(ctx).V(2).Info("instance running", "machine", machine, "instance", inst.ID)
	}
	node := c.findNode(req)
	if st.Phase == tgpv1.PhaseBooting || st.Phase == tgpv1.PhaseJoining {
		deadline := launched.Add(c.cfg.JoinTimeout)
		if !now.Before(deadline) {
			return c.joinTimeout(s, current)
		}
		if p := c.providers[st.Provider]; st.Phase == tgpv1.PhaseJoining && found && inst.State == providers.StateRunning &&
			p != nil && providers.DeliveryOf(p) == providers.DeliverOverSSH && (node == nil || !nodeReady(node)) {
			// The provider cannot carry the bootstrap: the operator runs it
			// over SSH, once (ssh.go).
			if delay, proceed, err := c.deliverBootstrap(s, inst, deadline); !proceed || err != nil {
				return delay, err
			}
		}
		if st.Phase != tgpv1.PhaseJoining || node == nil || !nodeReady(node) {
			return clampDelay(deadline.Sub(now)), nil
		}
		if err := c.labelNode(ctx, req, node); err != nil {
			if !permanentNodeError(err) {
				return 0, err
			}
			// Retrying cannot help: say so once and wait for an edit or the join timeout.
			msg := fmt.Sprintf("Node %s is Ready but its labels and taints cannot be applied: %v", node.Name, err)
			if st.Message != msg {
				st.Message = msg
				c.event(req, corev1.EventTypeWarning, "NodeLabelsRefused", "%s", msg)
			}
			return clampDelay(deadline.Sub(now)), nil
		}
		if msg, ok := c.gpusAllocatable(req, node); !ok {
			// Ready but without its GPUs (no device plugin yet): still
			// Joining, under the same join timeout; NodeJoined is left as it is.
			if st.Message != msg {
				st.Message = msg
				c.event(req, corev1.EventTypeNormal, "GPUsNotAllocatable", "%s", msg)
				klog.FromContext(ctx).V(2).Info("node ready without its GPUs", "node", klog.KObj(node), "resource", c.cfg.GPUResourceName)
			}
			c.setCondition(req, tgpv1.ConditionReady, metav1.ConditionFalse, "GPUsNotAllocatable", msg)
			return clampDelay(deadline.Sub(now)), nil
		}
		c.joined(s, node, now)
	} else if node == nil {
		if wait, ok := c.lostBidNodeGrace(s, listedAt); ok {
			return wait, nil // a bid-market machine's Node may be gone because it was outbid (bids.go)
		}
		return c.interrupt(s, current, "NodeDeleted", fmt.Sprintf("Node %s disappeared", st.NodeName))
	} else {
		c.nodeGone.Delete(machine)
		st.NodeName = node.Name
		// Edits of nodeLabels and nodeTaints after Ready reach the Node (a
		// no-op when it is up to date).
		if err := c.labelNode(ctx, req, node); err != nil && !apierrors.IsNotFound(err) {
			if !permanentNodeError(err) {
				return 0, err
			}
			if st.ObservedGeneration != req.Generation { // once per edit, not once per sync
				c.event(req, corev1.EventTypeWarning, "NodeLabelsRefused", "the edited labels and taints cannot be applied to Node %s: %v", node.Name, err)
			}
		}
	}

	// Ready: watch the Node, the lifetime, the idle time and the cost.
	next := c.cfg.CostInterval
	if !nodeReady(node) {
		since := readySince(node)
		wait := since.Add(c.cfg.NodeNotReadyGrace).Sub(now)
		if wait <= 0 {
			return c.interrupt(s, current, "NodeNotReady", fmt.Sprintf("Node %s NotReady since %s while %s reports it running", node.Name, since.UTC().Format(time.RFC3339), st.Provider))
		}
		next = min(next, wait)
	}
	return c.watchReady(s, now, next)
}

// watchReady ends a Ready machine when its lifetime or idle time is up, and
// asks for the final write when cost is due; next is the latest wake-up.
func (c *Controller) watchReady(s *syncCtx, now time.Time, next time.Duration) (time.Duration, error) {
	req := s.req
	st := &req.Status
	if until, reason, ok := c.terminationDue(req, now); ok {
		if until <= 0 {
			return c.terminate(s, reason)
		}
		next = min(next, until)
	}
	s.costDue = billing(st) && (st.CostUpdatedAt == nil || now.Sub(st.CostUpdatedAt.Time) >= c.cfg.CostInterval)
	return clampDelay(next), nil
}

// trackContainer follows a container machine: Booting until the provider
// reports it running, then Ready with its address and ports; no Node is
// involved. The join timeout bounds the wait for running.
func (c *Controller) trackContainer(s *syncCtx, inst *providers.Instance, launched, now time.Time) (time.Duration, error) {
	req := s.req
	st := &req.Status
	if inst != nil {
		st.Ports = portStatus(inst.Ports)
	}
	if st.Phase != tgpv1.PhaseReady {
		deadline := launched.Add(c.cfg.JoinTimeout)
		if !now.Before(deadline) {
			return c.joinTimeout(s, inst)
		}
		if inst == nil || inst.State != providers.StateRunning {
			return clampDelay(deadline.Sub(now)), nil
		}
		first := st.ReadyAt == nil
		st.Phase, st.ReadyAt, st.Message = tgpv1.PhaseReady, ptr(metav1.NewTime(now)), ""
		c.setCondition(req, tgpv1.ConditionNodeJoined, metav1.ConditionFalse, "NotApplicable", "a container machine does not join as a Node")
		c.setCondition(req, tgpv1.ConditionReady, metav1.ConditionTrue, "ContainerRunning", "")
		if ic := meta.FindStatusCondition(st.Conditions, tgpv1.ConditionInterrupted); ic != nil && ic.Status == metav1.ConditionTrue {
			c.setCondition(req, tgpv1.ConditionInterrupted, metav1.ConditionFalse, "Recovered", "recovered from "+ic.Reason+": "+ic.Message)
		}
		c.event(req, corev1.EventTypeNormal, "Ready", "container %s is running on %s %s", inst.ID, st.Provider, st.Region)
		klog.FromContext(s.ctx).Info("ready", "container", inst.ID, "provider", st.Provider, "region", st.Region, "ports", len(st.Ports))
		if first && st.Interruptions == 0 {
			c.metrics.TimeToReady.Observe(now.Sub(req.CreationTimestamp.Time).Seconds())
		}
	}
	return c.watchReady(s, now, c.cfg.CostInterval)
}

// portStatus is the status form of a container's port mappings.
func portStatus(ports []providers.PortMapping) []tgpv1.PortStatus {
	if len(ports) == 0 {
		return nil
	}
	out := make([]tgpv1.PortStatus, 0, len(ports))
	for _, p := range ports {
		out = append(out, tgpv1.PortStatus{Port: int32(p.Port), Protocol: p.Protocol, PublicIP: p.PublicIP, PublicPort: int32(p.PublicPort)})
	}
	return out
}

// permanentNodeError says a Node write failed in a way a retry cannot fix.
func permanentNodeError(err error) bool {
	return apierrors.IsInvalid(err) || apierrors.IsForbidden(err) || apierrors.IsBadRequest(err)
}

// joined records that the machine's Node is Ready and labelled: phase
// Ready, NodeJoined and Ready true, a recovered interruption cleared.
func (c *Controller) joined(s *syncCtx, node *corev1.Node, now time.Time) {
	req := s.req
	st := &req.Status
	first := st.ReadyAt == nil
	st.Phase, st.NodeName, st.ReadyAt = tgpv1.PhaseReady, node.Name, ptr(metav1.NewTime(now))
	st.Message, st.IdleSince = "", nil
	c.setCondition(req, tgpv1.ConditionNodeJoined, metav1.ConditionTrue, "NodeReady", "Node "+node.Name+" is Ready")
	c.setCondition(req, tgpv1.ConditionReady, metav1.ConditionTrue, "NodeReady", "")
	if ic := meta.FindStatusCondition(st.Conditions, tgpv1.ConditionInterrupted); ic != nil && ic.Status == metav1.ConditionTrue {
		c.setCondition(req, tgpv1.ConditionInterrupted, metav1.ConditionFalse, "Recovered", "recovered from "+ic.Reason+": "+ic.Message)
	}
	c.deleteJoinToken(s.ctx, st.MachineName) // joined: the token has done its work
	c.event(req, corev1.EventTypeNormal, "Ready", "Node %s joined and is Ready on %s %s", node.Name, st.Provider, st.Region)
	klog.FromContext(s.ctx).Info("ready", "node", klog.KObj(node), "provider", st.Provider, "region", st.Region)
	if first && st.Interruptions == 0 {
		c.metrics.TimeToReady.Observe(now.Sub(req.CreationTimestamp.Time).Seconds())
	}
}

// joinTimeout gives up on a machine whose Node never became Ready: the
// instance is terminated and the request fails, without relaunching a
// machine that would fail the same way.
func (c *Controller) joinTimeout(s *syncCtx, inst *providers.Instance) (time.Duration, error) {
	req := s.req
	st := &req.Status
	msg := fmt.Sprintf("Node %s did not become Ready within %s of the launch; instance %s terminated", st.MachineName, c.cfg.JoinTimeout, st.InstanceID)
	if req.Spec.Container != nil {
		msg = fmt.Sprintf("container %s was not running within %s of the launch; instance %s terminated", st.MachineName, c.cfg.JoinTimeout, st.InstanceID)
	}
	return c.joinFailed(s, inst, "JoinTimeout", msg)
}

// joinFailed ends a machine that cannot join (the join timeout, or a
// bootstrap that could not be delivered over SSH): the instance is
// terminated and the request fails with reason, without relaunching a
// machine that would fail the same way.
func (c *Controller) joinFailed(s *syncCtx, inst *providers.Instance, reason, msg string) (time.Duration, error) {
	req := s.req
	st := &req.Status
	if inst != nil {
		if err := c.terminateInstance(s.ctx, *inst); err != nil {
			return 0, err
		}
	}
	c.accrue(req)
	st.Phase, st.Message, st.TerminationReason = tgpv1.PhaseFailed, msg, reason
	c.setCondition(req, tgpv1.ConditionReady, metav1.ConditionFalse, reason, msg)
	c.setCondition(req, tgpv1.ConditionNodeJoined, metav1.ConditionFalse, reason, msg)
	c.event(req, corev1.EventTypeWarning, reason, "%s", msg)
	klog.FromContext(s.ctx).Info("machine failed to join; instance terminated", "reason", reason, "machine", st.MachineName, "joinTimeout", c.cfg.JoinTimeout)
	return 0, nil
}

// DefaultGPUResource is the resource a Node's allocatable carries its GPUs
// under by default (the NVIDIA device plugin's).
const DefaultGPUResource = "nvidia.com/gpu"

// gpusAllocatable says whether the Node's allocatable carries the GPUs the
// request asked for: at least spec.gpuCount of Config.GPUResourceName (a
// machine is chosen with exactly that many; more is not a reason to wait).
// When not, it says what is missing. An empty resource name turns the check
// off.
func (c *Controller) gpusAllocatable(req *tgpv1.GPURequest, node *corev1.Node) (string, bool) {
	name := corev1.ResourceName(c.cfg.GPUResourceName)
	if name == "" {
		return "", true
	}
	want := int64(budget.GPUs(req))
	q := node.Status.Allocatable[name]
	if have := q.Value(); have < want {
		return fmt.Sprintf("Node %s is Ready but reports %d of %d %s allocatable; waiting for the device plugin", node.Name, have, want, name), false
	}
	return "", true
}

// gpuAllocatableChanged says whether a Node update changed its allocatable
// GPUs (the device plugin publishing them, or losing them).
func gpuAllocatableChanged(old, cur *corev1.Node, name string) bool {
	if name == "" {
		return false
	}
	o, ok1 := old.Status.Allocatable[corev1.ResourceName(name)]
	n, ok2 := cur.Status.Allocatable[corev1.ResourceName(name)]
	return ok1 != ok2 || o.Cmp(n) != 0
}
