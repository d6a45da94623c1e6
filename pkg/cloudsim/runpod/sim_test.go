package runpod_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/nodeagent"
	rpsim "github.com/solanyn/gpu-operator/pkg/cloudsim/runpod"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod/runpodv2"
	"github.com/solanyn/gpu-operator/pkg/providers/spectest"
)

const (
	key  = "sim-key"
	h100 = "NVIDIA H100 80GB HBM3"
	a40  = "NVIDIA A40"
)

type fixture struct {
	sim   *rpsim.Server
	clock *clocktesting.FakeClock
	// url serves through spectest's middleware: every request must be one
	// RunPod's REST v2 document allows, and every answer, errors included,
	// must match it. raw serves the simulator as is, for requests the
	// document forbids (the simulator must refuse them the way RunPod does).
	url, raw string
}

func newFixture(t *testing.T, cfg cloudsim.Config) *fixture {
	t.Helper()
	cfg.APIKey = key
	if cfg.Catalog == nil {
		cfg.Catalog = []cloudsim.CatalogEntry{
			{InstanceType: h100, GPUs: 8, Region: "US-KS-2", OnDemandPrice: 2.99, SpotPrice: 1.49, Capacity: 2},
			{InstanceType: h100, GPUs: 2, Region: "EU-RO-1", OnDemandPrice: 3.29, Capacity: 0},
			{InstanceType: a40, GPUs: 4, Region: "US-GA-1", OnDemandPrice: 0.35, Capacity: -1},
		}
	}
	clk := clocktesting.NewFakeClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	f := &fixture{sim: rpsim.New(cfg, clk), clock: clk}
	checked := httptest.NewServer(spectest.Load(t, providers.RunPod).Middleware(t, f.sim))
	t.Cleanup(checked.Close)
	raw := httptest.NewServer(f.sim)
	t.Cleanup(raw.Close)
	f.url, f.raw = checked.URL, raw.URL
	return f
}

type response struct {
	status int
	header http.Header
	body   string
}

func (f *fixture) send(t *testing.T, base, method, path, k, body string) response {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, base+path, r)
	if err != nil {
		t.Fatal(err)
	}
	if k != "" {
		req.Header.Set("Authorization", "Bearer "+k)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
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

// do sends a request the spec allows, through the validating middleware.
func (f *fixture) do(t *testing.T, method, path, k, body string) response {
	t.Helper()
	return f.send(t, f.url, method, path, k, body)
}

// doRaw sends a request straight to the simulator.
func (f *fixture) doRaw(t *testing.T, method, path, body string) response {
	t.Helper()
	return f.send(t, f.raw, method, path, key, body)
}

func decode[T any](t *testing.T, r response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.body), &v); err != nil {
		t.Fatalf("decoding %q: %v", r.body, err)
	}
	return v
}

// wantProblem checks an RFC 9457 problem answer.
func wantProblem(t *testing.T, what string, r response, status int, detail string) runpodv2.ErrorResponse {
	t.Helper()
	if r.status != status || r.header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("%s: %d %s %q, want a %d problem", what, r.status, r.header.Get("Content-Type"), r.body, status)
	}
	p := decode[runpodv2.ErrorResponse](t, r)
	if p.Status != status || p.Title != http.StatusText(status) || !strings.Contains(p.Detail, detail) {
		t.Errorf("%s: problem %+v, want status %d and a detail with %q", what, p, status, detail)
	}
	return p
}

const createBody = `{"name":"gpur-a-0","image":"vllm/vllm-openai:v0.6.3","args":"--model x","env":{"A":"1"},` +
	`"ports":["8000/http","22/tcp"],"gpu":{"id":"NVIDIA H100 80GB HBM3","count":2},"cloud":"COMMUNITY","dataCenterIds":["US-KS-2"]}`

func TestSimulatorImplementsSimulator(t *testing.T) {
	var s cloudsim.Simulator = newFixture(t, cloudsim.Config{}).sim
	if s.Provider() != providers.RunPod {
		t.Errorf("provider %q", s.Provider())
	}
}

