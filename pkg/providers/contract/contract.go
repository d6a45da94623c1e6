// Package contract is the behaviour every providers.Provider adapter owes the
// controller, written once as a test suite and run against each adapter
// pointed at its provider simulator over real HTTP (see contract_test.go):
// normalized offers, launch/list/terminate of every capacity type and
// machine kind the provider sells (with a bid on a bid market, and the
// bootstrap delivered over SSH where the create cannot carry it), a launch
// that is one create and is found by its name in the instance list
// (deduplication by name is the controller's: a second Launch of a name is
// a second machine), idempotent terminate, the classification of every
// error class the simulator produces in the provider's own format, and
// Retry-After honoured without a request reaching the provider. On a bid
// market, an outbid instance is an interruption that a winning re-bid
// resumes.
package contract

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/clock"
	testclock "k8s.io/utils/clock/testing"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// APIKey is the only key the simulators accept during the suite.
const APIKey = "contract-test-key-7f3a"

// retryAfter is what the simulators' 429s ask for during the suite.
const retryAfter = 2 * time.Second

// Options vary the adapter a test builds.
type Options struct {
	// Key is the API key the adapter sends; "" sends APIKey.
	Key string
	// Clock is the adapter's clock (Retry-After bookkeeping); nil: real.
	Clock clock.PassiveClock
}

// Env is one running simulator and a way to build adapters pointed at it.
type Env struct {
	// Sim is the simulator the adapters talk to.
	Sim cloudsim.Simulator
	// New builds a fresh adapter (no memory of earlier 429s),
	// on its generated client, pointed at Sim.
	New func(t *testing.T, o Options) providers.Provider
	// Bootstrap delivers a VM's bootstrap script to a running instance as
	// the operator does, for a provider whose VMs take it over SSH
	// (providers.DeliverOverSSH); required for such a provider.
	Bootstrap func(ctx context.Context, in providers.Instance, script string) error
	// Outbid places a competing bid of price on the machine of
	// interruptible instance id, for a provider whose spot offers are bids
	// (providers.Bidder); required for such a provider.
	Outbid func(id string, price float64) error
}

// Harness is what the suite needs to know about one provider.
type Harness struct {
	// Provider is the adapter's name (providers.LambdaLabs, ...).
	Provider string
	// Catalog is what the simulator sells, in the provider's own terms
	// (native ids and regions, prices in the provider's unit).
	Catalog []cloudsim.CatalogEntry
	// Start runs a fresh simulator with cfg (Run fills in Catalog and
	// APIKey) and stops it when the test ends.
	Start func(t *testing.T, cfg cloudsim.Config) Env
	// Want are offers Offers must return exactly as given (matched by ID
	// and GPU count). The first available on-demand one, and for a provider
	// with spot the first available spot one, are launched by the suite
	// (each test on a fresh simulator), so their catalog entries need
	// capacity.
	Want []providers.Offer
	// Absent are offers that must not be returned, matched on
	// InstanceType, ProviderRegion, Capacity and (when non-zero) GPUCount:
	// unmapped GPU types, counts above a type's maximum, sold-out regions of
	// providers that omit them.
	Absent []providers.Offer
	// Spot says whether the provider sells spot capacity; if not, no offer
	// may be spot.
	Spot bool
	// MissingID is an instance id in the provider's own format that no
	// instance has (default "contract-no-such-instance"; Vast.ai's ids are
	// integers).
	MissingID string
	// BadKeyStatuses are HTTP statuses, besides 401, the provider answers a
	// bad key with (Vast.ai's offer search declares 404 for it).
	BadKeyStatuses []int
	// OneMachinePerOffer: every offer is one machine (Vast.ai's asks: "each
	// offer ID can only be used to create one instance"), so the second
	// Launch of a name goes to another offer.
	OneMachinePerOffer bool
	// InstanceTypeUnlisted: the provider's instance list does not say
	// which instance type an instance was created from (Vast.ai lists the
	// machine, not the ask), so Instances may leave InstanceType empty.
	InstanceTypeUnlisted bool
}

func (h Harness) missingID() string {
	if h.MissingID != "" {
		return h.MissingID
	}
	return "contract-no-such-instance"
}

// Getter is implemented by adapters that can read one instance by id; only
// through it is the simulator's not-found answer visible to a caller.
type Getter interface {
	Instance(ctx context.Context, id string) (providers.Instance, error)
}

