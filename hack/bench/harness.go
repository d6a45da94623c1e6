package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	lambdasim "github.com/solanyn/gpu-operator/pkg/cloudsim/lambda"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/nodeagent"
	paperspacesim "github.com/solanyn/gpu-operator/pkg/cloudsim/paperspace"
	runpodsim "github.com/solanyn/gpu-operator/pkg/cloudsim/runpod"
	"github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/testenv"
)

const (
	// operatorNamespace holds the operator's Lease and credentials Secret.
	operatorNamespace = "gpu-operator"
	// requestNamespace holds the GPURequests the harness creates.
	requestNamespace = "bench"
	// kubeQPS and kubeBurst are the client limits of the operator and of
	// every harness client that stands in for it (the floor, the creator).
	kubeQPS   = 200
	kubeBurst = 400
)

// cluster is a fresh control plane with the clients the harness uses.
type cluster struct {
	env    *testenv.Env
	cfg    *rest.Config // QPS kubeQPS, burst kubeBurst
	kube   kubernetes.Interface
	client versioned.Interface
	dyn    dynamic.Interface
}

// startCluster starts etcd and kube-apiserver with the CRDs installed and
// the operator's and the requests' namespaces created.
func startCluster(ctx context.Context) (*cluster, error) {
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	env, err := testenv.Start(sctx, testenv.Options{})
	if err != nil {
		return nil, err
	}
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = kubeQPS, kubeBurst
	c := &cluster{env: env, cfg: cfg,
		kube: kubernetes.NewForConfigOrDie(cfg), client: versioned.NewForConfigOrDie(cfg), dyn: dynamic.NewForConfigOrDie(cfg)}
	for _, ns := range []string{operatorNamespace, requestNamespace} {
		_, err := c.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			env.Stop()
			return nil, err
		}
	}
	// --mint-join-tokens reads the CA kube-controller-manager publishes.
	if _, err := env.RootCA(ctx, operatorNamespace); err != nil {
		env.Stop()
		return nil, err
	}
	return c, nil
}

// operatorArgs are the operator's flags for this control plane: its
// kubeconfig and namespace, and a join token minted per machine, which the
// default template hands the machine's kubelet for its TLS bootstrap.
func (c *cluster) operatorArgs() []string {
	return []string{"--kubeconfig", c.env.Kubeconfig, "--namespace", operatorNamespace, "--mint-join-tokens", "--api-server-url", c.env.Config.Host}
}

// tlsBootstrap is what a simulated kubelet dials: the control plane, its
// serving certificate signed by the cluster CA.
func (c *cluster) tlsBootstrap() *nodeagent.TLSBootstrap {
	return &nodeagent.TLSBootstrap{Host: c.env.Config.Host, CAData: c.env.Config.CAData}
}

func (c *cluster) stop() { c.env.Stop() }

// configWith returns the admin config with other client limits.
func (c *cluster) configWith(qps float32, burst int) *rest.Config {
	cfg := rest.CopyConfig(c.env.Config)
	cfg.QPS, cfg.Burst = qps, burst
	return cfg
}

// controlPlaneCPU returns the CPU time etcd and kube-apiserver have used,
// found by their command lines, which name the control plane's directory.
func (c *cluster) controlPlaneCPU() (apiserver, etcd time.Duration) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), c.env.Dir) {
			continue
		}
		cpu, _ := procCPU(pid)
		switch filepath.Base(strings.SplitN(string(cmdline), "\x00", 2)[0]) {
		case "kube-apiserver":
			apiserver = cpu
		case "etcd":
			etcd = cpu
		}
	}
	return apiserver, etcd
}

// apiRequests returns the API server's apiserver_request_total summed by
// "VERB resource[/subresource]".
func (c *cluster) apiRequests(ctx context.Context) (map[string]float64, error) {
	raw, err := c.kube.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		end := strings.LastIndexByte(line, '}')
		if end < 0 {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(line[end+1:]), 64)
		if err != nil {
			continue
		}
		labels := parseLabels(line[len("apiserver_request_total{"):end])
		if labels["resource"] == "" {
			continue
		}
		key := labels["verb"] + " " + labels["resource"]
		if s := labels["subresource"]; s != "" {
			key += "/" + s
		}
		out[key] += v
	}
	return out, sc.Err()
}

