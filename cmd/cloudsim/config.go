package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	lambdasim "github.com/solanyn/gpu-operator/pkg/cloudsim/lambda"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	vastaisim "github.com/solanyn/gpu-operator/pkg/cloudsim/vastai"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/lambda"
	"github.com/solanyn/gpu-operator/pkg/providers/paperspace"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod"
	"github.com/solanyn/gpu-operator/pkg/providers/vastai"
)

// AdminAddrKey is the key of the admin API's address in File.Addrs, beside
// the provider names.
const AdminAddrKey = "admin"

// File is cloudsim's configuration file (JSON, or YAML with the same keys).
// Durations are Go duration strings ("2s", "500ms").
//
//	{
//	  "addrs": {"lambdalabs": "127.0.0.1:8701", "runpod": "127.0.0.1:8702",
//	            "paperspace": "127.0.0.1:8703", "vastai": "127.0.0.1:8704",
//	            "admin": "127.0.0.1:8700"},
//	  "bootDelay": "3s",
//	  "providers": {
//	    "lambdalabs": {"source": "https://...", "date": "2026-11-26", "apiKey": "...",
//	                   "sshKeys": ["gpu-operator-demo"],
//	                   "catalog": [{"instanceType": "gpu_1x_a10", "gpus": 1, "region": "us-east-1",
//	                                "onDemandPrice": 0.75, "capacity": 10}]},
//	    "vastai": {"hosts": [{"id": 1001, "gpuName": "RTX 4090", "numGPUs": 1, "gpuRAM": 24564,
//	                          "geolocation": "California, US", "dphTotal": 0.42, "minBid": 0.18,
//	                          "reliability": 0.995, "verified": true, "vmsEnabled": true}],
//	               "market": {"hosts": 5000, "seed": 1}},
//	    ...
//	  }
//	}
type File struct {
	// Note is free text for the reader of the file.
	Note string `json:"note,omitempty"`
	// Addrs are the listen addresses per provider name and "admin";
	// missing ones take a free loopback port.
	Addrs map[string]string `json:"addrs,omitempty"`
	// BootDelay and TerminateDelay apply to every provider without its own.
	BootDelay      Duration `json:"bootDelay,omitempty"`
	TerminateDelay Duration `json:"terminateDelay,omitempty"`
	// Providers configures each simulator by provider name; a provider
	// missing here is not started.
	Providers map[string]*ProviderFile `json:"providers"`
}

// ProviderFile configures one simulator.
type ProviderFile struct {
	// Source, Date and Note say where the catalog's data comes from.
	Source string `json:"source,omitempty"`
	Date   string `json:"date,omitempty"`
	Note   string `json:"note,omitempty"`
	// APIKey is the only key the simulator accepts; empty accepts any.
	APIKey string `json:"apiKey,omitempty"`
	// SSHKeys (Lambda only) are SSH key names registered in the simulated
	// account besides lambdasim.DefaultSSHKeyName. Lambda launches must name
	// exactly one registered key; the operator is pointed at the first of
	// these (--lambda-ssh-key-name), or at the default key when none is given.
	SSHKeys           []string  `json:"sshKeys,omitempty"`
	BootDelay         *Duration `json:"bootDelay,omitempty"`
	TerminateDelay    *Duration `json:"terminateDelay,omitempty"`
	RequestsPerSecond float64   `json:"requestsPerSecond,omitempty"`
	LaunchInterval    Duration  `json:"launchInterval,omitempty"`
	Quota             int       `json:"quota,omitempty"`
	Seed              uint64    `json:"seed,omitempty"`
	Faults            Faults    `json:"faults,omitzero"`
	// Catalog lists the instance types sold per native region, in the
	// provider's own ids and price units (see cloudsim.CatalogEntry). Not for
	// Vast.ai, whose marketplace is Hosts and Market.
	Catalog []cloudsim.CatalogEntry `json:"catalog,omitempty"`
	// Hosts (Vast.ai only) are the marketplace's hosts, one ask each, in
	// Vast.ai's terms (vastaisim.Host: GPU name, whole-machine on-demand
	// price and minimum bid, reliability, verified, VMs enabled).
	Hosts []vastaisim.Host `json:"hosts,omitempty"`
	// Market (Vast.ai only) generates more hosts, reproducibly from a seed.
	Market *vastaisim.Market `json:"market,omitempty"`
}

