// Package credentials is where the providers' API keys come from: in the
// cluster, one Secret read through an informer (so a rotated key takes
// effect without a restart), with environment variables as the fallback;
// outside it (the CLI's subcommands), a KEY=VALUE file.
//
// Keys are returned to the provider adapters and never logged; errors name
// a file's line, never its value.
package credentials

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/solanyn/gpu-operator/pkg/operator/kubeinformer"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// envVars name the environment variable that may hold each provider's key.
var envVars = map[string]string{
	providers.LambdaLabs: "LAMBDA_API_KEY",
	providers.RunPod:     "RUNPOD_API_KEY",
	providers.Paperspace: "PAPERSPACE_API_KEY",
	// Vast.ai's docs and CLI read VAST_API_KEY.
	providers.VastAI: "VAST_API_KEY",
}

// EnvVar returns the environment variable that may hold provider's key
// (LAMBDA_API_KEY, RUNPOD_API_KEY, PAPERSPACE_API_KEY, VAST_API_KEY), or "" for a
// provider it does not know.
func EnvVar(provider string) string { return envVars[provider] }

// Providers are the providers that have a key, in a fixed order.
var Providers = []string{providers.LambdaLabs, providers.RunPod, providers.Paperspace, providers.VastAI}

// Secret serves keys from one Secret, under one data key per provider name
// (lambdalabs, runpod, paperspace, vastai), through an informer watching only that
// Secret.
type Secret struct {
	informer  cache.SharedIndexInformer
	lister    corelisters.SecretLister
	namespace string
	name      string
}

// NewSecret returns a Secret source for namespace/name; Start runs it. Until
// then (and while the Secret does not exist or lacks a provider's data key)
// Key falls back to the environment.
func NewSecret(kube kubeinformer.CoreClient, namespace, name string) *Secret {
	informer := kubeinformer.New(kube, corev1.SchemeGroupVersion.WithResource("secrets"), kube.CoreV1().Secrets(namespace), &corev1.Secret{},
		kubeinformer.Options{TweakListOptions: func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}})
	return &Secret{informer: informer, lister: corelisters.NewSecretLister(informer.GetIndexer()), namespace: namespace, name: name}
}

// Start runs the informer until ctx ends and returns once its cache has
// synced (or ctx ended). onChange, when not nil, runs whenever the Secret is
// added or updated (a deletion leaves the environment's keys, which need no
// wake-up). Call Start once.
func (s *Secret) Start(ctx context.Context, onChange func()) {
	if onChange != nil {
		_, _ = s.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { onChange() },
			UpdateFunc: func(any, any) { onChange() },
		})
	}
	go s.informer.RunWithContext(ctx)
	cache.WaitFor(ctx, "", s.informer.HasSyncedChecker())
}

// Key returns provider's key: the Secret's value under the provider's name,
// with surrounding space trimmed, when it is not empty; else the value of the
// provider's environment variable.
func (s *Secret) Key(provider string) string {
	if sec, err := s.lister.Secrets(s.namespace).Get(s.name); err == nil {
		if v := strings.TrimSpace(string(sec.Data[provider])); v != "" {
			return v
		}
	}
	return os.Getenv(EnvVar(provider))
}

// ReadFile parses a credentials file of KEY=VALUE lines into provider name
// -> key: blank lines and lines starting with # are skipped, an "export "
// prefix is allowed, and a value may be quoted. KEY is a provider's
// environment variable name (LAMBDA_API_KEY) or the provider's name
// (lambdalabs). Errors name the line, never its value.
func ReadFile(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the credentials file: %w", err)
	}
	byName := map[string]string{}
	for provider, env := range envVars {
		byName[provider], byName[env] = provider, provider
	}
	keys := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(string(data)))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, value, ok := strings.Cut(strings.TrimPrefix(line, "export "), "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want KEY=VALUE", path, n)
		}
		name = strings.TrimSpace(name)
		provider, known := byName[name]
		if !known {
			return nil, fmt.Errorf("%s:%d: unknown key %q (want LAMBDA_API_KEY, RUNPOD_API_KEY, PAPERSPACE_API_KEY or a provider name)", path, n, name)
		}
		value = strings.TrimSpace(value)
		if len(value) >= 2 && (value[0] == '"' || value[0] == '\'') && value[len(value)-1] == value[0] {
			value = value[1 : len(value)-1]
		}
		keys[provider] = value
	}
	return keys, sc.Err()
}
