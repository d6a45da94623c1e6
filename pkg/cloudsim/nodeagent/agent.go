// Package nodeagent plays kubelet for simulated machines: when a simulated
// instance becomes active it registers a Node named by the machine's
// rendered bootstrap data, with providerID <provider>://<instance id>, and
// marks it Ready, with the machine's GPUs allocatable as nvidia.com/gpu (as
// the NVIDIA device plugin publishes them; DevicePluginDelay and HoldGPUs
// make them appear later); when the instance stops or dies the Node is
// removed. It runs beside the simulators (tests, demo, benchmarks), never in
// the operator.
//
// A Vast.ai VM takes no user data at create: the operator runs its bootstrap
// over SSH, and the simulator's SSH server records the script. That script
// is the machine's user data here, so such a VM registers its Node only once
// its bootstrap has been delivered, under the name the script gives it.
//
// With TLSBootstrap set (the tests' control plane, the demo, the benchmark)
// a machine joins as a kubelet does, with its own certificate obtained with
// the bootstrap token in its user data (kubelet.go); without it the agent
// writes Nodes with its own client (unit tests on a fake clientset).
// Nodes of machines that are gone are deleted with the agent's own client,
// as a cloud provider's node lifecycle controller does.
package nodeagent

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
)

// LabelAgent marks the Nodes this agent registered.
const LabelAgent = "cloudsim.tgp.solanyn.com/agent"

// GPUResource is the resource a Node's GPUs are allocatable as.
const GPUResource corev1.ResourceName = "nvidia.com/gpu"

// hostnameRE finds the node name in cloud-init (hostname: x), a Talos
// machine config (machine.network.hostname: x) or a script
// (hostnamectl set-hostname x, as the default template writes it). The
// name is bare, single- or double-quoted; the first such line counts.
var hostnameRE = regexp.MustCompile(`(?m)^[ \t]*(?:hostname:|hostnamectl[ \t]+set-hostname)[ \t]+` +
	`(?:'(` + nameRE + `)'|"(` + nameRE + `)"|(` + nameRE + `))[ \t]*\r?$`)

// nameRE is a node name: a DNS subdomain, as a kubelet's hostname.
const nameRE = `[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?`

// kubeletFlagRE finds --node-labels and --register-with-taints in user data,
// which a real kubelet would be started with.
var kubeletFlagRE = regexp.MustCompile(`--(node-labels|register-with-taints)=([^\s"']*)`)

// kubeletFlags returns the labels and taints a kubelet started from the
// machine's user data would register its Node with.
func kubeletFlags(userData string) (map[string]string, []corev1.Taint) {
	labels := map[string]string{}
	var taints []corev1.Taint
	for _, m := range kubeletFlagRE.FindAllStringSubmatch(userData, -1) {
		for _, item := range strings.Split(m[2], ",") {
			if item == "" {
				continue
			}
			switch m[1] {
			case "node-labels":
				if k, v, ok := strings.Cut(item, "="); ok {
					labels[k] = v
				}
			case "register-with-taints":
				kv, effect, _ := strings.Cut(item, ":")
				k, v, _ := strings.Cut(kv, "=")
				taints = append(taints, corev1.Taint{Key: k, Value: v, Effect: corev1.TaintEffect(effect)})
			}
		}
	}
	return labels, taints
}

// NodeName is the Node a machine registers as: the hostname in its user
// data, else its machine name.
func NodeName(m cloudsim.Machine) string {
	if sub := hostnameRE.FindStringSubmatch(m.UserData); sub != nil {
		return sub[1] + sub[2] + sub[3] // one of the three forms matched
	}
	return m.Name
}

