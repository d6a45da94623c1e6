package lambda_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	lambdasim "github.com/solanyn/gpu-operator/pkg/cloudsim/lambda"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/lambda"
	"github.com/solanyn/gpu-operator/pkg/providers/lambda/lambdaapi"
	"github.com/solanyn/gpu-operator/pkg/providers/spectest"
)

const testKey = "secret-test-key"

var testCatalog = []cloudsim.CatalogEntry{
	{InstanceType: "gpu_1x_h100_pcie", GPUs: 1, Region: "us-west-1", OnDemandPrice: 2.49, Capacity: 2},
	{InstanceType: "gpu_1x_h100_pcie", GPUs: 1, Region: "europe-central-1", OnDemandPrice: 2.49, Capacity: 0},
	{InstanceType: "gpu_8x_a100_80gb_sxm4", GPUs: 8, Region: "us-east-1", OnDemandPrice: 14.32, Capacity: -1},
	{InstanceType: "gpu_8x_a100_80gb_sxm4", GPUs: 8, Region: "australia-east-1", OnDemandPrice: 14.32, Capacity: 1},
	{InstanceType: "gpu_1x_a10", GPUs: 1, Region: "asia-northeast-1", OnDemandPrice: 0.75, Capacity: 3},
	{InstanceType: "gpu_1x_rtx6000", GPUs: 1, Region: "us-west-1", OnDemandPrice: 0.5, Capacity: 3},
	{InstanceType: "cpu_4x_general", GPUs: 0, Region: "us-west-1", OnDemandPrice: 0.1, Capacity: 3},
}

// env is an adapter wired to a simulator over real HTTP, both on one fake
// clock. Every exchange goes through spectest's transport, which fails the
// test on any request or response Lambda's official document
// (../shared/provider-specs/lambda/openapi-1.8.3.json) does not allow.
type env struct {
	sim   *lambdasim.Server
	a     *lambda.Adapter
	clock *clocktesting.FakeClock
	url   string
}

// newEnv starts a simulator with cfg (test key and catalog filled in when
// empty) and an adapter with client-side limits off unless edit sets them.
func newEnv(t *testing.T, cfg cloudsim.Config, edit func(*lambda.Config)) *env {
	t.Helper()
	if cfg.APIKey == "" {
		cfg.APIKey = testKey
	}
	if cfg.Catalog == nil {
		cfg.Catalog = testCatalog
	}
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	sim := lambdasim.New(cfg, clk)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	spec := spectest.Load(t, providers.LambdaLabs)
	acfg := lambda.Config{
		BaseURL: srv.URL,
		Key:     func() string { return testKey },
		HTTPClient: &http.Client{Transport: spec.Transport(t, srv.Client().Transport,
			spectest.AllowStatus(http.StatusTooManyRequests, "Lambda's rate limits are described only in info.description"),
			spectest.AllowStatus(http.StatusInternalServerError, "injected fault: the spec declares no 5xx, which any server may answer"),
			spectest.AllowStatus(http.StatusServiceUnavailable, "injected outage: the spec declares no 5xx, which any server may answer"))},
		RequestsPerSecond: -1,
		LaunchInterval:    -1,
		Clock:             clk,
		SSHKeyName:        lambdasim.DefaultSSHKeyName,
	}
	if edit != nil {
		edit(&acfg)
	}
	a, err := lambda.New(acfg)
	if err != nil {
		t.Fatal(err)
	}
	return &env{sim: sim, a: a, clock: clk, url: srv.URL}
}

// requests is the total number of calls the simulator has received.
func (e *env) requests() int {
	n := 0
	for _, v := range e.sim.Core().Counters().Requests {
		n += v
	}
	return n
}

func launchReq(name, typ, region string) providers.LaunchRequest {
	return providers.LaunchRequest{
		Name:     name,
		Offer:    providers.Offer{Provider: providers.LambdaLabs, InstanceType: typ, ProviderRegion: region},
		UserData: "#cloud-config\nhostname: " + name + "\n",
		Tags:     map[string]string{"gpurequest": "ns-job", "owner": "gpu-operator"},
	}
}

