package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/bootstrap"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned"
	tgpinformers "github.com/solanyn/gpu-operator/pkg/generated/informers/externalversions"
	tgplisters "github.com/solanyn/gpu-operator/pkg/generated/listers/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// The template-bomb run: one tenant (bombNamespace) names bootstrap
// Secrets whose templates would run for ever, render tens of megabytes or
// blow the parser's stack, while another tenant (normalNamespace) asks for
// ordinary machines at the same time. It measures how soon each bomb is
// refused, how soon the other tenant's requests are Ready, the operator's
// memory and CPU, and how soon it exits after SIGTERM; the same run
// without bombs is the baseline.

const (
	bombNamespace   = "tenant-a"
	normalNamespace = "tenant-b"
	// bombMarker is in every bomb template: no status, condition or Event
	// may quote it.
	bombMarker = "bomb-template-5e2a91"
	// operatorLabels is how many labels the operator adds to a request's
	// nodeLabels in the template's .Labels (nodeLabels in pkg/controller:
	// request-uid, request, request-namespace, provider, region, gpu-type,
	// spot).
	operatorLabels = 7
	// bombOutputBytes is what the "large output" variant would render
	// without the output limit.
	bombOutputBytes = 27_000_000
)

// bombVariant is one hostile template in the two formats the VM providers
// run: cloud-init (Lambda) and a bash script (Paperspace runs only
// scripts). Each is kept in its own Secret (the 1 MiB one fills a Secret
// on its own), under the key userdata.
type bombVariant struct {
	Name   string
	Secret string // the cloud-init one; the script's is Secret + "-script"
	Text   string // cloud-init
	Script string
}

// bombFormats are the formats a bomb request's template comes in, in turn,
// with the GPU type that takes it to the provider that runs that format:
// cloud-init to Lambda's A6000, a script to Paperspace's A4000.
var bombFormats = []struct{ suffix, gpuType, provider string }{
	{"", "A6000", providers.LambdaLabs},
	{"-script", "A4000", providers.Paperspace},
}

// bombVariants are the templates, for requests with nodeLabels labels.
func bombVariants(nodeLabels int) []bombVariant {
	n := nodeLabels + operatorLabels
	cube := n * n * n
	body := (bombOutputBytes + cube - 1) / cube
	texts := func(head string) []string {
		return []string{
			head + nestedActions(8, "{{range $.Labels}}", "- {{.}}\n"),
			head + nestedActions(3, "{{range $.Labels}}", strings.Repeat("#", body)),
			head + `{{printf "%0999999999d" 1}}`,
			head + nestedActions(10_000, "{{if 1}}", "x"),
			head + strings.Repeat("{{1}}", (bootstrap.MaxTemplateBytes-len(head))/5),
		}
	}
	cloudInit := texts("#cloud-config\n# " + bombMarker + "\n")
	script := texts("#!/bin/bash\n# " + bombMarker + "\n")
	out := []bombVariant{
		{Name: "8 nested `range $.Labels`", Secret: "bomb-ranges"},
		{Name: fmt.Sprintf("3 nested ranges, %.1f MB of output", float64(cube*body)/1e6), Secret: "bomb-output"},
		{Name: "`printf \"%0999999999d\"`", Secret: "bomb-printf"},
		{Name: "10,000 nested `if`", Secret: "bomb-ifs"},
		{Name: "1 MiB of actions", Secret: "bomb-actions"},
	}
	for i := range out {
		out[i].Text, out[i].Script = cloudInit[i], script[i]
	}
	return out
}

// bombSpec is the spec of the i-th bomb request: variant i%len(variants),
// in the format bombFormats[(i/len(variants))%2].
func bombSpec(i, nvariants, nodeLabels int, variants []bombVariant) tgpv1.GPURequestSpec {
	f := bombFormats[(i/nvariants)%len(bombFormats)]
	return tgpv1.GPURequestSpec{GPUType: f.gpuType, GPUCount: 1, NodeLabels: bombLabels(nodeLabels),
		Bootstrap: &tgpv1.BootstrapSource{SecretName: variants[i%nvariants].Secret + f.suffix, Key: "userdata"}}
}

// nestedActions wraps body in n levels of open ... {{end}}.
func nestedActions(n int, open, body string) string {
	return strings.Repeat(open, n) + body + strings.Repeat("{{end}}", n)
}

func bombLabels(n int) map[string]tgpv1.LabelValue {
	l := make(map[string]tgpv1.LabelValue, n)
	for i := range n {
		l[fmt.Sprintf("example.com/l%02d", i)] = fmt.Sprintf("v%02d", i)
	}
	return l
}

