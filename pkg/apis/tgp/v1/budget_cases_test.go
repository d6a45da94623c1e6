package v1_test

import (
	"testing"

	"k8s.io/apimachinery/pkg/util/validation/field"
	"sigs.k8s.io/yaml"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
)

// budgetCase is one GPUBudget spec, written as the YAML under `spec:`, that
// the CRD's schema and ValidateBudgetSpec must both accept (field == "") or
// both refuse, the API server naming field (and, for a CEL rule, saying
// message).
type budgetCase struct {
	name, spec, field, message string
}

var budgetCases = []budgetCase{
	{name: "every limit", spec: "maxHourlySpend: 10\nmonthlyLimit: 500\nmaxGPUs: 8\nonMonthlyLimit: Terminate"},
	{name: "only maxHourlySpend, in cents", spec: "maxHourlySpend: 0.01"},
	{name: "only monthlyLimit", spec: "monthlyLimit: 250.50"},
	{name: "only maxGPUs", spec: "maxGPUs: 1"},
	{name: "Hold spelled out", spec: "monthlyLimit: 100\nonMonthlyLimit: Hold"},
	{name: "Hold without monthlyLimit (the default; harmless)", spec: "maxGPUs: 4\nonMonthlyLimit: Hold"},
	{name: "the largest limits", spec: "maxHourlySpend: 1000000\nmonthlyLimit: 1000000000\nmaxGPUs: 100000"},

	{name: "no limit at all", spec: "{}", field: "spec", message: "set at least one of maxHourlySpend, monthlyLimit and maxGPUs"},
	{name: "only onMonthlyLimit", spec: "onMonthlyLimit: Hold", field: "spec", message: "set at least one of maxHourlySpend, monthlyLimit and maxGPUs"},
	{name: "maxHourlySpend 0", spec: "maxHourlySpend: 0", field: "spec.maxHourlySpend"},
	{name: "negative maxHourlySpend", spec: "maxHourlySpend: -1", field: "spec.maxHourlySpend"},
	{name: "maxHourlySpend over a million", spec: "maxHourlySpend: 1000000.01", field: "spec.maxHourlySpend"},
	{name: "monthlyLimit 0", spec: "monthlyLimit: 0", field: "spec.monthlyLimit"},
	{name: "negative monthlyLimit", spec: "monthlyLimit: -500", field: "spec.monthlyLimit"},
	{name: "monthlyLimit over a billion", spec: "monthlyLimit: 1000000001", field: "spec.monthlyLimit"},
	{name: "maxGPUs 0", spec: "maxGPUs: 0", field: "spec.maxGPUs"},
	{name: "negative maxGPUs", spec: "maxGPUs: -2", field: "spec.maxGPUs"},
	{name: "maxGPUs over 100000", spec: "maxGPUs: 100001", field: "spec.maxGPUs"},
	{name: "unknown onMonthlyLimit", spec: "monthlyLimit: 100\nonMonthlyLimit: Pause", field: "spec.onMonthlyLimit"},
	{name: "onMonthlyLimit in lower case", spec: "monthlyLimit: 100\nonMonthlyLimit: terminate", field: "spec.onMonthlyLimit"},
	{name: "Terminate without monthlyLimit", spec: "maxHourlySpend: 5\nonMonthlyLimit: Terminate", field: "spec.onMonthlyLimit",
		message: "onMonthlyLimit: Terminate needs monthlyLimit"},
}

func validateBudgetYAML(t *testing.T, spec string) field.ErrorList {
	t.Helper()
	var s tgpv1.GPUBudgetSpec
	if err := yaml.UnmarshalStrict([]byte(spec), &s); err != nil {
		t.Fatalf("bad test spec: %v", err)
	}
	return tgpv1.ValidateBudgetSpec(&s, field.NewPath("spec"))
}

func TestValidateBudgetSpec(t *testing.T) {
	for _, tc := range budgetCases {
		t.Run(tc.name, func(t *testing.T) {
			errs := validateBudgetYAML(t, tc.spec)
			switch {
			case tc.field == "" && len(errs) > 0:
				t.Fatalf("refused, want accepted: %v", errs.ToAggregate())
			case tc.field != "" && len(errs) == 0:
				t.Fatalf("accepted, want an error naming %s", tc.field)
			case tc.field != "":
				checkNames(t, errs, specCase{field: tc.field})
			}
		})
	}
}
