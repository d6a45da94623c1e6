package vastai_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	testclock "k8s.io/utils/clock/testing"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	vastaisim "github.com/solanyn/gpu-operator/pkg/cloudsim/vastai"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/spectest"
	"github.com/solanyn/gpu-operator/pkg/providers/vastai/sshboot"
	"github.com/solanyn/gpu-operator/pkg/providers/vastai/vastaispec"
)

const key = "sim-test-key"

var market = []vastaisim.Host{
	{ID: 11, GPUName: "RTX 4090", NumGPUs: 1, GPURAM: 24564, Geolocation: "Texas, US", DPHTotal: 0.40, MinBid: 0.15, Reliability: 0.99, Verified: true, VMsEnabled: true},
	{ID: 12, GPUName: "RTX 4090", NumGPUs: 1, GPURAM: 24564, Geolocation: "Hesse, DE", DPHTotal: 0.35, Reliability: 0.97, Verified: true},
	{ID: 13, GPUName: "H100 SXM", NumGPUs: 8, GPURAM: 81559, Geolocation: "Quebec, CA", DPHTotal: 17.6, MinBid: 9, Reliability: 0.999, Verified: false},
}

type fixture struct {
	sim *vastaisim.Server
	srv *httptest.Server
	clk *testclock.FakeClock
}

