// Package stack runs the three provider simulators on loopback HTTP servers
// and builds the real provider adapters pointed at them: what integration
// tests, the demo and the benchmarks share.
package stack

import (
	"net"
	"net/http"
	"net/http/httptest"
	"time"

	"k8s.io/utils/clock"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	lambdasim "github.com/solanyn/gpu-operator/pkg/cloudsim/lambda"
	paperspacesim "github.com/solanyn/gpu-operator/pkg/cloudsim/paperspace"
	runpodsim "github.com/solanyn/gpu-operator/pkg/cloudsim/runpod"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/lambda"
	"github.com/solanyn/gpu-operator/pkg/providers/paperspace"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod"
)

// Config configures each simulator; a provider whose Config is nil is not started.
type Config struct {
	Lambda     *cloudsim.Config `json:"lambdalabs,omitempty"`
	RunPod     *cloudsim.Config `json:"runpod,omitempty"`
	Paperspace *cloudsim.Config `json:"paperspace,omitempty"`
	// Addrs optionally fixes each simulator's listen address ("127.0.0.1:8701").
	Addrs map[string]string `json:"addrs,omitempty"`
}

// Stack is a set of running simulators.
type Stack struct {
	Lambda     *lambdasim.Server
	RunPod     *runpodsim.Server
	Paperspace *paperspacesim.Server
	servers    map[string]*httptest.Server
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
	return s, nil
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

// Close stops the servers.
func (s *Stack) Close() {
	for _, srv := range s.servers {
		srv.Close()
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
	return out, nil
}
