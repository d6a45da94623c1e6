package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// faultConfig sizes a provider fault run.
type faultConfig struct {
	Requests int
	// Pinned requests go to the down provider (spec.provider) after it
	// returns.
	Pinned int
	// Down is how long the down provider answers 503 to everything.
	Down   time.Duration
	Settle time.Duration
	Seed   uint64
	Logf   func(string, ...any)
}

// downProvider is the provider taken down: the cheapest VM provider for
// both VM types.
const downProvider = providers.LambdaLabs

// faultCatalog sells A6000 and H100 VMs on Lambda (the cheapest) and
// Paperspace, so every VM request has offers on two providers while Lambda
// is down, and RTX 4090 and H100 containers on RunPod, so the container
// requests meet RunPod's faults too.
func faultCatalog() map[string][]cloudsim.CatalogEntry {
	c := benchCatalog()
	return map[string][]cloudsim.CatalogEntry{
		providers.LambdaLabs: c[providers.LambdaLabs],
		providers.RunPod:     {c[providers.RunPod][0], c[providers.RunPod][3]},
		providers.Paperspace: {c[providers.Paperspace][2], c[providers.Paperspace][3]},
	}
}

// faultRequest is the i-th request of the fault run: an A6000 VM, an H100
// VM, or an H100 container (RunPod), in turn.
func faultRequest(i int) *tgpv1.GPURequest {
	r := &tgpv1.GPURequest{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("f-%04d", i), Namespace: requestNamespace},
		Spec: tgpv1.GPURequestSpec{GPUType: []string{"A6000", "H100", "H100"}[i%3], GPUCount: 1}}
	if i%3 == 2 {
		c := benchContainer
		r.Spec.Container = &c
	}
	return r
}

// baseFaults are on every simulator for the whole run; Retry-After is 1 s
// on Lambda and 2 s on the others.
func baseFaults(provider string) cloudsim.Faults {
	f := cloudsim.Faults{ErrorRate: 0.10, RateLimitRate: 0.05, RetryAfter: 2 * time.Second, Latency: 200 * time.Millisecond}
	if provider == providers.LambdaLabs {
		f.RetryAfter = time.Second
	}
	return f
}

// faultResult is what a fault run saw.
type faultResult struct {
	Seed             uint64
	Requests, Pinned int
	Down             time.Duration
	// Launches on the down provider when it went down and when it came back.
	DownLaunchesBefore, DownLaunchesAfter int
	// LaunchAttemptsWhileDown are launch calls that reached the down
	// provider (and got 503) while it was down.
	LaunchAttemptsWhileDown int
	ReadyWhileDown          int // requests Ready when the provider came back
	PinnedOnDown            int // pinned requests Ready on the down provider
	AllReady                time.Duration
	RetryAfter              map[string]retryStats
	Counters                map[string]cloudsim.Counters
	Launches                int
	Dups                    []string
	Err                     error
}

type retryStats struct {
	Sent       int
	Violations []string
	MinGap     time.Duration
}

func (r *faultResult) violations() int {
	n := 0
	for _, s := range r.RetryAfter {
		n += len(s.Violations)
	}
	return n
}

func (r *faultResult) summary() string {
	return fmt.Sprintf("%d+%d requests Ready; %d calls inside a Retry-After; %s down %s: %d launches while down (%d attempts got 503), %d/%d pinned Ready on it after; %d names launched twice",
		r.Requests, r.Pinned, r.violations(), downProvider, r.Down, r.DownLaunchesAfter-r.DownLaunchesBefore, r.LaunchAttemptsWhileDown,
		r.PinnedOnDown, r.Pinned, len(r.Dups))
}

