package main

import (
	"bufio"
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned"
	"github.com/solanyn/gpu-operator/pkg/testenv"
)

// expectation is what an example must end up on with hack/demo/catalog.json.
type expectation struct {
	provider     string
	spot         bool
	price        float64
	regionPrefix string
}

var expected = map[string]expectation{
	"spot-training-job":      {provider: "runpod", spot: true, price: 0.22, regionPrefix: "us-west-"},
	"multi-gpu-training":     {provider: "lambdalabs", spot: false, price: 5.16, regionPrefix: "us-east-"},
	"region-aware-job":       {provider: "runpod", spot: true, price: 1.75, regionPrefix: "us-east-1"},
	"bootstrapped-inference": {provider: "runpod", spot: false, price: 0.49},
}

// TestDemo runs `gpu-operator-demo run` as a user would, checks what it
// produced while it runs, interrupts it with SIGINT and checks that nothing
// it started is left: no process, no listening port.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("the demo starts a control plane and takes about a minute; skipped with -short")
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bins := buildBinaries(t, root)

	dir := t.TempDir()
	demoDir := filepath.Join(dir, "demo")
	outPath := filepath.Join(dir, "demo.out")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	start := time.Now()
	cmd := exec.Command(bins["demo"], "run", "--dir", demoDir,
		"--operator", bins["gpu-operator"], "--cloudsim", bins["cloudsim"])
	cmd.Dir = root
	cmd.Stdout, cmd.Stderr = out, out
	// If the test dies, so does the demo (and, through it, its children).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			_ = cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-exited:
			case <-time.After(60 * time.Second):
				_ = cmd.Process.Kill()
				<-exited
			}
		}
		if t.Failed() {
			t.Logf("demo output:\n%s", readFile(outPath))
		}
	}()

	// Wait for the story to finish: every example Ready, one recovery.
	var state *State
	deadline := time.NewTimer(8 * time.Minute)
	defer deadline.Stop()
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for state == nil {
		if s, err := readState(demoDir); err == nil && s.Phase == PhaseRecovered {
			state = s
			break
		}
		select {
		case err := <-exited:
			stopped = true
			t.Fatalf("the demo exited before the recovery: %v", err)
		case <-deadline.C:
			t.Fatal("timed out waiting for the demo to recover from the interruption")
		case <-tick.C:
		}
	}
	wall := time.Since(start)
	t.Logf("demo wall time to recovery: %s (setup %.1fs, all Ready %.1fs after apply, recovery %.1fs)",
		wall.Round(100*time.Millisecond), state.SetupSeconds, state.AllReadySeconds, state.RecoverySeconds)

	checkRequests(t, state)
	checkMetrics(t, root, state.MetricsURL)

	// Everything the demo started, and the ports they listen on.
	procs := descendants(cmd.Process.Pid)
	ports := listeningPorts(procs)
	t.Logf("demo children: %v; listening ports: %v", procs, ports)
	for _, want := range []string{"etcd", "kube-apiserver", "gpu-operator", "cloudsim"} {
		if !slices.ContainsFunc(mapValues(procs), func(c string) bool { return c == want }) {
			t.Errorf("no %s among the demo's processes %v", want, procs)
		}
	}
	if len(ports) < 6 {
		t.Errorf("want the ports of etcd, the API server, three simulators, the admin API and the operator's metrics; found %v", ports)
	}

	stopStart := time.Now()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		stopped = true
		if err != nil {
			t.Errorf("the demo exited with %v after SIGINT", err)
		}
	case <-time.After(90 * time.Second):
		t.Fatal("the demo did not exit within 90s of SIGINT")
	}
	t.Logf("stopped %s after SIGINT", time.Since(stopStart).Round(100*time.Millisecond))
	for pid, comm := range procs {
		if _, _, running := procStat(pid); running && alive(pid, comm) {
			t.Errorf("%s (pid %d) still runs after the demo exited", comm, pid)
		}
	}
	for _, port := range ports {
		conn, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if err == nil {
			conn.Close()
			t.Errorf("port %d still accepts connections after the demo exited", port)
		}
	}
}

