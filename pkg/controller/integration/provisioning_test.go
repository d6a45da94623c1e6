package integration

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	"github.com/solanyn/gpu-operator/pkg/controller"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

const (
	spotTrainingJob = `
metadata: {name: spot-training-job}
spec: {gpuType: "RTX4090", region: "us-west", spotInstance: true, maxSpotPrice: 0.25, maxPrice: 0.50}`
	multiGPUTraining = `
metadata: {name: multi-gpu-training}
spec: {gpuType: "A100", gpuCount: 4, region: "us-east", maxPrice: 10.0}`
	regionAwareJob = `
metadata: {name: region-aware-job}
spec: {gpuType: "H100", regionPreference: ["us-west-1", "us-east-1", "eu-west-1"], maxPrice: 3.0, spotInstance: true}`
)

const readyTimeout = 30 * time.Second

type want struct {
	provider, region, providerRegion string
	spot                             bool
	price                            float64
}

func (r *rig) assertReadyOn(name string, w want) *tgpv1.GPURequest {
	r.t.Helper()
	req := r.waitPhase(name, tgpv1.PhaseReady, readyTimeout)
	st := req.Status
	if st.Provider != w.provider || st.Region != w.region || st.Spot != w.spot || price(st.HourlyPrice) != w.price ||
		(w.providerRegion != "" && st.ProviderRegion != w.providerRegion) {
		r.t.Errorf("%s Ready on %s/%s(%s) spot=%v $%v, want %s/%s spot=%v $%v", name, st.Provider, st.Region, st.ProviderRegion, st.Spot, price(st.HourlyPrice),
			w.provider, w.region, w.spot, w.price)
	}
	for _, c := range []string{tgpv1.ConditionReady, tgpv1.ConditionLaunched, tgpv1.ConditionNodeJoined, tgpv1.ConditionOffersAvailable} {
		if !meta.IsStatusConditionTrue(st.Conditions, c) {
			r.t.Errorf("%s: condition %s not True: %+v", name, c, meta.FindStatusCondition(st.Conditions, c))
		}
	}
	if st.ObservedGeneration != req.Generation || st.NodeName == "" || st.ReadyAt == nil || st.ProvisionedAt == nil || st.Selection == "" {
		r.t.Errorf("%s: incomplete status %+v", name, st)
	}
	return req
}

func rtx4090(region string, onDemand, spot float64) cloudsim.CatalogEntry {
	return cloudsim.CatalogEntry{InstanceType: "NVIDIA GeForce RTX 4090", GPUs: 8, Region: region, OnDemandPrice: onDemand, SpotPrice: spot, Capacity: -1}
}

func TestSpotTrainingJob(t *testing.T) {
	t.Run("spot under its cap wins", func(t *testing.T) {
		r := newRig(t, rigOptions{sims: stack.Config{
			RunPod: simConfig(rtx4090("US-CA-2", 0.44, 0.22), cloudsim.CatalogEntry{InstanceType: "NVIDIA GeForce RTX 3090", GPUs: 4, Region: "US-CA-2", OnDemandPrice: 0.22, SpotPrice: 0.11, Capacity: -1}),
		}})
		r.create(spotTrainingJob)
		r.assertReadyOn("spot-training-job", want{providers.RunPod, "us-west-1", "US-CA-2", true, 0.22})
		r.assertColumns("spot-training-job", "RTX4090", "1", "true", "runpod", "us-west-1", "0.22", "Ready")
	})
	t.Run("on-demand under maxPrice is the fallback without spot", func(t *testing.T) {
		r := newRig(t, rigOptions{sims: stack.Config{RunPod: simConfig(rtx4090("US-CA-2", 0.44, 0))}})
		r.create(spotTrainingJob)
		r.assertReadyOn("spot-training-job", want{providers.RunPod, "us-west-1", "US-CA-2", false, 0.44})
	})
	t.Run("neither: Pending with a readable reason", func(t *testing.T) {
		r := newRig(t, rigOptions{sims: stack.Config{RunPod: simConfig(rtx4090("US-CA-2", 0.69, 0.30), rtx4090x("EU-NL-1"))}})
		r.create(spotTrainingJob)
		req := r.waitFor("spot-training-job", readyTimeout, "OffersAvailable=False", func(req *tgpv1.GPURequest) bool {
			return meta.IsStatusConditionFalse(req.Status.Conditions, tgpv1.ConditionOffersAvailable)
		})
		if req.Status.Phase != tgpv1.PhasePending {
			t.Errorf("phase %s, want Pending", req.Status.Phase)
		}
		msg := meta.FindStatusCondition(req.Status.Conditions, tgpv1.ConditionOffersAvailable).Message
		for _, reason := range []string{"OverSpotCap", "OverOnDemandCap"} {
			if !strings.Contains(msg, reason) {
				t.Errorf("message %q does not say %s", msg, reason)
			}
		}
		if n := len(r.liveMachines()); n != 0 {
			t.Errorf("%d machines launched, want none", n)
		}
	})
}

