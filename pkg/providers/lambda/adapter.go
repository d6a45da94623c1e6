// Package lambda is the Lambda Cloud adapter: it implements
// providers.Provider on top of the client oapi-codegen generates from
// Lambda's published OpenAPI spec (package lambdaapi, see
// hack/providers/lambda/gen.sh).
package lambda

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/utils/clock"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/lambda/lambdaapi"
)

// DefaultBaseURL is Lambda Cloud's production endpoint; the spec's paths
// carry the /api/v1 prefix.
const DefaultBaseURL = "https://cloud.lambda.ai"

// Lambda's published limits and the adapter's defaults.
const (
	// DefaultRequestsPerSecond is Lambda's general limit, about 1 request/s.
	DefaultRequestsPerSecond = 1.0
	// DefaultLaunchInterval is Lambda's launch limit, 1 request per 12 s.
	DefaultLaunchInterval = 12 * time.Second
	// DefaultCallTimeout bounds every HTTP call.
	DefaultCallTimeout = 30 * time.Second
)

// maxBody bounds how much of a response body is read.
const maxBody = 64 << 20

// Operation names used in errors.
const (
	opOffers      = "Offers"
	opLaunch      = "Launch"
	opInstances   = "Instances"
	opGetInstance = "GetInstance"
	opTerminate   = "Terminate"
)

// hostnamePattern is the spec's pattern for InstanceLaunchRequest.hostname.
var hostnamePattern = regexp.MustCompile(`^[a-z0-9][0-9a-z-]{0,62}$`)

// Config configures an Adapter. Zero values take the defaults; for
// RequestsPerSecond, LaunchInterval and CallTimeout a negative value disables
// the limit or timeout altogether.
type Config struct {
	// BaseURL is the API endpoint (default DefaultBaseURL); a simulator's URL
	// in tests and the demo.
	BaseURL string
	// Key returns the current API key. It is called for every request, so a
	// rotated Secret takes effect without a restart. The key is sent only in
	// the Authorization header and never logged or put in an error.
	Key func() string
	// HTTPClient sends the requests (default: a new http.Client).
	HTTPClient *http.Client
	// RequestsPerSecond limits all calls client-side (default 1). A call waits
	// for its turn if that fits in its deadline and fails with
	// ClassRateLimited otherwise.
	RequestsPerSecond float64
	// LaunchInterval allows one launch per interval (default 12s). A launch
	// whose slot is still in the future fails at once with ClassRateLimited
	// and the wait as RetryAfter, rather than blocking the caller.
	LaunchInterval time.Duration
	// CallTimeout is the deadline of every HTTP call (default 30s).
	CallTimeout time.Duration
	// SSHKeyNames are sent as ssh_key_names on launch (the spec requires the
	// field; the real API wants exactly one registered key). Default: none.
	SSHKeyNames []string
	// Clock times Retry-After windows (default: the real clock).
	Clock clock.PassiveClock
}

// Adapter is the Lambda Cloud provider. It is safe for concurrent use.
type Adapter struct {
	client      *lambdaapi.Client
	key         func() string
	clock       clock.PassiveClock
	callTimeout time.Duration
	sshKeys     []string
	limiter     *rate.Limiter // all calls; nil: unlimited
	launchLim   *rate.Limiter // launches; nil: unlimited

	mu           sync.Mutex
	blockedUntil time.Time // no call before this (a 429's Retry-After)

	// launchMu serializes Launch so that two concurrent launches of one name
	// cannot both create an instance; launches are limited to one per
	// LaunchInterval anyway.
	launchMu sync.Mutex
	// launched maps the names this adapter has launched to their instance ids.
	launched map[string]string
	// ambiguous holds names whose last launch ended without a definite answer
	// (timeout, transport error, 5xx): the instance may exist.
	ambiguous map[string]bool
}

var _ providers.Provider = (*Adapter)(nil)

