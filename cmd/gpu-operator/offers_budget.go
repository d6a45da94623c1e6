package main

import (
	"context"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/budget"
	"github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"k8s.io/utils/clock"
)

// namespaceBudgets is what `offers --namespace` reads: the namespace's
// GPUBudgets and GPURequests, listed once, as a budget.Source.
type namespaceBudgets struct {
	budgets  []*tgpv1.GPUBudget
	requests []*tgpv1.GPURequest
}

func (n namespaceBudgets) Budgets(string) ([]*tgpv1.GPUBudget, error)   { return n.budgets, nil }
func (n namespaceBudgets) Requests(string) ([]*tgpv1.GPURequest, error) { return n.requests, nil }

// budgetCheck lists the namespace's GPUBudgets and GPURequests with the
// kubeconfig's credentials and returns what they still allow a new request
// (budget.Headroom), and the budgets' names.
func budgetCheck(ctx context.Context, kubeconfig, namespace string) (budget.Headroom, []string, error) {
	cfg, err := restConfig(kubeconfig)
	if err != nil {
		return budget.Headroom{}, nil, err
	}
	client, err := versioned.NewForConfig(cfg)
	if err != nil {
		return budget.Headroom{}, nil, err
	}
	bl, err := client.TgpV1().GPUBudgets(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return budget.Headroom{}, nil, fmt.Errorf("listing GPUBudgets in %s: %w", namespace, err)
	}
	rl, err := client.TgpV1().GPURequests(namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return budget.Headroom{}, nil, fmt.Errorf("listing GPURequests in %s: %w", namespace, err)
	}
	var src namespaceBudgets
	var names []string
	for i := range bl.Items {
		src.budgets = append(src.budgets, &bl.Items[i])
		names = append(names, bl.Items[i].Name)
	}
	for i := range rl.Items {
		src.requests = append(src.requests, &rl.Items[i])
	}
	// The dry run's request has no UID: every listed machine counts.
	h, err := budget.NewLedger(src, clock.RealClock{}).Headroom(namespace, "")
	return h, names, err
}

// budgetVerdict says, for each ranked offer, whether the namespace's
// budgets would refuse it, and which offer the operator would launch.
type budgetVerdict struct {
	refused map[int]*budget.OverBudgetError // by rank, from 0
	chosen  int                             // -1: every offer refused
}

func judge(ranked []providers.Offer, h budget.Headroom, gpus int32) budgetVerdict {
	v := budgetVerdict{refused: map[int]*budget.OverBudgetError{}, chosen: -1}
	for i, o := range ranked {
		if err := h.Admit(o.HourlyPrice, gpus); err != nil {
			v.refused[i], _ = budget.AsOverBudget(err)
			continue
		}
		if v.chosen < 0 {
			v.chosen = i
		}
	}
	return v
}