// Run runs the contract against one adapter.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.Provider == "" || h.Start == nil || len(h.Want) == 0 {
		t.Fatal("contract: Harness needs Provider, Start and Want")
	}
	s := &suite{h: h}
	t.Run("Offers", s.testOffers)
	t.Run("LaunchListTerminate", s.testLaunchListTerminate)
	t.Run("LaunchCreatesAndListsByName", s.testLaunchCreates)
	t.Run("TerminateIdempotent", s.testTerminateIdempotent)
	t.Run("Errors", s.testErrors)
	t.Run("RetryAfterHonoured", s.testRetryAfter)
	t.Run("OutbidAndRebid", s.testOutbid)
}

type suite struct{ h Harness }

// start runs a fresh simulator serving the harness catalog.
func (s *suite) start(t *testing.T, cfg cloudsim.Config) Env {
	t.Helper()
	cfg.APIKey = APIKey
	cfg.Catalog = slices.Clone(s.h.Catalog)
	env := s.h.Start(t, cfg)
	if env.Sim == nil || env.New == nil {
		t.Fatal("contract: Start returned no simulator or adapter constructor")
	}
	if env.Sim.Provider() != s.h.Provider {
		t.Fatalf("contract: simulator is %q, want %q", env.Sim.Provider(), s.h.Provider)
	}
	return env
}

// adapter builds an adapter and checks its name.
func (s *suite) adapter(t *testing.T, env Env, o Options) providers.Provider {
	t.Helper()
	p := env.New(t, o)
	if p.Name() != s.h.Provider {
		t.Fatalf("adapter name %q, want %q", p.Name(), s.h.Provider)
	}
	return p
}

// Container is what the suite's launches of container offers run (a VM
// offer's launch carries user data instead).
var Container = providers.ContainerSpec{
	Image: "docker.io/library/busybox:1.36",
	Args:  []string{"sh", "-c", "echo contract; sleep 3600"},
	Env:   map[string]string{"CONTRACT": "1"},
	Ports: []providers.Port{{Port: 8080, Protocol: "http"}, {Port: 22, Protocol: "tcp"}},
}

// launchRequest is the suite's launch of offer under name: with Container
// for a container offer, with userData for a VM, and for a spot offer of a
// bid market (providers.Bidder) with the provider's bid under a cap of 1.5
// times the offer's price.
func launchRequest(p providers.Provider, name string, offer providers.Offer, userData string) providers.LaunchRequest {
	req := providers.LaunchRequest{Name: name, Offer: offer}
	if providers.KindOf(offer) == providers.Container {
		c := Container
		req.Container = &c
	} else {
		req.UserData = userData
	}
	if b, ok := p.(providers.Bidder); ok && offer.Capacity == providers.Spot {
		req.BidPrice, _ = b.BidFor(offer.HourlyPrice, 1.5*offer.HourlyPrice)
	}
	return req
}

// launchable are the offers the suite launches: the first available
// on-demand wanted offer, the first available spot one if any, and the
// first available offer of each machine kind those two do not cover (so a
// provider selling VMs and containers has both launched).
func (s *suite) launchable(t *testing.T) []providers.Offer {
	t.Helper()
	var out []providers.Offer
	for _, c := range []providers.CapacityType{providers.OnDemand, providers.Spot} {
		i := slices.IndexFunc(s.h.Want, func(o providers.Offer) bool { return o.Capacity == c && o.Available })
		if i >= 0 {
			out = append(out, s.h.Want[i])
		}
	}
	if len(out) == 0 || out[0].Capacity != providers.OnDemand {
		t.Fatal("contract: Harness.Want has no available on-demand offer to launch")
	}
	for _, k := range []providers.MachineKind{providers.VM, providers.Container} {
		if slices.ContainsFunc(out, func(o providers.Offer) bool { return providers.KindOf(o) == k }) {
			continue
		}
		if i := slices.IndexFunc(s.h.Want, func(o providers.Offer) bool { return providers.KindOf(o) == k && o.Available }); i >= 0 {
			out = append(out, s.h.Want[i])
		}
	}
	return out
}

// userDataFor is the suite's bootstrap of a VM named name, in a format the
// provider runs: cloud-init where it can, else a script.
func userDataFor(p providers.Provider, name string) string {
	if slices.Contains(providers.BootstrapFormats(p), providers.FormatCloudInit) {
		return "#cloud-config\nhostname: " + name + "\n"
	}
	return "#!/bin/sh\nhostnamectl set-hostname " + name + "\n"
}

