package integration

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

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

// rtx4090 is a RunPod RTX 4090 entry: pods of up to 8 GPUs at a price per
// GPU. RunPod sells containers only, and no spot.
func rtx4090(region string, perGPU float64) cloudsim.CatalogEntry {
	return cloudsim.CatalogEntry{InstanceType: "NVIDIA GeForce RTX 4090", GPUs: 8, Region: region, OnDemandPrice: perGPU, Capacity: -1}
}

// lambdaRTX4090 is a Lambda VM with one RTX 4090, the VM offer of that type
// the seed example can get (the adapter maps gpu_1x_rtx4090; Paperspace
// sells no RTX 4090 and RunPod only containers).
func lambdaRTX4090(region string, price float64) cloudsim.CatalogEntry {
	return cloudsim.CatalogEntry{InstanceType: "gpu_1x_rtx4090", GPUs: 1, Region: region, OnDemandPrice: price, Capacity: -1}
}

// rejections maps the losing offers of the controller's selection for a
// request to their reasons, by provider/instance type/native region.
func (r *rig) rejections(req *tgpv1.GPURequest) map[string]string {
	r.t.Helper()
	out := map[string]string{}
	for _, rej := range r.ctrl.Select(r.t.Context(), req).Rejected() {
		if rej.Offer.GPUCount == 1 {
			out[rej.Offer.Provider+"/"+rej.Offer.InstanceType+"/"+rej.Offer.ProviderRegion] = string(rej.Reason)
		}
	}
	return out
}

// TestSpotTrainingJob runs the seed example spot-training-job (RTX4090 in
// us-west, spot under $0.25, on-demand fallback under $0.50) against
// today's providers, none of which sells spot: the API server accepts it
// verbatim, and it gets an on-demand VM under maxPrice where one of the type
// exists, and otherwise stays Pending saying why.
func TestSpotTrainingJob(t *testing.T) {
	t.Run("no spot anywhere: the on-demand VM under maxPrice is the fallback", func(t *testing.T) {
		r := newRig(t, rigOptions{sims: stack.Config{
			// Lambda has one price per type, whatever the region.
			Lambda: simConfig(lambdaRTX4090("us-west-1", 0.45), lambdaRTX4090("us-east-1", 0.45)),
			// Cheaper, and an RTX 4090, but a container: no Node can join.
			RunPod: simConfig(rtx4090("US-CA-2", 0.34)),
		}})
		created := r.create(spotTrainingJob)
		if !created.Spec.SpotInstance || price(created.Spec.MaxSpotPrice) != 0.25 || price(created.Spec.MaxPrice) != 0.50 || created.Spec.Region != "us-west" {
			t.Errorf("stored spec %+v, want the example's fields as written", created.Spec)
		}
		req := r.assertReadyOn("spot-training-job", want{providers.LambdaLabs, "us-west-1", "us-west-1", false, 0.45})
		r.assertColumns("spot-training-job", "RTX4090", "1", "false", "lambdalabs", "us-west-1", "0.45", "Ready")
		got := r.rejections(req)
		if got["runpod/NVIDIA GeForce RTX 4090/US-CA-2"] != "WrongMachineKind" || got["lambdalabs/gpu_1x_rtx4090/us-east-1"] != "RegionNotPreferred" {
			t.Errorf("losing reasons %v, want the RunPod pod WrongMachineKind and the us-east-1 VM RegionNotPreferred", got)
		}
		if !strings.Contains(req.Status.Selection, "WrongMachineKind") {
			t.Errorf("selection %q does not say why the RunPod offer lost", req.Status.Selection)
		}
		if n := len(r.stack.RunPod.Machines()); n != 0 {
			t.Errorf("%d RunPod pods launched for a VM request, want none", n)
		}
	})
	t.Run("the only VM is over maxPrice: Pending with OverOnDemandCap", func(t *testing.T) {
		r := newRig(t, rigOptions{sims: stack.Config{
			Lambda: simConfig(lambdaRTX4090("us-west-1", 0.69)),
			RunPod: simConfig(rtx4090("US-CA-2", 0.34)),
		}})
		r.create(spotTrainingJob)
		msg := r.waitPending("spot-training-job")
		for _, reason := range []string{"OverOnDemandCap", "WrongMachineKind"} {
			if !strings.Contains(msg, reason) {
				t.Errorf("message %q does not say %s", msg, reason)
			}
		}
		if strings.Contains(msg, "OverSpotCap") {
			t.Errorf("message %q blames a spot cap, but no offer is spot", msg)
		}
		if n := len(r.liveMachines()); n != 0 {
			t.Errorf("%d machines launched, want none", n)
		}
	})
	t.Run("only containers sell the type: Pending with WrongMachineKind", func(t *testing.T) {
		r := newRig(t, rigOptions{sims: stack.Config{RunPod: simConfig(rtx4090("US-CA-2", 0.34), rtx4090("EU-NL-1", 0.30))}})
		r.create(spotTrainingJob)
		msg := r.waitPending("spot-training-job")
		if !strings.Contains(msg, "WrongMachineKind") {
			t.Errorf("message %q does not say WrongMachineKind", msg)
		}
		if n := len(r.liveMachines()); n != 0 {
			t.Errorf("%d machines launched, want none", n)
		}
	})
}

