package vastai_test

import (
	"context"
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/nodeagent"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	vastaisim "github.com/solanyn/gpu-operator/pkg/cloudsim/vastai"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/vastai"
	"github.com/solanyn/gpu-operator/pkg/providers/vastai/vastaispec"
)

// hosts is a small marketplace: VM and container hosts, with and without
// bids, and hosts the default filters leave out.
var hosts = []vastaisim.Host{
	{ID: 1001, GPUName: "RTX 4090", NumGPUs: 1, GPURAM: 24564, Geolocation: "California, US", DPHTotal: 0.42, MinBid: 0.18, Reliability: 0.995, Verified: true, VMsEnabled: true},
	{ID: 1002, GPUName: "RTX 4090", NumGPUs: 1, GPURAM: 24564, Geolocation: "Texas, US", DPHTotal: 0.39, MinBid: 0.16, Reliability: 0.99, Verified: true},
	{ID: 1003, GPUName: "A100 SXM4", NumGPUs: 8, GPURAM: 81920, Geolocation: "Hesse, DE", DPHTotal: 9.6, Reliability: 0.999, Verified: true, VMsEnabled: true},
	{ID: 1004, GPUName: "A100 PCIE", NumGPUs: 2, GPURAM: 40960, Geolocation: "Istanbul, TR", DPHTotal: 1.5, MinBid: 0.7, Reliability: 0.985, Verified: true},
	// Left out: unverified, unreliable, a GPU the operator does not map.
	{ID: 1005, GPUName: "RTX 4090", NumGPUs: 1, GPURAM: 24564, Geolocation: "Texas, US", DPHTotal: 0.20, MinBid: 0.08, Reliability: 0.999, Verified: false},
	{ID: 1006, GPUName: "RTX 4090", NumGPUs: 1, GPURAM: 24564, Geolocation: "Texas, US", DPHTotal: 0.21, MinBid: 0.09, Reliability: 0.90, Verified: true},
	{ID: 1007, GPUName: "RTX 3080", NumGPUs: 1, GPURAM: 10240, Geolocation: "Texas, US", DPHTotal: 0.10, MinBid: 0.05, Reliability: 0.999, Verified: true},
}

type env struct {
	st  *stack.Stack
	sim *vastaisim.Server
	a   *vastai.Adapter
}