func ctxFor(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// offerKey identifies an offer including its GPU count (RunPod sells
// several counts under one ID).
func offerKey(o providers.Offer) string { return fmt.Sprintf("%s/%dgpu", o.ID(), o.GPUCount) }

// canonicalRegion is the shape of a canonical region (us-west-1, eu-central-2).
var canonicalRegion = regexp.MustCompile(`^[a-z]{2}-[a-z]+-[0-9]+$`)

func (s *suite) testOffers(t *testing.T) {
	env := s.start(t, cloudsim.Config{})
	p := s.adapter(t, env, Options{})
	offers, err := p.Offers(ctxFor(t))
	if err != nil {
		t.Fatalf("Offers: %v", err)
	}
	got := map[string]providers.Offer{}
	for _, o := range offers {
		k := offerKey(o)
		if _, dup := got[k]; dup {
			t.Errorf("offer %s returned twice", k)
		}
		got[k] = o
		switch {
		case o.Provider != s.h.Provider:
			t.Errorf("offer %s: provider %q, want %q", k, o.Provider, s.h.Provider)
		case !slices.Contains(providers.CanonicalGPUTypes, o.GPUType):
			t.Errorf("offer %s: GPU type %q is not canonical", k, o.GPUType)
		case o.GPUCount < 1:
			t.Errorf("offer %s: GPU count %d", k, o.GPUCount)
		case !canonicalRegion.MatchString(o.Region):
			t.Errorf("offer %s: region %q is not canonical", k, o.Region)
		case o.ProviderRegion == "" || o.InstanceType == "":
			t.Errorf("offer %s: missing native type or region", k)
		case !(o.HourlyPrice > 0) || math.IsInf(o.HourlyPrice, 0):
			t.Errorf("offer %s: price %v", k, o.HourlyPrice)
		case o.Capacity != providers.OnDemand && o.Capacity != providers.Spot:
			t.Errorf("offer %s: capacity %q", k, o.Capacity)
		case o.Capacity == providers.Spot && !s.h.Spot:
			t.Errorf("offer %s: %s sells no spot capacity", k, s.h.Provider)
		case o.PriceSource != providers.PriceSourceAPI && o.PriceSource != providers.PriceSourceStatic:
			t.Errorf("offer %s: price source %q", k, o.PriceSource)
		}
	}
	spot := 0
	for _, w := range s.h.Want {
		k := offerKey(w)
		g, ok := got[k]
		if !ok {
			t.Errorf("offer %s missing", k)
			continue
		}
		if math.Abs(g.HourlyPrice-w.HourlyPrice) > 1e-9 {
			t.Errorf("offer %s: price %v, want %v (whole machine)", k, g.HourlyPrice, w.HourlyPrice)
		}
		g.HourlyPrice = w.HourlyPrice
		if g != w {
			t.Errorf("offer %s:\n got %+v\nwant %+v", k, g, w)
		}
		if w.Capacity == providers.Spot {
			spot++
		}
	}
	if s.h.Spot && spot == 0 {
		t.Error("contract: Harness.Spot is set but Want has no spot offer")
	}
	for _, a := range s.h.Absent {
		for _, o := range offers {
			if o.InstanceType == a.InstanceType && o.ProviderRegion == a.ProviderRegion && o.Capacity == a.Capacity &&
				(a.GPUCount == 0 || o.GPUCount == a.GPUCount) {
				t.Errorf("offer %s returned, want none like %s", offerKey(o), offerKey(a))
			}
		}
	}
}

// machinesNamed returns the simulator's machines with a name.
func machinesNamed(sim cloudsim.Simulator, name string) []cloudsim.Machine {
	var out []cloudsim.Machine
	for _, m := range sim.Machines() {
		if m.Name == name {
			out = append(out, m)
		}
	}
	return out
}

func findInstance(ins []providers.Instance, id string) (providers.Instance, bool) {
	i := slices.IndexFunc(ins, func(in providers.Instance) bool { return in.ID == id })
	if i < 0 {
		return providers.Instance{}, false
	}
	return ins[i], true
}

func (s *suite) testLaunchListTerminate(t *testing.T) {
	for _, offer := range s.launchable(t) {
		t.Run(string(offer.Capacity)+"-"+string(providers.KindOf(offer)), func(t *testing.T) {
			env := s.start(t, cloudsim.Config{})
			p := s.adapter(t, env, Options{})
			ctx := ctxFor(t)
			name := providers.MachineNamePrefix + "contract-" + string(offer.Capacity) + "-" + string(providers.KindOf(offer))
			req := launchRequest(p, name, offer, userDataFor(p, name))
			req.Tags = map[string]string{"tgp.solanyn.com/request": "contract"}
			_, bidder := p.(providers.Bidder)
			if bidder && offer.Capacity == providers.Spot && !(req.BidPrice >= offer.HourlyPrice) {
				t.Fatalf("BidFor(%v) = %v: no bid at or above the offer's minimum bid", offer.HourlyPrice, req.BidPrice)
			}
			overSSH := req.Container == nil && providers.DeliveryOf(p) == providers.DeliverOverSSH
			if overSSH && env.Bootstrap == nil {
				t.Fatal("contract: the provider delivers VM bootstraps over SSH but Env.Bootstrap is nil")
			}
			in, err := p.Launch(ctx, req)
			if err != nil {
				t.Fatalf("Launch: %v", err)
			}
			if in.ID == "" || in.Name != name || in.Provider != s.h.Provider {
				t.Fatalf("Launch returned %+v", in)
			}
			// A bootstrap delivered over SSH is not in the create.
			sent := req.UserData
			if overSSH {
				sent = ""
			}
			if ms := machinesNamed(env.Sim, name); len(ms) != 1 || ms[0].ID != in.ID || !ms[0].Live ||
				ms[0].InstanceType != offer.InstanceType || ms[0].Region != offer.ProviderRegion ||
				ms[0].Spot != (offer.Capacity == providers.Spot) || ms[0].UserData != sent ||
				ms[0].Container != (req.Container != nil) {
				t.Fatalf("simulator machines named %s: %+v, want one live %s in %s (spot %v, container %v) with the user data %q, id %s",
					name, ms, offer.InstanceType, offer.ProviderRegion, offer.Capacity == providers.Spot, req.Container != nil, sent, in.ID)
			}

			list, err := p.Instances(ctx)
			if err != nil {
				t.Fatalf("Instances: %v", err)
			}
			got, ok := findInstance(list, in.ID)
			if !ok {
				t.Fatalf("Instances %+v lacks launched %s", list, in.ID)
			}
			typeOK := got.InstanceType == offer.InstanceType || (s.h.InstanceTypeUnlisted && got.InstanceType == "")
			if got.Name != name || got.Provider != s.h.Provider || !typeOK ||
				got.ProviderRegion != offer.ProviderRegion || got.Spot != (offer.Capacity == providers.Spot) ||
				!slices.Contains([]providers.InstanceState{providers.StatePending, providers.StateBooting, providers.StateRunning}, got.State) {
				t.Errorf("listed %+v, want %s %s in %s (spot %v), pending, booting or running",
					got, name, offer.InstanceType, offer.ProviderRegion, offer.Capacity == providers.Spot)
			}
			if bidder && offer.Capacity == providers.Spot && got.BidPrice != req.BidPrice {
				t.Errorf("listed with bid %v, want the launch's %v", got.BidPrice, req.BidPrice)
			}
			if overSSH {
				s.bootstrapOverSSH(t, ctx, env, p, got, req.UserData)
			}

			if err := p.Terminate(ctx, in.ID); err != nil {
				t.Fatalf("Terminate: %v", err)
			}
			if ms := machinesNamed(env.Sim, name); len(ms) != 1 || ms[0].Live {
				t.Errorf("after Terminate the simulator has %+v, want the machine gone", ms)
			}
			list, err = p.Instances(ctx)
			if err != nil {
				t.Fatalf("Instances after Terminate: %v", err)
			}
			if got, ok := findInstance(list, in.ID); ok && got.State != providers.StateTerminated && got.State != providers.StateTerminating {
				t.Errorf("after Terminate the instance is listed %s", got.State)
			}
		})
	}
}

// bootstrapOverSSH waits until Instances lists a VM running with an SSH
// endpoint, delivers its bootstrap with env.Bootstrap, and checks that the
// simulated machine ran it.
func (s *suite) bootstrapOverSSH(t *testing.T, ctx context.Context, env Env, p providers.Provider, in providers.Instance, script string) {
	t.Helper()
	for in.State != providers.StateRunning || in.SSH == nil {
		if ctx.Err() != nil {
			t.Fatalf("the VM never ran with an SSH endpoint: %+v", in)
		}
		time.Sleep(20 * time.Millisecond)
		list, err := p.Instances(ctx)
		if err != nil {
			t.Fatalf("Instances: %v", err)
		}
		var ok bool
		if in, ok = findInstance(list, in.ID); !ok {
			t.Fatalf("the VM %s is no longer listed", in.ID)
		}
	}
	if err := env.Bootstrap(ctx, in, script); err != nil {
		t.Fatalf("delivering the bootstrap over SSH: %v", err)
	}
	if ms := machinesNamed(env.Sim, in.Name); len(ms) != 1 || ms[0].UserData != script || !ms[0].Active {
		t.Errorf("after the SSH bootstrap the simulator has %+v, want it active with the script %q", ms, script)
	}
}

// testLaunchCreates checks that an adapter keeps no launch memory: every
// Launch is a create, a second Launch of one name included, and Instances
// lists every instance under the name it was launched with, which is how
// the controller finds (and adopts) a machine after an ambiguous answer or
// a crash and how it never launches a name twice.
func (s *suite) testLaunchCreates(t *testing.T) {
	offer := s.launchable(t)[0]
	env := s.start(t, cloudsim.Config{})
	p := s.adapter(t, env, Options{})
	ctx := ctxFor(t)
	req := launchRequest(p, providers.MachineNamePrefix+"contract-twice", offer, "")
	first, err := p.Launch(ctx, req)
	if err != nil {
		t.Fatalf("first Launch: %v", err)
	}
	again := req
	if s.h.OneMachinePerOffer {
		// The first offer is rented now: the same name on another one.
		i := slices.IndexFunc(s.h.Want, func(o providers.Offer) bool {
			return o.Available && o.InstanceType != offer.InstanceType && providers.KindOf(o) == providers.KindOf(offer) && o.Capacity == providers.OnDemand
		})
		if i < 0 {
			t.Fatal("contract: OneMachinePerOffer needs a second available on-demand offer of the first one's machine kind in Harness.Want")
		}
		again = launchRequest(p, req.Name, s.h.Want[i], "")
	}
	second, err := p.Launch(ctx, again)
	if err != nil {
		t.Fatalf("second Launch: %v", err)
	}
	if first.ID == "" || second.ID == "" || second.ID == first.ID {
		t.Errorf("Launches returned %q and %q, want two instances", first.ID, second.ID)
	}
	if n := env.Sim.Core().Counters().Launches[req.Name]; n != 2 {
		t.Errorf("simulator launched %s %d times, want 2 (one per Launch)", req.Name, n)
	}
	list, err := p.Instances(ctx)
	if err != nil {
		t.Fatalf("Instances: %v", err)
	}
	for _, id := range []string{first.ID, second.ID} {
		if in, ok := findInstance(list, id); !ok || in.Name != req.Name {
			t.Errorf("Instances %+v lacks %s named %s", list, id, req.Name)
		}
	}
}

// totalRequests is every request a simulator has counted.
func totalRequests(sim cloudsim.Simulator) int {
	n := 0
	for _, v := range sim.Core().Counters().Requests {
		n += v
	}
	return n
}

func (s *suite) testTerminateIdempotent(t *testing.T) {
	env := s.start(t, cloudsim.Config{})
	p := s.adapter(t, env, Options{})
	ctx := ctxFor(t)
	in, err := p.Launch(ctx, launchRequest(p, providers.MachineNamePrefix+"contract-term", s.launchable(t)[0], ""))
	if err != nil {
		t.Fatalf("Launch: %v", err)
	}
	for i := range 2 {
		before := totalRequests(env.Sim)
		if err := p.Terminate(ctx, in.ID); err != nil {
			t.Errorf("Terminate #%d: %v", i+1, err)
		}
		if totalRequests(env.Sim) == before {
			t.Errorf("Terminate #%d made no call to the provider", i+1)
		}
	}
	before := totalRequests(env.Sim)
	if err := p.Terminate(ctx, s.h.missingID()); err != nil {
		t.Errorf("Terminate of a missing instance: %v", err)
	}
	if totalRequests(env.Sim) == before {
		t.Error("Terminate of a missing instance made no call: the provider's not-found answer was never classified")
	}
}

// op is one adapter operation that reaches the provider.
type op struct {
	name string
	call func(ctx context.Context, p providers.Provider, offer providers.Offer) error
}

// ops are the operations each fault is checked through.
func (s *suite) ops() []op {
	return []op{{"Offers", func(ctx context.Context, p providers.Provider, _ providers.Offer) error {
		_, err := p.Offers(ctx)
		return err
	}},
		{"Instances", func(ctx context.Context, p providers.Provider, _ providers.Offer) error {
			_, err := p.Instances(ctx)
			return err
		}},
		{"Launch", func(ctx context.Context, p providers.Provider, offer providers.Offer) error {
			_, err := p.Launch(ctx, launchRequest(p, providers.MachineNamePrefix+"contract-fault", offer, ""))
			return err
		}},
		{"Terminate", func(ctx context.Context, p providers.Provider, _ providers.Offer) error {
			return p.Terminate(ctx, s.h.missingID())
		}},
	}
}

// wantError checks that err is a *providers.Error of the adapter, of class,
// with an HTTP status in [minStatus, maxStatus] (0, 0: no HTTP answer), and
// free of the API key.
func (s *suite) wantError(t *testing.T, err error, class providers.ErrorClass, minStatus, maxStatus int) *providers.Error {
	t.Helper()
	var pe *providers.Error
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not a *providers.Error", err, err)
	}
	if pe.Class != class || pe.Provider != s.h.Provider {
		t.Errorf("got %s error of class %s (%v), want %s %s", pe.Provider, pe.Class, err, s.h.Provider, class)
	}
	if pe.HTTPStatus < minStatus || pe.HTTPStatus > maxStatus {
		t.Errorf("HTTP status %d (%v), want [%d, %d]", pe.HTTPStatus, err, minStatus, maxStatus)
	}
	if strings.Contains(err.Error(), APIKey) {
		t.Errorf("error %q contains the API key", err)
	}
	return pe
}

