package integration

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	"sigs.k8s.io/yaml"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/nodeagent"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	"github.com/solanyn/gpu-operator/pkg/controller"
	"github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned"
	tgpscheme "github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned/scheme"
	tgpinformers "github.com/solanyn/gpu-operator/pkg/generated/informers/externalversions"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/vastai"
	"github.com/solanyn/gpu-operator/pkg/testenv"
)

// env is one real control plane shared by the package's integration tests;
// each test works in its own namespace with its own controller.
var env *testenv.Env

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	var err error
	env, err = testenv.Start(ctx, testenv.Options{})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "starting the control plane:", err)
		os.Exit(1)
	}
	code := m.Run()
	env.Stop()
	os.Exit(code)
}

// rig is one test's operator: simulators over HTTP, the real adapters, the
// real controller watching the test's namespace, and the node agent.
type rig struct {
	t        *testing.T
	ns       string
	kube     kubernetes.Interface
	client   versioned.Interface
	stack    *stack.Stack
	ctrl     *controller.Controller
	agent    *nodeagent.Agent
	registry *prometheus.Registry
	ctx      context.Context // cancelled when the test ends
	cancel   context.CancelFunc
	cfg      controller.Config
	stopped  chan struct{}
	opts     rigOptions
}

type rigOptions struct {
	sims    stack.Config
	config  controller.Config
	noAgent bool
	// noStart leaves the controller stopped; call start().
	noStart bool
	// operatorConfig, when set, derives the client config of the controller,
	// its informers and its event sink from a copy of env.Config (to run it
	// as the operator's ServiceAccount, say); the rig's helpers stay admin.
	operatorConfig func(*rest.Config) *rest.Config
	// requestSelector, when set, makes the controller watch the GPURequests
	// carrying this label selector in every namespace, instead of all the
	// GPURequests of the rig's namespace.
	requestSelector string
	// stopTimeout, when set, bounds the wait for the controller to stop when
	// the test ends: one still running then (a stuck worker) fails the test
	// instead of hanging it.
	stopTimeout time.Duration
	// clock, when set, is the controller's clock (default: the real one).
	clock clock.WithTicker
	// adminJoin makes the node agent write Nodes with its admin client.
	// Otherwise machines join as kubelets do, with the bootstrap token of
	// their user data and their own certificate (nodeagent.TLSBootstrap),
	// and the controller mints a token per machine (Config.MintJoinTokens).
	adminJoin bool
	// noMint leaves the controller's Config.MintJoinTokens as the test
	// set it (machines then carry no token unless their template has one).
	noMint bool
}

// tlsBootstrap is what the agent of a tlsBootstrap rig dials: the test
// control plane, whose serving certificate the cluster CA signed.
func tlsBootstrap() *nodeagent.TLSBootstrap {
	return &nodeagent.TLSBootstrap{Host: env.Config.Host, CAData: env.Config.CAData}
}

func simConfig(entries ...cloudsim.CatalogEntry) *cloudsim.Config {
	return &cloudsim.Config{APIKey: "test-key", Catalog: entries}
}

