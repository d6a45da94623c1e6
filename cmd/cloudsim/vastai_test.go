package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

const vastFile = `{
  "addrs": {"vastai": "127.0.0.1:0"},
  "providers": {"vastai": {
    "apiKey": "k",
    "hosts": [
      {"id": 1001, "gpuName": "RTX 4090", "numGPUs": 1, "gpuRAM": 24564, "geolocation": "California, US",
       "dphTotal": 0.42, "minBid": 0.18, "reliability": 0.995, "verified": true, "vmsEnabled": true},
      {"id": 1002, "gpuName": "RTX 3080", "numGPUs": 1, "geolocation": "Texas, US", "dphTotal": 0.1, "reliability": 0.9, "verified": true}
    ],
    "market": {"hosts": 100, "seed": 3}
  }}
}`

func TestVastAIConfig(t *testing.T) {
	f, err := ParseFile([]byte(vastFile))
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(f.Warnings(), "\n")
	if !strings.Contains(w, `host 1002: the operator maps GPU "RTX 3080"`) || !strings.Contains(w, "host 1002 is unverified or has reliability 0.9") || strings.Contains(w, "host 1001") {
		t.Errorf("warnings:\n%s", w)
	}
	cfg := f.StackConfig(Overrides{Addrs: map[string]string{}})
	if cfg.VastAI == nil || len(cfg.VastAI.Hosts) != 2 || cfg.VastAI.Market.Hosts != 100 || cfg.VastAI.APIKey != "k" {
		t.Fatalf("stack config %+v", cfg.VastAI)
	}
	flags := operatorFlags(Endpoints{Providers: map[string]ProviderEndpoint{providers.VastAI: {URL: "http://v"}}}, "")
	if !slices.Contains(flags, "--vastai-url=http://v") || !slices.Contains(flags, "--providers=vastai") {
		t.Errorf("operator flags %v", flags)
	}
	for name, in := range map[string]string{
		"a catalog":        `{"providers": {"vastai": {"catalog": [{"instanceType": "1", "gpus": 1, "region": "Texas, US", "onDemandPrice": 1}]}}}`,
		"a repeated id":    `{"providers": {"vastai": {"hosts": [{"id": 1, "gpuName": "A40", "numGPUs": 1, "geolocation": "FR", "dphTotal": 1}, {"id": 1, "gpuName": "A40", "numGPUs": 1, "geolocation": "FR", "dphTotal": 1}]}}}`,
		"a bid over price": `{"providers": {"vastai": {"hosts": [{"id": 1, "gpuName": "A40", "numGPUs": 1, "geolocation": "FR", "dphTotal": 1, "minBid": 2}]}}}`,
		"hosts on runpod":  `{"providers": {"runpod": {"hosts": [{"id": 1}]}}}`,
	} {
		if _, err := ParseFile([]byte(in)); err == nil {
			t.Errorf("%s: want an error", name)
		}
	}
}

func TestAdminVastAI(t *testing.T) {
	f, err := ParseFile([]byte(vastFile))
	if err != nil {
		t.Fatal(err)
	}
	sims, err := stack.Start(f.StackConfig(Overrides{Addrs: map[string]string{}}), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sims.Close()
	if n := len(sims.VastAI.Hosts()); n != 102 {
		t.Fatalf("%d hosts, want 2 listed and 100 generated", n)
	}
	srv := httptest.NewServer((&admin{sims: sims.Simulators()}).handler())
	defer srv.Close()
	// Bid on host 1001 through Vast.ai's own API.
	req, _ := http.NewRequest(http.MethodPut, sims.URL(providers.VastAI)+"/api/v0/asks/1001/",
		strings.NewReader(`{"image": "busybox", "label": "gpur-demo", "price": 0.2, "runtype": "args"}`))
	req.Header.Set("Authorization", "Bearer k")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("create: %s", resp.Status)
	}
	post := func(path string) *http.Response {
		t.Helper()
		resp, err := http.Post(srv.URL+path, "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	if resp := post("/vastai/outbid?name=gpur-demo"); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("outbid without a price: %s", resp.Status)
	}
	resp = post("/vastai/outbid?name=gpur-demo&price=0.5")
	var m cloudsim.Machine
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || resp.StatusCode != http.StatusOK || !m.Preempted || !m.Live {
		t.Fatalf("outbid: %s %v %+v", resp.Status, err, m)
	}
	resp, err = http.Get(srv.URL + "/vastai/creates")
	if err != nil {
		t.Fatal(err)
	}
	var creates []map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&creates); err != nil || len(creates) != 1 || creates[0]["price"] != 0.2 {
		t.Errorf("creates: %v %v", err, creates)
	}
	// A container has no SSH server of its own.
	resp, err = http.Get(srv.URL + "/vastai/ssh-runs?id=" + m.ID)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("ssh-runs of a container: %s", resp.Status)
	}
}