// start serves a simulator behind the spec's validation: every request
// the test sends and every answer the simulator gives is checked against
// Vast.ai's document.
func start(t *testing.T, cfg vastaisim.Config) fixture {
	t.Helper()
	clk := testclock.NewFakeClock(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	cfg.APIKey = key
	if cfg.Hosts == nil {
		cfg.Hosts = market
	}
	sim := vastaisim.New(cfg, clk)
	t.Cleanup(sim.Close)
	srv := httptest.NewServer(spectest.Load(t, spectest.VastAI).Middleware(t, sim, vastaispec.Options()...))
	t.Cleanup(srv.Close)
	return fixture{sim: sim, srv: srv, clk: clk}
}

func (f fixture) do(t *testing.T, method, path, body string) (int, map[string]any, []byte) {
	t.Helper()
	return f.doKey(t, key, method, path, body)
}

func (f fixture) doKey(t *testing.T, k, method, path, body string) (int, map[string]any, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
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
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return resp.StatusCode, m, raw
}

func ids(t *testing.T, m map[string]any) []float64 {
	t.Helper()
	var out []float64
	offers, _ := m["offers"].([]any)
	for _, o := range offers {
		out = append(out, o.(map[string]any)["id"].(float64))
	}
	return out
}

func TestSearch(t *testing.T) {
	t.Parallel()
	f := start(t, vastaisim.Config{})
	// The spec's defaults: verified, rentable, not rented.
	code, m, raw := f.do(t, "POST", "/api/v0/bundles/", `{"type": "ondemand", "order": [["dph_total", "asc"], ["id", "asc"]]}`)
	if code != 200 || !slices.Equal(ids(t, m), []float64{12, 11}) {
		t.Fatalf("default search: %d %s", code, raw)
	}
	// Filters and the bid price.
	_, m, raw = f.do(t, "POST", "/api/v0/bundles", `{"type": "bid", "verified": {}, "reliability": {"gte": 0.98}, "gpu_name": {"in": ["RTX 4090", "H100 SXM"]}}`)
	offers, _ := m["offers"].([]any)
	if !slices.Equal(ids(t, m), []float64{11, 13}) || offers[0].(map[string]any)["dph_total"] != 0.15 || offers[0].(map[string]any)["is_bid"] != true {
		t.Errorf("bid search: %s", raw)
	}
	for body, want := range map[string][]float64{
		`{"geolocation": {"in": ["DE"]}}`:                               {12},
		`{"vms_enabled": {"eq": true}}`:                                 {11},
		`{"num_gpus": {"gte": 4}, "verified": {}}`:                      {13},
		`{"gpu_name": {"in": ["RTX_4090"]}}`:                            {11, 12},
		`{"limit": 1, "order": [["id", "desc"], ["dph_total", "asc"]]}`: {12},
		`{"dph_total": {"lte": 0.36}}`:                                  {12},
		`{"unsimulated_field": {"eq": 1}}`:                              {11, 12},
	} {
		if _, m, raw := f.do(t, "POST", "/api/v0/bundles/", body); !slices.Equal(ids(t, m), want) {
			t.Errorf("search %s: %s, want ids %v", body, raw, want)
		}
	}
	if code, m, _ := f.do(t, "POST", "/api/v0/bundles/", `{"num_gpus": {"about": 4}}`); code != 400 || m["error"] != "invalid_request" {
		t.Errorf("unknown operator: %d %v", code, m)
	}
	// A bad key on the search is the spec's 404.
	if code, m, _ := f.doKey(t, "wrong", "POST", "/api/v0/bundles/", `{}`); code != 404 || m["msg"] != vastaisim.MsgBadKey {
		t.Errorf("bad key: %d %v", code, m)
	}
	// A rented host is not rentable.
	f.sim.Core().SetCapacity("11", "Texas, US", 0)
	if _, m, _ := f.do(t, "POST", "/api/v0/bundles/", `{}`); !slices.Equal(ids(t, m), []float64{11 + 1}) {
		t.Errorf("after renting host 11: %v", ids(t, m))
	}
}

func TestCreateListDestroy(t *testing.T) {
	t.Parallel()
	f := start(t, vastaisim.Config{Config: cloudsim.Config{BootDelay: 10 * time.Second}})
	// A container with the spec's Docker-flag env.
	code, m, raw := f.do(t, "PUT", "/api/v0/asks/12/", `{"image": "busybox", "label": "gpur-a", "runtype": "args", "args": ["sleep", "1"], "env": "-e A=1 -p 8080:8080", "disk": 16}`)
	if code != 200 || m["success"] != true {
		t.Fatalf("create: %d %s", code, raw)
	}
	id := int(m["new_contract"].(float64))
	row := func() map[string]any {
		t.Helper()
		code, m, raw := f.do(t, "GET", "/api/v1/instances/?limit=25", "")
		if code != 200 {
			t.Fatalf("list: %d %s", code, raw)
		}
		for _, r := range m["instances"].([]any) {
			if r := r.(map[string]any); int(r["id"].(float64)) == id {
				return r
			}
		}
		return nil
	}
	if r := row(); r == nil || r["actual_status"] != nil || r["label"] != "gpur-a" || r["ports"] != nil {
		t.Fatalf("a new instance: %v", r)
	}
	f.clk.Step(6 * time.Second)
	if r := row(); r["actual_status"] != "loading" {
		t.Errorf("half booted: %v", r["actual_status"])
	}
	f.clk.Step(5 * time.Second)
	r := row()
	ports, _ := r["ports"].(map[string]any)
	if r["actual_status"] != "running" || ports["8080/tcp"] == nil {
		t.Errorf("running: %v %v", r["actual_status"], r["ports"])
	}
	if env, _ := r["extra_env"].([]any); len(env) != 1 {
		t.Errorf("extra_env %v", r["extra_env"])
	}
	// The host is taken: a second create on it is the spec's 404.
	code, m, _ = f.do(t, "PUT", "/api/v0/asks/12/", `{"image": "busybox"}`)
	if code != 404 || !strings.Contains(m["msg"].(string), "no_such_ask") || m["ask_id"] != 12.0 {
		t.Errorf("create on a rented host: %d %v", code, m)
	}
	code, _, _ = f.do(t, "DELETE", "/api/v0/instances/"+itoa(id)+"/", "")
	if code != 200 || row() != nil {
		t.Errorf("destroy: %d", code)
	}
	if code, m, _ := f.do(t, "DELETE", "/api/v0/instances/"+itoa(id)+"/", ""); code != 404 || m["error"] != "not_found" {
		t.Errorf("second destroy: %d %v", code, m)
	}
	if c := f.sim.Core().Counters(); c.Launches["gpur-a"] != 1 {
		t.Errorf("launches %v", c.Launches)
	}
}

func TestCreateRefusals(t *testing.T) {
	t.Parallel()
	f := start(t, vastaisim.Config{Config: cloudsim.Config{Quota: 1}})
	for body, want := range map[string]string{
		`{"image": "docker.io/vastai/kvm:ubuntu_terminal", "vm": true, "runtype": "ssh_direct"}`: "no_ssh_key_for_vm",
		`{"image": "busybox", "vm": true}`:   "invalid_args",
		`{"image": "busybox", "price": 0.1}`: "invalid_price",
		`{"image": ""}`:                      "invalid_args",
	} {
		if code, m, raw := f.do(t, "PUT", "/api/v0/asks/11/", body); code != 400 || m["error"] != want {
			t.Errorf("create %s: %d %s, want 400 %s", body, code, raw, want)
		}
	}
	if code, _, _ := f.do(t, "PUT", "/api/v0/asks/12/", `{"image": "busybox", "vm": true, "runtype": "ssh_direct"}`); code != 400 {
		t.Errorf("a VM on a host without VMs: %d", code)
	}
	if code, _, _ := f.do(t, "PUT", "/api/v0/asks/99/", `{"image": "busybox"}`); code != 404 {
		t.Errorf("an unknown ask: %d", code)
	}
	if code, _, _ := f.do(t, "PUT", "/api/v0/asks/12/", `{"image": "busybox"}`); code != 200 {
		t.Fatalf("the first create: %d", code)
	}
	if code, m, _ := f.do(t, "PUT", "/api/v0/asks/11/", `{"image": "busybox"}`); code != 403 || m["error"] != "insufficient_credit" {
		t.Errorf("over the quota: %d %v", code, m)
	}
	if code, m, _ := f.doKey(t, "wrong", "PUT", "/api/v0/asks/11/", `{"image": "busybox"}`); code != 401 || m["error"] != "auth_error" {
		t.Errorf("bad key: %d %v", code, m)
	}
}

func TestBids(t *testing.T) {
	t.Parallel()
	f := start(t, vastaisim.Config{})
	code, m, raw := f.do(t, "PUT", "/api/v0/asks/11/", `{"image": "busybox", "label": "gpur-bid", "price": 0.16, "cancel_unavail": true}`)
	if code != 200 {
		t.Fatalf("bid: %d %s", code, raw)
	}
	id := itoa(int(m["new_contract"].(float64)))
	state := func() (string, float64, float64) {
		_, m, _ := f.do(t, "GET", "/api/v1/instances/", "")
		r := m["instances"].([]any)[0].(map[string]any)
		st, _ := r["actual_status"].(string)
		return st + "/" + r["intended_status"].(string), r["min_bid"].(float64), r["dph_base"].(float64)
	}
	if st, minBid, bid := state(); st != "running/running" || minBid != 0.15 || bid != 0.16 {
		t.Fatalf("before the outbid: %s %v %v", st, minBid, bid)
	}
	if err := f.sim.Outbid(id, 0.30); err != nil {
		t.Fatal(err)
	}
	if st, minBid, _ := state(); st != "stopped/running" || minBid != 0.301 {
		t.Fatalf("outbid: %s %v", st, minBid)
	}
	if ms := f.sim.Machines(); !ms[0].Preempted || ms[0].Active || !ms[0].Live || !ms[0].Spot {
		t.Errorf("outbid machine %+v", ms[0])
	}
	// Too low stays stopped; at the minimum it resumes.
	if code, _, _ := f.do(t, "PUT", "/api/v0/instances/bid_price/"+id+"/", `{"client_id": "me", "price": 0.25}`); code != 200 {
		t.Fatal(code)
	}
	if st, _, _ := state(); st != "stopped/running" {
		t.Errorf("after a losing re-bid: %s", st)
	}
	if code, _, _ := f.do(t, "PUT", "/api/v0/instances/bid_price/"+id+"/", `{"client_id": "me", "price": 0.301}`); code != 200 {
		t.Fatal(code)
	}
	if st, _, bid := state(); st != "running/running" || bid != 0.301 {
		t.Errorf("after a winning re-bid: %s %v", st, bid)
	}
	if code, m, _ := f.do(t, "PUT", "/api/v0/instances/bid_price/424242/", `{"client_id": "me", "price": 0.3}`); code != 404 || m["error"] != "no_such_instance" {
		t.Errorf("re-bid of a missing instance: %d %v", code, m)
	}
	// A new bid under the competing one cannot start: 410 with
	// cancel_unavail, created stopped without.
	if code, _, _ := f.do(t, "DELETE", "/api/v0/instances/"+id+"/", ""); code != 200 {
		t.Fatal(code)
	}
	if code, m, _ := f.do(t, "PUT", "/api/v0/asks/11/", `{"image": "busybox", "price": 0.2, "cancel_unavail": true}`); code != 410 || m["error"] != "no_such_ask" {
		t.Errorf("a losing bid with cancel_unavail: %d %v", code, m)
	}
	if code, _, _ := f.do(t, "PUT", "/api/v0/asks/11/", `{"image": "busybox", "label": "gpur-wait", "price": 0.2}`); code != 200 {
		t.Errorf("a losing bid without cancel_unavail: %d", code)
	}
	if st, _, _ := state(); st != "stopped/running" {
		t.Errorf("a losing bid waits stopped: %s", st)
	}
	if err := f.sim.Preempt("1"); err == nil {
		t.Error("Preempt of an unknown instance succeeded")
	}
}

func TestVMSSHAndKeys(t *testing.T) {
	t.Parallel()
	f := start(t, vastaisim.Config{})
	if code, _, _ := f.do(t, "GET", "/api/v0/ssh/", ""); code != 404 {
		t.Errorf("no keys yet: %d, want the spec's 404", code)
	}
	pemKey, pub, _ := sshboot.NewKey("op")
	signer, _, _ := sshboot.LoadKey(pemKey, "")
	if code, m, raw := f.do(t, "POST", "/api/v0/ssh/", `{"ssh_key": "`+pub+`"}`); code != 200 || m["success"] != true {
		t.Fatalf("create key: %d %s", code, raw)
	}
	if code, _, raw := f.do(t, "GET", "/api/v0/ssh/", ""); code != 200 || !strings.Contains(string(raw), pub) {
		t.Errorf("keys: %d %s", code, raw)
	}
	code, m, raw := f.do(t, "PUT", "/api/v0/asks/11/", `{"image": "docker.io/vastai/kvm:ubuntu_terminal", "vm": true, "runtype": "ssh_direct", "label": "gpur-vm"}`)
	if code != 200 {
		t.Fatalf("VM: %d %s", code, raw)
	}
	id := itoa(int(m["new_contract"].(float64)))
	_, m, _ = f.do(t, "GET", "/api/v1/instances/", "")
	r := m["instances"].([]any)[0].(map[string]any)
	ports := r["ports"].(map[string]any)["22/tcp"].([]any)[0].(map[string]any)
	port, _ := f.sim.SSHPort(id)
	if r["public_ipaddr"] != "127.0.0.1" || ports["HostPort"] != itoa(port) || r["ssh_port"] != float64(port) {
		t.Fatalf("VM row: %v", r)
	}
	// A key registered after the VM was created is not on it.
	pem2, pub2, _ := sshboot.NewKey("late")
	late, _, _ := sshboot.LoadKey(pem2, "")
	f.do(t, "POST", "/api/v0/ssh/", `{"ssh_key": "`+pub2+`"}`)
	target := providersEndpoint(port)
	o := sshboot.Options{Attempts: 1, Timeout: 5 * time.Second}
	if _, err := sshboot.Run(t.Context(), target, late, "#!/bin/sh\ntrue\n", o); err == nil {
		t.Error("a key registered after the VM was created logged in")
	}
	script := "#!/bin/sh\nhostnamectl set-hostname gpur-vm\n"
	if _, err := sshboot.Run(t.Context(), target, signer, script, o); err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	ms := f.sim.Machines()
	if !ms[0].Active || ms[0].UserData != script || ms[0].Container {
		t.Errorf("machine %+v", ms[0])
	}
}

func TestPaging(t *testing.T) {
	t.Parallel()
	var hs []vastaisim.Host
	for i := range 30 {
		hs = append(hs, vastaisim.Host{ID: 100 + i, GPUName: "RTX 4090", NumGPUs: 1, Geolocation: "Texas, US", DPHTotal: 0.4, Reliability: 0.99, Verified: true})
	}
	f := start(t, vastaisim.Config{Hosts: hs})
	for i := range 30 {
		if code, _, _ := f.do(t, "PUT", "/api/v0/asks/"+itoa(100+i)+"/", `{"image": "busybox", "label": "gpur-p"}`); code != 200 {
			t.Fatal(code)
		}
	}
	var seen []float64
	path := "/api/v1/instances/?limit=25&order_by=%5B%7B%22col%22%3A%22id%22%2C%22dir%22%3A%22asc%22%7D%5D"
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatal("too many pages")
		}
		code, m, raw := f.do(t, "GET", path, "")
		if code != 200 {
			t.Fatalf("page: %d %s", code, raw)
		}
		for _, r := range m["instances"].([]any) {
			seen = append(seen, r.(map[string]any)["id"].(float64))
		}
		next, _ := m["next_token"].(string)
		if next == "" {
			break
		}
		path = "/api/v1/instances/?limit=25&after_token=" + next
	}
	if len(seen) != 30 || !slices.IsSorted(seen) {
		t.Errorf("paged ids %v", seen)
	}
	if code, m, _ := f.do(t, "GET", "/api/v1/instances/?after_token=bogus", ""); code != 400 || m["error"] != "invalid_token" {
		t.Errorf("bad token: %d %v", code, m)
	}
	if code, _, _ := f.do(t, "GET", "/api/v1/instances/?select_filters=%7B%22dph_total%22%3A%7B%22lte%22%3A1%7D%7D", ""); code != 400 {
		t.Errorf("a computed field filter: %d", code)
	}
}

