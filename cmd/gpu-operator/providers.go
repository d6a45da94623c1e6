package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"time"

	"k8s.io/klog/v2"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/lambda"
	"github.com/solanyn/gpu-operator/pkg/providers/paperspace"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod"
	"github.com/solanyn/gpu-operator/pkg/providers/vastai"
)

// providerFlags configure which providers run and how they are reached.
type providerFlags struct {
	enabled           string
	secretName        string
	lambdaURL         string
	lambdaRPS         float64
	lambdaLaunchEvery time.Duration
	lambdaSSHKey      string
	lambdaSSHKeys     string // deprecated: --lambda-ssh-key-names
	runpodAPIURL      string
	runpodCloud       string
	runpodRPS         float64
	paperspaceURL     string
	paperspaceRPS     float64
	paperspaceTmpl    string
	pricesConfigMap   string
	vastaiURL         string
	vastaiRPS         float64
	vastaiMinRel      float64
	vastaiUnverified  bool
	vastaiNoVMs       bool
	vastaiDiskGB      float64
	vastaiVMImage     string
	callTimeout       time.Duration

	// sshPublicKey returns the operator's SSH public key, registered with
	// Vast.ai before a VM is created (controller.SSHKeys.PublicKey); nil
	// when no VM of a provider bootstrapped over SSH can be launched.
	sshPublicKey func() string

	// leftOut are the enabled providers build left out, with the reason.
	leftOut []leftOutProvider
}

// leftOutProvider is an enabled provider whose configuration cannot work.
type leftOutProvider struct{ name, reason string }

func (p *providerFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.enabled, "providers", "lambdalabs,runpod,paperspace,vastai", "Comma-separated providers to use.")
	fs.StringVar(&p.secretName, "credentials-secret", "gpu-operator-credentials", "Secret in --namespace holding one API key per provider under the keys lambdalabs, runpod, paperspace and vastai. Environment variables LAMBDA_API_KEY, RUNPOD_API_KEY, PAPERSPACE_API_KEY and VAST_API_KEY are used when the Secret has no key.")
	fs.StringVar(&p.lambdaURL, "lambda-url", lambda.DefaultBaseURL, "Lambda Cloud API base URL.")
	fs.Float64Var(&p.lambdaRPS, "lambda-rps", 1, "Client-side request rate limit for Lambda Cloud (its published limit is about 1/s).")
	fs.DurationVar(&p.lambdaLaunchEvery, "lambda-launch-interval", 12*time.Second, "Minimum interval between Lambda launches (its published limit is 1 per 12s).")
	fs.StringVar(&p.lambdaSSHKey, "lambda-ssh-key-name", "", "Name of the SSH key, registered in the Lambda Cloud account, that every Lambda launch names (required: Lambda launches need exactly one; without it Lambda is left out).")
	fs.StringVar(&p.lambdaSSHKeys, "lambda-ssh-key-names", "", "Deprecated: use --lambda-ssh-key-name. Must name exactly one key.")
	fs.StringVar(&p.runpodAPIURL, "runpod-api-url", runpod.DefaultAPIURL, "RunPod REST v2 server (requests go to <url>/v2/...).")
	// Community hosts are run by third parties and are less reliable than
	// RunPod's own data centers, so the secure cloud is the default.
	fs.StringVar(&p.runpodCloud, "runpod-cloud", string(runpod.SecureCloud), "RunPod cloud tier to offer and rent pods in: SECURE (RunPod's own data centers) or COMMUNITY (community-hosted machines: cheaper, but less reliable).")
	fs.Float64Var(&p.runpodRPS, "runpod-rps", runpod.DefaultRequestsPerSecond, "Client-side request rate limit for RunPod (its REST v2 spec's example policy is 60 requests a minute).")
	fs.StringVar(&p.paperspaceURL, "paperspace-url", paperspace.DefaultBaseURL, "Paperspace API base URL.")
	fs.Float64Var(&p.paperspaceRPS, "paperspace-rps", 2, "Client-side request rate limit for Paperspace.")
	fs.StringVar(&p.paperspaceTmpl, "paperspace-template-id", "", "Paperspace OS template for every machine type; empty chooses a GPU template per machine type from GET /os-templates.")
	fs.StringVar(&p.pricesConfigMap, "paperspace-prices-configmap", "gpu-operator-paperspace-prices", "ConfigMap in --namespace overriding Paperspace's shipped price table (one key per machine type, USD/h).")
	fs.StringVar(&p.vastaiURL, "vastai-url", vastai.DefaultAPIURL, "Vast.ai API server.")
	fs.Float64Var(&p.vastaiRPS, "vastai-rps", vastai.DefaultRequestsPerSecond, "Client-side request rate limit for Vast.ai (it publishes none).")
	fs.Float64Var(&p.vastaiMinRel, "vastai-min-reliability", vastai.DefaultMinReliability, "Lowest Vast.ai host reliability (0-1) offered; negative: any.")
	fs.BoolVar(&p.vastaiUnverified, "vastai-allow-unverified", false, "Also offer Vast.ai hosts that Vast.ai has not verified.")
	fs.BoolVar(&p.vastaiNoVMs, "vastai-no-vms", false, "Offer Vast.ai's VM-capable hosts as containers only (no Vast.ai VMs, so no SSH bootstrap).")
	fs.Float64Var(&p.vastaiDiskGB, "vastai-disk-gb", vastai.DefaultDiskGB, "Disk of every Vast.ai instance, GB.")
	fs.StringVar(&p.vastaiVMImage, "vastai-vm-image", vastai.DefaultVMImage, "Image of Vast.ai VMs (one of Vast.ai's KVM images).")
	fs.DurationVar(&p.callTimeout, "provider-call-timeout", 30*time.Second, "Deadline of every provider API call.")
}

