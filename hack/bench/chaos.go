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
	"k8s.io/client-go/kubernetes"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// chaosConfig sizes a chaos run.
type chaosConfig struct {
	Requests     int
	Kills        int
	SpotShare    float64
	PreemptEvery time.Duration
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
	Requests, Spot   int
	Kills            int
	UnexpectedExits  int // replicas that exited on their own (and were restarted)
	Preemptions      int
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
	return fmt.Sprintf("%d requests (%d spot), %d leader kills, %d preemptions: %d lost, %d leaked, %d with two live instances, %d names launched twice",
		r.Requests, r.Spot, r.Kills, r.Preemptions, len(r.Lost), len(r.Leaked), len(r.Doubled), len(r.Dups))
}

func (r *chaosResult) table() string {
	var b strings.Builder
	if r.Err != nil {
		fmt.Fprintf(&b, "**Run failed:** `%s`\n\n", firstLine(r.Err.Error()))
	}
	b.WriteString("| measure | value |\n|---|---|\n")
	fmt.Fprintf(&b, "| requests (spot) | %d (%d) |\n", r.Requests, r.Spot)
	fmt.Fprintf(&b, "| leader kills (SIGKILL, then restart) | %d |\n", r.Kills)
	fmt.Fprintf(&b, "| replicas that exited on their own (restarted) | %d |\n", r.UnexpectedExits)
	fmt.Fprintf(&b, "| spot preemptions / interruptions recorded in status | %d / %d |\n", r.Preemptions, r.Interruptions)
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

// chaosRequest: every 1/SpotShare-th request is spot, RunPod RTX4090 spot
// only (maxSpotPrice, no maxPrice); the rest cycle through the bench types.
func chaosRequest(spotShare float64) func(int) *tgpv1.GPURequest {
	every := max(1, int(1/spotShare+0.5))
	return func(i int) *tgpv1.GPURequest {
		r := benchRequest(i)
		if i%every == 0 {
			p := 0.30
			r.Spec = tgpv1.GPURequestSpec{GPUType: "RTX4090", GPUCount: 1, SpotInstance: true, MaxSpotPrice: &p}
		}
		return r
	}
}

// replica is one operator replica slot; its process is replaced on restart.
type replica struct {
	name string
	op   *operator
	logs []*lockedBuffer // every process's log, for the panic check
}

// runChaos runs two leader-elected replicas through leader kills and spot
// preemptions and checks that nothing was lost, leaked or doubled.
func runChaos(ctx context.Context, bin string, cfg chaosConfig) (res chaosResult) {
	logf := cfg.Logf
	res.Requests = cfg.Requests
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
	startNodeRegistrar(actx, kubernetes.NewForConfigOrDie(c.configWith(2000, 4000)), s, 16)

	// --unavailable-ttl 10s: the spot requests have one spot offering and
	// no on-demand fallback, and a preemption marks that offering
	// unavailable, so a request preempted near the end of the chaos phase
	// waits out the TTL before relaunching; at the default 3 minutes that
	// wait alone would use up the settle time.
	args := append([]string{"--kubeconfig", c.env.Kubeconfig, "--namespace", operatorNamespace,
		"--leader-elect=true", "--lease-duration", "4s", "--renew-deadline", "3s", "--retry-period", "500ms",
		"--gc-interval", "2s", "--gc-grace", "10s", "--poll-interval", "1s", "--unavailable-ttl", "10s",
		"--kube-api-qps", fmt.Sprint(kubeQPS), "--kube-api-burst", fmt.Sprint(kubeBurst)}, s.operatorArgs()...)
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
	mk := chaosRequest(cfg.SpotShare)
	for i := range cfg.Requests {
		if mk(i).Spec.SpotInstance {
			res.Spot++
		}
	}
	t0 := time.Now()
	if err := createRequests(ctx, c.client, cfg.Requests, 8, mk); err != nil {
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
	preempt := time.NewTicker(cfg.PreemptEvery)
	defer preempt.Stop()
	check := time.NewTicker(250 * time.Millisecond)
	defer check.Stop()
	killAt := time.Now().Add(gap())
	for res.Kills < cfg.Kills {
		select {
		case <-ctx.Done():
			res.Err = ctx.Err()
			return res
		case <-preempt.C:
			var cands []cloudsim.Machine
			for _, m := range s.byName[providers.RunPod].Machines() {
				if m.Spot && m.Live && m.Active && !m.Preempted {
					cands = append(cands, m)
				}
			}
			if len(cands) > 0 {
				m := cands[rng.IntN(len(cands))]
				if err := s.byName[providers.RunPod].Preempt(m.ID); err == nil {
					res.Preemptions++
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
	preempt.Stop()

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
	if err != nil || len(res.Dups) > 0 {
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