func start(t *testing.T, cfg vastaisim.Config, edit func(*vastai.Config)) env {
	t.Helper()
	if cfg.Hosts == nil {
		cfg.Hosts = hosts
	}
	cfg.APIKey = "vast-test-key"
	st, err := stack.Start(stack.Config{VastAI: &cfg}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	ps, err := st.Adapters(stack.AdapterOptions{CallTimeout: 10 * time.Second, VastAI: edit,
		Transport: func(string) http.RoundTripper { return vastaispec.Transport(t, nil) }})
	if err != nil {
		t.Fatal(err)
	}
	return env{st: st, sim: st.VastAI, a: ps[0].(*vastai.Adapter)}
}

func ctxFor(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func offer(t *testing.T, offers []providers.Offer, ask string, c providers.CapacityType) providers.Offer {
	t.Helper()
	i := slices.IndexFunc(offers, func(o providers.Offer) bool { return o.InstanceType == ask && o.Capacity == c })
	if i < 0 {
		t.Fatalf("no %s offer for ask %s in %+v", c, ask, offers)
	}
	return offers[i]
}

func TestOffers(t *testing.T) {
	t.Parallel()
	e := start(t, vastaisim.Config{}, nil)
	offers, err := e.a.Offers(ctxFor(t))
	if err != nil {
		t.Fatal(err)
	}
	// A refresh is two searches, whatever the market's size.
	if n := e.sim.Core().Counters().Requests["POST /api/v0/bundles"]; n != 2 {
		t.Errorf("a refresh made %d searches, want 2", n)
	}
	want := []providers.Offer{
		{InstanceType: "1001", GPUType: "RTX4090", GPUCount: 1, Region: "us-west-1", ProviderRegion: "California, US", Capacity: providers.OnDemand, HourlyPrice: 0.42, Kind: providers.VM},
		{InstanceType: "1001", GPUType: "RTX4090", GPUCount: 1, Region: "us-west-1", ProviderRegion: "California, US", Capacity: providers.Spot, HourlyPrice: 0.18, Kind: providers.VM},
		{InstanceType: "1002", GPUType: "RTX4090", GPUCount: 1, Region: "us-south-1", ProviderRegion: "Texas, US", Capacity: providers.OnDemand, HourlyPrice: 0.39, Kind: providers.Container},
		{InstanceType: "1002", GPUType: "RTX4090", GPUCount: 1, Region: "us-south-1", ProviderRegion: "Texas, US", Capacity: providers.Spot, HourlyPrice: 0.16, Kind: providers.Container},
		{InstanceType: "1003", GPUType: "A100-80GB", GPUCount: 8, Region: "eu-central-1", ProviderRegion: "Hesse, DE", Capacity: providers.OnDemand, HourlyPrice: 9.6, Kind: providers.VM},
		// Turkey is in no table: kept under its country, never dropped.
		{InstanceType: "1004", GPUType: "A100", GPUCount: 2, Region: "tr-country-1", ProviderRegion: "Istanbul, TR", Capacity: providers.OnDemand, HourlyPrice: 1.5, Kind: providers.Container},
		{InstanceType: "1004", GPUType: "A100", GPUCount: 2, Region: "tr-country-1", ProviderRegion: "Istanbul, TR", Capacity: providers.Spot, HourlyPrice: 0.7, Kind: providers.Container},
	}
	for i := range want {
		want[i].Provider, want[i].Available, want[i].PriceSource = providers.VastAI, true, providers.PriceSourceAPI
	}
	key := func(o providers.Offer) string { return o.InstanceType + "/" + string(o.Capacity) }
	slices.SortFunc(offers, func(a, b providers.Offer) int { return strings.Compare(key(a), key(b)) })
	if len(offers) != len(want) {
		t.Fatalf("got %d offers, want %d:\n%+v", len(offers), len(want), offers)
	}
	for i := range want {
		if offers[i] != want[i] {
			t.Errorf("offer %d:\n got %+v\nwant %+v", i, offers[i], want[i])
		}
	}

	// Filters lifted: unverified and unreliable hosts appear; NoVMs makes
	// VM hosts containers.
	e2 := start(t, vastaisim.Config{}, func(c *vastai.Config) {
		c.Filters = vastai.Filters{AllowUnverified: true, MinReliability: -1, NoVMs: true}
	})
	offers, err = e2.a.Offers(ctxFor(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, ask := range []string{"1005", "1006"} {
		offer(t, offers, ask, providers.OnDemand)
	}
	if o := offer(t, offers, "1001", providers.OnDemand); o.Kind != providers.Container {
		t.Errorf("with NoVMs, host 1001 is a %s offer", o.Kind)
	}
	if slices.ContainsFunc(offers, func(o providers.Offer) bool { return o.InstanceType == "1007" }) {
		t.Error("an RTX 3080 (no canonical type) was offered")
	}
}

func TestSearchBody(t *testing.T) {
	t.Parallel()
	a, err := vastai.New(vastai.Config{Key: func() string { return "k" }})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(a.SearchBody("bid"))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{
		"type": `"bid"`, "verified": `{"eq":true}`, "rentable": `{"eq":true}`, "rented": `{"eq":false}`,
		"reliability": `{"gte":0.98}`, "order": `[["min_bid","asc"],["id","asc"]]`, "limit": "10000", "allocated_storage": "50",
	} {
		b, _ := json.Marshal(got[k])
		if string(b) != want {
			t.Errorf("%s = %s, want %s", k, b, want)
		}
	}
	if names, _ := got["gpu_name"].(map[string]any)["in"].([]any); !slices.Contains(names, any("RTX 4090")) || !slices.Contains(names, any("H100 SXM")) {
		t.Errorf("gpu_name filter %v lacks the mapped names", got["gpu_name"])
	}
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	if err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 20*time.Second, true, func(context.Context) (bool, error) {
		return cond(), nil
	}); err != nil {
		t.Fatalf("timed out waiting for %s", what)
	}
}

func listed(t *testing.T, a *vastai.Adapter, id string) providers.Instance {
	t.Helper()
	list, err := a.Instances(ctxFor(t))
	if err != nil {
		t.Fatalf("Instances: %v", err)
	}
	i := slices.IndexFunc(list, func(in providers.Instance) bool { return in.ID == id })
	if i < 0 {
		t.Fatalf("instance %s not listed in %+v", id, list)
	}
	return list[i]
}

// The product's first example: an RTX 4090 interruptible VM under the
// spot cap, bid by the policy, bootstrapped over SSH, joining as a Node.
func TestSpotVMBootstrapOverSSH(t *testing.T) {
	t.Parallel()
	e := start(t, vastaisim.Config{Config: cloudsim.Config{BootDelay: 300 * time.Millisecond}}, nil)
	ctx := ctxFor(t)
	offers, err := e.a.Offers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	o := offer(t, offers, "1001", providers.Spot)
	bid, ok := e.a.BidFor(o.HourlyPrice, 0.25)
	if !ok || bid != 0.189 {
		t.Fatalf("BidFor(%v, 0.25) = %v, %v; want 0.189 (min bid + 5%%)", o.HourlyPrice, bid, ok)
	}
	if d := providers.DeliveryOf(e.a); d != providers.DeliverOverSSH {
		t.Fatalf("delivery %s", d)
	}
	name := providers.MachineNamePrefix + "spot-vm-1"
	in, err := e.a.Launch(ctx, providers.LaunchRequest{Name: name, Offer: o, BidPrice: bid, UserData: "#!/bin/sh\nnot sent\n"})
	if err != nil {
		t.Fatalf("Launch: %v", err)
	}
	if !in.Spot || in.BidPrice != bid || in.Name != name {
		t.Errorf("Launch returned %+v", in)
	}
	// The operator's key was registered first; the create is a VM bid.
	if keys := e.sim.AccountKeys(); len(keys) != 1 {
		t.Errorf("account keys %v, want the operator's", keys)
	}
	var body map[string]any
	if err := json.Unmarshal(e.sim.CreateBodies()[0], &body); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"vm": true, "runtype": "ssh_direct", "price": 0.189, "label": name,
		"image": vastai.DefaultVMImage, "cancel_unavail": true} {
		if body[k] != want {
			t.Errorf("create %s = %v, want %v", k, body[k], want)
		}
	}
	if _, ok := body["onstart"]; ok {
		t.Error("a VM create carried onstart")
	}
	// Booting, then running with its SSH endpoint.
	var got providers.Instance
	waitFor(t, "the VM to run", func() bool { got = listed(t, e.a, in.ID); return got.State == providers.StateRunning })
	if got.SSH == nil || got.SSH.Host != "127.0.0.1" || got.SSH.User != "root" || !got.Spot || got.BidPrice != bid || got.Name != name {
		t.Fatalf("running VM listed as %+v", got)
	}
	if ms := e.sim.Machines(); ms[0].Active {
		t.Error("the VM is active (would join) before its bootstrap was delivered")
	}
	script := "#!/bin/sh\nhostnamectl set-hostname " + name + "\n"
	res, err := e.st.VastAIBootstrap(ctx, got, script)
	if err != nil {
		t.Fatalf("bootstrap: %v", err)
	}
	if res.HostKey == "" || !res.Started {
		t.Errorf("bootstrap result %+v", res)
	}
	runs, err := e.sim.SSHRuns(in.ID)
	if err != nil || len(runs) != 1 || runs[0].Stdin != script || runs[0].User != "root" {
		t.Fatalf("SSH runs %+v (%v), want the script once as root", runs, err)
	}
	m := e.sim.Machines()[0]
	if !m.Active || m.UserData != script || nodeagent.NodeName(m) != name {
		t.Errorf("machine after bootstrap %+v (node %q)", m, nodeagent.NodeName(m))
	}
	if err := e.a.Terminate(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	if err := e.a.Terminate(ctx, in.ID); err != nil {
		t.Errorf("second Terminate: %v", err)
	}
}

func TestOutbidAndRaiseBid(t *testing.T) {
	t.Parallel()
	e := start(t, vastaisim.Config{}, nil)
	ctx := ctxFor(t)
	offers, err := e.a.Offers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	o := offer(t, offers, "1002", providers.Spot)
	bid, _ := vastai.BidFor(o.HourlyPrice, 0.25)
	in, err := e.a.Launch(ctx, providers.LaunchRequest{Name: providers.MachineNamePrefix + "bid", Offer: o, BidPrice: bid,
		Container: &providers.ContainerSpec{Image: "busybox"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := listed(t, e.a, in.ID); got.State != providers.StateRunning || got.Outbid {
		t.Fatalf("before the outbid: %+v", got)
	}
	// Someone bids 0.20: the instance is stopped and says why.
	if err := e.sim.Outbid(in.ID, 0.20); err != nil {
		t.Fatal(err)
	}
	got := listed(t, e.a, in.ID)
	if got.State != providers.StateInterrupted || !got.Outbid || got.MinBid != 0.201 || got.BidPrice != bid ||
		!strings.Contains(got.NativeState, "outbid") {
		t.Fatalf("after the outbid: %+v", got)
	}
	// A cap of 0.20 cannot win it back; 0.25 can.
	if b, ok := e.a.BidFor(got.MinBid, 0.20); ok {
		t.Errorf("BidFor(%v, 0.20) = %v, want no bid", got.MinBid, b)
	}
	rebid, ok := e.a.BidFor(got.MinBid, 0.25)
	if !ok || rebid != 0.212 {
		t.Fatalf("BidFor(%v, 0.25) = %v, %v", got.MinBid, rebid, ok)
	}
	if err := e.a.RaiseBid(ctx, in.ID, rebid); err != nil {
		t.Fatal(err)
	}
	if got := listed(t, e.a, in.ID); got.State != providers.StateRunning || got.Outbid || got.BidPrice != rebid {
		t.Errorf("after the re-bid: %+v", got)
	}
	// A missing instance is not found; a bid out of range is refused unsent.
	if err := e.a.RaiseBid(ctx, "424242", 0.3); !providers.IsClass(err, providers.ClassNotFound) {
		t.Errorf("RaiseBid of a missing instance: %v", err)
	}
	before := e.sim.Core().Counters().Requests["PUT /api/v0/instances/bid_price/{id}"]
	if err := e.a.RaiseBid(ctx, in.ID, 40); !providers.IsClass(err, providers.ClassInvalid) {
		t.Errorf("RaiseBid of $40/h: %v", err)
	}
	if e.sim.Core().Counters().Requests["PUT /api/v0/instances/bid_price/{id}"] != before {
		t.Error("an out-of-range bid was sent")
	}
}

func TestContainerLaunch(t *testing.T) {
	t.Parallel()
	e := start(t, vastaisim.Config{}, nil)
	ctx := ctxFor(t)
	offers, err := e.a.Offers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	o := offer(t, offers, "1002", providers.OnDemand)
	c := &providers.ContainerSpec{Image: "vllm/vllm-openai:latest", Args: []string{"--port", "8000"},
		Env: map[string]string{"MODEL_ID": "m", "HF_TOKEN": "t0k"}, Ports: []providers.Port{{Port: 8000, Protocol: "http"}}}
	in, err := e.a.Launch(ctx, providers.LaunchRequest{Name: providers.MachineNamePrefix + "c1", Offer: o, Container: c, BidPrice: 0.5})
	if err != nil {
		t.Fatal(err)
	}
	if in.Spot || in.BidPrice != 0 {
		t.Errorf("an on-demand launch is %+v", in)
	}
	var body map[string]any
	if err := json.Unmarshal(e.sim.CreateBodies()[0], &body); err != nil {
		t.Fatal(err)
	}
	env, _ := body["env"].(map[string]any)
	if body["runtype"] != "args" || body["image"] != c.Image || env["MODEL_ID"] != "m" || env["-p 8000:8000"] != "1" || body["price"] != nil || body["vm"] != nil {
		t.Errorf("create body %v", body)
	}
	if args, _ := body["args"].([]any); len(args) != 2 || args[0] != "--port" {
		t.Errorf("create args %v", body["args"])
	}
	if len(e.sim.AccountKeys()) != 0 {
		t.Error("a container launch registered an SSH key")
	}
	got := listed(t, e.a, in.ID)
	if got.State != providers.StateRunning || len(got.Ports) != 1 || got.Ports[0].Port != 8000 || got.Ports[0].PublicPort == 0 ||
		got.Ports[0].PublicIP == "" || got.PublicIP == "" || got.SSH != nil {
		t.Errorf("listed %+v", got)
	}
	if m := e.sim.Machines()[0]; !m.Container || !m.Active {
		t.Errorf("machine %+v", m)
	}
	// Names the env object could read as Docker options are refused.
	c.Env = map[string]string{"-v /:/host": "1"}
	if _, err := e.a.Launch(ctx, providers.LaunchRequest{Name: providers.MachineNamePrefix + "c2", Offer: o, Container: c}); !providers.IsClass(err, providers.ClassInvalid) {
		t.Errorf("an env name starting with -: %v", err)
	}
}

func TestLaunchRefusals(t *testing.T) {
	t.Parallel()
	e := start(t, vastaisim.Config{}, func(c *vastai.Config) { c.SSHPublicKey = nil })
	ctx := ctxFor(t)
	offers, err := e.a.Offers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	vm, spot, ctr := offer(t, offers, "1001", providers.OnDemand), offer(t, offers, "1002", providers.Spot), offer(t, offers, "1002", providers.OnDemand)
	bogus := ctr
	bogus.InstanceType = "m-1002"
	for name, req := range map[string]providers.LaunchRequest{
		"VM without an SSH key":  {Name: "gpur-a", Offer: vm},
		"spot without a bid":     {Name: "gpur-b", Offer: spot, Container: &providers.ContainerSpec{Image: "busybox"}},
		"container without one":  {Name: "gpur-c", Offer: ctr},
		"ask that is no integer": {Name: "gpur-d", Offer: bogus, Container: &providers.ContainerSpec{Image: "busybox"}},
		"port over 65535":        {Name: "gpur-e", Offer: ctr, Container: &providers.ContainerSpec{Image: "busybox", Ports: []providers.Port{{Port: 70000}}}},
	} {
		if _, err := e.a.Launch(ctx, req); !providers.IsClass(err, providers.ClassInvalid) {
			t.Errorf("%s: %v, want ClassInvalid", name, err)
		}
	}
	if n := len(e.sim.CreateBodies()); n != 0 {
		t.Errorf("%d creates sent for refused launches", n)
	}
}

func TestCapacityMisses(t *testing.T) {
	t.Parallel()
	e := start(t, vastaisim.Config{}, nil)
	ctx := ctxFor(t)
	offers, err := e.a.Offers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Rented by someone else since the refresh: 404 no_such_ask.
	o := offer(t, offers, "1002", providers.OnDemand)
	e.sim.Core().SetCapacity("1002", "Texas, US", 0)
	_, err = e.a.Launch(ctx, providers.LaunchRequest{Name: "gpur-gone", Offer: o, Container: &providers.ContainerSpec{Image: "busybox"}})
	var pe *providers.Error
	if !providers.IsClass(err, providers.ClassCapacity) || !asError(err, &pe) || pe.HTTPStatus != 404 {
		t.Errorf("a rented ask: %v, want ClassCapacity (404)", err)
	}
	e.sim.Core().SetCapacity("1002", "Texas, US", 1)
	// A bid that no longer wins (someone bid more since): 410.
	first, err := e.a.Launch(ctx, providers.LaunchRequest{Name: "gpur-first", Offer: offer(t, offers, "1004", providers.Spot), BidPrice: 0.75,
		Container: &providers.ContainerSpec{Image: "busybox"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.sim.Outbid(first.ID, 0.9); err != nil {
		t.Fatal(err)
	}
	if err := e.a.Terminate(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	_, err = e.a.Launch(ctx, providers.LaunchRequest{Name: "gpur-late", Offer: offer(t, offers, "1004", providers.Spot), BidPrice: 0.75,
		Container: &providers.ContainerSpec{Image: "busybox"}})
	if !providers.IsClass(err, providers.ClassCapacity) || !asError(err, &pe) || pe.HTTPStatus != 410 {
		t.Errorf("a losing bid: %v, want ClassCapacity (410)", err)
	}
	if n := e.sim.Core().Counters().Launches["gpur-late"]; n != 0 {
		t.Errorf("a losing bid created %d instances", n)
	}
}

func asError(err error, pe **providers.Error) bool {
	e, ok := err.(*providers.Error)
	*pe = e
	return ok
}

// An ambiguous create is ClassTransient; the instance is found by label.
func TestAmbiguousCreate(t *testing.T) {
	t.Parallel()
	e := start(t, vastaisim.Config{}, nil)
	ctx := ctxFor(t)
	offers, err := e.a.Offers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.sim.FailAfterCreate(1)
	name := providers.MachineNamePrefix + "ambiguous"
	_, err = e.a.Launch(ctx, providers.LaunchRequest{Name: name, Offer: offer(t, offers, "1002", providers.OnDemand),
		Container: &providers.ContainerSpec{Image: "busybox"}})
	if !providers.IsClass(err, providers.ClassTransient) {
		t.Fatalf("Launch: %v, want ClassTransient", err)
	}
	list, err := e.a.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Name != name {
		t.Errorf("Instances %+v, want the instance the ambiguous create made", list)
	}
}

// Instances pages through the account 25 at a time and keeps only the
// operator's.
func TestInstancesPaging(t *testing.T) {
	t.Parallel()
	var many []vastaisim.Host
	for i := range 60 {
		many = append(many, vastaisim.Host{ID: 5000 + i, GPUName: "RTX 4090", NumGPUs: 1, GPURAM: 24564, Geolocation: "Texas, US",
			DPHTotal: 0.4, Reliability: 0.99, Verified: true})
	}
	e := start(t, vastaisim.Config{Config: cloudsim.Config{RequestsPerSecond: 1000}, Hosts: many}, nil)
	ctx := ctxFor(t)
	offers, err := e.a.Offers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i, o := range offers {
		name := providers.MachineNamePrefix + "page-" + o.InstanceType
		if i%10 == 9 {
			name = "someone-elses-" + o.InstanceType
		}
		if _, err := e.a.Launch(ctx, providers.LaunchRequest{Name: name, Offer: o, Container: &providers.ContainerSpec{Image: "busybox"}}); err != nil {
			t.Fatal(err)
		}
	}
	before := e.sim.Core().Counters().Requests["GET /api/v1/instances"]
	list, err := e.a.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if calls := e.sim.Core().Counters().Requests["GET /api/v1/instances"] - before; calls != 3 {
		t.Errorf("listing 60 instances took %d calls, want 3 (25 a page)", calls)
	}
	if len(list) != 54 {
		t.Errorf("listed %d of the operator's instances, want 54", len(list))
	}
}

func TestClassifyResponse(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name   string
		status int
		header http.Header
		body   string
		class  providers.ErrorClass
		code   string
		retry  time.Duration
	}{
		{"bad key", 401, nil, `{"success": false, "error": "auth_error", "msg": "Invalid user key"}`, providers.ClassUnauthorized, "auth_error", 0},
		{"bad key on the search", 404, nil, `{"error": "auth_error", "msg": "Invalid user key"}`, providers.ClassUnauthorized, "auth_error", 0},
		{"rate limited", 429, http.Header{"Retry-After": {"7"}}, `{"detail": "API requests too frequent endpoint threshold=4.5"}`, providers.ClassRateLimited, "", 7 * time.Second},
		{"rate limited, no header", 429, nil, `{"success": false, "error": "rate_limit_exceeded", "msg": "API requests too frequent endpoint threshold=3.0"}`, providers.ClassRateLimited, "rate_limit_exceeded", providers.DefaultRetryAfter},
		{"ask gone", 404, nil, `{"success": false, "error": "invalid_args", "msg": "error 404/3603: no_such_ask Instance type by id 1234567 is not available.", "ask_id": 1234567}`, providers.ClassCapacity, "invalid_args", 0},
		{"no longer available", 410, nil, `{"success": false, "error": "no_such_ask", "msg": "error 410/3907: no_such_ask Instance type 1234567 is no longer available."}`, providers.ClassCapacity, "no_such_ask", 0},
		{"bid below the minimum", 400, nil, `{"success": false, "error": "invalid_price", "msg": "bid too low"}`, providers.ClassCapacity, "invalid_price", 0},
		{"no credit", 403, nil, `{"success": false, "error": "insufficient_credit", "msg": "insufficient credit"}`, providers.ClassQuota, "insufficient_credit", 0},
		{"not your own", 403, nil, `{"success": false, "error": "invalid_args", "msg": "error 403/3586: Offer 1234567 is not your own."}`, providers.ClassInvalid, "invalid_args", 0},
		{"forbidden", 403, nil, `{"success": false, "error": "forbidden", "msg": "no"}`, providers.ClassUnauthorized, "forbidden", 0},
		{"destroy of a missing instance", 404, nil, `{"success": false, "error": "not_found", "msg": "Instance not found"}`, providers.ClassNotFound, "not_found", 0},
		{"no such instance", 404, nil, `{"success": false, "error": "no_such_instance", "msg": "Instance with that ID does not exist."}`, providers.ClassNotFound, "no_such_instance", 0},
		{"no ssh key for a VM", 400, nil, `{"success": false, "error": "no_ssh_key_for_vm", "msg": "add a key"}`, providers.ClassInvalid, "no_ssh_key_for_vm", 0},
		{"bad args", 400, nil, `{"success": false, "error": "invalid_args", "msg": "error 400/3467: Invalid args"}`, providers.ClassInvalid, "invalid_args", 0},
		{"server error", 500, nil, `<html>oops</html>`, providers.ClassTransient, "", 0},
		{"unavailable", 503, http.Header{"Retry-After": {"3"}}, `{"success": false, "error": "service_unavailable"}`, providers.ClassTransient, "service_unavailable", 3 * time.Second},
	} {
		err := vastai.ClassifyResponse(tc.status, tc.header, []byte(tc.body), now)
		pe, ok := err.(*providers.Error)
		if !ok {
			t.Errorf("%s: %v is not a *providers.Error", tc.name, err)
			continue
		}
		if pe.Class != tc.class || pe.Code != tc.code || pe.RetryAfter != tc.retry || pe.HTTPStatus != tc.status || pe.Provider != providers.VastAI {
			t.Errorf("%s: %+v, want class %s code %q retry %v", tc.name, pe, tc.class, tc.code, tc.retry)
		}
	}
	if err := vastai.ClassifyResponse(200, nil, nil, now); err != nil {
		t.Errorf("200: %v", err)
	}
}

func TestBidFor(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		minBid, cap float64
		bid         float64
		ok          bool
	}{
		{0.20, 0.25, 0.21, true},    // min bid + 5%
		{0.18, 0.25, 0.189, true},   // rounded to a tenth of a cent
		{0.161, 0.25, 0.17, true},   // 0.16905 rounds up
		{0.24, 0.25, 0.25, true},    // the margin does not fit: the cap
		{0.25, 0.25, 0.25, true},    // exactly the cap
		{0.2501, 0.25, 0, false},    // above the cap: no bid
		{0.001, 0.25, 0.002, true},  // the smallest bid moves by a step
		{0.20, 0.2049, 0.204, true}, // the cap rounds down
		{0, 0.25, 0, false},
		{-1, 0.25, 0, false},
		{0.2, 0, 0, false},
		{math.NaN(), 0.25, 0, false},
		{0.2, math.NaN(), 0, false},
		{math.Inf(1), 0.25, 0, false},
		{3.0, math.Inf(1), 3.15, true},
	} {
		bid, ok := vastai.BidFor(tc.minBid, tc.cap)
		if ok != tc.ok || bid != tc.bid {
			t.Errorf("BidFor(%v, %v) = %v, %v; want %v, %v", tc.minBid, tc.cap, bid, ok, tc.bid, tc.ok)
		}
		if ok && (bid > tc.cap || bid < tc.minBid) {
			t.Errorf("BidFor(%v, %v) = %v: outside [minBid, cap]", tc.minBid, tc.cap, bid)
		}
	}
}

func TestTables(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ram  int
		want string
		ok   bool
	}{
		{"RTX 4090", 24564, "RTX4090", true},
		{"A100 SXM4", 81920, "A100-80GB", true},
		{"A100 PCIE", 40960, "A100", true},
		{"Tesla V100", 32768, "V100-32GB", true},
		{"Tesla V100", 16384, "V100", true},
		{"H100 SXM", 81559, "H100", true},
		{"RTX 3080", 10240, "", false},
	} {
		got, ok := vastai.GPUType(tc.name, tc.ram)
		if got != tc.want || ok != tc.ok {
			t.Errorf("GPUType(%q, %d) = %q, %v", tc.name, tc.ram, got, ok)
		}
		if ok && !slices.Contains(providers.CanonicalGPUTypes, got) {
			t.Errorf("GPUType(%q) = %q is not canonical", tc.name, got)
		}
	}
	for geo, want := range map[string]string{
		"California, US":            "us-west-1",
		"California, United States": "us-west-1",
		"Texas, US":                 "us-south-1",
		"Alaska, US":                "us-country-1",
		"Quebec, CA":                "ca-east-1",
		"Yukon, CA":                 "ca-country-1",
		"North Holland, NL":         "eu-west-1",
		"France, FR":                "eu-west-3",
		"FR":                        "eu-west-3",
		"Germany":                   "eu-central-1",
		"Istanbul, TR":              "tr-country-1",
		"Atlantis, AT":              "eu-central-2",
		"Somewhere, Narnia":         "zz-narnia-1",
		"":                          "zz-unknown-1",
	} {
		if got := vastai.Region(geo); got != want {
			t.Errorf("Region(%q) = %q, want %q", geo, got, want)
		}
	}
	// Every table region has the canonical shape.
	for _, tbl := range []map[string]string{vastai.USStates, vastai.CAProvinces, vastai.Countries} {
		for k, r := range tbl {
			if !regionShape(r) {
				t.Errorf("%s maps to %q, not a canonical region", k, r)
			}
		}
	}
}

func regionShape(r string) bool {
	parts := strings.Split(r, "-")
	return len(parts) == 3 && len(parts[0]) == 2 && parts[1] != "" && parts[2] != "" && strings.Trim(parts[2], "0123456789") == ""
}
