package controller

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/budget"
	tgpinformers "github.com/solanyn/gpu-operator/pkg/generated/informers/externalversions/tgp/v1"
	tgplisters "github.com/solanyn/gpu-operator/pkg/generated/listers/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// Budgets: every GPUBudget of a namespace caps what its GPURequests may
// spend (pkg/budget does the accounting). This file owns the GPUBudget
// status and its Exceeded condition, the OverBudget refusal of offers, and
// the termination of a namespace's machines under onMonthlyLimit
// Terminate. A namespace without a GPUBudget costs one lister call per
// launch and nothing else.
//
// Launches reserve headroom in the ledger before the write-ahead record and
// the launch call, and release it when the launch fails, so concurrent
// workers never take a namespace past a budget. Budget statuses are
// written by one budget worker per namespace key, on their own queue.

// QueueNameBudgets names the GPUBudget workqueue (and its workqueue_* metrics).
const QueueNameBudgets = "gpubudgets"

// budgetSettle is how long a change to a request waits before its
// namespace's budgets are evaluated again: a burst of changes costs one
// evaluation.
const budgetSettle = 2 * time.Second

// budgets is the controller's view of GPUBudgets; nil when none are watched.
type budgets struct {
	lister tgplisters.GPUBudgetLister
	ledger *budget.Ledger
	queue  workqueue.TypedRateLimitingInterface[string]

	mu sync.RWMutex
	// states holds each namespace's mode (Open, Hold, Terminate) as its
	// last evaluation found it; a namespace not in it is Open.
	states map[string]budget.NamespaceState
}

// watchBudgets wires the GPUBudget informer: a budget's change evaluates its
// namespace at once and wakes the requests it may have been holding.
func (c *Controller) watchBudgets(inf tgpinformers.GPUBudgetInformer) error {
	c.budget = &budgets{
		lister: inf.Lister(),
		ledger: budget.NewLedger(budget.ListerSource(inf.Lister(), c.requests), c.clock),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: QueueNameBudgets, Clock: c.clock},
		),
		states: map[string]budget.NamespaceState{},
	}
	wake := func(obj any) {
		if b, ok := tombstone[*tgpv1.GPUBudget](obj); ok {
			c.budget.queue.Add(b.Namespace)
			c.enqueuePendingIn(b.Namespace)
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: wake,
		UpdateFunc: func(oldObj, newObj any) {
			if oldObj.(*tgpv1.GPUBudget).Generation != newObj.(*tgpv1.GPUBudget).Generation {
				wake(newObj)
			}
		},
		DeleteFunc: wake,
	}); err != nil {
		return err
	}
	c.synced = append(c.synced, inf.Informer().HasSynced)
	return nil
}

// budgetTouched notes that a request changed: its namespace's budgets, if
// it has any, are evaluated again after budgetSettle.
func (c *Controller) budgetTouched(req *tgpv1.GPURequest) {
	if c.budget == nil {
		return
	}
	if bs, err := c.budget.lister.GPUBudgets(req.Namespace).List(labelsEverything); err == nil && len(bs) > 0 {
		c.budget.queue.AddAfter(req.Namespace, budgetSettle)
	}
}

// enqueuePendingIn enqueues the namespace's requests waiting for an offer.
func (c *Controller) enqueuePendingIn(ns string) {
	reqs, _ := c.requests.GPURequests(ns).List(labelsEverything)
	for _, r := range reqs {
		if r.Status.Phase == tgpv1.PhasePending || r.Status.Phase == "" {
			c.enqueue(r)
		}
	}
}

// budgetMode is the request's namespace's mode as last evaluated.
func (c *Controller) budgetMode(ns string) budget.NamespaceState {
	if c.budget == nil {
		return budget.NamespaceState{Mode: budget.Open}
	}
	c.budget.mu.RLock()
	defer c.budget.mu.RUnlock()
	if st, ok := c.budget.states[ns]; ok {
		return st
	}
	return budget.NamespaceState{Mode: budget.Open}
}

// headroom is what the request's namespace's budgets still allow it; with
// no budgets it admits everything.
func (c *Controller) headroom(req *tgpv1.GPURequest) (budget.Headroom, error) {
	if c.budget == nil {
		return budget.Headroom{}, nil
	}
	return c.budget.ledger.Headroom(req.Namespace, req.UID)
}