// Faults is cloudsim.Faults with human durations, for the file and the
// admin API.
type Faults struct {
	ErrorRate     float64  `json:"errorRate,omitempty"`
	RateLimitRate float64  `json:"rateLimitRate,omitempty"`
	RetryAfter    Duration `json:"retryAfter,omitempty"`
	Latency       Duration `json:"latency,omitempty"`
	Down          bool     `json:"down,omitempty"`
}

// Sim converts to the simulator's type.
func (f Faults) Sim() cloudsim.Faults {
	return cloudsim.Faults{ErrorRate: f.ErrorRate, RateLimitRate: f.RateLimitRate,
		RetryAfter: time.Duration(f.RetryAfter), Latency: time.Duration(f.Latency), Down: f.Down}
}

// FaultsOf converts from the simulator's type.
func FaultsOf(f cloudsim.Faults) Faults {
	return Faults{ErrorRate: f.ErrorRate, RateLimitRate: f.RateLimitRate,
		RetryAfter: Duration(f.RetryAfter), Latency: Duration(f.Latency), Down: f.Down}
}

// Duration is a time.Duration that reads "1.5s" as well as nanoseconds.
type Duration time.Duration

// MarshalJSON writes the duration as a string ("2s").
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// UnmarshalJSON reads a duration string or a number of nanoseconds.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		v, err := time.ParseDuration(s)
		if err != nil {
			return err
		}
		*d = Duration(v)
		return nil
	}
	var n int64
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("duration must be a string such as \"2s\" or nanoseconds: %w", err)
	}
	*d = Duration(n)
	return nil
}

// providerNames are the providers cloudsim can simulate, in start order.
var providerNames = []string{providers.LambdaLabs, providers.RunPod, providers.Paperspace, providers.VastAI}

