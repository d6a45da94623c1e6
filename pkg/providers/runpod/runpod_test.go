package runpod_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	rpsim "github.com/solanyn/gpu-operator/pkg/cloudsim/runpod"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod"
	"github.com/solanyn/gpu-operator/pkg/providers/spectest"
)

const (
	h100   = "NVIDIA H100 80GB HBM3"
	rtx    = "NVIDIA GeForce RTX 4090"
	a40    = "NVIDIA A40"
	l40s   = "NVIDIA L40S"
	rtx370 = "NVIDIA GeForce RTX 3070" // not mapped to a canonical type
	apiKey = "rp_test_secret_key"
)

// testCatalog has prices per GPU, as RunPod quotes them. Spot prices are
// set to show they are ignored: RunPod sells no spot.
func testCatalog() []cloudsim.CatalogEntry {
	return []cloudsim.CatalogEntry{
		{InstanceType: h100, GPUs: 8, Region: "US-KS-2", OnDemandPrice: 2.99, SpotPrice: 1.49, Capacity: -1},
		{InstanceType: h100, GPUs: 8, Region: "US-CA-2", OnDemandPrice: 2.99, SpotPrice: 1.49, Capacity: -1},
		{InstanceType: rtx, GPUs: 2, Region: "EU-RO-1", OnDemandPrice: 0.44, SpotPrice: 0.22, Capacity: 0},
		{InstanceType: rtx, GPUs: 2, Region: "US-TX-3", OnDemandPrice: 0.44, SpotPrice: 0.22, Capacity: 5},
		{InstanceType: a40, GPUs: 3, Region: "US-GA-1", OnDemandPrice: 0.35, Capacity: 3},
		{InstanceType: a40, GPUs: 3, Region: "XX-YY-1", OnDemandPrice: 0.35, Capacity: 3}, // unmapped data center
		{InstanceType: l40s, GPUs: 2, Region: "US-IL-1", OnDemandPrice: 0.86, Capacity: 4},
		{InstanceType: l40s, GPUs: 4, Region: "EU-SE-1", OnDemandPrice: 0.86, Capacity: 0},
		{InstanceType: rtx370, GPUs: 1, Region: "EU-RO-1", OnDemandPrice: 0.13, Capacity: -1},
	}
}

type env struct {
	sim     *rpsim.Server
	adapter *runpod.Adapter
	clock   *clocktesting.FakeClock
	url     string // the simulator's base URL
	// served receives "METHOD path" after the simulator has answered a call.
	served chan string
}

// newEnv runs the simulator on a loopback server and points an adapter at
// it. Every exchange goes through spectest's transport, which fails the
// test on any request or response that RunPod's official REST v2 document
// (../shared/provider-specs/runpod/rest-v2-openapi.json) does not allow.
func newEnv(t *testing.T, cfg cloudsim.Config, mutate func(*runpod.Config)) *env {
	t.Helper()
	if cfg.Catalog == nil {
		cfg.Catalog = testCatalog()
	}
	clk := clocktesting.NewFakeClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	e := &env{sim: rpsim.New(cfg, clk), clock: clk, served: make(chan string, 64)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.sim.ServeHTTP(w, r)
		select {
		case e.served <- r.Method + " " + r.URL.Path:
		default:
		}
	}))
	t.Cleanup(srv.Close)
	e.url = srv.URL
	spec := spectest.Load(t, providers.RunPod)
	acfg := runpod.Config{
		APIURL:            srv.URL,
		Key:               func() string { return apiKey },
		HTTPClient:        &http.Client{Transport: spec.Transport(t, srv.Client().Transport)},
		RequestsPerSecond: 1000,
		Clock:             clk,
	}
	if mutate != nil {
		mutate(&acfg)
	}
	a, err := runpod.New(acfg)
	if err != nil {
		t.Fatal(err)
	}
	e.adapter = a
	return e
}

