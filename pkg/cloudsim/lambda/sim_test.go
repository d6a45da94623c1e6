package lambda_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	lambdasim "github.com/solanyn/gpu-operator/pkg/cloudsim/lambda"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/lambda/lambdaapi"
	"github.com/solanyn/gpu-operator/pkg/providers/spectest"
)

const key = "sim-key"

type harness struct {
	t     *testing.T
	sim   *lambdasim.Server
	srv   *httptest.Server
	clock *clocktesting.FakeClock
}

func newHarness(t *testing.T, cfg cloudsim.Config) *harness {
	t.Helper()
	cfg.APIKey = key
	if cfg.Catalog == nil {
		cfg.Catalog = []cloudsim.CatalogEntry{
			{InstanceType: "gpu_1x_h100_pcie", GPUs: 1, Region: "us-west-1", OnDemandPrice: 2.49, Capacity: 1},
			{InstanceType: "gpu_1x_h100_pcie", GPUs: 1, Region: "us-east-1", OnDemandPrice: 2.49, Capacity: 0},
			{InstanceType: "gpu_8x_a100", GPUs: 8, Region: "us-east-1", OnDemandPrice: 10.315, Capacity: -1},
		}
	}
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	sim := lambdasim.New(cfg, clk)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return &harness{t: t, sim: sim, srv: srv, clock: clk}
}

// do sends a request with a bearer key and returns the status, headers and body.
func (h *harness) do(method, path string, body any) (int, http.Header, []byte) {
	h.t.Helper()
	return h.doAuth(method, path, body, "Bearer "+key)
}