// reservation is headroom held for one launch; the zero value (no budgets)
// holds nothing.
type reservation struct{ r *budget.Reservation }

func (r reservation) release() {
	if r.r != nil {
		r.r.Release()
	}
}

func (r reservation) commit() {
	if r.r != nil {
		r.r.Commit()
	}
}

// reserve holds the headroom of launching offer as machine for req. An
// *budget.OverBudgetError means another launch took the room since the
// selection: the offer loses and the next is tried.
func (c *Controller) reserve(req *tgpv1.GPURequest, machine string, offer providers.Offer) (reservation, error) {
	if c.budget == nil {
		return reservation{}, nil
	}
	r, err := c.budget.ledger.Reserve(budget.Claim{
		Namespace: req.Namespace, Request: req.UID, Name: req.Name, Machine: machine,
		HourlyPrice: offer.HourlyPrice, GPUs: int32(offer.GPUCount),
	})
	return reservation{r}, err
}

// forgetReservation drops a request's reservation once its machine is
// gone or the object is.
func (c *Controller) forgetReservation(req *tgpv1.GPURequest) {
	if c.budget != nil {
		c.budget.ledger.Forget(req.Namespace, req.UID)
	}
}

// heldByBudget leaves a request Pending because every offer it could launch
// would take its namespace over a budget: OffersAvailable=False/OverBudget
// naming the budget, a Warning Event on the request and a Normal Event on
// the budget (once per change of message). Raising or deleting the budget
// wakes it (watchBudgets); so does a budget evaluation finding room.
func (c *Controller) heldByBudget(s *syncCtx, refused *budget.OverBudgetError, summary string) (time.Duration, error) {
	req := s.req
	st := &req.Status
	// The figures in the message move with every accrual; the status is
	// rewritten (and the Events sent) only when the budget or the limit
	// holding the request changes, not for every cent.
	held := fmt.Sprintf("held by GPUBudget %s (%s)", refused.Budget, refused.Limit)
	msg := held + ": " + refused.Message
	if st.Phase != tgpv1.PhasePending || !strings.HasPrefix(st.Message, held+":") || st.ObservedGeneration != req.Generation {
		st.Phase, st.Message, st.Selection = tgpv1.PhasePending, msg, summary
		c.setCondition(req, tgpv1.ConditionOffersAvailable, metav1.ConditionFalse, budget.ReasonOverBudget, msg)
		c.setCondition(req, tgpv1.ConditionReady, metav1.ConditionFalse, budget.ReasonOverBudget, msg)
		c.event(req, corev1.EventTypeWarning, budget.ReasonOverBudget, "%s", msg)
		if b, err := c.budget.lister.GPUBudgets(req.Namespace).Get(refused.Budget); err == nil {
			c.eventf(b, corev1.EventTypeNormal, "RequestHeld", "GPURequest %s held: %s", req.Name, refused.Message)
		}
		klog.FromContext(s.ctx).Info("held by a budget", "budget", klog.KRef(req.Namespace, refused.Budget), "limit", refused.Limit, "message", refused.Message)
	}
	return c.cfg.CostInterval, nil
}

// budgetTerminates reports whether the request's namespace is under a
// budget whose monthly limit, reached, terminates its machines.
func (c *Controller) budgetTerminates(req *tgpv1.GPURequest) (budget.NamespaceState, bool) {
	st := c.budgetMode(req.Namespace)
	return st, st.Mode == budget.Terminate
}

// recordDeletion keeps what a deleted request spent this month in every
// GPUBudget of its namespace before its finalizer goes (budget.RecordDeletion):
// the spend outlives the object, once.
func (c *Controller) recordDeletion(ctx context.Context, req *tgpv1.GPURequest) error {
	if c.budget == nil {
		return nil
	}
	all, err := c.budget.lister.GPUBudgets(req.Namespace).List(labelsEverything)
	if err != nil {
		return err
	}
	now := c.clock.Now()
	for _, b := range all {
		out := b.DeepCopy()
		if !budget.RecordDeletion(out, all, req, now) {
			continue
		}
		if _, err := c.client.TgpV1().GPUBudgets(out.Namespace).UpdateStatus(ctx, out, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
			return fmt.Errorf("recording the spend of deleted GPURequest %s in GPUBudget %s: %w", req.Name, b.Name, err)
		}
	}
	return nil
}