// New builds an adapter.
func New(cfg Config) (*Adapter, error) {
	if cfg.Key == nil {
		return nil, errors.New("lambda: Config.Key is required")
	}
	base := cfg.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("lambda: invalid BaseURL %q", base)
	}
	a := &Adapter{
		key:         cfg.Key,
		clock:       cfg.Clock,
		callTimeout: orDefault(cfg.CallTimeout, DefaultCallTimeout),
		sshKeys:     append([]string{}, cfg.SSHKeyNames...), // never nil: the field is required
		launched:    map[string]string{},
		ambiguous:   map[string]bool{},
	}
	if a.clock == nil {
		a.clock = clock.RealClock{}
	}
	if rps := orDefault(cfg.RequestsPerSecond, DefaultRequestsPerSecond); rps > 0 {
		a.limiter = rate.NewLimiter(rate.Limit(rps), max(1, int(rps)))
	}
	if every := orDefault(cfg.LaunchInterval, DefaultLaunchInterval); every > 0 {
		a.launchLim = rate.NewLimiter(rate.Every(every), 1)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	client, err := lambdaapi.NewClient(base, lambdaapi.WithHTTPClient(hc), lambdaapi.WithRequestEditorFn(a.authorize))
	if err != nil {
		return nil, fmt.Errorf("lambda: %w", err)
	}
	a.client = client
	return a, nil
}