func TestGateErrors(t *testing.T) {
	f := newFixture(t, cloudsim.Config{RequestsPerSecond: 100})
	wantProblem(t, "wrong key", f.do(t, http.MethodGet, "/v2/pods", "wrong", ""), 401, "invalid bearer token")
	r := f.send(t, f.raw, http.MethodGet, "/v2/pods", "", "")
	wantProblem(t, "no key", r, 401, "missing bearer token")

	ok := f.do(t, http.MethodGet, "/v2/pods", key, "")
	if ok.status != 200 || ok.header.Get("RateLimit-Policy") != `"minute";q=6000;w=60` || ok.header.Get("RateLimit") == "" {
		t.Errorf("list: %d, RateLimit-Policy %q, RateLimit %q", ok.status, ok.header.Get("RateLimit-Policy"), ok.header.Get("RateLimit"))
	}

	f.sim.Core().SetFaults(cloudsim.Faults{RateLimitRate: 1, RetryAfter: 3 * time.Second})
	r = f.do(t, http.MethodGet, "/v2/pods", key, "")
	wantProblem(t, "429", r, 429, "rate limit exceeded for the minute window")
	if r.header.Get("Retry-After") != "3" || r.header.Get("RateLimit") != `"minute";r=0;t=3` {
		t.Errorf("429 headers %v", r.header)
	}
	f.sim.Core().SetFaults(cloudsim.Faults{ErrorRate: 1})
	wantProblem(t, "500", f.do(t, http.MethodPost, "/v2/pods", key, createBody), 500, "")
	f.sim.Core().SetFaults(cloudsim.Faults{Down: true})
	wantProblem(t, "503", f.do(t, http.MethodDelete, "/v2/pods/x", key, ""), 503, "")
	wantProblem(t, "no such path", f.doRaw(t, http.MethodGet, "/v1/pods", ""), 404, "")
}

func TestCreateRecordsTheBody(t *testing.T) {
	f := newFixture(t, cloudsim.Config{BootDelay: time.Minute})
	r := f.do(t, http.MethodPost, "/v2/pods", key, createBody)
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	p := decode[runpodv2.Pod](t, r)
	if p.Status != runpodv2.PROVISIONING || p.Name != "gpur-a-0" || p.Image != "vllm/vllm-openai:v0.6.3" || p.Args != "--model x" ||
		p.Env["A"] != "1" || !slices.Equal(p.Ports, []string{"8000/http", "22/tcp"}) || p.Cloud != runpodv2.CloudCOMMUNITY ||
		p.Gpu == nil || p.Gpu.Id != h100 || *p.Gpu.Count != 2 || *p.DataCenterId != "US-KS-2" {
		t.Errorf("created %+v", p)
	}
	if bodies := f.sim.CreateBodies(); len(bodies) != 1 || string(bodies[0]) != createBody {
		t.Errorf("recorded %s, want the body as sent", bodies)
	}
	ms := f.sim.Machines()
	if len(ms) != 1 || !ms[0].Container || ms[0].Active || !ms[0].Live || ms[0].GPUs != 2 || f.sim.Core().Counters().Launches["gpur-a-0"] != 1 {
		t.Errorf("machines %+v", ms)
	}
}

