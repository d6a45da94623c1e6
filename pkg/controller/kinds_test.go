package controller

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// Machine kinds and bootstrap formats: a container request goes to a
// container offer with its env resolved; a VM request goes only to a
// provider that runs one of its bootstrap's formats.

// kindsContainerOffer is a container offering of the fixture's GPU, dearer
// than its VM offer.
var kindsContainerOffer = providers.Offer{
	Provider: "runpod", InstanceType: "NVIDIA GeForce RTX 4090", GPUType: "RTX4090", GPUCount: 1,
	Region: "us-west-1", ProviderRegion: "US-CA-1", Capacity: providers.OnDemand, HourlyPrice: 0.69,
	Available: true, PriceSource: providers.PriceSourceAPI, Kind: providers.Container,
}

func containerRequest(mutate ...func(*tgpv1.GPURequest)) *tgpv1.GPURequest {
	return newRequest("gpu", append([]func(*tgpv1.GPURequest){func(r *tgpv1.GPURequest) {
		r.Finalizers = []string{tgpv1.Finalizer}
		r.Spec.SpotInstance, r.Spec.MaxPrice = false, ptr(1.0)
		r.Spec.Container = &tgpv1.ContainerSpec{
			Image: "runpod/pytorch:2.8.0", Args: []string{"python", "train.py"},
			Env: []tgpv1.ContainerEnvVar{
				{Name: "EPOCHS", Value: ptr("3")},
				{Name: "HF_TOKEN", ValueFrom: &tgpv1.SecretKeyRef{SecretName: "hf", Key: "token"}},
			},
			Ports: []tgpv1.ContainerPort{{Port: 8888, Protocol: "http"}, {Port: 22}},
		}
	}}, mutate...)...)
}

func kindsSecret(f *fixture, name string, consent bool, data map[string]string) {
	f.t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}, Data: map[string][]byte{}}
	if consent {
		s.Labels = map[string]string{LabelBootstrapConsent: "true"}
	}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	if _, err := f.kube.CoreV1().Secrets("default").Create(f.t.Context(), s, metav1.CreateOptions{}); err != nil {
		f.t.Fatal(err)
	}
}

func TestContainerRequestLaunchesAContainerAndIsReadyWhenRunning(t *testing.T) {
	f := newFixture(t, containerRequest())
	second := kindsContainerOffer
	second.Region, second.ProviderRegion, second.HourlyPrice = "us-east-1", "US-GA-1", 0.74
	f.provider.offers = append(f.provider.offers, kindsContainerOffer, second)
	kindsSecret(f, "hf", true, map[string]string{"token": "hf_secret"})
	var got []providers.LaunchRequest
	f.provider.onLaunch = func(r providers.LaunchRequest) { got = append(got, r) }

	f.sync("gpu")
	if len(got) != 1 {
		t.Fatalf("%d launches, want 1", len(got))
	}
	if got[0].Offer.Kind != providers.Container || got[0].UserData != "" {
		t.Errorf("launched %s with %d bytes of user data, want the container offer and none", got[0].Offer.ID(), len(got[0].UserData))
	}
	want := &providers.ContainerSpec{
		Image: "runpod/pytorch:2.8.0", Args: []string{"python", "train.py"},
		Env:   map[string]string{"EPOCHS": "3", "HF_TOKEN": "hf_secret"},
		Ports: []providers.Port{{Port: 8888, Protocol: "http"}, {Port: 22, Protocol: "tcp"}},
	}
	if diff := cmp.Diff(want, got[0].Container); diff != "" {
		t.Errorf("container (-want +got):\n%s", diff)
	}
	for _, e := range stageEvents(f) {
		if strings.Contains(e, "hf_secret") {
			t.Errorf("an Event carries the Secret's value: %q", e)
		}
	}

	// Listed running with its ports: Ready in one write, no Node involved.
	f.reload("gpu")
	f.clock.Step(3 * time.Second)
	in := stageInstance("pod-1", ownMachine, providers.StateRunning)
	in.PublicIP = "203.0.113.7"
	in.Ports = []providers.PortMapping{{Port: 22, Protocol: "tcp", PublicIP: "203.0.113.7", PublicPort: 40022}, {Port: 8888, Protocol: "http"}}
	stageList(f, in)
	f.client.ClearActions()
	f.sync("gpu")
	st := stageOneWrite(t, f, "container running")
	if st.Phase != tgpv1.PhaseReady || st.NodeName != "" || st.PublicIP != "203.0.113.7" {
		t.Errorf("phase %s node %q publicIP %q, want Ready, no Node, 203.0.113.7", st.Phase, st.NodeName, st.PublicIP)
	}
	wantPorts := []tgpv1.PortStatus{{Port: 22, Protocol: "tcp", PublicIP: "203.0.113.7", PublicPort: 40022}, {Port: 8888, Protocol: "http"}}
	if diff := cmp.Diff(wantPorts, st.Ports); diff != "" {
		t.Errorf("status.ports (-want +got):\n%s", diff)
	}
	stageCondition(t, st, tgpv1.ConditionReady, metav1.ConditionTrue, "ContainerRunning")
	stageCondition(t, st, tgpv1.ConditionNodeJoined, metav1.ConditionFalse, "NotApplicable")

	// Lost by the provider: an interruption and a relaunch, like a VM.
	f.reload("gpu")
	f.clock.Step(time.Minute)
	stageList(f, stageInstance("pod-1", ownMachine, providers.StateInterrupted))
	f.client.ClearActions()
	f.sync("gpu")
	if st := f.reload("gpu").Status; st.Interruptions != 1 || st.Phase != tgpv1.PhaseProvisioning || st.ProviderRegion != "US-GA-1" || st.Ports != nil {
		t.Errorf("after the loss: phase %s interruptions %d region %s ports %v, want Provisioning, 1, US-GA-1 and none", st.Phase, st.Interruptions, st.ProviderRegion, st.Ports)
	}
	if len(got) != 2 || got[1].Container == nil {
		t.Errorf("%d launches, want the relaunch of the container", len(got))
	}
}

