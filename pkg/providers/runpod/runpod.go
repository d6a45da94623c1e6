// Package runpod is the RunPod provider adapter. It speaks three RunPod APIs,
// each through a client generated from RunPod's own spec or a minimal query:
//
//   - REST v1 (rest.runpod.io/v1, runpodv1): create, list, get and delete
//     pods. v1 is used for pods because only it can create interruptible
//     (spot) pods; v2 has no spot field at all.
//   - REST v2 (api.runpod.io/v2, runpodv2): the GPU catalog, which gives the
//     per-GPU on-demand list price, the largest pod per type (maxCount) and
//     availability per data center.
//   - GraphQL (api.runpod.io/graphql): the spot (interruptible) price per GPU
//     and per GPU count, which neither REST API publishes.
//
// Offers therefore costs exactly two HTTP calls per refresh however large the
// catalog is; Instances costs one.
//
// Offer.InstanceType is the RunPod GPU type id ("NVIDIA H100 80GB HBM3"), and
// Launch takes the GPU count from Offer.GPUCount. A RunPod pod is not an
// instance type but a number of GPUs of one type, so every (type, data
// center, capacity) is offered once per count in Config.GPUCounts. One
// consequence: Offer.Key() does not include the count, so marking one count
// of a type unavailable in a data center marks its other counts too, which
// is conservative.
//
// RunPod pods have no user-data field: the bootstrap is passed base64-encoded
// in the environment variable UserDataEnv, and the machine name in
// MachineNameEnv, for the image's entrypoint to act on.
package runpod

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"k8s.io/utils/clock"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod/runpodv1"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod/runpodv2"
)

// Defaults for Config.
const (
	DefaultRESTURL           = "https://rest.runpod.io/v1"
	DefaultAPIURL            = "https://api.runpod.io"
	DefaultRequestsPerSecond = 5
	DefaultCallTimeout       = providers.DefaultCallTimeout
	// DefaultImageName is a CUDA base image; the bootstrap in UserDataEnv
	// does the rest.
	DefaultImageName = "nvidia/cuda:12.4.1-base-ubuntu22.04"
)

// DefaultGPUCounts are the GPU counts offered per type, capped by the
// catalog's maxCount.
var DefaultGPUCounts = []int{1, 2, 4, 8}

// Environment variables set on every pod the adapter launches.
const (
	// UserDataEnv holds the base64 (standard encoding) of LaunchRequest.UserData.
	UserDataEnv = "TGP_USER_DATA"
	// MachineNameEnv holds LaunchRequest.Name.
	MachineNameEnv = "TGP_MACHINE_NAME"
)

// maxBody bounds what is read from any response (the catalog is the largest).
const maxBody = 64 << 20

// Config configures an Adapter. Zero values take the defaults; a negative
// RequestsPerSecond or CallTimeout turns that limit off.
type Config struct {
	// RESTURL is the REST v1 base URL (default DefaultRESTURL).
	RESTURL string
	// APIURL is the base of REST v2 (APIURL/v2/...) and GraphQL
	// (APIURL/graphql); default DefaultAPIURL.
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
	// After a 429 no call is made until Retry-After (1s if RunPod sends none)
	// has passed on this clock; calls fail at once with ClassRateLimited and
	// the time left.
	Clock clock.PassiveClock
	// ImageName is the container image of launched pods (default DefaultImageName).
	ImageName string
	// GPUCounts are the GPU counts to offer per type (default
	// DefaultGPUCounts); counts above a type's maxCount are skipped.
	GPUCounts []int
}

// Adapter implements providers.Provider for RunPod. It is safe for
// concurrent use. All three APIs go through one providers.Caller, so they
// share RunPod's rate limit and Retry-After. It keeps no memory of what it
// launched: Launch always creates, and the controller finds a pod by its
// name through Instances.
type Adapter struct {
	cfg       Config
	calls     *providers.Caller
	v1        *runpodv1.Client
	v2        *runpodv2.Client
	graphql   string // GraphQL endpoint URL
	spotQuery []byte // the GraphQL request body, fixed by GPUCounts
}

var _ providers.Provider = (*Adapter)(nil)

// New builds an Adapter, filling in defaults.
func New(cfg Config) (*Adapter, error) {
	if cfg.RESTURL == "" {
		cfg.RESTURL = DefaultRESTURL
	}
	if cfg.APIURL == "" {
		cfg.APIURL = DefaultAPIURL
	}
	if cfg.ImageName == "" {
		cfg.ImageName = DefaultImageName
	}
	counts, err := normalizeCounts(cfg.GPUCounts)
	if err != nil {
		return nil, err
	}
	cfg.GPUCounts = counts
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
	a := &Adapter{
		cfg:       cfg,
		calls:     calls,
		graphql:   strings.TrimSuffix(cfg.APIURL, "/") + "/graphql",
		spotQuery: spotQuery(counts),
	}
	if a.v1, err = runpodv1.NewClient(cfg.RESTURL, runpodv1.WithHTTPClient(calls)); err != nil {
		return nil, fmt.Errorf("runpod: REST v1 client: %w", err)
	}
	if a.v2, err = runpodv2.NewClient(cfg.APIURL, runpodv2.WithHTTPClient(calls)); err != nil {
		return nil, fmt.Errorf("runpod: REST v2 client: %w", err)
	}
	return a, nil
}

// normalizeCounts sorts and dedupes the GPU counts to offer.
func normalizeCounts(in []int) ([]int, error) {
	if len(in) == 0 {
		in = DefaultGPUCounts
	}
	out := slices.Clone(in)
	for _, n := range out {
		if n < 1 {
			return nil, fmt.Errorf("runpod: GPU count %d is not positive", n)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// Name is providers.RunPod.
func (a *Adapter) Name() string { return providers.RunPod }
