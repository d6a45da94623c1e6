// Package paperspace is the Paperspace (DigitalOcean) adapter: it implements
// providers.Provider over the v1 API (https://api.paperspace.com/v1) with a
// client generated from the published spec (package paperspaceapi, see
// hack/providers/paperspace/gen.sh).
//
// Paperspace publishes no prices and sells no spot capacity. Offers are the
// machine types of a static PriceTable (shipped in prices.json, overridable
// from a ConfigMap) that map to a canonical GPU, in each of the three
// regions, on-demand only, priced from the table (PriceSourceStatic) and
// marked available from GET /machine-availability. A machine type needs a
// GPU OS template too (templates.go): a refresh first lists the OS templates
// (GET /os-templates, one call), and a priced type no Linux GPU template
// lists gets no offer (Dropped says why, and a log line names the types
// when the set changes). Availability answers for one (machine type,
// region) pair at a time, so a refresh then costs one call per pair: with
// the shipped table, 19 GPU machine types x 3 regions = 57 calls, about
// 29 s at the default 2 requests/s. Refresh the catalog no more often than
// every few minutes.
//
// User data is passed as a Paperspace startup script, which Paperspace runs
// with bash: the adapter's BootstrapFormats is the script format only.
// Launch first creates a run-once startup script named after the machine
// holding the rendered bootstrap, then creates the machine with its id; the
// script is deleted once the machine is gone (scripts.go).
//
// Regions are the spec's short codes (ny2, ca1, ams1), which the adapter
// sends; on read the legacy display names ("East Coast (NY2)") are accepted
// too (NativeRegion).
//
// A machine that stays off after its create without ever starting is how
// Paperspace shows a capacity miss; Instances reports it StateFailed (with
// NativeState NeverStartedState) rather than interrupted.
package paperspace

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/paperspace/paperspaceapi"
)