func parseLabels(s string) map[string]string {
	out := map[string]string{}
	for s != "" {
		eq := strings.IndexByte(s, '=')
		if eq < 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			break
		}
		name := s[:eq]
		rest := s[eq+2:]
		end := strings.IndexByte(rest, '"')
		if end < 0 {
			break
		}
		out[name] = rest[:end]
		s = strings.TrimPrefix(rest[end+1:], ",")
	}
	return out
}

// ---- simulators ----

// sims runs the three provider simulators, each behind a recorder that
// checks Retry-After windows, on loopback servers.
type sims struct {
	byName    map[string]cloudsim.Simulator
	servers   map[string]*httptest.Server
	recorders map[string]*retryRecorder
}

// provider names in a fixed order.
var providerNames = []string{providers.LambdaLabs, providers.RunPod, providers.Paperspace}

func startSims(cfgs map[string]cloudsim.Config) *sims {
	s := &sims{byName: map[string]cloudsim.Simulator{}, servers: map[string]*httptest.Server{}, recorders: map[string]*retryRecorder{}}
	for _, name := range providerNames {
		cfg, ok := cfgs[name]
		if !ok {
			continue
		}
		var sim cloudsim.Simulator
		switch name {
		case providers.LambdaLabs:
			sim = lambdasim.New(cfg, clock.RealClock{})
		case providers.RunPod:
			sim = runpodsim.New(cfg, clock.RealClock{})
		case providers.Paperspace:
			sim = paperspacesim.New(cfg, clock.RealClock{})
		}
		rec := &retryRecorder{next: sim}
		s.byName[name], s.recorders[name] = sim, rec
		s.servers[name] = httptest.NewServer(rec)
	}
	return s
}

func (s *sims) close() {
	for _, srv := range s.servers {
		srv.Close()
	}
}

func (s *sims) list() []cloudsim.Simulator {
	var out []cloudsim.Simulator
	for _, n := range providerNames {
		if sim, ok := s.byName[n]; ok {
			out = append(out, sim)
		}
	}
	return out
}

// operatorArgs points the operator at the simulators with client-side rate
// limits off (the simulators enforce none unless configured). Lambda
// launches name the SSH key every simulated Lambda account has registered
// (Lambda requires exactly one).
func (s *sims) operatorArgs() []string {
	var enabled []string
	args := []string{"--lambda-rps", "100000", "--lambda-launch-interval", "-1s", "--runpod-rps", "100000", "--paperspace-rps", "100000",
		"--lambda-ssh-key-name", lambdasim.DefaultSSHKeyName}
	for _, n := range providerNames {
		srv, ok := s.servers[n]
		if !ok {
			continue
		}
		enabled = append(enabled, n)
		switch n {
		case providers.LambdaLabs:
			args = append(args, "--lambda-url", srv.URL)
		case providers.RunPod:
			args = append(args, "--runpod-api-url", srv.URL)
		case providers.Paperspace:
			args = append(args, "--paperspace-url", srv.URL+"/v1")
		}
	}
	return append(args, "--providers", strings.Join(enabled, ","))
}

// machines returns every machine of every simulator.
func (s *sims) machines() []cloudsim.Machine {
	var out []cloudsim.Machine
	for _, sim := range s.list() {
		out = append(out, sim.Machines()...)
	}
	return out
}

// counters returns each simulator's counters.
func (s *sims) counters() map[string]cloudsim.Counters {
	out := map[string]cloudsim.Counters{}
	for n, sim := range s.byName {
		out[n] = sim.Core().Counters()
	}
	return out
}

// launchStats sums launches over all simulators and lists names launched
// more than once.
func launchStats(cs map[string]cloudsim.Counters) (total int, dups []string) {
	for _, c := range cs {
		for name, n := range c.Launches {
			total += n
			if n > 1 {
				dups = append(dups, fmt.Sprintf("%s x%d", name, n))
			}
		}
	}
	sort.Strings(dups)
	return total, dups
}

// retryRecorder wraps a simulator and checks that no request reaches it
// while a Retry-After it sent is still running. The operator uses one HTTP
// client per provider, so every request after a 429 is from the client that
// was told to wait.
type retryRecorder struct {
	next http.Handler

	mu         sync.Mutex
	listStarts int // instance list calls that start a listing (no page cursor)
	windows    []raWindow
	sent       int
	violations []string
	minGap     time.Duration // shortest wait after a 429 among requests that honoured it
}

// listPaths are the providers' instance list paths (Lambda, RunPod REST v2,
// Paperspace); Paperspace pages with ?after=, so a call without it starts one
// logical list.
var listPaths = map[string]bool{"/api/v1/instances": true, "/v2/pods": true, "/v1/machines": true}

