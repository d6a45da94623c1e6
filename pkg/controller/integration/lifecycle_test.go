package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	vastaisim "github.com/solanyn/gpu-operator/pkg/cloudsim/vastai"
	"github.com/solanyn/gpu-operator/pkg/controller"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

const pollInterval = time.Second

// machineFor finds the simulator machine launched under a name.
func (r *rig) machineFor(name string) cloudsim.Machine {
	r.t.Helper()
	for _, m := range r.stack.Machines() {
		if m.Name == name {
			return m
		}
	}
	r.t.Fatalf("no simulated machine named %s", name)
	return cloudsim.Machine{}
}

// machinePrefix is the start of every machine name of a request: the
// operator derives it from the UID and acts on no other name.
func machinePrefix(req *tgpv1.GPURequest) string {
	return providers.MachineNamePrefix + strings.ReplaceAll(string(req.UID), "-", "")[:16] + "-"
}

// liveFor counts the live machines launched for a request (by UID prefix).
func (r *rig) liveFor(req *tgpv1.GPURequest) int {
	prefix := machinePrefix(req)
	n := 0
	for _, m := range r.liveMachines() {
		if strings.HasPrefix(m.Name, prefix) {
			n++
		}
	}
	return n
}

func (r *rig) nodeGone(name string) {
	r.t.Helper()
	err := wait.PollUntilContextTimeout(r.t.Context(), 50*time.Millisecond, 15*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := r.kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		r.t.Errorf("Node %s still exists", name)
	}
}

