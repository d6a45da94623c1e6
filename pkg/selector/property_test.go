package selector

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

// This file re-implements the selection contract the plain way, offer by
// offer, and checks Select against it.

// refPosition is the position of region in req.Regions, -1 for none.
func refPosition(req Request, region string) int {
	if len(req.Regions) == 0 {
		return 0
	}
	for i, pref := range req.Regions {
		if region == pref || strings.HasPrefix(region, pref+"-") {
			return i
		}
	}
	return -1
}

// refUnavailable is the reference's view of what Select passes over.
type refUnavailable struct {
	keys      map[providers.OfferingKey]bool
	providers map[string]bool
}

func (u refUnavailable) has(o providers.Offer) bool {
	return u.keys[o.Key()] || u.providers[o.Provider]
}

// selectorInput returns u as Select takes it, keys in a random order and
// some repeated.
func (u refUnavailable) selectorInput(r *rand.Rand) Unavailable {
	var in Unavailable
	for k := range u.keys {
		in.Offerings = append(in.Offerings, k)
		if r != nil && r.IntN(4) == 0 {
			in.Offerings = append(in.Offerings, k)
		}
	}
	for p := range u.providers {
		in.Providers = append(in.Providers, p)
	}
	return in
}

// observed is everything a Result tells a caller.
type observed struct {
	Request    Request
	Considered int
	Counts     map[Reason]int
	Eligible   int
	Best       providers.Offer
	Ranked     []providers.Offer
	Rejected   []Rejection
}

func observe(res Result) observed {
	best, _ := res.Best()
	return observed{res.Request, res.Considered, res.Counts, res.Eligible, best, res.RankedOffers(), res.Rejected()}
}

// refReason is why o is not eligible for req, or "" when it is.
func refReason(req Request, o providers.Offer, unavailable refUnavailable) Reason {
	isSpot := o.Capacity == providers.Spot
	wantKind := req.Kind
	if wantKind == "" {
		wantKind = providers.VM
	}
	spotCap := req.MaxSpotPrice
	if spotCap <= 0 {
		spotCap = req.MaxPrice
	}
	switch {
	case req.Provider != "" && o.Provider != req.Provider:
		return ProviderPinnedElsewhere
	case o.GPUType != req.GPUType:
		return WrongGPUType
	case o.GPUCount != req.GPUCount:
		return WrongGPUCount
	case providers.KindOf(o) != wantKind:
		return WrongMachineKind
	case slices.Contains(req.NoBootstrap, o.Provider):
		return NoBootstrapForProvider
	case refPosition(req, o.Region) < 0:
		return RegionNotPreferred
	case isSpot && !req.Spot:
		return SpotNotRequested
	case !isSpot && req.Spot && req.MaxPrice <= 0:
		return OnDemandNotAllowed
	case isSpot && spotCap > 0 && o.HourlyPrice > spotCap:
		return OverSpotCap
	case !isSpot && req.MaxPrice > 0 && o.HourlyPrice > req.MaxPrice:
		return OverOnDemandCap
	case unavailable.has(o):
		return MarkedUnavailable
	case !o.Available:
		return NoCapacity
	}
	return ""
}

// refOutranks reports whether a ranks strictly above b under the contract.
func refOutranks(req Request, a, b providers.Offer) bool {
	if (a.Capacity == providers.Spot) != (b.Capacity == providers.Spot) {
		return a.Capacity == providers.Spot
	}
	type key struct{ first, second float64 }
	ka := key{float64(refPosition(req, a.Region)), a.HourlyPrice}
	kb := key{float64(refPosition(req, b.Region)), b.HourlyPrice}
	if req.Policy == LowestPrice {
		ka.first, ka.second = ka.second, ka.first
		kb.first, kb.second = kb.second, kb.first
	}
	switch {
	case ka.first != kb.first:
		return ka.first < kb.first
	case ka.second != kb.second:
		return ka.second < kb.second
	case a.Provider != b.Provider:
		return a.Provider < b.Provider
	}
	return a.ID() < b.ID()
}

