package runpod_test

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	rpsim "github.com/solanyn/gpu-operator/pkg/cloudsim/runpod"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod/runpodv1"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod/runpodv2"
)

const (
	key  = "sim-key"
	h100 = "NVIDIA H100 80GB HBM3"
	a40  = "NVIDIA A40"
)

type fixture struct {
	sim   *rpsim.Server
	clock *clocktesting.FakeClock
	url   string
}

func newFixture(t *testing.T, cfg cloudsim.Config) *fixture {
	t.Helper()
	cfg.APIKey = key
	if cfg.Catalog == nil {
		cfg.Catalog = []cloudsim.CatalogEntry{
			{InstanceType: h100, GPUs: 8, Region: "US-KS-2", OnDemandPrice: 2.99, SpotPrice: 1.49, Capacity: 2},
			{InstanceType: h100, GPUs: 2, Region: "EU-RO-1", OnDemandPrice: 3.29, SpotPrice: 1.29, Capacity: 0},
			{InstanceType: a40, GPUs: 4, Region: "US-GA-1", OnDemandPrice: 0.35, Capacity: -1},
		}
	}
	clk := clocktesting.NewFakeClock(time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC))
	f := &fixture{sim: rpsim.New(cfg, clk), clock: clk}
	srv := httptest.NewServer(f.sim)
	t.Cleanup(srv.Close)
	f.url = srv.URL
	return f
}

type response struct {
	status int
	header http.Header
	body   string
}

func (f *fixture) do(t *testing.T, method, path, k, body string) response {
	t.Helper()
	req, err := http.NewRequest(method, f.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if k != "" {
		req.Header.Set("Authorization", "Bearer "+k)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, string(b)}
}

func decode[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.body), &v); err != nil {
		t.Fatalf("decoding %q: %v", r.body, err)
	}
	return v
}

func (f *fixture) create(t *testing.T, body string) response {
	t.Helper()
	return f.do(t, http.MethodPost, "/v1/pods", key, body)
}

func TestSimulatorImplementsSimulator(t *testing.T) {
	var s cloudsim.Simulator = newFixture(t, cloudsim.Config{}).sim
	if s.Provider() != providers.RunPod {
		t.Errorf("provider %q", s.Provider())
	}
}

func TestGateErrorsInEachFormat(t *testing.T) {
	f := newFixture(t, cloudsim.Config{})
	graphql := `{"query":"{ gpuTypes { id } }"}`

	// Unauthorized: plain text (v1), problem+json (v2), GraphQL errors in a 200.
	if r := f.do(t, "GET", "/v1/pods", "wrong", ""); r.status != 401 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") || !strings.Contains(r.body, "Unauthorized") {
		t.Errorf("v1 401: %+v", r)
	}
	r := f.do(t, "GET", "/v2/catalog/gpus", "", "")
	if p := decode[runpodv2.ErrorResponse](t, r); r.status != 401 || r.header.Get("Content-Type") != "application/problem+json" || p.Status != 401 || p.Title != "Unauthorized" {
		t.Errorf("v2 401: %+v", r)
	}
	r = f.do(t, "POST", "/graphql", "wrong", graphql)
	if r.status != 200 || !strings.Contains(r.body, `"errors":[{"message":"Unauthorized`) {
		t.Errorf("GraphQL 401: %+v", r)
	}

	f.sim.Core().SetFaults(cloudsim.Faults{RateLimitRate: 1, RetryAfter: 1500 * time.Millisecond})
	for _, path := range []string{"/v1/pods", "/v2/catalog/gpus"} {
		if r := f.do(t, "GET", path, key, ""); r.status != 429 || r.header.Get("Retry-After") != "2" {
			t.Errorf("%s 429: %+v", path, r)
		}
	}
	if r := f.do(t, "POST", "/graphql", key, graphql); r.status != 429 || r.header.Get("Retry-After") != "2" || !strings.Contains(r.body, "errors") {
		t.Errorf("GraphQL 429: %+v", r)
	}

	f.sim.Core().SetFaults(cloudsim.Faults{ErrorRate: 1})
	if r := f.do(t, "DELETE", "/v1/pods/x", key, ""); r.status != 500 || strings.HasPrefix(r.body, "{") {
		t.Errorf("v1 500: %+v", r)
	}
	r = f.do(t, "GET", "/v2/catalog/gpus", key, "")
	if p := decode[runpodv2.ErrorResponse](t, r); r.status != 500 || p.Status != 500 {
		t.Errorf("v2 500: %+v", r)
	}

	f.sim.Core().SetFaults(cloudsim.Faults{Down: true})
	if r := f.do(t, "GET", "/v1/pods/x", key, ""); r.status != 503 {
		t.Errorf("down: %+v", r)
	}

	c := f.sim.Core().Counters()
	if c.Requests["GET /v1/pods"] != 2 || c.Requests["DELETE /v1/pods/{podId}"] != 1 || c.Requests["GET /v1/pods/{podId}"] != 1 || c.RateLimited != 3 || c.Injected != 2 {
		t.Errorf("counters %+v", c)
	}
}