func newRig(t *testing.T, o rigOptions) *rig {
	t.Helper()
	kube := kubernetes.NewForConfigOrDie(env.Config)
	client := versioned.NewForConfigOrDie(env.Config)
	ns := fmt.Sprintf("t-%08x", rand.Uint32())
	t.Logf("namespace %s", ns)
	if _, err := kube.CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	st, err := stack.Start(o.sims, clock.RealClock{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	r := &rig{t: t, ns: ns, kube: kube, client: client, stack: st, opts: o}
	if !o.noAgent {
		r.agent = &nodeagent.Agent{Kube: kube, Simulators: st.Simulators(), Interval: 50 * time.Millisecond}
		if !o.adminJoin {
			r.agent.TLSBootstrap = tlsBootstrap()
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); r.agent.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	if o.config.PollInterval == 0 {
		o.config.PollInterval = 300 * time.Millisecond
	}
	r.build(o.config)
	if !o.noStart {
		r.start()
	}
	return r
}

func (r *rig) clock() clock.WithTicker {
	if r.opts.clock != nil {
		return r.opts.clock
	}
	return clock.RealClock{}
}

func (r *rig) build(cfg controller.Config) { r.t.Helper(); r.buildWith(cfg, nil) }

// buildWith builds the rig's controller over the given providers, or the
// stack's default adapters when nil. A rig made with noStart may be rebuilt
// this way (its first controller is never started); call start() after.
func (r *rig) buildWith(cfg controller.Config, adapters []providers.Provider) {
	r.t.Helper()
	var err error
	kube, client := r.kube, r.client
	if r.opts.operatorConfig != nil {
		cfg := r.opts.operatorConfig(rest.CopyConfig(env.Config))
		kube, client = kubernetes.NewForConfigOrDie(cfg), versioned.NewForConfigOrDie(cfg)
	}
	// The operator's SSH key pair (made in its namespace on first use):
	// the Vast.ai adapter registers its public half, as cmd/gpu-operator wires it.
	opNamespace := cfg.OperatorNamespace
	if opNamespace == "" {
		opNamespace = "gpu-operator"
	}
	if !r.opts.adminJoin && !r.opts.noMint {
		// A token per machine, for the cluster CA published in the
		// operator's namespace, as cmd/gpu-operator with --mint-join-tokens.
		cfg.MintJoinTokens, cfg.APIServerURL, cfg.OperatorNamespace = true, env.Config.Host, opNamespace
		if _, err := env.RootCA(r.t.Context(), opNamespace); err != nil {
			r.t.Fatal(err)
		}
	}
	sshKeys := controller.NewSSHKeys(kube, opNamespace)
	if adapters == nil {
		if adapters, err = r.stack.Adapters(stack.AdapterOptions{VastAI: func(c *vastai.Config) { c.SSHPublicKey = sshKeys.PublicKey }}); err != nil {
			r.t.Fatal(err)
		}
	}
	scope := tgpinformers.WithNamespace(r.ns)
	if sel := r.opts.requestSelector; sel != "" {
		scope = tgpinformers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = sel })
	}
	kubeFactory := informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithTransform(controller.TrimForCache))
	tgpFactory := tgpinformers.NewSharedInformerFactoryWithOptions(client, 0, scope,
		tgpinformers.WithTransform(controller.TrimForCache))
	broadcaster := record.NewBroadcaster()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kube.CoreV1().Events("")})
	r.t.Cleanup(broadcaster.Shutdown)
	r.registry = prometheus.NewRegistry()
	r.ctrl, err = controller.New(controller.Options{
		Config:     cfg,
		KubeClient: kube,
		Client:     client,
		Requests:   tgpFactory.Tgp().V1().GPURequests(),
		Budgets:    tgpFactory.Tgp().V1().GPUBudgets(),
		Nodes:      kubeFactory.Core().V1().Nodes(),
		Pods:       kubeFactory.Core().V1().Pods(),
		Providers:  adapters,
		Recorder:   broadcaster.NewRecorder(tgpscheme.Scheme, corev1.EventSource{Component: "gpu-operator-test"}),
		Clock:      r.clock(),
		Registry:   r.registry,
		SSHKeys:    sshKeys,
	})
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.ctx, r.cancel, r.cfg = ctx, cancel, cfg
	kubeFactory.Start(ctx.Done())
	tgpFactory.Start(ctx.Done())
	r.t.Cleanup(func() {
		cancel()
		if r.stopped != nil {
			r.waitStopped()
		}
		kubeFactory.Shutdown()
		tgpFactory.Shutdown()
	})
}

// waitStopped waits for Run to return, at most stopTimeout when it is set.
func (r *rig) waitStopped() {
	if r.opts.stopTimeout <= 0 {
		<-r.stopped
		return
	}
	select {
	case <-r.stopped:
	case <-time.After(r.opts.stopTimeout):
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		stuck := "no worker in text/template"
		if strings.Contains(string(buf), "text/template.(*state)") {
			stuck = "a goroutine is still executing a text/template"
		}
		r.t.Errorf("the controller did not stop within %s of its context ending (%s); abandoning it", r.opts.stopTimeout, stuck)
	}
}

// restart stops the running controller, as a lost leadership or a crash
// would, and starts a new one over fresh caches and the same providers'
// simulators (a new leader).
func (r *rig) restart() {
	r.t.Helper()
	r.cancel()
	r.waitStopped()
	r.stopped = nil
	r.build(r.cfg)
	r.start()
}