// rawCall sends one request straight to the simulator (not through the
// adapter) with the test key.
func (e *env) rawCall(t *testing.T, method, path, body string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+apiKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

type offerKey struct {
	typ   string
	count int
	dc    string
}

func TestOffers(t *testing.T) {
	e := newEnv(t, cloudsim.Config{APIKey: apiKey}, nil)
	offers, err := e.adapter.Offers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[offerKey]providers.Offer{}
	for _, o := range offers {
		k := offerKey{o.InstanceType, o.GPUCount, o.ProviderRegion}
		if _, dup := got[k]; dup {
			t.Errorf("duplicate offer %+v", k)
		}
		got[k] = o
	}
	type want struct {
		price     float64
		available bool
	}
	expected := map[offerKey]want{}
	add := func(typ, dc string, maxCount int, perGPU float64, available bool) {
		for n := 1; n <= maxCount; n++ {
			expected[offerKey{typ, n, dc}] = want{perGPU * float64(n), available}
		}
	}
	// Every count up to the type's largest pod (maxCount is per type: the
	// largest entry of any data center).
	add(h100, "US-KS-2", 8, 2.99, true)
	add(h100, "US-CA-2", 8, 2.99, true)
	add(rtx, "US-TX-3", 2, 0.44, true)
	add(rtx, "EU-RO-1", 2, 0.44, false) // capacity 0: availability NONE
	add(a40, "US-GA-1", 3, 0.35, true)
	add(l40s, "US-IL-1", 4, 0.86, true)
	add(l40s, "EU-SE-1", 4, 0.86, false)

	if len(got) != len(expected) {
		t.Errorf("got %d offers, want %d", len(got), len(expected))
	}
	for k, w := range expected {
		o, ok := got[k]
		if !ok {
			t.Errorf("missing offer %+v", k)
			continue
		}
		if diff := o.HourlyPrice - w.price; diff > 1e-9 || diff < -1e-9 {
			t.Errorf("%+v: price %v, want %v (whole machine)", k, o.HourlyPrice, w.price)
		}
		if o.Available != w.available {
			t.Errorf("%+v: available %v, want %v", k, o.Available, w.available)
		}
		if o.Provider != providers.RunPod || o.PriceSource != providers.PriceSourceAPI || o.Region != runpod.Regions[k.dc] ||
			o.GPUType != runpod.GPUTypes[k.typ] || o.Capacity != providers.OnDemand || o.Kind != providers.Container {
			t.Errorf("%+v: bad normalization %+v", k, o)
		}
	}
	if o := got[offerKey{h100, 8, "US-CA-2"}]; o.GPUType != "H100" || o.Region != "us-west-1" || o.HourlyPrice != 23.92 {
		t.Errorf("8x H100 in US-CA-2 = %+v", o)
	}
	c := e.sim.Core().Counters()
	if c.Requests["GET /v2/catalog/gpus"] != 1 || len(c.Requests) != 1 {
		t.Errorf("Offers made calls %v, want one catalog call", c.Requests)
	}
}

// The catalog is asked for pod availability in the adapter's cloud; the
// community tier is opt-in.
func TestOffersAskForTheCloud(t *testing.T) {
	for _, cloud := range []runpod.Cloud{"", runpod.CommunityCloud} {
		t.Run(string(cloud), func(t *testing.T) {
			var query string
			e := newEnv(t, cloudsim.Config{APIKey: apiKey}, func(c *runpod.Config) {
				c.Cloud = cloud
				next := c.HTTPClient.Transport
				c.HTTPClient = &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
					query = r.URL.RawQuery
					return next.RoundTrip(r)
				})}
			})
			if _, err := e.adapter.Offers(context.Background()); err != nil {
				t.Fatal(err)
			}
			want := "cloud=SECURE&include=AVAILABILITY&product=POD"
			if cloud == runpod.CommunityCloud {
				want = "cloud=COMMUNITY&include=AVAILABILITY&product=POD"
			}
			if q, err := url.ParseQuery(query); err != nil || q.Encode() != want {
				t.Errorf("catalog query %q, want %q", query, want)
			}
		})
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func container() *providers.ContainerSpec {
	return &providers.ContainerSpec{
		Image: "vllm/vllm-openai:v0.6.3",
		Args:  []string{"--model", "meta-llama/Llama-3.1-8B", "--served-model-name", "it's mine"},
		Env:   map[string]string{"HF_TOKEN": "hf_secret", "MODE": "serve"},
		Ports: []providers.Port{{Port: 8000, Protocol: "http"}, {Port: 22, Protocol: "tcp"}},
	}
}

func launchReq(name string, typ, dc string, n int) providers.LaunchRequest {
	return providers.LaunchRequest{
		Name:      name,
		Offer:     providers.Offer{Provider: providers.RunPod, InstanceType: typ, GPUCount: n, ProviderRegion: dc, Capacity: providers.OnDemand, Kind: providers.Container},
		Container: container(),
	}
}

