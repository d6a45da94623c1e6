package main

import (
	"bufio"
	"context"
	"encoding/json"
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

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/controller"
	"github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/testenv"
)

// expectation is what an example must end up with on hack/demo/catalog.json
// (its note says why): Ready on one offer, or Pending with a reason.
type expectation struct {
	phase        tgpv1.Phase
	provider     string
	instanceType string
	region       string // canonical
	price        float64
	container    bool
	spot         bool
	// pendingReason must be in status.message of a Pending request.
	pendingReason string
}

var expected = map[string]expectation{
	// An on-demand VM that joins as a Node.
	"multi-gpu-training": {phase: tgpv1.PhaseReady, provider: "lambdalabs", instanceType: "gpu_4x_a100", region: "us-east-1", price: 5.16},
	// Its first choice (us-west-1) sold out after the catalog read: it fails
	// over to us-east-1. spotInstance with maxPrice gets on-demand.
	"region-aware-job": {phase: tgpv1.PhaseReady, provider: "lambdalabs", instanceType: "gpu_1x_h100_pcie", region: "us-east-1", price: 2.49},
	// A cloud-init bootstrap: Lambda runs it, Paperspace (bash only) cannot.
	"bootstrapped-inference": {phase: tgpv1.PhaseReady, provider: "lambdalabs", instanceType: "gpu_1x_a6000", region: "us-east-1", price: 0.80},
	// The default bash bootstrap on Paperspace.
	"dev-box": {phase: tgpv1.PhaseReady, provider: "paperspace", instanceType: "A4000", region: "us-east-1", price: 0.76},
	// A RunPod container in US-CA-2.
	"container-notebook": {phase: tgpv1.PhaseReady, provider: "runpod", instanceType: "NVIDIA GeForce RTX 4090", region: "us-west-1", price: 0.69, container: true},
	// A Vast.ai interruptible VM (a bid), outbid by the demo beyond its spot
	// cap and relaunched on the other host (ask 1002, min bid 0.20) at a bid
	// of 0.21.
	"spot-training-job": {phase: tgpv1.PhaseReady, provider: "vastai", instanceType: "1002", region: "us-west-2", price: 0.21, spot: true},
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

	// Wait for the story to finish: every example settled, one recovery.
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
	t.Logf("demo wall time to recovery: %s (setup %.1fs, all settled %.1fs after apply, recovery %.1fs)",
		wall.Round(100*time.Millisecond), state.SetupSeconds, state.AllReadySeconds, state.RecoverySeconds)

	checkRequests(t, state)
	checkMetrics(t, root, state.MetricsURL)
	// The budget step: held naming the budget and its limit, then Ready.
	if !strings.Contains(state.BudgetHeld, "held by GPUBudget "+budgetName+" (maxHourlySpend)") || state.BudgetReleaseSeconds <= 0 {
		t.Errorf("budget step: held %q, released after %.1fs; want held by GPUBudget %s (maxHourlySpend), then released",
			state.BudgetHeld, state.BudgetReleaseSeconds, budgetName)
	}

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

// buildBinaries builds the binaries the demo needs from this source into a
// temporary directory: the demo, the operator and the simulator (a stale
// bin/gpu-operator or bin/cloudsim would test old code; go's build cache
// makes this cheap). The control-plane tools come from `make tools`
// (hack/build-tools.sh).
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
	bins := map[string]string{}
	for name, pkg := range map[string]string{"demo": "./hack/demo", "gpu-operator": "./cmd/gpu-operator", "cloudsim": "./cmd/cloudsim"} {
		bins[name] = filepath.Join(tmp, filepath.Base(pkg))
		if name == "demo" {
			bins[name] = filepath.Join(tmp, "gpu-operator-demo")
		}
		run(t, root, "go", "build", "-o", bins[name], pkg)
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

// checkRequests asserts what each example ended up with, the failover and
// the interruption, against the API server and the simulators' admin API.
func checkRequests(t *testing.T, state *State) {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", state.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	client := versioned.NewForConfigOrDie(cfg)
	kube := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	list, err := client.TgpV1().GPURequests(requestNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]tgpv1.GPURequest{}
	for _, r := range list.Items {
		got[r.Name] = r
	}
	if len(got) != len(expected) {
		t.Errorf("%d GPURequests, want the %d examples: %v", len(got), len(expected), slices.Sorted(maps.Keys(got)))
	}
	machines := adminMachines(t, state.AdminURL)
	// Every VM joined by TLS bootstrap: its Node's credentials came from an
	// approved kubelet CSR made with its minted token, which is gone.
	issued, err := kubeletCSRs(ctx, kube)
	if err != nil {
		t.Fatal(err)
	}
	if tokens, err := kube.CoreV1().Secrets(controller.TokenNamespace).List(ctx, metav1.ListOptions{LabelSelector: controller.LabelTokenMachine}); err != nil || len(tokens.Items) != 0 {
		t.Errorf("join tokens left with every VM Ready: %v %v", err, tokens)
	}
	for name, want := range expected {
		r, ok := got[name]
		if !ok {
			t.Errorf("%s: not found", name)
			continue
		}
		st := r.Status
		if want.phase == tgpv1.PhasePending {
			if st.Phase != tgpv1.PhasePending || !strings.Contains(st.Message, want.pendingReason) || st.Provider != "" || st.MachineName != "" {
				t.Errorf("%s: got phase %s provider %q machine %q message %q; want Pending with %s and no machine",
					name, st.Phase, st.Provider, st.MachineName, st.Message, want.pendingReason)
			}
			if c := meta.FindStatusCondition(st.Conditions, tgpv1.ConditionOffersAvailable); c == nil || c.Status != metav1.ConditionFalse {
				t.Errorf("%s: OffersAvailable %+v, want False", name, c)
			}
			for _, m := range machines {
				if strings.HasPrefix(m.Name, machinePrefix(&r)) {
					t.Errorf("%s: the simulators have a machine %s/%s for it", name, m.Provider, m.Name)
				}
			}
			continue
		}
		if st.Phase != want.phase || st.Provider != want.provider || st.InstanceType != want.instanceType || st.Spot != want.spot ||
			st.HourlyPrice == nil || *st.HourlyPrice != want.price || st.Region != want.region {
			t.Errorf("%s: got phase %s %s %s in %s spot %v at %v; want %s %s %s in %s spot %v at %v",
				name, st.Phase, st.Provider, st.InstanceType, st.Region, st.Spot, price(st.HourlyPrice),
				want.phase, want.provider, want.instanceType, want.region, want.spot, want.price)
		}
		if want.container {
			if st.NodeName != "" || len(st.Ports) != 1 || st.Ports[0].Port != 8888 || st.Ports[0].PublicIP == "" || st.Ports[0].PublicPort == 0 {
				t.Errorf("%s: node %q ports %+v; want no Node and port 8888 with a public address", name, st.NodeName, st.Ports)
			}
		} else if st.NodeName == "" {
			t.Errorf("%s: no Node", name)
		} else if n, err := kube.CoreV1().Nodes().Get(ctx, st.NodeName, metav1.GetOptions{}); err != nil {
			t.Errorf("%s: Node %s: %v", name, st.NodeName, err)
		} else if n.Labels["tgp.solanyn.com/request"] != name {
			t.Errorf("%s: Node %s labels %v, want tgp.solanyn.com/request=%s", name, n.Name, n.Labels, name)
		} else if csr, ok := issued[n.Name]; !ok || !strings.Contains(csr, " by system:bootstrap:") {
			t.Errorf("%s: Node %s has no approved kubelet CSR made with a bootstrap token (%q)", name, n.Name, csr)
		}
		wantInterruptions := int32(0)
		if name == state.Interrupted {
			wantInterruptions = 1
		}
		if st.Interruptions != wantInterruptions {
			t.Errorf("%s: interruptions %d, want %d", name, st.Interruptions, wantInterruptions)
		}
		// Exactly one live machine per Ready request: the current one.
		var live []string
		for _, m := range machines {
			if m.Live && strings.HasPrefix(m.Name, machinePrefix(&r)) {
				live = append(live, m.Provider+"/"+m.Name)
			}
		}
		if len(live) != 1 || live[0] != st.Provider+"/"+st.MachineName {
			t.Errorf("%s: live machines %v, want only %s/%s", name, live, st.Provider, st.MachineName)
		}
	}

	// The failover: the launch in the sold-out region was refused for
	// capacity, nothing was created there, and the request moved on.
	if state.SoldOut != "region-aware-job" {
		t.Errorf("the demo sold out the first choice of %q, want region-aware-job", state.SoldOut)
	}
	evs, err := kube.CoreV1().Events(requestNamespace).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=region-aware-job,reason=LaunchFailed"})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs.Items) != 1 || !strings.Contains(evs.Items[0].Message, "lambdalabs/gpu_1x_h100_pcie/us-west-1") || !strings.Contains(evs.Items[0].Message, "capacity") {
		t.Errorf("region-aware-job LaunchFailed Events: %v; want one for lambdalabs/gpu_1x_h100_pcie/us-west-1 naming capacity", eventMessages(evs))
	}
	for _, m := range machines {
		if m.Provider == "lambdalabs" && m.Region == "us-west-1" && m.InstanceType == "gpu_1x_h100_pcie" {
			t.Errorf("a machine was created in the sold-out region: %+v", m)
		}
	}

	// The interruption: a higher bid stopped the spot VM on Vast.ai host
	// 1001, beyond what the spot cap can outbid; the operator destroyed it
	// and relaunched on host 1002.
	if state.Interrupted != "spot-training-job" {
		t.Errorf("the demo interrupted %q, want spot-training-job", state.Interrupted)
	}
	spot := got["spot-training-job"]
	var vms []string
	for _, m := range machines {
		if m.Provider == "vastai" && strings.HasPrefix(m.Name, machinePrefix(&spot)) {
			vms = append(vms, fmt.Sprintf("%s live=%v preempted=%v", m.InstanceType, m.Live, m.Preempted))
		}
	}
	slices.Sort(vms)
	if !slices.Equal(vms, []string{"1001 live=false preempted=true", "1002 live=true preempted=false"}) {
		t.Errorf("spot-training-job's Vast.ai instances: %v; want the outbid one on host 1001 destroyed and a live one on 1002", vms)
	}
	// What RunPod was asked to run: the example's image, args, literal env,
	// the token from the demo's Secret, and the port.
	secret, err := kube.CoreV1().Secrets(requestNamespace).Get(ctx, notebookSecret, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	creates := adminCreates(t, state.AdminURL)
	if len(creates) != 1 {
		t.Errorf("%d RunPod creates, want 1 (the notebook)", len(creates))
	}
	for _, c := range creates {
		if c.Image != "quay.io/jupyter/pytorch-notebook:cuda12-latest" || !strings.Contains(c.Args, "start-notebook.py") ||
			c.Env["JUPYTER_PORT"] != "8888" || c.Env["JUPYTER_TOKEN"] != string(secret.Data["token"]) || len(secret.Data["token"]) == 0 ||
			!slices.Equal(c.Ports, []string{"8888/http"}) {
			t.Errorf("RunPod create %+v (env keys %v); want the example's image, args, env (token from Secret %s) and port 8888/http",
				c, slices.Sorted(maps.Keys(c.Env)), notebookSecret)
		}
	}
}

// machinePrefix is the start of every machine name of a request: the
// operator's prefix, the first 16 hex digits of its UID, "-" (the attempt
// follows; pkg/controller machineName).
func machinePrefix(r *tgpv1.GPURequest) string {
	id := strings.ReplaceAll(string(r.UID), "-", "")
	return providers.MachineNamePrefix + id[:min(16, len(id))] + "-"
}

// adminMachines lists the simulators' machines through the admin API.
func adminMachines(t *testing.T, adminURL string) []cloudsim.Machine {
	t.Helper()
	var ms []cloudsim.Machine
	adminGet(t, adminURL+"/machines", &ms)
	return ms
}

// podCreate is the part of a RunPod create body the demo checks.
type podCreate struct {
	Image string            `json:"image"`
	Args  string            `json:"args"`
	Env   map[string]string `json:"env"`
	Ports []string          `json:"ports"`
}

func adminCreates(t *testing.T, adminURL string) []podCreate {
	t.Helper()
	var cs []podCreate
	adminGet(t, adminURL+"/runpod/creates", &cs)
	return cs
}

func adminGet(t *testing.T, u string, into any) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", u, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(into); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}

func eventMessages(evs *corev1.EventList) []string {
	var out []string
	for _, e := range evs.Items {
		out = append(out, e.Message)
	}
	return out
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