func (r *faultResult) table() string {
	var b strings.Builder
	if r.Err != nil {
		fmt.Fprintf(&b, "**Run failed:** `%s`\n\n", firstLine(r.Err.Error()))
	}
	b.WriteString("| measure | value |\n|---|---|\n")
	fmt.Fprintf(&b, "| seed (replay with `-seed`) | %d |\n", r.Seed)
	fmt.Fprintf(&b, "| requests / pinned to %s after it returned | %d / %d |\n", downProvider, r.Requests, r.Pinned)
	fmt.Fprintf(&b, "| %s down for | %s |\n", downProvider, r.Down)
	fmt.Fprintf(&b, "| requests Ready when it came back | %d |\n", r.ReadyWhileDown)
	fmt.Fprintf(&b, "| launches on %s while down (Launches counter before / after) | %d / %d |\n", downProvider, r.DownLaunchesBefore, r.DownLaunchesAfter)
	fmt.Fprintf(&b, "| launch calls that reached %s while down (503) | %d |\n", downProvider, r.LaunchAttemptsWhileDown)
	fmt.Fprintf(&b, "| pinned requests Ready on %s after it returned | %d / %d |\n", downProvider, r.PinnedOnDown, r.Pinned)
	fmt.Fprintf(&b, "| time until all %d Ready | %s |\n", r.Requests+r.Pinned, dur(r.AllReady))
	fmt.Fprintf(&b, "| launches / names launched twice | %d / %d %s |\n", r.Launches, len(r.Dups), sample(r.Dups))
	b.WriteString("\n| provider | 429s sent | calls inside Retry-After | shortest wait after a 429 |\n|---|---|---|---|\n")
	for _, p := range providerNames {
		s := r.RetryAfter[p]
		fmt.Fprintf(&b, "| %s | %d | %d %s | %s |\n", p, s.Sent, len(s.Violations), sample(s.Violations), s.MinGap.Round(time.Millisecond))
	}
	b.WriteString(countersTable(r.Counters))
	return b.String()
}