func TestContainerEnvNeedsAConsentedSecret(t *testing.T) {
	for _, tc := range []struct {
		name    string
		consent bool
		data    map[string]string
		want    string
	}{
		{name: "no consent label", data: map[string]string{"token": "x"}, want: "lacks the label"},
		{name: "missing key", consent: true, data: map[string]string{"other": "x"}, want: `has no key "token"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, containerRequest())
			f.provider.offers = append(f.provider.offers, kindsContainerOffer)
			kindsSecret(f, "hf", tc.consent, tc.data)
			f.sync("gpu")
			if n := len(f.provider.launches); n != 0 {
				t.Fatalf("%d launches, want none", n)
			}
			st := stageOneWrite(t, f, "refused env")
			if st.Phase != tgpv1.PhasePending || !strings.Contains(st.Message, tc.want) || strings.Contains(st.Message, "x\"") {
				t.Errorf("phase %s message %q, want Pending naming %q", st.Phase, st.Message, tc.want)
			}
			stageCondition(t, st, tgpv1.ConditionLaunched, metav1.ConditionFalse, "BootstrapError")
		})
	}
}

func TestVMRequestNeverTakesAContainerOffer(t *testing.T) {
	f := newFixture(t, newRequest("gpu", func(r *tgpv1.GPURequest) {
		r.Finalizers = []string{tgpv1.Finalizer}
		r.Spec.SpotInstance, r.Spec.MaxPrice = false, ptr(1.0)
	}))
	f.provider.offers = []providers.Offer{kindsContainerOffer}
	f.sync("gpu")
	if n := len(f.provider.launches); n != 0 {
		t.Fatalf("%d launches, want none", n)
	}
	st := stageOneWrite(t, f, "no VM offer")
	if st.Phase != tgpv1.PhasePending || !strings.Contains(st.Selection, "WrongMachineKind") {
		t.Errorf("phase %s selection %q, want Pending with WrongMachineKind", st.Phase, st.Selection)
	}
}

// scriptOnlyProvider is the fixture's provider as one whose VMs run only a
// startup script (Paperspace).
type scriptOnlyProvider struct{ *fakeProvider }

func (scriptOnlyProvider) BootstrapFormats() []providers.BootstrapFormat {
	return []providers.BootstrapFormat{providers.FormatScript}
}

func TestBootstrapFormatsDecideWhichProvidersCanServe(t *testing.T) {
	const (
		cloudInit = "#cloud-config\nhostname: {{ .NodeName }}\n"
		script    = "#!/bin/bash\nhostnamectl set-hostname {{ shell .NodeName }}\n"
	)
	for _, tc := range []struct {
		name      string
		data      map[string]string
		scriptKey string
		// launched is the user data sent, "" for no launch.
		launched string
	}{
		{name: "cloud-init only: no launch", data: map[string]string{"userdata": cloudInit}},
		{name: "a script in key", data: map[string]string{"userdata": script}, launched: "#!/bin/bash\nhostnamectl set-hostname '" + ownMachine + "'\n"},
		{name: "cloud-init in key, script in scriptKey", data: map[string]string{"userdata": cloudInit, "join.sh": script}, scriptKey: "join.sh",
			launched: "#!/bin/bash\nhostnamectl set-hostname '" + ownMachine + "'\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := newRequest("gpu", func(r *tgpv1.GPURequest) {
				r.Finalizers = []string{tgpv1.Finalizer}
				r.Spec.Bootstrap = &tgpv1.BootstrapSource{SecretName: "boot", Key: "userdata", ScriptKey: tc.scriptKey}
			})
			f := newFixtureWith(t, func(p *fakeProvider) providers.Provider { return scriptOnlyProvider{p} }, req)
			kindsSecret(f, "boot", true, tc.data)
			var sent []string
			f.provider.onLaunch = func(r providers.LaunchRequest) { sent = append(sent, r.UserData) }
			f.sync("gpu")
			if tc.launched == "" {
				if len(sent) != 0 {
					t.Fatalf("%d launches, want none", len(sent))
				}
				st := f.reload("gpu").Status
				if st.Phase != tgpv1.PhasePending || !strings.Contains(st.Selection, "NoBootstrapForProvider") {
					t.Errorf("phase %s selection %q, want Pending with NoBootstrapForProvider", st.Phase, st.Selection)
				}
				return
			}
			if len(sent) != 1 || sent[0] != tc.launched {
				t.Fatalf("sent %q, want one launch with %q", sent, tc.launched)
			}
		})
	}
}

func TestScriptKeyMustHoldAScript(t *testing.T) {
	req := newRequest("gpu", func(r *tgpv1.GPURequest) {
		r.Finalizers = []string{tgpv1.Finalizer}
		r.Spec.Bootstrap = &tgpv1.BootstrapSource{SecretName: "boot", Key: "userdata", ScriptKey: "join.sh"}
	})
	f := newFixture(t, req)
	kindsSecret(f, "boot", true, map[string]string{"userdata": "#cloud-config\n", "join.sh": "#cloud-config\n"})
	f.sync("gpu")
	st := f.reload("gpu").Status
	if len(f.provider.launches) != 0 || !strings.Contains(st.Message, `key "join.sh" is not a script`) {
		t.Errorf("%d launches, message %q; want none and the key named", len(f.provider.launches), st.Message)
	}
}