// runBudgets runs the budget worker until ctx ends.
func (c *Controller) runBudgets(ctx context.Context) {
	go func() {
		<-ctx.Done()
		c.budget.queue.ShutDown()
	}()
	// Every namespace with a budget is evaluated once at the start.
	if all, err := c.budget.lister.List(labelsEverything); err == nil {
		for _, b := range all {
			c.budget.queue.Add(b.Namespace)
		}
	}
	for c.processNextBudget(ctx) {
	}
}

func (c *Controller) processNextBudget(ctx context.Context) bool {
	ns, shutdown := c.budget.queue.Get()
	if shutdown {
		return false
	}
	defer c.budget.queue.Done(ns)
	after, err := c.syncBudgets(ctx, ns)
	if err != nil {
		if !apierrors.IsConflict(err) {
			utilruntime.HandleErrorWithContext(ctx, err, "syncing GPUBudgets", "namespace", ns)
		}
		c.budget.queue.AddRateLimited(ns)
		return true
	}
	c.budget.queue.Forget(ns)
	if after > 0 {
		c.budget.queue.AddAfter(ns, after)
	}
	return true
}

// syncBudgets evaluates every GPUBudget of a namespace: writes each status
// that changed, records the namespace's mode, and acts on a change of mode
// (Terminate enqueues the live requests in budget.TerminationOrder; back to
// Open wakes the held ones). It returns when to evaluate again: the cost
// interval (month-to-date spend grows with time) or the month's end, if
// sooner.
func (c *Controller) syncBudgets(ctx context.Context, ns string) (time.Duration, error) {
	logger := klog.FromContext(ctx).WithValues("namespace", ns)
	all, err := c.budget.lister.GPUBudgets(ns).List(labelsEverything)
	if err != nil {
		return 0, err
	}
	c.budget.mu.Lock()
	prev, had := c.budget.states[ns]
	c.budget.mu.Unlock()
	if len(all) == 0 {
		c.budget.mu.Lock()
		delete(c.budget.states, ns)
		c.budget.mu.Unlock()
		if had && prev.Mode != budget.Open {
			c.enqueuePendingIn(ns)
		}
		return 0, nil
	}
	reqs, err := c.requests.GPURequests(ns).List(labelsEverything)
	if err != nil {
		return 0, err
	}
	now := c.clock.Now()
	changed := false
	for _, b := range all {
		st := budget.Evaluate(b, all, reqs, now)
		if reflect.DeepEqual(&st, &b.Status) {
			continue
		}
		changed = true
		out := b.DeepCopy()
		out.Status = st
		if _, err := c.client.TgpV1().GPUBudgets(ns).UpdateStatus(ctx, out, metav1.UpdateOptions{FieldManager: FieldManager}); err != nil {
			return 0, err
		}
		was := meta.FindStatusCondition(b.Status.Conditions, tgpv1.BudgetConditionExceeded)
		if is := meta.FindStatusCondition(st.Conditions, tgpv1.BudgetConditionExceeded); is != nil && is.Status == metav1.ConditionTrue &&
			(was == nil || was.Status != metav1.ConditionTrue || was.Reason != is.Reason) {
			c.eventf(b, corev1.EventTypeWarning, "Exceeded", "%s: %s", is.Reason, is.Message)
			logger.Info("budget exceeded", "budget", klog.KObj(b), "reason", is.Reason, "message", is.Message)
		}
	}
	state := budget.State(all, reqs, now)
	c.budget.mu.Lock()
	c.budget.states[ns] = state
	c.budget.mu.Unlock()
	if state.Mode != prev.Mode {
		logger.Info("budget mode", "mode", state.Mode, "budget", state.Budget, "message", state.Message)
	}
	switch {
	case state.Mode == budget.Terminate && prev.Mode != budget.Terminate:
		if b, err := c.budget.lister.GPUBudgets(ns).Get(state.Budget); err == nil {
			for _, r := range budget.TerminationOrder(reqs) {
				c.eventf(b, corev1.EventTypeWarning, "Terminating", "terminating GPURequest %s's machine %s: %s", r.Name, r.Status.MachineName, state.Message)
			}
		}
		for _, r := range budget.TerminationOrder(reqs) {
			c.enqueue(r)
		}
	case state.Mode == budget.Open && had && prev.Mode != budget.Open:
		c.enqueuePendingIn(ns)
	case changed:
		// Spend moved (a machine ended, a budget was raised): the requests
		// a budget holds look again.
		for _, r := range reqs {
			if cond := meta.FindStatusCondition(r.Status.Conditions, tgpv1.ConditionOffersAvailable); r.Status.Phase == tgpv1.PhasePending &&
				cond != nil && cond.Reason == budget.ReasonOverBudget {
				c.enqueue(r)
			}
		}
	}
	next := c.cfg.CostInterval
	if end := budget.MonthOf(now).End().Sub(now); end > 0 && end < next {
		next = end
	}
	return next, nil
}

