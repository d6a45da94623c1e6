package main

import (
	"testing"
	"time"
)

// TestChaosSmall is the chaos run at CI size: 60 requests (20% RunPod
// spot), two leader-elected replicas, the leader SIGKILLed 5 times at
// random moments and restarted, a spot machine preempted every 2 s.
// Afterwards every request is Ready on a live machine, no live machine is
// unclaimed, no request has two, and no name was launched twice.
func TestChaosSmall(t *testing.T) {
	bin := operatorBin(t)
	seed := testSeed(t)
	res := runChaos(t.Context(), bin, chaosConfig{Requests: 60, Kills: 5, SpotShare: 0.2,
		PreemptEvery: 2 * time.Second, KillGap: [2]time.Duration{2 * time.Second, 5 * time.Second},
		Settle: 3 * time.Minute, Seed: seed, Logf: testLogf(t)})
	t.Logf("seed %d\n%s", seed, res.table())
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if res.Kills != 5 {
		t.Fatalf("%d leader kills, want 5", res.Kills)
	}
}