// A container launch is one createPod whose body is exactly what REST v2
// takes: image, args as one string, env as an object, ports as
// "port/protocol", the GPU nested, the cloud and the data center.
func TestLaunchSendsTheContainer(t *testing.T) {
	for _, cloud := range []runpod.Cloud{runpod.SecureCloud, runpod.CommunityCloud} {
		t.Run(string(cloud), func(t *testing.T) {
			e := newEnv(t, cloudsim.Config{APIKey: apiKey}, func(c *runpod.Config) { c.Cloud = cloud })
			req := launchReq(providers.MachineNamePrefix+"ctr-0", h100, "US-CA-2", 2)
			req.UserData = "#cloud-config\n" // never sent: a pod runs its image
			req.Tags = map[string]string{"tgp.solanyn.com/request": "x"}
			inst, err := e.adapter.Launch(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			bodies := e.sim.CreateBodies()
			if len(bodies) != 1 {
				t.Fatalf("simulator received %d creates, want 1", len(bodies))
			}
			var got map[string]any
			if err := json.Unmarshal(bodies[0], &got); err != nil {
				t.Fatal(err)
			}
			want := map[string]any{
				"name":          req.Name,
				"image":         "vllm/vllm-openai:v0.6.3",
				"args":          `--model meta-llama/Llama-3.1-8B --served-model-name 'it'\''s mine'`,
				"env":           map[string]any{"HF_TOKEN": "hf_secret", "MODE": "serve"},
				"ports":         []any{"8000/http", "22/tcp"},
				"gpu":           map[string]any{"id": h100, "count": float64(2)},
				"cloud":         string(cloud),
				"dataCenterIds": []any{"US-CA-2"},
			}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("create body\n %v\nwant\n %v", got, want)
			}
			if inst.ID == "" || inst.Name != req.Name || inst.InstanceType != h100 || inst.ProviderRegion != "US-CA-2" ||
				inst.State != providers.StatePending || inst.NativeState != "PROVISIONING" || inst.Spot {
				t.Errorf("launched %+v", inst)
			}
			ms := e.sim.Machines()
			if len(ms) != 1 || !ms[0].Container || ms[0].GPUs != 2 || ms[0].UserData != "" || ms[0].Spot {
				t.Errorf("simulator machines %+v, want one 2-GPU container", ms)
			}
		})
	}
}

// RunPod runs no VMs: a launch without a container is invalid and sends
// nothing, as is a container RunPod cannot take.
func TestLaunchInvalidSendsNothing(t *testing.T) {
	e := newEnv(t, cloudsim.Config{APIKey: apiKey}, nil)
	base := launchReq(providers.MachineNamePrefix+"bad-0", h100, "US-CA-2", 1)
	for name, mutate := range map[string]func(*providers.LaunchRequest){
		"no container": func(r *providers.LaunchRequest) { r.Container, r.UserData = nil, "#cloud-config\n" },
		"no image":     func(r *providers.LaunchRequest) { r.Container.Image = " " },
		"no name":      func(r *providers.LaunchRequest) { r.Name = "" },
		"zero GPUs":    func(r *providers.LaunchRequest) { r.Offer.GPUCount = 0 },
		"port 0":       func(r *providers.LaunchRequest) { r.Container.Ports = []providers.Port{{Port: 0, Protocol: "tcp"}} },
		"udp":          func(r *providers.LaunchRequest) { r.Container.Ports = []providers.Port{{Port: 53, Protocol: "udp"}} },
		"twice a port": func(r *providers.LaunchRequest) {
			r.Container.Ports = []providers.Port{{Port: 22}, {Port: 22, Protocol: "TCP"}}
		},
		"unnamed env": func(r *providers.LaunchRequest) { r.Container.Env = map[string]string{"": "x"} },
	} {
		req := base
		req.Container = container()
		mutate(&req)
		_, err := e.adapter.Launch(context.Background(), req)
		if !providers.IsClass(err, providers.ClassInvalid) {
			t.Errorf("%s: %v, want ClassInvalid", name, err)
		}
	}
	if n := len(e.sim.Core().Counters().Requests); n != 0 {
		t.Errorf("invalid launches reached the simulator: %v", e.sim.Core().Counters().Requests)
	}
}