// checkResult checks res = Select(req, catalog, unavailable) against the
// reference. Offer ids in catalog must be unique.
func checkResult(t testing.TB, req Request, catalog []providers.Offer, unavailable refUnavailable, res Result) {
	t.Helper()
	if res.Considered != len(catalog) {
		t.Errorf("Considered = %d, want %d", res.Considered, len(catalog))
	}
	wantCounts := map[Reason]int{}
	var eligible []providers.Offer
	wantRejected := map[string]Reason{}
	for _, o := range catalog {
		r := refReason(req, o, unavailable)
		switch {
		case r == "":
			eligible = append(eligible, o)
		case r != WrongGPUType && o.GPUType == req.GPUType:
			wantRejected[o.ID()] = r
			fallthrough
		default:
			wantCounts[r]++
		}
	}
	if diff := cmp.Diff(wantCounts, res.Counts); diff != "" {
		t.Errorf("Counts (-want +got):\n%s", diff)
	}
	rejected := res.Rejected()
	if diff := cmp.Diff(wantRejected, reasonsByID(rejected)); diff != "" || len(rejected) != len(wantRejected) {
		t.Errorf("Rejected (%d entries) differs from the reference (-want +got):\n%s", len(rejected), diff)
	}
	ranked := res.RankedOffers()
	if res.Eligible != len(ranked) {
		t.Errorf("Eligible = %d, Ranked yields %d offers", res.Eligible, len(ranked))
	}
	for _, o := range ranked {
		if r := refReason(req, o, unavailable); r != "" {
			t.Errorf("ranked offer %s is not eligible: %s", o.ID(), r)
		}
	}
	if len(ranked) != len(eligible) {
		t.Errorf("ranked %d offers, the reference finds %d eligible", len(ranked), len(eligible))
	}
	for i := 1; i < len(ranked); i++ {
		if !refOutranks(req, ranked[i-1], ranked[i]) {
			t.Errorf("%s is ranked above %s", ranked[i-1].ID(), ranked[i].ID())
		}
	}
	best, ok := res.Best()
	if ok != (len(eligible) > 0) {
		t.Errorf("Best() found an offer: %v; the reference finds %d eligible", ok, len(eligible))
	}
	for _, o := range eligible {
		if ok && refOutranks(req, o, best) {
			t.Errorf("eligible %s outranks the chosen %s", o.ID(), best.ID())
		}
	}
}

var (
	propGPUTypes  = []string{"RTX4090", "A100", "H100"}
	propCounts    = []int{1, 2, 4, 8}
	propProviders = []string{providers.LambdaLabs, providers.RunPod, providers.Paperspace}
	propRegions   = []string{"us-west", "us-west-1", "us-west-2", "us-westfoo", "us-east-1", "eu-west-1", "us", "eu"}
	propPrices    = []float64{0.10, 0.25, 0.50, 1.00, 2.00, 2.50, 10.0}
	// propKinds has the empty kind, which means VM for offers and requests.
	propKinds = []providers.MachineKind{"", providers.VM, providers.Container}
)

func pick[T any](r *rand.Rand, s []T) T { return s[r.IntN(len(s))] }

// randomCase returns a random request, a catalog of both machine kinds with
// unique offer ids and a random set of unavailable offerings. Small pools
// make ties frequent.
func randomCase(r *rand.Rand) (Request, []providers.Offer, refUnavailable) {
	req := Request{
		GPUType:  pick(r, propGPUTypes),
		GPUCount: pick(r, propCounts),
		Policy:   pick(r, []Policy{"", Ordered, LowestPrice}),
		Spot:     r.IntN(2) == 0,
		Kind:     pick(r, propKinds),
	}
	// Providers without a bootstrap, sometimes repeated or unknown.
	for range r.IntN(3) {
		req.NoBootstrap = append(req.NoBootstrap, pick(r, append(propProviders, "nowhere")))
	}
	for range r.IntN(4) {
		req.Regions = append(req.Regions, pick(r, propRegions))
	}
	if r.IntN(2) == 0 {
		req.MaxSpotPrice = pick(r, propPrices)
	}
	if r.IntN(2) == 0 {
		req.MaxPrice = pick(r, propPrices)
	}
	if r.IntN(4) == 0 {
		req.Provider = pick(r, append(propProviders, "nowhere"))
	}
	var catalog []providers.Offer
	seen := map[string]bool{}
	unavailable := refUnavailable{keys: map[providers.OfferingKey]bool{}, providers: map[string]bool{}}
	if r.IntN(6) == 0 {
		unavailable.providers[pick(r, append(propProviders, "nowhere"))] = true
	}
	for range r.IntN(40) {
		o := providers.Offer{
			Provider:     pick(r, propProviders),
			InstanceType: fmt.Sprintf("type-%d", r.IntN(4)),
			GPUType:      pick(r, propGPUTypes),
			GPUCount:     pick(r, propCounts),
			Region:       pick(r, propRegions),
			Capacity:     pick(r, []providers.CapacityType{providers.Spot, providers.OnDemand}),
			HourlyPrice:  pick(r, propPrices),
			Available:    r.IntN(8) != 0,
			PriceSource:  providers.PriceSourceAPI,
			Kind:         pick(r, propKinds),
		}
		o.ProviderRegion = strings.ToUpper(o.Region)
		if seen[o.ID()] {
			continue
		}
		seen[o.ID()] = true
		catalog = append(catalog, o)
		if r.IntN(8) == 0 {
			unavailable.keys[o.Key()] = true
		}
	}
	return req, catalog, unavailable
}

func TestSelectProperties(t *testing.T) {
	for seed := range uint64(5000) {
		r := rand.New(rand.NewPCG(seed, 0x5e1ec7))
		req, catalog, unavailable := randomCase(r)
		res := Select(req, catalog, unavailable.selectorInput(r))
		checkResult(t, req, catalog, unavailable, res)

		shuffled := slices.Clone(catalog)
		r.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if diff := cmp.Diff(observe(res), observe(Select(req, shuffled, unavailable.selectorInput(r)))); diff != "" {
			t.Errorf("the result depends on the catalog's order (-original +shuffled):\n%s", diff)
		}
		if t.Failed() {
			t.Fatalf("seed %d: request %+v, catalog %+v, unavailable %v", seed, req, catalog, unavailable)
		}
	}
}