func TestCreateErrors(t *testing.T) {
	f := newFixture(t, cloudsim.Config{Quota: 1})
	// Bodies the spec forbids: 422 with each violation in errors.
	for body, violation := range map[string]string{
		`{"name":"x","image":"i","gpu":{"id":"NVIDIA A40"},"interruptible":true}`: "interruptible",
		`{"name":"","image":"i","gpu":{"id":"NVIDIA A40"}}`:                       "$.name",
		`{"name":"x","gpu":{"id":"NVIDIA A40"}}`:                                  "'image'",
		`{"name":"x","image":"i","gpu":{"id":"NVIDIA A40","count":0}}`:            "$.gpu.count",
		`{"name":"x","image":"i","gpu":{"id":"NVIDIA A40"},"ports":["22"]}`:       "$.ports[0]",
		`{"name":"x","image":"i","gpu":{"id":"NVIDIA A40"},"ports":["0/tcp"]}`:    "$.ports[0]",
		`{"name":"x","image":"i","gpu":{"id":"NVIDIA A40"},"cloud":"SPOT"}`:       "$.cloud",
		`{"name":"x","image":"i","gpu":{"id":"NVIDIA A40"},"args":["a","b"]}`:     "args",
		`not json`: "$",
	} {
		p := wantProblem(t, body, f.doRaw(t, http.MethodPost, "/v2/pods", body), 422, "Request validation failed.")
		if p.Errors == nil || !strings.Contains(strings.Join(*p.Errors, "\n"), violation) {
			t.Errorf("%s: errors %v lack %q", body, p.Errors, violation)
		}
	}
	// Bodies the spec allows that RunPod rejects.
	for body, detail := range map[string]string{
		`{"name":"x","image":"i"}`:                                                      "exactly one of gpu or cpu",
		`{"name":"x","image":"i","gpu":{"id":"NVIDIA B9000"}}`:                          `unknown GPU type "NVIDIA B9000"`,
		`{"name":"x","image":"i","gpu":{"id":"NVIDIA A40"},"dataCenterIds":["MARS-1"]}`: `unknown data center "MARS-1"`,
		// EU-RO-1 has no capacity; US-GA-1 has no 8-GPU A40 machine.
		`{"name":"x","image":"i","gpu":{"id":"NVIDIA H100 80GB HBM3"},"dataCenterIds":["EU-RO-1"]}`: rpsim.MsgNoCapacity,
		`{"name":"x","image":"i","gpu":{"id":"NVIDIA A40","count":8}}`:                              rpsim.MsgNoCapacity,
	} {
		wantProblem(t, body, f.do(t, http.MethodPost, "/v2/pods", key, body), 400, detail)
	}
	if r := f.do(t, http.MethodPost, "/v2/pods", key, createBody); r.status != 201 {
		t.Fatalf("first pod: %d %s", r.status, r.body)
	}
	wantProblem(t, "over quota", f.do(t, http.MethodPost, "/v2/pods", key, createBody), 402, "insufficient balance")
	if n := f.sim.Core().Counters().Launches; len(n) != 1 {
		t.Errorf("launches %v, want only the first pod", n)
	}
}

func TestFailAfterCreate(t *testing.T) {
	f := newFixture(t, cloudsim.Config{})
	f.sim.FailAfterCreate(1)
	wantProblem(t, "create", f.do(t, http.MethodPost, "/v2/pods", key, createBody), 500, "")
	if r := f.do(t, http.MethodPost, "/v2/pods", key, createBody); r.status != 201 {
		t.Errorf("second create: %d", r.status)
	}
	list := decode[runpodv2.ListPodsResponse](t, f.do(t, http.MethodGet, "/v2/pods", key, ""))
	if len(list.Pods) != 2 || f.sim.Core().Counters().Launches["gpur-a-0"] != 2 {
		t.Errorf("pods %+v, want both creates to have made a pod", list.Pods)
	}
}

