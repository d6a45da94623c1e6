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
	"maps"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"time"

	"k8s.io/utils/clock"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/lambda/lambdaapi"
)

// DefaultBaseURL is Lambda Cloud's production endpoint; the spec's paths
// carry the /api/v1 prefix.
const DefaultBaseURL = "https://cloud.lambda.ai"

// Lambda's published limits, the adapter's defaults.
const (
	// DefaultRequestsPerSecond is Lambda's general limit, about 1 request/s.
	DefaultRequestsPerSecond = 1.0
	// DefaultLaunchInterval is Lambda's launch limit, 1 request per 12 s.
	DefaultLaunchInterval = 12 * time.Second
	// DefaultCallTimeout bounds every HTTP call.
	DefaultCallTimeout = providers.DefaultCallTimeout
)

// maxBody bounds how much of a response body is read.
const maxBody = 64 << 20

// Operation names used in errors.
const (
	opOffers    = "Offers"
	opLaunch    = "Launch"
	opInstances = "Instances"
	opTerminate = "Terminate"
)

// hostnamePattern is the spec's pattern for InstanceLaunchRequest.hostname.
var hostnamePattern = regexp.MustCompile(`^[a-z0-9][0-9a-z-]{0,62}$`)

// Config configures an Adapter. Zero values take the defaults; a negative
// RequestsPerSecond, LaunchInterval or CallTimeout turns that limit off.
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
	// for its turn if that fits in its deadline and in CallTimeout, and fails
	// at once with ClassRateLimited otherwise.
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

// Adapter is the Lambda Cloud provider. It is safe for concurrent use. It
// keeps no memory of what it launched: Launch always creates, and the
// controller finds an instance by its name through Instances.
type Adapter struct {
	client  *lambdaapi.Client
	calls   *providers.Caller
	sshKeys []string
}

var _ providers.Provider = (*Adapter)(nil)

// New builds an adapter.
func New(cfg Config) (*Adapter, error) {
	base := cfg.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("lambda: invalid BaseURL %q", base)
	}
	calls, err := providers.NewCaller(providers.CallConfig{
		Provider:          providers.LambdaLabs,
		Key:               cfg.Key,
		Classify:          ClassifyResponse,
		HTTPClient:        cfg.HTTPClient,
		RequestsPerSecond: providers.OrDefault(cfg.RequestsPerSecond, DefaultRequestsPerSecond),
		LaunchInterval:    providers.OrDefault(cfg.LaunchInterval, DefaultLaunchInterval),
		CallTimeout:       providers.OrDefault(cfg.CallTimeout, DefaultCallTimeout),
		MaxBody:           maxBody,
		Clock:             cfg.Clock,
	})
	if err != nil {
		return nil, err
	}
	client, err := lambdaapi.NewClient(base, lambdaapi.WithHTTPClient(calls))
	if err != nil {
		return nil, fmt.Errorf("lambda: %w", err)
	}
	return &Adapter{
		client:  client,
		calls:   calls,
		sshKeys: append([]string{}, cfg.SSHKeyNames...), // never nil: the field is required
	}, nil
}

// Name implements providers.Provider.
func (a *Adapter) Name() string { return providers.LambdaLabs }

// Offers implements providers.Provider with one GET /api/v1/instance-types.
func (a *Adapter) Offers(ctx context.Context) ([]providers.Offer, error) {
	body, err := a.calls.Call(ctx, opOffers, func(ctx context.Context) (*http.Response, error) {
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
	body, err := a.calls.Call(ctx, opInstances, func(ctx context.Context) (*http.Response, error) {
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

// Launch implements providers.Provider with one POST
// /api/v1/instance-operations/launch (under the launch limit). It does not
// deduplicate: a second Launch of a name is a second create. An answer
// without an instance id is ClassTransient (the instance may exist; the
// controller looks for it by name).
func (a *Adapter) Launch(ctx context.Context, req providers.LaunchRequest) (providers.Instance, error) {
	if req.Name == "" || len(req.Name) > 64 || req.Offer.InstanceType == "" || req.Offer.ProviderRegion == "" ||
		(req.Offer.Provider != "" && req.Offer.Provider != providers.LambdaLabs) {
		return providers.Instance{}, &providers.Error{Provider: providers.LambdaLabs, Operation: opLaunch,
			Class: providers.ClassInvalid, Message: "launch needs a Lambda offer and a name of 1-64 characters"}
	}
	body, err := a.calls.CallLaunch(ctx, opLaunch, func(ctx context.Context) (*http.Response, error) {
		return a.client.LaunchInstance(ctx, a.launchBody(req))
	})
	if err != nil {
		return providers.Instance{}, err
	}
	var env struct {
		Data lambdaapi.InstanceLaunchResponse `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil || len(env.Data.InstanceIds) == 0 || env.Data.InstanceIds[0] == "" {
		if err == nil {
			err = errors.New("no instance id in launch response")
		}
		return providers.Instance{}, decodeError(opLaunch, err)
	}
	return launchedInstance(env.Data.InstanceIds[0], req), nil
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

// launchedInstance is a just-launched instance as Lambda's answer (its id)
// and the request describe it; Instances reports its state from then on.
func launchedInstance(id string, req providers.LaunchRequest) providers.Instance {
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
	_, err := a.calls.Call(ctx, opTerminate, func(ctx context.Context) (*http.Response, error) {
		return a.client.TerminateInstance(ctx, lambdaapi.InstanceTerminateRequest{InstanceIds: []string{id}})
	})
	if providers.IsClass(err, providers.ClassNotFound) {
		return nil
	}
	return err
}

// decodeError reports a 2xx body that does not match the spec.
func decodeError(op string, err error) error {
	return &providers.Error{Provider: providers.LambdaLabs, Operation: op, Class: providers.ClassTransient,
		Message: "unexpected response body", Err: err}
}
