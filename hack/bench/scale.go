package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/nodeagent"
	"github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/testenv"
)

// Keys the simulators accept; the operator gets them from its environment.
var simKeys = map[string]string{
	providers.LambdaLabs: "bench-lambda-key",
	providers.RunPod:     "bench-runpod-key",
	providers.Paperspace: "bench-paperspace-key",
}

func keyEnv(keys map[string]string) []string {
	return []string{
		"LAMBDA_API_KEY=" + keys[providers.LambdaLabs],
		"RUNPOD_API_KEY=" + keys[providers.RunPod],
		"PAPERSPACE_API_KEY=" + keys[providers.Paperspace],
	}
}

// benchCatalog is shaped like what the providers really sell (hack/demo/
// catalog.json has the sources): Lambda and Paperspace sell VMs, RunPod
// sells containers, all on-demand (none sells spot), at their list prices,
// with unlimited capacity. Each of the scale run's three request kinds is
// cheapest at a different provider, so the load spreads over all three: an
// A6000 VM on Lambda (Paperspace sells one too, dearer; RunPod's A6000 is a
// container), an RTX 4090 container on RunPod (in two data centers) and an
// A4000 VM on Paperspace (in two regions).
func benchCatalog() map[string][]cloudsim.CatalogEntry {
	return map[string][]cloudsim.CatalogEntry{
		providers.LambdaLabs: {
			{InstanceType: "gpu_1x_a6000", GPUs: 1, Region: "us-east-1", OnDemandPrice: 0.80, Capacity: -1},
			{InstanceType: "gpu_1x_h100_pcie", GPUs: 1, Region: "us-east-1", OnDemandPrice: 2.49, Capacity: -1},
		},
		providers.RunPod: {
			{InstanceType: "NVIDIA GeForce RTX 4090", GPUs: 8, Region: "US-CA-2", OnDemandPrice: 0.69, Capacity: -1},
			{InstanceType: "NVIDIA GeForce RTX 4090", GPUs: 8, Region: "US-WA-1", OnDemandPrice: 0.69, Capacity: -1},
			{InstanceType: "NVIDIA RTX A6000", GPUs: 8, Region: "US-TX-3", OnDemandPrice: 0.49, Capacity: -1},
			{InstanceType: "NVIDIA H100 80GB HBM3", GPUs: 8, Region: "US-DE-1", OnDemandPrice: 2.99, Capacity: -1},
		},
		providers.Paperspace: {
			{InstanceType: "A4000", GPUs: 1, Region: "ny2", OnDemandPrice: 0.76, Capacity: -1},
			{InstanceType: "A4000", GPUs: 1, Region: "ca1", OnDemandPrice: 0.76, Capacity: -1},
			{InstanceType: "A6000", GPUs: 1, Region: "ny2", OnDemandPrice: 1.89, Capacity: -1},
			{InstanceType: "H100", GPUs: 1, Region: "ny2", OnDemandPrice: 5.95, Capacity: -1},
		},
	}
}

// simConfigs builds each provider's simulator configuration.
func simConfigs(catalog map[string][]cloudsim.CatalogEntry, keys map[string]string, faults cloudsim.Faults, seed uint64) map[string]cloudsim.Config {
	out := map[string]cloudsim.Config{}
	for i, n := range providerNames {
		out[n] = cloudsim.Config{APIKey: keys[n], Catalog: catalog[n], Faults: faults, Seed: seed + uint64(i)}
	}
	return out
}

// benchGPUTypes are the scale run's three request kinds, by GPU type: an
// A6000 VM (Lambda), an RTX4090 container (RunPod) and an A4000 VM
// (Paperspace); benchSpec says which is a container.
var benchGPUTypes = []string{"A6000", "RTX4090", "A4000"}

// benchContainer is what the container requests run.
var benchContainer = tgpv1.ContainerSpec{
	Image: "runpod/pytorch:2.8.0-py3.11-cuda12.8.1-devel-ubuntu22.04",
	Args:  []string{"sleep", "infinity"},
	Ports: []tgpv1.ContainerPort{{Port: 8888, Protocol: "http"}},
}

// benchSpec is the spec of the i-th bench request: one GPU of
// benchGPUTypes[i%3], the RTX4090 as a container (RunPod sells only
// containers), the others as VMs that join as Nodes.
func benchSpec(i int) tgpv1.GPURequestSpec {
	spec := tgpv1.GPURequestSpec{GPUType: benchGPUTypes[i%len(benchGPUTypes)], GPUCount: 1}
	if spec.GPUType == "RTX4090" {
		c := benchContainer
		c.Args = slices.Clone(c.Args)
		c.Ports = slices.Clone(c.Ports)
		spec.Container = &c
	}
	return spec
}