// waitPending waits for OffersAvailable=False and returns its message,
// checking that the request is Pending with Ready=False for the same reason.
func (r *rig) waitPending(name string) string {
	r.t.Helper()
	req := r.waitFor(name, readyTimeout, "OffersAvailable=False", func(req *tgpv1.GPURequest) bool {
		return meta.IsStatusConditionFalse(req.Status.Conditions, tgpv1.ConditionOffersAvailable)
	})
	if req.Status.Phase != tgpv1.PhasePending {
		r.t.Errorf("phase %s, want Pending", req.Status.Phase)
	}
	oa := meta.FindStatusCondition(req.Status.Conditions, tgpv1.ConditionOffersAvailable)
	if rc := meta.FindStatusCondition(req.Status.Conditions, tgpv1.ConditionReady); rc == nil || rc.Status != metav1.ConditionFalse || rc.Reason != oa.Reason {
		r.t.Errorf("Ready condition %+v, want False with reason %s", rc, oa.Reason)
	}
	if oa.Reason != "NoEligibleOffers" || req.Status.Message != oa.Message {
		r.t.Errorf("OffersAvailable reason %s, status message %q; want NoEligibleOffers and the condition's message %q", oa.Reason, req.Status.Message, oa.Message)
	}
	return oa.Message
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

// h100Catalog sells H100s in the example's three regions: Lambda VMs in
// us-west-1 (SXM5, $2.99) and us-east-1 (PCIe, $2.49: Lambda prices a type,
// not a region), both under the $3.00 cap; Paperspace VMs in eu-west-1
// (ams1) at its list price of $5.95, over it; and cheaper RunPod containers
// in all three, the wrong machine kind for a VM request.
func h100Catalog() stack.Config {
	return stack.Config{
		Lambda: simConfig(
			cloudsim.CatalogEntry{InstanceType: "gpu_1x_h100_sxm5", GPUs: 1, Region: "us-west-1", OnDemandPrice: 2.99, Capacity: -1},
			cloudsim.CatalogEntry{InstanceType: "gpu_1x_h100_pcie", GPUs: 1, Region: "us-east-1", OnDemandPrice: 2.49, Capacity: -1},
		),
		Paperspace: simConfig(cloudsim.CatalogEntry{InstanceType: "H100", GPUs: 1, Region: "ams1", Capacity: -1}),
		RunPod: simConfig(
			cloudsim.CatalogEntry{InstanceType: "NVIDIA H100 80GB HBM3", GPUs: 8, Region: "US-CA-2", OnDemandPrice: 2.50, Capacity: -1},
			cloudsim.CatalogEntry{InstanceType: "NVIDIA H100 PCIe", GPUs: 8, Region: "US-DE-1", OnDemandPrice: 1.90, Capacity: -1},
			cloudsim.CatalogEntry{InstanceType: "NVIDIA H100 NVL", GPUs: 8, Region: "EU-NL-1", OnDemandPrice: 2.20, Capacity: -1},
		),
	}
}

// assertH100Losers checks why the offers that did not win lost: the RunPod
// pods for their kind, Paperspace over the cap (spotInstance with only
// maxPrice makes it the on-demand fallback cap; no provider sells spot).
func (r *rig) assertH100Losers(req *tgpv1.GPURequest) {
	r.t.Helper()
	got := r.rejections(req)
	want := map[string]string{
		"runpod/NVIDIA H100 80GB HBM3/US-CA-2": "WrongMachineKind",
		"runpod/NVIDIA H100 PCIe/US-DE-1":      "WrongMachineKind",
		"runpod/NVIDIA H100 NVL/EU-NL-1":       "WrongMachineKind",
		"paperspace/H100/ams1":                 "OverOnDemandCap",
	}
	for k, v := range want {
		if got[k] != v {
			r.t.Errorf("%s lost for %q, want %s (all losers: %v)", k, got[k], v, got)
		}
	}
}

// TestRegionAwareJob runs the seed example region-aware-job (H100, regions
// us-west-1, us-east-1, eu-west-1 in that order, spot with maxPrice $3.00):
// with no spot sold anywhere, maxPrice is the on-demand cap and the Lambda
// VMs are the eligible offers.
func TestRegionAwareJob(t *testing.T) {
	t.Run("Ordered: the first region wins although a later one is cheaper", func(t *testing.T) {
		r := newRig(t, rigOptions{sims: h100Catalog()})
		r.create(regionAwareJob)
		req := r.assertReadyOn("region-aware-job", want{providers.LambdaLabs, "us-west-1", "us-west-1", false, 2.99})
		r.assertH100Losers(req)
		var ranked []string
		for _, o := range r.ctrl.Select(t.Context(), req).RankedOffers() {
			ranked = append(ranked, fmt.Sprintf("%s/%s $%.2f", o.Provider, o.Region, o.HourlyPrice))
		}
		if want := []string{"lambdalabs/us-west-1 $2.99", "lambdalabs/us-east-1 $2.49"}; !slices.Equal(ranked, want) {
			t.Errorf("ranked %v, want %v: the cheaper us-east-1 VM after the first region's", ranked, want)
		}
	})
	t.Run("Ordered: out of capacity at launch time fails over in the same sync", func(t *testing.T) {
		r := newRig(t, rigOptions{sims: h100Catalog(), noStart: true})
		// The catalog is read while us-west-1 still shows capacity; the
		// launch then finds none, as when capacity goes between refreshes.
		if res := r.ctrl.Select(t.Context(), &tgpv1.GPURequest{Spec: tgpv1.GPURequestSpec{GPUType: "H100", GPUCount: 1, MaxPrice: ptr.To(3.0)}}); res.Eligible != 2 {
			t.Fatalf("%d eligible H100 VM offers in the catalog, want the 2 Lambda ones", res.Eligible)
		}
		if !r.stack.Lambda.Core().SetCapacity("gpu_1x_h100_sxm5", "us-west-1", 0) {
			t.Fatal("no gpu_1x_h100_sxm5 in us-west-1")
		}
		r.start()
		r.create(regionAwareJob)
		req := r.assertReadyOn("region-aware-job", want{providers.LambdaLabs, "us-east-1", "us-east-1", false, 2.49})
		if req.Status.Attempt != 1 {
			t.Errorf("attempt %d, want 1: a definite capacity error keeps the machine name", req.Status.Attempt)
		}
		if evs, ok := r.waitEvents("region-aware-job", "LaunchFailed", "Launched"); !ok {
			t.Errorf("events %v, want LaunchFailed then Launched", evs)
		}
		if got := len(r.liveMachines()); got != 1 {
			t.Errorf("%d live machines, want 1", got)
		}
	})
	t.Run("LowestPrice: the cheapest listed region wins", func(t *testing.T) {
		r := newRig(t, rigOptions{sims: h100Catalog()})
		r.create(strings.Replace(regionAwareJob, "spotInstance: true", "spotInstance: true, regionPolicy: LowestPrice", 1))
		req := r.assertReadyOn("region-aware-job", want{providers.LambdaLabs, "us-east-1", "us-east-1", false, 2.49})
		r.assertH100Losers(req)
	})
}

func TestNodeLabelsAndTaintsBeforeReady(t *testing.T) {
	r := newRig(t, rigOptions{sims: stack.Config{Paperspace: simConfig(
		cloudsim.CatalogEntry{InstanceType: "A6000", GPUs: 1, Region: "ny2", Capacity: -1},
	)}})
	_, err := r.kube.CoreV1().Secrets(r.ns).Create(t.Context(), &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "gpu-node-bootstrap", Labels: map[string]string{controller.LabelBootstrapConsent: "true"}},
		// Paperspace runs only a startup script.
		StringData: map[string]string{"userdata": "#!/bin/bash\nhostnamectl set-hostname {{ shell .NodeName }}\n# {{ .RequestNamespace }}/{{ .RequestName }} {{ .Provider }} {{ .Region }}\nkubeadm join --token {{ shell .JoinToken }}\n"},
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
	if m := r.machineFor(req.Status.MachineName); !strings.Contains(m.UserData, "set-hostname '"+req.Status.MachineName+"'\n# "+r.ns+"/bootstrapped paperspace us-east-1") {
		t.Errorf("user data not rendered per machine: %q", m.UserData)
	}
}

// TestJoinTimeout: a machine that does not become usable within the join
// timeout is terminated and the request fails, without a relaunch. A VM
// whose Node never registers (no node agent), and a RunPod container that
// never reaches RUNNING.
func TestJoinTimeout(t *testing.T) {
	t.Run("VM whose Node never joins", func(t *testing.T) {
		r := newRig(t, rigOptions{
			sims:    stack.Config{Lambda: simConfig(lambdaRTX4090("us-west-1", 0.45))},
			config:  controller.Config{JoinTimeout: 2 * time.Second},
			noAgent: true,
		})
		r.create(spotTrainingJob)
		r.assertJoinTimeout("spot-training-job", providers.LambdaLabs, "did not become Ready")
	})
	t.Run("container that never runs", func(t *testing.T) {
		r := newRig(t, rigOptions{
			sims:   stack.Config{RunPod: simConfig(rtx4090("US-CA-2", 0.44))},
			config: controller.Config{JoinTimeout: 2 * time.Second},
		})
		r.stack.RunPod.SetDelays(time.Hour, time.Hour) // PROVISIONING for good
		r.create(`
metadata: {name: stuck}
spec: {gpuType: RTX4090, maxPrice: 0.50, container: {image: busybox}}`)
		r.assertJoinTimeout("stuck", providers.RunPod, "was not running")
	})
}

func (r *rig) assertJoinTimeout(name, provider, says string) {
	r.t.Helper()
	req := r.waitPhase(name, tgpv1.PhaseFailed, readyTimeout)
	if req.Status.TerminationReason != "JoinTimeout" || req.Status.Provider != provider || !strings.Contains(req.Status.Message, says) {
		r.t.Errorf("failed on %s for %q: %q; want %s, JoinTimeout, a message that says %q", req.Status.Provider, req.Status.TerminationReason, req.Status.Message, provider, says)
	}
	if c := meta.FindStatusCondition(req.Status.Conditions, tgpv1.ConditionReady); c == nil || c.Reason != "JoinTimeout" {
		r.t.Errorf("Ready condition %+v, want reason JoinTimeout", c)
	}
	waitNoLive(r.t, r)
	if n := launches(r.stack, provider, req.Status.MachineName); n != 1 {
		r.t.Errorf("%d launches, want 1 (no relaunch after a join timeout)", n)
	}
	if n := len(r.stack.Machines()); n != 1 {
		r.t.Errorf("%d machines ever launched, want 1", n)
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