// wantUnauthorized checks a bad key's error: ClassUnauthorized with a 401,
// or one of the harness's BadKeyStatuses.
func (s *suite) wantUnauthorized(t *testing.T, err error) {
	t.Helper()
	pe := s.wantError(t, err, providers.ClassUnauthorized, 0, 599)
	if pe.HTTPStatus != http.StatusUnauthorized && !slices.Contains(s.h.BadKeyStatuses, pe.HTTPStatus) {
		t.Errorf("HTTP status %d (%v), want 401 or one of %v", pe.HTTPStatus, err, s.h.BadKeyStatuses)
	}
}

// epoch is the fake clocks' start.
var epoch = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// wantRateLimited checks the error of a call the simulator answered with
// 429 and Retry-After, on an adapter with a frozen clock: ClassRateLimited
// with the simulator's Retry-After. It comes from the 429 itself, or, for an
// operation that fans out into concurrent calls (Paperspace's Offers), from a
// sibling call refused without a request because the 429 had arrived.
func (s *suite) wantRateLimited(t *testing.T, env Env, err error) {
	t.Helper()
	pe := s.wantError(t, err, providers.ClassRateLimited, 0, http.StatusTooManyRequests)
	if pe.HTTPStatus != http.StatusTooManyRequests && pe.HTTPStatus != 0 {
		t.Errorf("HTTP status %d, want 429 (or none: refused before sending)", pe.HTTPStatus)
	}
	if n := env.Sim.Core().Counters().RateLimited; n == 0 {
		t.Error("the simulator sent no 429")
	}
	if pe.RetryAfter != retryAfter {
		t.Errorf("RetryAfter %v, want the simulator's %v", pe.RetryAfter, retryAfter)
	}
}

