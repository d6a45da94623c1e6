// Package paperspace is the Paperspace (DigitalOcean) adapter: it implements
// providers.Provider over the v1 API (https://api.paperspace.com/v1) with a
// client generated from the published spec (package paperspaceapi, see
// hack/providers/paperspace/gen.sh).
//
// Paperspace publishes no prices and sells no spot capacity. Offers are the
// machine types of a static PriceTable (shipped in prices.json, overridable
// from a ConfigMap) that map to a canonical GPU, in each of the three
// regions, on-demand only, priced from the table (PriceSourceStatic) and
// marked available from GET /machine-availability. That endpoint answers for
// one (machine type, region) pair at a time, so a catalog refresh costs one
// call per pair: with the shipped table, 19 GPU machine types x 3 regions =
// 57 calls, about 29 s at the default 2 requests/s. Refresh the catalog no
// more often than every few minutes.
//
// User data is passed as a Paperspace startup script: Launch first creates
// a run-once startup script named after the machine holding the rendered
// bootstrap, then creates the machine with its id. Startup scripts cost
// nothing and are left in place when the machine is deleted.
package paperspace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"
	"k8s.io/utils/clock"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/paperspace/paperspaceapi"
)

// Defaults of Config.
const (
	DefaultBaseURL           = "https://api.paperspace.com/v1"
	DefaultRequestsPerSecond = 2
	DefaultCallTimeout       = 30 * time.Second
	// DefaultTemplateID is Paperspace's public "Ubuntu 22.04 Server" OS
	// template (GET /os-templates lists the others).
	DefaultTemplateID = "t0nspur5"
	// DefaultDiskSize is the boot disk in GB.
	DefaultDiskSize = 100
)

const (
	// availabilityConcurrency bounds the machine-availability calls in flight
	// during Offers; the rate limiter still paces them.
	availabilityConcurrency = 4
	// pageSize is the largest page GET /machines allows.
	pageSize = 120
	// maxPages stops a listing whose cursor never ends.
	maxPages = 1000
	// maxBody bounds the response bodies read.
	maxBody = 16 << 20
)

// Config configures the adapter.
type Config struct {
	// BaseURL is the API root, DefaultBaseURL for the real API; a
	// simulator's URL + "/v1" for the simulator.
	BaseURL string
	// Key returns the current API key; it is called for every request, so a
	// rotated Secret takes effect at once. The key is sent as a bearer token
	// and never logged or put in an error.
	Key func() string
	// HTTPClient sends the requests (default: a plain http.Client; each call
	// is bounded by CallTimeout).
	HTTPClient *http.Client
	// RequestsPerSecond paces all calls client-side (default 2).
	RequestsPerSecond float64
	// CallTimeout bounds each HTTP call (default 30s); waiting for the rate
	// limiter does not count against it.
	CallTimeout time.Duration
	// Clock is used for Retry-After bookkeeping (default: the real clock).
	Clock clock.PassiveClock
	// TemplateID is the OS template machines are created from
	// (default DefaultTemplateID).
	TemplateID string
	// DiskSize is the boot disk size in GB (default 100).
	DiskSize int
	// Prices is the price table (default DefaultPriceTable()); SetPrices
	// replaces it at run time.
	Prices *PriceTable
}

// Adapter is the Paperspace provider. It is safe for concurrent use.
type Adapter struct {
	api        *paperspaceapi.Client
	key        func() string
	clock      clock.PassiveClock
	limiter    *rate.Limiter
	timeout    time.Duration
	templateID string
	diskSize   int
	prices     atomic.Pointer[PriceTable]

	mu           sync.Mutex
	blockedUntil time.Time // no calls before this (after a 429)
	// launches is keyed by machine name. Entries live as long as the
	// process (one per launched name, a few hundred bytes) so that a late
	// retry of a name can never create a second machine.
	launches map[string]*launchState
	// lastAvailable keeps the latest answer per machine type and region, so
	// a refresh where some availability calls fail still reports the rest.
	lastAvailable map[Availability]bool
}

// launchState is what the adapter knows about one machine name it was asked
// to launch. Its mutex serializes launches of that name.
type launchState struct {
	mu sync.Mutex
	// machineID is the machine created (or adopted) for the name.
	machineID string
	// scriptID is the startup script created for the name, reused by retries.
	scriptID string
	// ambiguous: a create call ended without a clear answer (timeout,
	// transport error, 5xx), so a machine may exist under the name.
	ambiguous bool
}

var _ providers.Provider = (*Adapter)(nil)