func benchRequest(i int) *tgpv1.GPURequest {
	return &tgpv1.GPURequest{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("r-%05d", i), Namespace: requestNamespace},
		Spec:       benchSpec(i),
	}
}

// createRequests creates n requests with workers goroutines and returns
// the first error.
func createRequests(ctx context.Context, client versioned.Interface, n, workers int, mk func(int) *tgpv1.GPURequest) error {
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				r := mk(i)
				if _, err := client.TgpV1().GPURequests(r.Namespace).Create(ctx, r, metav1.CreateOptions{}); err != nil {
					errOnce.Do(func() { first = fmt.Errorf("creating %s: %w", r.Name, err) })
					return
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// scaleResult is what one scale run at size N measured.
type scaleResult struct {
	N            int
	PollInterval time.Duration

	Floor        time.Duration
	FloorAPICPU  time.Duration
	FloorEtcdCPU time.Duration

	Wall       time.Duration // creation start to the last request Ready
	CreateTime time.Duration // creation start to the last create answered
	PeakRSS    int64         // VmHWM when all were Ready
	ExitMaxRSS int64         // ru_maxrss after exit
	CPU        time.Duration // operator utime+stime when all were Ready
	APICPU     time.Duration // kube-apiserver CPU during the run
	EtcdCPU    time.Duration
	HarnessCPU time.Duration // this process (creator, node agents, simulators, watch)

	Counters  map[string]cloudsim.Counters
	Lists     map[string]int // logical instance lists (first pages) per provider
	Launches  int
	Dups      []string
	APIByVerb map[string]float64 // API server requests during the run, all clients
	Err       error
}

// runFloor measures the unavoidable API writes for n requests (create,
// one status write, and for the VM requests what a real node's join costs:
// a container joins no cluster) with clients at the operator's QPS and
// burst, on a fresh control plane. A VM's join is its bootstrap token
// created, the kubelet's TLS bootstrap with it (a CSR that
// kube-controller-manager approves and signs), its Node created with the
// signed certificate, and the token deleted.
func runFloor(ctx context.Context, n int, logf func(string, ...any)) (time.Duration, time.Duration, time.Duration, error) {
	c, err := startCluster(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	defer c.stop()
	api0, etcd0 := c.controlPlaneCPU()
	// Two clientsets with their own token buckets at the operator's QPS and
	// burst, exactly as the operator builds its GPURequest and core clients.
	cfg := c.configWith(kubeQPS, kubeBurst)
	client := versioned.NewForConfigOrDie(cfg)
	kube := kubernetes.NewForConfigOrDie(cfg)

	start := time.Now()
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	fail := func(err error) { errOnce.Do(func() { first = err }) }
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				r, err := client.TgpV1().GPURequests(requestNamespace).Create(ctx, benchRequest(i), metav1.CreateOptions{})
				if err != nil {
					fail(err)
					return
				}
				now := metav1.Now()
				r.Status = tgpv1.GPURequestStatus{Phase: tgpv1.PhaseReady, ObservedGeneration: r.Generation, ReadyAt: &now}
				if r.Spec.Container == nil {
					r.Status.NodeName = "floor-" + r.Name
				} else {
					r.Status.PublicIP = "100.65.0.1"
					r.Status.Ports = []tgpv1.PortStatus{{Port: 8888, Protocol: "http", PublicIP: "100.65.0.1", PublicPort: 10000}}
				}
				if _, err := client.TgpV1().GPURequests(requestNamespace).UpdateStatus(ctx, r, metav1.UpdateOptions{}); err != nil {
					fail(err)
					return
				}
				if r.Spec.Container != nil {
					continue
				}
				if err := floorJoin(ctx, kube, c.tlsBootstrap(), "floor-"+r.Name); err != nil {
					fail(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	floor := time.Since(start)
	api1, etcd1 := c.controlPlaneCPU()
	if first != nil {
		return 0, 0, 0, first
	}
	logf("  floor: %d x (create, status write, and for a VM: token, CSR, Node create, token delete) in %s", n, floor.Round(time.Millisecond))
	return floor, api1 - api0, etcd1 - etcd0, nil
}

// floorJoin is the least a VM's join costs: a bootstrap token Secret as
// --mint-join-tokens creates it for the default template (authentication
// only: that user data does not use kubeadm's discovery), the kubelet's
// TLS bootstrap with it, its Ready Node created with the signed
// certificate, and the token deleted.
func floorJoin(ctx context.Context, kube kubernetes.Interface, b *nodeagent.TLSBootstrap, node string) error {
	token, secret, err := testenv.BootstrapToken(ctx, kube, false, 15*time.Minute)
	if err != nil {
		return err
	}
	kubelet, closeIdle, err := b.Join(ctx, node, token)
	if err != nil {
		return err
	}
	defer closeIdle()
	_, err = kubelet.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}, metav1.CreateOptions{})
	if err != nil {
		return err
	}
	return kube.CoreV1().Secrets(metav1.NamespaceSystem).Delete(ctx, secret, metav1.DeleteOptions{})
}

// runScale runs the operator against n requests created at once.
func runScale(ctx context.Context, bin string, n int, poll time.Duration, logf func(string, ...any)) (res scaleResult) {
	res = scaleResult{N: n, PollInterval: poll}
	var err error
	logf("N=%d: floor on a fresh control plane", n)
	if res.Floor, res.FloorAPICPU, res.FloorEtcdCPU, err = runFloor(ctx, n, logf); err != nil {
		res.Err = fmt.Errorf("floor: %w", err)
		return res
	}

	logf("N=%d: operator on a fresh control plane", n)
	c, err := startCluster(ctx)
	if err != nil {
		res.Err = err
		return res
	}
	defer c.stop()
	s := startSims(simConfigs(benchCatalog(), simKeys, cloudsim.Faults{}, 1))
	defer s.close()
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The node agents play many kubelets: their client is not the bottleneck.
	startNodeRegistrar(actx, c, s, 16)

	args := append(append(c.operatorArgs(), "--leader-elect=false",
		"--kube-api-qps", fmt.Sprint(kubeQPS), "--kube-api-burst", fmt.Sprint(kubeBurst),
		"--poll-interval", poll.String()), s.operatorArgs()...)
	if heapProfile != "" || cpuProfile != "" {
		args = append(args, "--enable-pprof")
	}
	op, err := startOperator(bin, args, keyEnv(simKeys))
	if err != nil {
		res.Err = err
		return res
	}
	defer op.stop(10 * time.Second)
	if err := op.waitReady(ctx, time.Minute); err != nil {
		res.Err = err
		return res
	}
	w, err := watchRequests(actx, c.client)
	if err != nil {
		res.Err = err
		return res
	}
	before, _ := c.apiRequests(ctx)
	api0, etcd0 := c.controlPlaneCPU()
	self0, _ := procCPU(selfPID())

	start := time.Now()
	waitCPUProfile := func() error { return nil }
	if cpuProfile != "" {
		waitCPUProfile = startCPUProfile(op.metricsAddr, fmt.Sprintf("%s.%d", cpuProfile, n), cpuProfileSeconds)
	}
	if err := createRequests(ctx, c.client, n, 16, benchRequest); err != nil {
		res.Err = err
		return res
	}
	res.CreateTime = time.Since(start)
	logf("  created %d requests in %s", n, res.CreateTime.Round(time.Millisecond))
	timeout := 2*time.Minute + time.Duration(n)*80*time.Millisecond
	if err := w.waitAllReady(ctx, n, timeout, logf); err != nil {
		res.Err = fmt.Errorf("%w\noperator log tail:\n%s", err, tail(op.logs.String(), 30))
	}
	_, last := w.everReady()
	res.Wall = last.Sub(start)
	res.PeakRSS, res.CPU = op.usage()
	if heapProfile != "" {
		if err := saveHeapProfile(op.metricsAddr, fmt.Sprintf("%s.%d", heapProfile, n)); err != nil {
			logf("  heap profile: %v", err)
		}
	}
	api1, etcd1 := c.controlPlaneCPU()
	self1, _ := procCPU(selfPID())
	res.APICPU, res.EtcdCPU, res.HarnessCPU = api1-api0, etcd1-etcd0, self1-self0
	res.Counters = s.counters()
	res.Lists = map[string]int{}
	for n, rec := range s.recorders {
		res.Lists[n] = rec.lists()
	}
	res.Launches, res.Dups = launchStats(res.Counters)
	if after, err := c.apiRequests(ctx); err == nil {
		res.APIByVerb = map[string]float64{}
		for k, v := range after {
			if d := v - before[k]; d > 0 {
				res.APIByVerb[k] = d
			}
		}
	}
	if err := waitCPUProfile(); err != nil {
		logf("  cpu profile: %v", err)
	}
	if ru := op.stop(10 * time.Second); ru != nil {
		res.ExitMaxRSS = ru.Maxrss * 1024
	}
	if out := op.logs.String(); containsPanic(out) {
		res.Err = fmt.Errorf("operator panicked:\n%s", tail(out, 40))
	}
	logf("  all %d Ready in %s (floor %s); operator peak RSS %s, CPU %s", n, res.Wall.Round(time.Millisecond),
		res.Floor.Round(time.Millisecond), mib(res.PeakRSS), res.CPU.Round(time.Millisecond))
	return res
}