// Defaults of Config.
const (
	DefaultBaseURL           = "https://api.paperspace.com/v1"
	DefaultRequestsPerSecond = 2
	DefaultCallTimeout       = providers.DefaultCallTimeout
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

// Config configures the adapter. Zero values take the defaults; a negative
// RequestsPerSecond or CallTimeout turns that limit off.
type Config struct {
	// BaseURL is the API root (default DefaultBaseURL); a simulator's URL +
	// "/v1" for the simulator.
	BaseURL string
	// Key returns the current API key; it is called for every request, so a
	// rotated Secret takes effect at once. The key is sent as a bearer token
	// and never logged or put in an error.
	Key func() string
	// HTTPClient sends the requests (default: a plain http.Client; each call
	// is bounded by CallTimeout).
	HTTPClient *http.Client
	// RequestsPerSecond paces all calls client-side (default 2). A call waits
	// for its turn if that fits in its deadline and CallTimeout, and fails
	// with ClassRateLimited otherwise.
	RequestsPerSecond float64
	// CallTimeout bounds each HTTP call (default 30s); waiting for the rate
	// limiter does not count against it.
	CallTimeout time.Duration
	// Clock is used for Retry-After bookkeeping (default: the real clock).
	Clock clock.PassiveClock
	// TemplateID, when set, is the OS template every machine is created
	// from, whatever its type. Empty (the default) chooses a GPU template per
	// machine type from GET /os-templates (ChooseTemplate). Do not set it to
	// t0nspur5: that is the CPU image.
	TemplateID string
	// NeverStartedGrace is how long a machine that is off and was never
	// seen started may stay so after its create before Instances reports it
	// a capacity miss (StateFailed). Default 0: at once, as soon as a listing
	// shows it off.
	NeverStartedGrace time.Duration
	// ScriptSweepInterval is how often Instances looks for startup scripts
	// whose machine is gone (default DefaultScriptSweepInterval; negative:
	// never).
	ScriptSweepInterval time.Duration
	// DiskSize is the boot disk size in GB (default 100).
	DiskSize int
	// Prices is the price table (default DefaultPriceTable()); SetPrices
	// replaces it at run time.
	Prices *PriceTable
}

// Adapter is the Paperspace provider. It is safe for concurrent use. It
// keeps no memory of what it launched: Launch always creates, and the
// controller finds a machine by its name through Instances.
type Adapter struct {
	api        *paperspaceapi.Client
	calls      *providers.Caller
	clock      clock.PassiveClock
	templateID string
	diskSize   int
	offGrace   time.Duration
	sweepEvery time.Duration
	prices     atomic.Pointer[PriceTable]
	sweeping   sync.Mutex // held by the running script sweep

	mu sync.Mutex
	// lastAvailable keeps the latest answer per machine type and region, so
	// a refresh where some availability calls fail still reports the rest.
	lastAvailable map[Availability]bool
	// templates are the OS templates of the latest good listing; nil until
	// one succeeded.
	templates []Template
	// dropped are the priced machine types the latest refresh gave no offer,
	// with the reason.
	dropped map[string]string
	// started are the machines (by id) seen started since this process
	// began, among those of the latest complete listing.
	started map[string]bool
	// lastSweep is when the latest startup script sweep ran.
	lastSweep time.Time
}

var (
	_ providers.Provider           = (*Adapter)(nil)
	_ providers.BootstrapFormatter = (*Adapter)(nil)
)

// New builds an adapter.
func New(cfg Config) (*Adapter, error) {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
	}
	if cfg.DiskSize <= 0 {
		cfg.DiskSize = DefaultDiskSize
	}
	if cfg.Prices == nil {
		cfg.Prices = DefaultPriceTable()
	}
	calls, err := providers.NewCaller(providers.CallConfig{
		Provider:          providers.Paperspace,
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
	api, err := paperspaceapi.NewClient(cfg.BaseURL, paperspaceapi.WithHTTPClient(calls))
	if err != nil {
		return nil, fmt.Errorf("paperspace: %w", err)
	}
	clk := cfg.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	a := &Adapter{
		api:        api,
		calls:      calls,
		clock:      clk,
		templateID: cfg.TemplateID,
		diskSize:   cfg.DiskSize,
		offGrace:   max(cfg.NeverStartedGrace, 0),
		sweepEvery: providers.OrDefault(cfg.ScriptSweepInterval, DefaultScriptSweepInterval),
		started:    map[string]bool{},
	}
	a.prices.Store(cfg.Prices)
	return a, nil
}

// Name is providers.Paperspace.
func (a *Adapter) Name() string { return providers.Paperspace }

// BootstrapFormats implements providers.BootstrapFormatter: Paperspace runs
// a startup script with bash, and nothing else (no cloud-init user data).
func (a *Adapter) BootstrapFormats() []providers.BootstrapFormat {
	return []providers.BootstrapFormat{providers.FormatScript}
}

// Dropped are the priced GPU machine types the latest catalog refresh gave
// no offer (no GPU OS template lists them), with the reason.
func (a *Adapter) Dropped() map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[string]string, len(a.dropped))
	for k, v := range a.dropped {
		out[k] = v
	}
	return out
}

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

