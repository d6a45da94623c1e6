package main

import (
	"flag"
	"testing"
	"time"
)

// seedFlag replays a chaos, fault or random-input run:
//
//	go test ./hack/bench/ -run TestChaosSmall -seed 1733040000000000000
//
// Every such test prints the seed it used.
var seedFlag = flag.Int64("seed", 0, "seed for the chaos, fault and random-input tests (0: from the clock)")

// testSeed returns the -seed flag, or a clock-derived seed, and logs it.
func testSeed(t *testing.T) int64 {
	t.Helper()
	seed := *seedFlag
	if seed == 0 {
		seed = time.Now().UnixNano()
	}
	t.Logf("seed %d (replay with -seed %d)", seed, seed)
	return seed
}
