package v1_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/yaml"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/testenv"
)

var gvr = tgpv1.SchemeGroupVersion.WithResource("gpurequests")

// create posts one GPURequest manifest with strict field validation, as
// `kubectl apply --validate=strict` does.
func create(ctx context.Context, t *testing.T, client dynamic.Interface, manifest string) (*unstructured.Unstructured, error) {
	t.Helper()
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(manifest), &obj); err != nil {
		t.Fatalf("bad test manifest: %v", err)
	}
	return client.Resource(gvr).Namespace("default").Create(ctx, &unstructured.Unstructured{Object: obj},
		metav1.CreateOptions{FieldValidation: metav1.FieldValidationStrict})
}

func TestAdmission(t *testing.T) {
	env := testenv.StartT(t)
	ctx := t.Context()
	client := dynamic.NewForConfigOrDie(env.Config)

	t.Run("design examples are accepted verbatim", func(t *testing.T) {
		for _, name := range []string{"spot-training-job", "multi-gpu-training", "region-aware-job"} {
			data, err := os.ReadFile(filepath.Join(env.Root, "manifests", "examples", name+".yaml"))
			if err != nil {
				t.Fatal(err)
			}
			got, err := create(ctx, t, client, string(data))
			if err != nil {
				t.Fatalf("%s rejected: %v", name, err)
			}
			var req tgpv1.GPURequest
			if err := yaml.UnmarshalStrict(data, &req); err != nil {
				t.Fatal(err)
			}
			if errs := tgpv1.ValidateSpec(&req.Spec, field.NewPath("spec")); len(errs) > 0 {
				t.Errorf("%s: ValidateSpec refuses it: %v", name, errs.ToAggregate())
			}
			count, _, _ := unstructured.NestedInt64(got.Object, "spec", "gpuCount")
			policy, _, _ := unstructured.NestedString(got.Object, "spec", "regionPolicy")
			wantCount := int64(1)
			if name == "multi-gpu-training" {
				wantCount = 4
			}
			if count != wantCount || policy != "Ordered" {
				t.Errorf("%s: gpuCount=%d regionPolicy=%q, want %d and Ordered (defaults)", name, count, policy, wantCount)
			}
		}
	})

	t.Run("the CRD and ValidateSpec agree", func(t *testing.T) {
		for i, tc := range specCases {
			t.Run(tc.name, func(t *testing.T) {
				manifest := fmt.Sprintf("apiVersion: tgp.solanyn.com/v1\nkind: GPURequest\nmetadata: {name: spec-%d}\nspec:\n  %s",
					i, strings.ReplaceAll(tc.spec, "\n", "\n  "))
				_, apiErr := create(ctx, t, client, manifest)
				goErrs := validateYAML(t, tc.spec)
				if (apiErr == nil) != (len(goErrs) == 0) {
					t.Fatalf("API server and ValidateSpec disagree:\n  API server: %v\n  ValidateSpec: %v", apiErr, goErrs.ToAggregate())
				}
				if tc.field == "" {
					if apiErr != nil {
						t.Fatalf("refused, want accepted:\n  API server: %v\n  ValidateSpec: %v", apiErr, goErrs.ToAggregate())
					}
					return
				}
				if apiErr == nil {
					t.Fatalf("accepted by both, want both to refuse naming %s", tc.field)
				}
				if !strings.Contains(apiErr.Error(), tc.field) {
					t.Errorf("API server's error %q does not name %s", apiErr, tc.field)
				}
				checkNames(t, goErrs, tc)
			})
		}
	})

	// What only a real API server can refuse: a Go GPURequestSpec cannot
	// carry an unknown field or a string price, and ValidateSpec reads
	// gpuCount 0 as unset (omitempty drops it; the server defaults it to 1).
	rejected := []struct {
		name, spec, want string
	}{
		{"gpuCount 0", `gpuType: A100
gpuCount: 0`, "spec.gpuCount"},
		{"unknown field", `gpuType: A100
gpuMemory: 80`, "spec.gpuMemory"},
		{"string price", `gpuType: A100
maxPrice: "cheap"`, "spec.maxPrice"},
	}
	for i, tc := range rejected {
		t.Run("rejects "+tc.name, func(t *testing.T) {
			manifest := "apiVersion: tgp.solanyn.com/v1\nkind: GPURequest\nmetadata: {name: bad-" + string(rune('a'+i)) + "}\nspec:\n  " +
				strings.ReplaceAll(tc.spec, "\n", "\n  ")
			_, err := create(ctx, t, client, manifest)
			if err == nil {
				t.Fatalf("accepted, want an error naming %s", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %s", err, tc.want)
			}
		})
	}

	t.Run("machine-choosing fields are immutable, lifetimes are not", func(t *testing.T) {
		_, err := create(ctx, t, client, `apiVersion: tgp.solanyn.com/v1
kind: GPURequest
metadata: {name: immutable}
spec: {gpuType: H100, regionPreference: [us-west-1], spotInstance: true, maxPrice: 3, maxLifetime: 1h}`)
		if err != nil {
			t.Fatal(err)
		}
		edits := []struct {
			field string
			value any
		}{
			{"gpuType", "A100"},
			{"gpuCount", int64(2)},
			{"spotInstance", false},
			{"regionPreference", []any{"us-east-1"}},
		}
		for _, e := range edits {
			obj, err := client.Resource(gvr).Namespace("default").Get(ctx, "immutable", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if err := unstructured.SetNestedField(obj.Object, e.value, "spec", e.field); err != nil {
				t.Fatal(err)
			}
			_, err = client.Resource(gvr).Namespace("default").Update(ctx, obj, metav1.UpdateOptions{})
			if err == nil || !strings.Contains(err.Error(), e.field+" is immutable") {
				t.Errorf("changing %s: got %v, want an immutability error naming it", e.field, err)
			}
		}
		for _, field := range []string{"maxLifetime", "idleTimeout"} {
			obj, err := client.Resource(gvr).Namespace("default").Get(ctx, "immutable", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			_ = unstructured.SetNestedField(obj.Object, "30m", "spec", field)
			if _, err := client.Resource(gvr).Namespace("default").Update(ctx, obj, metav1.UpdateOptions{}); err != nil {
				t.Errorf("changing %s: %v, want it mutable", field, err)
			}
		}
	})

	t.Run("table has the nine columns in order", func(t *testing.T) {
		cols := tableColumns(ctx, t, env, "gpurequests")
		want := []string{"Name", "GPU", "COUNT", "SPOT", "PROVIDER", "REGION", "PRICE", "PHASE", "NODE", "AGE"}
		if strings.Join(cols, ",") != strings.Join(want, ",") {
			t.Errorf("columns %v, want %v", cols, want)
		}
	})

	t.Run("GPUBudget", func(t *testing.T) { testBudgetAdmission(t, env, client) })
}

// tableColumns asks the API server for the Table that kubectl get prints
// for resource in the default namespace.
func tableColumns(ctx context.Context, t *testing.T, env *testenv.Env, resource string) []string {
	t.Helper()
	cfg := rest.CopyConfig(env.Config)
	cfg.GroupVersion = &tgpv1.SchemeGroupVersion
	cfg.APIPath = "/apis"
	cfg.NegotiatedSerializer = scheme.Codecs.WithoutConversion()
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var table metav1.Table
	err = rc.Get().Namespace("default").Resource(resource).
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").
		Do(ctx).Into(&table)
	if err != nil {
		t.Fatal(err)
	}
	if len(table.Rows) == 0 {
		t.Fatal("table has no rows")
	}
	var cols []string
	for _, c := range table.ColumnDefinitions {
		cols = append(cols, c.Name)
	}
	return cols
}

func TestKubectlGetPrintsColumns(t *testing.T) {
	env := testenv.StartT(t)
	client := dynamic.NewForConfigOrDie(env.Config)
	if _, err := create(t.Context(), t, client, `apiVersion: tgp.solanyn.com/v1
kind: GPURequest
metadata: {name: printed}
spec: {gpuType: A100, gpuCount: 2}`); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(env.Root, "bin", "kubectl"), "--kubeconfig", env.Kubeconfig, "get", "gpurequests").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl get: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if got := strings.Fields(lines[0]); strings.Join(got, " ") != "NAME GPU COUNT SPOT PROVIDER REGION PRICE PHASE NODE AGE" {
		t.Errorf("kubectl header %q", lines[0])
	}
	if len(lines) != 2 || !strings.HasPrefix(lines[1], "printed") || !strings.Contains(lines[1], "A100") {
		t.Errorf("kubectl rows:\n%s", out)
	}

	t.Run("gpubudgets", func(t *testing.T) { testKubectlGetBudgets(t, env, client) })
}
