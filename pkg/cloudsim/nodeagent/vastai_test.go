package nodeagent

import (
	"context"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/solanyn/gpu-operator/pkg/bootstrap"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	vastaisim "github.com/solanyn/gpu-operator/pkg/cloudsim/vastai"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// A Vast.ai VM gets its bootstrap over SSH, not at create: its Node is
// registered from the script its SSH server ran (named by the script's
// hostnamectl line), only once that has happened, and removed when a higher
// bid stops the VM.
func TestVastAIVMJoinsAfterSSHBootstrap(t *testing.T) {
	st, err := stack.Start(stack.Config{VastAI: &vastaisim.Config{Config: cloudsim.Config{APIKey: "k"},
		Hosts: []vastaisim.Host{{ID: 9, GPUName: "RTX 4090", NumGPUs: 1, GPURAM: 24564, Geolocation: "California, US",
			DPHTotal: 0.4, MinBid: 0.15, Reliability: 0.99, Verified: true, VMsEnabled: true}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ps, err := st.Adapters(stack.AdapterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	offers, err := ps[0].Offers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var spot providers.Offer
	for _, o := range offers {
		if o.Capacity == providers.Spot {
			spot = o
		}
	}
	const name = "gpur-0f8fad5bd9cb469f-1"
	in, err := ps[0].Launch(ctx, providers.LaunchRequest{Name: name, Offer: spot, BidPrice: 0.16})
	if err != nil {
		t.Fatal(err)
	}
	kube := fake.NewClientset()
	agent := &Agent{Kube: kube, Simulators: st.Simulators()}
	if err := agent.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if nodes, _ := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{}); len(nodes.Items) != 0 {
		t.Fatalf("a Node registered before the bootstrap: %v", nodes.Items)
	}
	list, err := ps[0].Instances(ctx)
	if err != nil || len(list) != 1 {
		t.Fatalf("instances %v %v", list, err)
	}
	script, err := bootstrap.Render(bootstrap.DefaultTemplate, bootstrap.Data{NodeName: name}, bootstrap.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.VastAIBootstrap(ctx, list[0], script); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	if err := agent.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	node, err := kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("no Node %s after the bootstrap: %v", name, err)
	}
	if node.Spec.ProviderID != "vastai://"+in.ID {
		t.Errorf("providerID %q", node.Spec.ProviderID)
	}
	if err := st.VastAI.Outbid(in.ID, 0.5); err != nil {
		t.Fatal(err)
	}
	if err := agent.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := kube.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{}); err == nil {
		t.Error("the Node of an outbid VM is still there")
	}
}
