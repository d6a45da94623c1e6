package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// chaosConfig sizes a chaos run.
type chaosConfig struct {
	Requests int
	Kills    int
	// InterruptEvery is how often a provider takes back one running machine
	// (chosen at random among all providers' running machines).
	InterruptEvery time.Duration
	// KillGap bounds the random time between two leader kills.
	KillGap [2]time.Duration
	// Settle is the deadline for everything to be Ready and clean after
	// the last kill.
	Settle time.Duration
	Seed   int64
	Logf   func(string, ...any)
}

// chaosResult is what a chaos run saw.
type chaosResult struct {
	Seed                 int64
	Requests, Containers int
	Kills                int
	UnexpectedExits      int // replicas that exited on their own (and were restarted)
	// TakenBack counts machines the providers took back, by provider: Lambda
	// preempted, Paperspace off, RunPod EXITED (none sells spot: this is how
	// each shows an on-demand machine going away under you).
	TakenBack        map[string]int
	Interruptions    int // sum of status.interruptions
	Launches         int
	Dups             []string
	Lost             []string
	Leaked           []string
	Doubled          []string
	ChaosTime        time.Duration
	SettleTime       time.Duration
	Counters         map[string]cloudsim.Counters
	FinalMachineLive int
	Err              error
}

func (r *chaosResult) summary() string {
	return fmt.Sprintf("%d requests (%d containers), %d leader kills, %d machines taken back (%s), %d interruptions recorded: %d lost, %d leaked, %d with two live instances, %d names launched twice",
		r.Requests, r.Containers, r.Kills, r.takenBack(), r.takenBackBy(), r.Interruptions, len(r.Lost), len(r.Leaked), len(r.Doubled), len(r.Dups))
}

func (r *chaosResult) takenBack() int {
	n := 0
	for _, v := range r.TakenBack {
		n += v
	}
	return n
}

// takenBackBy says how many machines each provider took back, and how.
func (r *chaosResult) takenBackBy() string {
	how := map[string]string{providers.LambdaLabs: "Lambda preempted", providers.RunPod: "RunPod EXITED", providers.Paperspace: "Paperspace off"}
	parts := make([]string, 0, len(providerNames))
	for _, p := range providerNames {
		parts = append(parts, fmt.Sprintf("%s %d", how[p], r.TakenBack[p]))
	}
	return strings.Join(parts, ", ")
}

func (r *chaosResult) table() string {
	var b strings.Builder
	if r.Err != nil {
		fmt.Fprintf(&b, "**Run failed:** `%s`\n\n", firstLine(r.Err.Error()))
	}
	b.WriteString("| measure | value |\n|---|---|\n")
	fmt.Fprintf(&b, "| seed (replay with `-seed`) | %d |\n", r.Seed)
	fmt.Fprintf(&b, "| requests (VM / container) | %d (%d / %d) |\n", r.Requests, r.Requests-r.Containers, r.Containers)
	fmt.Fprintf(&b, "| leader kills (SIGKILL, then restart) | %d |\n", r.Kills)
	fmt.Fprintf(&b, "| replicas that exited on their own (restarted) | %d |\n", r.UnexpectedExits)
	fmt.Fprintf(&b, "| machines taken back by providers (%s) / interruptions recorded in status | %d / %d |\n", r.takenBackBy(), r.takenBack(), r.Interruptions)
	fmt.Fprintf(&b, "| chaos phase / settle (all Ready, no orphan) | %s / %s |\n", dur(r.ChaosTime), dur(r.SettleTime))
	fmt.Fprintf(&b, "| launches (sum of Launches) | %d |\n", r.Launches)
	fmt.Fprintf(&b, "| live instances at the end | %d |\n", r.FinalMachineLive)
	fmt.Fprintf(&b, "| lost (not Ready, or its machine not live) | %d %s |\n", len(r.Lost), sample(r.Lost))
	fmt.Fprintf(&b, "| leaked (live, claimed by no request) | %d %s |\n", len(r.Leaked), sample(r.Leaked))
	fmt.Fprintf(&b, "| requests with two live instances | %d %s |\n", len(r.Doubled), sample(r.Doubled))
	fmt.Fprintf(&b, "| names launched more than once | %d %s |\n", len(r.Dups), sample(r.Dups))
	b.WriteString(countersTable(r.Counters))
	return b.String()
}

func sample(s []string) string {
	if len(s) == 0 {
		return ""
	}
	if len(s) > 5 {
		return "(" + strings.Join(s[:5], ", ") + ", ...)"
	}
	return "(" + strings.Join(s, ", ") + ")"
}

