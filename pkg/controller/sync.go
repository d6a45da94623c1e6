package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// listMargin absorbs the second precision of timestamps in status: a list
// must start this long after a launch or terminate before its absence counts.
const listMargin = 2 * time.Second

// sync runs one step of a GPURequest's lifecycle. It returns a delay when it
// knows when it must run next, and an error only when a retry can help.
func (c *Controller) sync(ctx context.Context, key cache.ObjectName) (time.Duration, error) {
	logger := klog.FromContext(ctx).WithValues("gpurequest", key.String())
	ctx = klog.NewContext(ctx, logger)
	cached, err := c.requests.GPURequests(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	req := cached.DeepCopy()
	if !req.DeletionTimestamp.IsZero() {
		return c.finalize(ctx, req)
	}
	if !hasFinalizer(req) {
		if req, err = c.patchFinalizers(ctx, req, append(req.Finalizers, tgpv1.Finalizer)); err != nil {
			return 0, err
		}
	}
	// Admission refuses invalid specs; an object stored before the rules
	// existed still gets here. It is never launched; a running machine
	// keeps running with the invalid fields ignored (a duration that does
	// not parse counts as unset) until the spec is fixed or it is deleted.
	if errs := tgpv1.ValidateSpec(&req.Spec, field.NewPath("spec")); len(errs) > 0 {
		switch req.Status.Phase {
		case "", tgpv1.PhasePending, tgpv1.PhaseInterrupted:
			// Nothing is launching (Provisioning is the in-flight phase); a
			// machine left by an interruption is no longer claimed and the
			// collector ends it.
			return c.fail(ctx, req, "InvalidSpec", "the spec is invalid: "+errs.ToAggregate().Error())
		}
		klog.FromContext(ctx).V(2).Info("invalid spec on a running request; invalid fields are ignored", "errors", errs.ToAggregate().Error())
	}
	switch req.Status.Phase {
	case "", tgpv1.PhasePending, tgpv1.PhaseInterrupted:
		return c.provision(ctx, req)
	case tgpv1.PhaseProvisioning:
		return c.resumeProvisioning(ctx, req)
	case tgpv1.PhaseBooting, tgpv1.PhaseJoining, tgpv1.PhaseReady:
		return c.track(ctx, req, false)
	case tgpv1.PhaseTerminating:
		return c.terminate(ctx, req, req.Status.TerminationReason)
	default: // Terminated and Failed are final; keep observedGeneration current.
		if ready := meta.FindStatusCondition(req.Status.Conditions, tgpv1.ConditionReady); req.Status.Phase == tgpv1.PhaseFailed &&
			ready != nil && ready.Reason == "InvalidSpec" && req.Status.ObservedGeneration != req.Generation {
			// Failed only for an invalid spec, which an edit has now fixed
			// (validation above passed): select and launch as for a new one.
			klog.FromContext(ctx).Info("spec fixed; provisioning")
			req.Status.Phase, req.Status.Message = tgpv1.PhasePending, ""
			return c.provision(ctx, req)
		}
		if req.Status.ObservedGeneration != req.Generation {
			_, err := c.writeStatus(ctx, req)
			return 0, err
		}
		return 0, nil
	}
}

func hasFinalizer(req *tgpv1.GPURequest) bool {
	for _, f := range req.Finalizers {
		if f == tgpv1.Finalizer {
			return true
		}
	}
	return false
}

// finalize handles a deleted GPURequest: terminate its machines, then let
// it go. A request that never reached a launch call (no provider in its
// write-ahead record) and has no instance listed releases at once.
func (c *Controller) finalize(ctx context.Context, req *tgpv1.GPURequest) (time.Duration, error) {
	if !hasFinalizer(req) {
		return 0, nil
	}
	st := &req.Status
	launched := st.Provider != "" && currentMachine(req) != "" && st.Phase != tgpv1.PhaseTerminated && st.Phase != tgpv1.PhaseFailed
	if launched || len(c.ownedInstances(req)) > 0 || len(c.ownedNodes(req)) > 0 {
		return c.terminate(ctx, req, "Deleted")
	}
	return 0, c.removeFinalizer(ctx, req)
}

func (c *Controller) removeFinalizer(ctx context.Context, req *tgpv1.GPURequest) error {
	kept := make([]string, 0, len(req.Finalizers))
	for _, f := range req.Finalizers {
		if f != tgpv1.Finalizer {
			kept = append(kept, f)
		}
	}
	_, err := c.patchFinalizers(ctx, req, kept)
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// patchFinalizers sets metadata.finalizers with a merge patch guarded by the
// resourceVersion: only the finalizers are sent, never the spec (an Update
// would round-trip the spec through the Go types and their omitempty fields).
func (c *Controller) patchFinalizers(ctx context.Context, req *tgpv1.GPURequest, finalizers []string) (*tgpv1.GPURequest, error) {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"finalizers": finalizers, "resourceVersion": req.ResourceVersion,
	}})
	if err != nil {
		return nil, err
	}
	return c.client.TgpV1().GPURequests(req.Namespace).Patch(ctx, req.Name, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: FieldManager})
}

