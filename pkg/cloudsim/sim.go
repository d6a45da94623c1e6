// Package cloudsim serves simulated GPU cloud APIs over real HTTP: the same
// paths, JSON shapes, states and error bodies as the real providers (taken
// from their published specs), with a configurable catalog, boot delays,
// injected faults and preemption, and counters that let a test prove that
// nothing leaked or launched twice. Each provider lives in a subpackage; this
// package holds what they share.
package cloudsim

import (
	"context"
	"math/rand/v2"
	"net/http"
	"sort"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/utils/clock"
)

// CatalogEntry is one instance type sold in one native region.
type CatalogEntry struct {
	// InstanceType is the provider's native id: a Lambda type name
	// (gpu_1x_h100_pcie), a RunPod GPU type id (NVIDIA H100 80GB HBM3) or a
	// Paperspace machine type label (A100-80Gx4).
	InstanceType string `json:"instanceType"`
	// GPUs is the GPU count of the type (Lambda, Paperspace) or the most GPUs
	// one pod may take (RunPod).
	GPUs int `json:"gpus"`
	// Region is the provider's native region or data center id.
	Region string `json:"region"`
	// OnDemandPrice is USD/h in the provider's own unit: per instance for
	// Lambda and Paperspace, per GPU for RunPod. Zero: not sold on-demand.
	OnDemandPrice float64 `json:"onDemandPrice"`
	// SpotPrice is the spot/interruptible USD/h in the same unit; zero: none.
	SpotPrice float64 `json:"spotPrice,omitempty"`
	// Capacity is how many more machines of this entry can be launched;
	// negative means unlimited.
	Capacity int `json:"capacity"`
}

// Machine is a simulated instance as the node agent and tests see it,
// independent of the provider's own representation.
type Machine struct {
	Provider     string
	ID           string
	Name         string
	InstanceType string
	Region       string
	GPUs         int
	Spot         bool
	UserData     string
	NativeState  string
	// Active: booted and running; the node agent registers its Node unless
	// it is a Container.
	Active bool
	// Container: a container machine (a RunPod pod), which runs an image and
	// never registers a Node, whatever its state.
	Container bool
	// Live: still exists at the provider (not terminated); may still bill.
	Live bool
	// Preempted: taken back by the provider.
	Preempted bool
}

// Simulator is what every provider simulator offers besides its HTTP API.
type Simulator interface {
	http.Handler
	// Provider is the provider name (providers.LambdaLabs, ...).
	Provider() string
	// Machines returns every instance ever created, terminated ones included.
	Machines() []Machine
	// Preempt takes a spot (or, for Lambda, any) instance back as the real
	// provider would: Lambda status "preempted", RunPod pod EXITED.
	Preempt(id string) error
	// Core gives the shared counters, faults and catalog.
	Core() *Core
}

// Faults are injected into every authenticated API call.
type Faults struct {
	// ErrorRate is the probability of a 500 in the provider's error format.
	ErrorRate float64 `json:"errorRate"`
	// RateLimitRate is the probability of a 429 with Retry-After.
	RateLimitRate float64 `json:"rateLimitRate"`
	// RetryAfter is what injected and enforced 429s ask for (default 1s).
	RetryAfter time.Duration `json:"retryAfter"`
	// Latency is added before every response.
	Latency time.Duration `json:"latency"`
	// Down makes every call fail with 503.
	Down bool `json:"down"`
}