// buildBinaries returns the binaries the demo needs: the demo itself, always
// built from this source, and bin/gpu-operator and bin/cloudsim when present
// (make test-demo builds them first), else built into a temporary directory.
// The control-plane tools come from `make tools` (hack/build-tools.sh).
func buildBinaries(t *testing.T, root string) map[string]string {
	t.Helper()
	for _, tool := range []string{"etcd", "kube-apiserver", "kubectl"} {
		if _, err := os.Stat(filepath.Join(root, "bin", tool)); err != nil {
			t.Logf("bin/%s is missing: running hack/build-tools.sh (once; several minutes)", tool)
			run(t, root, filepath.Join(root, "hack", "build-tools.sh"))
			break
		}
	}
	tmp := t.TempDir()
	bins := map[string]string{"demo": filepath.Join(tmp, "gpu-operator-demo")}
	run(t, root, "go", "build", "-o", bins["demo"], "./hack/demo")
	for name, pkg := range map[string]string{"gpu-operator": "./cmd/gpu-operator", "cloudsim": "./cmd/cloudsim"} {
		bins[name] = filepath.Join(root, "bin", name)
		if _, err := os.Stat(bins[name]); err != nil {
			bins[name] = filepath.Join(tmp, name)
			run(t, root, "go", "build", "-o", bins[name], pkg)
		}
	}
	return bins
}

func run(t *testing.T, dir, name string, args ...string) {
	t.Helper()
	c := exec.Command(name, args...)
	c.Dir = dir
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// checkRequests asserts what each example ended up on.
func checkRequests(t *testing.T, state *State) {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", state.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	client := versioned.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := client.TgpV1().GPURequests(requestNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]tgpv1.GPURequestStatus{}
	for _, r := range list.Items {
		got[r.Name] = r.Status
	}
	for name, want := range expected {
		st, ok := got[name]
		if !ok {
			t.Errorf("%s: not found", name)
			continue
		}
		if st.Phase != tgpv1.PhaseReady || st.Provider != want.provider || st.Spot != want.spot ||
			st.HourlyPrice == nil || *st.HourlyPrice != want.price || !strings.HasPrefix(st.Region, want.regionPrefix) || st.NodeName == "" {
			t.Errorf("%s: got phase %s provider %s spot %v price %v region %s node %q; want Ready on %s spot %v price %v region %s*",
				name, st.Phase, st.Provider, st.Spot, price(st.HourlyPrice), st.Region, st.NodeName,
				want.provider, want.spot, want.price, want.regionPrefix)
		}
		wantInterruptions := int32(0)
		if name == state.Preempted {
			wantInterruptions = 1
		}
		if st.Interruptions != wantInterruptions {
			t.Errorf("%s: interruptions %d, want %d", name, st.Interruptions, wantInterruptions)
		}
	}
	if state.Preempted != "spot-training-job" {
		t.Errorf("the demo preempted %q, want spot-training-job", state.Preempted)
	}
}

// metricNameRE finds the operator's metric names in monitoring assets
// (PromQL in alert rules and dashboards). Recording rules' outputs
// (gpu_operator:...) are not scraped and do not match.
var metricNameRE = regexp.MustCompile(`(?:^|[^A-Za-z0-9_:])((?:gpu_operator|workqueue|process|go)_[a-z0-9_]+)`)

// checkMetrics asserts that every metric the monitoring assets use is in a
// scrape of the running operator.
func checkMetrics(t *testing.T, root, metricsURL string) {
	t.Helper()
	dir := filepath.Join(root, "manifests", "monitoring")
	if _, err := os.Stat(dir); err != nil {
		t.Logf("skipping the monitoring check: %s does not exist yet", dir)
		return
	}
	used := usedMetrics(dir)
	if len(used) == 0 {
		t.Errorf("no gpu_operator_* metric found in %s", dir)
		return
	}
	resp, err := http.Get(metricsURL)
	if err != nil {
		t.Fatalf("scraping %s: %v", metricsURL, err)
	}
	defer resp.Body.Close()
	scraped := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			scraped[line[:i]] = true
		}
	}
	var missing []string
	for name, files := range used {
		if !scraped[name] {
			missing = append(missing, fmt.Sprintf("%s (used in %s)", name, strings.Join(files, ", ")))
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("metrics used by manifests/monitoring but absent from a scrape of the running operator "+
			"(a labelled metric appears only once a label set is initialised):\n  %s", strings.Join(missing, "\n  "))
	}
	if len(missing) == 0 {
		t.Logf("the monitoring assets use %d metrics, all present in the scrape", len(used))
	}
}