// countersTable renders the simulators' counters.
func countersTable(cs map[string]cloudsim.Counters) string {
	var b strings.Builder
	b.WriteString("\n| provider | launches | 429 sent | injected 5xx | calls by endpoint |\n|---|---|---|---|---|\n")
	for _, p := range providerNames {
		c, ok := cs[p]
		if !ok {
			continue
		}
		launches := 0
		for _, n := range c.Launches {
			launches += n
		}
		eps := make([]string, 0, len(c.Requests))
		for ep, n := range c.Requests {
			eps = append(eps, fmt.Sprintf("`%s` %d", ep, n))
		}
		sort.Strings(eps)
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %s |\n", p, launches, c.RateLimited, c.Injected, strings.Join(eps, "; "))
	}
	return b.String()
}

// replica is one operator replica slot; its process is replaced on restart.
type replica struct {
	name string
	op   *operator
	logs []*lockedBuffer // every process's log, for the panic check
}

// runChaos runs two leader-elected replicas through leader kills and
// providers taking machines back, and checks that nothing was lost, leaked
// or doubled. The requests are the scale run's (VMs on Lambda and
// Paperspace, containers on RunPod, all on-demand); every InterruptEvery a
// random running machine of any provider is taken back the way that
// provider shows it: Lambda reports the instance preempted, RunPod stops
// the pod (EXITED), Paperspace turns the machine off.
func runChaos(ctx context.Context, bin string, cfg chaosConfig) (res chaosResult) {
	logf := cfg.Logf
	res.Requests, res.Seed = cfg.Requests, cfg.Seed
	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), 7))
	logf("chaos: %d requests, %d leader kills, seed %d", cfg.Requests, cfg.Kills, cfg.Seed)
	c, err := startCluster(ctx)
	if err != nil {
		res.Err = err
		return res
	}
	defer c.stop()
	s := startSims(simConfigs(benchCatalog(), simKeys, cloudsim.Faults{}, uint64(cfg.Seed)))
	defer s.close()
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	startNodeRegistrar(actx, c, s, 16)

	// --unavailable-ttl 10s: an interruption marks the machine's offering
	// unavailable; each request kind has a second offering (the A6000 VM on
	// Paperspace, the RTX 4090 container in a second data center, the A4000
	// VM in a second region) but a request interrupted twice in a row waits
	// out the TTL before relaunching; at the default 3 minutes that wait
	// alone would use up the settle time.
	args := append(append(c.operatorArgs(),
		"--leader-elect=true", "--lease-duration", "4s", "--renew-deadline", "3s", "--retry-period", "500ms",
		"--gc-interval", "2s", "--gc-grace", "10s", "--poll-interval", "1s", "--unavailable-ttl", "10s",
		"--kube-api-qps", fmt.Sprint(kubeQPS), "--kube-api-burst", fmt.Sprint(kubeBurst)), s.operatorArgs()...)
	start := func(r *replica) error {
		op, err := startOperator(bin, args, keyEnv(simKeys))
		if err != nil {
			return err
		}
		r.op = op
		r.logs = append(r.logs, op.logs)
		return nil
	}
	replicas := []*replica{{name: "a"}, {name: "b"}}
	for _, r := range replicas {
		if err := start(r); err != nil {
			res.Err = err
			return res
		}
	}
	defer func() {
		for _, r := range replicas {
			r.op.stop(5 * time.Second)
		}
		for _, r := range replicas {
			for _, l := range r.logs {
				if out := l.String(); containsPanic(out) {
					res.Err = errors.Join(res.Err, fmt.Errorf("replica %s panicked:\n%s", r.name, tail(out, 40)))
				}
			}
		}
	}()

	w, err := watchRequests(actx, c.client)
	if err != nil {
		res.Err = err
		return res
	}
	for i := range cfg.Requests {
		if benchSpec(i).Container != nil {
			res.Containers++
		}
	}
	res.TakenBack = map[string]int{}
	t0 := time.Now()
	if err := createRequests(ctx, c.client, cfg.Requests, 8, benchRequest); err != nil {
		res.Err = err
		return res
	}

	// leader finds the replica holding the Lease, by the identity it logged.
	leader := func() *replica {
		l, err := c.kube.CoordinationV1().Leases(operatorNamespace).Get(ctx, "gpu-operator", metav1.GetOptions{})
		if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
			return nil
		}
		needle := fmt.Sprintf("identity=%q", *l.Spec.HolderIdentity)
		for _, r := range replicas {
			if r.op.running() && strings.Contains(r.op.logs.String(), needle) {
				return r
			}
		}
		return nil
	}
	gap := func() time.Duration {
		lo, hi := cfg.KillGap[0], cfg.KillGap[1]
		return lo + time.Duration(rng.Int64N(int64(hi-lo)+1))
	}
	interrupt := time.NewTicker(cfg.InterruptEvery)
	defer interrupt.Stop()
	check := time.NewTicker(250 * time.Millisecond)
	defer check.Stop()
	killAt := time.Now().Add(gap())
	for res.Kills < cfg.Kills {
		select {
		case <-ctx.Done():
			res.Err = ctx.Err()
			return res
		case <-interrupt.C:
			var cands []cloudsim.Machine
			for _, m := range s.machines() {
				if m.Live && m.Active && !m.Preempted {
					cands = append(cands, m)
				}
			}
			if len(cands) > 0 {
				m := cands[rng.IntN(len(cands))]
				if err := s.byName[m.Provider].Preempt(m.ID); err == nil {
					res.TakenBack[m.Provider]++
				}
			}
		case <-check.C:
			for _, r := range replicas {
				if !r.op.running() {
					res.UnexpectedExits++
					logf("  replica %s exited on its own (%v); restarting:\n%s", r.name, r.op.waitErr, tail(r.op.logs.String(), 5))
					if err := start(r); err != nil {
						res.Err = err
						return res
					}
				}
			}
			if time.Now().Before(killAt) {
				continue
			}
			r := leader()
			if r == nil {
				continue // no live leader yet: try again at the next check
			}
			r.op.kill()
			res.Kills++
			logf("  kill %d/%d: SIGKILLed leader replica %s (pid %d) at %s; %d/%d Ready", res.Kills, cfg.Kills, r.name, r.op.pid(),
				time.Since(t0).Round(time.Millisecond), w.countReady(), cfg.Requests)
			if err := start(r); err != nil {
				res.Err = err
				return res
			}
			killAt = time.Now().Add(gap())
		}
	}
	res.ChaosTime = time.Since(t0)
	interrupt.Stop()

	// Settle: everything Ready, then no orphan and no doubled request.
	t1 := time.Now()
	if err := w.waitAllReady(ctx, cfg.Requests, cfg.Settle, logf); err != nil {
		res.Err = err
	}
	var lost, leaked, doubled []string
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		lost, leaked, doubled = audit(w.all(), s.machines())
		return len(lost)+len(leaked)+len(doubled) == 0, nil
	})
	res.SettleTime = time.Since(t1)
	res.Lost, res.Leaked, res.Doubled = lost, leaked, doubled
	for _, r := range w.all() {
		res.Interruptions += int(r.Status.Interruptions)
	}
	for _, m := range s.machines() {
		if m.Live {
			res.FinalMachineLive++
		}
	}
	res.Counters = s.counters()
	res.Launches, res.Dups = launchStats(res.Counters)
	// Machines were taken back from running requests: the operator must
	// have noticed (an interruption in status) and relaunched them.
	unnoticed := res.takenBack() > 0 && res.Interruptions == 0
	if err != nil || len(res.Dups) > 0 || unnoticed {
		res.Err = errors.Join(res.Err, fmt.Errorf("chaos: %s", res.summary()))
	}
	logf("chaos: %s", res.summary())
	return res
}