// rtx4090x is a second RTX 4090 type id (community cloud) in another region.
func rtx4090x(region string) cloudsim.CatalogEntry {
	return cloudsim.CatalogEntry{InstanceType: "NVIDIA GeForce RTX 4090", GPUs: 8, Region: region, OnDemandPrice: 0.69, SpotPrice: 0.30, Capacity: -1}
}

func TestMultiGPUTraining(t *testing.T) {
	r := newRig(t, rigOptions{sims: stack.Config{
		Lambda: simConfig(
			cloudsim.CatalogEntry{InstanceType: "gpu_4x_a100", GPUs: 4, Region: "us-east-1", OnDemandPrice: 5.16, Capacity: -1},
			cloudsim.CatalogEntry{InstanceType: "gpu_8x_a100", GPUs: 8, Region: "us-east-1", OnDemandPrice: 10.32, Capacity: -1},
			cloudsim.CatalogEntry{InstanceType: "gpu_4x_a100_sxm4", GPUs: 4, Region: "us-east-2", OnDemandPrice: 12.00, Capacity: -1},
			cloudsim.CatalogEntry{InstanceType: "gpu_1x_a100", GPUs: 1, Region: "us-west-1", OnDemandPrice: 1.29, Capacity: -1},
		),
	}})
	r.create(multiGPUTraining)
	req := r.assertReadyOn("multi-gpu-training", want{providers.LambdaLabs, "us-east-1", "us-east-1", false, 5.16})
	if req.Status.InstanceType != "gpu_4x_a100" {
		t.Errorf("instance type %s, want gpu_4x_a100", req.Status.InstanceType)
	}
	res := r.ctrl.Select(t.Context(), req)
	reasons := map[string]string{}
	for _, rej := range res.Rejected() {
		reasons[rej.Offer.InstanceType] = string(rej.Reason)
	}
	if reasons["gpu_8x_a100"] != "WrongGPUCount" || reasons["gpu_4x_a100_sxm4"] != "OverOnDemandCap" || reasons["gpu_1x_a100"] != "WrongGPUCount" {
		t.Errorf("losing reasons %v, want the 8-GPU offer WrongGPUCount and the 12.00 4-GPU offer OverOnDemandCap", reasons)
	}
	if !strings.Contains(req.Status.Selection, "WrongGPUCount") || !strings.Contains(req.Status.Selection, "OverOnDemandCap") {
		t.Errorf("selection summary %q does not explain the losers", req.Status.Selection)
	}
	r.assertColumns("multi-gpu-training", "A100", "4", "false", "lambdalabs", "us-east-1", "5.16", "Ready")
}