// Agent registers and removes Nodes for simulated machines.
type Agent struct {
	Kube       kubernetes.Interface
	Simulators []cloudsim.Simulator
	// Interval between passes (default 200ms).
	Interval time.Duration
	// Workers register and remove Nodes in parallel (default 8), as many
	// kubelets would.
	Workers int
	Clock   clock.WithTicker
	// DevicePluginDelay, when set, is how long a registered Node reports no
	// GPUs before they appear in its allocatable, as a device plugin that
	// starts after the kubelet would.
	DevicePluginDelay time.Duration
	// TLSBootstrap, when set, makes machines join with their own node
	// credentials (kubelet.go).
	TLSBootstrap *TLSBootstrap

	mu sync.Mutex
	// kubelets are the node clients of bootstrapped machines, by Node name.
	kubelets map[string]*kubelet
	// joinErrs is the last error of each Node that failed to register.
	joinErrs map[string]error
	// nodes maps a registered Node's name to the state last registered.
	nodes map[string]nodeState
	// registered is when each Node was first registered.
	registered map[string]time.Time
	// heldGPUs Nodes report no GPUs (tests).
	heldGPUs map[string]bool
	// names caches each machine's (provider/id) Node name: user data never
	// changes, so it is parsed once.
	names map[string]string
	// notReady Nodes keep existing but report NotReady (tests).
	notReady map[string]bool
}

// Run syncs until ctx ends.
func (a *Agent) Run(ctx context.Context) {
	if a.Clock == nil {
		a.Clock = clock.RealClock{}
	}
	if a.Interval <= 0 {
		a.Interval = 200 * time.Millisecond
	}
	t := a.Clock.NewTicker(a.Interval)
	defer t.Stop()
	for {
		if err := a.Sync(ctx); err != nil && ctx.Err() == nil {
			klog.ErrorS(err, "node agent pass")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C():
		}
	}
}

// SetNotReady makes the Node of a machine report NotReady (or Ready again),
// as a kubelet that lost its network would.
func (a *Agent) SetNotReady(node string, notReady bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.notReady == nil {
		a.notReady = map[string]bool{}
	}
	a.notReady[node] = notReady
}

// HoldGPUs makes the Node of a machine report no allocatable GPUs (or its
// GPUs again), as a Node whose device plugin has not started yet; it may be
// called before the Node registers.
func (a *Agent) HoldGPUs(node string, hold bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.heldGPUs == nil {
		a.heldGPUs = map[string]bool{}
	}
	a.heldGPUs[node] = hold
}

// JoinError is the last error registering the Node name met (the
// credentials refused, NodeRestriction refusing a label), nil once it
// registered or before it tried.
func (a *Agent) JoinError(name string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.joinErrs[name]
}

// nodeState is what a Node reports: its readiness and allocatable GPUs.
type nodeState struct {
	ready bool
	gpus  int
}

// Sync makes one pass: a Node for every active machine, none for the rest.
func (a *Agent) Sync(ctx context.Context) error {
	if a.Clock == nil {
		a.Clock = clock.RealClock{}
	}
	a.mu.Lock()
	if a.nodes == nil {
		a.nodes, a.names, a.registered = map[string]nodeState{}, map[string]string{}, map[string]time.Time{}
		a.kubelets, a.joinErrs = map[string]*kubelet{}, map[string]error{}
	}
	now := a.Clock.Now()
	active := map[string]cloudsim.Machine{}
	for _, s := range a.Simulators {
		for _, m := range s.Machines() {
			if !m.Active || m.Container {
				continue // a container cannot run a kubelet
			}
			key := m.Provider + "/" + m.ID
			name, ok := a.names[key]
			if !ok {
				name = NodeName(m)
				a.names[key] = name
			}
			active[name] = m
		}
	}
	var jobs []func(context.Context) error
	for name, m := range active {
		want := nodeState{ready: !a.notReady[name], gpus: m.GPUs}
		if at, ok := a.registered[name]; a.heldGPUs[name] || (a.DevicePluginDelay > 0 && (!ok || now.Before(at.Add(a.DevicePluginDelay)))) {
			want.gpus = 0
		}
		if st, known := a.nodes[name]; known && st == want {
			continue
		}
		jobs = append(jobs, func(ctx context.Context) error {
			if err := a.register(ctx, name, m, want); err != nil {
				if ctx.Err() != nil {
					return err
				}
				// One machine's failure (a hostile or broken user data) is
				// its own: the others register, and it retries next pass.
				a.mu.Lock()
				prev := a.joinErrs[name]
				a.joinErrs[name] = err
				a.mu.Unlock()
				if prev == nil || prev.Error() != err.Error() {
					klog.InfoS("machine cannot register its Node", "node", name, "machine", m.Provider+"/"+m.ID, "err", err)
				}
				return nil
			}
			a.mu.Lock()
			delete(a.joinErrs, name)
			a.nodes[name] = want
			if _, ok := a.registered[name]; !ok {
				a.registered[name] = a.Clock.Now()
			}
			a.mu.Unlock()
			return nil
		})
	}
	for name := range a.joinErrs {
		if _, ok := active[name]; !ok {
			delete(a.joinErrs, name)
			a.dropKubelet(name)
		}
	}
	for name := range a.nodes {
		if _, ok := active[name]; ok {
			continue
		}
		jobs = append(jobs, func(ctx context.Context) error {
			err := a.Kube.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				return err
			}
			a.mu.Lock()
			delete(a.nodes, name)
			delete(a.registered, name)
			a.dropKubelet(name)
			a.mu.Unlock()
			return nil
		})
	}
	a.mu.Unlock()
	workers := a.Workers
	if workers <= 0 {
		workers = 8
	}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	for _, job := range jobs {
		g.Go(func() error { return job(ctx) })
	}
	return g.Wait()
}

