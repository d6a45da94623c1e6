package integration

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// TestCrashAroundLaunch replays what a restarted operator finds after being
// killed right after writing the machine name: once before the launch call
// (no instance exists) and once after it (the instance exists). Either way
// the machine is launched exactly once under that name.
func TestCrashAroundLaunch(t *testing.T) {
	r := newRig(t, rigOptions{sims: stack.Config{RunPod: simConfig(rtx4090("US-CA-2", 0.44, 0.22))}, noStart: true})
	offer := providers.Offer{Provider: providers.RunPod, InstanceType: "NVIDIA GeForce RTX 4090", GPUType: "RTX4090", GPUCount: 1,
		Region: "us-west-1", ProviderRegion: "US-CA-2", Capacity: providers.Spot, HourlyPrice: 0.22, Available: true}
	names := map[string]string{}
	for _, tc := range []struct {
		name         string
		launchBefore bool
	}{{"killed-before-launch", false}, {"killed-after-launch", true}} {
		req := r.create("metadata: {name: " + tc.name + "}\nspec: {gpuType: RTX4090, spotInstance: true, maxSpotPrice: 0.25}")
		machine := machinePrefix(req) + "1"
		names[tc.name] = machine
		req.Finalizers = []string{tgpv1.Finalizer}
		req, err := r.client.TgpV1().GPURequests(r.ns).Update(t.Context(), req, metav1.UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		req.Status = tgpv1.GPURequestStatus{Phase: tgpv1.PhaseProvisioning, MachineName: machine, Attempt: 1,
			Provider: offer.Provider, InstanceType: offer.InstanceType, Region: offer.Region, ProviderRegion: offer.ProviderRegion,
			Spot: true, HourlyPrice: ptr.To(offer.HourlyPrice)}
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
		if req.Status.MachineName != machine || req.Status.Attempt != 1 {
			t.Errorf("%s: machine %s attempt %d, want %s attempt 1", name, req.Status.MachineName, req.Status.Attempt, machine)
		}
		if n := launches(r.stack, providers.RunPod, machine); n != 1 {
			t.Errorf("%s: %s launched %d times, want 1", name, machine, n)
		}
	}
	if n := len(r.liveMachines()); n != 2 {
		t.Errorf("%d live machines, want 2", n)
	}
	if evs := r.events("killed-after-launch"); !containsAll(evs, "Adopted") {
		t.Errorf("events %v, want Adopted", evs)
	}
}
