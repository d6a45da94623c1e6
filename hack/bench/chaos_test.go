package main

import (
	"testing"
	"time"
)

// TestChaosSmall is the chaos run at CI size: 60 requests (VMs on Lambda
// and Paperspace, containers on RunPod, all on-demand), two leader-elected
// replicas, the leader SIGKILLed 5 times at random moments and restarted,
// and every 2 s a running machine taken back by its provider (Lambda
// preempted, RunPod EXITED, Paperspace off). Afterwards every request is
// Ready on a live machine, no live machine is unclaimed, no request has
// two, no name was launched twice, and the operator recorded the
// interruptions.
func TestChaosSmall(t *testing.T) {
	bin := operatorBin(t)
	seed := testSeed(t)
	res := runChaos(t.Context(), bin, chaosConfig{Requests: 60, Kills: 5,
		InterruptEvery: 2 * time.Second, KillGap: [2]time.Duration{2 * time.Second, 5 * time.Second},
		Settle: 3 * time.Minute, Seed: seed, Logf: testLogf(t)})
	t.Logf("seed %d\n%s", seed, res.table())
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if res.Kills != 5 {
		t.Fatalf("%d leader kills, want 5", res.Kills)
	}
	if res.takenBack() == 0 {
		t.Fatal("no machine was taken back: the chaos run did not exercise interruptions")
	}
}