func h100Catalog() *cloudsim.Config {
	return simConfig(
		cloudsim.CatalogEntry{InstanceType: "NVIDIA H100 80GB HBM3", GPUs: 8, Region: "US-CA-2", OnDemandPrice: 2.99, SpotPrice: 2.50, Capacity: -1},
		cloudsim.CatalogEntry{InstanceType: "NVIDIA H100 PCIe", GPUs: 8, Region: "US-DE-1", OnDemandPrice: 2.39, SpotPrice: 1.90, Capacity: -1},
		cloudsim.CatalogEntry{InstanceType: "NVIDIA H100 NVL", GPUs: 8, Region: "EU-NL-1", OnDemandPrice: 2.79, SpotPrice: 2.20, Capacity: -1},
	)
}

func TestRegionAwareJob(t *testing.T) {
	t.Run("Ordered: the first region wins although a later one is cheaper", func(t *testing.T) {
		r := newRig(t, rigOptions{sims: stack.Config{RunPod: h100Catalog()}})
		r.create(regionAwareJob)
		r.assertReadyOn("region-aware-job", want{providers.RunPod, "us-west-1", "US-CA-2", true, 2.50})
	})
	t.Run("Ordered: out of capacity at launch time fails over in the same sync", func(t *testing.T) {
		r := newRig(t, rigOptions{sims: stack.Config{RunPod: h100Catalog()}, noStart: true})
		// The catalog is read while us-west-1 still shows capacity; the
		// launch then finds none, as when capacity goes between refreshes.
		if res := r.ctrl.Select(t.Context(), &tgpv1.GPURequest{Spec: tgpv1.GPURequestSpec{GPUType: "H100", GPUCount: 1}}); res.Eligible == 0 {
			t.Fatal("no H100 offers in the catalog")
		}
		r.stack.RunPod.Core().SetCapacity("NVIDIA H100 80GB HBM3", "US-CA-2", 0)
		r.start()
		r.create(regionAwareJob)
		req := r.assertReadyOn("region-aware-job", want{providers.RunPod, "us-east-1", "US-DE-1", true, 1.90})
		if req.Status.Attempt != 1 {
			t.Errorf("attempt %d, want 1: a definite capacity error keeps the machine name", req.Status.Attempt)
		}
		evs := r.events("region-aware-job")
		if !slices.Contains(evs, "LaunchFailed") || !slices.Contains(evs, "Launched") {
			t.Errorf("events %v, want LaunchFailed then Launched", evs)
		}
		if got := len(r.liveMachines()); got != 1 {
			t.Errorf("%d live machines, want 1", got)
		}
	})
	t.Run("LowestPrice: the cheapest listed region wins", func(t *testing.T) {
		r := newRig(t, rigOptions{sims: stack.Config{RunPod: h100Catalog()}})
		r.create(strings.Replace(regionAwareJob, "spotInstance: true", "spotInstance: true, regionPolicy: LowestPrice", 1))
		r.assertReadyOn("region-aware-job", want{providers.RunPod, "us-east-1", "US-DE-1", true, 1.90})
	})
}