// audit compares the requests with the simulators' machines: lost requests
// (not Ready, or their machine not live), leaked machines (live, claimed
// by no request) and requests with more than one live machine.
func audit(reqs []tgpv1.GPURequest, machines []cloudsim.Machine) (lost, leaked, doubled []string) {
	live := map[string]cloudsim.Machine{}
	perRequest := map[string][]string{}
	for _, m := range machines {
		if !m.Live {
			continue
		}
		live[m.Name] = m
		if i := strings.LastIndexByte(m.Name, '-'); i > 0 {
			perRequest[m.Name[:i]] = append(perRequest[m.Name[:i]], m.Provider+"/"+m.Name)
		}
	}
	claimed := map[string]bool{}
	for _, r := range reqs {
		name := r.Status.MachineName
		claimed[name] = true
		m, ok := live[name]
		switch {
		case r.Status.Phase != tgpv1.PhaseReady:
			lost = append(lost, fmt.Sprintf("%s (%s)", r.Name, r.Status.Phase))
		case !ok || !m.Active:
			lost = append(lost, fmt.Sprintf("%s (machine %q not running)", r.Name, name))
		}
		if i := strings.LastIndexByte(name, '-'); i > 0 && len(perRequest[name[:i]]) > 1 {
			doubled = append(doubled, fmt.Sprintf("%s: %s", r.Name, strings.Join(perRequest[name[:i]], ",")))
		}
	}
	for name, m := range live {
		if !claimed[name] {
			leaked = append(leaked, m.Provider+"/"+name)
		}
	}
	sort.Strings(lost)
	sort.Strings(leaked)
	sort.Strings(doubled)
	return lost, leaked, doubled
}
