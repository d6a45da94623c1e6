// Package selector ranks GPU offers for a request following the selection
// order of the product contract: it filters the eligible offers (provider
// pin, GPU type and exact count, machine kind, a bootstrap for the provider,
// region, capacity type and price cap, unavailable offerings, provider
// capacity), ranks spot before on-demand, then by region position and price
// as the region policy says, and breaks the remaining ties by provider name
// and offer id.
//
// The package is pure: offers in, a ranked choice and the reasons every other
// offer lost out. It does no I/O and starts no goroutines. Build an Index once
// per catalog and call Select for every decision: a decision costs time in
// the distinct (capacity type, provider, availability) runs of the requested
// GPU type, count and machine kind in the preferred regions, not in the
// number of offers, of their instance types or of the runs elsewhere, and
// ranks or explains the rest only when asked (Result.Ranked,
// Result.Rejected). On a 50,000-offer marketplace catalog (market_test.go,
// 2 cores) a decision takes about 10 µs and 9 allocations; building its
// Index takes about 0.11 s, and the Index holds 9.7 MiB beside the
// catalog's 7.9 MiB. What is unavailable right now (offerings that failed to
// launch, providers blocked for their credentials) is the caller's to track
// and is handed to Select as an Unavailable; the package holds no clock,
// lock or cache.
package selector

