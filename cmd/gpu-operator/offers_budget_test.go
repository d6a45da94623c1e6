package main

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned"
	"github.com/solanyn/gpu-operator/pkg/testenv"
)

// offers --namespace marks the offers a GPUBudget of the namespace would
// refuse and chooses the best one it admits, as the controller would.
func TestOffersNamespaceBudget(t *testing.T) {
	env := testenv.StartT(t)
	st := h100Sims(t)
	kube := kubernetes.NewForConfigOrDie(env.Config)
	client := versioned.NewForConfigOrDie(env.Config)
	if _, err := kube.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	args := append(endpointArgs(t, st, simKey), "--gpu", "H100", "--count", "1", "--max-price", "3",
		"--namespace", "team", "--kubeconfig", env.Kubeconfig)

	// No budget: a note, and the ranking as without --namespace.
	res := runCmd(offersCmd, args...)
	if res.code != exitOK || !strings.Contains(res.errOut, "namespace team has no GPUBudget") {
		t.Fatalf("without a budget: exit %d, stderr %q", res.code, res.errOut)
	}

	// A budget under every offer's price: each is marked and none chosen.
	b := &tgpv1.GPUBudget{ObjectMeta: metav1.ObjectMeta{Name: "cap", Namespace: "team"}, Spec: tgpv1.GPUBudgetSpec{MaxHourlySpend: ptr.To(1.0)}}
	if _, err := client.TgpV1().GPUBudgets("team").Create(t.Context(), b, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	res = runCmd(offersCmd, args...)
	if res.code != exitFail || strings.Contains(res.out, "<- CHOSEN") || !strings.Contains(res.out, "OverBudget (GPUBudget cap: maxHourlySpend)") ||
		!strings.Contains(res.errOut, "every eligible offer is over a GPUBudget of namespace team") {
		t.Fatalf("over budget: exit %d\n%s\n%s", res.code, res.out, res.errOut)
	}
	doc := decodeOffers(t, runCmd(offersCmd, append(args, "-o", "json")...).out)
	if doc.Chosen != nil || len(doc.OverBudget) != len(doc.Ranked) || len(doc.Ranked) == 0 {
		t.Fatalf("json: chosen %v, %d over budget of %d ranked", doc.Chosen, len(doc.OverBudget), len(doc.Ranked))
	}
}
