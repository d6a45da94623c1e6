// Package vastai is the Vast.ai provider adapter. It speaks Vast.ai's REST
// API (https://console.vast.ai) through vastaiapi, a client generated from
// Vast.ai's own OpenAPI document (../shared/provider-specs/vastai/
// openapi.yaml), in these operations:
//
//   - Offers: POST /api/v0/bundles/ (searchOffers) twice per refresh, one
//     search per capacity type ("type": "ondemand" and "bid"): a catalog
//     refresh is exactly 2 calls, however many requests, offers or hosts
//     there are;
//   - Launch: PUT /api/v0/asks/{id}/ (createInstance), plus, before the
//     first VM and after Vast.ai says the account has no key, GET and POST
//     /api/v0/ssh/ (getSshKeysUser, createSshKey) to register the operator's
//     SSH key;
//   - Instances: GET /api/v1/instances/ (showInstances), 25 instances a page
//     (the API's maximum): one call per 25 instances in the account;
//   - Terminate: DELETE /api/v0/instances/{id}/ (destroyInstance);
//   - RaiseBid: PUT /api/v0/instances/bid_price/{id}/ (changeBid).
//
// Every call goes through one providers.Caller, so they share the rate
// limit and Retry-After. Paths carry the trailing slash Vast.ai's guide and
// CLI send (the spec writes them without it).
//
// # A marketplace
//
// Vast.ai sells individual hosts: every offer is one ask on one host, with
// its own price, GPUs, reliability and location (pricing.mdx: "hosts set
// their own prices"). Offer.InstanceType is the ask id (the offer "id",
// which a create takes as {id}), capacity is one machine, and a host rented
// by someone else between a refresh and a launch answers 404 no_such_ask:
// ClassCapacity, so the controller fails over to the next offer in the same
// sync. The search asks, by default, for what a careful user would (Filters):
// verified hosts, reliability of at least 0.98, rentable now and not already
// rented, GPU names the adapter maps (GPUTypes); each search is ordered by
// price and limited to SearchLimit offers, so a server-side cap drops the
// dearest offers first. On-demand offers are priced at the host's total
// $/h (dph_total of an "ondemand" search, storage for DiskGB included);
// interruptible offers at their minimum bid (min_bid of a "bid" search, the
// machine's bid without its storage charge). Locations map to canonical
// regions through one table (Region); a location no table maps is kept
// under a name derived from its country, never dropped.
//
// # Machine kinds
//
// A host with VMs enabled (vms_enabled) is offered as a providers.VM: its
// launch creates a VM ("vm": true, image VMImage, runtype ssh_direct),
// which runs systemd, Docker and a kubelet (virtual-machines.mdx). Every
// other host is offered as a providers.Container: its launch runs
// LaunchRequest.Container with runtype "args" (the image's entrypoint,
// args, env, and ports as "-p N:N" env keys). A VM-capable host is offered
// only as a VM, so each host is one offer per capacity type (Offer.ID has
// no machine kind).
//
// A VM's bootstrap cannot be passed at create: VMs support "only SSH launch
// mode", and onstart is documented to run "after Vast's entrypoint
// initializes", in a container. So BootstrapDelivery is
// providers.DeliverOverSSH: the controller runs the rendered script over
// SSH (package sshboot) once Instances reports the VM running with its
// Instance.SSH endpoint. Vast.ai puts the account's SSH keys on a VM when it
// is created and never after ("SSH keys cannot be edited on running VMs";
// the spec's quirk "SSH keys must be registered BEFORE creating an instance
// (VM: no recovery)"), so the adapter registers Config.SSHPublicKey with the
// account before the first VM launch.
//
// # Interruptible instances are bids
//
// A launch of a Spot offer bids LaunchRequest.BidPrice ("price"), which the
// controller takes from BidFor. An interruptible instance that a higher bid
// stops is reported as providers.StateInterrupted with Instance.Outbid set
// and Instance.MinBid the bid that would win now; RaiseBid changes its bid,
// and one that wins again resumes. Creates send cancel_unavail, so a bid
// that cannot start at once fails (410: ClassCapacity) rather than waiting.
package vastai

