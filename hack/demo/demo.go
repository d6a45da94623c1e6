package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned"
	"github.com/solanyn/gpu-operator/pkg/testenv"
)

const (
	// operatorNamespace holds the operator's credentials Secret.
	operatorNamespace = "gpu-operator"
	// credentialsSecret is the operator's --credentials-secret.
	credentialsSecret = "gpu-operator-credentials"
	// requestNamespace is where the examples are applied.
	requestNamespace = "default"
)

// options configure a demo.
type options struct {
	root         string // repository root
	dir          string // state, logs and the control plane's data
	catalog      string
	operatorBin  string
	cloudsimBin  string
	kubectlBin   string
	bootDelay    time.Duration
	pollInterval time.Duration
	timeout      time.Duration // for each wait: all settled, recovery
	exitWhenDone bool
}

// endpoints is what bin/cloudsim writes to --endpoints-file.
type endpoints struct {
	Admin     string `json:"admin"`
	Providers map[string]struct {
		URL    string `json:"url"`
		APIKey string `json:"apiKey"`
	} `json:"providers"`
	OperatorFlags []string `json:"operatorFlags"`
}

// demo is one running demo: control plane, simulators and operator.
type demo struct {
	opts  options
	out   io.Writer
	state State

	env      *testenv.Env
	kube     kubernetes.Interface
	client   versioned.Interface
	cloudsim *child
	operator *child
	watch    *child
	sims     endpoints
}

// say prints one step of the demo.
func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.out, "==> "+format+"\n", args...)
}

// start brings up everything but the examples: control plane, simulators,
// credentials and operator. On error what was started is stopped.
func (d *demo) start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			d.stop()
		}
	}()
	d.state = State{PID: os.Getpid(), Dir: d.opts.dir, Phase: PhaseStarting, StartedAt: time.Now()}
	if err := d.writeState(); err != nil {
		return err
	}

	d.say("Starting a local Kubernetes control plane (bin/etcd, bin/kube-apiserver, bin/kube-controller-manager) and installing the GPURequest CRD")
	env, err := startControlPlane(ctx, filepath.Join(d.opts.dir, "controlplane"))
	if err != nil {
		return err
	}
	d.env = env
	d.state.Kubeconfig, d.state.APIServer = env.Kubeconfig, env.Config.Host
	if d.kube, err = kubernetes.NewForConfig(env.Config); err != nil {
		return err
	}
	if d.client, err = versioned.NewForConfig(env.Config); err != nil {
		return err
	}
	d.say("API server %s ready in %s", env.Config.Host, since(d.state.StartedAt))

	d.say("Starting the Lambda Cloud, RunPod, Paperspace and Vast.ai simulators and the node agent (bin/cloudsim, catalog %s)", d.rel(d.opts.catalog))
	epFile := filepath.Join(d.opts.dir, "cloudsim-endpoints.json")
	_ = os.Remove(epFile)
	d.cloudsim, err = startChild("cloudsim", filepath.Join(d.opts.dir, "logs", "cloudsim.log"), nil, d.opts.cloudsimBin,
		"--config", d.opts.catalog,
		// Free ports rather than the catalog's fixed ones, so a demo can
		// run beside tests and other demos.
		"--lambda-addr", "127.0.0.1:0", "--runpod-addr", "127.0.0.1:0", "--paperspace-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
		"--boot-delay", d.opts.bootDelay.String(), "--terminate-delay", "1s",
		"--kubeconfig", env.Kubeconfig, "--tls-bootstrap",
		"--endpoints-file", epFile)
	if err != nil {
		return err
	}
	err = d.poll(ctx, 50*time.Millisecond, 30*time.Second, "the simulators to listen", func() (bool, error) {
		data, err := os.ReadFile(epFile)
		if err != nil {
			return false, nil
		}
		return true, json.Unmarshal(data, &d.sims)
	})
	if err != nil {
		return err
	}
	d.state.AdminURL = d.sims.Admin
	d.state.Simulators = map[string]string{}
	for name, p := range d.sims.Providers {
		d.state.Simulators[name] = p.URL
		fmt.Fprintf(d.out, "    %-11s %s\n", name, p.URL)
	}
	fmt.Fprintf(d.out, "    %-11s %s  (take machines back, set capacity, inject faults: curl %s/)\n", "admin", d.sims.Admin, d.sims.Admin)

	d.say("Creating namespace %s and the Secret %s with the simulators' API keys", operatorNamespace, credentialsSecret)
	if err := d.createCredentials(ctx); err != nil {
		return err
	}

	metricsAddr, err := testenv.FreeAddr()
	if err != nil {
		return err
	}
	d.state.MetricsURL = "http://" + metricsAddr + "/metrics"
	args := []string{
		"--kubeconfig", env.Kubeconfig,
		"--namespace", operatorNamespace,
		"--credentials-secret", credentialsSecret,
		"--leader-elect=false",
		"--poll-interval", d.opts.pollInterval.String(),
		"--metrics-addr", metricsAddr,
		// Each machine gets its own bootstrap token; its kubelet (the
		// simulators' node agent) joins with it by TLS bootstrap.
		"--mint-join-tokens", "--api-server-url", env.Config.Host,
		// The simulators enforce no rate limits (see the catalog's note):
		// lift the client-side limits meant for the real APIs, among them
		// Lambda's one launch per 12s.
		"--lambda-launch-interval=-1s", "--lambda-rps=50", "--runpod-rps=50", "--paperspace-rps=100",
	}
	args = append(args, d.sims.OperatorFlags...)
	d.say("Starting the operator (bin/gpu-operator), polling the providers every %s", d.opts.pollInterval)
	d.operator, err = startChild("gpu-operator", filepath.Join(d.opts.dir, "logs", "gpu-operator.log"), nil, d.opts.operatorBin, args...)
	if err != nil {
		return err
	}
	readyz := "http://" + metricsAddr + "/readyz"
	err = d.poll(ctx, 100*time.Millisecond, 60*time.Second, "the operator to be ready", func() (bool, error) {
		return httpOK(ctx, readyz), nil
	})
	if err != nil {
		return err
	}
	d.say("Operator ready; metrics at %s", d.state.MetricsURL)
	d.state.Children = d.childPIDs()
	d.state.Phase = PhaseRunning
	return d.writeState()
}

