// Package stack runs the provider simulators on loopback HTTP servers and
// builds the real provider adapters pointed at them: what integration
// tests, the demo and the benchmarks share.
package stack

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"k8s.io/utils/clock"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	lambdasim "github.com/solanyn/gpu-operator/pkg/cloudsim/lambda"
	paperspacesim "github.com/solanyn/gpu-operator/pkg/cloudsim/paperspace"
	runpodsim "github.com/solanyn/gpu-operator/pkg/cloudsim/runpod"
	vastaisim "github.com/solanyn/gpu-operator/pkg/cloudsim/vastai"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/lambda"
	"github.com/solanyn/gpu-operator/pkg/providers/paperspace"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod"
	"github.com/solanyn/gpu-operator/pkg/providers/vastai"
	"github.com/solanyn/gpu-operator/pkg/providers/vastai/sshboot"
)

// Config configures each simulator; a provider whose Config is nil is not started.
type Config struct {
	Lambda     *cloudsim.Config `json:"lambdalabs,omitempty"`
	RunPod     *cloudsim.Config `json:"runpod,omitempty"`
	Paperspace *cloudsim.Config `json:"paperspace,omitempty"`
	// VastAI configures Vast.ai's simulator: its marketplace of hosts and
	// the shared settings (its Catalog is derived from the hosts).
	VastAI *vastaisim.Config `json:"vastai,omitempty"`
	// Addrs optionally fixes each simulator's listen address ("127.0.0.1:8701").
	Addrs map[string]string `json:"addrs,omitempty"`
}

// Stack is a set of running simulators.
type Stack struct {
	Lambda     *lambdasim.Server
	RunPod     *runpodsim.Server
	Paperspace *paperspacesim.Server
	VastAI     *vastaisim.Server
	servers    map[string]*httptest.Server

	// vastKey is the operator's SSH key pair for Vast.ai VMs (made at
	// Start): the adapters register its public half with the simulated
	// account, and VastAIBootstrap delivers bootstraps with it.
	vastKey    ssh.Signer
	vastPublic string
	mu         sync.Mutex
	hostKeys   map[string]string // pinned host keys, by Vast.ai instance id
}

// Start runs the configured simulators on loopback.
func Start(cfg Config, clk clock.Clock) (*Stack, error) {
	s := &Stack{servers: map[string]*httptest.Server{}}
	start := func(name string, h http.Handler) error {
		srv := httptest.NewUnstartedServer(h)
		if addr := cfg.Addrs[name]; addr != "" {
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				return err
			}
			srv.Listener.Close()
			srv.Listener = ln
		}
		srv.Start()
		s.servers[name] = srv
		return nil
	}
	if cfg.Lambda != nil {
		s.Lambda = lambdasim.New(*cfg.Lambda, clk)
		if err := start(providers.LambdaLabs, s.Lambda); err != nil {
			s.Close()
			return nil, err
		}
	}
	if cfg.RunPod != nil {
		s.RunPod = runpodsim.New(*cfg.RunPod, clk)
		if err := start(providers.RunPod, s.RunPod); err != nil {
			s.Close()
			return nil, err
		}
	}
	if cfg.Paperspace != nil {
		s.Paperspace = paperspacesim.New(*cfg.Paperspace, clk)
		if err := start(providers.Paperspace, s.Paperspace); err != nil {
			s.Close()
			return nil, err
		}
	}
	if cfg.VastAI != nil {
		pemKey, _, err := sshboot.NewKey("gpu-operator-cloudsim")
		if err == nil {
			s.vastKey, s.vastPublic, err = sshboot.LoadKey(pemKey, "gpu-operator-cloudsim")
		}
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("vastai: the operator's SSH key: %w", err)
		}
		s.hostKeys = map[string]string{}
		s.VastAI = vastaisim.New(*cfg.VastAI, clk)
		if err := start(providers.VastAI, s.VastAI); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// VastAISSHKey is the operator's SSH key pair for Vast.ai's VMs: the signer
// and its authorized_keys line (nil and "" without a Vast.ai simulator).
func (s *Stack) VastAISSHKey() (ssh.Signer, string) { return s.vastKey, s.vastPublic }

// VastAIBootstrap delivers script to a running Vast.ai VM over SSH, as the
// operator does (sshboot.Run with the stack's key), pinning each instance's
// host key on first use. Short timeouts and backoff suit the loopback
// simulator.
func (s *Stack) VastAIBootstrap(ctx context.Context, in providers.Instance, script string) (sshboot.Result, error) {
	if s.vastKey == nil {
		return sshboot.Result{}, fmt.Errorf("no Vast.ai simulator in this stack")
	}
	if in.SSH == nil {
		return sshboot.Result{}, fmt.Errorf("vastai instance %s has no SSH endpoint (state %s)", in.ID, in.State)
	}
	s.mu.Lock()
	pinned := s.hostKeys[in.ID]
	s.mu.Unlock()
	res, err := sshboot.Run(ctx, *in.SSH, s.vastKey, script, sshboot.Options{
		HostKey: pinned, Timeout: 10 * time.Second, Attempts: 20, Backoff: 50 * time.Millisecond})
	if res.HostKey != "" && pinned == "" {
		s.mu.Lock()
		s.hostKeys[in.ID] = res.HostKey
		s.mu.Unlock()
	}
	return res, err
}