import (
	"context"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/vastai/vastaiapi"
)

// Defaults for Config.
const (
	// DefaultAPIURL is the spec's server.
	DefaultAPIURL = "https://console.vast.ai"
	// DefaultRequestsPerSecond is two calls a second over all Vast.ai calls.
	// The spec publishes no rate; its 429 examples name per-endpoint
	// thresholds from 1.0 to 5.5 ("API requests too frequent endpoint
	// threshold=4.5") without a unit, so this is a guess that a 429 corrects:
	// it blocks every call for its Retry-After.
	DefaultRequestsPerSecond = 2
	DefaultCallTimeout       = providers.DefaultCallTimeout
	// DefaultMinReliability is the lowest host reliability searched for
	// (Vast.ai's reliability is a 0-1 score; its guide's examples filter for
	// 0.99).
	DefaultMinReliability = 0.98
	// DefaultSearchLimit is the most offers one search asks for ("limit":
	// the spec names no maximum).
	DefaultSearchLimit = 10000
	// DefaultDiskGB is the disk of every instance, and the storage the
	// searches price (allocated_storage).
	DefaultDiskGB = 50
	// DefaultVMImage is the image of a VM: VM templates "must use one of"
	// the docker.io/vastai/kvm images, and this is the one the VM guide
	// names (virtual-machines.mdx, "docker.io/vastai/kvm:ubuntu_terminal").
	DefaultVMImage = "docker.io/vastai/kvm:ubuntu_terminal"
	// SSHUser is the user Vast.ai's SSH endpoints log in (its CLI's
	// ssh-url prints root@host:port; the spec does not say).
	SSHUser = "root"
)

// maxBody bounds what is read from any response (a search of thousands of
// offers is the largest).
const maxBody = 128 << 20

// Filters are the offer search's filters. The zero value is what a careful
// user would set: verified hosts, reliability of at least
// DefaultMinReliability, rentable now.
type Filters struct {
	// AllowUnverified searches unverified hosts too ("verified": {"eq":
	// true} is dropped).
	AllowUnverified bool
	// MinReliability is the lowest host reliability (0-1) searched for
	// (default DefaultMinReliability; negative: any).
	MinReliability float64
	// IncludeUnrentable also lists hosts that cannot be rented now, as
	// offers with Available false (the catalog then shows the whole market).
	IncludeUnrentable bool
	// NoVMs offers VM-capable hosts as containers instead of VMs (no VM
	// offers at all).
	NoVMs bool
}

// Config configures an Adapter. Zero values take the defaults; a negative
// RequestsPerSecond or CallTimeout turns that limit off.
type Config struct {
	// APIURL is the server (default DefaultAPIURL).
	APIURL string
	// Key returns the current API key, sent as a Bearer token on every call
	// and never logged or put in an error.
	Key func() string
	// HTTPClient makes the calls (default: a new http.Client).
	HTTPClient *http.Client
	// RequestsPerSecond is the client-side rate limit over all calls
	// (default DefaultRequestsPerSecond).
	RequestsPerSecond float64
	// CallTimeout bounds every HTTP call (default DefaultCallTimeout).
	CallTimeout time.Duration
	// Clock times Retry-After windows (default: the real clock).
	Clock clock.PassiveClock
	// Filters narrow the offer search (see Filters).
	Filters Filters
	// SearchLimit is the most offers one search returns (default
	// DefaultSearchLimit).
	SearchLimit int
	// DiskGB is every instance's disk in GB (default DefaultDiskGB).
	DiskGB float64
	// VMImage is the image of VM launches (default DefaultVMImage).
	VMImage string
	// SSHPublicKey returns the operator's SSH public key, as an
	// authorized_keys line (sshboot.NewKey, sshboot.LoadKey); it is
	// registered with the account before a VM is created. A VM launch
	// without one is ClassInvalid and sends nothing. It is read at every VM
	// launch, so a rotated key is registered before the next VM.
	SSHPublicKey func() string
}