// writeStatus brings cost up to date, stamps observedGeneration and writes
// the status subresource, returning the stored object.
func (c *Controller) writeStatus(ctx context.Context, req *tgpv1.GPURequest) (*tgpv1.GPURequest, error) {
	delta := c.accrue(req)
	req.Status.ObservedGeneration = req.Generation
	out, err := c.client.TgpV1().GPURequests(req.Namespace).UpdateStatus(ctx, req, metav1.UpdateOptions{FieldManager: FieldManager})
	if err != nil {
		return nil, err
	}
	if delta > 0 {
		c.metrics.Cost.WithLabelValues(req.Status.Provider, req.Spec.GPUType, fmt.Sprint(req.Status.Spot)).Add(delta)
	}
	return out, nil
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
// update to accumulatedCost and returns the amount added.
func (c *Controller) accrue(req *tgpv1.GPURequest) float64 {
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

func ptr[T any](v T) *T { return &v }

func (c *Controller) setCondition(req *tgpv1.GPURequest, typ string, status metav1.ConditionStatus, reason, msg string) {
	meta.SetStatusCondition(&req.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg,
		ObservedGeneration: req.Generation,
		LastTransitionTime: metav1.NewTime(c.clock.Now()),
	})
}

// ensureConditions gives a new request every condition, Unknown until known.
func (c *Controller) ensureConditions(req *tgpv1.GPURequest) {
	for _, t := range []string{tgpv1.ConditionReady, tgpv1.ConditionLaunched, tgpv1.ConditionNodeJoined, tgpv1.ConditionInterrupted, tgpv1.ConditionOffersAvailable} {
		if meta.FindStatusCondition(req.Status.Conditions, t) == nil {
			status, reason := metav1.ConditionUnknown, "Pending"
			if t == tgpv1.ConditionInterrupted {
				status, reason = metav1.ConditionFalse, "NotInterrupted"
			}
			c.setCondition(req, t, status, reason, "")
		}
	}
}

func (c *Controller) event(req *tgpv1.GPURequest, typ, reason, format string, args ...any) {
	if c.recorder != nil {
		c.recorder.Eventf(req, typ, reason, format, args...)
	}
}

// track follows a launched machine: Booting until the provider says running,
// Joining until its Node is Ready and labelled, then Ready, watching for
// interruption, the end of its lifetime or idle time, and accruing cost.
// dirty says the in-memory status already differs from the stored one.
func (c *Controller) track(ctx context.Context, req *tgpv1.GPURequest, dirty bool) (time.Duration, error) {
	st := &req.Status
	now := c.clock.Now()
	machine := currentMachine(req)
	if machine == "" {
		return c.fail(ctx, req, "InvalidStatus", fmt.Sprintf("status.machineName %q is not one of this request's machine names; the operator acts only on machines it can prove are this request's", st.MachineName))
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
		return c.interrupt(ctx, req, nil, "InstanceVanished", fmt.Sprintf("instance %s is no longer listed by %s", machine, st.Provider))
	case found && (inst.State == providers.StateInterrupted || inst.State == providers.StateTerminated ||
		inst.State == providers.StateFailed || inst.State == providers.StateTerminating):
		return c.interrupt(ctx, req, &inst, "Instance"+camel(string(inst.State)), fmt.Sprintf("%s reports instance %s as %s", st.Provider, inst.ID, inst.NativeState))
	}
	var current *providers.Instance
	if found {
		current = &inst
	}

	changed := dirty
	if found && st.InstanceID != inst.ID {
		st.InstanceID, changed = inst.ID, true // the provider's record wins over status
	}
	if found && inst.PublicIP != "" && st.PublicIP != inst.PublicIP {
		st.PublicIP, changed = inst.PublicIP, true
	}
	if st.Phase == tgpv1.PhaseBooting && found && inst.State == providers.StateRunning {
		st.Phase, st.Message, changed = tgpv1.PhaseJoining, "instance running, waiting for its Node", true
		c.event(req, corev1.EventTypeNormal, "InstanceRunning", "%s instance %s is running; waiting for Node %s", st.Provider, inst.ID, machine)
	}
	node := c.findNode(req)
	if st.Phase == tgpv1.PhaseBooting || st.Phase == tgpv1.PhaseJoining {
		deadline := launched.Add(c.cfg.JoinTimeout)
		if !now.Before(deadline) {
			return c.joinTimeout(ctx, req, current)
		}
		if st.Phase == tgpv1.PhaseJoining && node != nil && nodeReady(node) {
			if err := c.labelNode(ctx, req, node); err != nil {
				if !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) && !apierrors.IsBadRequest(err) {
					return 0, err
				}
				// Retrying cannot help: say so once and wait for an edit or the join timeout.
				msg := fmt.Sprintf("Node %s is Ready but its labels and taints cannot be applied: %v", node.Name, err)
				if st.Message != msg {
					st.Message, changed = msg, true
					c.event(req, corev1.EventTypeWarning, "NodeLabelsRefused", "%s", msg)
				}
				if changed {
					if _, err := c.writeStatus(ctx, req); err != nil {
						return 0, err
					}
				}
				return clampDelay(deadline.Sub(now)), nil
			}
			first := st.ReadyAt == nil
			st.Phase, st.NodeName, st.ReadyAt = tgpv1.PhaseReady, node.Name, ptr(metav1.NewTime(now))
			st.Message, st.IdleSince = "", nil
			c.setCondition(req, tgpv1.ConditionNodeJoined, metav1.ConditionTrue, "NodeReady", "Node "+node.Name+" is Ready")
			c.setCondition(req, tgpv1.ConditionReady, metav1.ConditionTrue, "NodeReady", "")
			if ic := meta.FindStatusCondition(st.Conditions, tgpv1.ConditionInterrupted); ic != nil && ic.Status == metav1.ConditionTrue {
				c.setCondition(req, tgpv1.ConditionInterrupted, metav1.ConditionFalse, "Recovered", "recovered from "+ic.Reason+": "+ic.Message)
			}
			c.event(req, corev1.EventTypeNormal, "Ready", "Node %s joined and is Ready on %s %s", node.Name, st.Provider, st.Region)
			klog.FromContext(ctx).Info("ready", "node", klog.KObj(node), "provider", st.Provider, "region", st.Region)
			if first && st.Interruptions == 0 {
				c.metrics.TimeToReady.Observe(now.Sub(req.CreationTimestamp.Time).Seconds())
			}
			changed = true
		} else {
			if changed {
				if _, err := c.writeStatus(ctx, req); err != nil {
					return 0, err
				}
			}
			return clampDelay(deadline.Sub(now)), nil
		}
	}

	// Ready: watch the Node, the lifetime, the idle time and the cost.
	if node == nil {
		return c.interrupt(ctx, req, current, "NodeDeleted", fmt.Sprintf("Node %s disappeared", st.NodeName))
	}
	if st.NodeName != node.Name {
		st.NodeName, changed = node.Name, true
	}
	// Edits of nodeLabels and nodeTaints after Ready reach the Node (a no-op
	// when it is up to date).
	if err := c.labelNode(ctx, req, node); err != nil && !apierrors.IsNotFound(err) {
		if !apierrors.IsInvalid(err) && !apierrors.IsForbidden(err) && !apierrors.IsBadRequest(err) {
			return 0, err
		}
		if st.ObservedGeneration != req.Generation { // once per edit, not once per sync
			c.event(req, corev1.EventTypeWarning, "NodeLabelsRefused", "the edited labels and taints cannot be applied to Node %s: %v", node.Name, err)
		}
	}
	next := c.cfg.CostInterval
	if !nodeReady(node) {
		since := readySince(node)
		if wait := since.Add(c.cfg.NodeNotReadyGrace).Sub(now); wait <= 0 {
			return c.interrupt(ctx, req, current, "NodeNotReady", fmt.Sprintf("Node %s NotReady since %s while %s reports it running", node.Name, since.UTC().Format(time.RFC3339), st.Provider))
		} else {
			next = min(next, wait)
		}
	}
	if until, reason, ok := c.terminationDue(req, node, now, &changed); ok {
		if until <= 0 {
			return c.terminate(ctx, req, reason)
		}
		next = min(next, until)
	}
	if changed || st.CostUpdatedAt == nil || now.Sub(st.CostUpdatedAt.Time) >= c.cfg.CostInterval || st.ObservedGeneration != req.Generation {
		if _, err := c.writeStatus(ctx, req); err != nil {
			return 0, err
		}
	}
	return clampDelay(next), nil
}