// renderAlone times pkg/bootstrap alone on a variant, in this process, with
// the data a bomb request gives it: the cloud-init text at Lambda's
// user-data limit, the script at Paperspace's; it returns the slowest and
// the classes.
func renderAlone(v bombVariant, nodeLabels int) (time.Duration, []string) {
	l := bombLabels(nodeLabels)
	for _, k := range []string{"request-uid", "request", "request-namespace", "provider", "region", "gpu-type", "spot"} {
		l["tgp.solanyn.com/"+k] = "0123456789abcdef0123456789abcdef"
	}
	data := bootstrap.Data{NodeName: "gpur-0123456789abcdef-1", RequestName: "bomb-000", RequestNamespace: bombNamespace,
		Provider: providers.LambdaLabs, Region: "us-east-1", Labels: l, KubeletLabels: bootstrap.KubeletLabels(l)}
	var slowest time.Duration
	var classes []string
	for _, f := range bombFormats {
		text := v.Text
		if f.suffix != "" {
			text = v.Script
		}
		start := time.Now()
		_, err := bootstrap.Render(text, data, bootstrap.Limits{MaxBytes: providers.UserDataLimit(f.provider)})
		slowest = max(slowest, time.Since(start))
		class := "rendered"
		var berr *bootstrap.Error
		if errors.As(err, &berr) {
			class = berr.Class
		}
		if !slices.Contains(classes, class) {
			classes = append(classes, class)
		}
	}
	return slowest, classes
}

// bombConfig sizes a template-bomb run.
type bombConfig struct {
	Bombs      int // requests in bombNamespace, cycling through the variants (0: the baseline)
	Normal     int // plain requests in normalNamespace, created at the same time
	NodeLabels int // nodeLabels on every bomb request
	// Hold keeps the operator running after everything settled, with its
	// CPU measured; over a minute (bootstrapRetry in pkg/controller) it
	// includes one retry, so one more render, of every bomb.
	Hold time.Duration
	// Settle bounds the wait for every bomb refused and every normal
	// request Ready.
	Settle time.Duration
	// StopTimeout is how long SIGTERM may take before SIGKILL.
	StopTimeout time.Duration
	Logf        func(string, ...any)
}

// variantResult is what the operator did with one variant.
type variantResult struct {
	Name        string
	Bytes       int
	Requests    int
	Classes     map[string]int // error classes in the requests' messages
	Refusal     []time.Duration
	RenderAlone time.Duration // pkg/bootstrap in this process, the slower of its two formats at their providers' limits
	AloneClass  []string
}

// bombResult is what one template-bomb run measured.
type bombResult struct {
	Bombs, Normal, NodeLabels int
	Hold                      time.Duration
	Variants                  []variantResult

	Refused        int
	Refusal        []time.Duration // per bomb: create call to Launched=False, reason BootstrapError
	NormalReady    []time.Duration // per normal request: create call to Ready
	AllNormalReady time.Duration   // first create call to the last normal request Ready
	Settled        time.Duration   // first create call to everything settled

	IdleRSS    int64         // VmHWM at /readyz, before any request
	PeakRSS    int64         // VmHWM after the hold, just before SIGTERM
	ExitMaxRSS int64         // ru_maxrss after exit
	CPU        time.Duration // operator CPU, first create call to settled
	HoldCPU    time.Duration
	Syncs      syncStats // during the attack, first create call to settled
	HoldSyncs  syncStats

	Launches     int
	BombLaunches []string // machine names of bomb requests the simulators launched
	Leaks        []string // statuses and Events quoting a template

	Stop     time.Duration // SIGTERM to exit
	ExitCode int
	Killed   bool // still running StopTimeout after SIGTERM
	Err      error
}

// problems lists what must not happen: a bomb not refused or launched, a
// normal request not Ready, template text in an API object, an operator
// that panicked, died or ignored SIGTERM.
func (r *bombResult) problems() []string {
	var out []string
	if r.Err != nil {
		out = append(out, r.Err.Error())
	}
	if r.Refused != r.Bombs {
		out = append(out, fmt.Sprintf("%d/%d bomb requests refused with Launched=False, reason BootstrapError", r.Refused, r.Bombs))
	}
	if len(r.NormalReady) != r.Normal {
		out = append(out, fmt.Sprintf("%d/%d normal requests Ready", len(r.NormalReady), r.Normal))
	}
	if len(r.BombLaunches) > 0 {
		out = append(out, fmt.Sprintf("machines launched for bomb requests: %v", r.BombLaunches))
	}
	if r.Launches != r.Normal {
		out = append(out, fmt.Sprintf("%d launches, want %d (one per normal request)", r.Launches, r.Normal))
	}
	if len(r.Leaks) > 0 {
		out = append(out, fmt.Sprintf("template text in API objects: %v", r.Leaks))
	}
	if r.Killed {
		out = append(out, "operator still running after SIGTERM; killed")
	} else if r.ExitCode != 0 {
		out = append(out, fmt.Sprintf("operator exited %d after SIGTERM, want 0", r.ExitCode))
	}
	return out
}

