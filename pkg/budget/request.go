package budget

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
)

// Live reports whether the request's current machine counts against
// maxHourlySpend and maxGPUs: its launch was recorded (the write-ahead
// record names the machine and its price) and it is not yet terminated.
// That is phase Provisioning, Booting, Joining, Ready or Terminating, with
// status.machineName and status.hourlyPrice set. A Provisioning record
// counts although its instance may not exist yet, so a machine whose launch
// is in flight when the operator restarts is never forgotten.
func Live(st *tgpv1.GPURequestStatus) bool {
	switch st.Phase {
	case tgpv1.PhaseProvisioning, tgpv1.PhaseBooting, tgpv1.PhaseJoining, tgpv1.PhaseReady, tgpv1.PhaseTerminating:
		return st.MachineName != "" && st.HourlyPrice != nil
	}
	return false
}

// Billing reports whether the request's current machine is (or may be)
// billing: an instance exists and has a price. Cost accrues only then.
func Billing(st *tgpv1.GPURequestStatus) bool {
	switch st.Phase {
	case tgpv1.PhaseBooting, tgpv1.PhaseJoining, tgpv1.PhaseReady, tgpv1.PhaseTerminating:
		return st.InstanceID != "" && st.HourlyPrice != nil
	}
	return false
}

// GPUs is the request's spec.gpuCount (1 when unset, as the API server defaults it).
func GPUs(req *tgpv1.GPURequest) int32 {
	if req.Spec.GPUCount < 1 {
		return 1
	}
	return req.Spec.GPUCount
}

// Accrue brings the request's cost up to now: the current machine's hourly
// price times the time since costUpdatedAt is added to accumulatedCost and,
// for the part that falls in now's calendar month (UTC), to monthCost,
// which starts from zero in a new month. It returns the dollars added to
// accumulatedCost. Amounts are rounded to micro-dollars.
//
// The controller calls it wherever it accrues cost (each sync that writes
// status, before an interruption's relaunch and when a machine is
// terminated), instead of updating accumulatedCost itself: monthCost is
// what GPUBudgets count, so the two must move together.
//
// When the machine is not billing nothing changes. When costUpdatedAt is
// unset, billing starts now. A status written before monthCost existed is
// seeded: its whole accumulatedCost is this month's if its first machine
// was provisioned this month; otherwise only what accrues from here on is.
func Accrue(st *tgpv1.GPURequestStatus, now time.Time) float64 {
	if !Billing(st) {
		return 0
	}
	if st.CostUpdatedAt == nil {
		at := metav1.NewTime(now)
		st.CostUpdatedAt = &at
		if st.AccumulatedCost == nil {
			st.AccumulatedCost = ptr(0.0)
		}
		seedMonthCost(st, MonthOf(now))
		return 0
	}
	from := st.CostUpdatedAt.Time
	if !now.After(from) {
		return 0
	}
	price := max(*st.HourlyPrice, 0)
	delta := price * now.Sub(from).Hours()
	total := delta
	if st.AccumulatedCost != nil {
		total += *st.AccumulatedCost
	}
	month := MonthOf(now)
	seedMonthCost(st, month)
	inMonth := price * now.Sub(later(from, month.Start())).Hours()
	st.MonthCost.Cost = roundMicros(st.MonthCost.Cost + inMonth)
	st.AccumulatedCost = ptr(roundMicros(total))
	at := metav1.NewTime(now)
	st.CostUpdatedAt = &at
	return delta
}

// seedMonthCost makes st.MonthCost cover month, before anything of month
// is added to it.
func seedMonthCost(st *tgpv1.GPURequestStatus, month Month) {
	if mc := st.MonthCost; mc != nil && mc.Month == month.String() {
		return
	}
	seed := 0.0
	if st.MonthCost == nil && st.AccumulatedCost != nil && provisionedIn(st, month) {
		seed = *st.AccumulatedCost
	}
	st.MonthCost = &tgpv1.MonthCost{Month: month.String(), Cost: seed}
}

func provisionedIn(st *tgpv1.GPURequestStatus, month Month) bool {
	return st.ProvisionedAt != nil && MonthOf(st.ProvisionedAt.Time) == month
}

// MonthSpend is what the request spent in now's calendar month (UTC): its
// monthCost for that month (zero when monthCost is of an earlier month),
// plus, while its machine is billing, the price times the time since
// costUpdatedAt (or since the month began) that the controller has not
// recorded yet. It is what GPUBudgets count for the request.
func MonthSpend(st *tgpv1.GPURequestStatus, now time.Time) float64 {
	return monthSpend(st, now).dollars()
}

func monthSpend(st *tgpv1.GPURequestStatus, now time.Time) micros {
	month := MonthOf(now)
	var m micros
	switch mc := st.MonthCost; {
	case mc != nil && mc.Month == month.String():
		m = toMicros(mc.Cost)
	case mc == nil && st.AccumulatedCost != nil && provisionedIn(st, month):
		m = toMicros(*st.AccumulatedCost) // as Accrue will seed it
	}
	if Billing(st) && st.CostUpdatedAt != nil {
		if from := later(st.CostUpdatedAt.Time, month.Start()); now.After(from) {
			m = m.add(toMicros(*st.HourlyPrice * now.Sub(from).Hours()))
		}
	}
	return m
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func ptr[T any](v T) *T { return &v }
