// Package providers defines the one interface every GPU cloud adapter
// implements, the normalized offer and instance shapes the selector and the
// controller work with, and the typed errors the controller acts on.
package providers

import (
	"context"
	"strings"
)

// Provider names, as users write them in spec.provider.
const (
	LambdaLabs = "lambdalabs"
	RunPod     = "runpod"
	Paperspace = "paperspace"
	VastAI     = "vastai"
)

// MachineNamePrefix starts the name of every machine the operator launches;
// the leaked-instance collector only ever touches instances that carry it.
const MachineNamePrefix = "gpur-"

// IsOperatorMachine reports whether a provider-side name belongs to the operator.
func IsOperatorMachine(name string) bool { return strings.HasPrefix(name, MachineNamePrefix) }

// CapacityType is how a machine is billed and whether it can be taken back.
type CapacityType string

const (
	Spot     CapacityType = "spot"
	OnDemand CapacityType = "on-demand"
)

// PriceSource says where an offer's price came from.
type PriceSource string

const (
	// PriceSourceAPI prices come from the provider's own catalog API.
	PriceSourceAPI PriceSource = "api"
	// PriceSourceStatic prices come from the table shipped with the operator
	// (or its ConfigMap override) because the provider publishes none.
	PriceSourceStatic PriceSource = "static"
)

// Offer is one way to buy a machine: one instance type, in one region, with
// one capacity type. An instance type sold both as spot and on-demand yields
// two offers.
type Offer struct {
	// Provider is the adapter's name (LambdaLabs, RunPod, Paperspace, VastAI).
	Provider string `json:"provider"`
	// InstanceType is the provider's native type id, passed back to Launch.
	InstanceType string `json:"instanceType"`
	// GPUType is the canonical GPU model (H100, A100-80GB, RTX4090, ...).
	GPUType string `json:"gpuType"`
	// GPUCount is the exact number of GPUs on the machine.
	GPUCount int `json:"gpuCount"`
	// Region is the canonical region (us-west-1, eu-central-1, ...).
	Region string `json:"region"`
	// ProviderRegion is the provider's native region or data center id.
	ProviderRegion string `json:"providerRegion"`
	// Capacity is spot or on-demand.
	Capacity CapacityType `json:"capacity"`
	// HourlyPrice is USD per hour for the whole machine.
	HourlyPrice float64 `json:"hourlyPrice"`
	// Available is false when the provider reports no capacity right now.
	Available bool `json:"available"`
	// PriceSource says where HourlyPrice came from.
	PriceSource PriceSource `json:"priceSource"`
	// Kind is what the machine is: a VM that can join as a Node, or a
	// container. Empty means VM.
	Kind MachineKind `json:"kind,omitempty"`
}

// Key identifies an offering for the unavailable-offerings cache.
func (o Offer) Key() OfferingKey {
	return OfferingKey{Provider: o.Provider, InstanceType: o.InstanceType, Region: o.ProviderRegion, Capacity: o.Capacity}
}

// ID is a stable, human-readable identifier of the offer.
func (o Offer) ID() string {
	return o.Provider + "/" + o.InstanceType + "/" + o.ProviderRegion + "/" + string(o.Capacity)
}

// OfferingKey identifies one offering independent of its price.
type OfferingKey struct {
	Provider     string
	InstanceType string
	Region       string // native region
	Capacity     CapacityType
}

// LaunchRequest asks an adapter for one machine.
type LaunchRequest struct {
	// Name is the machine name (MachineNamePrefix + request UID + attempt).
	// The controller launches a given name at most once: it records the
	// name before the call and finds the instance by it in Instances.
	Name string
	// Offer is the offer being bought.
	Offer Offer
	// UserData is the rendered bootstrap of a VM, in a format its provider
	// runs (BootstrapFormats).
	UserData string
	// Container is what a container machine runs; nil for a VM.
	Container *ContainerSpec
	// Tags are key/value labels attached where the provider supports them.
	Tags map[string]string
	// BidPrice is the bid, USD/h for the whole machine, of a launch of a
	// Spot offer on a bid market (a provider that implements Bidder:
	// Vast.ai, whose interruptible instances are bids). The controller sets
	// it from the provider's bid policy (Bidder.BidFor, between the offer's
	// minimum bid and the request's spot cap); the adapter sends it as the
	// create's bid (Vast.ai: "price"). Zero for on-demand offers and for
	// providers without bids, which ignore it.
	BidPrice float64
}

// InstanceState is an instance's provider state, normalized.
type InstanceState string

const (
	StatePending     InstanceState = "pending"
	StateBooting     InstanceState = "booting"
	StateRunning     InstanceState = "running"
	StateInterrupted InstanceState = "interrupted"
	StateTerminating InstanceState = "terminating"
	StateTerminated  InstanceState = "terminated"
	StateFailed      InstanceState = "failed"
)

