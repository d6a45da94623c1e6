package main

import (
	"testing"
	"time"
)

// TestFaultsSmall is the provider fault run at CI size: 60 requests while
// every provider answers 10% 500s, 5% 429s with Retry-After and 200 ms of
// latency and Lambda is down for 20 s; then 6 requests pinned to Lambda.
func TestFaultsSmall(t *testing.T) {
	bin := operatorBin(t)
	seed := uint64(testSeed(t))
	res := runFaults(t.Context(), bin, faultConfig{Requests: 60, Pinned: 6, Down: 20 * time.Second,
		Settle: 3 * time.Minute, Seed: seed, Logf: testLogf(t)})
	t.Logf("seed %d\n%s", seed, res.table())
	if res.Err != nil {
		t.Fatal(res.Err)
	}
}
