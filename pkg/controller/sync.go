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
	c.accrue(req)
	req.Status.ObservedGeneration = req.Generation
	out, err := c.client.TgpV1().GPURequests(req.Namespace).UpdateStatus(ctx, req, metav1.UpdateOptions{FieldManager: FieldManager})
	c.countCost(req, err == nil)
	if err != nil {
		return nil, err
	}
	return out, nil
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