// syncStats summarises the operator's gpu_operator_sync_duration_seconds
// between two scrapes.
type syncStats struct {
	Count float64
	Sum   float64 // seconds
	// Within is the smallest bucket bound that holds every sync of the
	// interval (+Inf when one was over the last bound).
	Within float64
}

func (s syncStats) String() string {
	if s.Count == 0 {
		return "0 syncs"
	}
	within := "over 16 s"
	if !math.IsInf(s.Within, 1) {
		within = fmt.Sprintf("all ≤ %g s", s.Within)
	}
	return fmt.Sprintf("%.0f syncs, mean %.1f ms, %s", s.Count, 1000*s.Sum/s.Count, within)
}

type syncScrape struct {
	count, sum float64
	buckets    map[float64]float64
}

func scrapeSyncs(ctx context.Context, metricsAddr string) (syncScrape, error) {
	out := syncScrape{buckets: map[float64]float64{}}
	body, err := httpGet(ctx, "http://"+metricsAddr+"/metrics")
	if err != nil {
		return out, err
	}
	const name = "gpu_operator_sync_duration_seconds"
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name) {
			continue
		}
		sp := strings.LastIndexByte(line, ' ')
		if sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[sp+1:], 64)
		if err != nil {
			continue
		}
		switch key := line[:sp]; {
		case key == name+"_count":
			out.count = v
		case key == name+"_sum":
			out.sum = v
		case strings.HasPrefix(key, name+"_bucket{"):
			le := parseLabels(strings.TrimSuffix(strings.TrimPrefix(key, name+"_bucket{"), "}"))["le"]
			bound, err := strconv.ParseFloat(le, 64) // "+Inf" parses as +Inf
			if err == nil {
				out.buckets[bound] = v
			}
		}
	}
	return out, nil
}

func syncDelta(a, b syncScrape) syncStats {
	s := syncStats{Count: b.count - a.count, Sum: b.sum - a.sum, Within: math.Inf(1)}
	bounds := make([]float64, 0, len(b.buckets))
	for bound := range b.buckets {
		bounds = append(bounds, bound)
	}
	sort.Float64s(bounds)
	for _, bound := range bounds {
		if b.buckets[bound]-a.buckets[bound] >= s.Count {
			s.Within = bound
			break
		}
	}
	return s
}

// outcomeWatcher follows every GPURequest through a watch and records
// when each was first seen refused (Launched=False, reason BootstrapError)
// and first seen Ready.
type outcomeWatcher struct {
	lister tgplisters.GPURequestLister

	mu      sync.Mutex
	refused map[string]time.Time
	ready   map[string]time.Time
}

func refusedByBootstrap(r *tgpv1.GPURequest) bool {
	c := meta.FindStatusCondition(r.Status.Conditions, tgpv1.ConditionLaunched)
	return c != nil && c.Status == metav1.ConditionFalse && c.Reason == "BootstrapError"
}

func watchOutcomes(ctx context.Context, client versioned.Interface) (*outcomeWatcher, error) {
	f := tgpinformers.NewSharedInformerFactory(client, 0)
	inf := f.Tgp().V1().GPURequests()
	w := &outcomeWatcher{lister: inf.Lister(), refused: map[string]time.Time{}, ready: map[string]time.Time{}}
	observe := func(obj any) {
		r, ok := obj.(*tgpv1.GPURequest)
		if !ok {
			return
		}
		now := time.Now()
		key := r.Namespace + "/" + r.Name
		w.mu.Lock()
		defer w.mu.Unlock()
		if _, seen := w.refused[key]; !seen && refusedByBootstrap(r) {
			w.refused[key] = now
		}
		if _, seen := w.ready[key]; !seen && r.Status.Phase == tgpv1.PhaseReady {
			w.ready[key] = now
		}
	}
	if err := startObserving(ctx, f, inf, observe); err != nil {
		return nil, err
	}
	return w, nil
}