func TestLaunchListTerminate(t *testing.T) {
	e := newEnv(t, cloudsim.Config{APIKey: apiKey, BootDelay: time.Minute, TerminateDelay: time.Minute}, nil)
	ctx := context.Background()
	req := launchReq(providers.MachineNamePrefix+"abc-0", h100, "US-KS-2", 2)
	inst, err := e.adapter.Launch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}

	// Someone else's pod on the same account is not the operator's.
	if resp := e.rawCall(t, http.MethodPost, "/v2/pods", `{"name":"notebook","image":"runpod/pytorch","gpu":{"id":"NVIDIA A40"}}`); resp.StatusCode != http.StatusCreated {
		t.Fatalf("creating a foreign pod: %v", resp.Status)
	}

	list := func() []providers.Instance {
		t.Helper()
		got, err := e.adapter.Instances(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	for _, step := range []struct {
		native string
		state  providers.InstanceState
	}{{"PROVISIONING", providers.StatePending}, {"STARTING", providers.StateBooting}} {
		got := list()
		if len(got) != 1 || got[0].ID != inst.ID || got[0].NativeState != step.native || got[0].State != step.state ||
			got[0].PublicIP != "" || got[0].Ports != nil {
			t.Fatalf("instances while %s: %+v", step.native, got)
		}
		if ms := e.sim.Machines(); ms[0].Active || !ms[0].Live {
			t.Fatalf("machine while %s: %+v", step.native, ms[0])
		}
		e.clock.Step(30 * time.Second)
	}
	got := list()
	if len(got) != 1 || got[0].State != providers.StateRunning || got[0].PublicIP == "" || len(got[0].Ports) != 2 {
		t.Fatalf("instances after boot: %+v", got)
	}
	for i, p := range got[0].Ports {
		if p.Port != req.Container.Ports[i].Port || p.Protocol != req.Container.Ports[i].Protocol || p.PublicIP != got[0].PublicIP || p.PublicPort == 0 {
			t.Errorf("port mapping %d: %+v, want %d/%s on %s", i, p, req.Container.Ports[i].Port, req.Container.Ports[i].Protocol, got[0].PublicIP)
		}
	}
	if ms := e.sim.Machines(); !ms[0].Active || !ms[0].Container {
		t.Errorf("running machine %+v, want an active container", ms[0])
	}

	if err := e.adapter.Terminate(ctx, inst.ID); err != nil {
		t.Fatal(err)
	}
	if got := list(); len(got) != 1 || got[0].State != providers.StateTerminated {
		t.Fatalf("instances after terminate: %+v", got)
	}
	e.clock.Step(time.Minute)
	if got := list(); len(got) != 0 {
		t.Fatalf("instances after the pod is gone: %+v", got)
	}
	for _, m := range e.sim.Machines() {
		if m.Name == req.Name && (m.Live || m.NativeState != "TERMINATED") {
			t.Errorf("terminated machine %+v", m)
		}
	}
}

// Terminating a pod that is already gone succeeds, whatever the 404 says,
// and still asks RunPod (so the answer is RunPod's, not a memory's).
func TestTerminateGonePod(t *testing.T) {
	e := newEnv(t, cloudsim.Config{APIKey: apiKey}, nil)
	ctx := context.Background()
	inst, err := e.adapter.Launch(ctx, launchReq(providers.MachineNamePrefix+"gone-0", rtx, "US-TX-3", 1))
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{inst.ID, inst.ID, "pod-never-existed"} {
		if err := e.adapter.Terminate(ctx, id); err != nil {
			t.Errorf("Terminate(%s): %v", id, err)
		}
	}
	if n := e.sim.Core().Counters().Requests["DELETE /v2/pods/{id}"]; n != 3 {
		t.Errorf("%d deletes reached RunPod, want 3", n)
	}
	// The second and third answers were 404 problem documents.
	if resp := e.rawCall(t, http.MethodDelete, "/v2/pods/"+inst.ID, ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("DELETE of a deleted pod: %s, want 404", resp.Status)
	}
}

// The adapter keeps no launch memory: a second Launch of a name is a second
// create, and both pods are listed under the name (deduplication by name is
// the controller's).
func TestLaunchSameNameTwiceCreatesTwice(t *testing.T) {
	e := newEnv(t, cloudsim.Config{APIKey: apiKey}, nil)
	ctx := context.Background()
	req := launchReq(providers.MachineNamePrefix+"twice-0", rtx, "US-TX-3", 1)
	first, err := e.adapter.Launch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.adapter.Launch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if first.ID == second.ID || second.Name != req.Name {
		t.Errorf("launches returned %+v and %+v, want two pods", first, second)
	}
	c := e.sim.Core().Counters()
	if c.Launches[req.Name] != 2 || c.Requests["POST /v2/pods"] != 2 || c.Requests["GET /v2/pods"] != 0 {
		t.Errorf("launches %v, requests %v; want two creates and no list", c.Launches, c.Requests)
	}
	got, err := e.adapter.Instances(ctx)
	if err != nil || len(got) != 2 || got[0].Name != req.Name || got[1].Name != req.Name {
		t.Errorf("instances %+v, %v; want both pods named %s", got, err, req.Name)
	}
}

// RunPod has answered 500 after creating the pod. The Launch is
// ClassTransient (ambiguous), and listing then shows exactly one live pod
// under the name, which the controller adopts instead of launching again.
func TestCreateThen500IsTransientAndListedOnce(t *testing.T) {
	e := newEnv(t, cloudsim.Config{APIKey: apiKey}, nil)
	ctx := context.Background()
	req := launchReq(providers.MachineNamePrefix+"ambiguous-0", a40, "US-GA-1", 1)
	e.sim.FailAfterCreate(1)
	_, err := e.adapter.Launch(ctx, req)
	var pe *providers.Error
	if !errors.As(err, &pe) || pe.Class != providers.ClassTransient || pe.HTTPStatus != http.StatusInternalServerError {
		t.Fatalf("create answered 500: %v, want ClassTransient with HTTP 500", err)
	}
	got, err := e.adapter.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var live []providers.Instance
	for _, in := range got {
		if in.Name == req.Name && in.State.Alive() {
			live = append(live, in)
		}
	}
	if len(live) != 1 || e.sim.Core().Counters().Launches[req.Name] != 1 {
		t.Errorf("after a 500 the list shows %+v (%d launches), want exactly one live pod named %s", live, e.sim.Core().Counters().Launches[req.Name], req.Name)
	}
}

// A create that times out may still have made the pod: the Launch is
// ClassTransient, and the pod is listed under its name.
func TestLaunchTimeoutIsTransientAndListed(t *testing.T) {
	e := newEnv(t, cloudsim.Config{APIKey: apiKey}, func(c *runpod.Config) { c.CallTimeout = 100 * time.Millisecond })
	ctx := context.Background()
	req := launchReq(providers.MachineNamePrefix+"slow-0", h100, "US-CA-2", 1)

	// The simulator holds the answer (on its fake clock) past the adapter's
	// deadline, then creates the pod anyway.
	e.sim.Core().SetFaults(cloudsim.Faults{Latency: time.Hour})
	_, err := e.adapter.Launch(ctx, req)
	if !providers.IsClass(err, providers.ClassTransient) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow launch: %v, want a transient deadline error", err)
	}
	e.waitServed(t, "POST /v2/pods")
	if n := e.sim.Core().Counters().Launches[req.Name]; n != 1 {
		t.Fatalf("the timed-out create made %d pods, want 1", n)
	}

	e.sim.Core().SetFaults(cloudsim.Faults{})
	got, err := e.adapter.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ms := e.sim.Machines(); len(ms) != 1 || len(got) != 1 || got[0].ID != ms[0].ID || got[0].Name != req.Name {
		t.Errorf("listed %+v, sim has %+v; want the pod listed as %s", got, ms, req.Name)
	}
}