func TestCreateErrors(t *testing.T) {
	f := newFixture(t, cloudsim.Config{Quota: 2})
	for _, tc := range []struct{ body, text string }{
		{`{"gpuTypeIds":["NVIDIA Imaginary"],"gpuCount":1}`, "unknown GPU type"},
		{`{"gpuTypeIds":["NVIDIA A40"],"dataCenterIds":["MARS-1"]}`, "unknown data center"},
		{`{"gpuTypeIds":["NVIDIA A40"],"gpuCount":0}`, "gpuCount"},
		{`{"gpuCount":1}`, "gpuTypeIds"},
		{`not json`, "not valid JSON"},
		{`{"gpuTypeIds":["NVIDIA H100 80GB HBM3"],"dataCenterIds":["EU-RO-1"]}`, rpsim.MsgNoCapacity},               // capacity 0
		{`{"gpuTypeIds":["NVIDIA H100 80GB HBM3"],"dataCenterIds":["US-KS-2"],"gpuCount":16}`, rpsim.MsgNoCapacity}, // too big
		{`{"gpuTypeIds":["NVIDIA A40"],"dataCenterIds":["US-GA-1"],"interruptible":true}`, rpsim.MsgNoCapacity},     // no spot
	} {
		r := f.create(t, tc.body)
		if r.status != 400 || !strings.Contains(r.body, tc.text) || !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") {
			t.Errorf("create %s: %+v, want 400 mentioning %q", tc.body, r, tc.text)
		}
	}
	for range 2 {
		if r := f.create(t, `{"name":"a","gpuTypeIds":["NVIDIA A40"]}`); r.status != 201 {
			t.Fatalf("create: %+v", r)
		}
	}
	if r := f.create(t, `{"name":"a","gpuTypeIds":["NVIDIA A40"]}`); r.status != 400 || r.body != rpsim.MsgQuota {
		t.Errorf("over quota: %+v", r)
	}
	if n := f.sim.Core().Counters().Launches["a"]; n != 2 {
		t.Errorf("launches of a: %d", n)
	}
}