// New builds an adapter.
func New(cfg Config) (*Adapter, error) {
	if cfg.BaseURL == "" {
		return nil, errors.New("paperspace: BaseURL is required")
	}
	if cfg.Key == nil {
		return nil, errors.New("paperspace: Key is required")
	}
	if cfg.RequestsPerSecond < 0 || math.IsNaN(cfg.RequestsPerSecond) || math.IsInf(cfg.RequestsPerSecond, 0) {
		return nil, fmt.Errorf("paperspace: RequestsPerSecond %v is invalid", cfg.RequestsPerSecond)
	}
	if cfg.RequestsPerSecond == 0 {
		cfg.RequestsPerSecond = DefaultRequestsPerSecond
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = DefaultCallTimeout
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{}
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	if cfg.TemplateID == "" {
		cfg.TemplateID = DefaultTemplateID
	}
	if cfg.DiskSize <= 0 {
		cfg.DiskSize = DefaultDiskSize
	}
	if cfg.Prices == nil {
		cfg.Prices = DefaultPriceTable()
	}
	api, err := paperspaceapi.NewClient(cfg.BaseURL, paperspaceapi.WithHTTPClient(cfg.HTTPClient))
	if err != nil {
		return nil, fmt.Errorf("paperspace: %w", err)
	}
	a := &Adapter{
		api:        api,
		key:        cfg.Key,
		clock:      cfg.Clock,
		limiter:    rate.NewLimiter(rate.Limit(cfg.RequestsPerSecond), int(math.Ceil(cfg.RequestsPerSecond))),
		timeout:    cfg.CallTimeout,
		templateID: cfg.TemplateID,
		diskSize:   cfg.DiskSize,
		launches:   map[string]*launchState{},
	}
	a.prices.Store(cfg.Prices)
	return a, nil
}

// Name is providers.Paperspace.
func (a *Adapter) Name() string { return providers.Paperspace }

// Prices returns the price table in use.
func (a *Adapter) Prices() *PriceTable { return a.prices.Load() }

// SetPrices replaces the price table (nil restores DefaultPriceTable()); the
// next Offers uses it.
func (a *Adapter) SetPrices(t *PriceTable) {
	if t == nil {
		t = DefaultPriceTable()
	}
	a.prices.Store(t)
}

// Offers asks machine-availability for every priced GPU machine type in
// every region (see the package doc for the call count) and returns the
// on-demand offers. A pair whose call fails keeps its last known answer (or
// counts as unavailable); the refresh fails only when every call fails, or
// when the credentials are rejected.
func (a *Adapter) Offers(ctx context.Context) ([]providers.Offer, error) {
	prices := a.Prices()
	types := offerTypes(prices)
	avail := make([]Availability, 0, len(types)*len(nativeRegions))
	for _, mt := range types {
		for _, r := range nativeRegions {
			avail = append(avail, Availability{MachineType: mt, Region: r})
		}
	}
	errs := make([]error, len(avail))
	var g errgroup.Group
	g.SetLimit(availabilityConcurrency)
	for i := range avail {
		g.Go(func() error {
			params := &paperspaceapi.MachineAvailabilityListParams{MachineType: avail[i].MachineType, Region: avail[i].Region}
			body, err := a.call(ctx, "machine-availability", func(ctx context.Context, auth paperspaceapi.RequestEditorFn) (*http.Response, error) {
				return a.api.MachineAvailabilityList(ctx, params, auth)
			})
			if err == nil {
				var ok bool
				if ok, err = DecodeAvailability(body); err != nil {
					err = decodeError("machine-availability", err)
				}
				avail[i].Available = ok
			}
			errs[i] = err
			return nil
		})
	}
	_ = g.Wait()
	var firstErr error
	failed := 0
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.lastAvailable == nil {
		a.lastAvailable = map[Availability]bool{}
	}
	for i, err := range errs {
		key := Availability{MachineType: avail[i].MachineType, Region: avail[i].Region}
		if err == nil {
			a.lastAvailable[key] = avail[i].Available
			continue
		}
		if providers.IsClass(err, providers.ClassUnauthorized) {
			return nil, err
		}
		failed++
		if firstErr == nil {
			firstErr = err
		}
		avail[i].Available = a.lastAvailable[key]
	}
	if failed == len(avail) && failed > 0 {
		return nil, firstErr
	}
	return NormalizeOffers(prices, avail), nil
}

// Launch creates the machine req.Name, at most once per name: a repeat
// returns the machine already created without another create call, and after
// a create that ended ambiguously the machine is looked up by name (and
// adopted) before a new one is created. The machine is created from the
// configured template with a dynamic public IP, started at once, with the
// user data as its run-once startup script.
func (a *Adapter) Launch(ctx context.Context, req providers.LaunchRequest) (providers.Instance, error) {
	if req.Name == "" || req.Offer.InstanceType == "" || req.Offer.ProviderRegion == "" {
		return providers.Instance{}, &providers.Error{Provider: providers.Paperspace, Operation: "launch", Class: providers.ClassInvalid,
			Message: "name, offer instance type and offer provider region are required"}
	}
	st := a.launchState(req.Name)
	st.mu.Lock()
	defer st.mu.Unlock()

	if st.machineID != "" {
		return a.get(ctx, st.machineID, req.Name)
	}
	if st.ambiguous {
		in, found, err := a.findByName(ctx, req.Name)
		if err != nil {
			return providers.Instance{}, err
		}
		if found {
			st.machineID, st.ambiguous = in.ID, false
			return in, nil
		}
		st.ambiguous = false // the earlier create made nothing
	}
	if req.UserData != "" && st.scriptID == "" {
		id, err := a.createStartupScript(ctx, req.Name, req.UserData)
		if err != nil {
			return providers.Instance{}, err
		}
		st.scriptID = id
	}
	in, err := a.create(ctx, req, st.scriptID)
	if err != nil {
		// A transient failure may have created the machine all the same.
		st.ambiguous = providers.IsClass(err, providers.ClassTransient)
		return providers.Instance{}, err
	}
	st.machineID, st.ambiguous = in.ID, false
	return in, nil
}

func (a *Adapter) launchState(name string) *launchState {
	a.mu.Lock()
	defer a.mu.Unlock()
	st, ok := a.launches[name]
	if !ok {
		st = &launchState{}
		a.launches[name] = st
	}
	return st
}

func (a *Adapter) createStartupScript(ctx context.Context, name, script string) (string, error) {
	const op = "create startup script"
	runOnce := true
	body, err := a.call(ctx, op, func(ctx context.Context, auth paperspaceapi.RequestEditorFn) (*http.Response, error) {
		return a.api.StartupScriptsCreate(ctx, paperspaceapi.StartupScriptsCreateJSONRequestBody{Name: name, Script: script, IsRunOnce: &runOnce}, auth)
	})
	if err != nil {
		return "", err
	}
	id, err := decodeStartupScriptID(body)
	if err != nil {
		return "", decodeError(op, err)
	}
	return id, nil
}

func (a *Adapter) create(ctx context.Context, req providers.LaunchRequest, scriptID string) (providers.Instance, error) {
	const op = "create machine"
	yes, no := true, false
	ipType := paperspaceapi.MachinesCreateJSONBodyPublicIpType("dynamic")
	reqBody := paperspaceapi.MachinesCreateJSONRequestBody{
		Name:          req.Name,
		MachineType:   req.Offer.InstanceType,
		Region:        req.Offer.ProviderRegion,
		TemplateId:    a.templateID,
		DiskSize:      float32(a.diskSize),
		PublicIpType:  &ipType,
		StartOnCreate: &yes,
		// Paperspace e-mails the root password of every new machine unless told not to.
		EmailPassword: &no,
	}
	if scriptID != "" {
		reqBody.StartupScriptId = &scriptID
	}
	body, err := a.call(ctx, op, func(ctx context.Context, auth paperspaceapi.RequestEditorFn) (*http.Response, error) {
		return a.api.MachinesCreate(ctx, reqBody, auth)
	})
	if err != nil {
		return providers.Instance{}, err
	}
	in, err := DecodeCreatedMachine(body)
	if err != nil {
		return providers.Instance{}, decodeError(op, err)
	}
	return in, nil
}

// get reads one machine; a machine that no longer exists is reported
// terminated.
func (a *Adapter) get(ctx context.Context, id, name string) (providers.Instance, error) {
	const op = "get machine"
	body, err := a.call(ctx, op, func(ctx context.Context, auth paperspaceapi.RequestEditorFn) (*http.Response, error) {
		return a.api.MachinesGet(ctx, id, auth)
	})
	if providers.IsClass(err, providers.ClassNotFound) {
		return providers.Instance{Provider: providers.Paperspace, ID: id, Name: name, State: providers.StateTerminated, NativeState: "deleted"}, nil
	}
	if err != nil {
		return providers.Instance{}, err
	}
	in, err := DecodeMachine(body)
	if err != nil {
		return providers.Instance{}, decodeError(op, err)
	}
	return in, nil
}

// findByName returns the machine named name that is not deleted, if any.
func (a *Adapter) findByName(ctx context.Context, name string) (providers.Instance, bool, error) {
	var found providers.Instance
	ok := false
	err := a.list(ctx, &name, func(in providers.Instance) {
		if !ok && in.Name == name && in.State != providers.StateTerminated {
			found, ok = in, true
		}
	})
	return found, ok, err
}

// Instances lists every machine (following the list cursor) and returns the
// operator's, by name prefix.
func (a *Adapter) Instances(ctx context.Context) ([]providers.Instance, error) {
	var out []providers.Instance
	err := a.list(ctx, nil, func(in providers.Instance) {
		if providers.IsOperatorMachine(in.Name) {
			out = append(out, in)
		}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// list pages through GET /machines (optionally filtered by name).
func (a *Adapter) list(ctx context.Context, name *string, yield func(providers.Instance)) error {
	const op = "list machines"
	limit := pageSize
	var seen []string
	params := &paperspaceapi.MachinesListParams{Limit: &limit, Name: name}
	for range maxPages {
		body, err := a.call(ctx, op, func(ctx context.Context, auth paperspaceapi.RequestEditorFn) (*http.Response, error) {
			return a.api.MachinesList(ctx, params, auth)
		})
		if err != nil {
			return err
		}
		page, err := DecodeMachinePage(body)
		if err != nil {
			return decodeError(op, err)
		}
		for _, in := range page.Instances {
			yield(in)
		}
		if !page.HasMore || page.NextPage == "" {
			return nil
		}
		if slices.Contains(seen, page.NextPage) {
			return &providers.Error{Provider: providers.Paperspace, Operation: op, Class: providers.ClassTransient,
				Message: "the list cursor " + page.NextPage + " repeats"}
		}
		seen = append(seen, page.NextPage)
		params.After = &page.NextPage
	}
	return &providers.Error{Provider: providers.Paperspace, Operation: op, Class: providers.ClassTransient,
		Message: fmt.Sprintf("more than %d pages of machines", maxPages)}
}

// Terminate deletes a machine; a machine that does not exist is success.
func (a *Adapter) Terminate(ctx context.Context, id string) error {
	_, err := a.call(ctx, "delete machine", func(ctx context.Context, auth paperspaceapi.RequestEditorFn) (*http.Response, error) {
		return a.api.MachinesDelete(ctx, id, auth)
	})
	if providers.IsClass(err, providers.ClassNotFound) {
		return nil
	}
	return err
}

// sendFunc sends one generated-client request with the auth editor applied.
type sendFunc func(ctx context.Context, auth paperspaceapi.RequestEditorFn) (*http.Response, error)

// call runs one API call: it refuses while a Retry-After is pending (without
// an HTTP call), waits for the client-side rate limiter, bounds the call by
// the call timeout, and returns the body of a 2xx answer or a classified
// *providers.Error. A 429 blocks all calls for its Retry-After.
func (a *Adapter) call(ctx context.Context, op string, send sendFunc) ([]byte, error) {
	if err := a.blocked(op); err != nil {
		return nil, err
	}
	key := a.key()
	if key == "" {
		return nil, &providers.Error{Provider: providers.Paperspace, Operation: op, Class: providers.ClassUnauthorized, Message: "no API key configured"}
	}
	if err := a.limiter.Wait(ctx); err != nil {
		return nil, &providers.Error{Provider: providers.Paperspace, Operation: op, Class: providers.ClassTransient, Err: err}
	}
	// A 429 may have arrived while this call waited for the limiter.
	if err := a.blocked(op); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, a.timeout)
	defer cancel()
	auth := func(_ context.Context, req *http.Request) error {
		req.Header.Set("Authorization", "Bearer "+key)
		return nil
	}
	resp, err := send(ctx, auth)
	if err != nil {
		return nil, &providers.Error{Provider: providers.Paperspace, Operation: op, Class: providers.ClassTransient, Err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return nil, &providers.Error{Provider: providers.Paperspace, Operation: op, Class: providers.ClassTransient, HTTPStatus: resp.StatusCode, Err: err}
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return body, nil
	}
	now := a.clock.Now()
	perr := classify(resp.StatusCode, resp.Header, body, now)
	perr.Operation = op
	if perr.Class == providers.ClassRateLimited {
		a.mu.Lock()
		if until := now.Add(perr.RetryAfter); until.After(a.blockedUntil) {
			a.blockedUntil = until
		}
		a.mu.Unlock()
	}
	return nil, perr
}

// blocked returns a ClassRateLimited error while an earlier 429's
// Retry-After has not passed.
func (a *Adapter) blocked(op string) error {
	a.mu.Lock()
	until := a.blockedUntil
	a.mu.Unlock()
	if wait := until.Sub(a.clock.Now()); wait > 0 {
		return &providers.Error{Provider: providers.Paperspace, Operation: op, Class: providers.ClassRateLimited,
			Message: "waiting out the provider's Retry-After", RetryAfter: wait}
	}
	return nil
}

// decodeError reports a 2xx body that does not match the spec. For a create
// the machine may exist all the same, so it is transient (and ambiguous).
func decodeError(op string, err error) error {
	return &providers.Error{Provider: providers.Paperspace, Operation: op, Class: providers.ClassTransient, Err: err}
}