func wantClass(t *testing.T, err error, class providers.ErrorClass) *providers.Error {
	t.Helper()
	var pe *providers.Error
	if !errors.As(err, &pe) {
		t.Fatalf("error = %v (%T), want *providers.Error of class %s", err, err, class)
	}
	if pe.Class != class {
		t.Fatalf("class = %s, want %s (error: %v)", pe.Class, class, err)
	}
	if strings.Contains(err.Error(), testKey) {
		t.Fatalf("error leaks the API key: %v", err)
	}
	return pe
}

func TestOffersNormalized(t *testing.T) {
	e := newEnv(t, cloudsim.Config{}, nil)
	got, err := e.a.Offers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	offer := func(typ, gpu string, n int, region, native string, price float64) providers.Offer {
		return providers.Offer{Provider: providers.LambdaLabs, InstanceType: typ, GPUType: gpu, GPUCount: n,
			Region: region, ProviderRegion: native, Capacity: providers.OnDemand, HourlyPrice: price,
			Available: true, PriceSource: providers.PriceSourceAPI}
	}
	want := []providers.Offer{
		offer("gpu_1x_a10", "A10", 1, "ap-northeast-1", "asia-northeast-1", 0.75),
		offer("gpu_1x_h100_pcie", "H100", 1, "us-west-1", "us-west-1", 2.49),
		offer("gpu_8x_a100_80gb_sxm4", "A100-80GB", 8, "ap-southeast-2", "australia-east-1", 14.32),
		offer("gpu_8x_a100_80gb_sxm4", "A100-80GB", 8, "us-east-1", "us-east-1", 14.32),
	}
	if len(got) != len(want) {
		t.Fatalf("got %d offers, want %d:\n%+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("offer %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestLaunchListTerminate(t *testing.T) {
	e := newEnv(t, cloudsim.Config{BootDelay: time.Minute, TerminateDelay: 30 * time.Second}, nil)
	ctx := context.Background()
	name := providers.MachineNamePrefix + "uid1-0"

	in, err := e.a.Launch(ctx, launchReq(name, "gpu_1x_h100_pcie", "us-west-1"))
	if err != nil {
		t.Fatal(err)
	}
	if in.ID == "" || in.Name != name || in.State != providers.StatePending || in.Spot ||
		in.InstanceType != "gpu_1x_h100_pcie" || in.ProviderRegion != "us-west-1" || in.Provider != providers.LambdaLabs {
		t.Fatalf("launched instance = %+v", in)
	}
	// An instance that is not the operator's is never listed.
	if _, err := e.a.Launch(ctx, launchReq("someone-elses-box", "gpu_1x_a10", "asia-northeast-1")); err != nil {
		t.Fatal(err)
	}

	assertListed := func(state providers.InstanceState, native string, wantIP bool) {
		t.Helper()
		list, err := e.a.Instances(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(list) != 1 || list[0].ID != in.ID || list[0].Name != name {
			t.Fatalf("Instances() = %+v, want only %s", list, in.ID)
		}
		if list[0].State != state || list[0].NativeState != native || (list[0].PublicIP != "") != wantIP {
			t.Fatalf("instance = %+v, want state %s (%s), IP %v", list[0], state, native, wantIP)
		}
	}
	assertListed(providers.StateBooting, "booting", false)
	e.clock.Step(time.Minute)
	assertListed(providers.StateRunning, "active", true)

	m := machine(t, e.sim, in.ID)
	if !m.Active || !m.Live || m.UserData != launchReq(name, "", "").UserData || m.GPUs != 1 {
		t.Fatalf("sim machine = %+v", m)
	}

	if err := e.a.Terminate(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	assertListed(providers.StateTerminating, "terminating", false)
	if entry, _ := e.sim.Core().Entry("gpu_1x_h100_pcie", "us-west-1"); entry.Capacity != 1 {
		t.Fatalf("capacity while terminating = %d, want 1", entry.Capacity)
	}
	e.clock.Step(30 * time.Second)
	assertListed(providers.StateTerminated, "terminated", false)
	if entry, _ := e.sim.Core().Entry("gpu_1x_h100_pcie", "us-west-1"); entry.Capacity != 2 {
		t.Fatalf("capacity after termination = %d, want 2 (returned)", entry.Capacity)
	}
	if m := machine(t, e.sim, in.ID); m.Live || m.Active {
		t.Fatalf("terminated machine = %+v", m)
	}

	// Terminating again, or terminating an unknown instance, succeeds.
	if err := e.a.Terminate(ctx, in.ID); err != nil {
		t.Fatalf("second terminate: %v", err)
	}
	if err := e.a.Terminate(ctx, "does-not-exist"); err != nil {
		t.Fatalf("terminate of a missing instance: %v", err)
	}
	if got := e.sim.Core().Counters().Requests[lambdasim.EndpointTerminate]; got != 3 {
		t.Fatalf("terminate calls = %d, want 3", got)
	}
}

func machine(t *testing.T, sim *lambdasim.Server, id string) cloudsim.Machine {
	t.Helper()
	for _, m := range sim.Machines() {
		if m.ID == id {
			return m
		}
	}
	t.Fatalf("simulator has no machine %s", id)
	return cloudsim.Machine{}
}

// The adapter keeps no launch memory: a second Launch of a name is a second
// create, and both instances are listed under the name (deduplication by
// name is the controller's).
func TestLaunchSameNameTwiceCreatesTwice(t *testing.T) {
	e := newEnv(t, cloudsim.Config{}, nil)
	ctx := context.Background()
	name := providers.MachineNamePrefix + "uid2-0"
	first, err := e.a.Launch(ctx, launchReq(name, "gpu_1x_h100_pcie", "us-west-1"))
	if err != nil {
		t.Fatal(err)
	}
	second, err := e.a.Launch(ctx, launchReq(name, "gpu_1x_h100_pcie", "us-west-1"))
	if err != nil {
		t.Fatal(err)
	}
	if second.ID == first.ID || second.State != providers.StatePending {
		t.Fatalf("second launch = %+v, want a new pending instance besides %s", second, first.ID)
	}
	c := e.sim.Core().Counters()
	if c.Launches[name] != 2 || c.Requests[lambdasim.EndpointLaunch] != 2 || c.Requests[lambdasim.EndpointInstances] != 0 {
		t.Fatalf("launches %v, requests %v; want two launch calls and no list", c.Launches, c.Requests)
	}
	list, err := e.a.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Name != name || list[1].Name != name {
		t.Fatalf("Instances() = %+v, want both instances named %s", list, name)
	}
}

// loseLaunchResponse is a transport that delivers the first launch to the
// server and then reports a transport error, as a dropped connection would.
type loseLaunchResponse struct {
	next http.RoundTripper
	lost atomic.Bool
}

func (l *loseLaunchResponse) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := l.next.RoundTrip(r)
	if err == nil && strings.HasSuffix(r.URL.Path, "/instance-operations/launch") && l.lost.CompareAndSwap(false, true) {
		resp.Body.Close()
		return nil, errors.New("connection reset by peer")
	}
	return resp, err
}

// A launch whose answer is lost is ClassTransient; the instance it made is
// listed under its name, which is where the controller finds and adopts it.
func TestLaunchLostResponseIsTransientAndListed(t *testing.T) {
	e := newEnv(t, cloudsim.Config{}, func(c *lambda.Config) {
		c.HTTPClient = &http.Client{Transport: &loseLaunchResponse{next: http.DefaultTransport}}
	})
	ctx := context.Background()
	name := providers.MachineNamePrefix + "uid3-0"
	_, err := e.a.Launch(ctx, launchReq(name, "gpu_1x_h100_pcie", "us-west-1"))
	if pe := wantClass(t, err, providers.ClassTransient); pe.HTTPStatus != 0 {
		t.Fatalf("error = %+v, want no HTTP status (the answer was lost)", pe)
	}
	list, err := e.a.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ms := e.sim.Machines()
	if len(ms) != 1 || len(list) != 1 || list[0].ID != ms[0].ID || list[0].Name != name {
		t.Fatalf("Instances() = %+v, simulator has %+v; want the one instance listed as %s", list, ms, name)
	}
	if c := e.sim.Core().Counters(); c.Requests[lambdasim.EndpointLaunch] != 1 {
		t.Fatalf("requests %v, want one launch call", c.Requests)
	}
}

// A 5xx on launch is ClassTransient with Lambda's code; the retry is a plain
// create, with no list call of the adapter's own.
func TestLaunchAfter5xxIsPlainCreate(t *testing.T) {
	e := newEnv(t, cloudsim.Config{Faults: cloudsim.Faults{ErrorRate: 1}}, nil)
	ctx := context.Background()
	name := providers.MachineNamePrefix + "uid4-0"
	_, err := e.a.Launch(ctx, launchReq(name, "gpu_1x_h100_pcie", "us-west-1"))
	pe := wantClass(t, err, providers.ClassTransient)
	if pe.HTTPStatus != http.StatusInternalServerError || pe.Code != lambda.CodeInternalError {
		t.Fatalf("error = %+v, want HTTP 500 %s", pe, lambda.CodeInternalError)
	}
	e.sim.Core().SetFaults(cloudsim.Faults{})
	if _, err := e.a.Launch(ctx, launchReq(name, "gpu_1x_h100_pcie", "us-west-1")); err != nil {
		t.Fatal(err)
	}
	c := e.sim.Core().Counters()
	if c.Requests[lambdasim.EndpointInstances] != 0 || c.Requests[lambdasim.EndpointLaunch] != 2 || c.Launches[name] != 1 {
		t.Fatalf("requests %v, launches %v: want two launch calls, no list, one instance", c.Requests, c.Launches)
	}
}

func TestErrorClasses(t *testing.T) {
	ctx := context.Background()
	name := providers.MachineNamePrefix + "uid5-0"
	tests := []struct {
		name   string
		cfg    cloudsim.Config
		edit   func(*lambda.Config)
		call   func(e *env) error
		class  providers.ErrorClass
		status int
		code   string
	}{
		{
			name:  "wrong key",
			edit:  func(c *lambda.Config) { c.Key = func() string { return "wrong-key" } },
			call:  func(e *env) error { _, err := e.a.Offers(ctx); return err },
			class: providers.ClassUnauthorized, status: 401, code: lambda.CodeInvalidAPIKey,
		},
		{
			name: "insufficient capacity",
			call: func(e *env) error {
				e.sim.Core().SetCapacity("gpu_1x_h100_pcie", "us-west-1", 0)
				_, err := e.a.Launch(ctx, launchReq(name, "gpu_1x_h100_pcie", "us-west-1"))
				return err
			},
			class: providers.ClassCapacity, status: 400, code: lambda.CodeInsufficientCapacity,
		},
		{
			name: "quota",
			cfg:  cloudsim.Config{Quota: 1},
			call: func(e *env) error {
				if _, err := e.a.Launch(ctx, launchReq(name, "gpu_1x_h100_pcie", "us-west-1")); err != nil {
					return err
				}
				_, err := e.a.Launch(ctx, launchReq(name+"x", "gpu_1x_h100_pcie", "us-west-1"))
				return err
			},
			class: providers.ClassQuota, status: 400, code: lambda.CodeQuotaExceeded,
		},
		{
			name: "unknown instance type",
			call: func(e *env) error {
				_, err := e.a.Launch(ctx, launchReq(name, "gpu_3x_nothing", "us-west-1"))
				return err
			},
			class: providers.ClassInvalid, status: 400, code: lambda.CodeInvalidParameters,
		},
		{
			name:  "injected 500",
			cfg:   cloudsim.Config{Faults: cloudsim.Faults{ErrorRate: 1}},
			call:  func(e *env) error { _, err := e.a.Instances(ctx); return err },
			class: providers.ClassTransient, status: 500, code: lambda.CodeInternalError,
		},
		{
			name:  "provider down",
			cfg:   cloudsim.Config{Faults: cloudsim.Faults{Down: true}},
			call:  func(e *env) error { _, err := e.a.Instances(ctx); return err },
			class: providers.ClassTransient, status: 503, code: lambda.CodeInternalError,
		},
		{
			name:  "injected 429",
			cfg:   cloudsim.Config{Faults: cloudsim.Faults{RateLimitRate: 1, RetryAfter: 3 * time.Second}},
			call:  func(e *env) error { _, err := e.a.Offers(ctx); return err },
			class: providers.ClassRateLimited, status: 429,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.cfg, tt.edit)
			pe := wantClass(t, tt.call(e), tt.class)
			if pe.HTTPStatus != tt.status || (tt.code != "" && pe.Code != tt.code) || pe.Message == "" {
				t.Fatalf("error = %+v, want HTTP %d, code %q and a message", pe, tt.status, tt.code)
			}
			if tt.class == providers.ClassRateLimited && pe.RetryAfter != 3*time.Second {
				t.Fatalf("RetryAfter = %s, want 3s", pe.RetryAfter)
			}
		})
	}
}

func TestCallTimeoutIsTransient(t *testing.T) {
	// The simulator's latency waits on the fake clock, which never moves:
	// only the adapter's real-time call deadline can end the call.
	e := newEnv(t, cloudsim.Config{Faults: cloudsim.Faults{Latency: time.Hour}}, func(c *lambda.Config) {
		c.CallTimeout = 50 * time.Millisecond
	})
	_, err := e.a.Instances(context.Background())
	pe := wantClass(t, err, providers.ClassTransient)
	if !errors.Is(err, context.DeadlineExceeded) || pe.HTTPStatus != 0 {
		t.Fatalf("error = %v, want a deadline exceeded without a response", err)
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	e := newEnv(t, cloudsim.Config{RequestsPerSecond: 1, Faults: cloudsim.Faults{RetryAfter: 2 * time.Second}}, nil)
	ctx := context.Background()
	if _, err := e.a.Offers(ctx); err != nil {
		t.Fatal(err)
	}
	// The simulator's clock has not moved: its limiter refuses the next call.
	_, err := e.a.Offers(ctx)
	if pe := wantClass(t, err, providers.ClassRateLimited); pe.HTTPStatus != 429 || pe.RetryAfter != 2*time.Second {
		t.Fatalf("error = %+v, want HTTP 429 with Retry-After 2s", pe)
	}
	before := e.requests()

	_, err = e.a.Instances(ctx)
	if pe := wantClass(t, err, providers.ClassRateLimited); pe.HTTPStatus != 0 || pe.RetryAfter != 2*time.Second {
		t.Fatalf("error = %+v, want a local refusal with RetryAfter 2s", pe)
	}
	e.clock.Step(1500 * time.Millisecond)
	if pe := wantClass(t, e.a.Terminate(ctx, "x"), providers.ClassRateLimited); pe.RetryAfter != 500*time.Millisecond {
		t.Fatalf("RetryAfter = %s, want the remaining 500ms", pe.RetryAfter)
	}
	if got := e.requests(); got != before {
		t.Fatalf("simulator saw %d requests during Retry-After, want 0", got-before)
	}

	e.clock.Step(500 * time.Millisecond)
	if _, err := e.a.Instances(ctx); err != nil {
		t.Fatalf("call after Retry-After: %v", err)
	}
	if got := e.requests(); got != before+1 {
		t.Fatalf("simulator saw %d requests after Retry-After, want 1", got-before)
	}
}

func TestClientSideLaunchLimitFailsFast(t *testing.T) {
	e := newEnv(t, cloudsim.Config{}, func(c *lambda.Config) { c.LaunchInterval = time.Hour })
	ctx := context.Background()
	first := launchReq(providers.MachineNamePrefix+"uid6-0", "gpu_1x_h100_pcie", "us-west-1")
	if _, err := e.a.Launch(ctx, first); err != nil {
		t.Fatal(err)
	}
	_, err := e.a.Launch(ctx, launchReq(providers.MachineNamePrefix+"uid7-0", "gpu_1x_h100_pcie", "us-west-1"))
	if pe := wantClass(t, err, providers.ClassRateLimited); pe.RetryAfter < 59*time.Minute || pe.HTTPStatus != 0 {
		t.Fatalf("error = %+v, want a local refusal asking for about an hour", pe)
	}
	// The slot is per launch, not per name: a repeat of the first name waits too.
	_, err = e.a.Launch(ctx, first)
	wantClass(t, err, providers.ClassRateLimited)
	// Other calls are not launches.
	if _, err := e.a.Instances(ctx); err != nil {
		t.Fatalf("Instances during the launch interval: %v", err)
	}
	if got := e.sim.Core().Counters().Requests[lambdasim.EndpointLaunch]; got != 1 {
		t.Fatalf("launch calls = %d, want 1", got)
	}
}

func TestClientSideRateLimitFailsWhenWaitExceedsBudget(t *testing.T) {
	e := newEnv(t, cloudsim.Config{}, func(c *lambda.Config) { c.RequestsPerSecond = 0.001 })
	ctx := context.Background()
	if _, err := e.a.Instances(ctx); err != nil {
		t.Fatal(err)
	}
	// The next token is ~1000s away, beyond the 30s call budget.
	_, err := e.a.Instances(ctx)
	if pe := wantClass(t, err, providers.ClassRateLimited); pe.RetryAfter < 900*time.Second {
		t.Fatalf("RetryAfter = %s, want about 1000s", pe.RetryAfter)
	}
	if got := e.requests(); got != 1 {
		t.Fatalf("simulator saw %d requests, want 1", got)
	}
}

func TestKeyIsReadOnEveryCall(t *testing.T) {
	var key atomic.Value
	key.Store("")
	e := newEnv(t, cloudsim.Config{}, func(c *lambda.Config) { c.Key = func() string { return key.Load().(string) } })
	ctx := context.Background()
	_, err := e.a.Offers(ctx)
	wantClass(t, err, providers.ClassUnauthorized)
	if got := e.requests(); got != 0 {
		t.Fatalf("a call without a key reached the simulator (%d requests)", got)
	}
	key.Store(testKey)
	if _, err := e.a.Offers(ctx); err != nil {
		t.Fatalf("after the key was set: %v", err)
	}
}

func TestPreemptedInstanceIsInterrupted(t *testing.T) {
	e := newEnv(t, cloudsim.Config{}, nil)
	ctx := context.Background()
	in, err := e.a.Launch(ctx, launchReq(providers.MachineNamePrefix+"uid8-0", "gpu_1x_a10", "asia-northeast-1"))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.sim.Preempt(in.ID); err != nil {
		t.Fatal(err)
	}
	list, err := e.a.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].State != providers.StateInterrupted || list[0].NativeState != "preempted" || list[0].Spot {
		t.Fatalf("Instances() = %+v, want one interrupted (preempted) instance", list)
	}
	if m := machine(t, e.sim, in.ID); !m.Preempted || m.Active || !m.Live {
		t.Fatalf("sim machine = %+v, want preempted, inactive, live", m)
	}
}

func TestNewValidates(t *testing.T) {
	key := func() string { return "k" }
	if _, err := lambda.New(lambda.Config{SSHKeyName: "k1"}); err == nil {
		t.Error("New without Key succeeded")
	}
	if _, err := lambda.New(lambda.Config{Key: key, SSHKeyName: "k1", BaseURL: "not a url"}); err == nil {
		t.Error("New with a bad BaseURL succeeded")
	}
	if _, err := lambda.New(lambda.Config{Key: key}); !errors.Is(err, lambda.ErrNoSSHKey) {
		t.Errorf("New without an SSH key name: %v, want ErrNoSSHKey", err)
	}
	if _, err := lambda.New(lambda.Config{Key: key, SSHKeyName: " "}); !errors.Is(err, lambda.ErrNoSSHKey) {
		t.Errorf("New with a blank SSH key name: %v, want ErrNoSSHKey", err)
	}
	for _, bad := range []string{"a,b", strings.Repeat("k", 65)} {
		if _, err := lambda.New(lambda.Config{Key: key, SSHKeyName: bad}); err == nil {
			t.Errorf("New with SSH key name %q succeeded; Lambda takes exactly one name of at most 64 characters", bad)
		}
	}
	a, err := lambda.New(lambda.Config{Key: key, SSHKeyName: "k1"})
	if err != nil || a.Name() != providers.LambdaLabs || a.SSHKeyName() != "k1" {
		t.Errorf("New with defaults = %v, %v", a, err)
	}
}

func TestLaunchFitsTagsToLambdasPattern(t *testing.T) {
	e := newEnv(t, cloudsim.Config{}, nil)
	req := launchReq(providers.MachineNamePrefix+"uid9-0", "gpu_1x_a10", "asia-northeast-1")
	req.Tags = map[string]string{"tgp.solanyn.com/request": "default/job", "9lives": strings.Repeat("v", 200)}
	in, err := e.a.Launch(context.Background(), req)
	if err != nil {
		t.Fatalf("launch with tags Lambda would refuse verbatim: %v", err)
	}
	r, err := http.NewRequest("GET", e.url+"/api/v1/instances/"+in.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got struct {
		Data lambdaapi.Instance `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := []lambdaapi.TagEntry{
		{Key: "t-9lives", Value: strings.Repeat("v", 128)},
		{Key: "tgp-solanyn-com-request", Value: "default/job"},
	}
	if got.Data.Tags == nil || !slices.Equal(*got.Data.Tags, want) {
		t.Fatalf("tags = %+v, want %+v", got.Data.Tags, want)
	}
	if got.Data.Hostname == nil || *got.Data.Hostname != req.Name {
		t.Fatalf("hostname = %v, want %s", got.Data.Hostname, req.Name)
	}
}

// rawInstance reads an instance the way Lambda shows it, past the adapter.
func (e *env) rawInstance(t *testing.T, id string) lambdaapi.Instance {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.url+"/api/v1/instances/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var env struct {
		Data lambdaapi.Instance `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET instance %s: %d %v", id, resp.StatusCode, err)
	}
	return env.Data
}

// TestLaunchNamesExactlyOneSSHKey: every launch carries the configured key
// and only it.
func TestLaunchNamesExactlyOneSSHKey(t *testing.T) {
	e := newEnv(t, cloudsim.Config{}, nil)
	in, err := e.a.Launch(context.Background(), launchReq(providers.MachineNamePrefix+"uidk-0", "gpu_1x_a10", "asia-northeast-1"))
	if err != nil {
		t.Fatal(err)
	}
	if got := e.rawInstance(t, in.ID).SshKeyNames; !slices.Equal(got, []string{lambdasim.DefaultSSHKeyName}) {
		t.Fatalf("instance ssh_key_names = %v, want [%s]", got, lambdasim.DefaultSSHKeyName)
	}
}

// TestSSHKeyMissing: a key the account lacks is refused by Lambda with
// global/invalid-parameters; CheckSSHKey says so by name, and from then the
// adapter withholds its offers (asking GET /api/v1/ssh-keys again on each
// refresh, not the catalog) and refuses launches without sending them,
// until the key is registered.
func TestSSHKeyMissing(t *testing.T) {
	e := newEnv(t, cloudsim.Config{}, nil)
	ctx := context.Background()
	e.sim.RemoveSSHKey(lambdasim.DefaultSSHKeyName)
	e.sim.AddSSHKey("someone-elses")

	// Unchecked, the launch reaches Lambda, which refuses it.
	_, err := e.a.Launch(ctx, launchReq(providers.MachineNamePrefix+"uidm-0", "gpu_1x_a10", "asia-northeast-1"))
	if pe := wantClass(t, err, providers.ClassInvalid); pe.Code != lambda.CodeInvalidParameters || pe.HTTPStatus != http.StatusBadRequest {
		t.Fatalf("unchecked launch: %v, want 400 %s", err, lambda.CodeInvalidParameters)
	}

	err = e.a.CheckSSHKey(ctx)
	pe := wantClass(t, err, providers.ClassInvalid)
	for _, want := range []string{`"` + lambdasim.DefaultSSHKeyName + `"`, "not registered", "someone-elses"} {
		if !strings.Contains(pe.Message, want) {
			t.Errorf("CheckSSHKey message %q lacks %q", pe.Message, want)
		}
	}

	before := e.sim.Core().Counters().Requests
	if _, err := e.a.Offers(ctx); !providers.IsClass(err, providers.ClassInvalid) {
		t.Fatalf("Offers with the key missing: %v, want ClassInvalid", err)
	}
	_, err = e.a.Launch(ctx, launchReq(providers.MachineNamePrefix+"uidm-1", "gpu_1x_a10", "asia-northeast-1"))
	wantClass(t, err, providers.ClassInvalid)
	after := e.sim.Core().Counters().Requests
	if d := after[lambdasim.EndpointSSHKeys] - before[lambdasim.EndpointSSHKeys]; d != 1 {
		t.Errorf("ssh-keys calls = %d, want 1 (one recheck per refresh)", d)
	}
	for _, ep := range []string{lambdasim.EndpointInstanceTypes, lambdasim.EndpointLaunch} {
		if d := after[ep] - before[ep]; d != 0 {
			t.Errorf("%s called %d times while the key is missing", ep, d)
		}
	}

	e.sim.AddSSHKey(lambdasim.DefaultSSHKeyName)
	offers, err := e.a.Offers(ctx)
	if err != nil || len(offers) == 0 {
		t.Fatalf("Offers once the key is registered: %d offers, %v", len(offers), err)
	}
	if _, err := e.a.Launch(ctx, launchReq(providers.MachineNamePrefix+"uidm-2", "gpu_1x_a10", "asia-northeast-1")); err != nil {
		t.Fatalf("launch once the key is registered: %v", err)
	}
	again := e.sim.Core().Counters().Requests
	if _, err := e.a.Offers(ctx); err != nil {
		t.Fatal(err)
	}
	if d := e.sim.Core().Counters().Requests[lambdasim.EndpointSSHKeys] - again[lambdasim.EndpointSSHKeys]; d != 0 {
		t.Errorf("a refresh with the key found asked for the keys %d times, want 0", d)
	}
}

// TestCheckSSHKeyFailureChangesNothing: a check that cannot be made (bad
// credentials) is returned as is and does not withhold the offers.
func TestCheckSSHKeyFailureChangesNothing(t *testing.T) {
	key := testKey
	e := newEnv(t, cloudsim.Config{}, func(c *lambda.Config) { c.Key = func() string { return key } })
	key = "wrong"
	wantClass(t, e.a.CheckSSHKey(context.Background()), providers.ClassUnauthorized)
	key = testKey
	if _, err := e.a.Offers(context.Background()); err != nil {
		t.Fatalf("Offers after a failed check: %v", err)
	}
	if err := e.a.CheckSSHKey(context.Background()); err != nil {
		t.Fatalf("CheckSSHKey with the key registered: %v", err)
	}
}

func TestBootstrapFormats(t *testing.T) {
	e := newEnv(t, cloudsim.Config{}, nil)
	want := []providers.BootstrapFormat{providers.FormatCloudInit, providers.FormatScript}
	if got := providers.BootstrapFormats(e.a); !slices.Equal(got, want) {
		t.Fatalf("BootstrapFormats = %v, want %v", got, want)
	}
}

// TestOffersInRegionsOutsideTheEnum: Lambda's answers name regions the 1.8.3
// enum lacks (europe-south-1, per public clients' region lists); their offers
// are kept, mapped by Regions or by CanonicalRegion's rule, never dropped.
// Such an answer does not match the spec, so this test runs without
// spectest's transport.
func TestOffersInRegionsOutsideTheEnum(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	sim := lambdasim.New(cloudsim.Config{APIKey: testKey, Catalog: []cloudsim.CatalogEntry{
		{InstanceType: "gpu_1x_a10", GPUs: 1, Region: "europe-south-1", OnDemandPrice: 0.75, Capacity: 3},
		{InstanceType: "gpu_1x_a10", GPUs: 1, Region: "europe-north-9", OnDemandPrice: 0.75, Capacity: 3},
		{InstanceType: "gpu_1x_a10", GPUs: 1, Region: "mars-north-1", OnDemandPrice: 0.75, Capacity: 3},
	}}, clk)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	a, err := lambda.New(lambda.Config{BaseURL: srv.URL, Key: func() string { return testKey }, HTTPClient: srv.Client(),
		RequestsPerSecond: -1, LaunchInterval: -1, Clock: clk, SSHKeyName: lambdasim.DefaultSSHKeyName})
	if err != nil {
		t.Fatal(err)
	}
	offers, err := a.Offers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, o := range offers {
		got[o.ProviderRegion] = o.Region
	}
	want := map[string]string{"europe-south-1": "eu-south-1", "europe-north-9": "eu-north-9", "mars-north-1": "mars-north-1"}
	if len(got) != len(want) {
		t.Fatalf("regions = %v, want %v", got, want)
	}
	for native, canonical := range want {
		if got[native] != canonical {
			t.Errorf("%s -> %q, want %q", native, got[native], canonical)
		}
	}
	if _, err := a.Launch(context.Background(), launchReq(providers.MachineNamePrefix+"uideu-0", "gpu_1x_a10", "europe-south-1")); err != nil {
		t.Fatalf("launch in europe-south-1: %v", err)
	}
}
