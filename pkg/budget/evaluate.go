package budget

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
)

// Limit names, as in GPUBudgetSpec and OverBudgetError.Limit.
const (
	LimitMaxHourlySpend = "maxHourlySpend"
	LimitMonthlyLimit   = "monthlyLimit"
	LimitMaxGPUs        = "maxGPUs"
)

// BudgetReasonInvalidSpec is the Exceeded condition's reason (status
// Unknown) on a budget whose spec fails ValidateBudgetSpec (stored around
// admission). Such a budget is reported, never enforced.
const BudgetReasonInvalidSpec = "InvalidSpec"

// usage is what a namespace's requests use, as one budget counts it.
type usage struct {
	hourly micros // summed hourlyPrice of live machines
	gpus   int64  // summed gpuCount of live machines
	month  micros // month-to-date spend, deleted requests included
}

// deletedRecord is a budget's record of the month's deleted spend as of
// now: rolled over to now's month, seeded from a sibling when the budget
// has never been counted, and with the entries of requests no longer
// listed folded into cost (none when listed is nil).
func deletedRecord(b *tgpv1.GPUBudget, siblings []*tgpv1.GPUBudget, listed map[types.UID]bool, now time.Time) tgpv1.DeletedSpend {
	month := MonthOf(now).String()
	var d tgpv1.DeletedSpend
	switch {
	case b.Status.Month == month && b.Status.Deleted != nil:
		d = *b.Status.Deleted.DeepCopy()
	case b.Status.Month == "":
		// A new budget starts from the fullest record of a sibling counted
		// this month: every budget of a namespace records each deletion, so
		// the one with the most has seen them all.
		if s := fullestSibling(b, siblings, month); s != nil {
			d = *s.Status.Deleted.DeepCopy()
		}
	}
	kept := d.Requests[:0]
	for _, e := range d.Requests {
		if listed == nil || listed[e.UID] {
			kept = append(kept, e)
		} else {
			d.Cost = toMicros(d.Cost).add(toMicros(e.Cost)).dollars()
		}
	}
	d.Requests = kept
	if len(d.Requests) == 0 {
		d.Requests = nil
	}
	return d
}

func fullestSibling(b *tgpv1.GPUBudget, siblings []*tgpv1.GPUBudget, month string) *tgpv1.GPUBudget {
	var best *tgpv1.GPUBudget
	var bestTotal micros
	for _, s := range siblings {
		if s.UID == b.UID && s.Name == b.Name || s.Namespace != b.Namespace || s.Status.Month != month || s.Status.Deleted == nil {
			continue
		}
		total := deletedTotal(s.Status.Deleted)
		if best == nil || total > bestTotal || total == bestTotal && s.Name < best.Name {
			best, bestTotal = s, total
		}
	}
	return best
}

func deletedTotal(d *tgpv1.DeletedSpend) micros {
	t := toMicros(d.Cost)
	for _, e := range d.Requests {
		t = t.add(toMicros(e.Cost))
	}
	return t
}

func listedUIDs(reqs []*tgpv1.GPURequest) map[types.UID]bool {
	listed := make(map[types.UID]bool, len(reqs)+1)
	for _, r := range reqs {
		listed[r.UID] = true
	}
	return listed
}

// count adds up the requests against one budget's deleted record. Requests
// in skip count for the month but not for hourly spend or GPUs (their
// machine is being replaced; the ledger counts the replacement).
func count(d *tgpv1.DeletedSpend, reqs []*tgpv1.GPURequest, now time.Time, skip func(types.UID) bool) usage {
	u := usage{month: deletedTotal(d)}
	recorded := make(map[types.UID]bool, len(d.Requests))
	for _, e := range d.Requests {
		recorded[e.UID] = true
	}
	for _, r := range reqs {
		if !recorded[r.UID] {
			u.month = u.month.add(monthSpend(&r.Status, now))
		}
		if Live(&r.Status) && (skip == nil || !skip(r.UID)) {
			u.hourly = u.hourly.add(toMicros(*r.Status.HourlyPrice))
			u.gpus += int64(GPUs(r))
		}
	}
	return u
}

