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

// finalize handles a deleted GPURequest: terminate its machine, then let it go.
func (c *Controller) finalize(ctx context.Context, req *tgpv1.GPURequest) (time.Duration, error) {
	if !hasFinalizer(req) {
		return 0, nil
	}
	if req.Status.MachineName != "" && req.Status.Phase != tgpv1.PhaseTerminated && req.Status.Phase != tgpv1.PhaseFailed {
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
	return c.client.TgpV1().GPURequests(req.Namespace).Patch(ctx, req.Name, types.MergePatchType, patch, metav1.PatchOptions{})
}

// writeStatus brings cost up to date, stamps observedGeneration and writes
// the status subresource, returning the stored object.
func (c *Controller) writeStatus(ctx context.Context, req *tgpv1.GPURequest) (*tgpv1.GPURequest, error) {
	delta := c.accrue(req)
	req.Status.ObservedGeneration = req.Generation
	out, err := c.client.TgpV1().GPURequests(req.Namespace).UpdateStatus(ctx, req, metav1.UpdateOptions{})
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
	inst, found, listedAt := c.inventory.Lookup(st.Provider, st.MachineName)
	// launched is when the launch call returned: a list that started after
	// it (plus the timestamps' second precision) must show the instance.
	launched := now
	if st.LaunchedAt != nil {
		launched = st.LaunchedAt.Time
	}
	switch {
	case !found && listedAt.After(launched.Add(listMargin)):
		return c.interrupt(ctx, req, "InstanceVanished", fmt.Sprintf("instance %s is no longer listed by %s", st.InstanceID, st.Provider))
	case found && (inst.State == providers.StateInterrupted || inst.State == providers.StateTerminated ||
		inst.State == providers.StateFailed || inst.State == providers.StateTerminating):
		return c.interrupt(ctx, req, "Instance"+camel(string(inst.State)), fmt.Sprintf("%s reports instance %s as %s", st.Provider, inst.ID, inst.NativeState))
	}

	changed := dirty
	if found && inst.PublicIP != "" && st.PublicIP != inst.PublicIP {
		st.PublicIP, changed = inst.PublicIP, true
	}
	if st.Phase == tgpv1.PhaseBooting && found && inst.State == providers.StateRunning {
		st.Phase, st.Message, changed = tgpv1.PhaseJoining, "instance running, waiting for its Node", true
		c.event(req, corev1.EventTypeNormal, "InstanceRunning", "%s instance %s is running; waiting for Node %s", st.Provider, inst.ID, st.MachineName)
	}
	node := c.findNode(req)
	if st.Phase == tgpv1.PhaseBooting || st.Phase == tgpv1.PhaseJoining {
		deadline := launched.Add(c.cfg.JoinTimeout)
		if st.Phase == tgpv1.PhaseJoining && node != nil && nodeReady(node) {
			if err := c.labelNode(ctx, req, node); err != nil {
				return 0, err
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
			if first && st.Interruptions == 0 {
				c.metrics.TimeToReady.Observe(now.Sub(req.CreationTimestamp.Time).Seconds())
			}
			changed = true
		} else if !now.Before(deadline) {
			return c.joinTimeout(ctx, req)
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
		return c.interrupt(ctx, req, "NodeDeleted", fmt.Sprintf("Node %s disappeared", st.NodeName))
	}
	next := c.cfg.CostInterval
	if !nodeReady(node) {
		since := readySince(node)
		if wait := since.Add(c.cfg.NodeNotReadyGrace).Sub(now); wait <= 0 {
			return c.interrupt(ctx, req, "NodeNotReady", fmt.Sprintf("Node %s NotReady since %s while %s reports it running", node.Name, since.UTC().Format(time.RFC3339), st.Provider))
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
	var due time.Duration
	reason, ok := "", false
	if lt, ok := parsed(req.Spec.MaxLifetime); ok && st.ProvisionedAt != nil {
		at := metav1.NewTime(st.ProvisionedAt.Add(lt))
		if st.TerminationScheduledAt == nil || !st.TerminationScheduledAt.Equal(&at) {
			st.TerminationScheduledAt, *changed = &at, true
		}
		due, reason, ok = at.Sub(now), "MaxLifetime", true
	} else if st.TerminationScheduledAt != nil {
		st.TerminationScheduledAt, *changed = nil, true
	}
	if it, ok := parsed(req.Spec.IdleTimeout); ok {
		if c.nodeBusy(node.Name) {
			if st.IdleSince != nil {
				st.IdleSince, *changed = nil, true
			}
		} else {
			if st.IdleSince == nil {
				st.IdleSince, *changed = ptr(metav1.NewTime(now)), true
			}
			idle := st.IdleSince.Add(it).Sub(now)
			if !ok || idle < due {
				due, reason, ok = idle, "IdleTimeout", true
			}
		}
	} else if st.IdleSince != nil {
		st.IdleSince, *changed = nil, true
	}
	return due, reason, ok
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
func (c *Controller) joinTimeout(ctx context.Context, req *tgpv1.GPURequest) (time.Duration, error) {
	st := &req.Status
	msg := fmt.Sprintf("Node %s did not become Ready within %s of the launch; instance %s terminated", st.MachineName, c.cfg.JoinTimeout, st.InstanceID)
	if err := c.terminateInstance(ctx, st.Provider, st.InstanceID); err != nil {
		return 0, err
	}
	c.accrue(req)
	st.Phase, st.Message, st.TerminationReason = tgpv1.PhaseFailed, msg, "JoinTimeout"
	c.setCondition(req, tgpv1.ConditionReady, metav1.ConditionFalse, "JoinTimeout", msg)
	c.setCondition(req, tgpv1.ConditionNodeJoined, metav1.ConditionFalse, "JoinTimeout", msg)
	c.event(req, corev1.EventTypeWarning, "JoinTimeout", "%s", msg)
	_, err := c.writeStatus(ctx, req)
	return 0, err
}

// terminateInstance asks the provider to terminate an instance; a missing
// instance is success.
func (c *Controller) terminateInstance(ctx context.Context, provider, id string) error {
	p, ok := c.providers[provider]
	if !ok || id == "" {
		return nil
	}
	err := p.Terminate(ctx, id)
	c.metrics.observeCall(provider, "terminate", err)
	if providers.IsClass(err, providers.ClassNotFound) {
		return nil
	}
	return err
}

// interrupt records that the current machine was lost, cleans it up and
// launches a replacement in the same sync.
func (c *Controller) interrupt(ctx context.Context, req *tgpv1.GPURequest, cause, msg string) (time.Duration, error) {
	st := &req.Status
	old := *st
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
	// The old machine is no longer claimed: if anything below fails, the
	// leaked-instance collector terminates it after its grace period.
	if err := c.terminateInstance(ctx, old.Provider, old.InstanceID); err != nil {
		klog.FromContext(ctx).Error(err, "terminating the interrupted instance; the collector will retry", "instance", old.InstanceID)
	}
	for _, name := range []string{old.NodeName, old.MachineName} {
		if err := c.deleteNode(ctx, name); err != nil {
			klog.FromContext(ctx).Error(err, "deleting the interrupted machine's Node", "node", name)
		}
	}
	return c.provision(ctx, req)
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