// orDefault returns def for the zero value and v otherwise (a negative v
// disables the setting).
func orDefault[T float64 | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// authorize is the request editor that adds the bearer token.
func (a *Adapter) authorize(_ context.Context, req *http.Request) error {
	key := a.key()
	if key == "" {
		return &providers.Error{Provider: providers.LambdaLabs, Operation: req.Method + " " + req.URL.Path,
			Class: providers.ClassUnauthorized, Message: "no API key configured"}
	}
	req.Header.Set("Authorization", "Bearer "+key)
	return nil
}

// Name implements providers.Provider.
func (a *Adapter) Name() string { return providers.LambdaLabs }

// Offers implements providers.Provider with one GET /api/v1/instance-types.
func (a *Adapter) Offers(ctx context.Context) ([]providers.Offer, error) {
	body, err := a.call(ctx, opOffers, false, func(ctx context.Context) (*http.Response, error) {
		return a.client.ListInstanceTypes(ctx)
	})
	if err != nil {
		return nil, err
	}
	offers, err := NormalizeOffers(body)
	if err != nil {
		return nil, decodeError(opOffers, err)
	}
	return offers, nil
}

// Instances implements providers.Provider with one GET /api/v1/instances.
func (a *Adapter) Instances(ctx context.Context) ([]providers.Instance, error) {
	body, err := a.call(ctx, opInstances, false, func(ctx context.Context) (*http.Response, error) {
		return a.client.ListInstances(ctx, nil)
	})
	if err != nil {
		return nil, err
	}
	out, err := NormalizeInstances(body)
	if err != nil {
		return nil, decodeError(opInstances, err)
	}
	return out, nil
}

// Launch implements providers.Provider. It is idempotent by req.Name: a name
// this adapter has launched returns that instance without a create call, and
// after a launch that ended ambiguously the instance list is searched for the
// name before a new create is sent.
func (a *Adapter) Launch(ctx context.Context, req providers.LaunchRequest) (providers.Instance, error) {
	if req.Name == "" || len(req.Name) > 64 || req.Offer.InstanceType == "" || req.Offer.ProviderRegion == "" ||
		(req.Offer.Provider != "" && req.Offer.Provider != providers.LambdaLabs) {
		return providers.Instance{}, &providers.Error{Provider: providers.LambdaLabs, Operation: opLaunch,
			Class: providers.ClassInvalid, Message: "launch needs a Lambda offer and a name of 1-64 characters"}
	}
	a.launchMu.Lock()
	defer a.launchMu.Unlock()

	if id, ok := a.launched[req.Name]; ok {
		return a.getInstance(ctx, id, req)
	}
	if a.ambiguous[req.Name] {
		found, ok, err := a.findByName(ctx, req.Name)
		if err != nil {
			return providers.Instance{}, err
		}
		if ok {
			a.adopt(req.Name, found.ID)
			return found, nil
		}
	}

	body, err := a.call(ctx, opLaunch, true, func(ctx context.Context) (*http.Response, error) {
		return a.client.LaunchInstance(ctx, a.launchBody(req))
	})
	if err != nil {
		if providers.IsClass(err, providers.ClassTransient) {
			a.ambiguous[req.Name] = true
		}
		return providers.Instance{}, err
	}
	var env struct {
		Data lambdaapi.InstanceLaunchResponse `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil || len(env.Data.InstanceIds) == 0 || env.Data.InstanceIds[0] == "" {
		// Lambda accepted the launch but the answer is unreadable: the
		// instance probably exists, so look for it next time.
		a.ambiguous[req.Name] = true
		if err == nil {
			err = errors.New("no instance id in launch response")
		}
		return providers.Instance{}, decodeError(opLaunch, err)
	}
	id := env.Data.InstanceIds[0]
	a.adopt(req.Name, id)
	return pendingInstance(id, req), nil
}

// launchBody builds the spec's InstanceLaunchRequest.
func (a *Adapter) launchBody(req providers.LaunchRequest) lambdaapi.InstanceLaunchRequest {
	body := lambdaapi.InstanceLaunchRequest{
		RegionName:       lambdaapi.PublicRegionCode(req.Offer.ProviderRegion),
		InstanceTypeName: req.Offer.InstanceType,
		SshKeyNames:      a.sshKeys,
		Name:             &req.Name,
	}
	if hostnamePattern.MatchString(req.Name) {
		body.Hostname = &req.Name
	}
	if req.UserData != "" {
		body.UserData = &req.UserData
	}
	if len(req.Tags) > 0 {
		tags := make([]lambdaapi.RequestedTagEntry, 0, len(req.Tags))
		seen := map[string]bool{}
		for _, k := range slices.Sorted(maps.Keys(req.Tags)) {
			key := tagKey(k)
			if seen[key] {
				continue // two keys that differ only in characters Lambda refuses: the first wins
			}
			seen[key] = true
			v := req.Tags[k]
			if len(v) > maxTagValue {
				v = v[:maxTagValue]
			}
			tags = append(tags, lambdaapi.RequestedTagEntry{Key: key, Value: v})
		}
		body.Tags = &tags
	}
	return body
}

// Limits of the spec's RequestedTagEntry.
const (
	maxTagKey   = 55
	maxTagValue = 128
)

// tagKey fits a tag key to the spec's pattern ^[a-z][a-z0-9-:]+$ and length
// limit, so that keys such as "tgp.solanyn.com/request" do not fail the
// launch: letters are lower-cased, other refused characters become '-', and
// a key that does not start with a letter gets a "t-" prefix.
func tagKey(k string) string {
	b := []byte(strings.ToLower(k))
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != ':' {
			b[i] = '-'
		}
	}
	key := string(b)
	if len(key) < 2 || key[0] < 'a' || key[0] > 'z' {
		key = "t-" + key
	}
	return key[:min(len(key), maxTagKey)]
}

// adopt records name -> id as launched; callers hold launchMu.
func (a *Adapter) adopt(name, id string) {
	a.launched[name] = id
	delete(a.ambiguous, name)
}

// findByName lists instances and returns the operator's instance with this name.
func (a *Adapter) findByName(ctx context.Context, name string) (providers.Instance, bool, error) {
	all, err := a.Instances(ctx)
	if err != nil {
		return providers.Instance{}, false, err
	}
	for _, in := range all {
		if in.Name == name {
			return in, true, nil
		}
	}
	return providers.Instance{}, false, nil
}

// getInstance reads one instance. An instance this adapter launched that
// Lambda no longer knows is reported terminated: it is gone, and the name
// must not be launched again.
func (a *Adapter) getInstance(ctx context.Context, id string, req providers.LaunchRequest) (providers.Instance, error) {
	body, err := a.call(ctx, opGetInstance, false, func(ctx context.Context) (*http.Response, error) {
		return a.client.GetInstance(ctx, id)
	})
	if providers.IsClass(err, providers.ClassNotFound) {
		in := pendingInstance(id, req)
		in.State = providers.StateTerminated
		return in, nil
	}
	if err != nil {
		return providers.Instance{}, err
	}
	var env struct {
		Data lambdaapi.Instance `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return providers.Instance{}, decodeError(opGetInstance, err)
	}
	return toInstance(env.Data), nil
}

// pendingInstance is a just-launched instance as known from its request.
func pendingInstance(id string, req providers.LaunchRequest) providers.Instance {
	return providers.Instance{
		Provider:       providers.LambdaLabs,
		ID:             id,
		Name:           req.Name,
		InstanceType:   req.Offer.InstanceType,
		ProviderRegion: req.Offer.ProviderRegion,
		State:          providers.StatePending,
	}
}

// Terminate implements providers.Provider. A missing instance counts as
// terminated; terminating a terminated instance succeeds.
func (a *Adapter) Terminate(ctx context.Context, id string) error {
	if id == "" {
		return &providers.Error{Provider: providers.LambdaLabs, Operation: opTerminate,
			Class: providers.ClassInvalid, Message: "empty instance id"}
	}
	_, err := a.call(ctx, opTerminate, false, func(ctx context.Context) (*http.Response, error) {
		return a.client.TerminateInstance(ctx, lambdaapi.InstanceTerminateRequest{InstanceIds: []string{id}})
	})
	if providers.IsClass(err, providers.ClassNotFound) {
		return nil
	}
	return err
}

// call makes one API call. Before any HTTP it honours a pending Retry-After
// and the client-side limits; then it sends under CallTimeout and returns the
// body of a 2xx response or a classified *providers.Error.
func (a *Adapter) call(ctx context.Context, op string, launch bool, send func(context.Context) (*http.Response, error)) ([]byte, error) {
	if err := a.checkBlocked(op); err != nil {
		return nil, err
	}
	var launchSlot *rate.Reservation
	if launch && a.launchLim != nil {
		launchSlot = a.launchLim.Reserve()
		if d := launchSlot.Delay(); d > 0 {
			launchSlot.Cancel()
			return nil, rateLimited(op, d, "client-side launch limit")
		}
	}
	if err := a.waitTurn(ctx, op); err != nil {
		if launchSlot != nil {
			launchSlot.Cancel()
		}
		return nil, err
	}
	if a.callTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, a.callTimeout)
		defer cancel()
	}
	resp, err := send(ctx)
	if err != nil {
		return nil, transportError(op, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, transportError(op, err)
	}
	if err := ClassifyResponse(op, resp.StatusCode, resp.Header, body, a.clock.Now()); err != nil {
		if d, ok := providers.RetryAfterOf(err); ok && resp.StatusCode == http.StatusTooManyRequests {
			a.block(d)
		}
		return nil, err
	}
	return body, nil
}