func (e *env) waitServed(t *testing.T, call string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case got := <-e.served:
			if got == call {
				return
			}
		case <-timeout:
			t.Fatalf("the simulator never finished %s", call)
		}
	}
}

// A pod RunPod stops (EXITED) is interrupted; one in ERROR has failed.
func TestStoppedAndFailedPods(t *testing.T) {
	e := newEnv(t, cloudsim.Config{APIKey: apiKey}, nil)
	ctx := context.Background()
	stopped, err := e.adapter.Launch(ctx, launchReq(providers.MachineNamePrefix+"stop-0", rtx, "US-TX-3", 1))
	if err != nil {
		t.Fatal(err)
	}
	failed, err := e.adapter.Launch(ctx, launchReq(providers.MachineNamePrefix+"fail-0", rtx, "US-TX-3", 1))
	if err != nil {
		t.Fatal(err)
	}
	fine, err := e.adapter.Launch(ctx, launchReq(providers.MachineNamePrefix+"fine-0", rtx, "US-TX-3", 1))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.sim.Preempt(stopped.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.sim.Fail(failed.ID); err != nil {
		t.Fatal(err)
	}
	got, err := e.adapter.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]string{}
	for _, i := range got {
		states[i.ID] = string(i.State) + "/" + i.NativeState
	}
	want := map[string]string{stopped.ID: "interrupted/EXITED", failed.ID: "failed/ERROR", fine.ID: "running/RUNNING"}
	if !maps.Equal(states, want) {
		t.Errorf("states %v, want %v", states, want)
	}
	for _, m := range e.sim.Machines() {
		if m.ID == stopped.ID && (!m.Preempted || m.Active || !m.Live) {
			t.Errorf("stopped machine %+v", m)
		}
	}
	// Both still exist (and bill) until terminated.
	for _, id := range []string{stopped.ID, failed.ID} {
		if err := e.adapter.Terminate(ctx, id); err != nil {
			t.Errorf("Terminate(%s): %v", id, err)
		}
	}
}