// startControlPlane runs testenv.Start. A signal does not cancel it half-way
// (testenv.Start cannot clean up after a cancellation once its first server
// runs): an interrupt waits for the start to finish, then stops what started.
func startControlPlane(ctx context.Context, dir string) (*testenv.Env, error) {
	type result struct {
		env *testenv.Env
		err error
	}
	ch := make(chan result, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				// Whatever it started dies with the demo (Pdeathsig).
				ch <- result{err: fmt.Errorf("starting the control plane: %v", r)}
			}
		}()
		startCtx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		env, err := testenv.Start(startCtx, testenv.Options{Dir: dir})
		ch <- result{env, err}
	}()
	select {
	case r := <-ch:
		return r.env, r.err
	case <-ctx.Done():
		r := <-ch
		if r.env != nil {
			r.env.Stop()
		}
		return nil, errors.New("interrupted while starting the control plane")
	}
}

// childPIDs names every process the demo started, the control plane's too.
func (d *demo) childPIDs() map[string]int {
	out := map[string]int{}
	for pid, comm := range childPIDs(os.Getpid()) {
		switch {
		case d.operator != nil && pid == d.operator.pid():
			comm = "gpu-operator"
		case d.cloudsim != nil && pid == d.cloudsim.pid():
			comm = "cloudsim"
		case d.watch != nil && pid == d.watch.pid():
			comm = "kubectl"
		}
		out[comm] = pid
	}
	return out
}

// createCredentials creates the operator's namespace and credentials Secret.
func (d *demo) createCredentials(ctx context.Context) error {
	_, err := d.kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: operatorNamespace}}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", operatorNamespace, err)
	}
	// --mint-join-tokens reads the CA kube-controller-manager publishes there.
	if _, err := d.env.RootCA(ctx, operatorNamespace); err != nil {
		return err
	}
	data := map[string][]byte{}
	for name, p := range d.sims.Providers {
		key := p.APIKey
		if key == "" {
			key = "demo" // the simulator accepts any key
		}
		data[name] = []byte(key)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: credentialsSecret, Namespace: operatorNamespace}, Data: data}
	_, err = d.kube.CoreV1().Secrets(operatorNamespace).Create(ctx, secret, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating Secret %s/%s: %w", operatorNamespace, credentialsSecret, err)
	}
	return nil
}

// applyExamples applies manifests/examples with kubectl and returns the
// GPURequests' names.
func (d *demo) applyExamples(ctx context.Context) ([]string, error) {
	dir := filepath.Join(d.opts.root, "manifests", "examples")
	names, err := exampleNames(dir)
	if err != nil {
		return nil, err
	}
	d.say("Applying the examples: kubectl apply -f %s", d.rel(dir))
	c, err := startChild("kubectl apply", "", d.out, d.opts.kubectlBin, "--kubeconfig", d.env.Kubeconfig, "apply", "-f", dir)
	if err != nil {
		return nil, err
	}
	select {
	case <-c.done:
	case <-ctx.Done():
		c.stop(5 * time.Second)
		return nil, ctx.Err()
	}
	if c.err != nil {
		return nil, fmt.Errorf("kubectl apply: %w", c.err)
	}
	return names, nil
}

