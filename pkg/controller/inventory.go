package controller

import (
	"context"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

// Inventory is the shared instance poller: one list call per provider per
// poll interval feeds every GPURequest, instead of a GET per request. When an
// instance changes state or vanishes, OnChange receives its machine name so
// the owning request is enqueued.
type Inventory struct {
	providers map[string]providers.Provider
	interval  time.Duration
	clock     clock.WithTicker
	metrics   *Metrics

	// OnChange is called (outside the lock) with the name of every instance
	// whose normalized state changed, appeared or vanished in a poll.
	OnChange func(provider, name string)

	mu    sync.RWMutex
	snaps map[string]*snapshot
}

type snapshot struct {
	// listedAt is when the last successful list call started: anything
	// launched before it and absent from it is gone.
	listedAt time.Time
	byName   map[string]providers.Instance
	// byID maps instance ids to machine names, and byRequest a request's
	// machine-name prefix (everything before the attempt number) to its
	// machine names. Both are built on first use after each list (they
	// serve ownership checks, termination and interruptions, not every
	// sync), so a poll allocates one map, not three.
	byID      map[string]string
	byRequest map[string][]string
	// firstSeen is when the poller first saw each instance id.
	firstSeen map[string]time.Time
	synced    chan struct{}
	err       error
}

// NewInventory polls the given providers every interval.
func NewInventory(ps map[string]providers.Provider, interval time.Duration, clk clock.WithTicker, m *Metrics) *Inventory {
	inv := &Inventory{providers: ps, interval: interval, clock: clk, metrics: m, snaps: map[string]*snapshot{}}
	for name := range ps {
		inv.snaps[name] = &snapshot{synced: make(chan struct{})}
	}
	return inv
}

// Run polls every provider until ctx ends.
func (inv *Inventory) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for name, p := range inv.providers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			inv.pollLoop(ctx, name, p)
		}()
	}
	wg.Wait()
}

func (inv *Inventory) pollLoop(ctx context.Context, name string, p providers.Provider) {
	t := inv.clock.NewTicker(inv.interval)
	defer t.Stop()
	for {
		inv.Poll(ctx, name, p)
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

// Poll lists one provider's instances now and reports changes.
func (inv *Inventory) Poll(ctx context.Context, name string, p providers.Provider) {
	started := inv.clock.Now()
	list, err := p.Instances(ctx)
	inv.metrics.observeCall(name, "list_instances", err)
	if err != nil {
		klog.V(2).InfoS("listing instances failed", "provider", name, "err", err)
		inv.mu.Lock()
		inv.snaps[name].err = err
		inv.mu.Unlock()
		return
	}
	byName := make(map[string]providers.Instance, len(list))
	for _, in := range list {
		byName[in.Name] = in
	}
	var changed []string
	inv.mu.Lock()
	s := inv.snaps[name]
	old := s.byName
	seen := make(map[string]time.Time, len(list))
	for n, in := range byName {
		if prev, ok := old[n]; !ok || prev.State != in.State || prev.ID != in.ID || prev.PublicIP != in.PublicIP {
			changed = append(changed, n)
		}
		if t, ok := s.firstSeen[in.ID]; ok {
			seen[in.ID] = t
		} else {
			seen[in.ID] = started
		}
	}
	for n := range old {
		if _, ok := byName[n]; !ok {
			changed = append(changed, n)
		}
	}
	s.byName, s.byID, s.byRequest, s.firstSeen, s.listedAt, s.err = byName, nil, nil, seen, started, nil
	select {
	case <-s.synced:
	default:
		close(s.synced)
	}
	inv.mu.Unlock()
	if inv.OnChange != nil {
		for _, n := range changed {
			inv.OnChange(name, n)
		}
	}
}

// indexLocked builds byID and byRequest from byName if this list has not
// yet; the caller holds inv.mu for writing.
func (s *snapshot) indexLocked() {
	if s.byID != nil || s.byName == nil {
		return
	}
	s.byID = make(map[string]string, len(s.byName))
	s.byRequest = make(map[string][]string, len(s.byName))
	for name, in := range s.byName {
		s.byID[in.ID] = name
		if i := strings.LastIndexByte(name, '-'); i > 0 {
			s.byRequest[name[:i+1]] = append(s.byRequest[name[:i+1]], name)
		}
	}
}

// WaitForSync blocks until every provider has been listed once or ctx ends;
// it reports whether all were.
func (inv *Inventory) WaitForSync(ctx context.Context) bool {
	for _, s := range inv.snaps {
		select {
		case <-s.synced:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// Lookup finds an instance by machine name in the provider's latest list.
// listedAt is when that list started (zero: never listed), so a caller can
// tell "absent" from "not listed since it launched".
func (inv *Inventory) Lookup(provider, name string) (in providers.Instance, found bool, listedAt time.Time) {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	s, ok := inv.snaps[provider]
	if !ok {
		return providers.Instance{}, false, time.Time{}
	}
	in, found = s.byName[name]
	return in, found, s.listedAt
}

// ByID finds an instance by its provider id in the provider's latest list.
func (inv *Inventory) ByID(provider, id string) (providers.Instance, bool) {
	inv.mu.Lock() // may build the index
	defer inv.mu.Unlock()
	s, ok := inv.snaps[provider]
	if !ok {
		return providers.Instance{}, false
	}
	s.indexLocked()
	name, ok := s.byID[id]
	if !ok {
		return providers.Instance{}, false
	}
	in, ok := s.byName[name]
	return in, ok
}

// ForRequest returns the instances of every provider's latest list whose
// machine names are prefix followed by an attempt number (prefix ends in
// "-": see machinePrefix).
func (inv *Inventory) ForRequest(prefix string) []providers.Instance {
	inv.mu.Lock() // may build the index
	defer inv.mu.Unlock()
	var out []providers.Instance
	for provider, s := range inv.snaps {
		s.indexLocked()
		for _, n := range s.byRequest[prefix] {
			in := s.byName[n]
			if in.Provider == "" {
				in.Provider = provider
			}
			out = append(out, in)
		}
	}
	return out
}

// ListedAt is when the provider's latest successful list started (zero:
// never listed by this process).
func (inv *Inventory) ListedAt(provider string) time.Time {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	if s, ok := inv.snaps[provider]; ok {
		return s.listedAt
	}
	return time.Time{}
}

// Orphan is an instance that no GPURequest claims.
type Orphan struct {
	providers.Instance
	FirstSeen time.Time
}

// Unclaimed returns the live instances of every provider whose names
// claimed() rejects and that were first seen before cutoff.
func (inv *Inventory) Unclaimed(claimed func(name string) bool, cutoff time.Time) []Orphan {
	inv.mu.RLock()
	defer inv.mu.RUnlock()
	var out []Orphan
	for _, s := range inv.snaps {
		for n, in := range s.byName {
			if !in.State.Alive() || in.State == providers.StateTerminating || claimed(n) {
				continue
			}
			if first := s.firstSeen[in.ID]; first.Before(cutoff) {
				out = append(out, Orphan{Instance: in, FirstSeen: first})
			}
		}
	}
	return out
}
