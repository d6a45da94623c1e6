package v1_test

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned"
	"github.com/solanyn/gpu-operator/pkg/testenv"
)

var budgetGVR = tgpv1.SchemeGroupVersion.WithResource("gpubudgets")

// createBudget posts one GPUBudget manifest with strict field validation.
func createBudget(ctx context.Context, t *testing.T, client dynamic.Interface, manifest string) (*unstructured.Unstructured, error) {
	t.Helper()
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(manifest), &obj); err != nil {
		t.Fatalf("bad test manifest: %v", err)
	}
	return client.Resource(budgetGVR).Namespace("default").Create(ctx, &unstructured.Unstructured{Object: obj},
		metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict})
}

func budgetManifest(name, spec string) string {
	return "apiVersion: tgp.solanyn.com/v1\nkind: GPUBudget\nmetadata: {name: " + name + "}\nspec:\n  " +
		strings.ReplaceAll(spec, "\n", "\n  ")
}

// testBudgetAdmission runs on TestAdmission's control plane.
func testBudgetAdmission(t *testing.T, env *testenv.Env, client dynamic.Interface) {
	ctx := t.Context()

	t.Run("the CRD and ValidateBudgetSpec agree", func(t *testing.T) {
		for i, tc := range budgetCases {
			t.Run(tc.name, func(t *testing.T) {
				_, apiErr := createBudget(ctx, t, client, budgetManifest(fmt.Sprintf("case-%d", i), tc.spec))
				goErrs := validateBudgetYAML(t, tc.spec)
				if (apiErr == nil) != (len(goErrs) == 0) {
					t.Fatalf("API server and ValidateBudgetSpec disagree:\n  API server: %v\n  ValidateBudgetSpec: %v", apiErr, goErrs.ToAggregate())
				}
				if tc.field == "" {
					return
				}
				if !strings.Contains(apiErr.Error(), tc.field) {
					t.Errorf("API server's error %q does not name %s", apiErr, tc.field)
				}
				if tc.message != "" && !strings.Contains(apiErr.Error(), tc.message) {
					t.Errorf("API server's error %q does not say %q", apiErr, tc.message)
				}
				checkNames(t, goErrs, specCase{field: tc.field})
			})
		}
	})

	// What only a real API server can refuse: the Go types cannot carry an
	// unknown field, a string amount or a fractional GPU count.
	for i, tc := range []struct{ name, spec, want string }{
		{"unknown field", "maxHourlySpend: 5\nmaxSpend: 5", "spec.maxSpend"},
		{"string amount", `maxHourlySpend: "ten dollars"`, "spec.maxHourlySpend"},
		{"amount with a currency", `monthlyLimit: "$500"`, "spec.monthlyLimit"},
		{"fractional maxGPUs", "maxGPUs: 1.5", "spec.maxGPUs"},
	} {
		t.Run("rejects "+tc.name, func(t *testing.T) {
			_, err := createBudget(ctx, t, client, budgetManifest(fmt.Sprintf("bad-%d", i), tc.spec))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error naming %s", err, tc.want)
			}
		})
	}

	t.Run("onMonthlyLimit defaults to Hold, the typed client reads it back", func(t *testing.T) {
		if _, err := createBudget(ctx, t, client, budgetManifest("defaulted", "monthlyLimit: 500")); err != nil {
			t.Fatal(err)
		}
		typed := versioned.NewForConfigOrDie(env.Config)
		b, err := typed.TgpV1().GPUBudgets("default").Get(ctx, "defaulted", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if b.Spec.OnMonthlyLimit != tgpv1.MonthlyLimitHold || b.Spec.MonthlyLimit == nil || *b.Spec.MonthlyLimit != 500 {
			t.Errorf("spec %+v, want monthlyLimit 500 and onMonthlyLimit Hold", b.Spec)
		}
	})

	t.Run("limits are mutable: a budget can be raised", func(t *testing.T) {
		if _, err := createBudget(ctx, t, client, budgetManifest("raised", "maxHourlySpend: 2\nmonthlyLimit: 100\nmaxGPUs: 1")); err != nil {
			t.Fatal(err)
		}
		obj, err := client.Resource(budgetGVR).Namespace("default").Get(ctx, "raised", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		_ = unstructured.SetNestedField(obj.Object, 20.5, "spec", "maxHourlySpend")
		_ = unstructured.SetNestedField(obj.Object, int64(1000), "spec", "monthlyLimit")
		_ = unstructured.SetNestedField(obj.Object, int64(8), "spec", "maxGPUs")
		_ = unstructured.SetNestedField(obj.Object, "Terminate", "spec", "onMonthlyLimit")
		if _, err := client.Resource(budgetGVR).Namespace("default").Update(ctx, obj, metav1.UpdateOptions{}); err != nil {
			t.Errorf("raising the budget: %v", err)
		}
	})

	t.Run("status is a subresource", func(t *testing.T) {
		typed := versioned.NewForConfigOrDie(env.Config).TgpV1().GPUBudgets("default")
		if _, err := createBudget(ctx, t, client, budgetManifest("with-status", "maxHourlySpend: 10\nmonthlyLimit: 500\nmaxGPUs: 8")); err != nil {
			t.Fatal(err)
		}
		b, err := typed.Get(ctx, "with-status", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		b.Status = budgetStatus()
		// A write of the main resource ignores status.
		if b, err = typed.Update(ctx, b, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if b.Status.HourlySpend != nil {
			t.Errorf("an update of the main resource wrote status: %+v", b.Status)
		}
		b.Status = budgetStatus()
		got, err := typed.UpdateStatus(ctx, b, metav1.UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Status.Deleted == nil || len(got.Status.Deleted.Requests) != 1 || got.Status.Headroom == nil || *got.Status.Headroom.GPUs != 4 {
			t.Errorf("status not stored as written: %+v", got.Status)
		}
		got.Status.Month = "2026-13"
		if _, err := typed.UpdateStatus(ctx, got, metav1.UpdateOptions{}); err == nil || !strings.Contains(err.Error(), "status.month") {
			t.Errorf("month 2026-13: got %v, want an error naming status.month", err)
		}
	})

	t.Run("table has the columns in order", func(t *testing.T) {
		cols := tableColumns(ctx, t, env, "gpubudgets")
		want := []string{"Name", "MAX/H", "SPEND/H", "MONTH", "LIMIT", "GPUS", "MAX-GPUS", "EXCEEDED", "AGE"}
		if strings.Join(cols, ",") != strings.Join(want, ",") {
			t.Errorf("columns %v, want %v", cols, want)
		}
	})
}

func budgetStatus() tgpv1.GPUBudgetStatus {
	f := func(v float64) *float64 { return &v }
	i := func(v int32) *int32 { return &v }
	return tgpv1.GPUBudgetStatus{
		ObservedGeneration: 1,
		Month:              "2026-12",
		HourlySpend:        f(3.5),
		MonthToDateSpend:   f(120.25),
		GPUsInUse:          i(4),
		Headroom:           &tgpv1.BudgetHeadroom{Hourly: f(6.5), Monthly: f(379.75), GPUs: i(4)},
		Deleted: &tgpv1.DeletedSpend{Cost: 10, Requests: []tgpv1.DeletedRequest{
			{UID: "9f1c2d4e-0000-4000-8000-000000000001", Name: "old-job", Cost: 2.5},
		}},
		Conditions: []metav1.Condition{{
			Type: tgpv1.BudgetConditionExceeded, Status: metav1.ConditionFalse, Reason: tgpv1.BudgetReasonWithinBudget,
			Message: "within budget", LastTransitionTime: metav1.Now(), ObservedGeneration: 1,
		}},
	}
}

// testKubectlGetBudgets runs on TestKubectlGetPrintsColumns's control plane.
func testKubectlGetBudgets(t *testing.T, env *testenv.Env, client dynamic.Interface) {
	ctx := t.Context()
	if _, err := createBudget(ctx, t, client, budgetManifest("team-a", "maxHourlySpend: 10\nmonthlyLimit: 500\nmaxGPUs: 8")); err != nil {
		t.Fatal(err)
	}
	typed := versioned.NewForConfigOrDie(env.Config).TgpV1().GPUBudgets("default")
	b, err := typed.Get(ctx, "team-a", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b.Status = budgetStatus()
	if _, err := typed.UpdateStatus(ctx, b, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(env.Root, "bin", "kubectl"), "--kubeconfig", env.Kubeconfig, "get", "gpubudgets").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl get: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if got := strings.Join(strings.Fields(lines[0]), " "); got != "NAME MAX/H SPEND/H MONTH LIMIT GPUS MAX-GPUS EXCEEDED AGE" {
		t.Errorf("kubectl header %q", lines[0])
	}
	if len(lines) != 2 {
		t.Fatalf("kubectl rows:\n%s", out)
	}
	row := strings.Fields(lines[1])
	if got := strings.Join(row[:len(row)-1], " "); got != "team-a 10 3.5 120.25 500 4 8 False" {
		t.Errorf("kubectl row %q, want team-a 10 3.5 120.25 500 4 8 False", lines[1])
	}
	t.Logf("kubectl get gpubudgets:\n%s", out)
}