func TestNodeLabelsAndTaintsBeforeReady(t *testing.T) {
	r := newRig(t, rigOptions{sims: stack.Config{Paperspace: simConfig(
		cloudsim.CatalogEntry{InstanceType: "A6000", GPUs: 1, Region: "ny2", Capacity: -1},
	)}})
	_, err := r.kube.CoreV1().Secrets(r.ns).Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "gpu-node-bootstrap", Labels: map[string]string{controller.LabelBootstrapConsent: "true"}},
		StringData: map[string]string{"userdata": "#cloud-config\nhostname: {{ .NodeName }}\n# {{ .RequestNamespace }}/{{ .RequestName }} {{ .Provider }} {{ .Region }}\n"},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r.create(`
metadata: {name: bootstrapped}
spec:
  gpuType: A6000
  maxPrice: 2.0
  bootstrap: {secretName: gpu-node-bootstrap}
  nodeLabels: {workload: inference}
  nodeTaints: [{key: nvidia.com/gpu, value: "true", effect: NoSchedule}]`)
	req := r.waitPhase("bootstrapped", tgpv1.PhaseReady, readyTimeout)
	// The first time the request is seen Ready, the Node already carries
	// everything: Ready is set only after labelling.
	node, err := r.kube.CoreV1().Nodes().Get(t.Context(), req.Status.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantLabels := map[string]string{
		"workload": "inference", "tgp.solanyn.com/request": "bootstrapped", "tgp.solanyn.com/request-namespace": r.ns,
		"tgp.solanyn.com/provider": "paperspace", "tgp.solanyn.com/region": "us-east-1", "tgp.solanyn.com/gpu-type": "A6000", "tgp.solanyn.com/spot": "false",
	}
	for k, v := range wantLabels {
		if node.Labels[k] != v {
			t.Errorf("node label %s=%q, want %q", k, node.Labels[k], v)
		}
	}
	if !slices.ContainsFunc(node.Spec.Taints, func(tt corev1.Taint) bool {
		return tt.Key == "nvidia.com/gpu" && tt.Value == "true" && tt.Effect == corev1.TaintEffectNoSchedule
	}) {
		t.Errorf("node taints %v lack nvidia.com/gpu=true:NoSchedule", node.Spec.Taints)
	}
	if node.Spec.ProviderID != "paperspace://"+req.Status.InstanceID {
		t.Errorf("providerID %q", node.Spec.ProviderID)
	}
	// The machine got the rendered template.
	for _, m := range r.stack.Machines() {
		if m.Name == req.Status.MachineName && !strings.Contains(m.UserData, "hostname: "+req.Status.MachineName+"\n# "+r.ns+"/bootstrapped paperspace us-east-1") {
			t.Errorf("user data not rendered per machine: %q", m.UserData)
		}
	}
}

func TestJoinTimeout(t *testing.T) {
	r := newRig(t, rigOptions{
		sims:    stack.Config{RunPod: simConfig(rtx4090("US-CA-2", 0.44, 0.22))},
		config:  controller.Config{JoinTimeout: 2 * time.Second},
		noAgent: true,
	})
	r.create(spotTrainingJob)
	req := r.waitPhase("spot-training-job", tgpv1.PhaseFailed, readyTimeout)
	if req.Status.TerminationReason != "JoinTimeout" {
		t.Errorf("termination reason %q, want JoinTimeout", req.Status.TerminationReason)
	}
	if c := meta.FindStatusCondition(req.Status.Conditions, tgpv1.ConditionReady); c == nil || c.Reason != "JoinTimeout" {
		t.Errorf("Ready condition %+v, want reason JoinTimeout", c)
	}
	waitNoLive(t, r)
	if n := launches(r.stack, providers.RunPod, req.Status.MachineName); n != 1 {
		t.Errorf("%d launches, want 1 (no relaunch after a join timeout)", n)
	}
}

func waitNoLive(t *testing.T, r *rig) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(r.liveMachines()) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("live machines remain: %+v", r.liveMachines())
		}
		time.Sleep(50 * time.Millisecond) // polling the simulator, not synchronising
	}
}

// An explicit spotInstance: false survives the operator's metadata writes
// (the finalizer is patched, never sent back through the Go types).
func TestExplicitFalseSpotInstance(t *testing.T) {
	r := a6000Rig(t, controller.Config{})
	r.create(`
metadata: {name: explicit-false}
spec: {gpuType: A6000, spotInstance: false, maxPrice: 2.0}`)
	req := r.waitPhase("explicit-false", tgpv1.PhaseReady, readyTimeout)
	if req.Status.Spot || len(req.Finalizers) != 1 {
		t.Errorf("spot %v finalizers %v", req.Status.Spot, req.Finalizers)
	}
	if err := r.client.TgpV1().GPURequests(r.ns).Delete(t.Context(), "explicit-false", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitNoLive(t, r)
}