// register creates the Node (if needed) and sets its Ready condition and
// allocatable GPUs. Like a kubelet, it registers the Node with its status,
// labels and taints in one create; only a later change of readiness or GPUs
// needs a status update.
func (a *Agent) register(ctx context.Context, name string, m cloudsim.Machine, want nodeState) error {
	status := corev1.ConditionTrue
	if !want.ready {
		status = corev1.ConditionFalse
	}
	now := metav1.NewTime(a.Clock.Now())
	nodeStatus := corev1.NodeStatus{Conditions: []corev1.NodeCondition{{
		Type: corev1.NodeReady, Status: status, Reason: "KubeletReady", Message: "simulated kubelet",
		LastHeartbeatTime: now, LastTransitionTime: now,
	}}}
	if want.gpus > 0 {
		nodeStatus.Capacity = corev1.ResourceList{GPUResource: *resource.NewQuantity(int64(want.gpus), resource.DecimalSI)}
		nodeStatus.Allocatable = nodeStatus.Capacity
	}
	labels, taints := kubeletFlags(m.UserData)
	labels[LabelAgent] = "true"
	labels[corev1.LabelHostname] = name
	labels["kubernetes.io/os"] = "linux"
	nodes := a.Kube.CoreV1().Nodes()
	if a.TLSBootstrap != nil {
		k, err := a.kubeletFor(ctx, name, m)
		if err != nil {
			return err
		}
		// Thousands of simulated kubelets would each hold a connection
		// open; a real one would, but one process need not.
		defer k.transport.CloseIdleConnections()
		nodes = k.client.CoreV1().Nodes()
	}
	node, err := nodes.Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       corev1.NodeSpec{ProviderID: m.Provider + "://" + m.ID, Taints: taints},
		Status:     nodeStatus,
	}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		node, err = nodes.Get(ctx, name, metav1.GetOptions{})
	}
	if apierrors.IsForbidden(err) {
		return fmt.Errorf("registering Node %s refused: %w", name, err)
	}
	if err != nil {
		return err
	}
	gpus := node.Status.Allocatable[GPUResource]
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == status && gpus.Value() == int64(want.gpus) {
			return nil
		}
	}
	node.Status = nodeStatus
	_, err = nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{})
	return err
}

// dropKubelet forgets the node credentials of name; a.mu is held.
func (a *Agent) dropKubelet(name string) {
	if k, ok := a.kubelets[name]; ok {
		k.transport.CloseIdleConnections()
		delete(a.kubelets, name)
	}
}