// Alive reports whether an instance in this state may still be billing and
// needs an explicit terminate.
func (s InstanceState) Alive() bool {
	return s != StateTerminated
}

// Instance is a machine as the provider reports it.
type Instance struct {
	Provider       string        `json:"provider"`
	ID             string        `json:"id"`
	Name           string        `json:"name"`
	InstanceType   string        `json:"instanceType"`
	ProviderRegion string        `json:"providerRegion"`
	Spot           bool          `json:"spot"`
	State          InstanceState `json:"state"`
	// NativeState is the provider's own status string, for messages.
	NativeState string `json:"nativeState"`
	PublicIP    string `json:"publicIP,omitempty"`
	// Ports are a container machine's port mappings, when known.
	Ports []PortMapping `json:"ports,omitempty"`
	// BidPrice is the current bid of an interruptible instance on a bid
	// market (Vast.ai), USD/h for the whole machine: what it costs while it
	// runs. Zero when the instance is not a bid.
	BidPrice float64 `json:"bidPrice,omitempty"`
	// MinBid is the lowest bid the provider reports would win the
	// instance's machine now (Vast.ai's min_bid), USD/h; zero when unknown.
	// It is what a re-bid starts from (Bidder.BidFor).
	MinBid float64 `json:"minBid,omitempty"`
	// Outbid is set for an interruptible instance that a higher bid has
	// stopped (State is StateInterrupted): it still exists, and raising its
	// bid above MinBid (Bidder.RaiseBid) may resume it.
	Outbid bool `json:"outbid,omitempty"`
	// SSH is where the instance's SSH server is reachable, when the
	// provider reports it (Vast.ai): a VM whose bootstrap is delivered over
	// SSH (DeliverOverSSH) is bootstrapped there once it is running.
	SSH *SSHEndpoint `json:"ssh,omitempty"`
}

// Provider is one GPU cloud. Implementations are safe for concurrent use.
type Provider interface {
	// Name is the provider's name (LambdaLabs, RunPod, Paperspace).
	Name() string
	// Offers returns the current catalog, normalized: canonical GPU type and
	// region, exact GPU count, whole-machine USD/h, one offer per capacity type.
	Offers(ctx context.Context) ([]Offer, error)
	// Launch creates a machine named LaunchRequest.Name, once per call: an
	// adapter keeps no memory of names it launched, so a second Launch of a
	// name is a second machine. Deduplication is the caller's, through
	// Instances, which lists every machine under its name. An error of
	// ClassTransient is ambiguous (the machine may exist); every other class
	// means nothing was created. The returned Instance is what the create
	// answer says (its ID at least); Instances reports its state.
	Launch(ctx context.Context, req LaunchRequest) (Instance, error)
	// Instances lists, in one call, every instance of the operator's
	// (name starting with MachineNamePrefix) with its normalized state.
	Instances(ctx context.Context) ([]Instance, error)
	// Terminate destroys an instance. Terminating a missing instance succeeds.
	Terminate(ctx context.Context, id string) error
}

// Bidder is implemented by an adapter whose spot offers are bids
// (Vast.ai's interruptible instances): a Spot offer is launched with
// LaunchRequest.BidPrice, and an instance that is outbid (Instance.Outbid)
// may be resumed by raising its bid.
type Bidder interface {
	// BidFor is the provider's bid policy: the bid to place on a machine
	// whose minimum bid is minBid (a Spot offer's HourlyPrice at launch, an
	// outbid instance's MinBid on a re-bid) under a spot cap of cap (the
	// request's maxSpotPrice, or maxPrice when that is unset), both USD/h
	// for the whole machine. ok is false when no bid at or under cap can
	// win: the offer is not eligible, or the instance is an interruption.
	BidFor(minBid, cap float64) (bid float64, ok bool)
	// RaiseBid changes the bid of instance id to price, USD/h for the
	// whole machine. An outbid instance whose new bid wins its machine
	// resumes; one that still loses stays stopped (its MinBid says what
	// would win). A missing instance is ClassNotFound.
	RaiseBid(ctx context.Context, id string, price float64) error
}

// UserDataLimit is the largest rendered bootstrap, in bytes, that a
// provider accepts; the operator refuses to render more (so one tenant's
// oversized template never reaches a provider and never marks an offering
// unavailable for everyone). Sources: ../shared/DESIGN.md "The providers as
// they really are" (Lambda: cloud-init user_data, 1 MB; Paperspace: startup
// script, 16 KB). RunPod's machines are containers and take no user data.
// Vast.ai's VMs get theirs over SSH (DeliverOverSSH), as the standard input
// of a shell: Vast.ai sets no limit there (its onstart field, limited to
// 4048 characters by its spec, is not used), so the operator's own 1 MB
// applies.
func UserDataLimit(provider string) int {
	switch provider {
	case LambdaLabs:
		return 1 << 20
	case Paperspace:
		return 16 << 10
	case VastAI:
		return 1 << 20
	}
	return 1 << 20
}
