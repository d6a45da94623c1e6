package controller

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/vastai"
)

// bidProvider is the fake provider on a bid market: Vast.ai's bid policy
// (vastai.BidFor) and a RaiseBid that records its calls.
type bidProvider struct {
	*fakeProvider
	raised   []float64
	raiseErr error
	// refuse makes the policy find no winning bid.
	refuse bool
}

func (b *bidProvider) BidFor(minBid, cap float64) (float64, bool) {
	if b.refuse {
		return 0, false
	}
	return vastai.BidFor(minBid, cap)
}

func (b *bidProvider) RaiseBid(_ context.Context, id string, price float64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.raiseErr != nil {
		return b.raiseErr
	}
	b.raised = append(b.raised, price)
	for i := range b.instances {
		if b.instances[i].ID == id {
			b.instances[i].BidPrice = price
		}
	}
	return nil
}

var _ providers.Bidder = (*bidProvider)(nil)

func bidFixture(t *testing.T, reqs ...*tgpv1.GPURequest) (*fixture, *bidProvider) {
	t.Helper()
	var bp *bidProvider
	f := newFixtureWith(t, func(p *fakeProvider) providers.Provider { bp = &bidProvider{fakeProvider: p}; return bp }, reqs...)
	return f, bp
}

// spotJob is the product's first example: maxSpotPrice 0.25, maxPrice 0.50.
func spotJob(r *tgpv1.GPURequest) { r.Spec.MaxSpotPrice, r.Spec.MaxPrice = ptr(0.25), ptr(0.50) }

func TestBidAtLaunch(t *testing.T) {
	for _, tc := range []struct {
		name    string
		mutate  func(*tgpv1.GPURequest)
		minBid  float64
		refuse  bool
		wantBid float64 // 0: not launched
	}{
		// The offer's minimum bid plus 5%, rounded up to $0.001.
		{name: "margin under the spot cap", mutate: spotJob, minBid: 0.22, wantBid: 0.231},
		// The margin does not fit: the cap itself, which still wins.
		{name: "cap when the margin does not fit", mutate: spotJob, minBid: 0.245, wantBid: 0.25},
		// maxPrice caps spot too when maxSpotPrice is unset.
		{name: "maxPrice is the cap without maxSpotPrice", mutate: func(r *tgpv1.GPURequest) { r.Spec.MaxPrice = ptr(0.23) }, minBid: 0.22, wantBid: 0.23},
		// The policy finds no winning bid under the cap.
		{name: "no winning bid under the cap", mutate: spotJob, minBid: 0.22, refuse: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, bp := bidFixture(t, newRequest("gpu", func(r *tgpv1.GPURequest) { r.Finalizers = []string{tgpv1.Finalizer} }, tc.mutate))
			f.provider.offers[0].HourlyPrice, bp.refuse = tc.minBid, tc.refuse
			var sent []providers.LaunchRequest
			f.provider.onLaunch = func(req providers.LaunchRequest) { sent = append(sent, req) }
			f.sync("gpu")
			st := f.reload("gpu").Status
			if tc.wantBid == 0 {
				if len(sent) != 0 {
					t.Fatalf("launched %d times; want the offer passed over", len(sent))
				}
				if st.Phase != tgpv1.PhasePending || !strings.Contains(st.Message, "1 spot offer(s) passed over: no bid at or under the spot cap ($0.250/h)") {
					t.Errorf("phase %s message %q; want Pending saying the offer was passed over", st.Phase, st.Message)
				}
				stageCondition(t, st, tgpv1.ConditionLaunched, metav1.ConditionFalse, "NoWinningBid")
				return
			}
			if len(sent) != 1 || sent[0].BidPrice != tc.wantBid || sent[0].Offer.HourlyPrice != tc.minBid {
				t.Fatalf("launch requests %+v; want one with bid %v on the offer at %v", sent, tc.wantBid, tc.minBid)
			}
			if st.HourlyPrice == nil || *st.HourlyPrice != tc.wantBid || !st.Spot {
				t.Errorf("status hourlyPrice %v spot %v; want the bid %v", price(st.HourlyPrice), st.Spot, tc.wantBid)
			}
			if ev := strings.Join(stageEvents(f), "\n"); !strings.Contains(ev, "Normal Launched") || !strings.Contains(ev, "with a bid of") {
				t.Errorf("events %q; want Launched naming the bid", ev)
			}
		})
	}
}

func TestBidAtLaunchOnDemandHasNoBid(t *testing.T) {
	f, _ := bidFixture(t, newRequest("gpu", func(r *tgpv1.GPURequest) { r.Finalizers = []string{tgpv1.Finalizer}; r.Spec.SpotInstance = false }))
	f.provider.offers[0].Capacity, f.provider.offers[0].HourlyPrice = providers.OnDemand, 0.40
	var sent []providers.LaunchRequest
	f.provider.onLaunch = func(req providers.LaunchRequest) { sent = append(sent, req) }
	f.sync("gpu")
	if len(sent) != 1 || sent[0].BidPrice != 0 {
		t.Fatalf("launch requests %+v; want one without a bid", sent)
	}
	if st := f.reload("gpu").Status; price(st.HourlyPrice) != 0.40 {
		t.Errorf("hourlyPrice %v, want the on-demand price 0.40", price(st.HourlyPrice))
	}
}