// LoadFile reads and checks a configuration file. Unknown keys are errors,
// so a typo does not silently leave a setting at its default.
func LoadFile(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	f, err := ParseFile(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return f, nil
}

// ParseFile parses JSON or YAML configuration.
func ParseFile(data []byte) (*File, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	var f File
	if err := dec.Decode(&f); err != nil {
		return nil, err
	}
	if err := f.Validate(); err != nil {
		return nil, err
	}
	return &f, nil
}

// Validate reports configuration errors: unknown providers, malformed
// entries and negative settings.
func (f *File) Validate() error {
	var errs []string
	for name := range f.Addrs {
		if name != AdminAddrKey && !slices.Contains(providerNames, name) {
			errs = append(errs, fmt.Sprintf("addrs: unknown key %q (want %s or %s)", name, strings.Join(providerNames, ", "), AdminAddrKey))
		}
	}
	if len(f.Providers) == 0 {
		errs = append(errs, "providers: at least one of "+strings.Join(providerNames, ", ")+" is needed")
	}
	for name, p := range f.Providers {
		if !slices.Contains(providerNames, name) {
			errs = append(errs, fmt.Sprintf("providers: unknown provider %q (want %s)", name, strings.Join(providerNames, ", ")))
			continue
		}
		if p == nil {
			errs = append(errs, fmt.Sprintf("providers.%s: empty", name))
			continue
		}
		if len(p.SSHKeys) > 0 && name != providers.LambdaLabs {
			errs = append(errs, fmt.Sprintf("providers.%s: sshKeys are a Lambda Cloud setting", name))
		}
		for i, k := range p.SSHKeys {
			if strings.TrimSpace(k) == "" || slices.Contains(p.SSHKeys[:i], k) {
				errs = append(errs, fmt.Sprintf("providers.%s.sshKeys[%d]: empty or repeated key name %q", name, i, k))
			}
		}
		if p.RequestsPerSecond < 0 || p.LaunchInterval < 0 || p.Quota < 0 {
			errs = append(errs, fmt.Sprintf("providers.%s: requestsPerSecond, launchInterval and quota must not be negative", name))
		}
		if name == providers.VastAI {
			errs = append(errs, validateVastAI(p)...)
		} else if len(p.Hosts) > 0 || p.Market != nil {
			errs = append(errs, fmt.Sprintf("providers.%s: hosts and market are Vast.ai settings", name))
		}
		seen := map[string]bool{}
		for i, e := range p.Catalog {
			at := fmt.Sprintf("providers.%s.catalog[%d]", name, i)
			switch {
			case e.InstanceType == "" || e.Region == "":
				errs = append(errs, at+": instanceType and region are required")
			case e.GPUs <= 0:
				errs = append(errs, at+": gpus must be positive")
			case e.OnDemandPrice < 0 || e.SpotPrice < 0:
				errs = append(errs, at+": prices must not be negative")
			case seen[e.InstanceType+"@"+e.Region]:
				errs = append(errs, fmt.Sprintf("%s: %s in %s is listed twice", at, e.InstanceType, e.Region))
			}
			seen[e.InstanceType+"@"+e.Region] = true
		}
	}
	if len(errs) > 0 {
		slices.Sort(errs)
		return fmt.Errorf("invalid configuration:\n  %s", strings.Join(errs, "\n  "))
	}
	return nil
}

// validateVastAI checks a Vast.ai marketplace: hosts instead of a catalog,
// each with a unique positive ask id, GPUs, a location and prices that are
// not negative (a minimum bid below the on-demand price).
func validateVastAI(p *ProviderFile) []string {
	var errs []string
	if len(p.Catalog) > 0 {
		errs = append(errs, "providers.vastai: a Vast.ai marketplace is hosts (and market), not a catalog")
	}
	if p.Market != nil && p.Market.Hosts < 0 {
		errs = append(errs, "providers.vastai.market.hosts must not be negative")
	}
	ids := map[int]bool{}
	for i, h := range p.Hosts {
		at := fmt.Sprintf("providers.vastai.hosts[%d]", i)
		switch {
		case h.ID <= 0 || ids[h.ID]:
			errs = append(errs, fmt.Sprintf("%s: id %d must be positive and unique", at, h.ID))
		case h.GPUName == "" || h.NumGPUs <= 0 || h.Geolocation == "":
			errs = append(errs, at+": gpuName, numGPUs and geolocation are required")
		case !(h.DPHTotal > 0) || h.MinBid < 0 || (h.MinBid > 0 && h.MinBid >= h.DPHTotal):
			errs = append(errs, at+": dphTotal must be positive and minBid, if any, below it")
		case h.Reliability < 0 || h.Reliability > 1:
			errs = append(errs, at+": reliability is a 0-1 score")
		}
		ids[h.ID] = true
	}
	return errs
}

// Warnings lists catalog entries the operator will ignore: instance types
// its adapters map to no canonical GPU, native regions they do not know, and
// spot prices (Lambda, RunPod and Paperspace sell no spot: Lambda and
// Paperspace never did, RunPod withdrew it in 2026, and their simulators
// ignore spotPrice; Vast.ai's bids are its hosts' minBid). They are legal (a
// simulator may sell more than the operator buys) but usually a mistake in a
// demo catalog. For Vast.ai the listed hosts are checked (a generated
// market sells unmapped models on purpose): GPU names the operator maps to
// no canonical type, and hosts its default search leaves out (unverified,
// reliability under vastai.DefaultMinReliability).
func (f *File) Warnings() []string {
	var out []string
	for _, name := range providerNames {
		p := f.Providers[name]
		if p == nil {
			continue
		}
		if name == providers.VastAI {
			for _, h := range p.Hosts {
				if _, ok := vastai.GPUType(h.GPUName, h.GPURAM); !ok {
					out = append(out, fmt.Sprintf("vastai: host %d: the operator maps GPU %q to no canonical GPU type", h.ID, h.GPUName))
				}
				if !h.Verified || h.Reliability < vastai.DefaultMinReliability {
					out = append(out, fmt.Sprintf("vastai: host %d is unverified or has reliability %v: the operator's default search leaves it out", h.ID, h.Reliability))
				}
			}
			continue
		}
		for _, e := range p.Catalog {
			var typeOK, regionOK bool
			switch name {
			case providers.LambdaLabs:
				_, n, ok := lambda.CanonicalGPU(e.InstanceType)
				typeOK = ok && n == e.GPUs
				_, regionOK = lambda.Regions[e.Region]
			case providers.RunPod:
				_, typeOK = runpod.GPUTypes[e.InstanceType]
				_, regionOK = runpod.Regions[e.Region]
			case providers.Paperspace:
				_, n, ok := paperspace.ParseMachineType(e.InstanceType)
				typeOK = ok && n == e.GPUs
				_, regionOK = paperspace.Regions[e.Region]
			}
			if !typeOK {
				out = append(out, fmt.Sprintf("%s: the operator maps instance type %q (gpus %d) to no canonical GPU type and count", name, e.InstanceType, e.GPUs))
			}
			if !regionOK {
				out = append(out, fmt.Sprintf("%s: the operator does not know region %q (%s)", name, e.Region, e.InstanceType))
			}
			if e.SpotPrice != 0 {
				out = append(out, fmt.Sprintf("%s: %s in %s has a spotPrice, but %s sells no spot capacity (the simulator ignores it)", name, e.InstanceType, e.Region, name))
			}
		}
	}
	return out
}

// Overrides are command-line settings that win over the file.
type Overrides struct {
	// Addrs by provider name or "admin".
	Addrs          map[string]string
	BootDelay      *time.Duration
	TerminateDelay *time.Duration
}

// StackConfig builds the simulators' configuration.
func (f *File) StackConfig(o Overrides) stack.Config {
	cfg := stack.Config{Addrs: map[string]string{}}
	for _, name := range providerNames {
		p := f.Providers[name]
		if p == nil {
			continue
		}
		c := &cloudsim.Config{
			APIKey:            p.APIKey,
			Catalog:           append([]cloudsim.CatalogEntry(nil), p.Catalog...),
			BootDelay:         pick(o.BootDelay, p.BootDelay, f.BootDelay),
			TerminateDelay:    pick(o.TerminateDelay, p.TerminateDelay, f.TerminateDelay),
			RequestsPerSecond: p.RequestsPerSecond,
			LaunchInterval:    time.Duration(p.LaunchInterval),
			Quota:             p.Quota,
			Faults:            p.Faults.Sim(),
			Seed:              p.Seed,
		}
		switch name {
		case providers.LambdaLabs:
			cfg.Lambda = c
		case providers.RunPod:
			cfg.RunPod = c
		case providers.Paperspace:
			cfg.Paperspace = c
		case providers.VastAI:
			cfg.VastAI = &vastaisim.Config{Config: *c, Hosts: append([]vastaisim.Host(nil), p.Hosts...), Market: p.Market}
		}
		// A port of its own even when none is configured, never one the
		// stack's httptest default would pick on another interface.
		cfg.Addrs[name] = "127.0.0.1:0"
		if a := f.Addrs[name]; a != "" {
			cfg.Addrs[name] = a
		}
		if a := o.Addrs[name]; a != "" {
			cfg.Addrs[name] = a
		}
	}
	return cfg
}

// LambdaSSHKey is the SSH key name the operator's Lambda launches name: the
// first configured one, else the key every simulated account starts with.
func (f *File) LambdaSSHKey() string {
	if p := f.Providers[providers.LambdaLabs]; p != nil && len(p.SSHKeys) > 0 {
		return p.SSHKeys[0]
	}
	return lambdasim.DefaultSSHKeyName
}

// AdminAddr is the admin API's listen address.
func (f *File) AdminAddr(o Overrides) string {
	if a := o.Addrs[AdminAddrKey]; a != "" {
		return a
	}
	if a := f.Addrs[AdminAddrKey]; a != "" {
		return a
	}
	return "127.0.0.1:0"
}

// pick returns the first set duration: the flag, the provider's, the file's.
func pick(flag *time.Duration, provider *Duration, file Duration) time.Duration {
	switch {
	case flag != nil:
		return *flag
	case provider != nil:
		return time.Duration(*provider)
	default:
		return time.Duration(file)
	}
}
