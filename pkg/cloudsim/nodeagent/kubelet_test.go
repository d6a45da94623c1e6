package nodeagent

import (
	"context"
	"errors"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/solanyn/gpu-operator/pkg/bootstrap"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
)

// TestTLSBootstrapFindsTheToken: the default template's bootstrap
// kubeconfig and a kubeadm join line both carry a token the agent finds;
// user data without one joins nothing, and the agent says why instead of
// writing the Node with its own client.
func TestTLSBootstrapFindsTheToken(t *testing.T) {
	const token = "abcdef.0123456789abcdef"
	script, err := bootstrap.Render(bootstrap.DefaultTemplate, bootstrap.Data{NodeName: "n1", JoinToken: token,
		APIServerURL: "https://127.0.0.1:6443", CACertData: "Y2E="}, bootstrap.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	for _, userData := range []string{script, "#cloud-config\nruncmd:\n  - [kubeadm, join, --token, \"" + token + "\"]\n"} {
		if got := bootstrapTokenRE.FindString(userData); got != token {
			t.Errorf("token %q found in %q, want %q", got, userData, token)
		}
	}

	kube := fake.NewClientset()
	agent := &Agent{Kube: kube, TLSBootstrap: &TLSBootstrap{Host: "https://127.0.0.1:1"}, Simulators: []cloudsim.Simulator{machines{list: []cloudsim.Machine{
		{Provider: "lambdalabs", ID: "i-1", Name: "n2", GPUs: 1, Active: true, Live: true, UserData: "#cloud-config\nhostname: n2\n"},
	}}}}
	if err := agent.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := agent.JoinError("n2"); !errors.Is(err, ErrNoBootstrapToken) {
		t.Fatalf("join error %v, want %v", err, ErrNoBootstrapToken)
	}
	if nodes, _ := kube.CoreV1().Nodes().List(context.Background(), metav1.ListOptions{}); len(nodes.Items) != 0 {
		t.Fatalf("%d Nodes registered without credentials", len(nodes.Items))
	}
}
