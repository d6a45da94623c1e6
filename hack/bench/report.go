package main

import (
	"fmt"
	"math"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Endpoint classes, by the simulators' endpoint names.
var (
	catalogEndpoints = map[string]bool{
		"GET /api/v1/instance-types": true, "GET /v2/catalog/gpus": true, "GET /v1/machine-availability": true,
	}
	listEndpoints = map[string]bool{"GET /api/v1/instances": true, "GET /v2/pods": true, "GET /v1/machines": true}
	// launchEndpoints are the create calls of each provider (RunPod REST v2).
	launchEndpoints = map[string]bool{"POST /api/v1/instance-operations/launch": true, "POST /v2/pods": true, "POST /v1/machines": true}
)

func endpointClass(ep string) string {
	switch {
	case catalogEndpoints[ep]:
		return "catalog"
	case listEndpoints[ep]:
		return "list instances"
	case launchEndpoints[ep]:
		return "launch"
	case strings.Contains(ep, "{"):
		return "per instance"
	default:
		return "other"
	}
}

// report is everything one harness invocation measured.
type report struct {
	Command string
	Started time.Time
	Scale   []scaleResult
	Chaos   *chaosResult
	Faults  *faultResult
	Bomb    *bombReport
	Market  *marketResult
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "**missed**"
}

func dur(d time.Duration) string {
	if d >= time.Minute {
		return d.Round(100 * time.Millisecond).String()
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func (r scaleResult) ratio() float64 {
	if r.Floor <= 0 {
		return math.NaN()
	}
	return r.Wall.Seconds() / r.Floor.Seconds()
}

// providerCalls totals, per provider, the calls of one class.
func (r scaleResult) providerCalls(class string) map[string]int {
	out := map[string]int{}
	for p, c := range r.Counters {
		for ep, n := range c.Requests {
			if endpointClass(ep) == class {
				out[p] += n
			}
		}
	}
	return out
}

// table renders one scale run as Markdown.
func (r scaleResult) table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "### N = %d\n\n", r.N)
	if r.Err != nil {
		fmt.Fprintf(&b, "**Run failed:** `%s`\n\n", firstLine(r.Err.Error()))
	}
	minutes := r.Wall.Minutes()
	fmt.Fprintf(&b, "| measure | value |\n|---|---|\n")
	fmt.Fprintf(&b, "| wall time, creation start to all %d Ready | %s |\n", r.N, dur(r.Wall))
	fmt.Fprintf(&b, "| of which creating the %d requests (harness client, QPS %d) | %s |\n", r.N, kubeQPS, dur(r.CreateTime))
	fmt.Fprintf(&b, "| floor (create + 1 status write each, + per VM a token, a TLS bootstrap and a Node create, QPS %d/burst %d) | %s |\n", kubeQPS, kubeBurst, dur(r.Floor))
	fmt.Fprintf(&b, "| ratio operator / floor | %.2f |\n", r.ratio())
	fmt.Fprintf(&b, "| launches (sum of Launches) / names launched twice | %d / %d |\n", r.Launches, len(r.Dups))
	fmt.Fprintf(&b, "| operator peak RSS (VmHWM at all Ready; ru_maxrss at exit) | %s; %s |\n", mib(r.PeakRSS), mib(r.ExitMaxRSS))
	fmt.Fprintf(&b, "| operator CPU (utime+stime, start to all Ready) | %s (%.1f ms per request) |\n", dur(r.CPU), r.CPU.Seconds()*1000/float64(r.N))
	fmt.Fprintf(&b, "| kube-apiserver / etcd CPU during the run | %s / %s |\n", dur(r.APICPU), dur(r.EtcdCPU))
	fmt.Fprintf(&b, "| kube-apiserver / etcd CPU during the floor | %s / %s |\n", dur(r.FloorAPICPU), dur(r.FloorEtcdCPU))
	fmt.Fprintf(&b, "| harness CPU (creator, simulators, node agents, watch) | %s |\n", dur(r.HarnessCPU))
	b.WriteString("\nProvider API calls (simulators' `Counters().Requests`), per request and per minute of wall time:\n\n")
	b.WriteString("| provider | endpoint | class | calls | per request | per minute |\n|---|---|---|---|---|---|\n")
	for _, p := range providerNames {
		c, ok := r.Counters[p]
		if !ok {
			continue
		}
		eps := make([]string, 0, len(c.Requests))
		for ep := range c.Requests {
			eps = append(eps, ep)
		}
		sort.Strings(eps)
		for _, ep := range eps {
			n := c.Requests[ep]
			perMin := math.NaN()
			if minutes > 0 {
				perMin = float64(n) / minutes
			}
			fmt.Fprintf(&b, "| %s | `%s` | %s | %d | %.3f | %.1f |\n", p, ep, endpointClass(ep), n, float64(n)/float64(r.N), perMin)
		}
	}
	if len(r.APIByVerb) > 0 {
		b.WriteString("\nKubernetes API requests during the run (API server's `apiserver_request_total`, all clients: harness creates, node agents, watch, operator):\n\n")
		b.WriteString("| verb resource | requests | per GPURequest |\n|---|---|---|\n")
		keys := make([]string, 0, len(r.APIByVerb))
		for k := range r.APIByVerb {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return r.APIByVerb[keys[i]] > r.APIByVerb[keys[j]] })
		for _, k := range keys {
			if v := r.APIByVerb[k]; v >= 1 {
				fmt.Fprintf(&b, "| %s | %.0f | %.2f |\n", k, v, v/float64(r.N))
			}
		}
	}
	return b.String()
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

// targets checks the targets against the scale runs.
func (rep *report) targets() string {
	var b strings.Builder
	b.WriteString("| target | measured | verdict |\n|---|---|---|\n")
	for _, r := range rep.Scale {
		if r.N == 1000 {
			fmt.Fprintf(&b, "| 1,000 requests Ready in under 60 s | %s | %s |\n", dur(r.Wall), verdict(r.Err == nil && r.Wall < time.Minute))
		}
	}
	for _, r := range rep.Scale {
		fmt.Fprintf(&b, "| N=%d: ratio to the floor under 2 | %.2f | %s |\n", r.N, r.ratio(), verdict(r.Err == nil && r.ratio() < 2))
	}
	for _, r := range rep.Scale {
		if r.N == 10000 {
			fmt.Fprintf(&b, "| 10,000 requests with peak RSS under 150 MiB | %s | %s |\n", mib(r.PeakRSS), verdict(r.Err == nil && r.PeakRSS < 150<<20))
		}
	}
	for _, r := range rep.Scale {
		fmt.Fprintf(&b, "| N=%d: launches exactly N, no name twice | %d launches, %d names twice | %s |\n", r.N, r.Launches, len(r.Dups),
			verdict(r.Launches == r.N && len(r.Dups) == 0))
	}
	for _, r := range rep.Scale {
		cat, list := r.providerCalls("catalog"), r.providerCalls("list instances")
		var parts []string
		listOK := true
		for _, p := range providerNames {
			expect := r.Wall.Seconds() / r.PollInterval.Seconds()
			parts = append(parts, fmt.Sprintf("%s: %d catalog, %d lists in %d calls (%.0f poll intervals)", p, cat[p], r.Lists[p], list[p], expect))
			if float64(r.Lists[p]) > 1.5*expect+5 {
				listOK = false
			}
		}
		per := r.providerCalls("per instance")
		perTotal := per[providerNames[0]] + per[providerNames[1]] + per[providerNames[2]]
		fmt.Fprintf(&b, "| N=%d: catalog calls independent of N, one instance list per provider per poll, no per-instance reads | %s; %d per-instance calls | %s |\n",
			r.N, strings.Join(parts, "; "), perTotal, verdict(listOK && perTotal == 0))
	}
	if rep.Chaos != nil {
		fmt.Fprintf(&b, "| chaos: nothing lost, leaked or launched twice | %s | %s |\n", rep.Chaos.summary(), verdict(rep.Chaos.Err == nil))
	}
	if rep.Faults != nil {
		fmt.Fprintf(&b, "| faults: all Ready, Retry-After honoured, down provider skipped then used again | %s | %s |\n", rep.Faults.summary(), verdict(rep.Faults.Err == nil))
	}
	return b.String()
}

func (rep *report) markdown() string {
	var b strings.Builder
	b.WriteString("# Benchmarks\n\n")
	b.WriteString("Written by the harness in `hack/bench` (`make bench` runs it); do not edit by hand.\n\n")
	fmt.Fprintf(&b, "Command: `%s` (started %s, %s, %d CPUs, %s).\n\n", rep.Command, rep.Started.Format(time.RFC3339), runtime.GOOS+"/"+runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	b.WriteString(methodology)
	b.WriteString("\n## Targets\n\n")
	b.WriteString(rep.targets())
	b.WriteString("\n## Scale\n\n")
	for _, r := range rep.Scale {
		b.WriteString(r.table())
		b.WriteString("\n")
		b.WriteString(r.whereTimeWent())
		b.WriteString("\n")
	}
	if rep.Chaos != nil {
		b.WriteString("## Chaos\n\n")
		b.WriteString(rep.Chaos.table())
		b.WriteString("\n")
	}
	if rep.Faults != nil {
		b.WriteString("## Provider faults\n\n")
		b.WriteString(rep.Faults.table())
		b.WriteString("\n")
	}
	if rep.Bomb != nil {
		b.WriteString(rep.Bomb.markdown())
		b.WriteString("\n")
	}
	if rep.Market != nil {
		b.WriteString(rep.Market.markdown())
		b.WriteString("\n")
	}
	return b.String()
}

// whereTimeWent says, from CPU figures, who was busy during a scale run.
func (r scaleResult) whereTimeWent() string {
	if r.Wall <= 0 {
		return ""
	}
	cores := float64(runtime.NumCPU())
	busy := func(d time.Duration) float64 { return 100 * d.Seconds() / (r.Wall.Seconds() * cores) }
	return fmt.Sprintf("Where the time went: of the %.0f core-seconds available during the run, the operator used %.0f%%, kube-apiserver %.0f%%, etcd %.0f%% and the harness (simulators, node agents, creator, watch) %.0f%%.\n",
		r.Wall.Seconds()*cores, busy(r.CPU), busy(r.APICPU), busy(r.EtcdCPU), busy(r.HarnessCPU))
}

const methodology = `## How these figures are made

- **Control plane**: a fresh etcd, kube-apiserver and kube-controller-manager (` + "`bin/`" + `, from ` + "`make tools`" + `; ` + "`pkg/testenv`" + `: bootstrap-token
  auth, Node,RBAC, NodeRestriction, the CSR approving and signing controllers) for every N, for the floor and for each of the chaos and fault runs.
- **Operator**: ` + "`./cmd/gpu-operator`" + ` built with ` + "`go build`" + ` into a temporary directory and run as its own process, so its RSS and CPU are its own:
  ` + "`--kube-api-qps 200 --kube-api-burst 400 --poll-interval 2s`" + `, default workers, client-side provider rate limits off
  (` + "`--lambda-rps/--runpod-rps/--paperspace-rps 100000 --lambda-launch-interval -1s`" + `), since the simulators enforce none here.
  QPS 200/burst 400 is four times the operator's default (50/100): at the default the API client alone would need 20 s per 1,000
  status writes, and a cluster with thousands of GPU nodes would give the operator this much.
- **Poll interval 2 s**: instance state is one list call per provider per poll interval, so with instant boot the poll interval bounds how
  soon a launched machine is seen running; 2 s keeps that small against a 1,000-request run while staying a realistic provider
  budget (30 list calls a minute per provider, whatever N).
- **Simulators**: Lambda, RunPod and Paperspace in the harness process on loopback, instant boot (BootDelay 0), unlimited capacity.
  The catalog is shaped like what the providers really sell, at their on-demand list prices (none sells spot): Lambda and Paperspace
  sell VMs, RunPod sells containers. Requests cycle through an A6000 VM (cheapest on Lambda), an RTX 4090 container (RunPod) and an
  A4000 VM (Paperspace), so the load spreads over all three providers; VMs are Ready when their Node joins, containers when RunPod
  lists them running.
- **Node registration**: the operator runs with ` + "`--mint-join-tokens`" + `, so every VM's user data (the default template) carries its own
  bootstrap token, and ` + "`pkg/cloudsim/nodeagent`" + ` joins it as a kubelet does: a CSR made with that token, approved and signed by
  kube-controller-manager, then one Create with the node's own certificate carrying the Node's status and the labels and taints the
  rendered bootstrap gives the kubelet (` + "`--node-labels`, `--register-with-taints`" + `), from 16 workers, each kubelet on its own client
  (every real node is its own client).
- **Creation**: the N requests are created at once by 16 goroutines on one client at QPS 200/burst 400; the wall time starts before the first
  create and ends when the harness's watch sees the last request Ready.
- **Floor**: on its own fresh control plane, a bare client-go program makes only the unavoidable writes per request, a create, one status
  write (phase Ready) and, for a VM request, what a real node's join costs (a container joins no cluster): its bootstrap token Secret
  created, the kubelet's TLS bootstrap with it (a CSR, approved and signed by kube-controller-manager, waited for), one Node create with
  the signed certificate and the token deleted; from 32 goroutines on two clientsets (GPURequests, core) at QPS 200/burst 400 each, exactly
  as the operator builds its own clients. The ratio is operator wall time / floor wall time.
- **RSS and CPU**: VmHWM from ` + "`/proc/<pid>/status`" + ` and utime+stime from ` + "`/proc/<pid>/stat`" + ` when all are Ready (ru_maxrss after exit as a cross-check);
  kube-apiserver and etcd CPU likewise, over the same interval.
- **Chaos**: two replicas with ` + "`--leader-elect=true --lease-duration 4s --renew-deadline 3s --retry-period 500ms --gc-interval 2s --gc-grace 10s --unavailable-ttl 10s`" + ` (an interruption marks the machine's offering unavailable for the TTL);
  the leader (Lease holderIdentity matched against the replicas' "became leader" log lines) is SIGKILLed at random moments and restarted;
  every few seconds a random running machine of any provider is taken back the way that provider shows it (Lambda reports the
  instance preempted, RunPod stops the pod: EXITED, Paperspace turns the machine off); the requests are the scale run's.
- **Faults**: every simulator answers 10% 500s, 5% 429s with Retry-After 1 or 2 s, and adds 200 ms latency; Lambda is down (503) for a while.
  The operator runs with ` + "`--poll-interval 2s --unavailable-ttl 10s --catalog-interval 15s`" + ` (a failed catalog refresh waits an interval);
  Lambda goes down once every provider's catalog has been read, just before the requests are created.
  The requests are A6000 and H100 VMs, sold by Lambda and Paperspace, and H100 containers, sold by RunPod. A wrapping http.Handler in front of each simulator records every 429 and
  flags any later request to that provider arriving inside its Retry-After window (50 ms slack for calls already in flight).
`
