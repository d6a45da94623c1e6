package controller

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// GPU readiness: a Ready Node is not enough; its allocatable must carry the
// GPUs the request asked for (Config.GPUResourceName, join.go).

// joiningRequest is a request whose machine runs and whose Node has not
// joined yet, asking for gpus GPUs.
func joiningRequest(gpus int32) *tgpv1.GPURequest {
	return readyRequest("gpu", func(r *tgpv1.GPURequest) {
		r.Spec.GPUCount = gpus
		r.Status.Phase, r.Status.NodeName, r.Status.ReadyAt = tgpv1.PhaseJoining, "", nil
	})
}

// gpuNode is the request's Ready Node with gpus of resource allocatable
// (none at all when gpus < 0), beside the resources every Node reports.
func gpuNode(req *tgpv1.GPURequest, name corev1.ResourceName, gpus int64) *corev1.Node {
	n := readyNode(ownMachine, string(req.UID), "runpod://pod-1")
	n.Status.Allocatable = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourcePods: resource.MustParse("110")}
	if gpus >= 0 {
		n.Status.Allocatable[name] = *resource.NewQuantity(gpus, resource.DecimalSI)
	}
	return n
}

// publishGPUs sets the allocatable GPUs of the stored Node (gpus < 0 leaves
// them as they are) and copies it into the informer cache, as a watch would
// (with the labels the operator patched onto it).
func publishGPUs(f *fixture, gpus int64) {
	f.t.Helper()
	n, err := f.kube.CoreV1().Nodes().Get(f.t.Context(), ownMachine, metav1.GetOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	if gpus >= 0 {
		n.Status.Allocatable[DefaultGPUResource] = *resource.NewQuantity(gpus, resource.DecimalSI)
		if n, err = f.kube.CoreV1().Nodes().UpdateStatus(f.t.Context(), n, metav1.UpdateOptions{}); err != nil {
			f.t.Fatal(err)
		}
	}
	if err := f.kubeInf.Core().V1().Nodes().Informer().GetIndexer().Update(n); err != nil {
		f.t.Fatal(err)
	}
}

func TestStageJoinWaitsForAllocatableGPUs(t *testing.T) {
	req := joiningRequest(2)
	f := stageFixture(t, req)
	f.ctrl.cfg.GPUResourceName = DefaultGPUResource
	stageList(f, stageInstance("pod-1", ownMachine, providers.StateRunning))
	join := f.ctrl.cfg.JoinTimeout
	f.addNode(gpuNode(req, DefaultGPUResource, -1))

	for _, step := range []struct {
		name    string
		advance time.Duration
		gpus    int64 // allocatable nvidia.com/gpu; -1: not reported
		phase   tgpv1.Phase
		writes  int
		message string
		after   time.Duration
	}{
		{name: "Ready, no GPUs reported", advance: time.Minute, gpus: -1, phase: tgpv1.PhaseJoining, writes: 1,
			message: "Node " + ownMachine + " is Ready but reports 0 of 2 nvidia.com/gpu allocatable; waiting for the device plugin", after: join - time.Minute},
		{name: "still none: no write", advance: time.Minute, gpus: -1, phase: tgpv1.PhaseJoining, writes: 0,
			message: "Node " + ownMachine + " is Ready but reports 0 of 2 nvidia.com/gpu allocatable; waiting for the device plugin", after: join - 2*time.Minute},
		{name: "one of two", advance: time.Minute, gpus: 1, phase: tgpv1.PhaseJoining, writes: 1,
			message: "Node " + ownMachine + " is Ready but reports 1 of 2 nvidia.com/gpu allocatable; waiting for the device plugin", after: join - 3*time.Minute},
		{name: "both published", advance: time.Minute, gpus: 2, phase: tgpv1.PhaseReady, writes: 1, after: f.ctrl.cfg.CostInterval},
	} {
		f.clock.Step(step.advance)
		publishGPUs(f, step.gpus)
		f.reload("gpu")
		f.client.ClearActions()
		after := f.sync("gpu")
		if writes := f.statusWrites(); len(writes) != step.writes {
			t.Fatalf("%s: %d status writes, want %d", step.name, len(writes), step.writes)
		}
		st := f.reload("gpu").Status
		if st.Phase != step.phase || st.Message != step.message {
			t.Fatalf("%s: phase %s message %q, want %s %q", step.name, st.Phase, st.Message, step.phase, step.message)
		}
		if after != step.after {
			t.Errorf("%s: requeue after %s, want %s", step.name, after, step.after)
		}
		if step.phase == tgpv1.PhaseJoining {
			stageCondition(t, st, tgpv1.ConditionReady, metav1.ConditionFalse, "GPUsNotAllocatable")
			if c := meta.FindStatusCondition(st.Conditions, tgpv1.ConditionNodeJoined); c != nil {
				t.Errorf("%s: NodeJoined %+v, want it left as it was (unset)", step.name, c)
			}
			if st.NodeName != "" || st.ReadyAt != nil {
				t.Errorf("%s: nodeName %q readyAt %v before the GPUs are allocatable", step.name, st.NodeName, st.ReadyAt)
			}
		} else {
			stageCondition(t, st, tgpv1.ConditionReady, metav1.ConditionTrue, "NodeReady")
			stageCondition(t, st, tgpv1.ConditionNodeJoined, metav1.ConditionTrue, "NodeReady")
		}
	}
	// Labels and taints reached the Node while it waited for its GPUs (a
	// device plugin DaemonSet may select on them).
	if patches := stageNodePatches(f); len(patches) != 1 {
		t.Errorf("%d Node patches, want 1: %q", len(patches), patches)
	}
	if len(f.provider.terminated) != 0 {
		t.Errorf("terminated %v", f.provider.terminated)
	}
}

func TestStageJoinTimeoutWithoutGPUs(t *testing.T) {
	req := joiningRequest(1)
	f := stageFixture(t, req)
	f.ctrl.cfg.GPUResourceName = DefaultGPUResource
	stageList(f, stageInstance("pod-1", ownMachine, providers.StateRunning))
	f.addNode(gpuNode(req, DefaultGPUResource, 0))
	f.clock.Step(f.ctrl.cfg.JoinTimeout)
	stageList(f, stageInstance("pod-1", ownMachine, providers.StateRunning))
	f.sync("gpu")
	st := f.reload("gpu").Status
	if st.Phase != tgpv1.PhaseFailed || st.TerminationReason != "JoinTimeout" {
		t.Fatalf("phase %s reason %q, want Failed/JoinTimeout", st.Phase, st.TerminationReason)
	}
	if len(f.provider.terminated) != 1 {
		t.Errorf("terminated %v, want pod-1", f.provider.terminated)
	}
}

func TestStageJoinGPUCheck(t *testing.T) {
	for _, tc := range []struct {
		name     string
		resource string
		node     func(*tgpv1.GPURequest) *corev1.Node
		want     tgpv1.Phase
	}{
		{name: "check off: no GPUs needed", resource: "", want: tgpv1.PhaseReady,
			node: func(r *tgpv1.GPURequest) *corev1.Node { return gpuNode(r, DefaultGPUResource, -1) }},
		{name: "gpuCount unset asks for one", resource: DefaultGPUResource, want: tgpv1.PhaseReady,
			node: func(r *tgpv1.GPURequest) *corev1.Node { return gpuNode(r, DefaultGPUResource, 1) }},
		{name: "more than asked is enough", resource: DefaultGPUResource, want: tgpv1.PhaseReady,
			node: func(r *tgpv1.GPURequest) *corev1.Node { return gpuNode(r, DefaultGPUResource, 4) }},
		{name: "another resource name", resource: "amd.com/gpu", want: tgpv1.PhaseJoining,
			node: func(r *tgpv1.GPURequest) *corev1.Node { return gpuNode(r, DefaultGPUResource, 1) }},
		{name: "another resource name, published", resource: "amd.com/gpu", want: tgpv1.PhaseReady,
			node: func(r *tgpv1.GPURequest) *corev1.Node { return gpuNode(r, "amd.com/gpu", 1) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := joiningRequest(0)
			f := stageFixture(t, req)
			f.ctrl.cfg.GPUResourceName = tc.resource
			stageList(f, stageInstance("pod-1", ownMachine, providers.StateRunning))
			f.addNode(tc.node(req))
			f.sync("gpu")
			if st := f.reload("gpu").Status; st.Phase != tc.want {
				t.Errorf("phase %s (message %q), want %s", st.Phase, st.Message, tc.want)
			}
		})
	}
}

func TestGPUAllocatableReachesTheCacheAndTheQueue(t *testing.T) {
	n := gpuNode(readyRequest("gpu"), DefaultGPUResource, 1)
	n.Status.Allocatable["example.com/fpga"] = resource.MustParse("2")
	n.Status.Capacity = n.Status.Allocatable.DeepCopy()
	obj, err := TrimForCache(n.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	got := obj.(*corev1.Node).Status
	if len(got.Capacity) != 0 || len(got.Allocatable) != 2 || got.Allocatable.Name(DefaultGPUResource, resource.DecimalSI).Value() != 1 {
		t.Errorf("trimmed status %+v: want only the extended resources of allocatable", got)
	}
	if len(got.Conditions) != 1 {
		t.Errorf("trimmed conditions %+v, want the Ready condition", got.Conditions)
	}

	none := gpuNode(readyRequest("gpu"), DefaultGPUResource, -1)
	zero := gpuNode(readyRequest("gpu"), DefaultGPUResource, 0)
	for _, tc := range []struct {
		name     string
		old, cur *corev1.Node
		resource string
		want     bool
	}{
		{"published", none, n, DefaultGPUResource, true},
		{"zero published", none, zero, DefaultGPUResource, true},
		{"count changed", zero, n, DefaultGPUResource, true},
		{"unchanged", n, n.DeepCopy(), DefaultGPUResource, false},
		{"other resource", none, n, "amd.com/gpu", false},
		{"check off", none, n, "", false},
	} {
		if got := gpuAllocatableChanged(tc.old, tc.cur, tc.resource); got != tc.want {
			t.Errorf("%s: changed %v, want %v", tc.name, got, tc.want)
		}
	}
}