// Config is what every simulator shares.
type Config struct {
	// APIKey is the only key accepted; empty accepts any non-empty key.
	APIKey string `json:"apiKey"`
	// Catalog is the initial catalog.
	Catalog []CatalogEntry `json:"catalog"`
	// BootDelay is how long a new instance stays booting/provisioning.
	BootDelay time.Duration `json:"bootDelay"`
	// TerminateDelay is how long a terminating instance stays visible.
	TerminateDelay time.Duration `json:"terminateDelay"`
	// RequestsPerSecond limits all calls (0: unlimited), enforced with 429s.
	RequestsPerSecond float64 `json:"requestsPerSecond"`
	// LaunchInterval limits launches to one per interval (0: unlimited).
	LaunchInterval time.Duration `json:"launchInterval"`
	// Quota is the most live instances the account may have (0: no quota);
	// a launch beyond it gets the provider's quota error.
	Quota int `json:"quota"`
	// Faults are the initial injected faults.
	Faults Faults `json:"faults"`
	// Seed makes injected faults reproducible.
	Seed uint64 `json:"seed"`
}

// Counters is a snapshot of what a simulator has served.
type Counters struct {
	// Requests counts calls per endpoint ("GET /api/v1/instances").
	Requests map[string]int
	// Launches counts create calls that made an instance, per machine name.
	Launches map[string]int
	// RateLimited counts 429 responses sent.
	RateLimited int
	// Injected counts injected 5xx responses.
	Injected int
}

// Core holds the state every simulator shares: clock, catalog, counters,
// faults and rate limits. Provider packages embed it.
type Core struct {
	Clock clock.Clock
	cfg   Config

	mu        sync.Mutex
	catalog   []CatalogEntry
	faults    Faults
	rng       *rand.Rand
	requests  map[string]int
	launches  map[string]int
	limited   int
	injected  int
	seq       int
	limiter   *rate.Limiter
	launchLim *rate.Limiter
}

// NewCore builds the shared state. A nil clock means the real clock.
func NewCore(cfg Config, clk clock.Clock) *Core {
	if clk == nil {
		clk = clock.RealClock{}
	}
	c := &Core{
		Clock:    clk,
		cfg:      cfg,
		catalog:  append([]CatalogEntry(nil), cfg.Catalog...),
		faults:   cfg.Faults,
		rng:      rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		requests: map[string]int{},
		launches: map[string]int{},
	}
	// Ids start at a random offset so that simulators started one after
	// another (tests sharing an API server) never hand out the same id.
	c.seq = rand.IntN(1_000_000) * 1000
	if cfg.RequestsPerSecond > 0 {
		c.limiter = rate.NewLimiter(rate.Limit(cfg.RequestsPerSecond), max(1, int(cfg.RequestsPerSecond)))
	}
	if cfg.LaunchInterval > 0 {
		c.launchLim = rate.NewLimiter(rate.Every(cfg.LaunchInterval), 1)
	}
	return c
}

// Config returns the configuration the simulator was built with.
func (c *Core) Config() Config { return c.cfg }

// Now is the simulator's time.
func (c *Core) Now() time.Time { return c.Clock.Now() }

// NextID returns a fresh, unique id with the given prefix.
func (c *Core) NextID(prefix string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	return prefix + itoa(c.seq)
}

func itoa(n int) string {
	const digits = "0123456789"
	if n == 0 {
		return "0"
	}
	var b [20]byte
	i := len(b)
	for n > 0 {
		i--
		b[i] = digits[n%10]
		n /= 10
	}
	return string(b[i:])
}

// SetFaults replaces the injected faults.
func (c *Core) SetFaults(f Faults) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.faults = f
}

// Faults returns the injected faults.
func (c *Core) Faults() Faults {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.faults
}

// Catalog returns a copy of the catalog.
func (c *Core) Catalog() []CatalogEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]CatalogEntry(nil), c.catalog...)
}

// SetCatalog replaces the catalog.
func (c *Core) SetCatalog(entries []CatalogEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.catalog = append([]CatalogEntry(nil), entries...)
}

// SetCapacity sets the remaining capacity of one type in one region
// (negative: unlimited); it reports whether the entry exists.
func (c *Core) SetCapacity(instanceType, region string, n int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.catalog {
		if c.catalog[i].InstanceType == instanceType && c.catalog[i].Region == region {
			c.catalog[i].Capacity = n
			return true
		}
	}
	return false
}

