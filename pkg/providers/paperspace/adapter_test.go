package paperspace_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	testclock "k8s.io/utils/clock/testing"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	simpaperspace "github.com/solanyn/gpu-operator/pkg/cloudsim/paperspace"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/paperspace"
	"github.com/solanyn/gpu-operator/pkg/providers/spectest"
)

const testKey = "ps-test-key-0123456789"

// env is an adapter wired to a simulator over real HTTP, both on one fake
// clock. Every exchange goes through spectest's transport, which fails the
// test on any request or response Paperspace's official document
// (../shared/provider-specs/paperspace/openapi.json) does not allow.
type env struct {
	a     *paperspace.Adapter
	sim   *simpaperspace.Server
	clock *testclock.FakeClock
	url   string // the simulator's API root (server URL + "/v1")
	key   atomic.Value
}

// newEnv starts the simulator behind handler middleware wrap (nil: none).
func newEnv(t *testing.T, cfg cloudsim.Config, wrap func(http.Handler) http.Handler) *env {
	t.Helper()
	return newEnvWith(t, cfg, wrap, nil)
}

// newEnvWith is newEnv with the adapter's Config edited by edit.
func newEnvWith(t *testing.T, cfg cloudsim.Config, wrap func(http.Handler) http.Handler, edit func(*paperspace.Config)) *env {
	t.Helper()
	cfg.APIKey = testKey
	e := &env{clock: testclock.NewFakeClock(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))}
	e.sim = simpaperspace.New(cfg, e.clock)
	var h http.Handler = e.sim
	if wrap != nil {
		h = wrap(h)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	e.url = srv.URL + "/v1"
	e.key.Store(testKey)
	transport := srv.Client().Transport
	if wrap == nil {
		// A wrapped simulator answers what Paperspace would not (a proxy's
		// text/plain 502): only the simulator's own answers are checked.
		transport = spectest.Load(t, providers.Paperspace).Transport(t, transport)
	}
	acfg := paperspace.Config{
		BaseURL:           e.url,
		Key:               func() string { return e.key.Load().(string) },
		HTTPClient:        &http.Client{Transport: transport},
		RequestsPerSecond: 1000,
		CallTimeout:       5 * time.Second,
		Clock:             e.clock,
	}
	if edit != nil {
		edit(&acfg)
	}
	a, err := paperspace.New(acfg)
	if err != nil {
		t.Fatal(err)
	}
	e.a = a
	return e
}

func entry(mt, region string, capacity int) cloudsim.CatalogEntry {
	return cloudsim.CatalogEntry{InstanceType: mt, GPUs: simpaperspace.GPUsOf(mt), Region: region, Capacity: capacity}
}

func launchReq(name, mt, region, userData string) providers.LaunchRequest {
	return providers.LaunchRequest{
		Name:     name,
		Offer:    providers.Offer{Provider: providers.Paperspace, InstanceType: mt, ProviderRegion: region, Capacity: providers.OnDemand},
		UserData: userData,
	}
}

func findOffer(offers []providers.Offer, mt, region string) (providers.Offer, bool) {
	for _, o := range offers {
		if o.InstanceType == mt && o.ProviderRegion == region {
			return o, true
		}
	}
	return providers.Offer{}, false
}

func wantClass(t *testing.T, err error, class providers.ErrorClass, status int) *providers.Error {
	t.Helper()
	var pe *providers.Error
	if !errors.As(err, &pe) {
		t.Fatalf("error %v is not a *providers.Error", err)
	}
	if pe.Class != class || pe.HTTPStatus != status {
		t.Fatalf("got class %s status %d (%v), want %s %d", pe.Class, pe.HTTPStatus, err, class, status)
	}
	if strings.Contains(err.Error(), testKey) {
		t.Fatalf("error %q contains the API key", err)
	}
	return pe
}

