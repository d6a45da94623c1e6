// Command bench is the scale and reliability harness of gpu-operator. It
// runs the real operator binary (built into a temporary directory, a
// separate process) against a real etcd and kube-apiserver and the
// provider simulators (in this process, instant boot), and measures:
//
//   - scale: N GPURequests created at once (-n 100,1000,10000), a third
//     each A6000 VMs (Lambda), RTX 4090 containers (RunPod) and A4000 VMs
//     (Paperspace), all on-demand: wall time until all are Ready against a
//     floor of the unavoidable API writes at the same client QPS, provider
//     API calls per endpoint, launches, and the operator's peak RSS and CPU;
//   - chaos (-chaos): two leader-elected replicas, the leader SIGKILLed at
//     random moments, running machines taken back by their providers as
//     each does it (Lambda preempted, RunPod EXITED, Paperspace off; none
//     sells spot); nothing lost, leaked or launched twice;
//   - faults (-faults): 5xx, 429 with Retry-After and latency on every
//     provider and one provider down for a while; everything still Ready,
//     no call inside a Retry-After window, no launch on the down provider;
//   - template bombs (-bomb): one tenant's hostile bootstrap templates and
//     another tenant's plain requests at once, against the same without
//     bombs: time to refuse each bomb, the other tenant's time to Ready,
//     the operator's peak RSS and CPU, and SIGTERM to exit.
//
// Usage:
//
//	go run ./hack/bench -write BENCHMARKS.md
//	go run ./hack/bench -n 100 -chaos=false -faults=false -bomb=false
//	go run ./hack/bench -n= -chaos=false -faults=false -write-bomb BENCHMARKS.md
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	var (
		sizes    = flag.String("n", "100,1000,10000", "Comma-separated numbers of GPURequests for the scale runs (empty: none).")
		poll     = flag.Duration("poll-interval", 2*time.Second, "The operator's --poll-interval in the scale runs.")
		chaos    = flag.Bool("chaos", true, "Run the full-size chaos run (300 requests, 20 leader kills).")
		faults   = flag.Bool("faults", true, "Run the full-size provider fault run (300 requests, one provider down for 2 minutes).")
		write    = flag.String("write", "", "Write the results as Markdown to this file (BENCHMARKS.md).")
		requests = flag.Int("chaos-requests", 300, "Requests in the chaos and fault runs.")
		kills    = flag.Int("kills", 20, "Leader kills in the chaos run.")
		down     = flag.Duration("down", 2*time.Minute, "How long one provider is down in the fault run.")
		bomb     = flag.Bool("bomb", true, "Run the template-bomb run and its baseline without bombs.")
		bombs    = flag.Int("bombs", 50, "Bomb requests in the template-bomb run.")
		bombNorm = flag.Int("bomb-normal", 20, "Plain requests in another namespace, created with the bombs.")
		bombHold = flag.Duration("bomb-hold", 70*time.Second, "How long the template-bomb run keeps the operator running after all settled (over a minute: every bomb is retried once).")
		market   = flag.Int("market", 50_000, "Hosts of the Vast.ai marketplace run (0: none).")
		marketF  = flag.String("write-market", "", "Replace only the marketplace section of this file (BENCHMARKS.md) with this run's.")
		bombFile = flag.String("write-bomb", "", "Replace only the template-bomb section of this file (BENCHMARKS.md) with this run's.")
		seed     = flag.Int64("seed", 0, "Seed of the chaos and fault runs (0: from the clock); each run prints its seed, so a run can be replayed.")
	)
	flag.StringVar(&logDir, "logs", "", "Keep each operator process's log in this directory.")
	flag.StringVar(&cpuProfile, "cpu-profile", "", "Save a CPU profile of the operator from the requests' creation on to FILE.<N>.")
	flag.IntVar(&cpuProfileSeconds, "cpu-profile-seconds", 30, "How many seconds the -cpu-profile covers.")
	flag.StringVar(&heapProfile, "heap-profile", "", "Save the operator's heap profile when all requests are Ready to FILE.<N>.")
	flag.Parse()
	if *seed == 0 {
		*seed = time.Now().UnixNano()
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
	}
	cmdline := "go run ./hack/bench " + strings.Join(os.Args[1:], " ")

	bin, err := buildOperator()
	if err != nil {
		logf("%v", err)
		os.Exit(1)
	}
	rep := &report{Command: strings.TrimSpace(cmdline), Started: time.Now()}
	failed := false
	for _, s := range strings.Split(*sizes, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			logf("bad -n entry %q", s)
			os.Exit(2)
		}
		res := runScale(ctx, bin, n, *poll, logf)
		rep.Scale = append(rep.Scale, res)
		fmt.Println(res.table())
		if res.Err != nil {
			logf("N=%d: %v", n, res.Err)
			failed = true
		}
	}
	if *chaos {
		res := runChaos(ctx, bin, chaosConfig{Requests: *requests, Kills: *kills,
			InterruptEvery: 3 * time.Second, KillGap: [2]time.Duration{4 * time.Second, 10 * time.Second},
			Settle: 10 * time.Minute, Seed: *seed, Logf: logf})
		rep.Chaos = &res
		fmt.Println(res.table())
		if res.Err != nil {
			logf("chaos: %v", res.Err)
			failed = true
		}
	}
	if *faults {
		res := runFaults(ctx, bin, faultConfig{Requests: *requests, Pinned: *requests / 10, Down: *down,
			Settle: 10 * time.Minute, Seed: uint64(*seed), Logf: logf})
		rep.Faults = &res
		fmt.Println(res.table())
		if res.Err != nil {
			logf("faults: %v", res.Err)
			failed = true
		}
	}
	if *bomb {
		cfg := bombConfig{Bombs: *bombs, Normal: *bombNorm, NodeLabels: 20, Hold: *bombHold,
			Settle: 5 * time.Minute, StopTimeout: 20 * time.Second, Logf: logf}
		br := &bombReport{Command: rep.Command, Started: time.Now()}
		base := cfg
		base.Bombs = 0
		b, a := runBomb(ctx, bin, base), runBomb(ctx, bin, cfg)
		br.Baseline, br.Attack = &b, &a
		rep.Bomb = br
		fmt.Println(br.table())
		for _, r := range []*bombResult{&b, &a} {
			for _, p := range r.problems() {
				logf("bomb (%d bombs): %s", r.Bombs, p)
				failed = true
			}
		}
		if *bombFile != "" {
			if err := writeSection(*bombFile, br.markdown()); err != nil {
				logf("writing %s: %v", *bombFile, err)
				os.Exit(1)
			}
			logf("wrote the template-bomb section of %s", *bombFile)
		}
	}
	if *market > 0 {
		res := runMarket(ctx, *market, logf)
		rep.Market = &res
		fmt.Println(res.markdown())
		if res.Err != nil {
			logf("marketplace: %v", res.Err)
			failed = true
		}
		if *marketF != "" {
			if err := writeSectionAs(*marketF, marketSection, res.markdown()); err != nil {
				logf("writing %s: %v", *marketF, err)
				os.Exit(1)
			}
			logf("wrote the marketplace section of %s", *marketF)
		}
	}
	if *write != "" {
		if err := os.WriteFile(*write, []byte(rep.markdown()), 0o644); err != nil {
			logf("writing %s: %v", *write, err)
			os.Exit(1)
		}
		logf("wrote %s", *write)
	}
	if failed {
		os.Exit(1)
	}
}
