// Command gpu-operator-demo runs the whole gpu-operator story on one machine
// with nothing but Go: a local etcd and kube-apiserver, simulated Lambda
// Cloud, RunPod and Paperspace APIs (bin/cloudsim, which also plays kubelet),
// and the operator itself (bin/gpu-operator). It applies the examples in
// manifests/examples and shows what each gets from a catalog shaped like the
// real providers' (VMs joining as Nodes, a RunPod container, a failover out
// of a sold-out region, a request Pending for want of a VM with its GPU),
// then has RunPod take a machine back and shows the operator recover.
//
//	gpu-operator-demo run    # make demo: in the foreground until Ctrl-C
//	gpu-operator-demo up     # make demo-up: in the background; prints KUBECONFIG
//	gpu-operator-demo down   # make demo-down: stops what up started
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/testenv"
)

const usage = `gpu-operator-demo: the operator, simulated GPU clouds and a local control plane on this machine.

  run    start everything, apply manifests/examples, show what each gets (Ready VMs and a
         container, a failover, a Pending reason), have a provider take a machine back
         and show the recovery; keeps running until Ctrl-C (make demo)
  up     the same setup in the background; prints the KUBECONFIG to use (make demo-up)
  down   stop what up started and remove its state (make demo-down)

Run "gpu-operator-demo <command> -h" for the flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var code int
	switch os.Args[1] {
	case "run":
		code = cmdRun(os.Args[2:], os.Stdout)
	case "up":
		code = cmdUp(os.Args[2:], os.Stdout)
	case "down":
		code = cmdDown(os.Args[2:], os.Stdout)
	case "serve": // the background half of up
		code = cmdServe(os.Args[2:], os.Stdout)
	case "-h", "--help", "help":
		fmt.Fprint(os.Stdout, usage)
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n\n%s", os.Args[1], usage)
		code = 2
	}
	os.Exit(code)
}

// parseOptions parses the flags the commands share; defaultDir is under
// .demo/ in the repository.
func parseOptions(name string, args []string, defaultDir string, extra func(*flag.FlagSet)) (options, error) {
	root, err := repoRoot()
	if err != nil {
		return options{}, err
	}
	// testenv finds the repository from the working directory.
	if err := os.Chdir(root); err != nil {
		return options{}, err
	}
	o := options{root: root}
	fs := flag.NewFlagSet("gpu-operator-demo "+name, flag.ContinueOnError)
	bin := filepath.Join(root, "bin")
	fs.StringVar(&o.dir, "dir", filepath.Join(root, ".demo", defaultDir), "Directory for the demo's state, logs and control plane data (wiped on start).")
	fs.StringVar(&o.catalog, "catalog", filepath.Join(root, "hack", "demo", "catalog.json"), "Simulated catalog: types, regions, prices and capacity (cmd/cloudsim's --config).")
	fs.StringVar(&o.operatorBin, "operator", filepath.Join(bin, "gpu-operator"), "The operator binary.")
	fs.StringVar(&o.cloudsimBin, "cloudsim", filepath.Join(bin, "cloudsim"), "The simulator binary.")
	fs.StringVar(&o.kubectlBin, "kubectl", filepath.Join(bin, "kubectl"), "The kubectl binary.")
	fs.DurationVar(&o.bootDelay, "boot-delay", 2*time.Second, "How long a simulated machine takes to boot.")
	fs.DurationVar(&o.pollInterval, "poll-interval", 2*time.Second, "The operator's --poll-interval.")
	fs.DurationVar(&o.timeout, "timeout", 3*time.Minute, "How long to wait for the examples to settle (Ready, or Pending with no eligible offer), and for the recovery.")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	for _, p := range []*string{&o.dir, &o.catalog, &o.operatorBin, &o.cloudsimBin, &o.kubectlBin} {
		if *p, err = filepath.Abs(*p); err != nil {
			return options{}, err
		}
	}
	for _, b := range []string{o.operatorBin, o.cloudsimBin, o.kubectlBin} {
		if _, err := os.Stat(b); err != nil {
			return options{}, fmt.Errorf("%s is missing: run `make build tools` (or use `make demo`)", b)
		}
	}
	return o, nil
}

// repoRoot finds the repository from the working directory, else from the
// binary's location (bin/gpu-operator-demo).
func repoRoot() (string, error) {
	if root, err := testenv.RepoRoot(); err == nil {
		return root, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	root := filepath.Dir(filepath.Dir(exe))
	if _, err := os.Stat(filepath.Join(root, "manifests", "examples")); err != nil {
		return "", errors.New("cannot find the gpu-operator repository: run the demo from inside it")
	}
	return root, nil
}

// prepareDir refuses a directory in use by a running demo and empties it.
func prepareDir(dir string) error {
	if s, err := readState(dir); err == nil && s.Phase != PhaseStopped && s.PID != os.Getpid() && alive(s.PID, "") {
		return fmt.Errorf("a demo (pid %d) is already using %s: stop it first (Ctrl-C, or `make demo-down` for make demo-up)", s.PID, dir)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.MkdirAll(dir, 0o755)
}

func fail(out io.Writer, err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(out, "demo failed:", err)
	return 1
}

// cmdRun is `make demo`.
func cmdRun(args []string, out io.Writer) int {
	var exitWhenDone bool
	opts, err := parseOptions("run", args, "run", func(fs *flag.FlagSet) {
		fs.BoolVar(&exitWhenDone, "exit-when-done", false, "Stop everything and exit after the recovery instead of waiting for Ctrl-C.")
	})
	if err != nil {
		return fail(os.Stderr, err)
	}
	opts.exitWhenDone = exitWhenDone
	if err := prepareDir(opts.dir); err != nil {
		return fail(os.Stderr, err)
	}
	ctx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()

	fmt.Fprintln(out, "gpu-operator demo: a local Kubernetes control plane, simulated Lambda Cloud, RunPod and Paperspace")
	fmt.Fprintln(out, "APIs (nothing is billed) and the operator, all on this machine. Ctrl-C stops everything.")
	fmt.Fprintln(out)
	d := &demo{opts: opts, out: out}
	err = d.runStory(ctx)
	if err == nil && !exitWhenDone {
		d.printNextSteps()
		<-ctx.Done()
	}
	stopSignals() // a second Ctrl-C now kills the demo at once (its children die with it)
	if err != nil && ctx.Err() == nil {
		d.state.Error = err.Error()
		fmt.Fprintln(out, "demo failed:", err)
	}
	fmt.Fprintln(out)
	d.say("Stopping the operator, the simulators and the control plane ...")
	d.stop()
	d.say("Stopped; nothing is left running. Logs: %s", d.rel(filepath.Join(opts.dir, "logs")))
	if err != nil && ctx.Err() == nil {
		return 1
	}
	return 0
}

// runStory starts everything, applies the examples, waits until each has
// settled (Ready, or Pending with no eligible offer), reports what each got,
// has the provider take interruptTarget's machine back and waits for the
// recovery.
func (d *demo) runStory(ctx context.Context) error {
	if err := d.start(ctx); err != nil {
		return err
	}
	d.state.SetupSeconds = time.Since(d.state.StartedAt).Seconds()
	names, applied, err := d.applyStory(ctx, true)
	if err != nil {
		return err
	}
	reqs, err := d.waitFor(ctx, names, "Ready or Pending with no eligible offer", settled)
	if err != nil {
		return err
	}
	d.state.AllReadySeconds = time.Since(applied).Seconds()
	d.state.Phase = PhaseReady
	d.state.Children = d.childPIDs()
	if err := d.writeState(); err != nil {
		return err
	}
	d.say("All %d GPURequests settled %s after kubectl apply (%d Ready)", len(names), since(applied), countReady(reqs))
	d.report(ctx, names, reqs)

	target := reqs[interruptTarget]
	if target == nil || target.Status.Phase != tgpv1.PhaseReady {
		return fmt.Errorf("%s is not Ready, so there is no machine to take back", interruptTarget)
	}
	st := target.Status
	d.say("Simulating an interruption: %s takes back %s's machine %s (%s in %s): %s",
		st.Provider, target.Name, st.InstanceID, st.InstanceType, st.ProviderRegion, howTakenBack(st.Provider))
	interrupted := time.Now()
	if err := d.interrupt(ctx, target); err != nil {
		return err
	}
	d.state.Interrupted = target.Name
	after, err := d.waitFor(ctx, []string{target.Name}, "Ready on a new machine", func(r *tgpv1.GPURequest) bool {
		return r.Status.Phase == tgpv1.PhaseReady && r.Status.Interruptions > st.Interruptions && r.Status.InstanceID != st.InstanceID
	})
	if err != nil {
		return fmt.Errorf("recovering from the interruption: %w", err)
	}
	d.state.RecoverySeconds = time.Since(interrupted).Seconds()
	now := after[target.Name].Status
	d.say("Recovered in %s: %s is Ready again on %s %s in %s (%s) at $%.2f/h, interruptions: %d",
		since(interrupted), target.Name, now.Provider, now.InstanceID, now.ProviderRegion, now.Region, price(now.HourlyPrice), now.Interruptions)
	released, err := d.budgetStory(ctx, reqs)
	if err != nil {
		return fmt.Errorf("the budget step: %w", err)
	}
	d.state.BudgetReleaseSeconds = released.Seconds()
	d.stopWatch()
	d.state.Phase = PhaseRecovered
	d.state.Children = d.childPIDs()
	if err := d.writeState(); err != nil {
		return err
	}
	d.say("Setup %s, all settled %s after apply, recovery %s",
		secs(d.state.SetupSeconds), secs(d.state.AllReadySeconds), secs(d.state.RecoverySeconds))
	return nil
}

// applyStory prepares what the examples need (container-notebook's Secret,
// the sold-out region), applies them and, with watch, starts streaming
// kubectl get gpurequests -w. It returns the requests' names and when they
// were applied.
func (d *demo) applyStory(ctx context.Context, watch bool) ([]string, time.Time, error) {
	if err := d.createNotebookSecret(ctx); err != nil {
		return nil, time.Time{}, err
	}
	if err := d.sellOut(ctx); err != nil {
		return nil, time.Time{}, err
	}
	names, err := d.applyExamples(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	applied := time.Now()
	if watch {
		if err := d.startWatch(); err != nil {
			return nil, time.Time{}, err
		}
	}
	return names, applied, nil
}

func countReady(reqs map[string]*tgpv1.GPURequest) int {
	n := 0
	for _, r := range reqs {
		if r.Status.Phase == tgpv1.PhaseReady {
			n++
		}
	}
	return n
}

// printNextSteps tells a newcomer what to try while the demo runs.
func (d *demo) printNextSteps() {
	fmt.Fprintln(d.out)
	c := exec.Command(d.opts.kubectlBin, "--kubeconfig", d.env.Kubeconfig, "get", "gpurequests", "--namespace", requestNamespace)
	c.Stdout, c.Stderr = d.out, d.out
	_ = c.Run()
	kubectl := d.rel(d.opts.kubectlBin)
	fmt.Fprintf(d.out, `
