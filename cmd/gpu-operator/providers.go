package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

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
	runpodRESTURL     string
	runpodAPIURL      string
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
	fs.StringVar(&p.runpodRESTURL, "runpod-rest-url", runpod.DefaultRESTURL, "RunPod REST v1 base URL.")
	fs.StringVar(&p.runpodAPIURL, "runpod-api-url", runpod.DefaultAPIURL, "RunPod API base URL (REST v2 catalog and GraphQL).")
	fs.Float64Var(&p.runpodRPS, "runpod-rps", 5, "Client-side request rate limit for RunPod.")
	fs.StringVar(&p.paperspaceURL, "paperspace-url", paperspace.DefaultBaseURL, "Paperspace API base URL.")
	fs.Float64Var(&p.paperspaceRPS, "paperspace-rps", 2, "Client-side request rate limit for Paperspace.")
	fs.StringVar(&p.pricesConfigMap, "paperspace-prices-configmap", "gpu-operator-paperspace-prices", "ConfigMap in --namespace overriding Paperspace's shipped price table (one key per machine type, USD/h).")
	fs.DurationVar(&p.callTimeout, "provider-call-timeout", 30*time.Second, "Deadline of every provider API call.")
}

// envKeys name the environment variables that may hold each provider's key.
var envKeys = map[string]string{
	providers.LambdaLabs: "LAMBDA_API_KEY",
	providers.RunPod:     "RUNPOD_API_KEY",
	providers.Paperspace: "PAPERSPACE_API_KEY",
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
			a, err = runpod.New(runpod.Config{RESTURL: p.runpodRESTURL, APIURL: p.runpodAPIURL, Key: keyFn, HTTPClient: httpClient,
				RequestsPerSecond: p.runpodRPS, CallTimeout: p.callTimeout})
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

// watchPrices keeps Paperspace's price table in step with the override
// ConfigMap, when Paperspace is enabled.
func (p *providerFlags) watchPrices(ctx context.Context, kube kubernetes.Interface, namespace string, adapters []providers.Provider) error {
	var ps *paperspace.Adapter
	for _, a := range adapters {
		if x, ok := a.(*paperspace.Adapter); ok {
			ps = x
		}
	}
	if ps == nil || p.pricesConfigMap == "" {
		return nil
	}
	factory := informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", p.pricesConfigMap).String()
		}))
	apply := func(obj any) {
		cm, ok := obj.(*corev1.ConfigMap)
		if !ok {
			ps.SetPrices(nil)
			return
		}
		table, err := paperspace.DefaultPriceTable().WithConfigMapData(cm.Namespace, cm.Name, cm.Data)
		if err != nil {
			klog.ErrorS(err, "ignoring invalid Paperspace price override", "configmap", klog.KObj(cm))
			return
		}
		ps.SetPrices(table)
		klog.InfoS("Paperspace price overrides applied", "configmap", klog.KObj(cm), "entries", len(cm.Data))
	}
	_, err := factory.Core().V1().ConfigMaps().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    apply,
		UpdateFunc: func(_, n any) { apply(n) },
		DeleteFunc: func(any) { ps.SetPrices(nil) },
	})
	if err != nil {
		return err
	}
	factory.Start(ctx.Done())
	return nil
}

// credentials reads provider keys from the credentials Secret through an
// informer, so a rotated key takes effect without a restart.
type credentials struct {
	factory informers.SharedInformerFactory
	lister  corelisters.SecretLister
	ns      string
	name    string
}

func newCredentials(kube kubernetes.Interface, namespace, name string) *credentials {
	factory := informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}))
	return &credentials{factory: factory, lister: factory.Core().V1().Secrets().Lister(), ns: namespace, name: name}
}

// start runs the Secret informer; onChange runs whenever the Secret changes.
func (c *credentials) start(ctx context.Context, onChange func()) {
	_, _ = c.factory.Core().V1().Secrets().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { onChange() },
		UpdateFunc: func(any, any) { onChange() },
	})
	c.factory.Start(ctx.Done())
	c.factory.WaitForCacheSync(ctx.Done())
}

// key returns the provider's key: the Secret's, else the environment's.
func (c *credentials) key(provider string) string {
	if s, err := c.lister.Secrets(c.ns).Get(c.name); err == nil {
		if v := strings.TrimSpace(string(s.Data[provider])); v != "" {
			return v
		}
	}
	return os.Getenv(envKeys[provider])
}

func metaName(name, namespace string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: namespace}
}