// counts returns how many requests of ns were refused and how many Ready.
func (w *outcomeWatcher) counts(ns string) (refused, ready int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	prefix := ns + "/"
	for k := range w.refused {
		if strings.HasPrefix(k, prefix) {
			refused++
		}
	}
	for k := range w.ready {
		if strings.HasPrefix(k, prefix) {
			ready++
		}
	}
	return refused, ready
}

func (w *outcomeWatcher) times() (refused, ready map[string]time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.refused), maps.Clone(w.ready)
}

// createTimed creates reqs in order from workers goroutines and returns
// when each create call was sent, by namespace/name.
func createTimed(ctx context.Context, client versioned.Interface, reqs []*tgpv1.GPURequest, workers int) (map[string]time.Time, error) {
	sent := make([]time.Time, len(reqs))
	err := createRequests(ctx, client, len(reqs), workers, func(i int) *tgpv1.GPURequest {
		sent[i] = time.Now() // each index is taken by one worker
		return reqs[i]
	})
	out := make(map[string]time.Time, len(reqs))
	for i, r := range reqs {
		out[r.Namespace+"/"+r.Name] = sent[i]
	}
	return out, err
}

// interleave spreads b evenly among a, keeping each one's order.
func interleave(a, b []*tgpv1.GPURequest) []*tgpv1.GPURequest {
	type item struct {
		pos float64
		r   *tgpv1.GPURequest
	}
	var items []item
	for i, r := range a {
		items = append(items, item{(float64(i) + 0.5) / float64(len(a)), r})
	}
	for i, r := range b {
		items = append(items, item{(float64(i) + 0.5) / float64(len(b)), r})
	}
	sort.SliceStable(items, func(i, j int) bool { return items[i].pos < items[j].pos })
	out := make([]*tgpv1.GPURequest, len(items))
	for i, it := range items {
		out[i] = it.r
	}
	return out
}

var errorClass = regexp.MustCompile(`bootstrap template(?: line \d+)?: ([A-Za-z]+):`)

