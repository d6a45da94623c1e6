// Package runpod is the RunPod provider adapter. It speaks RunPod's REST v2
// API (https://api.runpod.io, paths /v2/...) through runpodv2, a client
// generated from RunPod's own OpenAPI document
// (../shared/provider-specs/runpod/rest-v2-openapi.json). REST v1 was retired
// on 2026-11-15 and GraphQL is not used: v2 covers everything the adapter
// does, in four operations:
//
//   - Offers: GET /v2/catalog/gpus?include=AVAILABILITY&product=POD&cloud=C
//     (listGpuTypes), one call per refresh however large the catalog is;
//   - Launch: POST /v2/pods (createPod);
//   - Instances: GET /v2/pods (listPods), one call per poll;
//   - Terminate: DELETE /v2/pods/{id} (deletePod); Instance reads one pod
//     with GET /v2/pods/{id} (getPod).
//
// Every call goes through one providers.Caller, so they share RunPod's rate
// limit and Retry-After.
//
// A RunPod pod is an unprivileged container on a RunPod host: it runs an
// image and cannot run a kubelet, so every offer is a providers.Container
// offer and a Launch needs LaunchRequest.Container. The adapter runs no user
// data (BootstrapFormats is empty).
//
// RunPod withdrew spot capacity in 2026 (REST v2 has no interruptible field;
// the GraphQL podRentInterruptable mutation is being removed, runpod/runpodctl
// PR #267), so every offer is on-demand.
//
// Offer.InstanceType is the RunPod GPU type id ("NVIDIA H100 80GB HBM3"), and
// Launch takes the GPU count from Offer.GPUCount. A RunPod pod is not an
// instance type but a number of GPUs of one type, so every (type, data
// center) is offered once per count from 1 to the type's maxCount. Offer.Key()
// does not include the count, so marking one count of a type unavailable in
// a data center marks its other counts too, which is conservative.
package runpod

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"k8s.io/utils/clock"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod/runpodv2"
)

// Defaults for Config.
const (
	// DefaultAPIURL is REST v2's server (its paths carry /v2 themselves).
	DefaultAPIURL = "https://api.runpod.io"
	// DefaultRequestsPerSecond is one call a second: the example policy in
	// RunPod's REST v2 spec (RateLimit-Policy "minute";q=60;w=60) allows 60
	// calls a minute. The spec says the figures are examples, not
	// guarantees; a 429 still blocks calls for its Retry-After.
	DefaultRequestsPerSecond = 1
	DefaultCallTimeout       = providers.DefaultCallTimeout
)

// Cloud is the RunPod cloud tier pods are rented in (REST v2's Cloud enum).
type Cloud string

const (
	// SecureCloud is RunPod-owned data center hardware, the default.
	SecureCloud Cloud = Cloud(runpodv2.CloudSECURE)
	// CommunityCloud is community-hosted hardware: cheaper, but hosts run by
	// third parties are less reliable (RunPod's own description of the tier
	// is "community-hosted hardware"), so it is opt-in only.
	CommunityCloud Cloud = Cloud(runpodv2.CloudCOMMUNITY)
)

// ParseCloud reads a cloud tier, case-insensitively; "" is SecureCloud.
func ParseCloud(s string) (Cloud, error) {
	switch c := Cloud(strings.ToUpper(strings.TrimSpace(s))); c {
	case "":
		return SecureCloud, nil
	case SecureCloud, CommunityCloud:
		return c, nil
	}
	return "", fmt.Errorf("runpod: unknown cloud %q (want %s or %s)", s, SecureCloud, CommunityCloud)
}

// maxBody bounds what is read from any response (the catalog is the largest).
const maxBody = 64 << 20

// Config configures an Adapter. Zero values take the defaults; a negative
// RequestsPerSecond or CallTimeout turns that limit off.
type Config struct {
	// APIURL is the REST v2 server (default DefaultAPIURL); requests go to
	// APIURL/v2/....
	APIURL string
	// Key returns the current API key. It is called on every request, so a
	// rotated Secret takes effect at once; the key is sent as a Bearer token
	// and never logged or put in an error.
	Key func() string
	// HTTPClient makes the calls (default: a new http.Client; deadlines come
	// from CallTimeout).
	HTTPClient *http.Client
	// RequestsPerSecond is the client-side rate limit over all RunPod calls
	// (default DefaultRequestsPerSecond, burst the rate rounded up). It is
	// paced in real time; a call whose turn would come after its deadline
	// or CallTimeout fails at once with ClassRateLimited.
	RequestsPerSecond float64
	// CallTimeout bounds every HTTP call (default DefaultCallTimeout).
	CallTimeout time.Duration
	// Clock tells the time for Retry-After bookkeeping (default: real clock).
	// After a 429 no call is made until Retry-After (from the RateLimit
	// header, or 1s, if RunPod sends none) has passed on this clock; calls
	// fail at once with ClassRateLimited and the time left.
	Clock clock.PassiveClock
	// Cloud is the tier offers are read from and pods are rented in
	// (default SecureCloud). CommunityCloud hosts are run by third parties
	// and are less reliable; choose it knowingly.
	Cloud Cloud
}

// Adapter implements providers.Provider for RunPod. It is safe for
// concurrent use. It keeps no memory of what it launched: Launch always
// creates, and the controller finds a pod by its name through Instances.
type Adapter struct {
	cfg   Config
	calls *providers.Caller
	api   *runpodv2.Client
}

var (
	_ providers.Provider           = (*Adapter)(nil)
	_ providers.BootstrapFormatter = (*Adapter)(nil)
)

// New builds an Adapter, filling in defaults.
func New(cfg Config) (*Adapter, error) {
	if cfg.APIURL == "" {
		cfg.APIURL = DefaultAPIURL
	}
	cloud, err := ParseCloud(string(cfg.Cloud))
	if err != nil {
		return nil, err
	}
	cfg.Cloud = cloud
	calls, err := providers.NewCaller(providers.CallConfig{
		Provider:          providers.RunPod,
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
	api, err := runpodv2.NewClient(cfg.APIURL, runpodv2.WithHTTPClient(calls))
	if err != nil {
		return nil, fmt.Errorf("runpod: REST v2 client: %w", err)
	}
	return &Adapter{cfg: cfg, calls: calls, api: api}, nil
}

// Name is providers.RunPod.
func (a *Adapter) Name() string { return providers.RunPod }

// Cloud is the tier the adapter offers and rents in.
func (a *Adapter) Cloud() Cloud { return a.cfg.Cloud }

// BootstrapFormats is empty: RunPod machines are containers, which run an
// image, not user data (../shared/DESIGN.md, "The providers as they really
// are"). The controller therefore never sends a VM request to RunPod.
func (a *Adapter) BootstrapFormats() []providers.BootstrapFormat { return nil }