The demo keeps running. In another terminal:
  export KUBECONFIG=%s
  %s get gpurequests                      # status.selection in -o yaml says why each offer won
  %s get nodes -L workload                # the simulated GPU VMs, joined as Nodes
  %s get gpurequest container-notebook -o jsonpath='{.status.ports}'
  curl -s %s | grep ^gpu_operator_
  curl -s -X POST '%s/preempt?name=<machine name>'   # a provider takes another machine back
Logs: %s
Press Ctrl-C to stop everything.
`, d.state.Kubeconfig, kubectl, kubectl, kubectl, d.state.MetricsURL, d.state.AdminURL, d.rel(filepath.Join(d.opts.dir, "logs")))
}

// cmdUp starts `serve` detached and returns once its examples are Ready.
func cmdUp(args []string, out io.Writer) int {
	opts, err := parseOptions("up", args, "up", nil)
	if err != nil {
		return fail(os.Stderr, err)
	}
	if s, err := readState(opts.dir); err == nil && s.Phase != PhaseStopped && alive(s.PID, "serve") {
		fmt.Fprintf(out, "A background demo (pid %d) is already running.\n  export KUBECONFIG=%s\nStop it with `make demo-down`.\n", s.PID, s.Kubeconfig)
		return 0
	}
	if err := prepareDir(opts.dir); err != nil {
		return fail(os.Stderr, err)
	}
	exe, err := os.Executable()
	if err != nil {
		return fail(os.Stderr, err)
	}
	logPath := filepath.Join(opts.dir, "demo.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return fail(os.Stderr, err)
	}
	defer logFile.Close()
	cmd := exec.Command(exe, append([]string{"serve"}, args...)...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own session: no terminal signals, and it outlives this process.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fail(os.Stderr, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	fmt.Fprintf(out, "Starting the demo in the background (pid %d, log %s) ...\n", cmd.Process.Pid, logPath)

	deadline := time.After(opts.timeout + 2*time.Minute)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		s, err := readState(opts.dir)
		if err == nil && s.PID == cmd.Process.Pid {
			if s.Phase == PhaseReady {
				fmt.Fprintf(out, "The demo is up: the examples have settled (%s after apply).\n\n", secs(s.AllReadySeconds))
				fmt.Fprintf(out, "  export KUBECONFIG=%s\n  %s get gpurequests\n\n", s.Kubeconfig, filepath.Join("bin", "kubectl"))
				fmt.Fprintf(out, "Metrics: %s\nSimulators' admin API: %s\nStop it with `make demo-down`.\n", s.MetricsURL, s.AdminURL)
				return 0
			}
			if s.Error != "" {
				fmt.Fprintf(out, "The background demo failed: %s\n", s.Error)
			}
		}
		select {
		case err := <-exited:
			fmt.Fprintf(out, "The background demo exited (%v); last lines of %s:\n%s\n", err, logPath, tail(logPath, 20))
			return 1
		case <-deadline:
			fmt.Fprintf(out, "The background demo is not ready yet; see %s, and stop it with `make demo-down`.\n", logPath)
			return 1
		case <-tick.C:
		}
	}
}

// cmdServe is the background half of up: the demo without the watch and the
// interruption, until SIGTERM (from down).
func cmdServe(args []string, out io.Writer) int {
	opts, err := parseOptions("serve", args, "up", nil)
	if err != nil {
		return fail(out, err)
	}
	ctx, stopSignals := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	d := &demo{opts: opts, out: out}
	err = func() error {
		if err := d.start(ctx); err != nil {
			return err
		}
		d.state.SetupSeconds = time.Since(d.state.StartedAt).Seconds()
		names, applied, err := d.applyStory(ctx, false)
		if err != nil {
			return err
		}
		reqs, err := d.waitFor(ctx, names, "Ready or Pending with no eligible offer", settled)
		if err != nil {
			return err
		}
		d.state.AllReadySeconds = time.Since(applied).Seconds()
		d.state.Phase = PhaseReady
		d.state.Children = d.childPIDs()
		d.say("All %d GPURequests settled %s after kubectl apply (%d Ready); running until `make demo-down`", len(names), since(applied), countReady(reqs))
		d.report(ctx, names, reqs)
		return d.writeState()
	}()
	if err != nil {
		d.state.Error = err.Error()
		_ = d.writeState()
		fmt.Fprintln(out, "demo failed:", err)
	} else {
		<-ctx.Done()
	}
	d.say("Stopping ...")
	d.stop()
	d.say("Stopped")
	if err != nil {
		return 1
	}
	return 0
}

// cmdDown stops the background demo by its recorded pids and removes its
// directory.
func cmdDown(args []string, out io.Writer) int {
	root, err := repoRoot()
	if err != nil {
		return fail(os.Stderr, err)
	}
	flags := flag.NewFlagSet("gpu-operator-demo down", flag.ContinueOnError)
	dir := flags.String("dir", filepath.Join(root, ".demo", "up"), "The directory `up` used.")
	if err := flags.Parse(args); err != nil {
		return fail(os.Stderr, err)
	}
	s, err := readState(*dir)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && s.Phase == PhaseStopped && !anyAlive(s)) {
		fmt.Fprintln(out, "No background demo is running.")
		removeDemoDir(*dir)
		return 0
	}
	if err != nil {
		return fail(os.Stderr, fmt.Errorf("reading the demo's state: %w", err))
	}
	if alive(s.PID, "serve") {
		fmt.Fprintf(out, "Stopping the background demo (pid %d) ...\n", s.PID)
		_ = syscall.Kill(s.PID, syscall.SIGTERM)
		if !waitGone(60*time.Second, func() bool { return !alive(s.PID, "serve") }) {
			fmt.Fprintln(out, "It did not stop within 60s; killing it.")
			_ = syscall.Kill(-s.PID, syscall.SIGKILL) // its session's process group
		}
	}
	// Whatever survived the demo (it was killed, say): stop by recorded pid.
	for name, pid := range s.Children {
		if alive(pid, name) {
			fmt.Fprintf(out, "Killing leftover %s (pid %d)\n", name, pid)
			_ = syscall.Kill(-pid, syscall.SIGKILL)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	if !waitGone(10*time.Second, func() bool { return !anyAlive(s) }) {
		return fail(os.Stderr, errors.New("some of the demo's processes are still running; see "+*dir))
	}
	removeDemoDir(*dir)
	fmt.Fprintf(out, "Stopped the background demo and removed %s.\n", *dir)
	return 0
}

// anyAlive reports whether a demo process or any of its children runs.
func anyAlive(s *State) bool {
	if alive(s.PID, "serve") {
		return true
	}
	for name, pid := range s.Children {
		if alive(pid, name) {
			return true
		}
	}
	return false
}

// removeDemoDir removes dir, and .demo/ above it once empty.
func removeDemoDir(dir string) {
	_ = os.RemoveAll(dir)
	_ = os.Remove(filepath.Dir(dir)) // fails, harmlessly, unless empty
}

// waitGone polls gone until it is true or timeout passes.
func waitGone(timeout time.Duration, gone func() bool) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !gone() {
		select {
		case <-deadline.C:
			return gone()
		case <-tick.C:
		}
	}
	return true
}

func price(p *float64) float64 {
	if p == nil {
		return 0
	}
	return *p
}

func secs(s float64) string {
	return (time.Duration(s * float64(time.Second))).Round(100 * time.Millisecond).String()
}