func TestOffers(t *testing.T) {
	e := newEnv(t, cloudsim.Config{Catalog: []cloudsim.CatalogEntry{
		entry("A100-80Gx4", "ny2", 1),
		entry("H100", "ams1", 0),
		entry("A6000", "ca1", -1),
		entry("RTX4000", "ny2", 5),
	}}, nil)
	offers, err := e.a.Offers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// 19 priced machine types with a canonical GPU (RTX4000 has none) x 3 regions.
	const pairs = 19 * 3
	if len(offers) != pairs {
		t.Fatalf("got %d offers, want %d", len(offers), pairs)
	}
	if n := e.sim.Core().Counters().Requests["GET /v1/machine-availability"]; n != pairs {
		t.Errorf("made %d availability calls, want %d", n, pairs)
	}
	available := 0
	for _, o := range offers {
		if o.Provider != providers.Paperspace || o.Capacity != providers.OnDemand || o.PriceSource != providers.PriceSourceStatic || o.HourlyPrice <= 0 {
			t.Errorf("offer %+v is not a static-priced on-demand Paperspace offer", o)
		}
		if strings.HasPrefix(o.InstanceType, "RTX4000") {
			t.Errorf("offer %s has no canonical GPU", o.ID())
		}
		if o.Available {
			available++
		}
	}
	if available != 2 {
		t.Errorf("%d offers available, want 2 (A100-80Gx4/ny2, A6000/ca1)", available)
	}
	want := []providers.Offer{
		{Provider: "paperspace", InstanceType: "A100-80Gx4", GPUType: "A100-80GB", GPUCount: 4, Region: "us-east-1", ProviderRegion: "ny2",
			Capacity: providers.OnDemand, HourlyPrice: 12.72, Available: true, PriceSource: providers.PriceSourceStatic},
		{Provider: "paperspace", InstanceType: "H100", GPUType: "H100", GPUCount: 1, Region: "eu-west-1", ProviderRegion: "ams1",
			Capacity: providers.OnDemand, HourlyPrice: 5.95, Available: false, PriceSource: providers.PriceSourceStatic},
		{Provider: "paperspace", InstanceType: "A6000", GPUType: "A6000", GPUCount: 1, Region: "us-west-1", ProviderRegion: "ca1",
			Capacity: providers.OnDemand, HourlyPrice: 1.89, Available: true, PriceSource: providers.PriceSourceStatic},
		{Provider: "paperspace", InstanceType: "V100-32Gx2", GPUType: "V100-32GB", GPUCount: 2, Region: "us-east-1", ProviderRegion: "ny2",
			Capacity: providers.OnDemand, HourlyPrice: 4.60, Available: false, PriceSource: providers.PriceSourceStatic},
	}
	for _, w := range want {
		got, ok := findOffer(offers, w.InstanceType, w.ProviderRegion)
		if !ok || got != w {
			t.Errorf("offer %s = %+v, want %+v", w.ID(), got, w)
		}
	}
}

func TestOffersWithConfigMapPrices(t *testing.T) {
	e := newEnv(t, cloudsim.Config{Catalog: []cloudsim.CatalogEntry{entry("H100", "ny2", 1)}}, nil)
	table, err := paperspace.DefaultPriceTable().WithConfigMapData("gpu-system", "paperspace-prices", map[string]string{"H100": " 5.10 ", "A4000x4": "0"})
	if err != nil {
		t.Fatal(err)
	}
	e.a.SetPrices(table)
	offers, err := e.a.Offers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	h100, _ := findOffer(offers, "H100", "ny2")
	if h100.HourlyPrice != 5.10 || h100.PriceSource != providers.PriceSourceStatic || !h100.Available {
		t.Errorf("H100/ny2 = %+v, want the ConfigMap price 5.10, static, available", h100)
	}
	if a6000, _ := findOffer(offers, "A6000", "ny2"); a6000.HourlyPrice != 1.89 {
		t.Errorf("A6000 price %v changed, want 1.89", a6000.HourlyPrice)
	}
	if _, ok := findOffer(offers, "A4000x4", "ny2"); ok {
		t.Error("A4000x4 priced 0 in the ConfigMap still has offers")
	}
	p := e.a.Prices()
	if got := p.SourceOf("H100"); got != "configmap:gpu-system/paperspace-prices" {
		t.Errorf("H100 source %q, want the ConfigMap", got)
	}
	if got := p.SourceOf("A6000"); got != paperspace.DefaultPriceTable().Source {
		t.Errorf("A6000 source %q, want the shipped table's", got)
	}
	if !strings.HasPrefix(p.Source, "configmap:gpu-system/paperspace-prices") {
		t.Errorf("table source %q does not name the ConfigMap", p.Source)
	}
}

