package providers

import (
	"context"
	"sort"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

// DefaultCatalogInterval is how often each provider's catalog is refreshed.
const DefaultCatalogInterval = 2 * time.Minute

// ProviderCatalog is one provider's last good catalog.
type ProviderCatalog struct {
	Offers []Offer
	// FetchedAt is when the last successful refresh finished.
	FetchedAt time.Time
	// Stale is true when the latest refresh failed and Offers are older.
	Stale bool
	// Err is the latest refresh error, if any.
	Err error
}

// Catalog caches every provider's offers: one catalog call per provider per
// interval however many callers ask, concurrent callers share one in-flight
// refresh, and a failed refresh keeps the last good catalog, marked stale.
type Catalog struct {
	providers []Provider
	interval  time.Duration
	clock     clock.PassiveClock

	group singleflight.Group

	mu      sync.RWMutex
	entries map[string]*catalogEntry
	version uint64
	merged  []Offer

	// OnRefresh, when set, runs once after every refresh attempt of a
	// provider, that is once per catalog call made, not once per caller.
	OnRefresh func(provider string, err error)
}

// catalogEntry is a provider's catalog and when it was last tried.
type catalogEntry struct {
	ProviderCatalog
	// attemptedAt is when the latest refresh attempt, successful or not,
	// finished: the next one is due an interval later, so a provider that is
	// down is asked once per interval, not once per caller.
	attemptedAt time.Time
}

// NewCatalog caches the offers of the given providers.
func NewCatalog(ps []Provider, interval time.Duration, clk clock.PassiveClock) *Catalog {
	if interval <= 0 {
		interval = DefaultCatalogInterval
	}
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &Catalog{providers: ps, interval: interval, clock: clk, entries: map[string]*catalogEntry{}}
}

// Interval is the refresh interval.
func (c *Catalog) Interval() time.Duration { return c.interval }

// Offers returns the merged offers of all providers, refreshing each whose
// catalog is older than the interval, and the catalog version (it changes
// whenever any provider's offers change). Providers whose refresh fails and
// that never had a good catalog contribute nothing; the error is kept in
// Status.
func (c *Catalog) Offers(ctx context.Context) ([]Offer, uint64) {
	return c.refreshWhere(ctx, func(name string) bool { return !c.fresh(name) })
}

// Current returns the cached offers without waiting for a due refresh (Run
// refreshes in the background, so a slow provider never stalls callers); it
// waits only for providers that have never been asked.
func (c *Catalog) Current(ctx context.Context) ([]Offer, uint64) {
	return c.refreshWhere(ctx, func(name string) bool {
		c.mu.RLock()
		defer c.mu.RUnlock()
		_, asked := c.entries[name]
		return !asked
	})
}

// refreshWhere refreshes, in parallel, the providers due says need it and
// returns the merged offers and the catalog version.
func (c *Catalog) refreshWhere(ctx context.Context, due func(name string) bool) ([]Offer, uint64) {
	var wg sync.WaitGroup
	for _, p := range c.providers {
		if !due(p.Name()) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.Refresh(ctx, p)
		}()
	}
	wg.Wait()
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.merged, c.version
}

func (c *Catalog) fresh(name string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	e, ok := c.entries[name]
	if !ok {
		return false
	}
	return c.clock.Since(e.attemptedAt) < c.interval
}

// Refresh fetches one provider's catalog unless it is fresh, sharing the
// call with any concurrent refresh of the same provider. The shared call does
// not inherit ctx's cancellation: one caller giving up must not fail the
// refresh for the others (and leave the catalog stale for an interval). A
// caller whose ctx ends stops waiting and gets ctx's error; the refresh goes
// on, bounded by the adapter's own call timeouts.
func (c *Catalog) Refresh(ctx context.Context, p Provider) error {
	name := p.Name()
	shared := context.WithoutCancel(ctx)
	ch := c.group.DoChan(name, func() (any, error) {
		if c.fresh(name) {
			return nil, nil
		}
		offers, err := p.Offers(shared)
		c.store(name, offers, err)
		if c.OnRefresh != nil {
			c.OnRefresh(name, err)
		}
		return nil, err
	})
	select {
	case r := <-ch:
		return r.Err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Catalog) store(name string, offers []Offer, err error) {
	now := c.clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[name]
	if !ok {
		e = &catalogEntry{}
		c.entries[name] = e
	}
	// The attempt time moves on failure too: the next attempt waits an
	// interval. FetchedAt stays the time of the offers kept.
	e.attemptedAt = now
	e.Err = err
	if err != nil {
		e.Stale = true
		klog.V(2).InfoS("catalog refresh failed, keeping the last good catalog", "provider", name, "err", err)
		return
	}
	e.FetchedAt = now
	e.Stale = false
	e.Offers = offers
	c.version++
	c.merged = c.merged[:0:0]
	names := make([]string, 0, len(c.entries))
	for n := range c.entries {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		c.merged = append(c.merged, c.entries[n].Offers...)
	}
}

// Status returns each provider's catalog state (offers not copied).
func (c *Catalog) Status() map[string]ProviderCatalog {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make(map[string]ProviderCatalog, len(c.entries))
	for n, e := range c.entries {
		out[n] = ProviderCatalog{FetchedAt: e.FetchedAt, Stale: e.Stale, Err: e.Err, Offers: e.Offers}
	}
	return out
}

// NextRefresh is when the oldest provider catalog is due again.
func (c *Catalog) NextRefresh() time.Time {
	c.mu.RLock()
	defer c.mu.RUnlock()
	next := c.clock.Now().Add(c.interval)
	for _, p := range c.providers {
		e, ok := c.entries[p.Name()]
		if !ok {
			return c.clock.Now()
		}
		if due := e.attemptedAt.Add(c.interval); due.Before(next) {
			next = due
		}
	}
	return next
}

// Run refreshes every provider's catalog once per interval until ctx ends,
// so callers rarely wait on a refresh.
func (c *Catalog) Run(ctx context.Context, tick clock.WithTicker) {
	c.Offers(ctx)
	t := tick.NewTicker(c.interval / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C():
			c.Offers(ctx)
		}
	}
}
