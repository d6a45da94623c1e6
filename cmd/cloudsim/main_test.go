package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	lambdasim "github.com/solanyn/gpu-operator/pkg/cloudsim/lambda"
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
	// No provider sells spot: no entry may carry a spot price (Warnings
	// says so too), and RunPod's entries are containers by construction.
	for name, p := range f.Providers {
		for _, e := range p.Catalog {
			if e.SpotPrice != 0 || e.OnDemandPrice <= 0 {
				t.Errorf("%s %s in %s: spotPrice %v, onDemandPrice %v; want on-demand only", name, e.InstanceType, e.Region, e.SpotPrice, e.OnDemandPrice)
			}
		}
	}
	// Lambda launches need a registered SSH key, and the operator is told
	// which one.
	if got := f.LambdaSSHKey(); got != "gpu-operator-demo" {
		t.Errorf("LambdaSSHKey = %q, want the catalog's gpu-operator-demo", got)
	}
	flags := operatorFlags(Endpoints{Providers: map[string]ProviderEndpoint{"lambdalabs": {URL: "http://l"}}}, f.LambdaSSHKey())
	if !slices.Contains(flags, "--lambda-ssh-key-name=gpu-operator-demo") {
		t.Errorf("operator flags %v lack --lambda-ssh-key-name", flags)
	}
}

func TestWarnings(t *testing.T) {
	f, err := ParseFile([]byte(`{"providers": {"runpod": {"catalog": [
		{"instanceType": "NVIDIA GeForce RTX 4090", "gpus": 8, "region": "US-CA-2", "onDemandPrice": 0.69, "spotPrice": 0.22, "capacity": 1},
		{"instanceType": "NVIDIA GeForce RTX 4090", "gpus": 8, "region": "XX-NOPE-1", "onDemandPrice": 0.69, "capacity": 1}]}}}`))
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(f.Warnings(), "\n")
	if !strings.Contains(w, "spotPrice") || !strings.Contains(w, `region "XX-NOPE-1"`) {
		t.Errorf("warnings:\n%s\nwant the spot price and the unknown region", w)
	}
	if got := f.LambdaSSHKey(); got != lambdasim.DefaultSSHKeyName {
		t.Errorf("LambdaSSHKey without sshKeys = %q, want %q", got, lambdasim.DefaultSSHKeyName)
	}
}

func TestParseFileErrors(t *testing.T) {
	for name, in := range map[string]string{
		"unknown field":     `{"providers": {"runpod": {"catalogue": []}}}`,
		"unknown provider":  `{"providers": {"aws": {"catalog": []}}}`,
		"bad entry":         `{"providers": {"runpod": {"catalog": [{"instanceType": "x", "gpus": 0, "region": "US-CA-2"}]}}}`,
		"bad duration":      `{"bootDelay": "soon", "providers": {"runpod": {}}}`,
		"sshKeys on runpod": `{"providers": {"runpod": {"sshKeys": ["k"]}}}`,
		"empty sshKey":      `{"providers": {"lambdalabs": {"sshKeys": [""]}}}`,
		"repeated sshKey":   `{"providers": {"lambdalabs": {"sshKeys": ["k", "k"]}}}`,
		"no providers":      `{}`,
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
	entry := cloudsim.CatalogEntry{InstanceType: "NVIDIA GeForce RTX 4090", GPUs: 8, Region: "US-CA-2", OnDemandPrice: 0.69, Capacity: -1}
	sims, err := stack.Start(stack.Config{RunPod: &cloudsim.Config{Catalog: []cloudsim.CatalogEntry{entry}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sims.Close()
	srv := httptest.NewServer((&admin{sims: sims.Simulators()}).handler())
	defer srv.Close()

	// Rent a pod through RunPod's own API (REST v2; RunPod sells no spot,
	// and /preempt stops the pod as RunPod does when it takes a machine back).
	body := `{"name": "tgp-demo-1", "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 1}, "image": "busybox", "env": {"TOKEN": "t0k"}}`
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
	// The pod's create body, as RunPod received it.
	resp, err = http.Get(srv.URL + "/runpod/creates")
	if err != nil {
		t.Fatal(err)
	}
	var creates []map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&creates); err != nil || len(creates) != 1 || creates[0]["image"] != "busybox" {
		t.Errorf("runpod creates: %v %v", err, creates)
	} else if env, _ := creates[0]["env"].(map[string]any); env["TOKEN"] != "t0k" {
		t.Errorf("runpod create env: %v", creates[0]["env"])
	}
	// Capacity: sold out, then unknown entries and bad input refused.
	resp = post("/capacity?provider=runpod&instanceType=NVIDIA+GeForce+RTX+4090&region=US-CA-2&n=0", "")
	var e cloudsim.CatalogEntry
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil || resp.StatusCode != http.StatusOK || e.Capacity != 0 {
		t.Errorf("capacity: %s %v %+v", resp.Status, err, e)
	}
	if got, _ := sims.RunPod.Core().Entry(entry.InstanceType, entry.Region); got.Capacity != 0 {
		t.Errorf("capacity not applied: %+v", got)
	}
	for q, want := range map[string]int{
		"provider=runpod&instanceType=NVIDIA+H200&region=US-CA-2&n=0":              http.StatusNotFound,
		"provider=runpod&instanceType=NVIDIA+GeForce+RTX+4090&region=US-CA-2&n=x":  http.StatusBadRequest,
		"provider=runpod&instanceType=NVIDIA+GeForce+RTX+4090&region=US-CA-2&n=-2": http.StatusBadRequest,
		"instanceType=NVIDIA+GeForce+RTX+4090&region=US-CA-2&n=1":                  http.StatusBadRequest,
		"provider=aws&instanceType=x&region=y&n=1":                                 http.StatusBadRequest,
	} {
		if resp := post("/capacity?"+q, ""); resp.StatusCode != want {
			t.Errorf("capacity?%s: %s, want %d", q, resp.Status, want)
		}
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