func TestLaunchListTerminate(t *testing.T) {
	e := newEnv(t, cloudsim.Config{
		Catalog:        []cloudsim.CatalogEntry{entry("A100-80Gx8", "ny2", 2)},
		BootDelay:      time.Minute,
		TerminateDelay: 30 * time.Second,
	}, nil)
	ctx := context.Background()
	const userData = "#cloud-config\nhostname: gpur-abc-0\n"
	in, err := e.a.Launch(ctx, launchReq("gpur-abc-0", "A100-80Gx8", "ny2", userData))
	if err != nil {
		t.Fatal(err)
	}
	if in.ID == "" || in.Name != "gpur-abc-0" || in.State != providers.StatePending || in.NativeState != "provisioning" ||
		in.InstanceType != "A100-80Gx8" || in.ProviderRegion != "ny2" || in.Spot {
		t.Fatalf("launched %+v", in)
	}
	if _, err := e.a.Launch(ctx, launchReq("someone-elses", "A100-80Gx8", "ny2", "")); err != nil {
		t.Fatal(err)
	}
	ms := e.sim.Machines()
	if len(ms) != 2 || ms[0].UserData != userData || ms[0].GPUs != 8 || ms[1].UserData != "" {
		t.Fatalf("simulated machines %+v", ms)
	}

	list := func() []providers.Instance {
		t.Helper()
		got, err := e.a.Instances(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := list(); len(got) != 1 || got[0].ID != in.ID || got[0].State != providers.StatePending {
		t.Fatalf("instances %+v, want only %s, pending", got, in.ID)
	}
	e.clock.Step(time.Minute)
	if got := list(); len(got) != 1 || got[0].State != providers.StateRunning || got[0].NativeState != "ready" || got[0].PublicIP == "" {
		t.Fatalf("instances after boot %+v, want running with a public IP", got)
	}

	if err := e.a.Terminate(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	if got := list(); len(got) != 1 || got[0].State != providers.StateTerminated {
		t.Fatalf("instances after delete %+v, want it terminated", got)
	}
	if m := e.sim.Machines()[0]; !m.Live || m.Active {
		t.Fatalf("machine during TerminateDelay %+v, want live and inactive", m)
	}
	if err := e.a.Terminate(ctx, in.ID); err != nil {
		t.Fatalf("second terminate: %v", err)
	}
	e.clock.Step(30 * time.Second)
	if got := list(); len(got) != 0 {
		t.Fatalf("instances after TerminateDelay %+v, want none", got)
	}
	if m := e.sim.Machines()[0]; m.Live {
		t.Fatalf("machine %+v still live", m)
	}
	if err := e.a.Terminate(ctx, in.ID); err != nil {
		t.Fatalf("terminate of a gone machine: %v", err)
	}
	if got, _ := e.sim.Core().Entry("A100-80Gx8", "ny2"); got.Capacity != 1 {
		t.Errorf("capacity %d after one of two machines went away, want 1", got.Capacity)
	}
}

// The adapter keeps no launch memory: a second Launch of a name is a second
// startup script and a second machine, both listed under the name
// (deduplication by name is the controller's).
func TestLaunchSameNameTwiceCreatesTwice(t *testing.T) {
	e := newEnv(t, cloudsim.Config{Catalog: []cloudsim.CatalogEntry{entry("H100", "ca1", -1)}}, nil)
	ctx := context.Background()
	req := launchReq("gpur-same-0", "H100", "ca1", "#!/bin/sh\necho hi\n")
	first, err := e.a.Launch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.a.Launch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if second.ID == first.ID {
		t.Fatalf("second launch returned %s again, want a new machine", second.ID)
	}
	c := e.sim.Core().Counters()
	if c.Launches[req.Name] != 2 || c.Requests["POST /v1/machines"] != 2 || c.Requests["POST /v1/startup-scripts"] != 2 ||
		c.Requests["GET /v1/machines"] != 0 {
		t.Fatalf("launches %v requests %v, want two machines, two creates, two scripts, no list", c.Launches, c.Requests)
	}
	for _, m := range e.sim.Machines() {
		if m.UserData != req.UserData {
			t.Errorf("machine %s runs %q, want the launch's user data", m.ID, m.UserData)
		}
	}
	got, err := e.a.Instances(ctx)
	if err != nil || len(got) != 2 || got[0].Name != req.Name || got[1].Name != req.Name {
		t.Fatalf("instances %+v, %v; want both machines named %s", got, err, req.Name)
	}
}

// loseCreateAnswers lets POST /v1/machines reach the simulator but answers
// 502, as a proxy that lost the response would, while lose is set.
func loseCreateAnswers(lose *atomic.Bool) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost && r.URL.Path == "/v1/machines" && lose.Load() {
				next.ServeHTTP(httptest.NewRecorder(), r)
				http.Error(w, "upstream connection reset", http.StatusBadGateway)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// A create whose answer is lost is ClassTransient; the machine it made is
// listed under its name, which is where the controller finds and adopts it.
func TestLaunchLostAnswerIsTransientAndListed(t *testing.T) {
	var lose atomic.Bool
	lose.Store(true)
	e := newEnv(t, cloudsim.Config{Catalog: []cloudsim.CatalogEntry{entry("A6000x2", "ams1", -1)}}, loseCreateAnswers(&lose))
	ctx := context.Background()
	req := launchReq("gpur-lost-0", "A6000x2", "ams1", "")
	_, err := e.a.Launch(ctx, req)
	wantClass(t, err, providers.ClassTransient, http.StatusBadGateway)
	lose.Store(false)

	got, err := e.a.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ms := e.sim.Machines()
	if len(ms) != 1 || len(got) != 1 || got[0].ID != ms[0].ID || got[0].Name != req.Name {
		t.Fatalf("listed %+v, simulator has %+v; want the machine listed as %s", got, ms, req.Name)
	}
	if c := e.sim.Core().Counters(); c.Requests["POST /v1/machines"] != 1 {
		t.Fatalf("requests %v, want one create", c.Requests)
	}
}

// After a 5xx the retry is a plain create, with no list call of the
// adapter's own.
func TestLaunchAfterFailedCreateIsPlainCreate(t *testing.T) {
	e := newEnv(t, cloudsim.Config{Catalog: []cloudsim.CatalogEntry{entry("A5000", "ny2", -1)}}, nil)
	ctx := context.Background()
	req := launchReq("gpur-retry-0", "A5000", "ny2", "")
	if _, err := e.a.Offers(ctx); err != nil { // lists the OS templates
		t.Fatal(err)
	}
	e.sim.Core().SetFaults(cloudsim.Faults{ErrorRate: 1})
	_, err := e.a.Launch(ctx, req)
	wantClass(t, err, providers.ClassTransient, http.StatusInternalServerError)
	e.sim.Core().SetFaults(cloudsim.Faults{})
	if _, err := e.a.Launch(ctx, req); err != nil {
		t.Fatal(err)
	}
	c := e.sim.Core().Counters()
	if c.Launches[req.Name] != 1 || c.Requests["GET /v1/machines"] != 0 || c.Requests["POST /v1/machines"] != 2 || c.Requests["GET /v1/os-templates"] != 1 {
		t.Fatalf("launches %v requests %v, want two creates and no lookup", c.Launches, c.Requests)
	}
}

func TestInstancesFollowsCursor(t *testing.T) {
	e := newEnv(t, cloudsim.Config{Catalog: []cloudsim.CatalogEntry{entry("P4000", "ca1", -1)}}, nil)
	ctx := context.Background()
	const n = 250
	for i := range n {
		if _, err := e.a.Launch(ctx, launchReq(fmt.Sprintf("%spage-%03d", providers.MachineNamePrefix, i), "P4000", "ca1", "")); err != nil {
			t.Fatal(err)
		}
	}
	got, err := e.a.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, in := range got {
		seen[in.ID] = true
	}
	if len(got) != n || len(seen) != n {
		t.Fatalf("listed %d instances (%d distinct), want %d", len(got), len(seen), n)
	}
	if calls := e.sim.Core().Counters().Requests["GET /v1/machines"]; calls != 3 {
		t.Errorf("listing %d machines took %d pages, want 3 of 120", n, calls)
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	e := newEnv(t, cloudsim.Config{}, nil)
	ctx := context.Background()
	e.sim.Core().SetFaults(cloudsim.Faults{RateLimitRate: 1, RetryAfter: 2 * time.Second})
	_, err := e.a.Instances(ctx)
	pe := wantClass(t, err, providers.ClassRateLimited, http.StatusTooManyRequests)
	if pe.RetryAfter != 2*time.Second || pe.Code != "TOO_MANY_REQUESTS" {
		t.Fatalf("first 429: %+v", pe)
	}
	e.sim.Core().SetFaults(cloudsim.Faults{})
	before := e.sim.Core().Counters().Requests

	e.clock.Step(500 * time.Millisecond)
	_, err = e.a.Instances(ctx)
	pe = wantClass(t, err, providers.ClassRateLimited, 0)
	if pe.RetryAfter != 1500*time.Millisecond {
		t.Fatalf("blocked call asks to wait %s, want 1.5s", pe.RetryAfter)
	}
	if err := e.a.Terminate(ctx, "ps1"); !providers.IsClass(err, providers.ClassRateLimited) {
		t.Fatalf("terminate while blocked: %v", err)
	}
	if after := e.sim.Core().Counters().Requests; after["GET /v1/machines"] != before["GET /v1/machines"] || len(after) != len(before) {
		t.Fatalf("blocked calls reached the simulator: %v -> %v", before, after)
	}

	e.clock.Step(1500 * time.Millisecond)
	if _, err := e.a.Instances(ctx); err != nil {
		t.Fatalf("after Retry-After: %v", err)
	}
}

// rawCall sends one request to the simulator and classifies its answer the
// way the adapter does; it also returns the answer's content type.
func rawCall(t *testing.T, method, url, key, body string) (*providers.Error, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode < 400 {
		t.Fatalf("%s %s answered %d %s, want an error", method, url, resp.StatusCode, raw)
	}
	var pe *providers.Error
	if !errors.As(paperspace.ClassifyResponse(resp.StatusCode, resp.Header, raw, time.Now()), &pe) {
		t.Fatal("ClassifyResponse did not return a *providers.Error")
	}
	return pe, resp.Header.Get("Content-Type")
}

func TestSimulatorErrorsAreClassified(t *testing.T) {
	const create = `{"name":"gpur-x-0","machineType":"%s","region":"ny2","templateId":"t17d1a6i","diskSize":100}`
	body := func(mt string) string { return strings.Replace(create, "%s", mt, 1) }
	cases := []struct {
		name         string
		cfg          cloudsim.Config
		faults       cloudsim.Faults
		setup        func(t *testing.T, e *env)
		method, path string
		key, body    string
		class        providers.ErrorClass
		status       int
		code         string
	}{
		{name: "bad key", method: "GET", path: "/machines", key: "wrong", class: providers.ClassUnauthorized, status: 401, code: "UNAUTHORIZED"},
		{name: "rate limited", faults: cloudsim.Faults{RateLimitRate: 1, RetryAfter: 3 * time.Second}, method: "GET", path: "/machines",
			class: providers.ClassRateLimited, status: 429, code: "TOO_MANY_REQUESTS"},
		{name: "injected 500", faults: cloudsim.Faults{ErrorRate: 1}, method: "GET", path: "/machines",
			class: providers.ClassTransient, status: 500, code: "INTERNAL_SERVER_ERROR"},
		{name: "down", faults: cloudsim.Faults{Down: true}, method: "GET", path: "/machines",
			class: providers.ClassTransient, status: 503, code: "SERVICE_UNAVAILABLE"},
		{name: "not found", method: "GET", path: "/machines/ps404", class: providers.ClassNotFound, status: 404, code: "NOT_FOUND"},
		{name: "unknown type", method: "POST", path: "/machines", body: body("Z9000"), class: providers.ClassInvalid, status: 400, code: "BAD_REQUEST"},
		{name: "unknown field", method: "POST", path: "/machines", body: `{"name":"x","bid":1}`, class: providers.ClassInvalid, status: 400, code: "PARSE_ERROR"},
		{name: "no capacity", cfg: cloudsim.Config{Catalog: []cloudsim.CatalogEntry{entry("H100x8", "ny2", 0)}},
			method: "POST", path: "/machines", body: body("H100x8"), class: providers.ClassCapacity, status: 400, code: "BAD_REQUEST"},
		{name: "quota", cfg: cloudsim.Config{Quota: 1, Catalog: []cloudsim.CatalogEntry{entry("H100", "ny2", -1)}},
			setup: func(t *testing.T, e *env) {
				if _, err := e.a.Launch(context.Background(), launchReq("gpur-first-0", "H100", "ny2", "")); err != nil {
					t.Fatal(err)
				}
			},
			method: "POST", path: "/machines", body: body("H100"), class: providers.ClassQuota, status: 403, code: "FORBIDDEN"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.cfg, nil)
			if tc.setup != nil {
				tc.setup(t, e)
			}
			e.sim.Core().SetFaults(tc.faults)
			key := tc.key
			if key == "" {
				key = testKey
			}
			pe, contentType := rawCall(t, tc.method, e.url+tc.path, key, tc.body)
			if pe.Class != tc.class || pe.HTTPStatus != tc.status || pe.Code != tc.code || pe.Message == "" {
				t.Fatalf("classified %+v, want %s %d %s with a message", pe, tc.class, tc.status, tc.code)
			}
			if contentType != "application/json" {
				t.Errorf("content type %q, want application/json", contentType)
			}
			if tc.class == providers.ClassRateLimited && pe.RetryAfter != 3*time.Second {
				t.Errorf("RetryAfter %s, want 3s", pe.RetryAfter)
			}
		})
	}
}

func TestAdapterErrors(t *testing.T) {
	ctx := context.Background()
	t.Run("capacity", func(t *testing.T) {
		e := newEnv(t, cloudsim.Config{Catalog: []cloudsim.CatalogEntry{entry("A4000", "ams1", 0)}}, nil)
		_, err := e.a.Launch(ctx, launchReq("gpur-cap-0", "A4000", "ams1", "x"))
		wantClass(t, err, providers.ClassCapacity, 400)
		if n := len(e.sim.Machines()); n != 0 {
			t.Fatalf("%d machines after a capacity error", n)
		}
	})
	t.Run("quota", func(t *testing.T) {
		e := newEnv(t, cloudsim.Config{Quota: 1, Catalog: []cloudsim.CatalogEntry{entry("A4000", "ams1", -1)}}, nil)
		if _, err := e.a.Launch(ctx, launchReq("gpur-q-0", "A4000", "ams1", "")); err != nil {
			t.Fatal(err)
		}
		_, err := e.a.Launch(ctx, launchReq("gpur-q-1", "A4000", "ams1", ""))
		wantClass(t, err, providers.ClassQuota, 403)
	})
	t.Run("unauthorized", func(t *testing.T) {
		e := newEnv(t, cloudsim.Config{}, nil)
		e.key.Store("rotated-away")
		_, err := e.a.Offers(ctx)
		wantClass(t, err, providers.ClassUnauthorized, 401)
		e.key.Store(testKey)
		if _, err := e.a.Instances(ctx); err != nil {
			t.Fatalf("after the key was restored: %v", err)
		}
	})
	t.Run("no key", func(t *testing.T) {
		e := newEnv(t, cloudsim.Config{}, nil)
		e.key.Store("")
		_, err := e.a.Instances(ctx)
		wantClass(t, err, providers.ClassUnauthorized, 0)
		if n := len(e.sim.Core().Counters().Requests); n != 0 {
			t.Fatalf("a call without a key reached the simulator: %v", e.sim.Core().Counters().Requests)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		e := newEnv(t, cloudsim.Config{}, nil)
		// A GPU template lists A4000, but the simulator sells none.
		_, err := e.a.Launch(ctx, launchReq("gpur-bad-0", "A4000", "ny2", ""))
		wantClass(t, err, providers.ClassInvalid, 400)
		// No template lists Z9000: refused before any script or machine.
		_, err = e.a.Launch(ctx, launchReq("gpur-bad-1", "Z9000", "ny2", "#!/bin/bash\n"))
		wantClass(t, err, providers.ClassInvalid, 0)
		if c := e.sim.Core().Counters().Requests; c["POST /v1/startup-scripts"] != 0 || c["POST /v1/machines"] != 1 {
			t.Fatalf("requests %v, want no script and only the first create", c)
		}
		_, err = e.a.Launch(ctx, launchReq("", "A4000", "ny2", ""))
		wantClass(t, err, providers.ClassInvalid, 0)
	})
	t.Run("down", func(t *testing.T) {
		e := newEnv(t, cloudsim.Config{}, nil)
		e.sim.Core().SetFaults(cloudsim.Faults{Down: true})
		err := e.a.Terminate(ctx, "ps1")
		wantClass(t, err, providers.ClassTransient, 503)
	})
	t.Run("transport", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		srv.Close()
		a, err := paperspace.New(paperspace.Config{BaseURL: srv.URL + "/v1", Key: func() string { return testKey }})
		if err != nil {
			t.Fatal(err)
		}
		_, err = a.Instances(ctx)
		wantClass(t, err, providers.ClassTransient, 0)
	})
}

func TestPreemptedMachineIsInterrupted(t *testing.T) {
	e := newEnv(t, cloudsim.Config{Catalog: []cloudsim.CatalogEntry{entry("V100-32G", "ca1", 1)}}, nil)
	ctx := context.Background()
	in, err := e.a.Launch(ctx, launchReq("gpur-pre-0", "V100-32G", "ca1", ""))
	if err != nil {
		t.Fatal(err)
	}
	// Seen started first: off after that is an interruption.
	if got, err := e.a.Instances(ctx); err != nil || len(got) != 1 || got[0].State != providers.StateRunning {
		t.Fatalf("instances %+v, %v; want the machine running", got, err)
	}
	if err := e.sim.Preempt(in.ID); err != nil {
		t.Fatal(err)
	}
	got, err := e.a.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].State != providers.StateInterrupted || got[0].NativeState != "off" {
		t.Fatalf("instances %+v, want the machine interrupted (off)", got)
	}
	if m := e.sim.Machines()[0]; !m.Preempted || m.Active || !m.Live {
		t.Fatalf("simulated machine %+v", m)
	}
}

func TestNewValidates(t *testing.T) {
	for name, cfg := range map[string]paperspace.Config{
		"no key":  {BaseURL: paperspace.DefaultBaseURL},
		"NaN rps": {Key: func() string { return "k" }, RequestsPerSecond: math.NaN()},
	} {
		if _, err := paperspace.New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	// Defaults as every adapter has them: the real endpoint, and a negative
	// rate is no limit.
	for name, cfg := range map[string]paperspace.Config{
		"defaults":     {Key: func() string { return "k" }},
		"negative rps": {Key: func() string { return "k" }, RequestsPerSecond: -1},
	} {
		if a, err := paperspace.New(cfg); err != nil || a.Name() != providers.Paperspace {
			t.Errorf("%s: New = %v, %v", name, a, err)
		}
	}
}

// A refresh in which some availability calls fail still reports every
// offer: the failed pairs keep their last known answer.
func TestOffersSurvivePartialFailures(t *testing.T) {
	e := newEnv(t, cloudsim.Config{Seed: 7, Catalog: []cloudsim.CatalogEntry{entry("H100", "ny2", -1), entry("A6000", "ca1", -1)}}, nil)
	if _, err := e.a.Offers(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.sim.Core().SetFaults(cloudsim.Faults{ErrorRate: 0.5})
	offers, err := e.a.Offers(context.Background())
	if err != nil {
		t.Fatalf("a partly failed refresh failed: %v", err)
	}
	if e.sim.Core().Counters().Injected == 0 {
		t.Fatal("no call failed; the test shows nothing")
	}
	for _, want := range [][2]string{{"H100", "ny2"}, {"A6000", "ca1"}} {
		if o, ok := findOffer(offers, want[0], want[1]); !ok || !o.Available {
			t.Errorf("%s in %s: %+v (found %v), want it still available from the last answer", want[0], want[1], o, ok)
		}
	}
	e.sim.Core().SetFaults(cloudsim.Faults{ErrorRate: 1})
	if _, err := e.a.Offers(context.Background()); !providers.IsClass(err, providers.ClassTransient) {
		t.Errorf("every call failed: err %v, want a transient error", err)
	}
}