// checkBlocked fails while a 429's Retry-After has not passed.
func (a *Adapter) checkBlocked(op string) error {
	a.mu.Lock()
	until := a.blockedUntil
	a.mu.Unlock()
	if remaining := until.Sub(a.clock.Now()); remaining > 0 {
		return rateLimited(op, remaining, "waiting out Lambda's Retry-After")
	}
	return nil
}

// block refuses calls for d from now.
func (a *Adapter) block(d time.Duration) {
	until := a.clock.Now().Add(d)
	a.mu.Lock()
	defer a.mu.Unlock()
	if until.After(a.blockedUntil) {
		a.blockedUntil = until
	}
}

// waitTurn waits for the general limiter if the wait fits in the call's
// budget (the context deadline and CallTimeout) and fails with
// ClassRateLimited otherwise, giving the slot back.
func (a *Adapter) waitTurn(ctx context.Context, op string) error {
	if a.limiter == nil {
		return nil
	}
	r := a.limiter.Reserve()
	d := r.Delay()
	if d == 0 {
		return nil
	}
	budget := time.Duration(-1) // unbounded
	if a.callTimeout > 0 {
		budget = a.callTimeout
	}
	if deadline, ok := ctx.Deadline(); ok {
		if remaining := time.Until(deadline); budget < 0 || remaining < budget {
			budget = remaining
		}
	}
	if budget >= 0 && d > budget {
		r.Cancel()
		return rateLimited(op, d, "client-side rate limit")
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		r.Cancel()
		return transportError(op, ctx.Err())
	}
}

func rateLimited(op string, d time.Duration, why string) error {
	return &providers.Error{Provider: providers.LambdaLabs, Operation: op,
		Class: providers.ClassRateLimited, RetryAfter: d, Message: why}
}

// transportError classifies a failure without a response: a timeout, a
// refused connection, a cancelled context. An error the request editor
// produced (no key) is already classified.
func transportError(op string, err error) error {
	var pe *providers.Error
	if errors.As(err, &pe) {
		return pe
	}
	return &providers.Error{Provider: providers.LambdaLabs, Operation: op, Class: providers.ClassTransient, Err: err}
}

// decodeError reports a 2xx body that does not match the spec.
func decodeError(op string, err error) error {
	return &providers.Error{Provider: providers.LambdaLabs, Operation: op, Class: providers.ClassTransient,
		Message: "unexpected response body", Err: err}
}