func TestFaults(t *testing.T) {
	t.Parallel()
	f := start(t, vastaisim.Config{Config: cloudsim.Config{Faults: cloudsim.Faults{RateLimitRate: 1, RetryAfter: 3 * time.Second}}})
	req, _ := http.NewRequest("DELETE", f.srv.URL+"/api/v0/instances/1/", nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "3" {
		t.Errorf("rate limited: %s, Retry-After %q", resp.Status, resp.Header.Get("Retry-After"))
	}
	f.sim.Core().SetFaults(cloudsim.Faults{Down: true})
	if code, m, _ := f.do(t, "GET", "/api/v1/instances/", ""); code != 503 || m["success"] != false {
		t.Errorf("down: %d %v", code, m)
	}
}

func TestGenerateHosts(t *testing.T) {
	t.Parallel()
	m := vastaisim.Market{Hosts: 50_000, Seed: 7}
	a, b := vastaisim.GenerateHosts(m), vastaisim.GenerateHosts(m)
	if len(a) != 50_000 || !slices.Equal(a, b) {
		t.Fatal("the market is not reproducible")
	}
	gpus, locs := map[string]bool{}, map[string]bool{}
	spot, vms := 0, 0
	for _, h := range a {
		gpus[h.GPUName+itoa(h.GPURAM)], locs[h.Geolocation] = true, true
		if h.MinBid > 0 {
			spot++
			if h.MinBid >= h.DPHTotal {
				t.Fatalf("host %d bids above its on-demand price", h.ID)
			}
		}
		if h.VMsEnabled {
			vms++
		}
	}
	if len(gpus) != 40 || len(locs) != 60 || spot < 35_000 || vms < 10_000 {
		t.Errorf("%d models, %d locations, %d with bids, %d with VMs", len(gpus), len(locs), spot, vms)
	}
	sim := vastaisim.New(vastaisim.Config{Market: &m}, nil)
	if n := len(sim.Core().Catalog()); n != 50_000 {
		t.Errorf("catalog of %d entries", n)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func providersEndpoint(port int) providers.SSHEndpoint {
	return providers.SSHEndpoint{Host: "127.0.0.1", Port: port, User: "root"}
}