// Each error class, from the simulator's real problem documents.
func TestErrorClasses(t *testing.T) {
	ctx := context.Background()
	name := providers.MachineNamePrefix + "err-0"
	tests := []struct {
		name   string
		cfg    cloudsim.Config
		key    string
		call   func(*env) error
		class  providers.ErrorClass
		status int
		text   string // in the message
	}{
		{
			name: "unauthorized", cfg: cloudsim.Config{APIKey: "other"},
			call:  func(e *env) error { _, err := e.adapter.Instances(ctx); return err },
			class: providers.ClassUnauthorized, status: 401, text: "Unauthorized: invalid bearer token",
		},
		{
			name: "unauthorized catalog", cfg: cloudsim.Config{APIKey: "other"},
			call:  func(e *env) error { _, err := e.adapter.Offers(ctx); return err },
			class: providers.ClassUnauthorized, status: 401,
		},
		{
			name: "capacity", cfg: cloudsim.Config{},
			call: func(e *env) error {
				_, err := e.adapter.Launch(ctx, launchReq(name, rtx, "EU-RO-1", 1))
				return err
			},
			class: providers.ClassCapacity, status: 400, text: "no longer any instances available",
		},
		{
			name: "no machine that large", cfg: cloudsim.Config{},
			call: func(e *env) error {
				_, err := e.adapter.Launch(ctx, launchReq(name, rtx, "US-TX-3", 4))
				return err
			},
			class: providers.ClassCapacity, status: 400,
		},
		{
			name: "balance", cfg: cloudsim.Config{Quota: 1},
			call: func(e *env) error {
				if _, err := e.adapter.Launch(ctx, launchReq(name, h100, "US-KS-2", 1)); err != nil {
					return fmt.Errorf("first launch: %w", err)
				}
				_, err := e.adapter.Launch(ctx, launchReq(name+"-2", h100, "US-KS-2", 1))
				return err
			},
			class: providers.ClassQuota, status: 402, text: "Payment Required: insufficient balance",
		},
		{
			name: "invalid GPU type", cfg: cloudsim.Config{},
			call: func(e *env) error {
				_, err := e.adapter.Launch(ctx, launchReq(name, "NVIDIA Imaginary 9000", "US-KS-2", 1))
				return err
			},
			class: providers.ClassInvalid, status: 400, text: "unknown GPU type",
		},
		{
			name: "invalid data center", cfg: cloudsim.Config{},
			call: func(e *env) error {
				_, err := e.adapter.Launch(ctx, launchReq(name, h100, "MARS-1", 1))
				return err
			},
			class: providers.ClassInvalid, status: 400, text: "unknown data center",
		},
		{
			name: "not found", cfg: cloudsim.Config{},
			call:  func(e *env) error { _, err := e.adapter.Instance(ctx, "nope"); return err },
			class: providers.ClassNotFound, status: 404, text: "Not Found: pod not found",
		},
		{
			name: "rate limited", cfg: cloudsim.Config{Faults: cloudsim.Faults{RateLimitRate: 1, RetryAfter: 3 * time.Second}},
			call:  func(e *env) error { _, err := e.adapter.Instances(ctx); return err },
			class: providers.ClassRateLimited, status: 429, text: "rate limit exceeded",
		},
		{
			name: "server error", cfg: cloudsim.Config{Faults: cloudsim.Faults{ErrorRate: 1}},
			call:  func(e *env) error { _, err := e.adapter.Offers(ctx); return err },
			class: providers.ClassTransient, status: 500, text: "Internal Server Error",
		},
		{
			name: "server error on create", cfg: cloudsim.Config{Faults: cloudsim.Faults{ErrorRate: 1}},
			call: func(e *env) error {
				_, err := e.adapter.Launch(ctx, launchReq(name, h100, "US-KS-2", 1))
				return err
			},
			class: providers.ClassTransient, status: 500,
		},
		{
			name: "down", cfg: cloudsim.Config{Faults: cloudsim.Faults{Down: true}},
			call:  func(e *env) error { return e.adapter.Terminate(ctx, "pod1") },
			class: providers.ClassTransient, status: 503,
		},
		{
			name: "missing key", cfg: cloudsim.Config{}, key: "-",
			call:  func(e *env) error { _, err := e.adapter.Instances(ctx); return err },
			class: providers.ClassUnauthorized, status: 0,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key := tc.key
			if key == "" {
				key = apiKey
			}
			if key == "-" {
				key = ""
			}
			e := newEnv(t, tc.cfg, func(c *runpod.Config) { c.Key = func() string { return key } })
			err := tc.call(e)
			var pe *providers.Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %v (%T), want *providers.Error", err, err)
			}
			if pe.Class != tc.class || pe.HTTPStatus != tc.status || pe.Provider != providers.RunPod || pe.Operation == "" {
				t.Errorf("got %s / HTTP %d (%v), want %s / HTTP %d", pe.Class, pe.HTTPStatus, err, tc.class, tc.status)
			}
			if !strings.Contains(pe.Message, tc.text) {
				t.Errorf("message %q lacks %q", pe.Message, tc.text)
			}
			if tc.class == providers.ClassRateLimited && pe.RetryAfter != 3*time.Second {
				t.Errorf("RetryAfter %v, want 3s", pe.RetryAfter)
			}
			if strings.Contains(err.Error(), apiKey) {
				t.Errorf("error %q leaks the key", err)
			}
		})
	}
}

