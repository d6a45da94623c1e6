package v1

import (
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// GPUBudget limits, as in the CRD markers in budget_types.go (the admission
// test runs one table through both).
const (
	maxBudgetHourlySpend = 1_000_000
	maxBudgetMonthly     = 1_000_000_000
	maxBudgetGPUs        = 100_000
)

var monthlyLimitActions = []string{string(MonthlyLimitHold), string(MonthlyLimitTerminate)}

// ValidateBudgetSpec checks one GPUBudgetSpec against the rules the CRD
// schema enforces at admission, so the operator can report (and ignore) a
// budget stored around admission instead of acting on it. An empty
// onMonthlyLimit is treated as unset (the API server defaults it to Hold).
func ValidateBudgetSpec(spec *GPUBudgetSpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if spec.MaxHourlySpend == nil && spec.MonthlyLimit == nil && spec.MaxGPUs == nil {
		errs = append(errs, field.Required(path, "set at least one of maxHourlySpend, monthlyLimit and maxGPUs"))
	}
	// !(v > 0) refuses NaN too, which JSON cannot carry but Go can.
	if v := spec.MaxHourlySpend; v != nil && (!(*v > 0) || *v > maxBudgetHourlySpend) {
		errs = append(errs, field.Invalid(path.Child("maxHourlySpend"), *v, "must be greater than 0 and at most 1000000 (USD per hour)"))
	}
	if v := spec.MonthlyLimit; v != nil && (!(*v > 0) || *v > maxBudgetMonthly) {
		errs = append(errs, field.Invalid(path.Child("monthlyLimit"), *v, "must be greater than 0 and at most 1000000000 (USD per calendar month)"))
	}
	if v := spec.MaxGPUs; v != nil && (*v < 1 || *v > maxBudgetGPUs) {
		errs = append(errs, field.Invalid(path.Child("maxGPUs"), *v, "must be between 1 and 100000"))
	}
	switch a := spec.OnMonthlyLimit; {
	case a == "":
	case a != MonthlyLimitHold && a != MonthlyLimitTerminate:
		errs = append(errs, field.NotSupported(path.Child("onMonthlyLimit"), a, monthlyLimitActions))
	case a == MonthlyLimitTerminate && spec.MonthlyLimit == nil:
		errs = append(errs, field.Invalid(path.Child("onMonthlyLimit"), a, "onMonthlyLimit: Terminate needs monthlyLimit"))
	}
	return errs
}