// terminationDue evaluates maxLifetime and idleTimeout for a Ready machine,
// updating terminationScheduledAt and idleSince; it returns how long until
// the earliest one ends the machine (<= 0: now) and why.
func (c *Controller) terminationDue(req *tgpv1.GPURequest, node *corev1.Node, now time.Time, changed *bool) (time.Duration, string, bool) {
	st := &req.Status
	var (
		due    time.Duration
		reason string
	)
	if lifetime, set := parsed(req.Spec.MaxLifetime); set && st.ProvisionedAt != nil {
		at := metav1.NewTime(st.ProvisionedAt.Add(lifetime))
		if st.TerminationScheduledAt == nil || !st.TerminationScheduledAt.Equal(&at) {
			st.TerminationScheduledAt, *changed = &at, true
		}
		due, reason = at.Sub(now), "MaxLifetime"
	} else if st.TerminationScheduledAt != nil {
		st.TerminationScheduledAt, *changed = nil, true
	}
	// The idle clock runs whether or not idleTimeout is set, so a timeout
	// set later counts from when the Node really became idle.
	if c.nodeBusy(node.Name) {
		if st.IdleSince != nil {
			st.IdleSince, *changed = nil, true
		}
	} else if st.IdleSince == nil {
		st.IdleSince, *changed = ptr(metav1.NewTime(now)), true
	}
	if timeout, set := parsed(req.Spec.IdleTimeout); set && st.IdleSince != nil {
		if idle := st.IdleSince.Add(timeout).Sub(now); reason == "" || idle < due {
			due, reason = idle, "IdleTimeout"
		}
	}
	return due, reason, reason != ""
}