func TestPodLifecycle(t *testing.T) {
	f := newFixture(t, cloudsim.Config{TerminateDelay: time.Minute})
	f.sim.SetDelays(10*time.Second, 20*time.Second)
	id := decode[runpodv2.Pod](t, f.do(t, http.MethodPost, "/v2/pods", key, createBody)).Id
	get := func() runpodv2.Pod {
		t.Helper()
		return decode[runpodv2.Pod](t, f.do(t, http.MethodGet, "/v2/pods/"+id, key, ""))
	}
	if p := get(); p.Status != runpodv2.PROVISIONING || p.Runtime.Ports != nil || p.Cost != 0 {
		t.Errorf("new pod %+v", p)
	}
	f.clock.Step(10 * time.Second)
	if p := get(); p.Status != runpodv2.STARTING || p.Runtime.Ports != nil {
		t.Errorf("starting pod %+v", p)
	}
	f.clock.Step(20 * time.Second)
	p := get()
	if p.Status != runpodv2.RUNNING || p.Runtime.Ports == nil || len(*p.Runtime.Ports) != 2 || p.Cost != 2*2.99 || p.StartedAt == nil ||
		!slices.Equal(p.Actions, []runpodv2.PodAction{runpodv2.Stop, runpodv2.Restart, runpodv2.Terminate}) {
		t.Fatalf("running pod %+v", p)
	}
	for i, want := range []struct {
		port  int
		proto string
	}{{8000, "http"}, {22, "tcp"}} {
		rp := (*p.Runtime.Ports)[i]
		if *rp.Private != want.port || *rp.Type != want.proto || *rp.Ip == "" || *rp.Public == 0 {
			t.Errorf("runtime port %d: %+v", i, rp)
		}
	}
	if p.Ssh.Direct.Host != *(*p.Runtime.Ports)[1].Ip {
		t.Errorf("ssh.direct %+v", p.Ssh.Direct)
	}
	if ms := f.sim.Machines(); !ms[0].Active || !ms[0].Container || ms[0].NativeState != "RUNNING" {
		t.Errorf("running machine %+v", ms[0])
	}

	// Actions: an invalid one is 409; stop, start, restart.
	action := func(a string) response {
		return f.do(t, http.MethodPost, "/v2/pods/"+id+"/action", key, `{"action":"`+a+`"}`)
	}
	wantProblem(t, "start a running pod", action("start"), 409, "not valid")
	if p := decode[runpodv2.Pod](t, action("stop")); p.Status != runpodv2.EXITED || p.Cost != 0 {
		t.Errorf("stopped %+v", p)
	}
	if p := decode[runpodv2.Pod](t, action("start")); p.Status != runpodv2.PROVISIONING {
		t.Errorf("started %+v", p)
	}
	f.clock.Step(30 * time.Second)
	if p := decode[runpodv2.Pod](t, action("restart")); p.Status != runpodv2.STARTING {
		t.Errorf("restarted %+v", p)
	}

	// Preempt: RunPod stops the pod on its own.
	if err := f.sim.Preempt(id); err != nil {
		t.Fatal(err)
	}
	if err := f.sim.Preempt(id); err == nil {
		t.Error("preempting a stopped pod succeeded")
	}
	if ms := f.sim.Machines(); !ms[0].Preempted || ms[0].Active || !ms[0].Live || ms[0].NativeState != "EXITED" {
		t.Errorf("preempted machine %+v", ms[0])
	}

	// Delete: TERMINATED for TerminateDelay, then gone.
	if r := f.do(t, http.MethodDelete, "/v2/pods/"+id, key, ""); r.status != http.StatusNoContent || r.body != "" {
		t.Fatalf("delete: %d %q", r.status, r.body)
	}
	wantProblem(t, "second delete", f.do(t, http.MethodDelete, "/v2/pods/"+id, key, ""), 404, rpsim.MsgNotFound)
	if p := get(); p.Status != runpodv2.TERMINATED {
		t.Errorf("deleted pod %+v", p)
	}
	f.clock.Step(time.Minute)
	wantProblem(t, "get after the delay", f.do(t, http.MethodGet, "/v2/pods/"+id, key, ""), 404, rpsim.MsgNotFound)
	if list := decode[runpodv2.ListPodsResponse](t, f.do(t, http.MethodGet, "/v2/pods", key, "")); len(list.Pods) != 0 {
		t.Errorf("list after the delay: %+v", list.Pods)
	}
	if ms := f.sim.Machines(); ms[0].Live || ms[0].NativeState != "TERMINATED" {
		t.Errorf("terminated machine %+v", ms[0])
	}
}

func TestActionTerminateAndFail(t *testing.T) {
	f := newFixture(t, cloudsim.Config{})
	id := decode[runpodv2.Pod](t, f.do(t, http.MethodPost, "/v2/pods", key, createBody)).Id
	if err := f.sim.Fail(id); err != nil {
		t.Fatal(err)
	}
	if p := decode[runpodv2.Pod](t, f.do(t, http.MethodGet, "/v2/pods/"+id, key, "")); p.Status != runpodv2.ERROR ||
		!slices.Equal(p.Actions, []runpodv2.PodAction{runpodv2.Start, runpodv2.Terminate}) {
		t.Errorf("failed pod %+v", p)
	}
	if r := f.do(t, http.MethodPost, "/v2/pods/"+id+"/action", key, `{"action":"terminate"}`); r.status != http.StatusNoContent {
		t.Errorf("terminate action: %d %s", r.status, r.body)
	}
	wantProblem(t, "action on a deleted pod", f.do(t, http.MethodPost, "/v2/pods/"+id+"/action", key, `{"action":"start"}`), 404, "")
	wantProblem(t, "unknown action", f.doRaw(t, http.MethodPost, "/v2/pods/"+id+"/action", `{"action":"pause"}`), 422, "")
	// Capacity comes back when pods go: the H100 entry in US-KS-2 had 2.
	for i := range 2 {
		if r := f.do(t, http.MethodPost, "/v2/pods", key, createBody); r.status != 201 {
			t.Fatalf("create %d after the delete: %d %s", i, r.status, r.body)
		}
	}
	wantProblem(t, "third", f.do(t, http.MethodPost, "/v2/pods", key, createBody), 400, rpsim.MsgNoCapacity)
}

