// Package lambda is the Lambda Cloud adapter: it implements
// providers.Provider on top of the client oapi-codegen generates from
// Lambda's published OpenAPI spec (package lambdaapi, see
// hack/providers/lambda/gen.sh).
//
// Lambda launches only with exactly one SSH key name registered in the
// account (the spec's InstanceLaunchRequest.ssh_key_names: "Currently,
// exactly one SSH key must be specified"; the API answers
// global/invalid-parameters otherwise). New refuses a Config without one,
// CheckSSHKey asks GET /api/v1/ssh-keys whether it is registered, and while
// a check has found it missing the adapter withholds its offers and
// refuses launches without calling Lambda.
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
	"sync"
	"time"

	"k8s.io/klog/v2"
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
	opSSHKeys   = "CheckSSHKey"
)

// maxSSHKeyName is the spec's maxLength of SSHKey.name.
const maxSSHKeyName = 64

// ErrNoSSHKey is New's error for a Config without an SSH key name.
var ErrNoSSHKey = errors.New("lambda: no SSH key name configured: Lambda launches need exactly one SSH key registered in the account")

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
	// SSHKeyName is the one SSH key, registered in the Lambda account, that
	// every launch names (ssh_key_names holds exactly it). Required.
	SSHKeyName string
	// Clock times Retry-After windows (default: the real clock).
	Clock clock.PassiveClock
}

// Adapter is the Lambda Cloud provider. It is safe for concurrent use. It
// keeps no memory of what it launched: Launch always creates, and the
// controller finds an instance by its name through Instances.
type Adapter struct {
	client *lambdaapi.Client
	calls  *providers.Caller
	sshKey string

	mu sync.Mutex
	// keyMissing is the error of the last CheckSSHKey that found the key
	// unregistered, nil otherwise: while it is set, Offers checks again
	// instead of listing offers, and Launch refuses.
	keyMissing *providers.Error
}

var (
	_ providers.Provider           = (*Adapter)(nil)
	_ providers.BootstrapFormatter = (*Adapter)(nil)
)

// New builds an adapter.
func New(cfg Config) (*Adapter, error) {
	switch key := strings.TrimSpace(cfg.SSHKeyName); {
	case key == "":
		return nil, ErrNoSSHKey
	case len(key) > maxSSHKeyName || strings.Contains(key, ","):
		return nil, fmt.Errorf("lambda: SSH key name %q is not one name of at most %d characters", key, maxSSHKeyName)
	}
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
	return &Adapter{client: client, calls: calls, sshKey: strings.TrimSpace(cfg.SSHKeyName)}, nil
}

// Name implements providers.Provider.
func (a *Adapter) Name() string { return providers.LambdaLabs }

// BootstrapFormats implements providers.BootstrapFormatter: Lambda passes
// user_data to cloud-init, which also runs a "#!" script.
func (a *Adapter) BootstrapFormats() []providers.BootstrapFormat {
	return []providers.BootstrapFormat{providers.FormatCloudInit, providers.FormatScript}
}

// SSHKeyName is the SSH key every launch names.
func (a *Adapter) SSHKeyName() string { return a.sshKey }

// CheckSSHKey asks GET /api/v1/ssh-keys whether the configured SSH key is
// registered. A missing key is a ClassInvalid error saying so (and naming
// the keys that are registered); from then until a check finds it, Offers
// withholds Lambda's offers (checking again on each refresh) and Launch
// refuses without calling Lambda. Any other failure (credentials, a 5xx) is
// returned as is and changes nothing.
func (a *Adapter) CheckSSHKey(ctx context.Context) error {
	body, err := a.calls.Call(ctx, opSSHKeys, func(ctx context.Context) (*http.Response, error) {
		return a.client.ListSSHKeys(ctx)
	})
	if err != nil {
		return err
	}
	var env struct {
		Data []lambdaapi.SSHKey `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return decodeError(opSSHKeys, err)
	}
	names := make([]string, 0, len(env.Data))
	for _, k := range env.Data {
		if k.Name == a.sshKey {
			a.setKeyMissing(ctx, nil)
			return nil
		}
		names = append(names, clean(k.Name))
	}
	slices.Sort(names)
	registered := "none are registered"
	if len(names) > 0 {
		registered = "registered: " + strings.Join(names[:min(len(names), 10)], ", ")
		if len(names) > 10 {
			registered += fmt.Sprintf(" and %d more", len(names)-10)
		}
	}
	missing := &providers.Error{Provider: providers.LambdaLabs, Operation: opSSHKeys, Class: providers.ClassInvalid,
		Message: fmt.Sprintf("SSH key %q is not registered in the Lambda Cloud account (%s); Lambda launches need it, so Lambda's offers are withheld until it is", a.sshKey, registered)}
	a.setKeyMissing(ctx, missing)
	return missing
}

// setKeyMissing records the outcome of a key check, logging a change.
func (a *Adapter) setKeyMissing(ctx context.Context, err *providers.Error) {
	a.mu.Lock()
	was := a.keyMissing
	a.keyMissing = err
	a.mu.Unlock()
	switch logger := klog.FromContext(ctx); {
	case err != nil && was == nil:
		logger.Error(err, "Lambda Cloud SSH key missing", "sshKey", a.sshKey)
	case err == nil && was != nil:
		logger.Info("Lambda Cloud SSH key is registered now; offering Lambda again", "sshKey", a.sshKey)
	}
}

func (a *Adapter) missingKey() *providers.Error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.keyMissing
}

// Offers implements providers.Provider with one GET /api/v1/instance-types
// (after a GET /api/v1/ssh-keys while a check has found the SSH key missing;
// still missing, the refresh fails with that error).
func (a *Adapter) Offers(ctx context.Context) ([]providers.Offer, error) {
	if a.missingKey() != nil {
		if err := a.CheckSSHKey(ctx); err != nil {
			return nil, err
		}
	}
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
	if missing := a.missingKey(); missing != nil {
		return providers.Instance{}, &providers.Error{Provider: providers.LambdaLabs, Operation: opLaunch,
			Class: providers.ClassInvalid, Message: "not sent: " + missing.Message}
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
		SshKeyNames:      []string{a.sshKey},
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