// eventf records an Event on any object the recorder's scheme knows.
func (c *Controller) eventf(obj runtime.Object, typ, reason, format string, args ...any) {
	if c.recorder != nil {
		c.recorder.Eventf(obj, typ, reason, format, args...)
	}
}

// budgetCollector exports each GPUBudget's limits, spend and headroom from
// its status at scrape time.
type budgetCollector struct{ c *Controller }

var (
	budgetLimitDesc = prometheus.NewDesc("gpu_operator_budget_limit", "A GPUBudget's limit: maxHourlySpend (USD/h), monthlyLimit (USD) or maxGPUs.",
		[]string{"namespace", "budget", "limit"}, nil)
	budgetSpendDesc = prometheus.NewDesc("gpu_operator_budget_spend", "What a GPUBudget counts against each limit: hourly spend (USD/h), month-to-date spend (USD), GPUs in use.",
		[]string{"namespace", "budget", "limit"}, nil)
	budgetHeadroomDesc = prometheus.NewDesc("gpu_operator_budget_headroom", "What a GPUBudget still allows under each limit.",
		[]string{"namespace", "budget", "limit"}, nil)
	budgetExceededDesc = prometheus.NewDesc("gpu_operator_budget_exceeded", "1 when a GPUBudget's Exceeded condition is True.",
		[]string{"namespace", "budget", "reason"}, nil)
)

func (bc *budgetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- budgetLimitDesc
	ch <- budgetSpendDesc
	ch <- budgetHeadroomDesc
	ch <- budgetExceededDesc
}

func (bc *budgetCollector) Collect(ch chan<- prometheus.Metric) {
	if bc.c.budget == nil {
		return
	}
	all, err := bc.c.budget.lister.List(labelsEverything)
	if err != nil {
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, b := range all {
		ns, name, st := b.Namespace, b.Name, &b.Status
		h := st.Headroom
		if h == nil {
			h = &tgpv1.BudgetHeadroom{}
		}
		// One series per limit the budget sets: the limit, what counts
		// against it, and what is left.
		emit := func(limit string, set bool, max, spend, headroom float64) {
			if set {
				gauge(budgetLimitDesc, max, ns, name, limit)
				gauge(budgetSpendDesc, spend, ns, name, limit)
				gauge(budgetHeadroomDesc, headroom, ns, name, limit)
			}
		}
		emit("hourly", b.Spec.MaxHourlySpend != nil, deref(b.Spec.MaxHourlySpend), deref(st.HourlySpend), deref(h.Hourly))
		emit("monthly", b.Spec.MonthlyLimit != nil, deref(b.Spec.MonthlyLimit), deref(st.MonthToDateSpend), deref(h.Monthly))
		emit("gpus", b.Spec.MaxGPUs != nil, float64(deref(b.Spec.MaxGPUs)), float64(deref(st.GPUsInUse)), float64(deref(h.GPUs)))
		exceeded, reason := 0.0, ""
		if cond := meta.FindStatusCondition(st.Conditions, tgpv1.BudgetConditionExceeded); cond != nil {
			reason = cond.Reason
			if cond.Status == metav1.ConditionTrue {
				exceeded = 1
			}
		}
		gauge(budgetExceededDesc, exceeded, ns, name, reason)
	}
}

// deref is *v, or zero for nil.
func deref[T float64 | int32](v *T) T {
	if v == nil {
		return 0
	}
	return *v
}
