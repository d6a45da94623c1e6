package runpod_test

import (
	"context"
	"errors"
	"fmt"
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
	"github.com/solanyn/gpu-operator/pkg/providers/runpod"
)

const (
	h100   = "NVIDIA H100 80GB HBM3"
	rtx    = "NVIDIA GeForce RTX 4090"
	a40    = "NVIDIA A40"
	l40s   = "NVIDIA L40S"
	rtx370 = "NVIDIA GeForce RTX 3070" // not mapped to a canonical type
	apiKey = "rp_test_secret_key"
)

// testCatalog has prices per GPU, as RunPod quotes them.
func testCatalog() []cloudsim.CatalogEntry {
	return []cloudsim.CatalogEntry{
		{InstanceType: h100, GPUs: 8, Region: "US-KS-2", OnDemandPrice: 2.99, SpotPrice: 1.49, Capacity: -1},
		{InstanceType: h100, GPUs: 8, Region: "US-CA-2", OnDemandPrice: 2.99, SpotPrice: 1.49, Capacity: -1},
		{InstanceType: rtx, GPUs: 2, Region: "EU-RO-1", OnDemandPrice: 0.44, SpotPrice: 0.22, Capacity: 0},
		{InstanceType: rtx, GPUs: 2, Region: "US-TX-3", OnDemandPrice: 0.44, SpotPrice: 0.22, Capacity: 5},
		{InstanceType: a40, GPUs: 4, Region: "US-GA-1", OnDemandPrice: 0.35, Capacity: 3},
		{InstanceType: a40, GPUs: 4, Region: "XX-YY-1", OnDemandPrice: 0.35, Capacity: 3}, // unmapped data center
		// Small L40S machines are free, big ones are not.
		{InstanceType: l40s, GPUs: 2, Region: "US-IL-1", OnDemandPrice: 0.86, Capacity: 4},
		{InstanceType: l40s, GPUs: 8, Region: "EU-SE-1", OnDemandPrice: 0.86, Capacity: 0},
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

func newEnv(t *testing.T, cfg cloudsim.Config, mutate func(*runpod.Config)) *env {
	t.Helper()
	if cfg.Catalog == nil {
		cfg.Catalog = testCatalog()
	}
	clk := clocktesting.NewFakeClock(time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC))
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
	acfg := runpod.Config{
		RESTURL:           srv.URL + "/v1",
		APIURL:            srv.URL,
		Key:               func() string { return apiKey },
		HTTPClient:        srv.Client(),
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

type offerKey struct {
	typ   string
	count int
	dc    string
	cap   providers.CapacityType
}

func TestOffers(t *testing.T) {
	e := newEnv(t, cloudsim.Config{APIKey: apiKey}, nil)
	offers, err := e.adapter.Offers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[offerKey]providers.Offer{}
	for _, o := range offers {
		k := offerKey{o.InstanceType, o.GPUCount, o.ProviderRegion, o.Capacity}
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
	add := func(typ, dc string, counts []int, onDemand, spot float64, available func(n int) bool) {
		for _, n := range counts {
			expected[offerKey{typ, n, dc, providers.OnDemand}] = want{onDemand * float64(n), available(n)}
			if spot > 0 {
				expected[offerKey{typ, n, dc, providers.Spot}] = want{spot * float64(n), available(n)}
			}
		}
	}
	always := func(int) bool { return true }
	never := func(int) bool { return false }
	add(h100, "US-KS-2", []int{1, 2, 4, 8}, 2.99, 1.49, always)
	add(h100, "US-CA-2", []int{1, 2, 4, 8}, 2.99, 1.49, always)
	add(rtx, "US-TX-3", []int{1, 2}, 0.44, 0.22, always)
	add(rtx, "EU-RO-1", []int{1, 2}, 0.44, 0.22, never) // capacity 0: availability NONE
	add(a40, "US-GA-1", []int{1, 2, 4}, 0.35, 0, always)
	// The catalog's per-data-center availability is for one GPU; the spot
	// quote says nothing with 4 or 8 GPUs is free anywhere.
	add(l40s, "US-IL-1", []int{1, 2, 4, 8}, 0.86, 0, func(n int) bool { return n <= 2 })
	add(l40s, "EU-SE-1", []int{1, 2, 4, 8}, 0.86, 0, never)

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
		if o.Provider != providers.RunPod || o.PriceSource != providers.PriceSourceAPI || o.Region != runpod.Regions[k.dc] || o.GPUType != runpod.GPUTypes[k.typ] {
			t.Errorf("%+v: bad normalization %+v", k, o)
		}
	}
	if o := got[offerKey{h100, 8, "US-CA-2", providers.Spot}]; o.GPUType != "H100" || o.Region != "us-west-1" || o.HourlyPrice != 11.92 {
		t.Errorf("8x H100 spot in US-CA-2 = %+v", o)
	}
	c := e.sim.Core().Counters()
	if c.Requests["GET /v2/catalog/gpus"] != 1 || c.Requests["POST /graphql"] != 1 || len(c.Requests) != 2 {
		t.Errorf("Offers made calls %v, want one catalog and one GraphQL call", c.Requests)
	}
}

func TestOffersCappedCounts(t *testing.T) {
	e := newEnv(t, cloudsim.Config{APIKey: apiKey}, func(c *runpod.Config) { c.GPUCounts = []int{3, 1, 3} })
	offers, err := e.adapter.Offers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string][]int{}
	for _, o := range offers {
		if o.Capacity == providers.OnDemand && (o.ProviderRegion == "US-KS-2" || o.ProviderRegion == "US-TX-3") {
			counts[o.InstanceType] = append(counts[o.InstanceType], o.GPUCount)
		}
	}
	// RTX 4090 machines have at most 2 GPUs.
	if fmt.Sprint(counts[h100]) != "[1 3]" || fmt.Sprint(counts[rtx]) != "[1]" {
		t.Errorf("offered counts %v", counts)
	}
}

func launchReq(name string, typ, dc string, n int, capacity providers.CapacityType) providers.LaunchRequest {
	return providers.LaunchRequest{
		Name:     name,
		UserData: "#cloud-config\nhostname: " + name + "\n",
		Offer:    providers.Offer{Provider: providers.RunPod, InstanceType: typ, GPUCount: n, ProviderRegion: dc, Capacity: capacity},
	}
}

func TestLaunchListTerminate(t *testing.T) {
	e := newEnv(t, cloudsim.Config{APIKey: apiKey, BootDelay: time.Minute, TerminateDelay: time.Minute}, nil)
	ctx := context.Background()
	req := launchReq(providers.MachineNamePrefix+"abc-0", h100, "US-KS-2", 2, providers.Spot)
	inst, err := e.adapter.Launch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if inst.ID == "" || inst.Name != req.Name || inst.InstanceType != h100 || inst.ProviderRegion != "US-KS-2" ||
		!inst.Spot || inst.State != providers.StateBooting || inst.NativeState != "RUNNING" || inst.PublicIP != "" {
		t.Fatalf("launched %+v", inst)
	}
	ms := e.sim.Machines()
	if len(ms) != 1 || ms[0].UserData != req.UserData || ms[0].GPUs != 2 || !ms[0].Spot || ms[0].Active {
		t.Fatalf("sim machines %+v", ms)
	}

	// Someone else's pod on the same account is not the operator's.
	other, err := http.NewRequest(http.MethodPost, e.url+"/v1/pods",
		strings.NewReader(`{"name":"notebook","gpuTypeIds":["NVIDIA A40"],"gpuCount":1}`))
	if err != nil {
		t.Fatal(err)
	}
	other.Header.Set("Authorization", "Bearer "+apiKey)
	if resp, err := http.DefaultClient.Do(other); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("creating a foreign pod: %v %v", resp, err)
	}

	list := func() []providers.Instance {
		t.Helper()
		got, err := e.adapter.Instances(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := list(); len(got) != 1 || got[0].ID != inst.ID || got[0].State != providers.StateBooting {
		t.Fatalf("instances while booting: %+v", got)
	}
	e.clock.Step(time.Minute)
	if got := list(); len(got) != 1 || got[0].State != providers.StateRunning || got[0].PublicIP == "" {
		t.Fatalf("instances after boot: %+v", got)
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
	// Terminating again (404 now) succeeds.
	if err := e.adapter.Terminate(ctx, inst.ID); err != nil {
		t.Fatalf("second terminate: %v", err)
	}
	for _, m := range e.sim.Machines() {
		if m.Name == req.Name && (m.Live || m.NativeState != "TERMINATED") {
			t.Errorf("terminated machine %+v", m)
		}
	}
}

// The adapter keeps no launch memory: a second Launch of a name is a second
// create, and both pods are listed under the name (deduplication by name is
// the controller's).
func TestLaunchSameNameTwiceCreatesTwice(t *testing.T) {
	e := newEnv(t, cloudsim.Config{APIKey: apiKey}, nil)
	ctx := context.Background()
	req := launchReq(providers.MachineNamePrefix+"twice-0", rtx, "US-TX-3", 1, providers.OnDemand)
	first, err := e.adapter.Launch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.adapter.Launch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if first.ID == second.ID || first.Spot || second.Name != req.Name {
		t.Errorf("launches returned %+v and %+v, want two on-demand pods", first, second)
	}
	c := e.sim.Core().Counters()
	if c.Launches[req.Name] != 2 || c.Requests["POST /v1/pods"] != 2 || c.Requests["GET /v1/pods"] != 0 {
		t.Errorf("launches %v, requests %v; want two creates and no list", c.Launches, c.Requests)
	}
	got, err := e.adapter.Instances(ctx)
	if err != nil || len(got) != 2 || got[0].Name != req.Name || got[1].Name != req.Name {
		t.Errorf("instances %+v, %v; want both pods named %s", got, err, req.Name)
	}
}

// A create that times out may still have made the pod: the Launch is
// ClassTransient, and the pod is listed under its name, which is where the
// controller finds and adopts it.
func TestLaunchTimeoutIsTransientAndListed(t *testing.T) {
	e := newEnv(t, cloudsim.Config{APIKey: apiKey}, func(c *runpod.Config) { c.CallTimeout = 100 * time.Millisecond })
	ctx := context.Background()
	req := launchReq(providers.MachineNamePrefix+"slow-0", h100, "US-CA-2", 1, providers.OnDemand)

	// The simulator holds the answer (on its fake clock) past the adapter's
	// deadline, then creates the pod anyway.
	e.sim.Core().SetFaults(cloudsim.Faults{Latency: time.Hour})
	_, err := e.adapter.Launch(ctx, req)
	if !providers.IsClass(err, providers.ClassTransient) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow launch: %v, want a transient deadline error", err)
	}
	e.waitServed(t, "POST /v1/pods")
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

// After a 5xx nothing was created; the retry is a plain create, with no list
// call of the adapter's own.
func TestLaunchAfterServerErrorIsPlainCreate(t *testing.T) {
	e := newEnv(t, cloudsim.Config{APIKey: apiKey, Faults: cloudsim.Faults{ErrorRate: 1}}, nil)
	ctx := context.Background()
	req := launchReq(providers.MachineNamePrefix+"flaky-0", a40, "US-GA-1", 1, providers.OnDemand)
	if _, err := e.adapter.Launch(ctx, req); !providers.IsClass(err, providers.ClassTransient) {
		t.Fatalf("launch during 5xx: %v", err)
	}
	e.sim.Core().SetFaults(cloudsim.Faults{})
	if _, err := e.adapter.Launch(ctx, req); err != nil {
		t.Fatal(err)
	}
	c := e.sim.Core().Counters()
	if c.Launches[req.Name] != 1 || c.Requests["POST /v1/pods"] != 2 || c.Requests["GET /v1/pods"] != 0 {
		t.Errorf("launches %v, requests %v", c.Launches, c.Requests)
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

func TestPreemptedSpotPodIsInterrupted(t *testing.T) {
	e := newEnv(t, cloudsim.Config{APIKey: apiKey}, nil)
	ctx := context.Background()
	spot, err := e.adapter.Launch(ctx, launchReq(providers.MachineNamePrefix+"spot-0", rtx, "US-TX-3", 1, providers.Spot))
	if err != nil {
		t.Fatal(err)
	}
	onDemand, err := e.adapter.Launch(ctx, launchReq(providers.MachineNamePrefix+"od-0", rtx, "US-TX-3", 1, providers.OnDemand))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.sim.Preempt(onDemand.ID); err == nil {
		t.Error("preempting an on-demand pod succeeded")
	}
	if err := e.sim.Preempt(spot.ID); err != nil {
		t.Fatal(err)
	}
	got, err := e.adapter.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	states := map[string]providers.InstanceState{}
	for _, i := range got {
		states[i.ID] = i.State
	}
	if states[spot.ID] != providers.StateInterrupted || states[onDemand.ID] != providers.StateRunning {
		t.Errorf("states %v", states)
	}
	for _, m := range e.sim.Machines() {
		if m.ID == spot.ID && (!m.Preempted || m.Active || !m.Live) {
			t.Errorf("preempted machine %+v", m)
		}
	}
}

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
			name: "v1 unauthorized", cfg: cloudsim.Config{APIKey: "other"}, key: apiKey,
			call:  func(e *env) error { _, err := e.adapter.Instances(ctx); return err },
			class: providers.ClassUnauthorized, status: 401, text: "Unauthorized",
		},
		{
			name: "v2 unauthorized (problem+json)", cfg: cloudsim.Config{APIKey: "other"}, key: apiKey,
			call:  func(e *env) error { _, err := e.adapter.Offers(ctx); return err },
			class: providers.ClassUnauthorized, status: 401, text: "Unauthorized: Unauthorized: missing or invalid API key",
		},
		{
			name: "capacity", cfg: cloudsim.Config{},
			call: func(e *env) error {
				_, err := e.adapter.Launch(ctx, launchReq(name, rtx, "EU-RO-1", 1, providers.OnDemand))
				return err
			},
			class: providers.ClassCapacity, status: 400, text: "no longer any instances available",
		},
		{
			name: "spot where none is sold", cfg: cloudsim.Config{},
			call: func(e *env) error {
				_, err := e.adapter.Launch(ctx, launchReq(name, a40, "US-GA-1", 1, providers.Spot))
				return err
			},
			class: providers.ClassCapacity, status: 400,
		},
		{
			name: "quota", cfg: cloudsim.Config{Quota: 1},
			call: func(e *env) error {
				if _, err := e.adapter.Launch(ctx, launchReq(name, h100, "US-KS-2", 1, providers.OnDemand)); err != nil {
					return fmt.Errorf("first launch: %w", err)
				}
				_, err := e.adapter.Launch(ctx, launchReq(name+"-2", h100, "US-KS-2", 1, providers.OnDemand))
				return err
			},
			class: providers.ClassQuota, status: 400, text: "quota",
		},
		{
			name: "invalid GPU type", cfg: cloudsim.Config{},
			call: func(e *env) error {
				_, err := e.adapter.Launch(ctx, launchReq(name, "NVIDIA Imaginary 9000", "US-KS-2", 1, providers.OnDemand))
				return err
			},
			class: providers.ClassInvalid, status: 400, text: "unknown GPU type",
		},
		{
			name: "not found", cfg: cloudsim.Config{},
			call:  func(e *env) error { _, err := e.adapter.Instance(ctx, "nope"); return err },
			class: providers.ClassNotFound, status: 404,
		},
		{
			name: "rate limited", cfg: cloudsim.Config{Faults: cloudsim.Faults{RateLimitRate: 1, RetryAfter: 3 * time.Second}},
			call:  func(e *env) error { _, err := e.adapter.Instances(ctx); return err },
			class: providers.ClassRateLimited, status: 429,
		},
		{
			name: "v2 server error", cfg: cloudsim.Config{Faults: cloudsim.Faults{ErrorRate: 1}},
			call:  func(e *env) error { _, err := e.adapter.Offers(ctx); return err },
			class: providers.ClassTransient, status: 500, text: "Something went wrong",
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

// GraphQL answers errors, authentication included, with HTTP 200.
func TestGraphQLUnauthorizedIsClassified(t *testing.T) {
	e := newEnv(t, cloudsim.Config{APIKey: apiKey}, nil)
	req, err := http.NewRequest(http.MethodPost, e.url+"/graphql", strings.NewReader(`{"query":"{ gpuTypes { id } }"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer wrong")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if _, err := runpod.DecodeQuotes(body); !providers.IsClass(err, providers.ClassUnauthorized) {
		t.Errorf("DecodeQuotes(%s) = %v, want Unauthorized", body, err)
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
			_, err := e.adapter.Launch(ctx, launchReq(providers.MachineNamePrefix+"x-0", h100, "US-KS-2", 1, providers.OnDemand))
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
		http.Error(w, "bad request from "+r.Header.Get("Authorization"), http.StatusBadRequest)
	}))
	defer srv.Close()
	a, err := runpod.New(runpod.Config{RESTURL: srv.URL, APIURL: srv.URL, Key: func() string { return apiKey }, HTTPClient: srv.Client()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.Instances(context.Background())
	if !providers.IsClass(err, providers.ClassInvalid) || strings.Contains(err.Error(), apiKey) || !strings.Contains(err.Error(), "[redacted]") {
		t.Errorf("error %q", err)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := runpod.New(runpod.Config{}); err == nil {
		t.Error("New without a key func succeeded")
	}
	if _, err := runpod.New(runpod.Config{Key: func() string { return "k" }, GPUCounts: []int{1, 0}}); err == nil {
		t.Error("New with a zero GPU count succeeded")
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
	if n := e.sim.Core().Counters().Requests["GET /v1/pods"]; n != 1 {
		t.Errorf("%d calls reached the simulator, want 1", n)
	}
}
