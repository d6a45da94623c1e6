package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Money in this API is a plain JSON number of US dollars, as GPURequest's
// prices are (schema type number, Go float64): budgets are written the way
// users already write maxPrice. The operator sums and compares them in
// integer micro-dollars (pkg/budget), the precision accumulatedCost is kept
// to, so a sum of many prices never drifts past a limit it equals.

// GPUBudget caps what the GPURequests of its namespace may spend: dollars
// per hour over their live machines, dollars in the calendar month (UTC),
// and GPUs. Every GPUBudget of a namespace applies; a namespace without one
// has no limit. An offer that would break a budget loses with reason
// OverBudget, and the request stays Pending until the budget has room.
//
// +genclient
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=gpub,categories=all
// +kubebuilder:printcolumn:name="MAX/H",type=number,JSONPath=`.spec.maxHourlySpend`,description="maxHourlySpend, USD per hour"
// +kubebuilder:printcolumn:name="SPEND/H",type=number,JSONPath=`.status.hourlySpend`,description="USD per hour of the namespace's live machines"
// +kubebuilder:printcolumn:name="MONTH",type=number,JSONPath=`.status.monthToDateSpend`,description="USD spent this calendar month (UTC)"
// +kubebuilder:printcolumn:name="LIMIT",type=number,JSONPath=`.spec.monthlyLimit`,description="monthlyLimit, USD per calendar month"
// +kubebuilder:printcolumn:name="GPUS",type=integer,JSONPath=`.status.gpusInUse`,description="GPUs on live machines"
// +kubebuilder:printcolumn:name="MAX-GPUS",type=integer,JSONPath=`.spec.maxGPUs`,description="maxGPUs"
// +kubebuilder:printcolumn:name="EXCEEDED",type=string,JSONPath=`.status.conditions[?(@.type=="Exceeded")].status`
// +kubebuilder:printcolumn:name="AGE",type=date,JSONPath=`.metadata.creationTimestamp`
type GPUBudget struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// spec is the limits.
	// +required
	Spec GPUBudgetSpec `json:"spec"`
	// status is the namespace's spend against them, as the operator last counted it.
	// +optional
	Status GPUBudgetStatus `json:"status,omitempty"`
}

// MonthlyLimitAction is what happens when a namespace's month-to-date spend
// reaches a budget's monthlyLimit.
// +kubebuilder:validation:Enum=Hold;Terminate
type MonthlyLimitAction string

const (
	// MonthlyLimitHold: no new launches (nor relaunches); running machines keep running.
	MonthlyLimitHold MonthlyLimitAction = "Hold"
	// MonthlyLimitTerminate: no new launches, and every running machine of
	// the namespace is cordoned, drained and terminated (most expensive first).
	MonthlyLimitTerminate MonthlyLimitAction = "Terminate"
)

// GPUBudgetSpec is the limits on one namespace. At least one is set; a limit
// left unset does not apply.
//
// +kubebuilder:validation:XValidation:rule="has(self.maxHourlySpend) || has(self.monthlyLimit) || has(self.maxGPUs)",message="set at least one of maxHourlySpend, monthlyLimit and maxGPUs"
// +kubebuilder:validation:XValidation:rule="!has(self.onMonthlyLimit) || self.onMonthlyLimit != 'Terminate' || has(self.monthlyLimit)",message="onMonthlyLimit: Terminate needs monthlyLimit",fieldPath=".onMonthlyLimit"
type GPUBudgetSpec struct {
	// maxHourlySpend caps the USD per hour of the namespace's live machines
	// (the summed hourlyPrice of every GPURequest whose machine is launching,
	// booting, joining, ready or terminating). A launch that would take the
	// sum above it is refused (OverBudget); lowering it below the current sum
	// stops no machine, it only refuses launches until the sum is under it.
	// +optional
	// +kubebuilder:validation:ExclusiveMinimum=true
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	MaxHourlySpend *float64 `json:"maxHourlySpend,omitempty"`

	// monthlyLimit caps the USD the namespace's GPURequests accrue in the
	// current calendar month (UTC, from 00:00 on the 1st), counting machines
	// already terminated and requests already deleted this month. When the
	// month's spend reaches it, onMonthlyLimit applies until the month ends
	// or the limit is raised.
	// +optional
	// +kubebuilder:validation:ExclusiveMinimum=true
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000000
	MonthlyLimit *float64 `json:"monthlyLimit,omitempty"`

	// maxGPUs caps the GPUs (spec.gpuCount summed) on the namespace's live machines.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	MaxGPUs *int32 `json:"maxGPUs,omitempty"`

	// onMonthlyLimit is Hold (default: no new launches, running machines keep
	// running) or Terminate (no new launches, and running machines are
	// cordoned, drained and terminated, most expensive first).
	// +optional
	// +kubebuilder:default=Hold
	OnMonthlyLimit MonthlyLimitAction `json:"onMonthlyLimit,omitempty"`
}