func TestPodLifecycle(t *testing.T) {
	f := newFixture(t, cloudsim.Config{BootDelay: time.Minute, TerminateDelay: 30 * time.Second})
	userData := "#cloud-config\n"
	r := f.create(t, `{"name":"gpur-x-0","gpuTypeIds":["NVIDIA Imaginary","NVIDIA H100 80GB HBM3"],"gpuCount":2,
		"dataCenterIds":["EU-RO-1","US-KS-2"],"interruptible":true,"cloudType":"SECURE","imageName":"img",
		"env":{"TGP_USER_DATA":"`+base64.StdEncoding.EncodeToString([]byte(userData))+`"}}`)
	if r.status != 400 {
		t.Fatalf("a create naming an unknown type must fail: %+v", r)
	}
	r = f.create(t, `{"name":"gpur-x-0","gpuTypeIds":["NVIDIA H100 80GB HBM3"],"gpuCount":2,
		"dataCenterIds":["EU-RO-1","US-KS-2"],"interruptible":true,"cloudType":"SECURE","imageName":"img",
		"env":{"TGP_USER_DATA":"`+base64.StdEncoding.EncodeToString([]byte(userData))+`"}}`)
	if r.status != 201 {
		t.Fatalf("create: %+v", r)
	}
	pod := decode[runpodv1.Pod](t, r)
	id := *pod.Id
	// EU-RO-1 has no capacity, so the pod lands in US-KS-2, at the spot price.
	if pod.Machine == nil || *pod.Machine.DataCenterId != "US-KS-2" || *pod.Gpu.Count != 2 || *pod.CostPerHr != 2.98 ||
		*pod.DesiredStatus != runpodv1.PodDesiredStatusRUNNING || pod.PublicIp != nil || !*pod.Interruptible {
		t.Fatalf("created pod %s", r.body)
	}
	if e, _ := f.sim.Core().Entry(h100, "US-KS-2"); e.Capacity != 1 {
		t.Errorf("capacity after create %d, want 1", e.Capacity)
	}
	if ms := f.sim.Machines(); len(ms) != 1 || ms[0].UserData != userData || ms[0].Active || !ms[0].Live || ms[0].Region != "US-KS-2" {
		t.Errorf("machines %+v", ms)
	}

	// Without includeMachine there is no machine object.
	if p := decode[runpodv1.Pod](t, f.do(t, "GET", "/v1/pods/"+id, key, "")); p.Machine != nil || p.PublicIp != nil {
		t.Errorf("booting pod %+v", p)
	}
	f.clock.Step(time.Minute)
	p := decode[runpodv1.Pod](t, f.do(t, "GET", "/v1/pods/"+id+"?includeMachine=true", key, ""))
	if p.PublicIp == nil || *p.PublicIp == "" || p.Machine == nil {
		t.Errorf("booted pod %+v", p)
	}
	if ms := f.sim.Machines(); !ms[0].Active {
		t.Errorf("booted machine %+v", ms[0])
	}

	if err := f.sim.Preempt(id); err != nil {
		t.Fatal(err)
	}
	if err := f.sim.Preempt(id); err == nil {
		t.Error("preempting a stopped pod succeeded")
	}
	pods := decode[runpodv1.Pods](t, f.do(t, "GET", "/v1/pods?desiredStatus=EXITED", key, ""))
	if len(pods) != 1 || pods[0].PublicIp != nil || !strings.Contains(*pods[0].LastStatusChange, "Exited") {
		t.Errorf("preempted pods %+v", pods)
	}
	if ms := f.sim.Machines(); ms[0].Active || !ms[0].Live || !ms[0].Preempted || ms[0].NativeState != "EXITED" {
		t.Errorf("preempted machine %+v", ms[0])
	}

	if r := f.do(t, "DELETE", "/v1/pods/"+id, key, ""); r.status != 204 {
		t.Fatalf("delete: %+v", r)
	}
	if e, _ := f.sim.Core().Entry(h100, "US-KS-2"); e.Capacity != 2 {
		t.Errorf("capacity after delete %d, want 2", e.Capacity)
	}
	if r := f.do(t, "DELETE", "/v1/pods/"+id, key, ""); r.status != 204 {
		t.Errorf("delete while terminating: %+v", r)
	}
	if e, _ := f.sim.Core().Entry(h100, "US-KS-2"); e.Capacity != 2 {
		t.Errorf("a second delete returned capacity again: %d", e.Capacity)
	}
	pods = decode[runpodv1.Pods](t, f.do(t, "GET", "/v1/pods?name=gpur-x-0", key, ""))
	if len(pods) != 1 || *pods[0].DesiredStatus != runpodv1.PodDesiredStatusTERMINATED {
		t.Errorf("terminating pods %+v", pods)
	}
	f.clock.Step(30 * time.Second)
	if r := f.do(t, "GET", "/v1/pods/"+id, key, ""); r.status != 404 || r.body != "Pod not found." {
		t.Errorf("get after terminate: %+v", r)
	}
	if r := f.do(t, "DELETE", "/v1/pods/"+id, key, ""); r.status != 404 {
		t.Errorf("delete of a gone pod: %+v", r)
	}
	if r := f.do(t, "GET", "/v1/pods", key, ""); r.body != "[]\n" {
		t.Errorf("list after terminate: %+v", r)
	}
	if ms := f.sim.Machines(); len(ms) != 1 || ms[0].Live || ms[0].NativeState != "TERMINATED" {
		t.Errorf("terminated machines %+v", ms)
	}
	if err := f.sim.Preempt("nope"); err == nil {
		t.Error("preempting a missing pod succeeded")
	}
}