// Offers lists the OS templates, then asks machine-availability for every
// priced GPU machine type that has a GPU template, in every region (see the
// package doc for the call count), and returns the on-demand offers. A
// failed template listing falls back on the last good one (and fails the
// refresh when there is none); a pair whose availability call fails keeps
// its last known answer (or counts as unavailable); the refresh fails only
// when every call fails, or when the credentials are rejected.
func (a *Adapter) Offers(ctx context.Context) ([]providers.Offer, error) {
	prices := a.Prices()
	types, err := a.templatedTypes(ctx, offerTypes(prices))
	if err != nil {
		return nil, err
	}
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
			body, err := a.calls.Call(ctx, "machine-availability", func(ctx context.Context) (*http.Response, error) {
				return a.api.MachineAvailabilityList(ctx, params)
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

// templatedTypes are the machine types of types that have a GPU OS
// template (all of them with a configured TemplateID); the others are
// recorded in Dropped, and logged when that set changes.
func (a *Adapter) templatedTypes(ctx context.Context, types []string) ([]string, error) {
	if a.templateID != "" {
		return types, nil
	}
	templates, err := a.refreshTemplates(ctx)
	if err != nil && (templates == nil || providers.IsClass(err, providers.ClassUnauthorized)) {
		return nil, err
	}
	logger := klog.FromContext(ctx)
	if err != nil {
		logger.V(2).Info("listing OS templates failed; using the last listing", "provider", providers.Paperspace, "err", err)
	}
	var out []string
	dropped := map[string]string{}
	for _, mt := range types {
		if _, why, ok := ChooseTemplate(templates, mt); ok {
			out = append(out, mt)
		} else {
			dropped[mt] = why
		}
	}
	a.mu.Lock()
	changed := !maps.Equal(dropped, a.dropped)
	a.dropped = dropped
	a.mu.Unlock()
	if changed && len(dropped) > 0 {
		logger.Info("Paperspace machine types without a GPU OS template get no offers", "machineTypes", slices.Sorted(maps.Keys(dropped)),
			"reason", "no Linux GPU template of GET /os-templates lists them as available")
	}
	return out, nil
}

// Launch creates the machine req.Name from the GPU OS template chosen for
// its machine type (or the configured TemplateID) with a dynamic public IP,
// started at once, with the user data as its run-once startup script. It
// does not deduplicate: a second Launch of a name is a second machine. A
// create that ends without a definite answer (timeout, transport error,
// 5xx, unreadable answer) is ClassTransient; the machine may exist, and the
// controller looks for it by name. A machine type no GPU template lists is
// ClassInvalid, before anything is created.
//
// Each Launch with user data first creates its own startup script, named
// after the machine. A definite refusal of the machine create (a 429, no
// capacity, an invalid request) deletes that script again at once; after
// an ambiguous one it stays for the machine that may exist, and is deleted
// with it (Terminate) or by the sweep once no machine of its name is
// listed.
func (a *Adapter) Launch(ctx context.Context, req providers.LaunchRequest) (providers.Instance, error) {
	if req.Name == "" || req.Offer.InstanceType == "" || req.Offer.ProviderRegion == "" {
		return providers.Instance{}, &providers.Error{Provider: providers.Paperspace, Operation: "launch", Class: providers.ClassInvalid,
			Message: "name, offer instance type and offer provider region are required"}
	}
	templateID, err := a.templateFor(ctx, req.Offer.InstanceType)
	if err != nil {
		return providers.Instance{}, err
	}
	scriptID := ""
	if req.UserData != "" {
		id, err := a.createStartupScript(ctx, req.Name, req.UserData)
		if err != nil {
			return providers.Instance{}, err
		}
		scriptID = id
	}
	in, err := a.create(ctx, req, templateID, scriptID)
	if err != nil && scriptID != "" && !providers.IsClass(err, providers.ClassTransient) {
		if derr := a.deleteScript(ctx, scriptID); derr != nil {
			klog.FromContext(ctx).Info("Warning: deleting the startup script of a refused create failed; the sweep retries",
				"provider", providers.Paperspace, "script", scriptID, "machine", req.Name, "err", derr)
		}
	}
	return in, err
}

func (a *Adapter) createStartupScript(ctx context.Context, name, script string) (string, error) {
	const op = "create startup script"
	runOnce := true
	body, err := a.calls.Call(ctx, op, func(ctx context.Context) (*http.Response, error) {
		return a.api.StartupScriptsCreate(ctx, paperspaceapi.StartupScriptsCreateJSONRequestBody{Name: name, Script: script, IsRunOnce: &runOnce})
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

func (a *Adapter) create(ctx context.Context, req providers.LaunchRequest, templateID, scriptID string) (providers.Instance, error) {
	const op = "create machine"
	yes, no := true, false
	ipType := paperspaceapi.MachinesCreateJSONBodyPublicIpType("dynamic")
	reqBody := paperspaceapi.MachinesCreateJSONRequestBody{
		Name:          req.Name,
		MachineType:   req.Offer.InstanceType,
		Region:        req.Offer.ProviderRegion,
		TemplateId:    templateID,
		DiskSize:      float32(a.diskSize),
		PublicIpType:  &ipType,
		StartOnCreate: &yes,
		// Paperspace e-mails the root password of every new machine unless told not to.
		EmailPassword: &no,
	}
	if scriptID != "" {
		reqBody.StartupScriptId = &scriptID
	}
	body, err := a.calls.CallLaunch(ctx, op, func(ctx context.Context) (*http.Response, error) {
		return a.api.MachinesCreate(ctx, reqBody)
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

// Instances lists every machine (following the list cursor) and returns the
// operator's, by name prefix. A machine that is off and was never seen
// started (provisioning does not count) is reported StateFailed with
// NativeState NeverStartedState once NeverStartedGrace has passed since its
// create: Paperspace's capacity miss, which the controller fails over from
// (it terminates the machine, marks the offering unavailable and launches
// the next offer). Off after having been seen started is an interruption.
// Having seen a machine started is this process's observation; a machine
// that started and went off while no process of the operator was watching
// counts as never started (the controller recovers the same way).
//
// At most once per ScriptSweepInterval it also deletes the startup scripts
// whose machine is gone (scripts.go).
func (a *Adapter) Instances(ctx context.Context) ([]providers.Instance, error) {
	var machines []Machine
	if err := a.list(ctx, func(m Machine) { machines = append(machines, m) }); err != nil {
		return nil, err
	}
	now := a.clock.Now()
	var out []providers.Instance
	a.mu.Lock()
	listed := make(map[string]bool, len(machines))
	for _, m := range machines {
		listed[m.ID] = true
		if Started(m.NativeState) && !m.Deleted {
			a.started[m.ID] = true
		}
		if !providers.IsOperatorMachine(m.Name) {
			continue
		}
		in := m.Instance
		in.State, in.NativeState = neverStarted(m, a.started[m.ID], now, a.offGrace)
		out = append(out, in)
	}
	for id := range a.started {
		if !listed[id] {
			delete(a.started, id)
		}
	}
	a.mu.Unlock()
	a.maybeSweepScripts(ctx, machines)
	return out, nil
}

// neverStarted is a listed machine's state and native state with the
// capacity miss applied: a machine that is off, not deleted and not seen
// started is failed (NeverStartedState) from grace after its create on, and
// booting (waiting) before that; any other machine keeps its own.
func neverStarted(m Machine, seenStarted bool, now time.Time, grace time.Duration) (providers.InstanceState, string) {
	switch {
	case m.NativeState != "off" || m.Deleted || seenStarted:
		return m.State, m.NativeState
	case now.Sub(m.Created) >= grace:
		return providers.StateFailed, NeverStartedState
	default:
		return providers.StateBooting, m.NativeState
	}
}

// list pages through GET /machines.
func (a *Adapter) list(ctx context.Context, yield func(Machine)) error {
	const op = "list machines"
	limit := pageSize
	var seen []string
	params := &paperspaceapi.MachinesListParams{Limit: &limit}
	for range maxPages {
		body, err := a.calls.Call(ctx, op, func(ctx context.Context) (*http.Response, error) {
			return a.api.MachinesList(ctx, params)
		})
		if err != nil {
			return err
		}
		page, err := DecodeMachinePage(body)
		if err != nil {
			return decodeError(op, err)
		}
		for _, m := range page.Machines {
			yield(m)
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
// Once the delete is accepted it deletes the machine's startup scripts (by
// the machine's name, which the delete answer carries); a failure there is
// logged and left to the sweep, and does not fail the terminate.
func (a *Adapter) Terminate(ctx context.Context, id string) error {
	const op = "delete machine"
	body, err := a.calls.Call(ctx, op, func(ctx context.Context) (*http.Response, error) {
		return a.api.MachinesDelete(ctx, id)
	})
	if providers.IsClass(err, providers.ClassNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	logger := klog.FromContext(ctx)
	gone, err := DecodeDeletedMachine(body)
	if err != nil {
		logger.Info("Warning: unreadable machine delete answer; its startup script is left to the sweep", "provider", providers.Paperspace, "machine", id, "err", err)
		return nil
	}
	if err := a.deleteScriptsNamed(ctx, gone.Name); err != nil {
		logger.Info("Warning: deleting the startup script of a deleted machine failed; the sweep retries", "provider", providers.Paperspace, "machine", gone.Name, "err", err)
	}
	return nil
}

// decodeError reports a 2xx body that does not match the spec. For a create
// the machine may exist all the same, so it is transient (and ambiguous).
func decodeError(op string, err error) error {
	return &providers.Error{Provider: providers.Paperspace, Operation: op, Class: providers.ClassTransient, Err: err}
}
