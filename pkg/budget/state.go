package budget

import (
	"cmp"
	"slices"
	"time"

	"k8s.io/apimachinery/pkg/util/validation/field"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
)

// Mode is what a namespace's monthly limits allow.
type Mode string

const (
	// Open: no monthlyLimit is reached; launches are limited only by headroom.
	Open Mode = "Open"
	// Hold: a monthlyLimit with onMonthlyLimit Hold is reached: no launch
	// or relaunch; running machines keep running.
	Hold Mode = "Hold"
	// Terminate: a monthlyLimit with onMonthlyLimit Terminate is reached: no
	// launch or relaunch, and every live machine of the namespace is
	// cordoned, drained and terminated, in TerminationOrder.
	Terminate Mode = "Terminate"
)

// NamespaceState is a namespace's Mode and the budget that imposes it.
type NamespaceState struct {
	Mode Mode
	// Budget is the GPUBudget that imposes Mode (empty when Open).
	Budget string
	// Message says why, for conditions and Events.
	Message string
}

// State is the namespace's Mode at now: Terminate when any valid budget
// whose onMonthlyLimit is Terminate has reached its monthlyLimit, else Hold
// when any has, else Open; the budget named is the first such by name.
// budgets and reqs are all of the namespace's. Hourly and GPU limits never
// hold a namespace: they refuse the launches that do not fit (Headroom).
func State(budgets []*tgpv1.GPUBudget, reqs []*tgpv1.GPURequest, now time.Time) NamespaceState {
	state := NamespaceState{Mode: Open}
	listed := listedUIDs(reqs)
	for _, b := range byName(budgets) {
		spec := &b.Spec
		if spec.MonthlyLimit == nil || len(tgpv1.ValidateBudgetSpec(spec, field.NewPath("spec"))) > 0 {
			continue
		}
		d := deletedRecord(b, budgets, listed, now)
		u := count(&d, reqs, now, nil)
		if u.month < toMicros(*spec.MonthlyLimit) {
			continue
		}
		mode := Hold
		if spec.OnMonthlyLimit == tgpv1.MonthlyLimitTerminate {
			mode = Terminate
		}
		if state.Mode == Open || state.Mode == Hold && mode == Terminate {
			state = NamespaceState{Mode: mode, Budget: b.Name, Message: "GPUBudget " + b.Name + ": " + monthlyMessage(spec, u.month)}
		}
	}
	return state
}

// TerminationOrder is the order in which Terminate takes the namespace's
// machines down: the live requests (Live), most expensive first, then the
// most recently launched first, then by name.
//
// Every live machine goes in the end; the order decides what is still
// billing while the others drain (drains wait for PodDisruptionBudgets and
// can take minutes). Most expensive first stops the most dollars per hour
// soonest, so the overshoot past the limit is smallest. Between equal
// prices the newest machine has done the least work, so the least is lost
// if it is interrupted; the name makes the order total.
func TerminationOrder(reqs []*tgpv1.GPURequest) []*tgpv1.GPURequest {
	var live []*tgpv1.GPURequest
	for _, r := range reqs {
		if Live(&r.Status) {
			live = append(live, r)
		}
	}
	slices.SortStableFunc(live, func(a, b *tgpv1.GPURequest) int {
		if c := cmp.Compare(toMicros(*b.Status.HourlyPrice), toMicros(*a.Status.HourlyPrice)); c != 0 {
			return c
		}
		if c := newerFirst(a, b); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	return live
}

// newerFirst orders by the current machine's launchedAt, latest first; a
// launch in flight (no launchedAt yet) is the newest of all.
func newerFirst(a, b *tgpv1.GPURequest) int {
	ta, tb := a.Status.LaunchedAt, b.Status.LaunchedAt
	switch {
	case ta == nil && tb == nil:
		return 0
	case ta == nil:
		return -1
	case tb == nil:
		return 1
	}
	return tb.Compare(ta.Time)
}

func byName(budgets []*tgpv1.GPUBudget) []*tgpv1.GPUBudget {
	out := slices.Clone(budgets)
	slices.SortFunc(out, func(a, b *tgpv1.GPUBudget) int { return cmp.Compare(a.Name, b.Name) })
	return out
}