import (
	"errors"
	"fmt"
	"math"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

// Policy says how region preference and price combine within a capacity type.
type Policy string

const (
	// Ordered ranks by region position, then price: earlier regions win and
	// later ones are failover. The empty Policy means Ordered.
	Ordered Policy = "Ordered"
	// LowestPrice ranks by price across every listed region; region position
	// breaks ties.
	LowestPrice Policy = "LowestPrice"
)

// Request is what the selector needs to know about a GPURequest.
type Request struct {
	// GPUType is the canonical GPU model; an offer must match it exactly.
	GPUType string
	// GPUCount is the number of GPUs on one machine; an offer must have
	// exactly this many.
	GPUCount int
	// Regions are canonical regions or region prefixes in order of
	// preference. A prefix matches a region equal to it or continuing it at
	// a "-" boundary: "us-west" matches "us-west" and "us-west-1" but not
	// "us-westfoo". An offer's position is that of the first entry it
	// matches. Empty means any region, all at position 0.
	Regions []string
	// Policy combines region position and price; empty means Ordered.
	Policy Policy
	// Spot asks for spot capacity first. On-demand offers are then eligible
	// only as a fallback capped by MaxPrice.
	Spot bool
	// MaxSpotPrice caps a spot offer, USD/h for the whole machine; 0 means
	// unset, in which case MaxPrice (if set) caps spot offers too.
	MaxSpotPrice float64
	// MaxPrice caps an on-demand offer, USD/h for the whole machine; 0 means
	// unset (no cap, and no on-demand fallback when Spot is set).
	MaxPrice float64
	// Provider pins the request to one provider; empty means any.
	Provider string
	// Kind is the machine kind the request is served by; an offer must be
	// of this kind (providers.KindOf), or it loses as WrongMachineKind.
	// Empty means providers.VM: a GPURequest without spec.container.
	Kind providers.MachineKind
	// NoBootstrap names the providers the caller has no bootstrap for: the
	// controller lists those whose machines run none of the formats of the
	// request's bootstrap templates (providers.BootstrapFormats). Their
	// offers lose as NoBootstrapForProvider, a pinned provider's too. Names
	// of providers without offers are ignored; nil means every provider
	// has one.
	NoBootstrap []string
}

// kind is the request's machine kind, VM when unset.
func (r Request) kind() providers.MachineKind {
	if r.Kind == "" {
		return providers.VM
	}
	return r.Kind
}

// Validate reports inputs the selector cannot rank: an empty GPU type, a GPU
// count below 1, an unknown policy or machine kind, or a negative or NaN
// price cap. Select does not validate; it finds no eligible offer for a
// count below 1, ranks an unknown policy as Ordered, matches an unknown kind
// only to offers of that same kind and treats a cap that is not positive as
// unset.
func (r Request) Validate() error {
	var errs []error
	if r.GPUType == "" {
		errs = append(errs, errors.New("gpuType must not be empty"))
	}
	if r.GPUCount < 1 {
		errs = append(errs, fmt.Errorf("gpuCount must be at least 1, got %d", r.GPUCount))
	}
	switch r.Policy {
	case "", Ordered, LowestPrice:
	default:
		errs = append(errs, fmt.Errorf("unknown region policy %q, want %q or %q", r.Policy, Ordered, LowestPrice))
	}
	switch r.Kind {
	case "", providers.VM, providers.Container:
	default:
		errs = append(errs, fmt.Errorf("unknown machine kind %q, want %q or %q", r.Kind, providers.VM, providers.Container))
	}
	if r.MaxSpotPrice < 0 || math.IsNaN(r.MaxSpotPrice) {
		errs = append(errs, fmt.Errorf("maxSpotPrice must not be negative, got %v", r.MaxSpotPrice))
	}
	if r.MaxPrice < 0 || math.IsNaN(r.MaxPrice) {
		errs = append(errs, fmt.Errorf("maxPrice must not be negative, got %v", r.MaxPrice))
	}
	return errors.Join(errs...)
}

// Reason is why an offer is not eligible.
type Reason string

// The reasons an offer loses, in the order they are checked: when several
// apply, the first one is reported.
const (
	// ProviderPinnedElsewhere: the request pins another provider.
	ProviderPinnedElsewhere Reason = "ProviderPinnedElsewhere"
	// WrongGPUType: the offer has another GPU model.
	WrongGPUType Reason = "WrongGPUType"
	// WrongGPUCount: the offer has another number of GPUs.
	WrongGPUCount Reason = "WrongGPUCount"
	// WrongMachineKind: the offer is of another machine kind than the
	// request's (Request.Kind): a container offer for a request that needs a
	// Node, or a VM offer for one with spec.container.
	WrongMachineKind Reason = "WrongMachineKind"
	// NoBootstrapForProvider: the offer's provider is in Request.NoBootstrap,
	// so the caller has no bootstrap its machines run (for instance a
	// cloud-init template for a provider that runs only scripts). A request
	// pinned to such a provider reports this reason for the provider's
	// offers.
	NoBootstrapForProvider Reason = "NoBootstrapForProvider"
	// RegionNotPreferred: the offer's region matches none of the request's.
	RegionNotPreferred Reason = "RegionNotPreferred"
	// SpotNotRequested: a spot offer, and the request does not want spot.
	SpotNotRequested Reason = "SpotNotRequested"
	// OnDemandNotAllowed: an on-demand offer for a spot request without a
	// MaxPrice, so there is no on-demand fallback.
	OnDemandNotAllowed Reason = "OnDemandNotAllowed"
	// OverSpotCap: a spot offer priced above MaxSpotPrice (or MaxPrice).
	OverSpotCap Reason = "OverSpotCap"
	// OverOnDemandCap: an on-demand offer priced above MaxPrice.
	OverOnDemandCap Reason = "OverOnDemandCap"
	// MarkedUnavailable: the offering recently failed to launch and is in
	// the unavailable-offerings cache.
	MarkedUnavailable Reason = "MarkedUnavailable"
	// NoCapacity: the provider reports no capacity for the offer right now.
	NoCapacity Reason = "NoCapacity"
)

// reasonOrder lists every Reason in checking order; Summary uses it to
// break ties between equal counts.
var reasonOrder = [...]Reason{
	ProviderPinnedElsewhere, WrongGPUType, WrongGPUCount, WrongMachineKind,
	NoBootstrapForProvider, RegionNotPreferred, SpotNotRequested,
	OnDemandNotAllowed, OverSpotCap, OverOnDemandCap, MarkedUnavailable,
	NoCapacity,
}

// Rejection is an offer that lost and why.
type Rejection struct {
	Offer  providers.Offer
	Reason Reason
	// Detail explains the reason for this offer, e.g. "2.10 > cap 2.00".
	Detail string
}

// Unavailable is what Select passes over as MarkedUnavailable: offerings
// that recently failed to launch and providers blocked as a whole (for
// example while they reject the credentials). Select reads it once; the
// Result does not see later changes.
type Unavailable struct {
	// Offerings are unavailable one by one; a key names every offer it
	// matches, whatever its GPU count or price.
	Offerings []providers.OfferingKey
	// Providers have every offering unavailable.
	Providers []string
}

// Result is the outcome of one selection: the counts of why offers lost,
// how many are eligible and the best of them, computed by Select; the full
// ranking and the per-offer rejections are produced on demand, so that a
// decision does not pay for listing every offer. A Result reads its Index,
// which is immutable, and shares no mutable memory with the caller.
type Result struct {
	// Request is the request the offers were ranked for.
	Request Request
	// Considered is the number of offers in the catalog.
	Considered int
	// Counts is the number of offers in the whole catalog that lost for
	// each reason; reasons no offer lost for are absent.
	Counts map[Reason]int
	// Eligible is the number of eligible offers, the length of Ranked.
	Eligible int

	d *decision
}

// Best returns the best eligible offer, if there is one.
func (r Result) Best() (providers.Offer, bool) {
	if r.Eligible == 0 {
		return providers.Offer{}, false
	}
	return r.d.cg.entries[r.d.best].offer, true
}