// A 422 (the body does not match the contract) is ClassInvalid: the
// simulator's answer to a body the adapter would never send.
func TestValidationProblemIsInvalid(t *testing.T) {
	e := newEnv(t, cloudsim.Config{APIKey: apiKey}, nil)
	resp := e.rawCall(t, http.MethodPost, "/v2/pods", `{"name":"gpur-x","image":"a","gpu":{"id":"NVIDIA A40"},"bogus":1}`)
	var body [4096]byte
	n, _ := resp.Body.Read(body[:])
	err := runpod.ClassifyResponse(resp.StatusCode, resp.Header, body[:n], now)
	if resp.StatusCode != http.StatusUnprocessableEntity || resp.Header.Get("Content-Type") != "application/problem+json" ||
		!providers.IsClass(err, providers.ClassInvalid) || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("unknown field: %s %s -> %v", resp.Status, body[:n], err)
	}
}

func TestTimeoutIsTransient(t *testing.T) {
	e := newEnv(t, cloudsim.Config{Faults: cloudsim.Faults{Latency: time.Hour}}, func(c *runpod.Config) { c.CallTimeout = 50 * time.Millisecond })
	_, err := e.adapter.Instances(context.Background())
	var pe *providers.Error
	if !errors.As(err, &pe) || pe.Class != providers.ClassTransient || pe.HTTPStatus != 0 || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("timeout gave %v", err)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	e := newEnv(t, cloudsim.Config{Faults: cloudsim.Faults{RateLimitRate: 1, RetryAfter: 2 * time.Second}}, nil)
	ctx := context.Background()
	_, err := e.adapter.Instances(ctx)
	if d, ok := providers.RetryAfterOf(err); !providers.IsClass(err, providers.ClassRateLimited) || !ok || d != 2*time.Second {
		t.Fatalf("first call: %v", err)
	}
	e.sim.Core().SetFaults(cloudsim.Faults{})
	before := e.sim.Core().Counters().Requests

	e.clock.Step(500 * time.Millisecond)
	for _, call := range []func() error{
		func() error { _, err := e.adapter.Instances(ctx); return err },
		func() error { _, err := e.adapter.Offers(ctx); return err },
		func() error {
			_, err := e.adapter.Launch(ctx, launchReq(providers.MachineNamePrefix+"x-0", h100, "US-KS-2", 1))
			return err
		},
		func() error { return e.adapter.Terminate(ctx, "pod1") },
	} {
		err := call()
		if d, ok := providers.RetryAfterOf(err); !providers.IsClass(err, providers.ClassRateLimited) || !ok || d != 1500*time.Millisecond {
			t.Errorf("call while blocked: %v, want RateLimited with 1.5s left", err)
		}
	}
	if after := e.sim.Core().Counters().Requests; fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("calls reached the simulator while blocked: %v -> %v", before, after)
	}

	e.clock.Step(1500 * time.Millisecond)
	if _, err := e.adapter.Instances(ctx); err != nil {
		t.Errorf("after Retry-After: %v", err)
	}
}