// startWatch streams `kubectl get gpurequests -w` to the terminal.
func (d *demo) startWatch() error {
	d.say("Watching: kubectl get gpurequests -w   (PHASE moves Pending -> Provisioning -> Booting -> Joining -> Ready; a container is Ready once running)")
	var err error
	d.watch, err = startChild("kubectl get gpurequests -w", "", d.out, d.opts.kubectlBin,
		"--kubeconfig", d.env.Kubeconfig, "get", "gpurequests", "--namespace", requestNamespace, "-w")
	return err
}

func (d *demo) stopWatch() {
	if d.watch != nil {
		d.watch.stop(5 * time.Second)
		d.watch = nil
	}
}

// waitFor waits until every named GPURequest satisfies done; a Failed one
// ends the wait with its message.
func (d *demo) waitFor(ctx context.Context, names []string, what string, done func(*tgpv1.GPURequest) bool) (map[string]*tgpv1.GPURequest, error) {
	var got map[string]*tgpv1.GPURequest
	err := d.poll(ctx, 250*time.Millisecond, d.opts.timeout, fmt.Sprintf("%s to be %s", strings.Join(names, ", "), what), func() (bool, error) {
		list, err := d.client.TgpV1().GPURequests(requestNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil // the API server may be busy; try again
		}
		got = map[string]*tgpv1.GPURequest{}
		for i := range list.Items {
			got[list.Items[i].Name] = &list.Items[i]
		}
		all := true
		for _, n := range names {
			r, ok := got[n]
			switch {
			case !ok:
				all = false
			case r.Status.Phase == tgpv1.PhaseFailed:
				return false, fmt.Errorf("GPURequest %s failed: %s", n, r.Status.Message)
			case !done(r):
				all = false
			}
		}
		return all, nil
	})
	if err != nil && got != nil {
		var lines []string
		for _, n := range names {
			if r, ok := got[n]; ok {
				lines = append(lines, fmt.Sprintf("  %s: %s %s", n, r.Status.Phase, r.Status.Message))
			} else {
				lines = append(lines, fmt.Sprintf("  %s: not found", n))
			}
		}
		err = fmt.Errorf("%w\n%s", err, strings.Join(lines, "\n"))
	}
	return got, err
}

// stop stops everything in reverse order and waits for each process to
// exit, so no process or port is left behind.
func (d *demo) stop() {
	d.stopWatch()
	if d.operator != nil {
		d.operator.stop(20 * time.Second)
	}
	if d.cloudsim != nil {
		d.cloudsim.stop(10 * time.Second)
	}
	if d.env != nil {
		d.env.Stop()
	}
	d.state.Phase = PhaseStopped
	d.state.Children = nil
	_ = d.writeState()
}

// crashed returns the first unexpected exit of a child.
func (d *demo) crashed() error {
	for _, c := range []*child{d.cloudsim, d.operator} {
		if c != nil && !c.stopping && c.exited() {
			return c.crashErr()
		}
	}
	return nil
}

// poll calls cond every interval until it is true, it fails, a child
// crashes, timeout passes or ctx ends.
func (d *demo) poll(ctx context.Context, interval, timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if err := d.crashed(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("interrupted while waiting for %s", what)
		case <-deadline.C:
			return fmt.Errorf("timed out after %s waiting for %s (logs in %s)", timeout, what, d.rel(filepath.Join(d.opts.dir, "logs")))
		case <-tick.C:
		}
	}
}

func (d *demo) writeState() error {
	return writeState(d.opts.dir, &d.state)
}

// rel shortens a path under the repository root for printing.
func (d *demo) rel(path string) string {
	if r, err := filepath.Rel(d.opts.root, path); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return path
}

// exampleNames returns the names of the GPURequests in dir's YAML files.
func exampleNames(dir string) ([]string, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		for _, doc := range strings.Split(string(data), "\n---") {
			var obj struct {
				Kind     string `json:"kind"`
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}
			if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			if obj.Kind == "GPURequest" {
				names = append(names, obj.Metadata.Name)
			}
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no GPURequest in %s", dir)
	}
	slices.Sort(names)
	return names, nil
}

func httpOK(ctx context.Context, u string) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
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

func since(t time.Time) string {
	return time.Since(t).Round(100 * time.Millisecond).String()
}