func (s *suite) testErrors(t *testing.T) {
	offer := s.launchable(t)[0]
	// Faults injected into every call, each checked through every operation.
	faults := []struct {
		name      string
		key       string
		faults    cloudsim.Faults
		class     providers.ErrorClass
		minStatus int
		maxStatus int
	}{
		{name: "Unauthorized", key: "contract-wrong-key", class: providers.ClassUnauthorized, minStatus: 401, maxStatus: 401},
		{name: "RateLimited", faults: cloudsim.Faults{RateLimitRate: 1, RetryAfter: retryAfter}, class: providers.ClassRateLimited},
		{name: "Transient500", faults: cloudsim.Faults{ErrorRate: 1}, class: providers.ClassTransient, minStatus: 500, maxStatus: 500},
		{name: "TransientDown", faults: cloudsim.Faults{Down: true}, class: providers.ClassTransient, minStatus: 503, maxStatus: 503},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			for _, o := range s.ops() {
				t.Run(o.name, func(t *testing.T) {
					env := s.start(t, cloudsim.Config{Faults: f.faults})
					// A frozen clock makes a Retry-After exact.
					p := s.adapter(t, env, Options{Key: f.key, Clock: testclock.NewFakePassiveClock(epoch)})
					err := o.call(ctxFor(t), p, offer)
					if f.class == providers.ClassRateLimited {
						s.wantRateLimited(t, env, err)
						return
					}
					if f.class == providers.ClassUnauthorized {
						s.wantUnauthorized(t, err)
						return
					}
					s.wantError(t, err, f.class, f.minStatus, f.maxStatus)
				})
			}
		})
	}

	t.Run("Capacity", func(t *testing.T) {
		env := s.start(t, cloudsim.Config{})
		p := s.adapter(t, env, Options{})
		if !env.Sim.Core().SetCapacity(offer.InstanceType, offer.ProviderRegion, 0) {
			t.Fatalf("simulator catalog has no %s in %s", offer.InstanceType, offer.ProviderRegion)
		}
		_, err := p.Launch(ctxFor(t), launchRequest(p, providers.MachineNamePrefix+"contract-full", offer, ""))
		s.wantError(t, err, providers.ClassCapacity, 400, 499)
		if n := env.Sim.Core().Counters().Launches[providers.MachineNamePrefix+"contract-full"]; n != 0 {
			t.Errorf("simulator launched %d machines without capacity", n)
		}
	})
	t.Run("Quota", func(t *testing.T) {
		env := s.start(t, cloudsim.Config{Quota: 1})
		p := s.adapter(t, env, Options{})
		ctx := ctxFor(t)
		if _, err := p.Launch(ctx, launchRequest(p, providers.MachineNamePrefix+"contract-q1", offer, "")); err != nil {
			t.Fatalf("first Launch within quota: %v", err)
		}
		_, err := p.Launch(ctx, launchRequest(p, providers.MachineNamePrefix+"contract-q2", offer, ""))
		s.wantError(t, err, providers.ClassQuota, 400, 499)
	})
	t.Run("Invalid", func(t *testing.T) {
		env := s.start(t, cloudsim.Config{})
		p := s.adapter(t, env, Options{})
		bogus := offer
		bogus.InstanceType = "contract-unknown-type"
		_, err := p.Launch(ctxFor(t), launchRequest(p, providers.MachineNamePrefix+"contract-bogus", bogus, ""))
		// The provider refuses it with a 400, or the adapter refuses it
		// before the create call (Paperspace finds no OS template for an
		// unknown type): no HTTP status then. Either way nothing is created.
		if pe := s.wantError(t, err, providers.ClassInvalid, 0, 400); pe.HTTPStatus != 0 && pe.HTTPStatus != 400 {
			t.Errorf("HTTP status %d, want 400 or none (refused by the adapter)", pe.HTTPStatus)
		}
		if n := env.Sim.Core().Counters().Launches[providers.MachineNamePrefix+"contract-bogus"]; n != 0 {
			t.Errorf("simulator launched %d machines for an invalid launch", n)
		}
	})
	t.Run("NotFound", func(t *testing.T) {
		env := s.start(t, cloudsim.Config{})
		p := s.adapter(t, env, Options{})
		if g, ok := p.(Getter); ok {
			_, err := g.Instance(ctxFor(t), s.h.missingID())
			s.wantError(t, err, providers.ClassNotFound, 404, 404)
			return
		}
		if b, ok := p.(providers.Bidder); ok {
			// A bid market's re-bid reaches the provider for a missing instance.
			s.wantError(t, b.RaiseBid(ctxFor(t), s.h.missingID(), 0.5), providers.ClassNotFound, 404, 404)
			return
		}
		t.Skipf("%s exposes no GET by id and no re-bid; its not-found answers are absorbed by Terminate (tested) and Launch", s.h.Provider)
	})
}