// The budget holds what is paid: a bid over maxHourlySpend is refused even
// when the offer's minimum bid fits.
func TestBidAtLaunchIsWhatTheBudgetHolds(t *testing.T) {
	f, _ := bidFixture(t, newRequest("gpu", func(r *tgpv1.GPURequest) { r.Finalizers = []string{tgpv1.Finalizer} }, spotJob))
	f.addBudget(newBudget("team", "default", tgpv1.GPUBudgetSpec{MaxHourlySpend: ptr(0.225)}))
	f.sync("gpu")
	if len(f.provider.launches) != 0 {
		t.Fatalf("launched %v at a bid of 0.231 over a 0.225 budget", f.provider.launches)
	}
	if st := f.reload("gpu").Status; st.Phase != tgpv1.PhasePending || !strings.Contains(st.Message, "GPUBudget team") {
		t.Errorf("phase %s message %q; want Pending held by GPUBudget team", st.Phase, st.Message)
	}
}

func price(p *float64) float64 {
	if p == nil {
		return -1
	}
	return *p
}

// outbidReady is a Ready spot-training-job at a bid of 0.231 whose instance
// the poller lists as outbid with minimum bid minBid.
func outbidReady(t *testing.T, minBid float64) (*fixture, *bidProvider) {
	t.Helper()
	req := readyRequest("gpu", spotJob, func(r *tgpv1.GPURequest) { r.Status.HourlyPrice = ptr(0.231) })
	f, bp := bidFixture(t, req)
	next := stageSecondOffer
	next.HourlyPrice = 0.20 // under the spot cap: where a relaunch goes
	f.provider.offers = append(f.provider.offers, next)
	stageList(f, providers.Instance{Provider: "runpod", ID: "pod-1", Name: ownMachine, State: providers.StateInterrupted,
		Spot: true, Outbid: true, BidPrice: 0.231, MinBid: minBid, NativeState: "outbid"})
	f.addNode(readyNode(ownMachine, string(req.UID), "runpod://pod-1"))
	f.kube.ClearActions()
	return f, bp
}

func TestOutbidIsRebidWithinTheCap(t *testing.T) {
	f, bp := outbidReady(t, 0.24)
	after := f.sync("gpu")
	if len(bp.raised) != 1 || bp.raised[0] != 0.25 {
		t.Fatalf("bids raised %v; want one to 0.25 (0.24 plus 5%% is over the cap: the cap)", bp.raised)
	}
	st := f.reload("gpu").Status
	if st.Phase != tgpv1.PhaseReady || st.Interruptions != 0 || st.InstanceID != "pod-1" || price(st.HourlyPrice) != 0.25 {
		t.Errorf("phase %s interruptions %d instance %s price %v; want Ready on pod-1 at the new bid 0.25", st.Phase, st.Interruptions, st.InstanceID, price(st.HourlyPrice))
	}
	if !strings.Contains(st.Message, "bid raised from $0.231 to $0.250/h") {
		t.Errorf("message %q; want the raise", st.Message)
	}
	if len(f.provider.terminated) != 0 || len(f.provider.launches) != 0 {
		t.Errorf("terminated %v launched %v; want neither", f.provider.terminated, f.provider.launches)
	}
	if after != f.ctrl.cfg.PollInterval {
		t.Errorf("requeue after %s, want the poll interval", after)
	}
	if ev := strings.Join(stageEvents(f), "\n"); !strings.Contains(ev, "Normal Rebid") || strings.Contains(ev, "Interrupted") {
		t.Errorf("events %q; want Rebid and no interruption", ev)
	}
	if got := testutil.ToFloat64(f.ctrl.metrics.Rebids.WithLabelValues("runpod")); got != 1 {
		t.Errorf("rebids metric %v, want 1", got)
	}

	// Listed outbid again before the provider resumed it: the raised bid
	// already reaches the minimum bid; the operator waits, a few polls.
	stageList(f, providers.Instance{Provider: "runpod", ID: "pod-1", Name: ownMachine, State: providers.StateInterrupted,
		Spot: true, Outbid: true, BidPrice: 0.25, MinBid: 0.24})
	f.reload("gpu")
	f.sync("gpu")
	if st := f.reload("gpu").Status; st.Interruptions != 0 || len(bp.raised) != 1 {
		t.Errorf("interruptions %d raises %v right after a raise; want a wait", st.Interruptions, bp.raised)
	}
	// Still outbid past the wait: an interruption.
	f.clock.Step(f.ctrl.rebidWait())
	stageList(f, providers.Instance{Provider: "runpod", ID: "pod-1", Name: ownMachine, State: providers.StateInterrupted,
		Spot: true, Outbid: true, BidPrice: 0.25, MinBid: 0.24})
	f.reload("gpu")
	f.sync("gpu")
	if st := f.reload("gpu").Status; st.Interruptions != 1 || len(f.provider.terminated) != 1 {
		t.Errorf("interruptions %d terminated %v; want the stopped instance ended as an interruption", st.Interruptions, f.provider.terminated)
	}
}