// Adapter implements providers.Provider, providers.Bidder,
// providers.BootstrapFormatter and providers.BootstrapDeliverer for
// Vast.ai. It is safe for concurrent use. It keeps no memory of what it
// launched: every Launch creates, and the controller finds an instance by
// its label through Instances. The only thing it remembers is which SSH key
// it has seen registered.
type Adapter struct {
	cfg   Config
	calls *providers.Caller
	api   *vastaiapi.Client

	keyMu sync.Mutex
	// registeredKey is the SSH public key known to be on the account.
	registeredKey string
}

var (
	_ providers.Provider           = (*Adapter)(nil)
	_ providers.Bidder             = (*Adapter)(nil)
	_ providers.BootstrapFormatter = (*Adapter)(nil)
	_ providers.BootstrapDeliverer = (*Adapter)(nil)
)

// New builds an Adapter, filling in defaults.
func New(cfg Config) (*Adapter, error) {
	if cfg.APIURL == "" {
		cfg.APIURL = DefaultAPIURL
	}
	cfg.APIURL = strings.TrimRight(cfg.APIURL, "/")
	if cfg.Filters.MinReliability == 0 {
		cfg.Filters.MinReliability = DefaultMinReliability
	}
	if cfg.Filters.MinReliability > 1 {
		return nil, fmt.Errorf("vastai: MinReliability %v is above 1", cfg.Filters.MinReliability)
	}
	if cfg.SearchLimit <= 0 {
		cfg.SearchLimit = DefaultSearchLimit
	}
	if cfg.DiskGB <= 0 {
		cfg.DiskGB = DefaultDiskGB
	}
	if cfg.VMImage == "" {
		cfg.VMImage = DefaultVMImage
	}
	calls, err := providers.NewCaller(providers.CallConfig{
		Provider:          providers.VastAI,
		Key:               cfg.Key,
		Classify:          ClassifyResponse,
		HTTPClient:        cfg.HTTPClient,
		RequestsPerSecond: providers.OrDefault(cfg.RequestsPerSecond, DefaultRequestsPerSecond),
		CallTimeout:       providers.OrDefault(cfg.CallTimeout, DefaultCallTimeout),
		MaxBody:           maxBody,
		Clock:             cfg.Clock,
	})
	if err != nil {
		return nil, err
	}
	api, err := vastaiapi.NewClient(cfg.APIURL, vastaiapi.WithHTTPClient(calls), vastaiapi.WithRequestEditorFn(trailingSlash))
	if err != nil {
		return nil, fmt.Errorf("vastai: client: %w", err)
	}
	return &Adapter{cfg: cfg, calls: calls, api: api}, nil
}

// trailingSlash ends every path with "/", as Vast.ai's guide
// (creating-instances-with-api.mdx: PUT /api/v0/asks/{id}/, POST
// /api/v0/bundles/) and CLI send them.
func trailingSlash(_ context.Context, req *http.Request) error {
	if !strings.HasSuffix(req.URL.Path, "/") {
		req.URL.Path += "/"
		if req.URL.RawPath != "" {
			req.URL.RawPath += "/"
		}
	}
	return nil
}

// Name is providers.VastAI.
func (a *Adapter) Name() string { return providers.VastAI }

// BootstrapFormats is a script only: the bootstrap is run over SSH as an
// executable file, so its "#!" line picks the interpreter (there is no
// cloud-init pass on that path).
func (a *Adapter) BootstrapFormats() []providers.BootstrapFormat {
	return []providers.BootstrapFormat{providers.FormatScript}
}

// BootstrapDelivery is providers.DeliverOverSSH (see the package doc).
func (a *Adapter) BootstrapDelivery() providers.BootstrapDelivery { return providers.DeliverOverSSH }

// BidFor is the package's BidFor: the adapter's bid policy.
func (a *Adapter) BidFor(minBid, cap float64) (float64, bool) { return BidFor(minBid, cap) }

func sortStrings(s []string) { sort.Strings(s) }