func TestCatalog(t *testing.T) {
	f := newFixture(t, cloudsim.Config{})
	plain := decode[runpodv2.ListGpuTypesResponse](t, f.do(t, http.MethodGet, "/v2/catalog/gpus", key, ""))
	if len(plain.Gpus) != 2 || plain.Gpus[0].Id != h100 || plain.Gpus[0].Price.Secure != 2.99 || plain.Gpus[0].Price.Community != 2.99 ||
		plain.Gpus[0].MaxCount.Secure != 8 || plain.Gpus[0].Memory != 80 || !plain.Gpus[0].Secure || !plain.Gpus[0].Community ||
		plain.Gpus[0].DataCenters != nil || plain.Gpus[0].Availability != nil {
		t.Errorf("catalog without availability %+v", plain.Gpus)
	}
	for _, cloud := range []string{"SECURE", "COMMUNITY"} {
		r := f.do(t, http.MethodGet, "/v2/catalog/gpus?include=AVAILABILITY&product=POD&cloud="+cloud, key, "")
		got := decode[runpodv2.ListGpuTypesResponse](t, r)
		h := got.Gpus[0]
		if *h.Availability != runpodv2.LOW || len(*h.DataCenters) != 2 || (*h.DataCenters)[0].Availability != runpodv2.LOW ||
			(*h.DataCenters)[1].Availability != runpodv2.NONE || *got.Gpus[1].Availability != runpodv2.HIGH {
			t.Errorf("%s availability %+v", cloud, got.Gpus)
		}
	}
	// For 4 GPUs only the 8-GPU H100 entry counts.
	got := decode[runpodv2.ListGpuTypesResponse](t, f.do(t, http.MethodGet, "/v2/catalog/gpus?include=AVAILABILITY&product=POD&count=4", key, ""))
	if h := got.Gpus[0]; len(*h.DataCenters) != 1 || (*h.DataCenters)[0].Id != "US-KS-2" {
		t.Errorf("count=4: %+v", h.DataCenters)
	}
	f.sim.Core().SetCapacity(h100, "US-KS-2", 0)
	got = decode[runpodv2.ListGpuTypesResponse](t, f.do(t, http.MethodGet, "/v2/catalog/gpus?include=AVAILABILITY&product=POD", key, ""))
	if h := got.Gpus[0]; *h.Availability != runpodv2.NONE || h.DataCenters != nil {
		t.Errorf("sold out everywhere: %+v, want NONE and no dataCenters", h)
	}
	wantProblem(t, "availability without product", f.do(t, http.MethodGet, "/v2/catalog/gpus?include=AVAILABILITY", key, ""), 400, "product")
	wantProblem(t, "product without availability", f.do(t, http.MethodGet, "/v2/catalog/gpus?product=POD", key, ""), 400, "product")
	wantProblem(t, "count without availability", f.do(t, http.MethodGet, "/v2/catalog/gpus?count=2", key, ""), 400, "count")
}

// A running pod is a container: the node agent, which plays kubelet for
// simulated VMs, registers no Node for it.
func TestNodeAgentRegistersNoNodeForPods(t *testing.T) {
	f := newFixture(t, cloudsim.Config{})
	if r := f.do(t, http.MethodPost, "/v2/pods", key, createBody); r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	if ms := f.sim.Machines(); len(ms) != 1 || !ms[0].Active {
		t.Fatalf("machines %+v, want one running pod", ms)
	}
	kube := fake.NewClientset()
	agent := &nodeagent.Agent{Kube: kube, Simulators: []cloudsim.Simulator{f.sim}, Clock: f.clock}
	if err := agent.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	nodes, err := kube.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{})
	if err != nil || len(nodes.Items) != 0 {
		t.Errorf("nodes %v (%v), want none for a container", nodes.Items, err)
	}
}