// Entry finds a catalog entry.
func (c *Core) Entry(instanceType, region string) (CatalogEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.catalog {
		if e.InstanceType == instanceType && e.Region == region {
			return e, true
		}
	}
	return CatalogEntry{}, false
}

// TakeCapacity consumes one unit of capacity; false means none is left.
func (c *Core) TakeCapacity(instanceType, region string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.catalog {
		e := &c.catalog[i]
		if e.InstanceType == instanceType && e.Region == region {
			if e.Capacity == 0 {
				return false
			}
			if e.Capacity > 0 {
				e.Capacity--
			}
			return true
		}
	}
	return false
}

// ReturnCapacity gives one unit back when an instance goes away.
func (c *Core) ReturnCapacity(instanceType, region string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.catalog {
		e := &c.catalog[i]
		if e.InstanceType == instanceType && e.Region == region && e.Capacity >= 0 {
			e.Capacity++
		}
	}
}

// RecordLaunch counts a launch that created an instance with this name.
func (c *Core) RecordLaunch(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.launches[name]++
}

// Counters returns a snapshot of the counters.
func (c *Core) Counters() Counters {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Counters{Requests: map[string]int{}, Launches: map[string]int{}, RateLimited: c.limited, Injected: c.injected}
	for k, v := range c.requests {
		s.Requests[k] = v
	}
	for k, v := range c.launches {
		s.Launches[k] = v
	}
	return s
}

// Gate is what a simulator's handler asks before serving a call.
type Gate int

const (
	// Serve: go on.
	Serve Gate = iota
	// Unauthorized: the key is wrong; answer 401 in the provider's format.
	Unauthorized
	// RateLimited: answer 429 with Retry-After (RetryAfter()).
	RateLimited
	// Fail: answer an injected 500 in the provider's format.
	Fail
	// Unavailable: the provider is down; answer 503.
	Unavailable
)

// Admit counts the call under endpoint, sleeps the injected latency and
// decides whether it is served. launch marks calls that create instances,
// which are also held to LaunchInterval.
func (c *Core) Admit(ctx context.Context, endpoint, key string, launch bool) Gate {
	c.mu.Lock()
	c.requests[endpoint]++
	f := c.faults
	c.mu.Unlock()
	if f.Latency > 0 {
		select {
		case <-ctx.Done():
		case <-c.Clock.After(f.Latency):
		}
	}
	if key == "" || (c.cfg.APIKey != "" && key != c.cfg.APIKey) {
		return Unauthorized
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if f.Down {
		return Unavailable
	}
	now := c.Clock.Now()
	if c.limiter != nil && !c.limiter.AllowN(now, 1) {
		c.limited++
		return RateLimited
	}
	if launch && c.launchLim != nil && !c.launchLim.AllowN(now, 1) {
		c.limited++
		return RateLimited
	}
	if f.RateLimitRate > 0 && c.rng.Float64() < f.RateLimitRate {
		c.limited++
		return RateLimited
	}
	if f.ErrorRate > 0 && c.rng.Float64() < f.ErrorRate {
		c.injected++
		return Fail
	}
	return Serve
}

// RetryAfter is the Retry-After the simulator sends with 429s, in whole seconds.
func (c *Core) RetryAfter() int {
	f := c.Faults()
	if f.RetryAfter <= 0 {
		return 1
	}
	return int((f.RetryAfter + time.Second - 1) / time.Second)
}

// BearerKey extracts the key of an "Authorization: Bearer <key>" header.
func BearerKey(r *http.Request) string {
	const p = "Bearer "
	h := r.Header.Get("Authorization")
	if len(h) > len(p) && h[:len(p)] == p {
		return h[len(p):]
	}
	return ""
}

// SortMachines orders machines by ID for stable output.
func SortMachines(ms []Machine) {
	sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID })
}