func TestOutbidOverTheCapIsAnInterruption(t *testing.T) {
	for _, tc := range []struct {
		name      string
		minBid    float64
		raiseErr  error
		budget    *float64
		wantCause string
	}{
		{name: "cap cannot win", minBid: 0.30, wantCause: "Outbid"},
		{name: "instance gone", minBid: 0.24, raiseErr: &providers.Error{Provider: "runpod", Operation: "RaiseBid", Class: providers.ClassNotFound}, wantCause: "Outbid"},
		{name: "over the hourly budget", minBid: 0.24, budget: ptr(0.245), wantCause: "OutbidOverBudget"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, bp := outbidReady(t, tc.minBid)
			bp.raiseErr = tc.raiseErr
			if tc.budget != nil {
				f.addBudget(newBudget("team", "default", tgpv1.GPUBudgetSpec{MaxHourlySpend: tc.budget}))
			}
			f.sync("gpu")
			st := f.reload("gpu").Status
			if len(bp.raised) != 0 {
				t.Errorf("bids raised %v; want none", bp.raised)
			}
			if st.Interruptions != 1 || len(f.provider.terminated) != 1 || f.provider.terminated[0] != "pod-1" {
				t.Fatalf("interruptions %d terminated %v; want the stopped pod-1 destroyed as an interruption", st.Interruptions, f.provider.terminated)
			}
			stageCondition(t, st, tgpv1.ConditionInterrupted, metav1.ConditionTrue, tc.wantCause)
			if !f.ctrl.unavailable.IsUnavailable(f.provider.offers[0].Key()) {
				t.Errorf("the outbid offering is not marked unavailable")
			}
			if tc.budget == nil && (len(f.provider.launches) != 1 || st.Phase != tgpv1.PhaseProvisioning || st.Region != "us-east-1" || price(st.HourlyPrice) != 0.21) {
				t.Errorf("launches %v phase %s region %s price %v; want the relaunch on the next offer at a bid of 0.21", f.provider.launches, st.Phase, st.Region, price(st.HourlyPrice))
			}
			if ev := strings.Join(stageEvents(f), "\n"); !strings.Contains(ev, "Warning Interrupted") {
				t.Errorf("events %q; want Interrupted", ev)
			}
		})
	}
}

func TestSSHKeysMadeOnceThenRead(t *testing.T) {
	f := newFixture(t)
	k := NewSSHKeys(f.kube, "gpu-operator")
	if k.PublicKey() != "" {
		t.Fatal("a public key before Ensure")
	}
	if _, err := k.Ensure(t.Context()); err != nil {
		t.Fatal(err)
	}
	pub := k.PublicKey()
	if !strings.HasPrefix(pub, "ssh-ed25519 ") {
		t.Fatalf("public key %q, want an ed25519 authorized_keys line", pub)
	}
	secret, err := f.kube.CoreV1().Secrets("gpu-operator").Get(t.Context(), SSHKeySecret, metav1.GetOptions{})
	if err != nil || secret.Type != corev1.SecretTypeSSHAuth || len(secret.Data[corev1.SSHAuthPrivateKey]) == 0 {
		t.Fatalf("key Secret %+v, %v; want a kubernetes.io/ssh-auth Secret with the private key", secret, err)
	}
	// A second process reads the same pair.
	again := NewSSHKeys(f.kube, "gpu-operator")
	if _, err := again.Ensure(t.Context()); err != nil || again.PublicKey() != pub {
		t.Errorf("second Ensure: %q, %v; want the same key %q", again.PublicKey(), err, pub)
	}
}

// A bid-market machine's Node may go before the listing shows the lost
// bid: the operator waits for a listing started after the Node went, and
// only then counts NodeDeleted.
func TestLostBidNodeGraceWaitsForAListing(t *testing.T) {
	req := readyRequest("gpu", spotJob, func(r *tgpv1.GPURequest) { r.Status.HourlyPrice = ptr(0.231) })
	f, _ := bidFixture(t, req)
	running := providers.Instance{Provider: "runpod", ID: "pod-1", Name: ownMachine, State: providers.StateRunning, Spot: true, BidPrice: 0.231}
	stageList(f, running)
	f.sync("gpu") // no Node: gone before any listing after it
	if st := f.reload("gpu").Status; st.Interruptions != 0 || len(f.provider.terminated) != 0 {
		t.Fatalf("interruptions %d terminated %v; want a wait for the next listing", st.Interruptions, f.provider.terminated)
	}
	f.clock.Step(listMargin + time.Second)
	stageList(f, running) // listed running after the Node went: the Node is lost
	f.sync("gpu")
	st := f.reload("gpu").Status
	if st.Interruptions != 1 {
		t.Fatalf("interruptions %d; want NodeDeleted once a later listing shows the machine running", st.Interruptions)
	}
	stageCondition(t, st, tgpv1.ConditionInterrupted, metav1.ConditionTrue, "NodeDeleted")
}
