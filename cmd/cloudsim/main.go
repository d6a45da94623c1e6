// Command cloudsim serves the Lambda Cloud, RunPod, Paperspace and Vast.ai
// simulators (pkg/cloudsim) over loopback HTTP for the local demo and manual
// testing, with a catalog read from a JSON or YAML file (see
// hack/demo/catalog.json; Vast.ai's is a marketplace of hosts).
//
// With --kubeconfig it also runs the node agent, which plays kubelet: a
// simulated VM that becomes active registers a Ready Node, and the Node goes
// away when the machine dies (RunPod pods and Vast.ai container instances
// are containers and register none; a Vast.ai VM registers once the operator
// has run its bootstrap over SSH on the VM's loopback SSH server). A small
// admin API (--admin-addr) takes machines back as each provider does
// (Lambda: preempted; RunPod: pod EXITED; Paperspace: machine off; Vast.ai:
// outbid), places competing Vast.ai bids, sets the capacity left, lists
// machines, reports counters and injects faults.
//
//	cloudsim --config hack/demo/catalog.json --kubeconfig .demo/run/controlplane/kubeconfig
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/solanyn/gpu-operator/pkg/cloudsim/nodeagent"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// Endpoints is what cloudsim prints on start and writes to --endpoints-file:
// where each simulator listens and the operator flags that point at it.
type Endpoints struct {
	// Admin is the admin API's base URL.
	Admin string `json:"admin"`
	// Providers are the running simulators by provider name.
	Providers map[string]ProviderEndpoint `json:"providers"`
	// OperatorFlags point bin/gpu-operator at the simulators.
	OperatorFlags []string `json:"operatorFlags"`
	// PID is cloudsim's process id.
	PID int `json:"pid"`
}

// ProviderEndpoint is one simulator.
type ProviderEndpoint struct {
	URL string `json:"url"`
	// APIKey is the key the simulator accepts ("" accepts any).
	APIKey string `json:"apiKey"`
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "cloudsim:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("cloudsim", flag.ContinueOnError)
	var (
		configPath    = fs.String("config", "", "Catalog and simulator settings, JSON or YAML (required; see hack/demo/catalog.json).")
		kubeconfig    = fs.String("kubeconfig", "", "Run the node agent against this cluster: active machines register as Ready Nodes.")
		agentInterval = fs.Duration("agent-interval", 200*time.Millisecond, "How often the node agent syncs Nodes with the machines.")
		tlsBootstrap  = fs.Bool("tls-bootstrap", false, "Join machines as kubelets do: a CSR made with the bootstrap token in the machine's user data (the operator's --mint-join-tokens), approved and signed by the cluster, then the Node written with its own certificate; a machine without a valid token never joins. The kubeconfig's server and CA are what the kubelets dial.")
		endpointsFile = fs.String("endpoints-file", "", "Write the endpoints as JSON to this file once every server listens.")
		o             = Overrides{Addrs: map[string]string{}}
	)
	addrFlag := func(key, flagName string) {
		fs.Func(flagName, fmt.Sprintf("Listen address of the %s (overrides the config's addrs.%s; port 0 picks a free one).", describe(key), key),
			func(s string) error { o.Addrs[key] = s; return nil })
	}
	addrFlag(providers.LambdaLabs, "lambda-addr")
	addrFlag(providers.RunPod, "runpod-addr")
	addrFlag(providers.Paperspace, "paperspace-addr")
	addrFlag(providers.VastAI, "vastai-addr")
	addrFlag(AdminAddrKey, "admin-addr")
	durFlag := func(name, usage string, dst **time.Duration) {
		fs.Func(name, usage, func(s string) error {
			d, err := time.ParseDuration(s)
			if err != nil || d < 0 {
				return fmt.Errorf("want a non-negative duration such as 2s, got %q", s)
			}
			*dst = &d
			return nil
		})
	}
	durFlag("boot-delay", "How long every new machine boots (overrides the config).", &o.BootDelay)
	durFlag("terminate-delay", "How long a terminated machine stays visible (overrides the config).", &o.TerminateDelay)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *configPath == "" {
		return errors.New("--config is required (for example --config hack/demo/catalog.json)")
	}
	file, err := LoadFile(*configPath)
	if err != nil {
		return err
	}
	for _, w := range file.Warnings() {
		fmt.Fprintln(os.Stderr, "cloudsim: warning:", w)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	sims, err := stack.Start(file.StackConfig(o), nil)
	if err != nil {
		return fmt.Errorf("starting the simulators: %w", err)
	}
	defer sims.Close()
	if sims.Lambda != nil {
		for _, k := range file.Providers[providers.LambdaLabs].SSHKeys {
			sims.Lambda.AddSSHKey(k)
		}
	}

	adminLn, err := net.Listen("tcp", file.AdminAddr(o))
	if err != nil {
		return fmt.Errorf("admin API: %w", err)
	}
	adminSrv := &http.Server{Handler: (&admin{sims: sims.Simulators()}).handler(), ReadHeaderTimeout: 5 * time.Second}
	adminDone := make(chan error, 1)
	go func() { adminDone <- adminSrv.Serve(adminLn) }()
	defer adminSrv.Close()

	agentDone := make(chan struct{})
	if *kubeconfig != "" {
		cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
		if err != nil {
			return fmt.Errorf("node agent: %w", err)
		}
		cfg.UserAgent = "cloudsim-nodeagent"
		kube, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return fmt.Errorf("node agent: %w", err)
		}
		agent := &nodeagent.Agent{Kube: kube, Simulators: sims.Simulators(), Interval: *agentInterval}
		if *tlsBootstrap {
			ca := cfg.CAData
			if len(ca) == 0 && cfg.CAFile != "" {
				if ca, err = os.ReadFile(cfg.CAFile); err != nil {
					return fmt.Errorf("node agent: the cluster CA: %w", err)
				}
			}
			if len(ca) == 0 {
				return errors.New("node agent: --tls-bootstrap needs a kubeconfig naming the cluster's CA")
			}
			agent.TLSBootstrap = &nodeagent.TLSBootstrap{Host: cfg.Host, CAData: ca}
		}
		go func() {
			defer close(agentDone)
			agent.Run(ctx)
		}()
	} else {
		close(agentDone)
	}

	ep := Endpoints{Admin: "http://" + adminLn.Addr().String(), Providers: map[string]ProviderEndpoint{}, PID: os.Getpid()}
	for _, s := range sims.Simulators() {
		ep.Providers[s.Provider()] = ProviderEndpoint{URL: sims.URL(s.Provider()), APIKey: s.Core().Config().APIKey}
	}
	ep.OperatorFlags = operatorFlags(ep, file.LambdaSSHKey())
	printEndpoints(stdout, ep, *kubeconfig)
	if *endpointsFile != "" {
		if err := writeFileAtomic(*endpointsFile, ep); err != nil {
			return err
		}
	}

	select {
	case <-ctx.Done():
	case err := <-adminDone:
		return fmt.Errorf("admin API: %w", err)
	}
	fmt.Fprintln(stdout, "cloudsim: stopping")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = adminSrv.Shutdown(shutdownCtx)
	<-agentDone
	if *endpointsFile != "" {
		_ = os.Remove(*endpointsFile)
	}
	return nil
}

