package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/nodeagent"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	"github.com/solanyn/gpu-operator/pkg/controller"
)

// TestGPUReadinessWaitsForTheDevicePlugin: the machine's Node registers
// Ready but reports no nvidia.com/gpu (its device plugin has not started):
// the request stays Joining and says what is missing, Ready=False; once the
// simulated device plugin publishes the GPUs it becomes Ready.
func TestGPUReadinessWaitsForTheDevicePlugin(t *testing.T) {
	r := newRig(t, rigOptions{
		sims: stack.Config{Lambda: simConfig(
			cloudsim.CatalogEntry{InstanceType: "gpu_2x_a10", GPUs: 2, Region: "us-east-1", OnDemandPrice: 1.5, Capacity: -1},
		)},
		config:  controller.Config{PollInterval: pollInterval, GPUResourceName: controller.DefaultGPUResource},
		noAgent: true, // this test's agent holds the GPUs back from the start
	})
	req := r.create(`
metadata: {name: a10}
spec: {gpuType: A10, gpuCount: 2}`)
	node := machinePrefix(req) + "1" // the first machine, named in its user data
	agent := &nodeagent.Agent{Kube: r.kube, Simulators: r.stack.Simulators(), Interval: 50 * time.Millisecond, TLSBootstrap: tlsBootstrap()}
	agent.HoldGPUs(node, true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); agent.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	want := "Node " + node + " is Ready but reports 0 of 2 nvidia.com/gpu allocatable; waiting for the device plugin"
	got := r.waitFor("a10", readyTimeout, "Joining without GPUs", func(g *tgpv1.GPURequest) bool {
		return g.Status.Message == want
	})
	if got.Status.Phase != tgpv1.PhaseJoining {
		t.Fatalf("phase %s, want Joining", got.Status.Phase)
	}
	if c := meta.FindStatusCondition(got.Status.Conditions, tgpv1.ConditionReady); c == nil || c.Status != metav1.ConditionFalse || c.Reason != "GPUsNotAllocatable" {
		t.Errorf("Ready condition %+v, want False/GPUsNotAllocatable", c)
	}
	// It stays so over several polls: a Ready Node is not enough. Wait
	// until the operator has listed the provider three more times (each
	// listing enqueues the request), then look again.
	lists := func() int { return r.stack.Lambda.Core().Counters().Requests["GET /api/v1/instances"] }
	seen := lists()
	if err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, readyTimeout, true, func(context.Context) (bool, error) {
		return lists() >= seen+3, nil
	}); err != nil {
		t.Fatalf("the operator did not list the provider three more times: %v", err)
	}
	if got = r.get("a10"); got.Status.Phase != tgpv1.PhaseJoining || got.Status.Message != want {
		t.Fatalf("phase %s message %q while the GPUs are held, want Joining %q", got.Status.Phase, got.Status.Message, want)
	}
	n, err := r.kube.CoreV1().Nodes().Get(t.Context(), node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := n.Status.Allocatable[nodeagent.GPUResource]; ok {
		t.Fatalf("Node %s reports %v while its GPUs are held", node, n.Status.Allocatable)
	}

	agent.HoldGPUs(node, false) // the device plugin starts
	got = r.waitPhase("a10", tgpv1.PhaseReady, readyTimeout)
	if got.Status.NodeName != node || got.Status.Message != "" {
		t.Errorf("nodeName %q message %q, want %s and no message", got.Status.NodeName, got.Status.Message, node)
	}
	if c := meta.FindStatusCondition(got.Status.Conditions, tgpv1.ConditionReady); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("Ready condition %+v, want True", c)
	}
	if evs := r.events("a10"); !containsAll(evs, "GPUsNotAllocatable", "Ready") {
		t.Errorf("events %v", evs)
	} else if strings.Contains(strings.Join(evs, " "), "JoinTimeout") {
		t.Errorf("events %v: no join timeout expected", evs)
	}
}