func (r *retryRecorder) lists() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.listStarts
}

type raWindow struct{ sent, until time.Time }

// raSlack is how long after a 429 left the simulator a request may still
// arrive without counting as a violation: it may have been sent before the
// client read the 429.
const raSlack = 50 * time.Millisecond

func (r *retryRecorder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	arrived := time.Now()
	r.mu.Lock()
	if req.Method == http.MethodGet && listPaths[req.URL.Path] && req.URL.Query().Get("after") == "" {
		r.listStarts++
	}
	live := r.windows[:0]
	for _, win := range r.windows {
		if arrived.Before(win.until) {
			live = append(live, win)
		}
		if arrived.After(win.sent.Add(raSlack)) {
			gap := arrived.Sub(win.sent)
			if arrived.Before(win.until) {
				r.violations = append(r.violations, fmt.Sprintf("%s %s arrived %s after a 429 with Retry-After %s",
					req.Method, req.URL.Path, gap.Round(time.Millisecond), win.until.Sub(win.sent).Round(time.Millisecond)))
			} else if r.minGap == 0 || gap < r.minGap {
				r.minGap = gap
			}
		}
	}
	r.windows = live
	r.mu.Unlock()

	rw := &statusWriter{ResponseWriter: w}
	r.next.ServeHTTP(rw, req)
	if rw.status == http.StatusTooManyRequests {
		secs, _ := strconv.Atoi(rw.Header().Get("Retry-After"))
		now := time.Now()
		r.mu.Lock()
		r.sent++
		r.windows = append(r.windows, raWindow{sent: now, until: now.Add(time.Duration(secs) * time.Second)})
		r.mu.Unlock()
	}
}

func (r *retryRecorder) report() (sent int, violations []string, minGap time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.sent, append([]string(nil), r.violations...), r.minGap
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// ---- node registration ----

// startNodeRegistrar plays kubelet for the simulated machines with
// pkg/cloudsim/nodeagent: a Node per active machine, registered (with its
// status, labels and taints, and the machine's GPUs allocatable as
// nvidia.com/gpu, which the operator's GPU readiness check waits for) from a
// pool of workers, as many kubelets would. Each joins by TLS bootstrap with
// the token the operator minted into its user data: a CSR, approved and
// signed by kube-controller-manager, then its Node written with its own
// certificate. The agent's own client (deleting the Nodes of machines that
// are gone) is not the bottleneck.
func startNodeRegistrar(ctx context.Context, c *cluster, s *sims, workers int) {
	kube := kubernetes.NewForConfigOrDie(c.configWith(2000, 4000))
	agent := &nodeagent.Agent{Kube: kube, Simulators: s.list(), Workers: workers, Interval: 200 * time.Millisecond, TLSBootstrap: c.tlsBootstrap()}
	go agent.Run(ctx)
}

// ---- the operator process ----

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

// buildOperator compiles ./cmd/gpu-operator once per process into a
// temporary directory.
func buildOperator() (string, error) {
	buildOnce.Do(func() {
		root, err := testenv.RepoRoot()
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "gpu-operator-bench-")
		if err != nil {
			buildErr = err
			return
		}
		bin := filepath.Join(dir, "gpu-operator")
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/gpu-operator")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/gpu-operator: %v\n%s", err, out)
			return
		}
		builtBin = bin
	})
	return builtBin, buildErr
}

// operator is one running operator process.
type operator struct {
	cmd         *exec.Cmd
	logs        *lockedBuffer
	metricsAddr string
	exited      chan struct{}
	waitErr     error
}

// logDir, when set (-logs), keeps every operator process's log there as
// gpu-operator-<pid>.log.
var logDir string

// heapProfile, when set (-heap-profile), makes the scale runs start the
// operator with --enable-pprof and save its heap profile, when all requests
// are Ready, to <heapProfile>.<N> (read it with `go tool pprof`).
var heapProfile string

// cpuProfile, when set (-cpu-profile), makes the scale runs start the
// operator with --enable-pprof and save a CPU profile of the first
// cpuProfileSeconds after the requests' creation starts to <cpuProfile>.<N>.
var (
	cpuProfile        string
	cpuProfileSeconds int
)

func saveHeapProfile(metricsAddr, path string) error {
	return saveProfile("http://"+metricsAddr+"/debug/pprof/heap", path)
}