// runBomb runs the operator with cfg.Bombs hostile requests in
// bombNamespace and cfg.Normal plain ones in normalNamespace, created at
// once and interleaved; then holds, then sends SIGTERM.
func runBomb(ctx context.Context, bin string, cfg bombConfig) (res bombResult) {
	logf := cfg.Logf
	res = bombResult{Bombs: cfg.Bombs, Normal: cfg.Normal, NodeLabels: cfg.NodeLabels, Hold: cfg.Hold}
	logf("bomb: %d bomb requests (%d nodeLabels each) in %s, %d normal requests in %s, hold %s",
		cfg.Bombs, cfg.NodeLabels, bombNamespace, cfg.Normal, normalNamespace, cfg.Hold)
	c, err := startCluster(ctx)
	if err != nil {
		res.Err = err
		return res
	}
	defer c.stop()
	for _, ns := range []string{bombNamespace, normalNamespace} {
		_, err := c.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			res.Err = err
			return res
		}
	}
	s := startSims(simConfigs(benchCatalog(), simKeys, cloudsim.Faults{}, 1))
	defer s.close()
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	startNodeRegistrar(actx, c, s, 16)

	variants := bombVariants(cfg.NodeLabels)
	if cfg.Bombs > 0 {
		for _, v := range variants {
			for name, text := range map[string]string{v.Secret: v.Text, v.Secret + "-script": v.Script} {
				sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: bombNamespace,
					Labels: map[string]string{"tgp.solanyn.com/bootstrap": "true"}},
					Data: map[string][]byte{"userdata": []byte(text)}}
				if _, err := c.kube.CoreV1().Secrets(bombNamespace).Create(ctx, sec, metav1.CreateOptions{}); err != nil {
					res.Err = fmt.Errorf("creating Secret %s (%d bytes): %w", name, len(text), err)
					return res
				}
			}
			alone, classes := renderAlone(v, cfg.NodeLabels)
			res.Variants = append(res.Variants, variantResult{Name: v.Name, Bytes: len(v.Text), Classes: map[string]int{},
				RenderAlone: alone, AloneClass: classes})
		}
	}

	args := append(append(c.operatorArgs(), "--leader-elect=false",
		"--kube-api-qps", fmt.Sprint(kubeQPS), "--kube-api-burst", fmt.Sprint(kubeBurst),
		"--poll-interval", "2s"), s.operatorArgs()...)
	op, err := startOperator(bin, args, keyEnv(simKeys))
	if err != nil {
		res.Err = err
		return res
	}
	signalled := false
	defer func() {
		if !signalled {
			op.stop(5 * time.Second)
		}
	}()
	if err := op.waitReady(ctx, time.Minute); err != nil {
		res.Err = err
		return res
	}
	// Requests created before the first catalog would wait for it
	// (NoCatalog): a startup delay, not what this run measures.
	if err := waitCatalogs(ctx, op, time.Minute); err != nil {
		res.Err = err
		return res
	}
	pid := op.pid()
	res.IdleRSS, _ = procHWM(pid)
	w, err := watchOutcomes(actx, c.client)
	if err != nil {
		res.Err = err
		return res
	}

	var bombs, normals []*tgpv1.GPURequest
	variantOf := map[string]int{} // bomb request name to its variant
	for i := range cfg.Bombs {
		variantOf[fmt.Sprintf("bomb-%03d", i)] = i % len(variants)
		bombs = append(bombs, &tgpv1.GPURequest{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("bomb-%03d", i), Namespace: bombNamespace},
			Spec:       bombSpec(i, len(variants), cfg.NodeLabels, variants),
		})
	}
	for i := range cfg.Normal {
		normals = append(normals, &tgpv1.GPURequest{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("normal-%03d", i), Namespace: normalNamespace},
			Spec:       benchSpec(i),
		})
	}

	// A dry-run create in each namespace first: the API server's first
	// GPURequest create in a fresh namespace takes about 2 s (its own
	// warm-up, the operator is not involved), which is not what this run
	// measures.
	for _, ns := range []string{bombNamespace, normalNamespace} {
		r := &tgpv1.GPURequest{ObjectMeta: metav1.ObjectMeta{Name: "warm-up", Namespace: ns}, Spec: tgpv1.GPURequestSpec{GPUType: "A6000", GPUCount: 1}}
		if _, err := c.client.TgpV1().GPURequests(ns).Create(ctx, r, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			res.Err = fmt.Errorf("dry-run create: %w", err)
			return res
		}
	}
	cpu0, _ := procCPU(pid)
	sync0, _ := scrapeSyncs(ctx, op.metricsAddr)
	start := time.Now()
	sent, err := createTimed(ctx, c.client, interleave(bombs, normals), 8)
	if err != nil {
		res.Err = err
		return res
	}
	logf("  created %d requests in %s", len(sent), fine(time.Since(start)))
	lastLog := time.Now()
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, cfg.Settle, true, func(context.Context) (bool, error) {
		if !op.running() {
			return false, fmt.Errorf("operator exited: %v\n%s", op.waitErr, tail(op.logs.String(), 30))
		}
		refused, _ := w.counts(bombNamespace)
		_, ready := w.counts(normalNamespace)
		if time.Since(lastLog) > 10*time.Second {
			logf("  %d/%d bombs refused, %d/%d normal Ready", refused, cfg.Bombs, ready, cfg.Normal)
			lastLog = time.Now()
		}
		return refused >= cfg.Bombs && ready >= cfg.Normal, nil
	})
	settled := time.Now()
	res.Settled = settled.Sub(start)
	if err != nil {
		res.Err = fmt.Errorf("not settled within %s: %w\noperator log tail:\n%s", cfg.Settle, err, tail(op.logs.String(), 20))
	}
	cpu1, _ := procCPU(pid)
	sync1, _ := scrapeSyncs(ctx, op.metricsAddr)
	res.CPU, res.Syncs = cpu1-cpu0, syncDelta(sync0, sync1)

	refusedAt, readyAt := w.times()
	for i, b := range bombs {
		key := b.Namespace + "/" + b.Name
		if at, ok := refusedAt[key]; ok {
			d := at.Sub(sent[key])
			res.Refused++
			res.Refusal = append(res.Refusal, d)
			v := &res.Variants[i%len(variants)]
			v.Refusal = append(v.Refusal, d)
		}
		res.Variants[i%len(variants)].Requests++
	}
	for _, n := range normals {
		key := n.Namespace + "/" + n.Name
		if at, ok := readyAt[key]; ok {
			res.NormalReady = append(res.NormalReady, at.Sub(sent[key]))
			res.AllNormalReady = max(res.AllNormalReady, at.Sub(start))
		}
	}
	logf("  %d/%d bombs refused (p50 %s, max %s), %d/%d normal Ready (p50 %s, max %s, all %s); operator CPU %s",
		res.Refused, cfg.Bombs, fine(pct(res.Refusal, 0.5)), fine(pct(res.Refusal, 1)),
		len(res.NormalReady), cfg.Normal, fine(pct(res.NormalReady, 0.5)), fine(pct(res.NormalReady, 1)), fine(res.AllNormalReady), fine(res.CPU))

	if cfg.Hold > 0 && res.Err == nil {
		logf("  holding %s", cfg.Hold)
		hold := time.NewTimer(cfg.Hold)
		select {
		case <-ctx.Done():
			hold.Stop()
			res.Err = ctx.Err()
		case <-op.exited:
			hold.Stop()
			res.Err = fmt.Errorf("operator exited during the hold: %v\n%s", op.waitErr, tail(op.logs.String(), 30))
		case <-hold.C:
		}
		cpu2, _ := procCPU(pid)
		sync2, _ := scrapeSyncs(ctx, op.metricsAddr)
		res.HoldCPU, res.HoldSyncs = cpu2-cpu1, syncDelta(sync1, sync2)
	}
	res.PeakRSS, _ = procHWM(pid)

	// What the simulators launched, and for whom.
	res.Launches, _ = launchStats(s.counters())
	all, _ := w.lister.List(labels.Everything())
	prefixes := map[string]string{}
	for _, r := range all {
		if r.Namespace != bombNamespace {
			continue
		}
		id := strings.ReplaceAll(string(r.UID), "-", "")
		prefixes[providers.MachineNamePrefix+id[:min(16, len(id))]+"-"] = r.Name
		msgs := []string{r.Status.Message}
		for _, cnd := range r.Status.Conditions {
			msgs = append(msgs, cnd.Message)
		}
		for _, m := range msgs {
			if strings.Contains(m, bombMarker) || strings.Contains(m, "{{") {
				res.Leaks = append(res.Leaks, "status of "+r.Name)
				break
			}
		}
		if m := errorClass.FindStringSubmatch(r.Status.Message); m != nil {
			if i, ok := variantOf[r.Name]; ok {
				res.Variants[i].Classes[m[1]]++
			}
		}
	}
	for _, cs := range s.counters() {
		for name := range cs.Launches {
			for p, req := range prefixes {
				if strings.HasPrefix(name, p) {
					res.BombLaunches = append(res.BombLaunches, req+": "+name)
				}
			}
		}
	}
	sort.Strings(res.BombLaunches)
	if evs, err := c.kube.CoreV1().Events(bombNamespace).List(ctx, metav1.ListOptions{}); err == nil {
		for _, e := range evs.Items {
			if strings.Contains(e.Message, bombMarker) || strings.Contains(e.Message, "{{") {
				res.Leaks = append(res.Leaks, "Event "+e.Name)
			}
		}
	} else {
		res.Err = errors.Join(res.Err, fmt.Errorf("listing Events: %w", err))
	}

	// SIGTERM, once, and the time to exit.
	signalled = true
	t0 := time.Now()
	if err := op.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		res.Err = errors.Join(res.Err, fmt.Errorf("SIGTERM: %w", err))
	}
	select {
	case <-op.exited:
		res.Stop = time.Since(t0)
	case <-time.After(cfg.StopTimeout):
		res.Stop, res.Killed = time.Since(t0), true
		op.kill()
	}
	res.ExitCode = op.cmd.ProcessState.ExitCode()
	if ru, ok := op.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		res.ExitMaxRSS = ru.Maxrss * 1024
	}
	if out := op.logs.String(); containsPanic(out) {
		res.Err = errors.Join(res.Err, fmt.Errorf("operator panicked:\n%s", tail(out, 40)))
	}
	logf("  peak RSS %s (idle %s), SIGTERM to exit %s (exit code %d)", mib(res.PeakRSS), mib(res.IdleRSS), fine(res.Stop), res.ExitCode)
	return res
}