func TestCatalog(t *testing.T) {
	f := newFixture(t, cloudsim.Config{})
	for _, q := range []string{"?include=AVAILABILITY", "?product=POD", "?include=OTHER&product=POD", "?include=AVAILABILITY&product=POD&count=0"} {
		if r := f.do(t, "GET", "/v2/catalog/gpus"+q, key, ""); r.status != 400 || r.header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s: %+v", q, r)
		}
	}

	plain := decode[runpodv2.ListGpuTypesResponse](t, f.do(t, "GET", "/v2/catalog/gpus", key, ""))
	if len(plain.Gpus) != 2 || plain.Gpus[0].Availability != nil || plain.Gpus[0].DataCenters != nil {
		t.Fatalf("catalog without availability %+v", plain)
	}
	g := plain.Gpus[0]
	if g.Id != h100 || g.Name != "H100 80GB HBM3" || g.Price.Secure != 2.99 || g.MaxCount.Secure != 8 || !g.Secure {
		t.Errorf("H100 %+v", g)
	}

	levels := func(q string) map[string]string {
		t.Helper()
		resp := decode[runpodv2.ListGpuTypesResponse](t, f.do(t, "GET", "/v2/catalog/gpus?include=AVAILABILITY&product=POD"+q, key, ""))
		out := map[string]string{}
		for _, g := range resp.Gpus {
			out[g.Id] = string(*g.Availability)
			if g.DataCenters != nil {
				for _, dc := range *g.DataCenters {
					out[g.Id+"@"+dc.Id] = string(dc.Availability)
				}
			}
		}
		return out
	}
	got := levels("")
	want := map[string]string{h100: "LOW", h100 + "@US-KS-2": "LOW", h100 + "@EU-RO-1": "NONE", a40: "HIGH", a40 + "@US-GA-1": "HIGH"}
	if len(got) != len(want) {
		t.Errorf("availability %v, want %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("availability %s = %q, want %q", k, got[k], v)
		}
	}
	// Only US-KS-2 has 4-GPU H100 machines; with none free, the data
	// centers are omitted altogether.
	f.sim.Core().SetCapacity(h100, "US-KS-2", 0)
	if got := levels("&count=4"); got[h100] != "NONE" || len(got) != 3 {
		t.Errorf("availability at 4 GPUs %v", got)
	}
	if got := levels("&cloud=COMMUNITY"); got[a40] != "NONE" {
		t.Errorf("community availability %v", got)
	}
}

func TestGraphQLLowestPrice(t *testing.T) {
	f := newFixture(t, cloudsim.Config{})
	query := `{"query":"query { gpuTypes { id one: lowestPrice(input: {gpuCount: 1, secureCloud: true}) { minimumBidPrice uninterruptablePrice stockStatus } big: lowestPrice(input:{gpuCount:4}) { minimumBidPrice } huge: lowestPrice(input:{gpuCount:16}) { stockStatus } } }"}`
	r := f.do(t, "POST", "/graphql", key, query)
	if r.status != 200 {
		t.Fatalf("%+v", r)
	}
	var raw struct {
		Data struct {
			GPUTypes []map[string]json.RawMessage `json:"gpuTypes"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(r.body), &raw); err != nil || len(raw.Data.GPUTypes) != 2 {
		t.Fatalf("%s: %v", r.body, err)
	}
	h := raw.Data.GPUTypes[0]
	if string(h["id"]) != `"`+h100+`"` ||
		string(h["one"]) != `{"gpuTypeId":"NVIDIA H100 80GB HBM3","minimumBidPrice":1.29,"stockStatus":"Low","uninterruptablePrice":2.99}` ||
		string(h["big"]) != `{"gpuTypeId":"NVIDIA H100 80GB HBM3","minimumBidPrice":1.49,"stockStatus":"Low","uninterruptablePrice":2.99}` ||
		string(h["huge"]) != "null" {
		t.Errorf("H100 quotes %s", r.body)
	}
	if a := raw.Data.GPUTypes[1]; string(a["one"]) != `{"gpuTypeId":"NVIDIA A40","minimumBidPrice":null,"stockStatus":"High","uninterruptablePrice":0.35}` {
		t.Errorf("A40 quotes %s", r.body)
	}

	for body, text := range map[string]string{
		`{"query":"{ gpuTypes { id lowestPrice(input: {secureCloud: true}) { stockStatus } } }"}`: "gpuCount",
		`{"query":"{ myself { id } }"}`: "only gpuTypes",
		`{}`:                            "Must provide query string",
	} {
		if r := f.do(t, "POST", "/graphql", key, body); !strings.Contains(r.body, `"errors"`) || !strings.Contains(r.body, text) {
			t.Errorf("%s: %+v", body, r)
		}
	}
}