// operatorFlags are the bin/gpu-operator flags that reach the simulators;
// Lambda launches name sshKey, an SSH key registered in the simulated account.
func operatorFlags(ep Endpoints, sshKey string) []string {
	var out []string
	var enabled []string
	for _, name := range providerNames {
		p, ok := ep.Providers[name]
		if !ok {
			continue
		}
		enabled = append(enabled, name)
		switch name {
		case providers.LambdaLabs:
			out = append(out, "--lambda-url="+p.URL, "--lambda-ssh-key-name="+sshKey)
		case providers.RunPod:
			out = append(out, "--runpod-api-url="+p.URL)
		case providers.Paperspace:
			out = append(out, "--paperspace-url="+p.URL+"/v1")
		case providers.VastAI:
			out = append(out, "--vastai-url="+p.URL)
		}
	}
	return append([]string{"--providers=" + strings.Join(enabled, ",")}, out...)
}

func describe(key string) string {
	if key == AdminAddrKey {
		return "admin API"
	}
	return key + " simulator"
}

func printEndpoints(w io.Writer, ep Endpoints, kubeconfig string) {
	fmt.Fprintln(w, "cloudsim: simulators listening")
	for _, name := range providerNames {
		if p, ok := ep.Providers[name]; ok {
			fmt.Fprintf(w, "  %-11s %s\n", name, p.URL)
		}
	}
	fmt.Fprintf(w, "  %-11s %s  (GET / for usage)\n", "admin", ep.Admin)
	if kubeconfig != "" {
		fmt.Fprintf(w, "  node agent  on, registering Nodes through %s\n", kubeconfig)
	} else {
		fmt.Fprintln(w, "  node agent  off (pass --kubeconfig to register Nodes)")
	}
	fmt.Fprintf(w, "  operator flags: %s\n", strings.Join(ep.OperatorFlags, " "))
}

// writeFileAtomic writes v as JSON so that a reader never sees half a file.
func writeFileAtomic(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".endpoints-*")
	if err != nil {
		return err
	}
	if _, err := tmp.Write(append(data, '\n')); err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := tmp.Close(); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return os.Rename(tmp.Name(), path)
}