// build creates the enabled adapters; key returns a provider's current key.
// An enabled provider whose configuration cannot work (Lambda without an SSH
// key name) is left out and recorded in leftOut with the reason.
func (p *providerFlags) build(key func(provider string) string) ([]providers.Provider, error) {
	p.leftOut = nil
	httpClient := &http.Client{Transport: &http.Transport{
		Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 32, IdleConnTimeout: 90 * time.Second,
	}}
	var out []providers.Provider
	for _, name := range splitList(p.enabled) {
		keyFn := func() string { return key(name) }
		var (
			a   providers.Provider
			err error
		)
		switch name {
		case providers.LambdaLabs:
			sshKey, why := p.lambdaSSHKeyName()
			if why != "" {
				p.leftOut = append(p.leftOut, leftOutProvider{name: name, reason: why})
				continue
			}
			a, err = lambda.New(lambda.Config{BaseURL: p.lambdaURL, Key: keyFn, HTTPClient: httpClient,
				RequestsPerSecond: p.lambdaRPS, LaunchInterval: p.lambdaLaunchEvery, CallTimeout: p.callTimeout,
				SSHKeyName: sshKey})
		case providers.RunPod:
			var cloud runpod.Cloud
			if cloud, err = runpod.ParseCloud(p.runpodCloud); err == nil {
				a, err = runpod.New(runpod.Config{APIURL: p.runpodAPIURL, Cloud: cloud, Key: keyFn, HTTPClient: httpClient,
					RequestsPerSecond: p.runpodRPS, CallTimeout: p.callTimeout})
			}
		case providers.Paperspace:
			a, err = paperspace.New(paperspace.Config{BaseURL: p.paperspaceURL, Key: keyFn, HTTPClient: httpClient,
				RequestsPerSecond: p.paperspaceRPS, CallTimeout: p.callTimeout, TemplateID: p.paperspaceTmpl})
		case providers.VastAI:
			a, err = vastai.New(vastai.Config{APIURL: p.vastaiURL, Key: keyFn, HTTPClient: httpClient,
				RequestsPerSecond: p.vastaiRPS, CallTimeout: p.callTimeout,
				Filters: vastai.Filters{MinReliability: p.vastaiMinRel, AllowUnverified: p.vastaiUnverified, NoVMs: p.vastaiNoVMs},
				DiskGB:  p.vastaiDiskGB, VMImage: p.vastaiVMImage, SSHPublicKey: p.sshPublicKey})
		default:
			return nil, fmt.Errorf("unknown provider %q (want lambdalabs, runpod, paperspace or vastai)", name)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// lambdaSSHKeyName is the one SSH key name Lambda launches with, or why
// there is none.
func (p *providerFlags) lambdaSSHKeyName() (name, why string) {
	if p.lambdaSSHKey != "" {
		return p.lambdaSSHKey, ""
	}
	switch names := splitList(p.lambdaSSHKeys); len(names) {
	case 0:
		return "", "no SSH key name configured: Lambda Cloud launches need exactly one SSH key registered in the account; set --lambda-ssh-key-name"
	case 1:
		return names[0], ""
	default:
		return "", fmt.Sprintf("--lambda-ssh-key-names names %d keys, but Lambda Cloud launches take exactly one; set --lambda-ssh-key-name", len(names))
	}
}

// sshKeyChecker is an adapter whose launches need an SSH key registered at
// the provider (Lambda's).
type sshKeyChecker interface {
	SSHKeyName() string
	CheckSSHKey(ctx context.Context) error
}

// checkSSHKeys asks each adapter that launches with an SSH key whether the
// key is registered, and logs the answer: a missing key is an error line
// (the adapter logs it, and withholds its offers until the key is there); a
// check that could not be made is a warning.
// unavailable, when set, is told about a missing key (an Event).
func checkSSHKeys(ctx context.Context, adapters []providers.Provider, timeout time.Duration, unavailable func(provider, msg string)) {
	logger := klog.FromContext(ctx)
	for _, a := range adapters {
		c, ok := a.(sshKeyChecker)
		if !ok {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err := c.CheckSSHKey(cctx)
		cancel()
		switch {
		case err == nil:
			logger.Info("SSH key is registered", "provider", a.Name(), "sshKey", c.SSHKeyName())
		case providers.IsClass(err, providers.ClassInvalid):
			// Missing: the adapter has logged it and withholds its offers.
			if unavailable != nil {
				unavailable(a.Name(), err.Error())
			}
		default:
			logger.Info("Warning: could not check that the SSH key is registered; launches fail if it is not", "provider", a.Name(), "sshKey", c.SSHKeyName(), "err", err)
		}
	}
}