// Evaluate returns the budget's status as the GPURequests of its namespace
// (reqs, all of them, from the lister) make it at now: month rolled over at
// 00:00 UTC on the 1st, the deleted record carried (deleted requests no
// longer listed folded into deleted.cost), hourly spend, month-to-date
// spend, GPUs in use, headroom, the Exceeded condition and
// observedGeneration. siblings are the namespace's other GPUBudgets (b may
// be among them): a budget counted for the first time takes its deleted
// record from the fullest of them. b is not modified; the controller
// writes the result with UpdateStatus when it differs from b.Status.
func Evaluate(b *tgpv1.GPUBudget, siblings []*tgpv1.GPUBudget, reqs []*tgpv1.GPURequest, now time.Time) tgpv1.GPUBudgetStatus {
	st := *b.Status.DeepCopy()
	st.ObservedGeneration = b.Generation
	st.Month = MonthOf(now).String()
	d := deletedRecord(b, siblings, listedUIDs(reqs), now)
	st.Deleted = &d
	u := count(&d, reqs, now, nil)
	st.HourlySpend = ptr(u.hourly.dollars())
	st.MonthToDateSpend = ptr(u.month.dollars())
	st.GPUsInUse = ptr(clampInt32(u.gpus))

	spec := &b.Spec
	h := &tgpv1.BudgetHeadroom{}
	if spec.MaxHourlySpend != nil {
		h.Hourly = ptr(max(toMicros(*spec.MaxHourlySpend)-u.hourly, 0).dollars())
	}
	if spec.MonthlyLimit != nil {
		h.Monthly = ptr(max(toMicros(*spec.MonthlyLimit)-u.month, 0).dollars())
	}
	if spec.MaxGPUs != nil {
		h.GPUs = ptr(clampInt32(max(int64(*spec.MaxGPUs)-u.gpus, 0)))
	}
	st.Headroom = h

	cond := metav1.Condition{Type: tgpv1.BudgetConditionExceeded, ObservedGeneration: b.Generation, LastTransitionTime: metav1.NewTime(now)}
	if errs := tgpv1.ValidateBudgetSpec(spec, field.NewPath("spec")); len(errs) > 0 {
		cond.Status, cond.Reason = metav1.ConditionUnknown, BudgetReasonInvalidSpec
		cond.Message = "not enforced: " + errs.ToAggregate().Error()
	} else if reason, msgs := exceeded(spec, u); reason != "" {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionTrue, reason, strings.Join(msgs, "; ")
	} else {
		cond.Status, cond.Reason, cond.Message = metav1.ConditionFalse, tgpv1.BudgetReasonWithinBudget, "the namespace is within every limit"
	}
	meta.SetStatusCondition(&st.Conditions, cond)
	return st
}

// exceeded says which limits the usage is over: the month's spend at or
// above monthlyLimit, hourly spend or GPUs above their maximum (a limit
// lowered below what runs). The reason is the first of them.
func exceeded(spec *tgpv1.GPUBudgetSpec, u usage) (string, []string) {
	var reason string
	var msgs []string
	add := func(r, msg string) {
		if reason == "" {
			reason = r
		}
		msgs = append(msgs, msg)
	}
	if spec.MonthlyLimit != nil && u.month >= toMicros(*spec.MonthlyLimit) {
		add(tgpv1.BudgetReasonMonthlyLimitReached, monthlyMessage(spec, u.month))
	}
	if spec.MaxHourlySpend != nil && u.hourly > toMicros(*spec.MaxHourlySpend) {
		add(tgpv1.BudgetReasonHourlySpendExceeded, fmt.Sprintf("live machines cost %s/h, over maxHourlySpend %s/h: no launches until they cost less",
			u.hourly, toMicros(*spec.MaxHourlySpend)))
	}
	if spec.MaxGPUs != nil && u.gpus > int64(*spec.MaxGPUs) {
		add(tgpv1.BudgetReasonGPULimitExceeded, fmt.Sprintf("live machines have %d GPUs, over maxGPUs %d: no launches until fewer run", u.gpus, *spec.MaxGPUs))
	}
	return reason, msgs
}

func monthlyMessage(spec *tgpv1.GPUBudgetSpec, month micros) string {
	action := "no new launches (Hold)"
	if spec.OnMonthlyLimit == tgpv1.MonthlyLimitTerminate {
		action = "no new launches, running machines are terminated (Terminate)"
	}
	return fmt.Sprintf("month-to-date spend %s has reached monthlyLimit %s: %s", month, toMicros(*spec.MonthlyLimit), action)
}

// RecordDeletion records in b.Status what req spent this month (UTC), by
// UID, so the spend outlives the request. The controller calls it on a
// copy of every GPUBudget of the request's namespace, with its own
// in-memory request (cost accrued up to the machine's termination), before
// it releases the request's finalizer, and writes each budget that it
// reports changed with UpdateStatus; only when every write succeeded does
// it release the finalizer (otherwise it returns the error and retries).
// A retry, a restart or a new leader repeating it changes nothing: the
// entry is keyed by UID and never lowered. siblings are as for Evaluate.
func RecordDeletion(b *tgpv1.GPUBudget, siblings []*tgpv1.GPUBudget, req *tgpv1.GPURequest, now time.Time) bool {
	spent := monthSpend(&req.Status, now)
	if spent == 0 {
		return false
	}
	month := MonthOf(now).String()
	if b.Status.Month != month || b.Status.Deleted == nil {
		// Roll over (or seed) without folding: the caller's lister may not
		// show every request; Evaluate folds.
		d := deletedRecord(b, siblings, nil, now)
		b.Status.Month, b.Status.Deleted = month, &d
	}
	d := b.Status.Deleted
	if i := slices.IndexFunc(d.Requests, func(e tgpv1.DeletedRequest) bool { return e.UID == req.UID }); i >= 0 {
		if toMicros(d.Requests[i].Cost) >= spent {
			return false
		}
		d.Requests[i].Cost = spent.dollars()
		return true
	}
	d.Requests = append(d.Requests, tgpv1.DeletedRequest{UID: req.UID, Name: req.Name, Cost: spent.dollars()})
	return true
}

func clampInt32(v int64) int32 {
	return int32(min(max(v, 0), 1<<31-1))
}
