package controller

import (
	"sync"
	"testing"
	"time"

	clocktesting "k8s.io/utils/clock/testing"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

func TestUnavailableCache(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(start)
	c := NewUnavailableCache(clk, time.Minute)
	a := providers.OfferingKey{Provider: "runpod", InstanceType: "a", Region: "US-CA-2", Capacity: providers.Spot}
	b := providers.OfferingKey{Provider: "runpod", InstanceType: "b", Region: "US-CA-2", Capacity: providers.Spot}

	if c.IsUnavailable(a) || c.Len() != 0 {
		t.Fatalf("new cache: IsUnavailable = %v, Len = %d; want false, 0", c.IsUnavailable(a), c.Len())
	}
	if next, ok := c.NextExpiry(); ok {
		t.Errorf("NextExpiry() = %v, true on an empty cache", next)
	}

	c.Mark(a, "insufficient capacity")
	clk.SetTime(start.Add(20 * time.Second))
	c.Mark(b, "quota")
	if !c.IsUnavailable(a) || !c.IsUnavailable(b) || c.Len() != 2 {
		t.Errorf("after Mark: IsUnavailable(a, b) = %v, %v, Len = %d; want true, true, 2", c.IsUnavailable(a), c.IsUnavailable(b), c.Len())
	}
	if reason, ok := c.Reason(b); !ok || reason != "quota" {
		t.Errorf("Reason(b) = %q, %v; want quota, true", reason, ok)
	}
	if next, ok := c.NextExpiry(); !ok || !next.Equal(start.Add(time.Minute)) {
		t.Errorf("NextExpiry() = %v, %v; want %v", next, ok, start.Add(time.Minute))
	}

	clk.SetTime(start.Add(time.Minute - time.Nanosecond))
	if !c.IsUnavailable(a) {
		t.Error("a is available before its TTL ran out")
	}
	clk.SetTime(start.Add(time.Minute))
	if c.IsUnavailable(a) {
		t.Error("a is still unavailable when its TTL ran out")
	}
	if _, ok := c.Reason(a); ok {
		t.Error("Reason(a) found an expired entry")
	}
	if c.Len() != 1 {
		t.Errorf("Len() = %d after a expired, want 1", c.Len())
	}
	if next, ok := c.NextExpiry(); !ok || !next.Equal(start.Add(80*time.Second)) {
		t.Errorf("NextExpiry() = %v, %v; want %v", next, ok, start.Add(80*time.Second))
	}

	// Marking again restarts the TTL.
	clk.SetTime(start.Add(70 * time.Second))
	c.Mark(b, "capacity")
	clk.SetTime(start.Add(2 * time.Minute))
	if reason, ok := c.Reason(b); !ok || reason != "capacity" {
		t.Errorf("Reason(b) = %q, %v after a new Mark; want capacity, true", reason, ok)
	}
	clk.SetTime(start.Add(130 * time.Second))
	if c.Len() != 0 || c.IsUnavailable(b) {
		t.Errorf("after every TTL ran out: Len = %d, IsUnavailable(b) = %v; want 0, false", c.Len(), c.IsUnavailable(b))
	}
	if _, ok := c.NextExpiry(); ok {
		t.Error("NextExpiry() found an entry after every TTL ran out")
	}
}

func TestUnavailableCacheDefaultTTL(t *testing.T) {
	start := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(start)
	c := NewUnavailableCache(clk, 0)
	key := providers.OfferingKey{Provider: "lambdalabs", InstanceType: "gpu_1x_h100", Region: "us-west-1", Capacity: providers.OnDemand}
	c.Mark(key, "capacity")
	if next, ok := c.NextExpiry(); !ok || !next.Equal(start.Add(3*time.Minute)) {
		t.Errorf("NextExpiry() = %v, %v; want %v", next, ok, start.Add(3*time.Minute))
	}
}

func TestUnavailableCacheRealClock(t *testing.T) {
	c := NewUnavailableCache(nil, time.Hour)
	key := providers.OfferingKey{Provider: "runpod", InstanceType: "a", Region: "US-CA-2", Capacity: providers.Spot}
	c.Mark(key, "capacity")
	if !c.IsUnavailable(key) {
		t.Error("IsUnavailable() = false right after Mark")
	}
	if next, ok := c.NextExpiry(); !ok || time.Until(next) <= 59*time.Minute {
		t.Errorf("NextExpiry() = %v, %v; want about an hour from now", next, ok)
	}
}

func TestUnavailableCacheConcurrent(t *testing.T) {
	clk := clocktesting.NewFakePassiveClock(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	c := NewUnavailableCache(clk, time.Minute)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				key := providers.OfferingKey{Provider: "runpod", InstanceType: string(rune('a' + g)), Region: string(rune('a' + i%10))}
				c.Mark(key, "capacity")
				c.IsUnavailable(key)
				c.Keys()
				c.Len()
				c.NextExpiry()
			}
		})
	}
	wg.Wait()
	if got := c.Len(); got != 80 {
		t.Errorf("Len() = %d, want 80", got)
	}
}
