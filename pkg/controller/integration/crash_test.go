package integration

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// TestCrashAroundLaunch replays what a restarted operator finds after being
// killed right after writing the machine name: once before the launch call
// (no instance exists) and once after it (the instance exists). Either way
// the machine is launched exactly once under that name. The machines are
// Lambda VMs, so Ready also means their Nodes joined under those names.
func TestCrashAroundLaunch(t *testing.T) {
	r := newRig(t, rigOptions{sims: stack.Config{Lambda: simConfig(
		cloudsim.CatalogEntry{InstanceType: "gpu_1x_a10", GPUs: 1, Region: "us-east-1", OnDemandPrice: 0.75, Capacity: -1},
	)}, noStart: true,
		// The dead operator's launch is replayed below with bare user data,
		// no join token: its Node is written as admin.
		adminJoin: true})
	offer := providers.Offer{Provider: providers.LambdaLabs, InstanceType: "gpu_1x_a10", GPUType: "A10", GPUCount: 1,
		Region: "us-east-1", ProviderRegion: "us-east-1", Capacity: providers.OnDemand, HourlyPrice: 0.75, Available: true, Kind: providers.VM}
	names := map[string]string{}
	for _, tc := range []struct {
		name         string
		launchBefore bool
	}{{"killed-before-launch", false}, {"killed-after-launch", true}} {
		req := r.create("metadata: {name: " + tc.name + "}\nspec: {gpuType: A10, maxPrice: 1.0}")
		machine := machinePrefix(req) + "1"
		names[tc.name] = machine
		req.Finalizers = []string{tgpv1.Finalizer}
		req, err := r.client.TgpV1().GPURequests(r.ns).Update(t.Context(), req, metav1.UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		req.Status = tgpv1.GPURequestStatus{Phase: tgpv1.PhaseProvisioning, MachineName: machine, Attempt: 1,
			Provider: offer.Provider, InstanceType: offer.InstanceType, Region: offer.Region, ProviderRegion: offer.ProviderRegion,
			HourlyPrice: ptr.To(offer.HourlyPrice)}
		if _, err := r.client.TgpV1().GPURequests(r.ns).UpdateStatus(t.Context(), req, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if tc.launchBefore {
			// The dead operator's launch call went through.
			previous, err := r.stack.Adapters(stack.AdapterOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := previous[0].Launch(t.Context(), providers.LaunchRequest{Name: machine, Offer: offer, UserData: "#cloud-config\nhostname: " + machine + "\n"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	r.start() // the restarted operator
	for name, machine := range names {
		req := r.waitPhase(name, tgpv1.PhaseReady, readyTimeout)
		if req.Status.MachineName != machine || req.Status.Attempt != 1 || req.Status.NodeName != machine {
			t.Errorf("%s: machine %s attempt %d node %q, want %s attempt 1 joined as itself", name, req.Status.MachineName, req.Status.Attempt, req.Status.NodeName, machine)
		}
		if n := launches(r.stack, providers.LambdaLabs, machine); n != 1 {
			t.Errorf("%s: %s launched %d times, want 1", name, machine, n)
		}
	}
	if n := len(r.liveMachines()); n != 2 {
		t.Errorf("%d live machines, want 2", n)
	}
	if evs, ok := r.waitEvents("killed-after-launch", "Adopted"); !ok {
		t.Errorf("events %v, want Adopted", evs)
	}
	if evs, ok := r.waitEvents("killed-before-launch", "Launched"); !ok || containsAll(evs, "Adopted") {
		t.Errorf("killed-before-launch events %v, want Launched and no Adopted", evs)
	}
}