// runFaults runs the operator against faulty providers, one of them down
// for a while, and checks that everything still becomes Ready, that no call
// lands inside a Retry-After window and that the down provider gets no
// launches while down but does again once it is back.
func runFaults(ctx context.Context, bin string, cfg faultConfig) (res faultResult) {
	logf := cfg.Logf
	res.Requests, res.Pinned, res.Down, res.Seed = cfg.Requests, cfg.Pinned, cfg.Down, cfg.Seed
	logf("faults: %d requests, %s down for %s, then %d pinned to it, seed %d", cfg.Requests, downProvider, cfg.Down, cfg.Pinned, cfg.Seed)
	c, err := startCluster(ctx)
	if err != nil {
		res.Err = err
		return res
	}
	defer c.stop()
	cfgs := simConfigs(faultCatalog(), simKeys, cloudsim.Faults{}, cfg.Seed)
	for n, sc := range cfgs {
		sc.Faults = baseFaults(n)
		cfgs[n] = sc
	}
	s := startSims(cfgs)
	defer s.close()
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	startNodeRegistrar(actx, c, s, 16)

	// --unavailable-ttl 10s: an offer that failed is skipped for 10 s, so the
	// provider is tried again soon after it returns. --catalog-interval 15s:
	// a catalog refresh that fails waits an interval before the next (the
	// first refreshes may fail too: Paperspace's OS template listing is one
	// call that 15% of the time gets a 500 or 429 here, and without a last
	// good listing the refresh fails); at the default 2 minutes that wait
	// alone would outlast the outage, so the interval is shortened like the
	// others.
	args := append(append(c.operatorArgs(), "--leader-elect=false",
		"--poll-interval", "2s", "--unavailable-ttl", "10s", "--catalog-interval", "15s", "--gc-interval", "5s", "--gc-grace", "30s",
		"--kube-api-qps", fmt.Sprint(kubeQPS), "--kube-api-burst", fmt.Sprint(kubeBurst)), s.operatorArgs()...)
	op, err := startOperator(bin, args, keyEnv(simKeys))
	if err != nil {
		res.Err = err
		return res
	}
	defer func() {
		op.stop(5 * time.Second)
		if out := op.logs.String(); containsPanic(out) {
			res.Err = errors.Join(res.Err, fmt.Errorf("operator panicked:\n%s", tail(out, 40)))
		}
	}()
	if err := op.waitReady(ctx, time.Minute); err != nil {
		res.Err = err
		return res
	}
	// Every provider's catalog first (a refresh the faults fail waits an
	// interval): the run measures the outage, not the luck of the first
	// refreshes.
	if err := waitCatalogs(ctx, op, 2*time.Minute); err != nil {
		res.Err = err
		return res
	}
	w, err := watchRequests(actx, c.client)
	if err != nil {
		res.Err = err
		return res
	}

	down := s.byName[downProvider].Core()
	launchEP := "POST /api/v1/instance-operations/launch"
	downFaults := baseFaults(downProvider)
	downFaults.Down = true
	before := down.Counters()
	down.SetFaults(downFaults)
	downAt := time.Now()
	downTimer := time.NewTimer(cfg.Down)
	defer downTimer.Stop()
	types := []string{"A6000", "H100"}
	if err := createRequests(ctx, c.client, cfg.Requests, 8, faultRequest); err != nil {
		res.Err = err
		return res
	}
	select {
	case <-ctx.Done():
		res.Err = ctx.Err()
		return res
	case <-downTimer.C:
	}
	after := down.Counters()
	down.SetFaults(baseFaults(downProvider))
	res.ReadyWhileDown = w.countReady()
	res.DownLaunchesBefore, res.DownLaunchesAfter = sumLaunches(before), sumLaunches(after)
	res.LaunchAttemptsWhileDown = after.Requests[launchEP] - before.Requests[launchEP]
	logf("  %s back after %s: %d/%d Ready, %d launches on it while down, %d launch calls got 503",
		downProvider, time.Since(downAt).Round(time.Millisecond), res.ReadyWhileDown, cfg.Requests,
		res.DownLaunchesAfter-res.DownLaunchesBefore, res.LaunchAttemptsWhileDown)

	if err := createRequests(ctx, c.client, cfg.Pinned, 4, func(i int) *tgpv1.GPURequest {
		return &tgpv1.GPURequest{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pinned-%04d", i), Namespace: requestNamespace},
			Spec: tgpv1.GPURequestSpec{GPUType: types[i%2], GPUCount: 1, Provider: downProvider}}
	}); err != nil {
		res.Err = err
		return res
	}
	if err := w.waitAllReady(ctx, cfg.Requests+cfg.Pinned, cfg.Settle, logf); err != nil {
		res.Err = fmt.Errorf("%w\noperator log tail:\n%s", err, tail(op.logs.String(), 20))
	}
	res.AllReady = time.Since(downAt)
	for _, r := range w.all() {
		if r.Spec.Provider == downProvider && r.Status.Phase == tgpv1.PhaseReady && r.Status.Provider == downProvider {
			res.PinnedOnDown++
		}
	}
	res.RetryAfter = map[string]retryStats{}
	for n, rec := range s.recorders {
		sent, v, gap := rec.report()
		res.RetryAfter[n] = retryStats{Sent: sent, Violations: v, MinGap: gap}
	}
	res.Counters = s.counters()
	res.Launches, res.Dups = launchStats(res.Counters)

	var problems []error
	if res.violations() > 0 {
		problems = append(problems, fmt.Errorf("%d calls arrived inside a Retry-After window", res.violations()))
	}
	if res.DownLaunchesAfter != res.DownLaunchesBefore {
		problems = append(problems, fmt.Errorf("%d launches on %s while it was down", res.DownLaunchesAfter-res.DownLaunchesBefore, downProvider))
	}
	if res.PinnedOnDown != cfg.Pinned {
		problems = append(problems, fmt.Errorf("%d/%d requests pinned to %s Ready on it after it returned", res.PinnedOnDown, cfg.Pinned, downProvider))
	}
	if len(res.Dups) > 0 {
		problems = append(problems, fmt.Errorf("names launched twice: %v", res.Dups))
	}
	if len(problems) > 0 {
		res.Err = errors.Join(append([]error{res.Err}, problems...)...)
	}
	logf("faults: %s", res.summary())
	return res
}

func sumLaunches(c cloudsim.Counters) int {
	n := 0
	for _, v := range c.Launches {
		n += v
	}
	return n
}