// testRetryAfter checks that after a 429 no call reaches the provider
// until its Retry-After has passed on the adapter's clock, and that calls
// go through again once it has.
func (s *suite) testRetryAfter(t *testing.T) {
	offer := s.launchable(t)[0]
	for _, o := range s.ops() {
		t.Run(o.name, func(t *testing.T) {
			env := s.start(t, cloudsim.Config{Faults: cloudsim.Faults{RateLimitRate: 1, RetryAfter: retryAfter}})
			clk := testclock.NewFakePassiveClock(epoch)
			p := s.adapter(t, env, Options{Clock: clk})
			ctx := ctxFor(t)

			s.wantRateLimited(t, env, o.call(ctx, p, offer))
			// The provider recovers at once; the adapter must still wait.
			env.Sim.Core().SetFaults(cloudsim.Faults{})
			for _, step := range []time.Duration{0, retryAfter / 2, retryAfter/2 - time.Millisecond} {
				clk.SetTime(clk.Now().Add(step))
				before := totalRequests(env.Sim)
				pe := s.wantError(t, o.call(ctx, p, offer), providers.ClassRateLimited, 0, 0)
				if after := totalRequests(env.Sim); after != before {
					t.Errorf("%d call(s) reached the provider during its Retry-After", after-before)
				}
				if pe.RetryAfter <= 0 || pe.RetryAfter > retryAfter {
					t.Errorf("RetryAfter %v while blocked, want (0, %v]", pe.RetryAfter, retryAfter)
				}
			}
			clk.SetTime(clk.Now().Add(time.Millisecond))
			before := totalRequests(env.Sim)
			if err := o.call(ctx, p, offer); err != nil {
				t.Errorf("after Retry-After: %v", err)
			}
			if totalRequests(env.Sim) == before {
				t.Error("no call reached the provider after Retry-After")
			}
		})
	}
}

