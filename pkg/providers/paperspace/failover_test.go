package paperspace_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	kubefake "k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	simpaperspace "github.com/solanyn/gpu-operator/pkg/cloudsim/paperspace"
	"github.com/solanyn/gpu-operator/pkg/controller"
	tgpfake "github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned/fake"
	"github.com/solanyn/gpu-operator/pkg/operator"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/paperspace"
	"github.com/solanyn/gpu-operator/pkg/providers/spectest"
)

// TestStuckOffFailsOverWithinThePollWindow: the operator's real controller
// (fake Kubernetes clients, the real adapter on the simulator over HTTP)
// launches a request's first offer, a machine that provisions and then stays
// off (Paperspace's capacity miss); the first poll that lists it off reports
// it failed, and the controller terminates it, marks the offering
// unavailable and launches the next offer, long before the join timeout.
func TestStuckOffFailsOverWithinThePollWindow(t *testing.T) {
	const poll = 100 * time.Millisecond
	sim := simpaperspace.New(cloudsim.Config{APIKey: testKey, Catalog: []cloudsim.CatalogEntry{
		entry("A100-80G", "ny2", -1), entry("A100-80G", "ca1", -1),
	}}, nil)
	sim.SetStuckOff("A100-80G", "ny2", true)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	a, err := paperspace.New(paperspace.Config{BaseURL: srv.URL + "/v1", Key: func() string { return testKey },
		HTTPClient:        &http.Client{Transport: spectest.Load(t, providers.Paperspace).Transport(t, srv.Client().Transport)},
		RequestsPerSecond: -1})
	if err != nil {
		t.Fatal(err)
	}

	maxPrice := 10.0
	req := &tgpv1.GPURequest{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "train", UID: "3f2c9a1e-0000-4000-8000-000000000001"},
		Spec: tgpv1.GPURequestSpec{GPUType: "A100-80GB", Provider: providers.Paperspace,
			RegionPreference: []string{"us-east-1", "us-west-1"}, MaxPrice: &maxPrice},
	}
	kube, client := kubefake.NewClientset(), tgpfake.NewSimpleClientset(req)
	recorder := record.NewFakeRecorder(100)
	ctrl, inf, err := operator.NewController(operator.Options{
		Config:     controller.Config{PollInterval: poll, JoinTimeout: time.Hour},
		KubeClient: kube, Client: client, Providers: []providers.Provider{a},
		Recorder: recorder, Registry: prometheus.NewRegistry(),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- operator.Run(ctx, ctrl, inf, 1, nil) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})

	machines := func(region string) []cloudsim.Machine {
		var out []cloudsim.Machine
		for _, m := range sim.Machines() {
			if m.Region == region {
				out = append(out, m)
			}
		}
		return out
	}
	until := func(what string, cond func() bool) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(ctx, 10*time.Millisecond, 30*time.Second, true,
			func(context.Context) (bool, error) { return cond(), nil }); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	until("the first offer (ny2) is launched", func() bool { return len(machines("ny2")) == 1 })
	start := time.Now()
	until("the stuck machine is replaced in ca1", func() bool { return len(machines("ca1")) == 1 })
	took := time.Since(start)
	t.Logf("failed over %s after the first launch (poll interval %s)", took, poll)
	until("the stuck machine is deleted", func() bool { return !machines("ny2")[0].Live })
	if m := machines("ca1")[0]; m.NativeState != "ready" || m.Name == machines("ny2")[0].Name {
		t.Errorf("replacement %+v, want a ready machine under a new name", m)
	}
	if n := len(machines("ny2")); n != 1 {
		t.Errorf("%d machines in ny2, want 1: the unavailable offering was launched again", n)
	}
	var saw bool
	for len(recorder.Events) > 0 && !saw {
		saw = strings.Contains(<-recorder.Events, paperspace.NeverStartedState)
	}
	if !saw {
		t.Errorf("no Event says %q", paperspace.NeverStartedState)
	}
}