func clampDelay(d time.Duration) time.Duration {
	if d < 100*time.Millisecond {
		return 100 * time.Millisecond
	}
	return d
}

func camel(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// joinTimeout gives up on a machine whose Node never became Ready: the
// instance is terminated and the request fails, without relaunching a
// machine that would fail the same way.
func (c *Controller) joinTimeout(ctx context.Context, req *tgpv1.GPURequest, inst *providers.Instance) (time.Duration, error) {
	st := &req.Status
	msg := fmt.Sprintf("Node %s did not become Ready within %s of the launch; instance %s terminated", st.MachineName, c.cfg.JoinTimeout, st.InstanceID)
	if inst != nil {
		if err := c.terminateInstance(ctx, *inst); err != nil {
			return 0, err
		}
	}
	c.accrue(req)
	st.Phase, st.Message, st.TerminationReason = tgpv1.PhaseFailed, msg, "JoinTimeout"
	c.setCondition(req, tgpv1.ConditionReady, metav1.ConditionFalse, "JoinTimeout", msg)
	c.setCondition(req, tgpv1.ConditionNodeJoined, metav1.ConditionFalse, "JoinTimeout", msg)
	c.event(req, corev1.EventTypeWarning, "JoinTimeout", "%s", msg)
	klog.FromContext(ctx).Info("join timeout; instance terminated", "machine", st.MachineName, "after", c.cfg.JoinTimeout)
	_, err := c.writeStatus(ctx, req)
	return 0, err
}

// interrupt records that the current machine was lost, cleans it up and
// launches a replacement in the same sync.
func (c *Controller) interrupt(ctx context.Context, req *tgpv1.GPURequest, inst *providers.Instance, cause, msg string) (time.Duration, error) {
	st := &req.Status
	nodes := c.ownedNodes(req)
	key := providers.OfferingKey{Provider: st.Provider, InstanceType: st.InstanceType, Region: st.ProviderRegion, Capacity: capacity(st.Spot)}
	c.unavailable.Mark(key, cause)
	c.metrics.Interruptions.WithLabelValues(st.Provider, st.Region, req.Spec.GPUType).Inc()
	c.accrue(req)
	st.Interruptions++
	st.Phase, st.Message = tgpv1.PhaseInterrupted, msg
	st.MachineName, st.InstanceID, st.NodeName, st.PublicIP = "", "", "", ""
	st.CostUpdatedAt, st.IdleSince, st.ReadyAt, st.LaunchedAt = nil, nil, nil, nil
	c.setCondition(req, tgpv1.ConditionInterrupted, metav1.ConditionTrue, cause, msg)
	c.setCondition(req, tgpv1.ConditionReady, metav1.ConditionFalse, "Interrupted", msg)
	c.setCondition(req, tgpv1.ConditionNodeJoined, metav1.ConditionFalse, "Interrupted", msg)
	c.setCondition(req, tgpv1.ConditionLaunched, metav1.ConditionFalse, "Interrupted", msg)
	c.event(req, corev1.EventTypeWarning, "Interrupted", "%s; relaunching", msg)
	req, err := c.writeStatus(ctx, req)
	if err != nil {
		return 0, err
	}
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
	return c.provision(ctx, req)
}

// fail ends a request that retrying cannot help: phase Failed, Ready=False
// with the reason, a Warning Event and a log line. Nothing is launched for
// it any more; its machines, if any, are terminated when it is deleted.
func (c *Controller) fail(ctx context.Context, req *tgpv1.GPURequest, reason, msg string) (time.Duration, error) {
	st := &req.Status
	c.accrue(req)
	st.Phase, st.Message = tgpv1.PhaseFailed, msg
	c.ensureConditions(req)
	c.setCondition(req, tgpv1.ConditionReady, metav1.ConditionFalse, reason, msg)
	c.event(req, corev1.EventTypeWarning, reason, "%s", msg)
	klog.FromContext(ctx).Info("failed", "reason", reason, "message", msg)
	_, err := c.writeStatus(ctx, req)
	return 0, err
}

func capacity(spot bool) providers.CapacityType {
	if spot {
		return providers.Spot
	}
	return providers.OnDemand
}

// machineName derives the provider-side (and Node) name from the request's
// UID and the attempt number.
func machineName(uid types.UID, attempt int32) string {
	id := strings.ReplaceAll(string(uid), "-", "")
	if len(id) > 16 {
		id = id[:16]
	}
	return fmt.Sprintf("%s%s-%d", providers.MachineNamePrefix, id, attempt)
}

// parsed is a spec duration when it is set and valid; an invalid one (only
// possible in an object stored before admission refused it) counts as unset
// and is reported by validation.
func parsed(d *tgpv1.Duration) (time.Duration, bool) {
	if d == nil {
		return 0, false
	}
	v, err := d.Parse()
	return v, err == nil
}