// usedMetrics maps each metric name found in dir's YAML and JSON files to
// the files that use it.
func usedMetrics(dir string) map[string][]string {
	used := map[string][]string{}
	for _, pattern := range []string{"*.yaml", "*.yml", "*.json"} {
		files, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, f := range files {
			for _, m := range metricNameRE.FindAllStringSubmatch(readFile(f), -1) {
				if !slices.Contains(used[m[1]], filepath.Base(f)) {
					used[m[1]] = append(used[m[1]], filepath.Base(f))
				}
			}
		}
	}
	return used
}

func TestUsedMetrics(t *testing.T) {
	dir := t.TempDir()
	rules := `groups:
- name: gpu-operator
  rules:
  - record: gpu_operator:cost:rate1h
    expr: sum(rate(gpu_operator_cost_dollars_total[1h]))
  - alert: GPUOperatorSlowReady
    expr: histogram_quantile(0.9, sum by (le) (rate(gpu_operator_time_to_ready_seconds_bucket[15m]))) > 600
    labels: {job: gpu-operator}
`
	dashboard := `{"panels": [{"targets": [{"expr": "sum(workqueue_depth{name=\"gpurequests\"})"}, {"expr": "gpu_operator:cost:rate1h"}]}]}`
	if err := os.WriteFile(filepath.Join(dir, "rules.yaml"), []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "dashboard.json"), []byte(dashboard), 0o644); err != nil {
		t.Fatal(err)
	}
	got := slices.Sorted(maps.Keys(usedMetrics(dir)))
	want := []string{"gpu_operator_cost_dollars_total", "gpu_operator_time_to_ready_seconds_bucket", "workqueue_depth"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// descendants returns every process below pid, with its command name.
func descendants(pid int) map[int]string {
	out := map[int]string{}
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for c, comm := range childPIDs(p) {
			if _, seen := out[c]; !seen {
				out[c] = comm
				queue = append(queue, c)
			}
		}
	}
	return out
}

// listeningPorts returns the TCP ports the processes listen on: their
// socket inodes matched against /proc/net/tcp{,6} entries in LISTEN state.
func listeningPorts(procs map[int]string) []int {
	inodes := map[string]bool{}
	for pid := range procs {
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		for _, fd := range fds {
			link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
			if err == nil && strings.HasPrefix(link, "socket:[") {
				inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] = true
			}
		}
	}
	var ports []int
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		for i, line := range strings.Split(readFile(table), "\n") {
			f := strings.Fields(line)
			if i == 0 || len(f) < 10 || f[3] != "0A" || !inodes[f[9]] { // 0A: LISTEN
				continue
			}
			_, hexPort, _ := strings.Cut(f[1], ":")
			if p, err := strconv.ParseInt(hexPort, 16, 32); err == nil && !slices.Contains(ports, int(p)) {
				ports = append(ports, int(p))
			}
		}
	}
	slices.Sort(ports)
	return ports
}

func mapValues(m map[int]string) []string {
	out := make([]string, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

func readFile(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(data)
}
