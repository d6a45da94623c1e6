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
// nothing and are left in place when the machine is deleted (see Launch).
package paperspace

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/utils/clock"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/paperspace/paperspaceapi"
)

// Defaults of Config.
const (
	DefaultBaseURL           = "https://api.paperspace.com/v1"
	DefaultRequestsPerSecond = 2
	DefaultCallTimeout       = providers.DefaultCallTimeout
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
	// TemplateID is the OS template machines are created from
	// (default DefaultTemplateID).
	TemplateID string
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
	templateID string
	diskSize   int
	prices     atomic.Pointer[PriceTable]

	mu sync.Mutex
	// lastAvailable keeps the latest answer per machine type and region, so
	// a refresh where some availability calls fail still reports the rest.
	lastAvailable map[Availability]bool
}

var _ providers.Provider = (*Adapter)(nil)

// New builds an adapter.
func New(cfg Config) (*Adapter, error) {
	if cfg.BaseURL == "" {
		cfg.BaseURL = DefaultBaseURL
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
	a := &Adapter{
		api:        api,
		calls:      calls,
		templateID: cfg.TemplateID,
		diskSize:   cfg.DiskSize,
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

// Launch creates the machine req.Name from the configured template with a
// dynamic public IP, started at once, with the user data as its run-once
// startup script. It does not deduplicate: a second Launch of a name is a
// second machine. A create that ends without a definite answer (timeout,
// transport error, 5xx, unreadable answer) is ClassTransient; the machine
// may exist, and the controller looks for it by name.
//
// Each Launch with user data first creates its own startup script, named
// after the machine. (The adapter used to remember a name's script and reuse
// it on a retry of the name, even for another offer whose rendered user data
// differs; that was per-name launch memory and is gone.) Scripts are never
// deleted, as before: the machine runs its script at first boot, after the
// create has returned, and the generated client has no startup-script list
// or delete operation. A name launched again after a definite refusal of the
// machine create (a 429, no capacity) therefore leaves its earlier script
// unused in the account.
func (a *Adapter) Launch(ctx context.Context, req providers.LaunchRequest) (providers.Instance, error) {
	if req.Name == "" || req.Offer.InstanceType == "" || req.Offer.ProviderRegion == "" {
		return providers.Instance{}, &providers.Error{Provider: providers.Paperspace, Operation: "launch", Class: providers.ClassInvalid,
			Message: "name, offer instance type and offer provider region are required"}
	}
	scriptID := ""
	if req.UserData != "" {
		id, err := a.createStartupScript(ctx, req.Name, req.UserData)
		if err != nil {
			return providers.Instance{}, err
		}
		scriptID = id
	}
	return a.create(ctx, req, scriptID)
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
// operator's, by name prefix.
func (a *Adapter) Instances(ctx context.Context) ([]providers.Instance, error) {
	var out []providers.Instance
	err := a.list(ctx, func(in providers.Instance) {
		if providers.IsOperatorMachine(in.Name) {
			out = append(out, in)
		}
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// list pages through GET /machines.
func (a *Adapter) list(ctx context.Context, yield func(providers.Instance)) error {
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
	_, err := a.calls.Call(ctx, "delete machine", func(ctx context.Context) (*http.Response, error) {
		return a.api.MachinesDelete(ctx, id)
	})
	if providers.IsClass(err, providers.ClassNotFound) {
		return nil
	}
	return err
}

// decodeError reports a 2xx body that does not match the spec. For a create
// the machine may exist all the same, so it is transient (and ambiguous).
func decodeError(op string, err error) error {
	return &providers.Error{Provider: providers.Paperspace, Operation: op, Class: providers.ClassTransient, Err: err}
}
