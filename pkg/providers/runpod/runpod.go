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
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
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
	DefaultCallTimeout       = 30 * time.Second
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

// Config configures an Adapter.
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
	// (default DefaultRequestsPerSecond, burst the same, at least 1). It is
	// paced in real time; a call whose deadline would pass while waiting for
	// its turn fails at once with ClassRateLimited.
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
// concurrent use.
type Adapter struct {
	cfg       Config
	v1        *runpodv1.Client
	v2        *runpodv2.Client
	graphql   string // GraphQL endpoint URL
	spotQuery []byte // the GraphQL request body, fixed by GPUCounts
	limiter   *rate.Limiter

	mu           sync.Mutex
	blockedUntil time.Time             // no calls before this (RunPod's Retry-After)
	names        map[string]*nameState // launches by machine name
}

// nameState is what the adapter knows about one machine name it launched.
type nameState struct {
	mu sync.Mutex // serializes Launch calls for the name
	// inst is the pod launched under the name, once known.
	inst *providers.Instance
	// ambiguous: the last create for the name may or may not have made a
	// pod (timeout, transport error, 5xx); look for it before creating.
	ambiguous bool
}

var _ providers.Provider = (*Adapter)(nil)

// New builds an Adapter, filling in defaults.
func New(cfg Config) (*Adapter, error) {
	if cfg.Key == nil {
		return nil, errors.New("runpod: Config.Key is required")
	}
	if cfg.RESTURL == "" {
		cfg.RESTURL = DefaultRESTURL
	}
	if cfg.APIURL == "" {
		cfg.APIURL = DefaultAPIURL
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	if cfg.RequestsPerSecond <= 0 {
		cfg.RequestsPerSecond = DefaultRequestsPerSecond
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.ImageName == "" {
		cfg.ImageName = DefaultImageName
	}
	counts, err := normalizeCounts(cfg.GPUCounts)
	if err != nil {
		return nil, err
	}
	cfg.GPUCounts = counts

	a := &Adapter{
		cfg:       cfg,
		graphql:   strings.TrimSuffix(cfg.APIURL, "/") + "/graphql",
		spotQuery: spotQuery(counts),
		limiter:   rate.NewLimiter(rate.Limit(cfg.RequestsPerSecond), max(1, int(cfg.RequestsPerSecond))),
		names:     map[string]*nameState{},
	}
	d := doer{a}
	if a.v1, err = runpodv1.NewClient(cfg.RESTURL, runpodv1.WithHTTPClient(d)); err != nil {
		return nil, fmt.Errorf("runpod: REST v1 client: %w", err)
	}
	if a.v2, err = runpodv2.NewClient(cfg.APIURL, runpodv2.WithHTTPClient(d)); err != nil {
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

// doer is the HTTP client the generated clients (and the GraphQL call) use.
// It enforces, in order: RunPod's last Retry-After (failing fast, without a
// request), the client-side rate limit, and the Bearer key; and it records
// the Retry-After of every 429.
type doer struct{ a *Adapter }

func (d doer) Do(req *http.Request) (*http.Response, error) {
	a := d.a
	if wait := a.blockedFor(); wait > 0 {
		return nil, &providers.Error{Provider: providers.RunPod, Class: providers.ClassRateLimited, RetryAfter: wait,
			Message: "waiting out RunPod's Retry-After; no request sent"}
	}
	if err := a.limiter.Wait(req.Context()); err != nil {
		// The context ends before a token would be free.
		return nil, &providers.Error{Provider: providers.RunPod, Class: providers.ClassRateLimited,
			RetryAfter: time.Duration(float64(time.Second) / a.cfg.RequestsPerSecond),
			Message:    "client-side rate limit; no request sent", Err: err}
	}
	key := a.cfg.Key()
	if key == "" {
		return nil, &providers.Error{Provider: providers.RunPod, Class: providers.ClassUnauthorized, Message: "no API key configured"}
	}
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := a.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusTooManyRequests {
		now := a.cfg.Clock.Now()
		wait := providers.ParseRetryAfter(resp.Header, now)
		if wait <= 0 {
			wait = defaultRetryAfter
		}
		a.mu.Lock()
		if until := now.Add(wait); until.After(a.blockedUntil) {
			a.blockedUntil = until
		}
		a.mu.Unlock()
	}
	return resp, nil
}

// blockedFor is how much longer RunPod asked the adapter to wait.
func (a *Adapter) blockedFor() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.blockedUntil.Sub(a.cfg.Clock.Now())
}

// call runs one HTTP call under CallTimeout, reads the body and classifies
// the outcome. Every error it returns is a *providers.Error for op: the
// generated clients' transport errors, timeouts and unreadable bodies are
// ClassTransient.
func (a *Adapter) call(ctx context.Context, op string, send func(context.Context) (*http.Response, error)) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.CallTimeout)
	defer cancel()
	resp, err := send(ctx)
	if err != nil {
		return nil, a.providerError(op, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, a.providerError(op, fmt.Errorf("reading response: %w", err))
	}
	if err := ClassifyResponse(op, resp.StatusCode, resp.Header, body, a.cfg.Clock.Now()); err != nil {
		return nil, a.providerError(op, err)
	}
	return body, nil
}

// providerError makes err a *providers.Error for op (ClassTransient unless it
// already is one) and scrubs the API key from its message, in case RunPod
// ever echoes it back.
func (a *Adapter) providerError(op string, err error) error {
	var pe *providers.Error
	if !errors.As(err, &pe) {
		pe = &providers.Error{Provider: providers.RunPod, Class: providers.ClassTransient, Err: err}
	}
	pe.Operation = op
	if key := a.cfg.Key(); key != "" && strings.Contains(pe.Message, key) {
		pe.Message = strings.ReplaceAll(pe.Message, key, "[redacted]")
	}
	return pe
}
