package main

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/clock"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	lambdasim "github.com/solanyn/gpu-operator/pkg/cloudsim/lambda"
	paperspacesim "github.com/solanyn/gpu-operator/pkg/cloudsim/paperspace"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// lambdaFlags enable only Lambda, pointed at st's simulator.
func lambdaFlags(st *stack.Stack, sshKey string) *providerFlags {
	return &providerFlags{enabled: providers.LambdaLabs, lambdaURL: st.URL(providers.LambdaLabs), lambdaRPS: 1000,
		lambdaLaunchEvery: -1, lambdaSSHKey: sshKey, callTimeout: 5 * time.Second}
}

// Lambda without an SSH key name is left out, with the reason; with one it
// is built.
func TestBuildLeavesLambdaOutWithoutSSHKey(t *testing.T) {
	st, err := stack.Start(stack.Config{Lambda: &cloudsim.Config{APIKey: simKey}}, clock.RealClock{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	key := func(string) string { return simKey }

	p := lambdaFlags(st, "")
	adapters, err := p.build(key)
	if err != nil || len(adapters) != 0 {
		t.Fatalf("build without an SSH key name: %d adapters, %v; want Lambda left out", len(adapters), err)
	}
	if len(p.leftOut) != 1 || p.leftOut[0].name != providers.LambdaLabs || !strings.Contains(p.leftOut[0].reason, "--lambda-ssh-key-name") {
		t.Fatalf("leftOut = %+v, want lambdalabs naming --lambda-ssh-key-name", p.leftOut)
	}
	p = lambdaFlags(st, lambdasim.DefaultSSHKeyName)
	if adapters, err = p.build(key); err != nil || len(adapters) != 1 || len(p.leftOut) != 0 {
		t.Fatalf("build with an SSH key name: %d adapters, left out %v, %v", len(adapters), p.leftOut, err)
	}
}

// The startup check finds a missing key; Lambda's offers are withheld until
// the key is registered, without a restart.
func TestStartupSSHKeyCheck(t *testing.T) {
	st, err := stack.Start(stack.Config{Lambda: &cloudsim.Config{APIKey: simKey, Catalog: []cloudsim.CatalogEntry{
		{InstanceType: "gpu_1x_h100_pcie", GPUs: 1, Region: "us-west-1", OnDemandPrice: 2.49, Capacity: -1},
	}}}, clock.RealClock{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	adapters, err := lambdaFlags(st, lambdasim.DefaultSSHKeyName).build(func(string) string { return simKey })
	if err != nil || len(adapters) != 1 {
		t.Fatalf("build: %v", err)
	}
	ctx := context.Background()
	st.Lambda.RemoveSSHKey(lambdasim.DefaultSSHKeyName)
	var reported []string
	checkSSHKeys(ctx, adapters, 5*time.Second, func(provider, msg string) { reported = append(reported, provider+": "+msg) })
	if n := st.Lambda.Core().Counters().Requests[lambdasim.EndpointSSHKeys]; n != 1 {
		t.Fatalf("the startup check made %d ssh-keys calls, want 1", n)
	}
	if len(reported) != 1 || !strings.HasPrefix(reported[0], "lambdalabs: ") || !strings.Contains(reported[0], lambdasim.DefaultSSHKeyName) {
		t.Errorf("reported %q, want one report for lambdalabs naming the key", reported)
	}
	if _, err := adapters[0].Offers(ctx); !providers.IsClass(err, providers.ClassInvalid) || !strings.Contains(err.Error(), "not registered") {
		t.Fatalf("Offers with the key missing: %v, want the key named as not registered", err)
	}
	st.Lambda.AddSSHKey(lambdasim.DefaultSSHKeyName)
	if offers, err := adapters[0].Offers(ctx); err != nil || len(offers) != 1 {
		t.Fatalf("Offers once the key is registered: %d, %v", len(offers), err)
	}
}

// offers notes the Paperspace machine types that get no offer for want of a
// GPU OS template.
func TestOffersNotesPaperspaceTypesWithoutTemplate(t *testing.T) {
	st := h100Sims(t)
	var ts []paperspacesim.Template
	for _, tmpl := range paperspacesim.DefaultTemplates() {
		tmpl.MachineTypes = slices.DeleteFunc(slices.Clone(tmpl.MachineTypes), func(mt string) bool { return mt == "H100" })
		ts = append(ts, tmpl)
	}
	st.Paperspace.SetTemplates(ts)
	res := runCmd(offersCmd, append(endpointArgs(t, st, simKey), regionAwareArgs...)...)
	if !strings.Contains(res.errOut, "note: paperspace: machine type H100 has no offer: no Linux GPU OS template lists machine type H100") {
		t.Errorf("offers stderr %q, want a note that H100 has no GPU template", res.errOut)
	}
	if strings.Contains(res.out, "paperspace  H100") {
		t.Errorf("a Paperspace H100 offer is listed:\n%s", res.out)
	}
}