// preemptAndRecover preempts a Ready request's machine and checks the
// recovery contract: a replacement launch in another offering within one
// poll interval plus a second, Ready again, one interruption, the old Node
// gone (a VM's; a container has none, before or after) and exactly one live
// machine.
func (r *rig) preemptAndRecover(name string, sim cloudsim.Simulator) *tgpv1.GPURequest {
	r.t.Helper()
	before := r.waitPhase(name, tgpv1.PhaseReady, readyTimeout)
	if err := sim.Preempt(before.Status.InstanceID); err != nil {
		r.t.Fatal(err)
	}
	preempted := time.Now()
	next := strings.TrimSuffix(before.Status.MachineName, "-1") + "-2"
	var relaunchedAfter time.Duration
	err := wait.PollUntilContextTimeout(r.t.Context(), 10*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		for _, s := range r.stack.Simulators() {
			if s.Core().Counters().Launches[next] > 0 {
				relaunchedAfter = time.Since(preempted)
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		r.t.Fatalf("no replacement launch of %s", next)
	}
	r.t.Logf("replacement launch reached the simulator %s after the preemption", relaunchedAfter.Round(time.Millisecond))
	if relaunchedAfter > pollInterval+time.Second {
		r.t.Errorf("replacement launched %s after the preemption, want at most the poll interval (%s) plus 1s", relaunchedAfter, pollInterval)
	}
	after := r.waitFor(name, readyTimeout, "Ready on the replacement", func(req *tgpv1.GPURequest) bool {
		return req.Status.Phase == tgpv1.PhaseReady && req.Status.MachineName == next
	})
	if after.Status.Interruptions != 1 {
		r.t.Errorf("interruptions %d, want 1", after.Status.Interruptions)
	}
	if after.Status.ProviderRegion == before.Status.ProviderRegion && after.Status.InstanceType == before.Status.InstanceType && after.Status.Provider == before.Status.Provider {
		r.t.Errorf("recovered into the same offering %s/%s/%s", after.Status.Provider, after.Status.InstanceType, after.Status.ProviderRegion)
	}
	c := meta.FindStatusCondition(after.Status.Conditions, tgpv1.ConditionInterrupted)
	if before.Spec.Container != nil {
		// Only the provider's list can see a container's loss.
		if c == nil || c.Reason != "Recovered" || !strings.Contains(c.Message, "InstanceInterrupted") {
			r.t.Errorf("Interrupted condition %+v, want Recovered from InstanceInterrupted", c)
		}
		if before.Status.NodeName != "" || after.Status.NodeName != "" {
			r.t.Errorf("container request with nodeName %q before and %q after, want none", before.Status.NodeName, after.Status.NodeName)
		}
	} else {
		// The loss is seen by whichever watcher is first: the provider's list
		// (Instance*) or the Node informer (the machine's Node went away).
		if c == nil || c.Reason != "Recovered" || !(strings.Contains(c.Message, "Instance") || strings.Contains(c.Message, "NodeDeleted")) {
			r.t.Errorf("Interrupted condition %+v, want Recovered with the cause", c)
		}
		r.nodeGone(before.Status.NodeName)
	}
	err = wait.PollUntilContextTimeout(r.t.Context(), 50*time.Millisecond, 15*time.Second, true, func(context.Context) (bool, error) {
		return r.liveFor(after) == 1, nil
	})
	if err != nil {
		r.t.Errorf("%d live machines for the request, want exactly 1", r.liveFor(after))
	}
	return after
}

func TestLambdaPreemptionRelaunchesElsewhere(t *testing.T) {
	r := newRig(t, rigOptions{
		sims: stack.Config{Lambda: simConfig(
			cloudsim.CatalogEntry{InstanceType: "gpu_1x_a10", GPUs: 1, Region: "us-east-1", OnDemandPrice: 0.75, Capacity: -1},
			cloudsim.CatalogEntry{InstanceType: "gpu_1x_a10", GPUs: 1, Region: "us-west-1", OnDemandPrice: 0.75, Capacity: -1},
		)},
		config: controller.Config{PollInterval: pollInterval},
	})
	r.create(`
metadata: {name: a10}
spec: {gpuType: A10, regionPreference: [us-east-1, us-west-1]}`)
	after := r.preemptAndRecover("a10", r.stack.Lambda)
	if after.Status.Region != "us-west-1" {
		t.Errorf("recovered into %s, want the failover region us-west-1", after.Status.Region)
	}
	if evs := r.events("a10"); !containsAll(evs, "Interrupted", "Launched", "Ready") {
		t.Errorf("events %v", evs)
	}
}

// TestRunPodExitedContainerPodIsReplacedAndTerminated: RunPod stops a
// running pod on its own (EXITED: host maintenance, a balance run dry; it
// sells no spot). The container request is interrupted, a replacement pod is
// launched in the other data center and becomes Ready, and the stopped pod,
// which would bill its disk for as long as it exists, is deleted.
func TestRunPodExitedContainerPodIsReplacedAndTerminated(t *testing.T) {
	r := newRig(t, rigOptions{
		sims: stack.Config{RunPod: simConfig(
			cloudsim.CatalogEntry{InstanceType: "NVIDIA GeForce RTX 4090", GPUs: 8, Region: "US-CA-2", OnDemandPrice: 0.69, Capacity: -1},
			cloudsim.CatalogEntry{InstanceType: "NVIDIA GeForce RTX 4090", GPUs: 8, Region: "US-TX-3", OnDemandPrice: 0.69, Capacity: -1},
		)},
		config: controller.Config{PollInterval: pollInterval},
	})
	r.create(`
metadata: {name: pod}
spec:
  gpuType: RTX4090
  region: us
  maxPrice: 0.75
  container: {image: "runpod/pytorch:2.8.0-py3.11-cuda12.8.1-devel-ubuntu22.04", ports: [{port: 8888, protocol: http}]}`)
	before := r.waitPhase("pod", tgpv1.PhaseReady, readyTimeout)
	after := r.preemptAndRecover("pod", r.stack.RunPod)
	// The EXITED pod still bills storage: the operator terminated it.
	if m := r.machineFor(before.Status.MachineName); m.Live || !m.Preempted {
		t.Errorf("the stopped pod %s: live %v preempted %v (%s), want preempted and deleted", m.ID, m.Live, m.Preempted, m.NativeState)
	}
	if after.Status.Spot || after.Status.Provider != providers.RunPod || len(after.Status.Ports) != 1 || after.Status.PublicIP == "" ||
		after.Status.PublicIP == before.Status.PublicIP {
		t.Errorf("replacement spot %v on %s, publicIP %q (was %q), ports %+v; want an on-demand RunPod pod with its own address and port",
			after.Status.Spot, after.Status.Provider, after.Status.PublicIP, before.Status.PublicIP, after.Status.Ports)
	}
	if evs, ok := r.waitEvents("pod", "Interrupted", "Launched", "Ready"); !ok {
		t.Errorf("events %v", evs)
	}
}

func TestNodeNotReadyCountsAsInterruption(t *testing.T) {
	r := newRig(t, rigOptions{
		sims: stack.Config{Paperspace: simConfig(
			cloudsim.CatalogEntry{InstanceType: "A6000", GPUs: 1, Region: "ny2", Capacity: -1},
			cloudsim.CatalogEntry{InstanceType: "A6000", GPUs: 1, Region: "ca1", Capacity: -1},
		)},
		config: controller.Config{PollInterval: pollInterval, NodeNotReadyGrace: time.Second},
	})
	r.create(`
metadata: {name: nr}
spec: {gpuType: A6000}`)
	before := r.waitPhase("nr", tgpv1.PhaseReady, readyTimeout)
	r.agent.SetNotReady(before.Status.NodeName, true)
	after := r.waitFor("nr", readyTimeout, "Ready on a replacement", func(req *tgpv1.GPURequest) bool {
		return req.Status.Phase == tgpv1.PhaseReady && req.Status.Interruptions == 1
	})
	if c := meta.FindStatusCondition(after.Status.Conditions, tgpv1.ConditionInterrupted); c == nil || c.Reason != "Recovered" || !strings.Contains(c.Message, "NodeNotReady") {
		t.Errorf("Interrupted condition %+v, want Recovered from NodeNotReady", c)
	}
	if m := r.machineFor(before.Status.MachineName); m.Live {
		t.Errorf("the NotReady machine is still live")
	}
}

func a6000Rig(t *testing.T, cfg controller.Config) *rig {
	cfg.PollInterval = 500 * time.Millisecond
	return newRig(t, rigOptions{
		sims:   stack.Config{Paperspace: simConfig(cloudsim.CatalogEntry{InstanceType: "A6000", GPUs: 1, Region: "ny2", Capacity: -1})},
		config: cfg,
	})
}

func TestMaxLifetime(t *testing.T) {
	t.Run("terminates at the scheduled time", func(t *testing.T) {
		r := a6000Rig(t, controller.Config{})
		r.create(`
metadata: {name: short}
spec: {gpuType: A6000, maxLifetime: 3s}`)
		ready := r.waitPhase("short", tgpv1.PhaseReady, readyTimeout)
		sched := ready.Status.TerminationScheduledAt
		if sched == nil || !sched.Time.Equal(ready.Status.ProvisionedAt.Add(3*time.Second)) {
			t.Fatalf("terminationScheduledAt %v, want provisionedAt %v + 3s", sched, ready.Status.ProvisionedAt)
		}
		done := r.waitPhase("short", tgpv1.PhaseTerminated, readyTimeout)
		if done.Status.TerminationReason != "MaxLifetime" || done.Status.TerminationStartedAt.Time.Before(sched.Time) {
			t.Errorf("terminated for %q at %v, want MaxLifetime at or after %v", done.Status.TerminationReason, done.Status.TerminationStartedAt, sched)
		}
		waitNoLive(t, r)
		r.nodeGone(ready.Status.NodeName)
	})
	t.Run("editing it moves the schedule; shortening below the elapsed time ends it now", func(t *testing.T) {
		r := a6000Rig(t, controller.Config{})
		r.create(`
metadata: {name: long}
spec: {gpuType: A6000, maxLifetime: 1h}`)
		ready := r.waitPhase("long", tgpv1.PhaseReady, readyTimeout)
		r.patchSpec("long", `{"spec":{"maxLifetime":"2h"}}`)
		want := ready.Status.ProvisionedAt.Add(2 * time.Hour)
		r.waitFor("long", readyTimeout, "terminationScheduledAt moved to +2h", func(req *tgpv1.GPURequest) bool {
			return req.Status.TerminationScheduledAt != nil && req.Status.TerminationScheduledAt.Time.Equal(want)
		})
		r.patchSpec("long", `{"spec":{"maxLifetime":"1s"}}`)
		done := r.waitPhase("long", tgpv1.PhaseTerminated, readyTimeout)
		if done.Status.TerminationReason != "MaxLifetime" {
			t.Errorf("reason %q", done.Status.TerminationReason)
		}
	})
}

func (r *rig) patchSpec(name, patch string) {
	r.t.Helper()
	if _, err := r.client.TgpV1().GPURequests(r.ns).Patch(r.t.Context(), name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		r.t.Fatal(err)
	}
}

// bindPod creates a pod bound to a node; daemonSet makes it a DaemonSet's.
func (r *rig) bindPod(name, node string, daemonSet bool) {
	r.t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.ns},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
	if daemonSet {
		pod.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "ds", UID: "ds-uid", Controller: ptr.To(true)}}
	}
	if _, err := r.kube.CoreV1().Pods(r.ns).Create(r.t.Context(), pod, metav1.CreateOptions{}); err != nil {
		r.t.Fatal(err)
	}
}