// startCPUProfile asks the operator for a CPU profile of the next seconds
// and returns a function that waits for it and reports how saving went.
func startCPUProfile(metricsAddr, path string, seconds int) func() error {
	done := make(chan error, 1)
	go func() {
		done <- saveProfile(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", metricsAddr, seconds), path)
	}()
	return func() error { return <-done }
}

func saveProfile(url, path string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// startOperator runs bin with args (plus --metrics-addr on a free port)
// and the extra environment.
func startOperator(bin string, args, env []string) (*operator, error) {
	addr, err := testenv.FreeAddr()
	if err != nil {
		return nil, err
	}
	o := &operator{logs: &lockedBuffer{}, metricsAddr: addr, exited: make(chan struct{})}
	o.cmd = exec.Command(bin, append(append([]string{}, args...), "--metrics-addr", addr)...)
	o.cmd.Env = append(os.Environ(), env...)
	o.cmd.Stdout, o.cmd.Stderr = o.logs, o.logs
	// The operator dies with the harness, even on SIGKILL.
	o.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := o.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		o.waitErr = o.cmd.Wait()
		if logDir != "" {
			_ = os.WriteFile(filepath.Join(logDir, fmt.Sprintf("gpu-operator-%d.log", o.cmd.Process.Pid)), []byte(o.logs.String()), 0o644)
		}
		close(o.exited)
	}()
	return o, nil
}

func (o *operator) pid() int { return o.cmd.Process.Pid }

func (o *operator) running() bool {
	select {
	case <-o.exited:
		return false
	default:
		return true
	}
}

// waitReady polls /readyz until the operator's caches are synced.
func (o *operator) waitReady(ctx context.Context, timeout time.Duration) error {
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		if !o.running() {
			return false, fmt.Errorf("operator exited: %v\n%s", o.waitErr, tail(o.logs.String(), 40))
		}
		return httpOK(ctx, "http://"+o.metricsAddr+"/readyz"), nil
	})
}

// kill sends SIGKILL and waits for the exit.
func (o *operator) kill() {
	_ = o.cmd.Process.Signal(syscall.SIGKILL)
	<-o.exited
}

// stop sends SIGTERM, waits (SIGKILL after timeout) and returns the
// child's resource usage.
func (o *operator) stop(timeout time.Duration) *syscall.Rusage {
	if o.running() {
		_ = o.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-o.exited:
		case <-time.After(timeout):
			o.kill()
		}
	}
	if o.cmd.ProcessState == nil {
		return nil
	}
	ru, _ := o.cmd.ProcessState.SysUsage().(*syscall.Rusage)
	return ru
}

// usage reads the running operator's peak RSS (VmHWM) and CPU time.
func (o *operator) usage() (peakRSS int64, cpu time.Duration) {
	peakRSS, _ = procHWM(o.pid())
	cpu, _ = procCPU(o.pid())
	return peakRSS, cpu
}

// procHWM returns VmHWM of a process in bytes.
func procHWM(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmHWM")
}

// procCPU returns utime+stime of a process (clock ticks of 1/100 s).
func procCPU(pid int) (time.Duration, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("bad stat")
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is state (field 3); utime and stime are fields 14 and 15.
	if len(fields) < 13 {
		return 0, errors.New("short stat")
	}
	ut, err1 := strconv.ParseInt(fields[11], 10, 64)
	st, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	return time.Duration(ut+st) * 10 * time.Millisecond, nil
}

// ---- small helpers ----

func httpOK(ctx context.Context, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func httpGet(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b strings.Builder
	_, err = bufio.NewReader(resp.Body).WriteTo(&b)
	return b.String(), err
}

func tail(s string, lines int) string {
	parts := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// lockedBuffer collects a child's output safely.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// phaseCounts lists the requests in ns and counts them by phase.
func phaseCounts(reqs []tgpv1.GPURequest) map[tgpv1.Phase]int {
	out := map[tgpv1.Phase]int{}
	for _, r := range reqs {
		out[r.Status.Phase]++
	}
	return out
}

func formatPhases(m map[tgpv1.Phase]int) string {
	var parts []string
	for p, n := range m {
		name := string(p)
		if name == "" {
			name = "(none)"
		}
		parts = append(parts, fmt.Sprintf("%s=%d", name, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}

// mib formats bytes as MiB.
func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func selfPID() int { return os.Getpid() }

// containsPanic reports whether a Go program's output shows a panic.
func containsPanic(log string) bool {
	return strings.Contains(log, "panic:") || strings.Contains(log, "goroutine ") && strings.Contains(log, "[running]")
}