func (h *harness) doAuth(method, path string, body any, auth string) (int, http.Header, []byte) {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, h.srv.URL+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// decodeStrict decodes a success envelope into v, refusing fields the spec's
// types do not have.
func decodeStrict(t *testing.T, body []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	env := struct {
		Data any `json:"data"`
	}{Data: v}
	if err := dec.Decode(&env); err != nil {
		t.Fatalf("decoding %s: %v", body, err)
	}
}

// wantError checks a Lambda error envelope.
func wantError(t *testing.T, status int, body []byte, wantStatus int, wantCode string) {
	t.Helper()
	var env struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	if status != wantStatus || env.Error.Code != wantCode || env.Error.Message == "" {
		t.Fatalf("got %d %s (%q), want %d %s", status, env.Error.Code, env.Error.Message, wantStatus, wantCode)
	}
}

func launchBody(name, typ, region string) lambdaapi.InstanceLaunchRequest {
	return lambdaapi.InstanceLaunchRequest{
		InstanceTypeName: typ, RegionName: lambdaapi.PublicRegionCode(region), SshKeyNames: []string{lambdasim.DefaultSSHKeyName},
		Name: &name, Hostname: &name,
	}
}

func (h *harness) launch(name, typ, region string) string {
	h.t.Helper()
	status, _, body := h.do("POST", "/api/v1/instance-operations/launch", launchBody(name, typ, region))
	if status != http.StatusOK {
		h.t.Fatalf("launch: %d %s", status, body)
	}
	var out lambdaapi.InstanceLaunchResponse
	decodeStrict(h.t, body, &out)
	if len(out.InstanceIds) != 1 {
		h.t.Fatalf("launch returned %v", out.InstanceIds)
	}
	return out.InstanceIds[0]
}

func (h *harness) status(id string) lambdaapi.InstanceStatus {
	h.t.Helper()
	code, _, body := h.do("GET", "/api/v1/instances/"+id, nil)
	if code != http.StatusOK {
		h.t.Fatalf("get %s: %d %s", id, code, body)
	}
	var in lambdaapi.Instance
	decodeStrict(h.t, body, &in)
	return in.Status
}

func TestInstanceTypes(t *testing.T) {
	h := newHarness(t, cloudsim.Config{})
	status, _, body := h.do("GET", "/api/v1/instance-types", nil)
	if status != http.StatusOK {
		t.Fatalf("%d %s", status, body)
	}
	var types lambdaapi.InstanceTypes
	decodeStrict(t, body, &types)
	h100, a100 := types["gpu_1x_h100_pcie"], types["gpu_8x_a100"]
	if len(types) != 2 || h100.InstanceType.PriceCentsPerHour != 249 || a100.InstanceType.PriceCentsPerHour != 1032 ||
		a100.InstanceType.Specs.Gpus != 8 || h100.InstanceType.Name != "gpu_1x_h100_pcie" {
		t.Fatalf("types = %+v", types)
	}
	// Only regions with capacity are listed.
	if r := h100.RegionsWithCapacityAvailable; len(r) != 1 || r[0].Name != "us-west-1" {
		t.Fatalf("h100 regions = %+v, want us-west-1 only", r)
	}
	// Taking the last unit removes the region.
	h.launch("gpur-a", "gpu_1x_h100_pcie", "us-west-1")
	_, _, body = h.do("GET", "/api/v1/instance-types", nil)
	decodeStrict(t, body, &types)
	if r := types["gpu_1x_h100_pcie"].RegionsWithCapacityAvailable; len(r) != 0 {
		t.Fatalf("h100 regions after the last launch = %+v, want none", r)
	}
}

func TestAuthForms(t *testing.T) {
	h := newHarness(t, cloudsim.Config{})
	for _, auth := range []string{
		"Bearer " + key,
		"Basic " + base64.StdEncoding.EncodeToString([]byte(key+":")),
		"Basic " + key,
	} {
		if status, _, body := h.doAuth("GET", "/api/v1/instances", nil, auth); status != http.StatusOK {
			t.Errorf("%q: %d %s", auth, status, body)
		}
	}
	for _, auth := range []string{"", "Bearer wrong", "Basic " + base64.StdEncoding.EncodeToString([]byte("wrong:"))} {
		status, _, body := h.doAuth("GET", "/api/v1/instances", nil, auth)
		wantError(t, status, body, http.StatusUnauthorized, "global/invalid-api-key")
	}
}

func TestLifecycle(t *testing.T) {
	h := newHarness(t, cloudsim.Config{BootDelay: time.Minute, TerminateDelay: 10 * time.Second})
	body := launchBody("gpur-life", "gpu_1x_h100_pcie", "us-west-1")
	userData := "#cloud-config\n"
	body.UserData = &userData
	body.Tags = &[]lambdaapi.RequestedTagEntry{{Key: "owner", Value: "gpu-operator"}}
	status, _, raw := h.do("POST", "/api/v1/instance-operations/launch", body)
	if status != http.StatusOK {
		t.Fatalf("launch: %d %s", status, raw)
	}
	var launched lambdaapi.InstanceLaunchResponse
	decodeStrict(t, raw, &launched)
	id := launched.InstanceIds[0]

	if got := h.status(id); got != lambdaapi.Booting {
		t.Fatalf("status = %s, want booting", got)
	}
	h.clock.Step(time.Minute)
	_, _, raw = h.do("GET", "/api/v1/instances", nil)
	var list []lambdaapi.Instance
	decodeStrict(t, raw, &list)
	if len(list) != 1 || list[0].Status != lambdaapi.Active || list[0].Ip == nil || *list[0].Name != "gpur-life" ||
		list[0].Tags == nil || (*list[0].Tags)[0].Key != "owner" || list[0].InstanceType.Specs.Gpus != 1 {
		t.Fatalf("list = %+v", list)
	}
	ms := h.sim.Machines()
	if len(ms) != 1 || !ms[0].Active || !ms[0].Live || ms[0].UserData != userData || ms[0].NativeState != "active" ||
		ms[0].Provider != providers.LambdaLabs || ms[0].Region != "us-west-1" {
		t.Fatalf("machines = %+v", ms)
	}

	status, _, raw = h.do("POST", "/api/v1/instance-operations/terminate", lambdaapi.InstanceTerminateRequest{InstanceIds: []string{id}})
	var term lambdaapi.InstanceTerminateResponse
	decodeStrict(t, raw, &term)
	if status != http.StatusOK || len(term.TerminatedInstances) != 1 || term.TerminatedInstances[0].Status != lambdaapi.Terminating {
		t.Fatalf("terminate: %d %+v", status, term)
	}
	if e, _ := h.sim.Core().Entry("gpu_1x_h100_pcie", "us-west-1"); e.Capacity != 0 {
		t.Fatalf("capacity while terminating = %d, want 0", e.Capacity)
	}
	h.clock.Step(10 * time.Second)
	if got := h.status(id); got != lambdaapi.Terminated {
		t.Fatalf("status = %s, want terminated", got)
	}
	if e, _ := h.sim.Core().Entry("gpu_1x_h100_pcie", "us-west-1"); e.Capacity != 1 {
		t.Fatalf("capacity after termination = %d, want 1", e.Capacity)
	}
	// Reading again does not return the capacity twice.
	h.sim.Machines()
	if e, _ := h.sim.Core().Entry("gpu_1x_h100_pcie", "us-west-1"); e.Capacity != 1 {
		t.Fatalf("capacity after a second look = %d, want 1", e.Capacity)
	}
	if ms := h.sim.Machines(); ms[0].Live || ms[0].Active {
		t.Fatalf("terminated machine = %+v", ms[0])
	}
	// Terminating a terminated instance succeeds.
	if status, _, raw := h.do("POST", "/api/v1/instance-operations/terminate", lambdaapi.InstanceTerminateRequest{InstanceIds: []string{id}}); status != http.StatusOK {
		t.Fatalf("second terminate: %d %s", status, raw)
	}
	if got := h.sim.Core().Counters().Launches["gpur-life"]; got != 1 {
		t.Fatalf("launches = %d, want 1", got)
	}
}

func TestLaunchErrors(t *testing.T) {
	h := newHarness(t, cloudsim.Config{Quota: 2})
	bad := func(mutate func(*lambdaapi.InstanceLaunchRequest)) lambdaapi.InstanceLaunchRequest {
		b := launchBody("gpur-x", "gpu_8x_a100", "us-east-1")
		mutate(&b)
		return b
	}
	invalid := map[string]any{
		"unknown type":   bad(func(b *lambdaapi.InstanceLaunchRequest) { b.InstanceTypeName = "gpu_9x_zz" }),
		"unknown region": bad(func(b *lambdaapi.InstanceLaunchRequest) { b.RegionName = "moon-1" }),
		"not sold there": bad(func(b *lambdaapi.InstanceLaunchRequest) { b.RegionName = "us-west-2" }),
		"no ssh keys":    bad(func(b *lambdaapi.InstanceLaunchRequest) { b.SshKeyNames = nil }),
		"empty ssh keys": bad(func(b *lambdaapi.InstanceLaunchRequest) { b.SshKeyNames = []string{} }),
		"two ssh keys": bad(func(b *lambdaapi.InstanceLaunchRequest) {
			b.SshKeyNames = []string{lambdasim.DefaultSSHKeyName, lambdasim.DefaultSSHKeyName}
		}),
		"unregistered ssh key": bad(func(b *lambdaapi.InstanceLaunchRequest) { b.SshKeyNames = []string{"nobody"} }),
		"bad hostname":         bad(func(b *lambdaapi.InstanceLaunchRequest) { h := "Not_A_Host"; b.Hostname = &h }),
		"bad tag key": bad(func(b *lambdaapi.InstanceLaunchRequest) {
			b.Tags = &[]lambdaapi.RequestedTagEntry{{Key: "a.b/c", Value: "v"}}
		}),
		"unknown field": map[string]any{"instance_type_name": "gpu_8x_a100", "region_name": "us-east-1", "ssh_key_names": []string{}, "spot": true},
	}
	for name, body := range invalid {
		status, _, raw := h.do("POST", "/api/v1/instance-operations/launch", body)
		t.Run(name, func(t *testing.T) { wantError(t, status, raw, http.StatusBadRequest, "global/invalid-parameters") })
	}
	status, _, raw := h.do("POST", "/api/v1/instance-operations/launch", launchBody("gpur-y", "gpu_1x_h100_pcie", "us-east-1"))
	wantError(t, status, raw, http.StatusBadRequest, "instance-operations/launch/insufficient-capacity")

	h.launch("gpur-1", "gpu_8x_a100", "us-east-1")
	h.launch("gpur-2", "gpu_8x_a100", "us-east-1")
	status, _, raw = h.do("POST", "/api/v1/instance-operations/launch", launchBody("gpur-3", "gpu_8x_a100", "us-east-1"))
	wantError(t, status, raw, http.StatusBadRequest, "global/quota-exceeded")
	if c := h.sim.Core().Counters(); len(c.Launches) != 2 || len(h.sim.Machines()) != 2 {
		t.Fatalf("failed launches created instances: %v", c.Launches)
	}
}

func TestNotFound(t *testing.T) {
	h := newHarness(t, cloudsim.Config{})
	status, _, raw := h.do("GET", "/api/v1/instances/nope", nil)
	wantError(t, status, raw, http.StatusNotFound, "global/object-does-not-exist")
	status, _, raw = h.do("POST", "/api/v1/instance-operations/terminate", lambdaapi.InstanceTerminateRequest{InstanceIds: []string{"nope"}})
	wantError(t, status, raw, http.StatusNotFound, "global/object-does-not-exist")
	status, _, raw = h.do("GET", "/api/v1/no-such-endpoint", nil)
	wantError(t, status, raw, http.StatusNotFound, "global/object-does-not-exist")
}

func TestFaultsAndRateLimits(t *testing.T) {
	h := newHarness(t, cloudsim.Config{LaunchInterval: 12 * time.Second, Faults: cloudsim.Faults{RetryAfter: 3 * time.Second}})
	h.launch("gpur-1", "gpu_8x_a100", "us-east-1")
	status, hdr, raw := h.do("POST", "/api/v1/instance-operations/launch", launchBody("gpur-2", "gpu_8x_a100", "us-east-1"))
	wantError(t, status, raw, http.StatusTooManyRequests, "global/rate-limited")
	if hdr.Get("Retry-After") != "3" {
		t.Fatalf("Retry-After = %q, want 3", hdr.Get("Retry-After"))
	}
	h.clock.Step(12 * time.Second)
	h.launch("gpur-2", "gpu_8x_a100", "us-east-1")

	h.sim.Core().SetFaults(cloudsim.Faults{ErrorRate: 1})
	status, _, raw = h.do("GET", "/api/v1/instances", nil)
	wantError(t, status, raw, http.StatusInternalServerError, "global/internal-error")
	h.sim.Core().SetFaults(cloudsim.Faults{Down: true})
	status, _, raw = h.do("GET", "/api/v1/instances", nil)
	wantError(t, status, raw, http.StatusServiceUnavailable, "global/internal-error")

	c := h.sim.Core().Counters()
	if c.RateLimited != 1 || c.Injected != 1 || c.Requests[lambdasim.EndpointLaunch] != 3 || c.Requests[lambdasim.EndpointInstances] != 2 {
		t.Fatalf("counters = %+v", c)
	}
}

func TestPreempt(t *testing.T) {
	h := newHarness(t, cloudsim.Config{})
	id := h.launch("gpur-p", "gpu_8x_a100", "us-east-1")
	if err := h.sim.Preempt("nope"); !errors.Is(err, lambdasim.ErrNotFound) {
		t.Fatalf("Preempt(unknown) = %v, want ErrNotFound", err)
	}
	if err := h.sim.Preempt(id); err != nil {
		t.Fatal(err)
	}
	if got := h.status(id); got != lambdaapi.Preempted {
		t.Fatalf("status = %s, want preempted", got)
	}
	if err := h.sim.Preempt(id); err == nil {
		t.Fatal("preempting a preempted instance succeeded")
	}
	ms := h.sim.Machines()
	if len(ms) != 1 || !ms[0].Preempted || ms[0].Active || !ms[0].Live {
		t.Fatalf("machines = %+v", ms)
	}
	h.do("POST", "/api/v1/instance-operations/terminate", lambdaapi.InstanceTerminateRequest{InstanceIds: []string{id}})
	if got := h.status(id); got != lambdaapi.Terminated {
		t.Fatalf("status after terminate = %s, want terminated (no TerminateDelay)", got)
	}
}

func TestMachinesAreOrderedAndComplete(t *testing.T) {
	h := newHarness(t, cloudsim.Config{})
	var ids []string
	for i := range 3 {
		ids = append(ids, h.launch("gpur-"+strconv.Itoa(i), "gpu_8x_a100", "us-east-1"))
	}
	ms := h.sim.Machines()
	got := make([]string, len(ms))
	for i, m := range ms {
		got[i] = m.ID
		if m.GPUs != 8 || m.InstanceType != "gpu_8x_a100" || m.Spot {
			t.Errorf("machine %+v", m)
		}
	}
	slices.Sort(ids)
	if !slices.Equal(got, ids) {
		t.Fatalf("machine ids = %v, want %v", got, ids)
	}
	if h.sim.Provider() != providers.LambdaLabs {
		t.Fatalf("Provider() = %q", h.sim.Provider())
	}
}

// TestSSHKeys: GET /api/v1/ssh-keys lists the account's keys in the spec's
// shape (checked against the official document), and a launch must name
// exactly one of them: the spec's "Currently, exactly one SSH key must be
// specified", answered with its ApiErrorInvalidParameters body.
func TestSSHKeys(t *testing.T) {
	h := newHarness(t, cloudsim.Config{})
	spec := spectest.Load(t, providers.LambdaLabs)
	checked := httptest.NewServer(spec.Middleware(t, h.sim))
	t.Cleanup(checked.Close)
	list := func() []string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, checked.URL+"/api/v1/ssh-keys", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := checked.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /api/v1/ssh-keys: %d %s", resp.StatusCode, body)
		}
		var keys []lambdaapi.SSHKey
		decodeStrict(t, body, &keys)
		var names []string
		for _, k := range keys {
			if k.Id == "" || k.PublicKey == "" {
				t.Errorf("key %+v lacks an id or public key", k)
			}
			names = append(names, k.Name)
		}
		return names
	}
	if got := list(); !slices.Equal(got, []string{lambdasim.DefaultSSHKeyName}) {
		t.Fatalf("keys = %v, want [%s]", got, lambdasim.DefaultSSHKeyName)
	}
	h.sim.AddSSHKey("ci")
	if got := list(); !slices.Equal(got, []string{"ci", lambdasim.DefaultSSHKeyName}) {
		t.Fatalf("keys = %v, want [ci %s]", got, lambdasim.DefaultSSHKeyName)
	}

	b := launchBody("gpur-k", "gpu_8x_a100", "us-east-1")
	b.SshKeyNames = []string{"ci"}
	if status, _, raw := h.do("POST", "/api/v1/instance-operations/launch", b); status != http.StatusOK {
		t.Fatalf("launch with the added key: %d %s", status, raw)
	}
	h.sim.RemoveSSHKey(lambdasim.DefaultSSHKeyName)
	status, _, raw := h.do("POST", "/api/v1/instance-operations/launch", launchBody("gpur-l", "gpu_8x_a100", "us-east-1"))
	wantError(t, status, raw, http.StatusBadRequest, "global/invalid-parameters")
	if !bytes.Contains(raw, []byte(lambdasim.DefaultSSHKeyName)) {
		t.Errorf("the refusal does not name the missing key: %s", raw)
	}
	if n := h.sim.Core().Counters().Launches; n["gpur-l"] != 0 || n["gpur-k"] != 1 {
		t.Fatalf("launches = %v, want only gpur-k", n)
	}
}

// TestRegionOutsideTheEnumSold: a region the catalog sells is launchable
// even when the 1.8.3 enum lacks it, as Lambda's own answers name regions
// (europe-south-1) the enum does not.
func TestRegionOutsideTheEnumSold(t *testing.T) {
	h := newHarness(t, cloudsim.Config{Catalog: []cloudsim.CatalogEntry{
		{InstanceType: "gpu_1x_a10", GPUs: 1, Region: "europe-south-1", OnDemandPrice: 0.75, Capacity: 1},
	}})
	if id := h.launch("gpur-eu", "gpu_1x_a10", "europe-south-1"); id == "" {
		t.Fatal("no id")
	}
	status, _, raw := h.do("POST", "/api/v1/instance-operations/launch", launchBody("gpur-x", "gpu_1x_a10", "europe-west-9"))
	wantError(t, status, raw, http.StatusBadRequest, "global/invalid-parameters")
}