func TestIdleTimeout(t *testing.T) {
	r := a6000Rig(t, controller.Config{})
	const idle = 3 * time.Second
	r.create(`
metadata: {name: idle}
spec: {gpuType: A6000, idleTimeout: 3s}`)
	ready := r.waitPhase("idle", tgpv1.PhaseReady, readyTimeout)
	node := ready.Status.NodeName
	r.bindPod("work", node, false)
	r.bindPod("agent", node, true)
	// While the workload pod runs, the machine stays past the idle timeout.
	busyUntil := time.Now().Add(idle + 2*time.Second)
	for time.Now().Before(busyUntil) {
		if req := r.get("idle"); req.Status.Phase != tgpv1.PhaseReady {
			t.Fatalf("phase %s while a pod runs on the node", req.Status.Phase)
		}
		time.Sleep(200 * time.Millisecond) // observing over the idle window, not synchronising
	}
	if req := r.get("idle"); req.Status.IdleSince != nil {
		t.Errorf("idleSince %v while a pod runs", req.Status.IdleSince)
	}
	gone := time.Now()
	if err := r.kube.CoreV1().Pods(r.ns).Delete(t.Context(), "work", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	// Only the DaemonSet pod is left: the machine terminates after idleTimeout.
	done := r.waitPhase("idle", tgpv1.PhaseTerminated, readyTimeout)
	if done.Status.TerminationReason != "IdleTimeout" {
		t.Errorf("reason %q, want IdleTimeout", done.Status.TerminationReason)
	}
	if started := done.Status.TerminationStartedAt.Time; started.Before(gone.Add(idle).Truncate(time.Second)) {
		t.Errorf("termination started %v, before the pod left (%v) plus the idle timeout", started, gone)
	}
	waitNoLive(t, r)
}

func TestDeletionDrainsTerminatesAndReleases(t *testing.T) {
	r := a6000Rig(t, controller.Config{DrainTimeout: 20 * time.Second})
	r.create(`
metadata: {name: del}
spec: {gpuType: A6000}`)
	ready := r.waitPhase("del", tgpv1.PhaseReady, readyTimeout)
	r.bindPod("work", ready.Status.NodeName, false)
	// Wait until the controller's pod cache has it, as the Node becomes busy.
	r.waitFor("del", readyTimeout, "status reflects the pod", func(req *tgpv1.GPURequest) bool { return req.Status.IdleSince == nil })
	if err := r.client.TgpV1().GPURequests(r.ns).Delete(t.Context(), "del", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The drain evicts the pod (the eviction marks it for deletion); with no
	// kubelet here, the test finishes the deletion as a kubelet would.
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 15*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := r.kube.CoreV1().Pods(r.ns).Get(ctx, "work", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return err == nil && p.DeletionTimestamp != nil, nil
	})
	if err != nil {
		t.Fatal("no eviction was issued for the bound pod")
	}
	_ = r.kube.CoreV1().Pods(r.ns).Delete(t.Context(), "work", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
	node, err := r.kube.CoreV1().Nodes().Get(t.Context(), ready.Status.NodeName, metav1.GetOptions{})
	if err == nil && !node.Spec.Unschedulable {
		t.Errorf("node not cordoned during the drain")
	}
	if err == nil && (len(node.Status.Conditions) == 0 || node.Status.Capacity == nil) {
		t.Errorf("cordoning from the trimmed cache lost the Node's status: %+v", node.Status)
	}
	err = wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, readyTimeout, true, func(ctx context.Context) (bool, error) {
		_, err := r.client.TgpV1().GPURequests(r.ns).Get(ctx, "del", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Fatalf("the request was not released: %+v", r.get("del").Status)
	}
	waitNoLive(t, r)
	r.nodeGone(ready.Status.NodeName)
}

// TestOrphanCollector: machines carrying the operator's name prefix that no
// GPURequest claims are terminated after the grace period; a machine whose
// name a request's status holds (a launch in flight when the operator
// restarted) is adopted instead. Once for VMs (Lambda) and once for
// containers (RunPod pods).
func TestOrphanCollector(t *testing.T) {
	for _, tc := range []struct {
		name     string
		sims     stack.Config
		spec     string
		offer    providers.Offer
		userData string
		ctr      *providers.ContainerSpec
		// orphanType, when set, is the orphan's instance type (a Vast.ai
		// ask is rented once: the orphan needs a host of its own).
		orphanType string
	}{{
		name: "lambda VM",
		sims: stack.Config{Lambda: simConfig(cloudsim.CatalogEntry{InstanceType: "gpu_1x_a10", GPUs: 1, Region: "us-east-1", OnDemandPrice: 0.75, Capacity: -1})},
		spec: "{gpuType: A10, maxPrice: 1.0}",
		offer: providers.Offer{Provider: providers.LambdaLabs, InstanceType: "gpu_1x_a10", GPUType: "A10", GPUCount: 1,
			Region: "us-east-1", ProviderRegion: "us-east-1", Capacity: providers.OnDemand, HourlyPrice: 0.75, Available: true, Kind: providers.VM},
		userData: "#!/bin/bash\ntrue\n",
	}, {
		name: "runpod container",
		sims: stack.Config{RunPod: simConfig(rtx4090("US-CA-2", 0.44))},
		spec: "{gpuType: RTX4090, maxPrice: 0.50, container: {image: busybox}}",
		offer: providers.Offer{Provider: providers.RunPod, InstanceType: "NVIDIA GeForce RTX 4090", GPUType: "RTX4090", GPUCount: 1,
			Region: "us-west-1", ProviderRegion: "US-CA-2", Capacity: providers.OnDemand, HourlyPrice: 0.44, Available: true, Kind: providers.Container},
		ctr: &providers.ContainerSpec{Image: "busybox"},
	}, {
		// Vast.ai instances carry the machine name in their label: the
		// in-flight one is adopted by it, the orphan collected by it.
		name: "vastai container",
		sims: stack.Config{VastAI: &vastaisim.Config{Config: cloudsim.Config{APIKey: "test-key"},
			Hosts: []vastaisim.Host{vastHost(2001, 0, 0.40, false), vastHost(2002, 0, 0.40, false)}}},
		spec: "{gpuType: RTX4090, maxPrice: 0.50, container: {image: busybox}}",
		offer: providers.Offer{Provider: providers.VastAI, InstanceType: "2001", GPUType: "RTX4090", GPUCount: 1,
			Region: "us-west-1", ProviderRegion: "California, US", Capacity: providers.OnDemand, HourlyPrice: 0.40, Available: true, Kind: providers.Container},
		ctr:        &providers.ContainerSpec{Image: "busybox"},
		orphanType: "2002",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, rigOptions{
				sims:    tc.sims,
				config:  controller.Config{PollInterval: 300 * time.Millisecond, GCInterval: 300 * time.Millisecond, GCGrace: 2 * time.Second},
				noAgent: true,
				noStart: true,
			})
			// A request whose launch is in flight: its status names the machine.
			req := r.create("metadata: {name: inflight}\nspec: " + tc.spec)
			inflight := machinePrefix(req) + "1"
			o := tc.offer
			req.Status = tgpv1.GPURequestStatus{Phase: tgpv1.PhaseProvisioning, MachineName: inflight, Attempt: 1,
				Provider: o.Provider, InstanceType: o.InstanceType, Region: o.Region, ProviderRegion: o.ProviderRegion, HourlyPrice: ptr.To(o.HourlyPrice)}
			if _, err := r.client.TgpV1().GPURequests(r.ns).UpdateStatus(t.Context(), req, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
			adapters, err := r.stack.Adapters(stack.AdapterOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"gpur-orphan-1", inflight} {
				offer := o
				if name == "gpur-orphan-1" && tc.orphanType != "" {
					offer.InstanceType = tc.orphanType
				}
				if _, err := adapters[0].Launch(t.Context(), providers.LaunchRequest{Name: name, Offer: offer, UserData: tc.userData, Container: tc.ctr}); err != nil {
					t.Fatal(err)
				}
			}
			r.start()
			created := time.Now()
			var took time.Duration
			// The simulator deletes the orphan before the collector has its
			// answer and counts it: wait for both.
			err = wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
				if took == 0 && !r.machineFor("gpur-orphan-1").Live {
					took = time.Since(created)
				}
				return took > 0 && counterValue(t, r, "gpu_operator_orphans_terminated_total") > 0, nil
			})
			if err != nil {
				t.Fatalf("the orphan was not terminated and counted (terminated after %s)", took)
			}
			if took < 2*time.Second {
				t.Errorf("orphan collected after %s, before its 2s grace period", took)
			}
			if m := r.machineFor(inflight); !m.Live {
				t.Errorf("the claimed in-flight machine was collected")
			}
			if got := counterValue(t, r, "gpu_operator_orphans_terminated_total"); got != 1 {
				t.Errorf("gpu_operator_orphans_terminated_total %v, want 1", got)
			}
			if n := launches(r.stack, o.Provider, inflight); n != 1 {
				t.Errorf("in-flight machine launched %d times, want 1 (adopted)", n)
			}
			if evs, ok := r.waitEvents("inflight", "Adopted"); !ok {
				t.Errorf("events %v, want Adopted", evs)
			}
		})
	}
}

func counterValue(t *testing.T, r *rig, name string) float64 {
	t.Helper()
	mfs, err := r.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func containsAll(have []string, want ...string) bool {
	set := map[string]bool{}
	for _, h := range have {
		set[h] = true
	}
	for _, w := range want {
		if !set[w] {
			return false
		}
	}
	return true
}
