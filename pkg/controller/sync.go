package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
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

// syncCtx is one sync of one GPURequest: the one in-memory copy that every
// stage reads and mutates, and the status as the API server last stored it.
// The stages never write status themselves: sync writes it once at the end
// when it differs from what is stored (or cost is due). The one exception is
// the write-ahead record (writeAhead).
type syncCtx struct {
	ctx context.Context
	req *tgpv1.GPURequest
	// stored is the status as last read or written; the final write is
	// skipped when the copy still equals it.
	stored tgpv1.GPURequestStatus
	// costDue asks for the final write even when nothing else changed, so
	// that accumulatedCost is brought up to date.
	costDue bool
	// released says the finalizer is gone: the object may be too, and
	// there is nothing left to write.
	released bool
}

// sync runs one step of a GPURequest's lifecycle. It returns a delay when it
// knows when it must run next, and an error only when a retry can help. A
// sync that fails writes nothing (beyond a write-ahead record): the retry
// starts again from the stored status.
func (c *Controller) sync(ctx context.Context, key cache.ObjectName) (time.Duration, error) {
	logger := klog.FromContext(ctx).WithValues("gpurequest", klog.KRef(key.Namespace, key.Name))
	ctx = klog.NewContext(ctx, logger)
	cached, err := c.requests.GPURequests(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	req := cached.DeepCopy()
	if req.DeletionTimestamp.IsZero() && !hasFinalizer(req) {
		if req, err = c.patchFinalizers(ctx, req, append(req.Finalizers, tgpv1.Finalizer)); err != nil {
			return 0, err
		}
	}
	s := &syncCtx{ctx: ctx, req: req, stored: *req.Status.DeepCopy()}
	delay, err := c.runStages(s)
	if err == nil {
		err = c.finish(s)
	}
	if err != nil {
		c.countCost(s.req, false) // accrued in memory, never written: forget it
		return 0, err
	}
	return delay, nil
}

// runStages picks the stage for the request's phase.
func (c *Controller) runStages(s *syncCtx) (time.Duration, error) {
	req := s.req
	if !req.DeletionTimestamp.IsZero() {
		return c.finalize(s)
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
			return c.fail(s, "InvalidSpec", "the spec is invalid: "+errs.ToAggregate().Error())
		}
		klog.FromContext(s.ctx).V(2).Info("invalid spec on a running request; invalid fields are ignored", "errors", errs.ToAggregate().Error())
	}
	switch req.Status.Phase {
	case tgpv1.PhaseProvisioning, tgpv1.PhaseBooting, tgpv1.PhaseJoining, tgpv1.PhaseReady:
		// A monthly limit with onMonthlyLimit Terminate ends the namespace's
		// machines (budgets.go enqueues them in budget.TerminationOrder).
		if state, ok := c.budgetTerminates(req); ok {
			c.event(req, corev1.EventTypeWarning, "MonthlyLimit", "GPUBudget %s: %s", state.Budget, state.Message)
			return c.terminate(s, "MonthlyLimit")
		}
	}
	switch req.Status.Phase {
	case "", tgpv1.PhasePending, tgpv1.PhaseInterrupted:
		return c.provision(s)
	case tgpv1.PhaseProvisioning:
		return c.resumeProvisioning(s)
	case tgpv1.PhaseBooting, tgpv1.PhaseJoining, tgpv1.PhaseReady:
		return c.track(s)
	case tgpv1.PhaseTerminating:
		return c.terminate(s, req.Status.TerminationReason)
	}
	// Terminated and Failed are final (the final write keeps
	// observedGeneration current), except Failed for an invalid spec that an
	// edit has fixed (validation above passed): select and launch as for a
	// new request.
	if ready := meta.FindStatusCondition(req.Status.Conditions, tgpv1.ConditionReady); req.Status.Phase == tgpv1.PhaseFailed &&
		ready != nil && ready.Reason == "InvalidSpec" && req.Status.ObservedGeneration != req.Generation {
		klog.FromContext(s.ctx).Info("spec fixed; provisioning")
		req.Status.Phase, req.Status.Message = tgpv1.PhasePending, ""
		return c.provision(s)
	}
	return 0, nil
}

// writeAhead writes the status now, before a provider call whose effect must
// be found again after a crash: the machine name and chosen offer before a
// launch call, the termination start before a terminate call. It is the one
// deliberate exception to one status write per sync.
func (c *Controller) writeAhead(s *syncCtx) error {
	out, err := c.writeStatus(s.ctx, s.req)
	if err != nil {
		return err
	}
	s.req.ResourceVersion = out.ResourceVersion
	s.stored = *s.req.Status.DeepCopy()
	return nil
}

// finish is the final write of a sync: status as the stages left it, when it
// differs from what is stored, the spec's generation is not yet observed, or
// cost is due.
func (c *Controller) finish(s *syncCtx) error {
	st := &s.req.Status
	// reflect.DeepEqual, not equality.Semantic: stored is a copy of this very
	// status, so an unchanged time is the same value to the bit, and the
	// plain comparison costs 3 µs and no allocation per sync instead of 20 µs
	// and 46. A time re-set to the same instant compares unequal and costs
	// one needless write, never a missed one.
	if s.released || (!s.costDue && st.ObservedGeneration == s.req.Generation && reflect.DeepEqual(&s.stored, st)) {
		return nil
	}
	_, err := c.writeStatus(s.ctx, s.req)
	return err
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
func (c *Controller) finalize(s *syncCtx) (time.Duration, error) {
	req := s.req
	if !hasFinalizer(req) {
		s.released = true
		return 0, nil
	}
	st := &req.Status
	launched := st.Provider != "" && currentMachine(req) != "" && st.Phase != tgpv1.PhaseTerminated && st.Phase != tgpv1.PhaseFailed
	if launched || len(c.ownedInstances(req)) > 0 || len(c.ownedNodes(req)) > 0 {
		return c.terminate(s, "Deleted")
	}
	return 0, c.release(s)
}

// release removes the finalizer; the sync writes nothing after it. What
// the request spent this month is first recorded in its namespace's
// GPUBudgets, so the spend outlives the object.
func (c *Controller) release(s *syncCtx) error {
	if err := c.recordDeletion(s.ctx, s.req); err != nil {
		return err
	}
	if err := c.removeFinalizer(s.ctx, s.req); err != nil {
		return err
	}
	s.released = true
	c.forgetReservation(s.req)
	return nil
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
func (c *Controller) fail(s *syncCtx, reason, msg string) (time.Duration, error) {
	req := s.req
	st := &req.Status
	c.accrue(req)
	st.Phase, st.Message = tgpv1.PhaseFailed, msg
	c.ensureConditions(req)
	c.setCondition(req, tgpv1.ConditionReady, metav1.ConditionFalse, reason, msg)
	c.event(req, corev1.EventTypeWarning, reason, "%s", msg)
	klog.FromContext(s.ctx).Info("failed", "reason", reason, "message", msg)
	return 0, nil
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