// testOutbid checks a bid market (a provider that is a providers.Bidder):
// an interruptible instance that a higher bid stops is listed as
// interrupted and outbid, with the bid that would win it back as MinBid;
// the bid policy cannot win it under a cap below that, and a re-bid under a
// cap above it resumes the instance.
func (s *suite) testOutbid(t *testing.T) {
	env := s.start(t, cloudsim.Config{})
	p := s.adapter(t, env, Options{})
	b, ok := p.(providers.Bidder)
	if !ok {
		t.Skipf("%s sells no bids", s.h.Provider)
	}
	if env.Outbid == nil {
		t.Fatal("contract: a Bidder's Env needs Outbid")
	}
	i := slices.IndexFunc(s.launchable(t), func(o providers.Offer) bool { return o.Capacity == providers.Spot })
	if i < 0 {
		t.Fatal("contract: a Bidder's Harness.Want needs an available spot offer")
	}
	offer := s.launchable(t)[i]
	ctx := ctxFor(t)
	name := providers.MachineNamePrefix + "contract-outbid"
	req := launchRequest(p, name, offer, userDataFor(p, name))
	in, err := p.Launch(ctx, req)
	if err != nil {
		t.Fatalf("Launch: %v", err)
	}
	competing := 2 * req.BidPrice
	if err := env.Outbid(in.ID, competing); err != nil {
		t.Fatal(err)
	}
	list, err := p.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got, ok := findInstance(list, in.ID)
	if !ok || got.State != providers.StateInterrupted || !got.Outbid || got.NativeState == "" ||
		!(got.MinBid > competing-1e-9) || got.BidPrice != req.BidPrice {
		t.Fatalf("after a competing bid of %v the instance is %+v, want interrupted, outbid, MinBid above %v, BidPrice %v",
			competing, got, competing, req.BidPrice)
	}
	if ms := machinesNamed(env.Sim, name); len(ms) != 1 || !ms[0].Live || ms[0].Active {
		t.Errorf("an outbid machine is %+v, want it still there and stopped", ms)
	}
	if bid, ok := b.BidFor(got.MinBid, competing); ok {
		t.Errorf("BidFor(%v, %v) = %v: a cap under the minimum bid won", got.MinBid, competing, bid)
	}
	bid, ok := b.BidFor(got.MinBid, 2*got.MinBid)
	if !ok {
		t.Fatalf("BidFor(%v, %v): no bid", got.MinBid, 2*got.MinBid)
	}
	if err := b.RaiseBid(ctx, in.ID, bid); err != nil {
		t.Fatalf("RaiseBid: %v", err)
	}
	list, err = p.Instances(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := findInstance(list, in.ID); !ok || got.Outbid || got.State == providers.StateInterrupted || got.BidPrice != bid {
		t.Errorf("after a winning re-bid of %v the instance is %+v", bid, got)
	}
}
