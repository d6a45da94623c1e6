package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
)

// The demo catalog must load and hold nothing the operator would ignore.
func TestDemoCatalog(t *testing.T) {
	f, err := LoadFile("../../hack/demo/catalog.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range f.Warnings() {
		t.Error(w)
	}
	for name, p := range f.Providers {
		if p.Source == "" || p.Date == "" {
			t.Errorf("%s: source and date are required in the demo catalog", name)
		}
	}
	d := 2 * time.Second
	cfg := f.StackConfig(Overrides{Addrs: map[string]string{"runpod": "127.0.0.1:0"}, BootDelay: &d})
	if cfg.Lambda == nil || cfg.RunPod == nil || cfg.Paperspace == nil {
		t.Fatalf("want all three providers, got %+v", cfg)
	}
	if cfg.RunPod.BootDelay != d || cfg.Lambda.TerminateDelay != 2*time.Second {
		t.Errorf("delays: boot %v terminate %v", cfg.RunPod.BootDelay, cfg.Lambda.TerminateDelay)
	}
	if cfg.Addrs["runpod"] != "127.0.0.1:0" || cfg.Addrs["lambdalabs"] != "127.0.0.1:8701" {
		t.Errorf("addrs: %v", cfg.Addrs)
	}
}

func TestParseFileErrors(t *testing.T) {
	for name, in := range map[string]string{
		"unknown field":    `{"providers": {"runpod": {"catalogue": []}}}`,
		"unknown provider": `{"providers": {"aws": {"catalog": []}}}`,
		"bad entry":        `{"providers": {"runpod": {"catalog": [{"instanceType": "x", "gpus": 0, "region": "US-CA-2"}]}}}`,
		"bad duration":     `{"bootDelay": "soon", "providers": {"runpod": {}}}`,
		"no providers":     `{}`,
	} {
		if _, err := ParseFile([]byte(in)); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
	f, err := ParseFile([]byte("bootDelay: 1500ms\nproviders:\n  runpod:\n    catalog: []\n"))
	if err != nil || time.Duration(f.BootDelay) != 1500*time.Millisecond {
		t.Fatalf("YAML: %v %+v", err, f)
	}
}

func TestAdmin(t *testing.T) {
	entry := cloudsim.CatalogEntry{InstanceType: "NVIDIA GeForce RTX 4090", GPUs: 8, Region: "US-CA-2", OnDemandPrice: 0.69, SpotPrice: 0.22, Capacity: -1}
	sims, err := stack.Start(stack.Config{RunPod: &cloudsim.Config{Catalog: []cloudsim.CatalogEntry{entry}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sims.Close()
	srv := httptest.NewServer((&admin{sims: sims.Simulators()}).handler())
	defer srv.Close()

	// Rent a pod through RunPod's own API (REST v2; RunPod sells no spot,
	// and /preempt stops the pod as RunPod does when it takes a machine back).
	body := `{"name": "tgp-demo-1", "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 1}, "image": "busybox"}`
	req, _ := http.NewRequest(http.MethodPost, sims.URL("runpod")+"/v2/pods", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer k")
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create pod: %s", resp.Status)
	}

	post := func(path, body string) *http.Response {
		t.Helper()
		resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if resp := post("/preempt?name=nope", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("preempt unknown: %s", resp.Status)
	}
	resp = post("/preempt?name=tgp-demo-1", "")
	var m cloudsim.Machine
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != http.StatusOK || !m.Preempted {
		t.Fatalf("preempt: %s %v %+v", resp.Status, err, m)
	}
	if resp := post("/faults?provider=runpod", `{"latency": "10ms", "errorRate": 0.5}`); resp.StatusCode != http.StatusOK {
		t.Errorf("faults: %s", resp.Status)
	}
	if f := sims.RunPod.Core().Faults(); f.Latency != 10*time.Millisecond || f.ErrorRate != 0.5 {
		t.Errorf("faults not applied: %+v", f)
	}
	if resp := post("/faults?provider=aws", `{}`); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("faults for an unknown provider: %s", resp.Status)
	}

	resp, err = http.Get(srv.URL + "/counters")
	if err != nil {
		t.Fatal(err)
	}
	var counters map[string]cloudsim.Counters
	if err := json.NewDecoder(resp.Body).Decode(&counters); err != nil || counters["runpod"].Launches["tgp-demo-1"] != 1 {
		t.Errorf("counters: %v %+v", err, counters)
	}
	resp, err = http.Get(srv.URL + "/machines")
	if err != nil {
		t.Fatal(err)
	}
	var ms []cloudsim.Machine
	if err := json.NewDecoder(resp.Body).Decode(&ms); err != nil || len(ms) != 1 || ms[0].Name != "tgp-demo-1" {
		t.Errorf("machines: %v %+v", err, ms)
	}
}
