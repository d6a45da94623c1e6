package selector

import (
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

// DefaultUnavailableTTL is how long an offering stays unavailable after a
// failed launch unless the cache is configured otherwise.
const DefaultUnavailableTTL = 3 * time.Minute

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