// Budget condition type and reasons.
const (
	// BudgetConditionExceeded is True while the namespace is over one of the budget's limits.
	BudgetConditionExceeded = "Exceeded"

	// BudgetReasonWithinBudget: every limit has room (Exceeded=False).
	BudgetReasonWithinBudget = "WithinBudget"
	// BudgetReasonMonthlyLimitReached: month-to-date spend reached monthlyLimit; onMonthlyLimit applies.
	BudgetReasonMonthlyLimitReached = "MonthlyLimitReached"
	// BudgetReasonHourlySpendExceeded: live machines cost more per hour than maxHourlySpend (it was lowered below them).
	BudgetReasonHourlySpendExceeded = "HourlySpendExceeded"
	// BudgetReasonGPULimitExceeded: live machines have more GPUs than maxGPUs (it was lowered below them).
	BudgetReasonGPULimitExceeded = "GPULimitExceeded"
)

// GPUBudgetStatus is the namespace's spend against the budget. The operator
// recomputes it from the GPURequests' own status (hourlyPrice, monthCost)
// plus deleted, the one part that lives only here.
type GPUBudgetStatus struct {
	// observedGeneration is the spec generation the status reflects.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// month is the calendar month (UTC, YYYY-MM) that monthToDateSpend and deleted cover.
	// +optional
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-(0[1-9]|1[0-2])$`
	Month string `json:"month,omitempty"`
	// hourlySpend is the USD per hour of the namespace's live machines.
	// +optional
	HourlySpend *float64 `json:"hourlySpend,omitempty"`
	// monthToDateSpend is the USD the namespace's GPURequests accrued in month, deleted ones included.
	// +optional
	MonthToDateSpend *float64 `json:"monthToDateSpend,omitempty"`
	// gpusInUse is the GPUs on the namespace's live machines.
	// +optional
	GPUsInUse *int32 `json:"gpusInUse,omitempty"`
	// headroom is what each set limit still allows (never below zero).
	// +optional
	Headroom *BudgetHeadroom `json:"headroom,omitempty"`
	// deleted is the month's spend of GPURequests deleted this month, recorded
	// by the operator before it releases each one's finalizer.
	// +optional
	Deleted *DeletedSpend `json:"deleted,omitempty"`
	// conditions: Exceeded (True with the reason while a limit is exceeded).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// BudgetHeadroom is what each limit still allows; a limit that is unset has no headroom field.
type BudgetHeadroom struct {
	// hourly is maxHourlySpend minus hourlySpend, USD per hour.
	// +optional
	Hourly *float64 `json:"hourly,omitempty"`
	// monthly is monthlyLimit minus monthToDateSpend, USD.
	// +optional
	Monthly *float64 `json:"monthly,omitempty"`
	// gpus is maxGPUs minus gpusInUse.
	// +optional
	GPUs *int32 `json:"gpus,omitempty"`
}

// DeletedSpend is what GPURequests deleted in the month spent in it. A
// deleted request is first listed in requests (idempotently, by UID, before
// its finalizer is released); once it is gone from the API its entry is
// folded into cost. So a retried or repeated deletion, a restart or a new
// leader neither loses nor double-counts it, and the list stays short.
type DeletedSpend struct {
	// cost is the USD of deleted requests no longer listed.
	Cost float64 `json:"cost"`
	// requests are deleted requests whose cost is recorded but that may still exist (finalizer being released).
	// +optional
	// +listType=map
	// +listMapKey=uid
	Requests []DeletedRequest `json:"requests,omitempty"`
}

// DeletedRequest is one deleted GPURequest's spend in the month.
type DeletedRequest struct {
	// uid is the GPURequest's UID.
	UID types.UID `json:"uid"`
	// name is the GPURequest's name.
	// +optional
	Name string `json:"name,omitempty"`
	// cost is its spend in the month, USD.
	Cost float64 `json:"cost"`
}

// MonthCost is the part of a GPURequest's accumulatedCost accrued in one
// calendar month (UTC).
type MonthCost struct {
	// month is the calendar month, YYYY-MM, UTC.
	// +kubebuilder:validation:Pattern=`^[0-9]{4}-(0[1-9]|1[0-2])$`
	Month string `json:"month"`
	// cost is the USD accrued in month.
	Cost float64 `json:"cost"`
}

// GPUBudgetList is a list of GPUBudgets.
//
// +k8s:deepcopy-gen:interfaces=k8s.io/apimachinery/pkg/runtime.Object
// +kubebuilder:object:root=true
type GPUBudgetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`

	// items are the GPUBudgets.
	Items []GPUBudget `json:"items"`
}