// The simulator sends RunPod's RateLimit headers; a 429 without Retry-After
// waits for the exhausted window's reset.
func TestRateLimitHeaderWithoutRetryAfter(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("RateLimit-Policy", `"minute";q=60;w=60, "hour";q=3000;w=3600`)
		w.Header().Set("RateLimit", `"minute";r=0;t=7, "hour";r=2800;t=1812`)
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusTooManyRequests)
		fmt.Fprint(w, `{"title":"Too Many Requests","status":429,"detail":"rate limit exceeded for the minute window"}`)
	}))
	defer srv.Close()
	a, err := runpod.New(runpod.Config{APIURL: srv.URL, Key: func() string { return apiKey }, HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Instances(context.Background())
	if d, ok := providers.RetryAfterOf(err); !providers.IsClass(err, providers.ClassRateLimited) || !ok || d != 7*time.Second {
		t.Errorf("429 with RateLimit only: %v, want RateLimited for 7s", err)
	}
}

// The key is read on every call, so a rotated Secret takes effect at once.
func TestKeyReadOnEveryCall(t *testing.T) {
	key := "old"
	e := newEnv(t, cloudsim.Config{APIKey: "new"}, func(c *runpod.Config) { c.Key = func() string { return key } })
	if _, err := e.adapter.Instances(context.Background()); !providers.IsClass(err, providers.ClassUnauthorized) {
		t.Fatalf("old key: %v", err)
	}
	key = "new"
	if _, err := e.adapter.Instances(context.Background()); err != nil {
		t.Errorf("new key: %v", err)
	}
}

// Whatever RunPod puts in an error body, the key never reaches the error.
func TestErrorsNeverCarryTheKey(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusBadRequest)
		_ = json.NewEncoder(w).Encode(map[string]any{"title": "Bad Request", "status": 400, "detail": "bad request from " + r.Header.Get("Authorization")})
	}))
	defer srv.Close()
	a, err := runpod.New(runpod.Config{APIURL: srv.URL, Key: func() string { return apiKey }, HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Instances(context.Background())
	if !providers.IsClass(err, providers.ClassInvalid) || strings.Contains(err.Error(), apiKey) || !strings.Contains(err.Error(), "[redacted]") {
		t.Errorf("error %q", err)
	}
}

func TestNew(t *testing.T) {
	if _, err := runpod.New(runpod.Config{}); err == nil {
		t.Error("New without a key func succeeded")
	}
	if _, err := runpod.New(runpod.Config{Key: func() string { return "k" }, Cloud: "SPOT"}); err == nil {
		t.Error("New with an unknown cloud succeeded")
	}
	a, err := runpod.New(runpod.Config{Key: func() string { return "k" }})
	if err != nil {
		t.Fatal(err)
	}
	if a.Cloud() != runpod.SecureCloud || a.Name() != providers.RunPod {
		t.Errorf("default adapter: cloud %q, name %q", a.Cloud(), a.Name())
	}
	// Containers run no user data, so no VM request is ever sent to RunPod.
	if f := providers.BootstrapFormats(a); len(f) != 0 {
		t.Errorf("BootstrapFormats = %v, want none", f)
	}
}

func TestClientSideRateLimit(t *testing.T) {
	e := newEnv(t, cloudsim.Config{}, func(c *runpod.Config) {
		c.RequestsPerSecond = 1 // burst 1: the second call must wait a second
		c.CallTimeout = 100 * time.Millisecond
	})
	ctx := context.Background()
	if _, err := e.adapter.Instances(ctx); err != nil {
		t.Fatal(err)
	}
	_, err := e.adapter.Instances(ctx)
	if !providers.IsClass(err, providers.ClassRateLimited) {
		t.Errorf("second call within the limit's interval: %v", err)
	}
	if n := e.sim.Core().Counters().Requests["GET /v2/pods"]; n != 1 {
		t.Errorf("%d calls reached the simulator, want 1", n)
	}
}