func (r *rig) start() {
	r.stopped = make(chan struct{})
	go func() {
		defer close(r.stopped)
		if err := r.ctrl.Run(r.ctx, 2); err != nil {
			r.t.Errorf("controller: %v", err)
		}
	}()
}

// create creates a GPURequest from YAML (metadata.namespace is the rig's).
func (r *rig) create(manifest string) *tgpv1.GPURequest {
	r.t.Helper()
	var req tgpv1.GPURequest
	if err := yaml.UnmarshalStrict([]byte(manifest), &req); err != nil {
		r.t.Fatal(err)
	}
	req.Namespace = r.ns
	out, err := r.client.TgpV1().GPURequests(r.ns).Create(r.t.Context(), &req, metav1.CreateOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	return out
}

func (r *rig) get(name string) *tgpv1.GPURequest {
	r.t.Helper()
	req, err := r.client.TgpV1().GPURequests(r.ns).Get(r.t.Context(), name, metav1.GetOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	return req
}

// waitFor polls the request until cond holds or the timeout passes.
func (r *rig) waitFor(name string, timeout time.Duration, what string, cond func(*tgpv1.GPURequest) bool) *tgpv1.GPURequest {
	r.t.Helper()
	var last *tgpv1.GPURequest
	err := wait.PollUntilContextTimeout(r.t.Context(), 50*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		req, err := r.client.TgpV1().GPURequests(r.ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		last = req
		return cond(req), nil
	})
	if err != nil {
		r.t.Fatalf("%s: %s not reached within %s; last status: %+v", name, what, timeout, statusOf(last))
	}
	return last
}

func (r *rig) waitPhase(name string, phase tgpv1.Phase, timeout time.Duration) *tgpv1.GPURequest {
	r.t.Helper()
	return r.waitFor(name, timeout, "phase "+string(phase), func(req *tgpv1.GPURequest) bool { return req.Status.Phase == phase })
}

func statusOf(req *tgpv1.GPURequest) any {
	if req == nil {
		return nil
	}
	return req.Status
}

// liveMachines are the simulators' instances that still exist.
func (r *rig) liveMachines() []cloudsim.Machine {
	var out []cloudsim.Machine
	for _, m := range r.stack.Machines() {
		if m.Live {
			out = append(out, m)
		}
	}
	return out
}

// events returns the reasons of the Events recorded for a request.
func (r *rig) events(name string) []string {
	list, err := r.kube.CoreV1().Events(r.ns).List(r.t.Context(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		r.t.Fatal(err)
	}
	var out []string
	for _, e := range list.Items {
		out = append(out, e.Reason)
	}
	return out
}

func price(p *float64) float64 {
	if p == nil {
		return -1
	}
	return *p
}

func launches(st *stack.Stack, provider, name string) int {
	return st.Simulator(provider).Core().Counters().Launches[name]
}

var _ = providers.LambdaLabs

// assertColumns checks the request's row of `kubectl get gpurequests`
// (from the kubectl built in bin/) against the wanted GPU..PHASE columns,
// and its NODE column against status.nodeName (blank for a container).
func (r *rig) assertColumns(name string, cols ...string) {
	r.t.Helper()
	out, err := exec.Command(filepath.Join(env.Root, "bin", "kubectl"), "--kubeconfig", env.Kubeconfig,
		"get", "gpurequests", name, "-n", r.ns, "--no-headers").CombinedOutput()
	if err != nil {
		r.t.Fatalf("kubectl get: %v\n%s", err, out)
	}
	fields := strings.Fields(string(out))
	// NAME GPU COUNT SPOT PROVIDER REGION PRICE PHASE NODE AGE
	want := 10
	node := r.get(name).Status.NodeName
	if node == "" {
		want = 9 // kubectl prints an empty NODE as blanks
	}
	if len(fields) != want || strings.Join(fields[1:8], " ") != strings.Join(cols, " ") || (node != "" && fields[8] != node) {
		r.t.Errorf("kubectl row %q, want columns %v and node %q", strings.TrimSpace(string(out)), cols, node)
	}
}
