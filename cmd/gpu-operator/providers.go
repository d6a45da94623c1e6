package main

import (
	"flag"
	"fmt"
	"net/http"
	"time"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/lambda"
	"github.com/solanyn/gpu-operator/pkg/providers/paperspace"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod"
)

// providerFlags configure which providers run and how they are reached.
type providerFlags struct {
	enabled           string
	secretName        string
	lambdaURL         string
	lambdaRPS         float64
	lambdaLaunchEvery time.Duration
	lambdaSSHKeys     string
	runpodAPIURL      string
	runpodCloud       string
	runpodRPS         float64
	paperspaceURL     string
	paperspaceRPS     float64
	pricesConfigMap   string
	callTimeout       time.Duration
}

func (p *providerFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.enabled, "providers", "lambdalabs,runpod,paperspace", "Comma-separated providers to use.")
	fs.StringVar(&p.secretName, "credentials-secret", "gpu-operator-credentials", "Secret in --namespace holding one API key per provider under the keys lambdalabs, runpod and paperspace. Environment variables LAMBDA_API_KEY, RUNPOD_API_KEY and PAPERSPACE_API_KEY are used when the Secret has no key.")
	fs.StringVar(&p.lambdaURL, "lambda-url", lambda.DefaultBaseURL, "Lambda Cloud API base URL.")
	fs.Float64Var(&p.lambdaRPS, "lambda-rps", 1, "Client-side request rate limit for Lambda Cloud (its published limit is about 1/s).")
	fs.DurationVar(&p.lambdaLaunchEvery, "lambda-launch-interval", 12*time.Second, "Minimum interval between Lambda launches (its published limit is 1 per 12s).")
	fs.StringVar(&p.lambdaSSHKeys, "lambda-ssh-key-names", "", "Comma-separated SSH key names registered at Lambda Cloud, sent with every launch (the real API requires one).")
	fs.StringVar(&p.runpodAPIURL, "runpod-api-url", runpod.DefaultAPIURL, "RunPod REST v2 server (requests go to <url>/v2/...).")
	// Community hosts are run by third parties and are less reliable than
	// RunPod's own data centers, so the secure cloud is the default.
	fs.StringVar(&p.runpodCloud, "runpod-cloud", string(runpod.SecureCloud), "RunPod cloud tier to offer and rent pods in: SECURE (RunPod's own data centers) or COMMUNITY (community-hosted machines: cheaper, but less reliable).")
	fs.Float64Var(&p.runpodRPS, "runpod-rps", runpod.DefaultRequestsPerSecond, "Client-side request rate limit for RunPod (its REST v2 spec's example policy is 60 requests a minute).")
	fs.StringVar(&p.paperspaceURL, "paperspace-url", paperspace.DefaultBaseURL, "Paperspace API base URL.")
	fs.Float64Var(&p.paperspaceRPS, "paperspace-rps", 2, "Client-side request rate limit for Paperspace.")
	fs.StringVar(&p.pricesConfigMap, "paperspace-prices-configmap", "gpu-operator-paperspace-prices", "ConfigMap in --namespace overriding Paperspace's shipped price table (one key per machine type, USD/h).")
	fs.DurationVar(&p.callTimeout, "provider-call-timeout", 30*time.Second, "Deadline of every provider API call.")
}

// build creates the enabled adapters; key returns a provider's current key.
func (p *providerFlags) build(key func(provider string) string) ([]providers.Provider, error) {
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
			a, err = lambda.New(lambda.Config{BaseURL: p.lambdaURL, Key: keyFn, HTTPClient: httpClient,
				RequestsPerSecond: p.lambdaRPS, LaunchInterval: p.lambdaLaunchEvery, CallTimeout: p.callTimeout,
				SSHKeyNames: splitList(p.lambdaSSHKeys)})
		case providers.RunPod:
			var cloud runpod.Cloud
			if cloud, err = runpod.ParseCloud(p.runpodCloud); err == nil {
				a, err = runpod.New(runpod.Config{APIURL: p.runpodAPIURL, Cloud: cloud, Key: keyFn, HTTPClient: httpClient,
					RequestsPerSecond: p.runpodRPS, CallTimeout: p.callTimeout})
			}
		case providers.Paperspace:
			a, err = paperspace.New(paperspace.Config{BaseURL: p.paperspaceURL, Key: keyFn, HTTPClient: httpClient,
				RequestsPerSecond: p.paperspaceRPS, CallTimeout: p.callTimeout})
		default:
			return nil, fmt.Errorf("unknown provider %q (want lambdalabs, runpod or paperspace)", name)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		out = append(out, a)
	}
	return out, nil
}