// URL is the base URL of a provider's simulator ("" when not started).
func (s *Stack) URL(provider string) string {
	if srv, ok := s.servers[provider]; ok {
		return srv.URL
	}
	return ""
}

// Simulators returns the running simulators.
func (s *Stack) Simulators() []cloudsim.Simulator {
	var out []cloudsim.Simulator
	if s.Lambda != nil {
		out = append(out, s.Lambda)
	}
	if s.RunPod != nil {
		out = append(out, s.RunPod)
	}
	if s.Paperspace != nil {
		out = append(out, s.Paperspace)
	}
	if s.VastAI != nil {
		out = append(out, s.VastAI)
	}
	return out
}

// Simulator returns one provider's simulator.
func (s *Stack) Simulator(provider string) cloudsim.Simulator {
	for _, sim := range s.Simulators() {
		if sim.Provider() == provider {
			return sim
		}
	}
	return nil
}

// Machines returns every machine of every simulator.
func (s *Stack) Machines() []cloudsim.Machine {
	var out []cloudsim.Machine
	for _, sim := range s.Simulators() {
		out = append(out, sim.Machines()...)
	}
	return out
}

// Close stops the servers (and the Vast.ai VMs' SSH servers).
func (s *Stack) Close() {
	for _, srv := range s.servers {
		srv.Close()
	}
	if s.VastAI != nil {
		s.VastAI.Close()
	}
}

// AdapterOptions tune the adapters built by Adapters.
type AdapterOptions struct {
	// Keys are the API keys per provider (missing: the simulator's own key).
	Keys map[string]string
	// Unlimited disables client-side rate limits (benchmarks); otherwise the
	// simulators' own limits apply and the adapters use their defaults.
	Unlimited bool
	// CallTimeout is each call's deadline (default 10s).
	CallTimeout time.Duration
	Clock       clock.PassiveClock
	// Transport, when set, is the HTTP transport of each provider's adapter
	// (the contract suite validates every request and answer against the
	// provider's official OpenAPI document through it).
	Transport func(provider string) http.RoundTripper
	// VastAI, when set, edits the Vast.ai adapter's configuration before it
	// is built (filters, disk, search limit).
	VastAI func(*vastai.Config)
}

// Adapters builds the real adapters, on their generated clients, pointed at
// the running simulators.
func (s *Stack) Adapters(o AdapterOptions) ([]providers.Provider, error) {
	if o.CallTimeout == 0 {
		o.CallTimeout = 10 * time.Second
	}
	key := func(name string, sim cloudsim.Simulator) func() string {
		return func() string {
			if k, ok := o.Keys[name]; ok {
				return k
			}
			return sim.Core().Config().APIKey
		}
	}
	// Client limits match what the simulator enforces; without one the
	// client is as good as unlimited.
	rps := func(sim cloudsim.Simulator) float64 {
		if r := sim.Core().Config().RequestsPerSecond; r > 0 && !o.Unlimited {
			return r
		}
		return 1e6
	}
	client := func(provider string) *http.Client {
		if o.Transport == nil {
			return nil
		}
		return &http.Client{Transport: o.Transport(provider)}
	}
	var out []providers.Provider
	if s.Lambda != nil {
		interval := time.Duration(-1)
		if li := s.Lambda.Core().Config().LaunchInterval; li > 0 && !o.Unlimited {
			interval = li
		}
		a, err := lambda.New(lambda.Config{BaseURL: s.URL(providers.LambdaLabs), Key: key(providers.LambdaLabs, s.Lambda),
			RequestsPerSecond: rps(s.Lambda), LaunchInterval: interval, CallTimeout: o.CallTimeout, Clock: o.Clock,
			SSHKeyName: lambdasim.DefaultSSHKeyName, HTTPClient: client(providers.LambdaLabs)})
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	if s.RunPod != nil {
		a, err := runpod.New(runpod.Config{APIURL: s.URL(providers.RunPod),
			Key: key(providers.RunPod, s.RunPod), RequestsPerSecond: rps(s.RunPod), CallTimeout: o.CallTimeout, Clock: o.Clock,
			HTTPClient: client(providers.RunPod)})
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	if s.Paperspace != nil {
		a, err := paperspace.New(paperspace.Config{BaseURL: s.URL(providers.Paperspace) + "/v1",
			Key: key(providers.Paperspace, s.Paperspace), RequestsPerSecond: rps(s.Paperspace), CallTimeout: o.CallTimeout, Clock: o.Clock,
			HTTPClient: client(providers.Paperspace)})
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	if s.VastAI != nil {
		pub := s.vastPublic
		cfg := vastai.Config{APIURL: s.URL(providers.VastAI), Key: key(providers.VastAI, s.VastAI),
			RequestsPerSecond: rps(s.VastAI), CallTimeout: o.CallTimeout, Clock: o.Clock,
			HTTPClient: client(providers.VastAI), SSHPublicKey: func() string { return pub }}
		if o.VastAI != nil {
			o.VastAI(&cfg)
		}
		a, err := vastai.New(cfg)
		if err != nil {
			return nil, err
		}
		out = append(out, a)
	}
	return out, nil
}