// waitCatalogs waits until the operator has fetched every provider's
// catalog once (gpu_operator_catalog_last_success_timestamp_seconds).
func waitCatalogs(ctx context.Context, op *operator, timeout time.Duration) error {
	const name = "gpu_operator_catalog_last_success_timestamp_seconds{"
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		body, err := httpGet(ctx, "http://"+op.metricsAddr+"/metrics")
		if err != nil {
			return false, nil
		}
		seen := map[string]bool{}
		for _, line := range strings.Split(body, "\n") {
			if rest, ok := strings.CutPrefix(line, name); ok {
				if end := strings.IndexByte(rest, '}'); end >= 0 && !strings.HasSuffix(rest, " 0") {
					seen[parseLabels(rest[:end])["provider"]] = true
				}
			}
		}
		for _, p := range providerNames {
			if !seen[p] {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("the operator fetched not every catalog within %s: %w", timeout, err)
	}
	return nil
}

// fine formats a duration with a precision that suits it.
func fine(d time.Duration) string {
	switch {
	case d >= time.Second:
		return dur(d)
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	}
}

// pct is the q-quantile (nearest rank) of ds; 0 for none.
func pct(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// bombReport is the template-bomb run and its baseline.
type bombReport struct {
	Command  string
	Started  time.Time
	Baseline *bombResult // nil: not run
	Attack   *bombResult
}

func p50max(ds []time.Duration) string {
	if len(ds) == 0 {
		return "–"
	}
	return fine(pct(ds, 0.5)) + " / " + fine(pct(ds, 1))
}

// table renders the runs side by side, the baseline first.
func (r *bombReport) table() string {
	var b strings.Builder
	var cols []*bombResult
	header := "| measure |"
	if r.Baseline != nil {
		cols, header = append(cols, r.Baseline), header+" baseline (no bombs) |"
	}
	cols, header = append(cols, r.Attack), header+" under attack |"
	a := r.Attack
	for _, res := range cols {
		if p := res.problems(); len(p) > 0 {
			fmt.Fprintf(&b, "**Run with %d bombs failed:** `%s`\n\n", res.Bombs, firstLine(strings.Join(p, "; ")))
		}
	}
	b.WriteString(header + "\n|---|" + strings.Repeat("---|", len(cols)) + "\n")
	row := func(measure string, f func(*bombResult) string) {
		b.WriteString("| " + measure + " |")
		for _, c := range cols {
			b.WriteString(" " + f(c) + " |")
		}
		b.WriteString("\n")
	}
	bombsOnly := func(f func(*bombResult) string) func(*bombResult) string {
		return func(r *bombResult) string {
			if r.Bombs == 0 {
				return "–"
			}
			return f(r)
		}
	}
	row(fmt.Sprintf("bomb requests in `%s` (%d nodeLabels each) / normal requests in `%s`", bombNamespace, a.NodeLabels, normalNamespace),
		func(r *bombResult) string { return fmt.Sprintf("%d / %d", r.Bombs, r.Normal) })
	row("bombs refused (Launched=False, reason BootstrapError)", bombsOnly(func(r *bombResult) string { return fmt.Sprintf("%d / %d", r.Refused, r.Bombs) }))
	row("**time to refusal per bomb**, create call to condition seen, p50 / max", bombsOnly(func(r *bombResult) string { return p50max(r.Refusal) }))
	row("normal requests Ready", func(r *bombResult) string { return fmt.Sprintf("%d / %d", len(r.NormalReady), r.Normal) })
	row("time to Ready per normal request, p50 / max", func(r *bombResult) string { return p50max(r.NormalReady) })
	row("**first create call to all normal requests Ready**", func(r *bombResult) string { return dur(r.AllNormalReady) })
	row("operator VmHWM after /readyz, before any request", func(r *bombResult) string { return mib(r.IdleRSS) })
	row("**operator peak RSS** (VmHWM at the end, before SIGTERM) / ru_maxrss after exit",
		func(r *bombResult) string { return mib(r.PeakRSS) + " / " + mib(r.ExitMaxRSS) })
	row("operator CPU, first create call to settled", func(r *bombResult) string { return fmt.Sprintf("%s in %s", dur(r.CPU), dur(r.Settled)) })
	row("GPURequest syncs, first create call to settled", func(r *bombResult) string { return r.Syncs.String() })
	if a.Hold > 0 {
		row(fmt.Sprintf("operator CPU in the %s after (every bomb retried once)", a.Hold), func(r *bombResult) string {
			return fmt.Sprintf("%s (%.1f%% of a core)", dur(r.HoldCPU), 100*r.HoldCPU.Seconds()/r.Hold.Seconds())
		})
		row(fmt.Sprintf("GPURequest syncs in those %s", a.Hold), func(r *bombResult) string { return r.HoldSyncs.String() })
	}
	row("launches / for bomb requests", func(r *bombResult) string { return fmt.Sprintf("%d / %d", r.Launches, len(r.BombLaunches)) })
	row("statuses or Events quoting a template", func(r *bombResult) string { return fmt.Sprint(len(r.Leaks)) })
	row("**first SIGTERM to exit**", func(r *bombResult) string {
		if r.Killed {
			return fmt.Sprintf("**over %s, killed**", dur(r.Stop))
		}
		return fmt.Sprintf("%s (exit code %d)", fine(r.Stop), r.ExitCode)
	})
	if len(a.Variants) > 0 {
		b.WriteString("\n| variant | template | requests | refused as | time to refusal p50 / max | pkg/bootstrap alone |\n|---|---|---|---|---|---|\n")
		for _, v := range a.Variants {
			var classes []string
			for c, n := range v.Classes {
				classes = append(classes, fmt.Sprintf("%s ×%d", c, n))
			}
			sort.Strings(classes)
			fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %s (%s) |\n", v.Name, kib(v.Bytes), v.Requests,
				strings.Join(classes, ", "), p50max(v.Refusal), fine(v.RenderAlone), strings.Join(v.AloneClass, ", "))
		}
	}
	return b.String()
}

func kib(n int) string {
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	return fmt.Sprintf("%.1f KiB", float64(n)/1024)
}

// bombSection is the heading of the report's template-bomb section.
const bombSection = "## Template bombs"

func (r *bombReport) markdown() string {
	var b strings.Builder
	b.WriteString(bombSection + "\n\n")
	fmt.Fprintf(&b, "Command: `%s` (started %s, %s, %d CPUs, %s); each column is its own fresh control plane and operator process.\n\n",
		r.Command, r.Started.Format(time.RFC3339), runtime.GOOS+"/"+runtime.GOARCH, runtime.NumCPU(), runtime.Version())
	b.WriteString(bombMethodology)
	b.WriteString("\n")
	b.WriteString(r.table())
	return b.String()
}

// writeSection replaces the template-bomb section of the file at path, or
// appends it, leaving the rest as it was.
func writeSection(path, section string) error { return writeSectionAs(path, bombSection, section) }

// writeSectionAs replaces the section under heading in the file at path.
func writeSectionAs(path, heading, section string) error {
	doc, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return os.WriteFile(path, []byte(replaceSection(string(doc), heading, section)), 0o644)
}

// replaceSection replaces the section of doc that starts with the line
// heading (up to the next "## " heading) by section, or appends it.
func replaceSection(doc, heading, section string) string {
	section = strings.TrimRight(section, "\n") + "\n"
	i := strings.Index(doc, "\n"+heading+"\n")
	if i < 0 {
		return strings.TrimRight(doc, "\n") + "\n\n" + section
	}
	i++
	rest := doc[i+len(heading):]
	if j := strings.Index(rest, "\n## "); j >= 0 {
		return doc[:i] + section + rest[j:]
	}
	return doc[:i] + section
}

const bombMethodology = `One tenant (` + "`" + bombNamespace + "`" + `) names consent-labelled bootstrap Secrets holding hostile templates; another
(` + "`" + normalNamespace + "`" + `) creates plain requests at the same moment (the two lists interleaved, created by 8 goroutines at
QPS 200). Control plane, simulators, node agents and operator flags as in the scale runs (` + "`--poll-interval 2s`" + `, QPS 200/burst 400,
4 workers), and no ` + "`GOMEMLIMIT`" + ` (the Deployment sets 450MiB under a 512Mi limit), so the heap is not squeezed. The bomb
requests cycle through the variants below, first as cloud-init for an A6000 VM on Lambda (user-data limit 1 MiB), then as a bash
script for an A4000 VM on Paperspace (startup-script limit 16 KiB; it runs only scripts), and so on (RunPod sells containers, which
take no user data), each with the nodeLabels in the table, so their templates' ` + "`.Labels`" + ` has 7 more entries, the
operator's own. The plain requests are the scale run's: A6000 VMs, RTX 4090 containers and A4000 VMs. Times are from the harness sending the create call to its watch seeing the condition; RSS is VmHWM from
` + "`/proc/<pid>/status`" + ` (a high-water mark, so it covers the whole run) and CPU is utime+stime from ` + "`/proc/<pid>/stat`" + `;
syncs are the operator's ` + "`gpu_operator_sync_duration_seconds`" + `. After the hold one SIGTERM is sent and the time to exit measured.
With instant boot a plain request's time to Ready is mostly the wait for the next instance list (poll interval 2 s), so the
bombs' effect on it shows only once it is of that order; the sync counts and CPU show the work they cost.
"pkg/bootstrap alone" is ` + "`bootstrap.Render`" + ` timed in the harness on the same template and label count, the slower of its
cloud-init form at Lambda's limit and its script form at Paperspace's. ` + "`go test ./hack/bench -run TestTemplateBombs`" + ` is the CI-sized run (10 bombs, 3 normal requests) with
its outcomes asserted.
`
