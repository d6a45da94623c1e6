package controller

import (
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/selector"
)

// DefaultUnavailableTTL is how long an offering stays unavailable after a
// failed launch unless the cache is configured otherwise.
const DefaultUnavailableTTL = 3 * time.Minute

// Offer availability lives here, in one place owned by the controller:
// offerings that recently failed to launch (UnavailableCache, with a TTL)
// and providers blocked for their credentials (blockProvider). Selection is
// handed the result (unavailableNow) and keeps no state of its own; a sync's
// own skips (providers that rate limited it) are a local of provision.

// UnavailableCache remembers offerings that recently failed to launch
// (insufficient capacity, quota, a provider 5xx) so that selection skips them
// until their TTL runs out. Expired entries are pruned lazily. It is safe for
// concurrent use.
type UnavailableCache struct {
	clock clock.PassiveClock
	ttl   time.Duration

	mu      sync.Mutex
	entries map[providers.OfferingKey]unavailableEntry
}

type unavailableEntry struct {
	until  time.Time
	reason string
}

// NewUnavailableCache returns an empty cache whose entries live for ttl, or
// DefaultUnavailableTTL when ttl is not positive, as measured by clk, or by
// the system clock when clk is nil.
func NewUnavailableCache(clk clock.PassiveClock, ttl time.Duration) *UnavailableCache {
	if clk == nil {
		clk = clock.RealClock{}
	}
	if ttl <= 0 {
		ttl = DefaultUnavailableTTL
	}
	return &UnavailableCache{clock: clk, ttl: ttl, entries: make(map[providers.OfferingKey]unavailableEntry)}
}

// Mark makes key unavailable for the TTL from now, replacing any earlier
// mark; reason says why, for messages.
func (c *UnavailableCache) Mark(key providers.OfferingKey, reason string) {
	now := c.clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pruneLocked(now)
	c.entries[key] = unavailableEntry{until: now.Add(c.ttl), reason: reason}
}

// IsUnavailable reports whether key is marked and its TTL has not run out.
func (c *UnavailableCache) IsUnavailable(key providers.OfferingKey) bool {
	_, ok := c.Reason(key)
	return ok
}

// Keys returns the offerings currently unavailable, in no particular
// order, for Unavailable.Offerings; nil when there are none.
func (c *UnavailableCache) Keys() []providers.OfferingKey {
	now := c.clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pruneLocked(now)
	if len(c.entries) == 0 {
		return nil
	}
	keys := make([]providers.OfferingKey, 0, len(c.entries))
	for k := range c.entries {
		keys = append(keys, k)
	}
	return keys
}

// Reason returns why key is unavailable, if it is.
func (c *UnavailableCache) Reason(key providers.OfferingKey) (string, bool) {
	now := c.clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		return "", false
	}
	if !now.Before(e.until) {
		delete(c.entries, key)
		return "", false
	}
	return e.reason, true
}

// Len returns the number of offerings currently unavailable.
func (c *UnavailableCache) Len() int {
	now := c.clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pruneLocked(now)
	return len(c.entries)
}

// NextExpiry returns when the next offering becomes available again, so a
// controller can requeue then; false when none is unavailable.
func (c *UnavailableCache) NextExpiry() (time.Time, bool) {
	now := c.clock.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pruneLocked(now)
	var next time.Time
	for _, e := range c.entries {
		if next.IsZero() || e.until.Before(next) {
			next = e.until
		}
	}
	return next, !next.IsZero()
}

// pruneLocked drops the entries that have expired at now.
func (c *UnavailableCache) pruneLocked(now time.Time) {
	for k, e := range c.entries {
		if !now.Before(e.until) {
			delete(c.entries, k)
		}
	}
}

// providerBlocked and blockProvider keep a provider whose credentials failed
// out of selection until the block expires (or its Secret changes).
func (c *Controller) blockProvider(provider string, d time.Duration) {
	c.blockMu.Lock()
	defer c.blockMu.Unlock()
	if c.blocked == nil {
		c.blocked = map[string]time.Time{}
	}
	c.blocked[provider] = c.clock.Now().Add(d)
}

// unavailableNow is what selection passes over right now: the offerings that
// recently failed to launch and the providers blocked for their credentials.
func (c *Controller) unavailableNow() selector.Unavailable {
	u := selector.Unavailable{Offerings: c.unavailable.Keys()}
	now := c.clock.Now()
	c.blockMu.Lock()
	defer c.blockMu.Unlock()
	for provider, until := range c.blocked {
		if now.Before(until) {
			u.Providers = append(u.Providers, provider)
		}
	}
	return u
}

func (c *Controller) isUnavailable(key providers.OfferingKey) bool {
	c.blockMu.Lock()
	until, ok := c.blocked[key.Provider]
	c.blockMu.Unlock()
	if ok && c.clock.Now().Before(until) {
		return true
	}
	return c.unavailable.IsUnavailable(key)
}

// UnblockProviders lifts authentication blocks when credentials change, and
// wakes the requests that were waiting for an offer.
func (c *Controller) UnblockProviders() {
	c.blockMu.Lock()
	c.blocked = nil
	c.blockMu.Unlock()
	c.enqueuePending()
}
