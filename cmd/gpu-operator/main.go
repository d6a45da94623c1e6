// Command gpu-operator runs the GPURequest operator, and offers two
// subcommands for people about to spend money: `offers` (a dry run of the
// selection against live catalogs) and `validate-credentials`; `version`
// prints the release version (pkg/version) and the source revision.
//
// It only wires: flags (flags.go, providers.go) into pkg/operator's
// controller, pkg/credentials' key source and pkg/pricewatch's overrides.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	corev1 "k8s.io/api/core/v1"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	// CA roots compiled in, used when the system has none: the image holds
	// no certificate files, and the operator calls providers over HTTPS.
	_ "golang.org/x/crypto/x509roots/fallback"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/solanyn/gpu-operator/pkg/controller"
	"github.com/solanyn/gpu-operator/pkg/credentials"
	"github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned"
	"github.com/solanyn/gpu-operator/pkg/operator"
	"github.com/solanyn/gpu-operator/pkg/pricewatch"
	"github.com/solanyn/gpu-operator/pkg/version"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "offers":
			os.Exit(runOffers(os.Args[2:], os.Stdout))
		case "validate-credentials":
			os.Exit(runValidateCredentials(os.Args[2:], os.Stdout))
		case "version":
			fmt.Println(version.String())
			os.Exit(0)
		}
	}
	os.Exit(runOperator(os.Args[1:]))
}

func runOperator(args []string) int {
	f, code := parseOperatorFlags(args)
	if code != exitOK {
		return code
	}
	ctx := signalContext()
	logger := klog.FromContext(ctx)
	fail := func(err error, msg string) int {
		logger.Error(err, msg)
		return 1
	}

	cfg, err := restConfig(f.kubeconfig)
	if err != nil {
		return fail(err, "loading Kubernetes client config")
	}
	cfg.QPS, cfg.Burst = float32(f.kubeQPS), f.kubeBurst
	cfg.UserAgent = "gpu-operator"
	kube, err := operator.NewClientset(cfg)
	if err != nil {
		return fail(err, "creating the Kubernetes client")
	}

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	workqueue.SetProvider(controller.NewWorkqueueMetrics(registry))

	creds := credentials.NewSecret(kube, f.namespace, f.providers.secretName)
	// One SSH key pair (a Secret in the operator's namespace) for the
	// controller, which delivers bootstraps over SSH with it, and the
	// Vast.ai adapter, which registers its public half before a VM create.
	sshKeys := controller.NewSSHKeys(kube, f.namespace)
	f.providers.sshPublicKey = sshKeys.PublicKey
	adapters, err := f.providers.build(creds.Key)
	if err != nil {
		return fail(err, "configuring providers")
	}
	// Events get their own client (and rate limiter).
	events, err := operator.NewClientset(cfg)
	if err != nil {
		return fail(err, "creating the Kubernetes client")
	}
	recorder, stopEvents := operator.NewRecorder(ctx, events.CoreV1(), "gpu-operator")
	defer stopEvents()
	// A provider that cannot work is reported where an admin looks: the log,
	// and a Warning Event on the credentials Secret (kubectl -n gpu-operator
	// describe secret ...), besides validate-credentials.
	credsRef := &corev1.ObjectReference{APIVersion: "v1", Kind: "Secret", Namespace: f.namespace, Name: f.providers.secretName}
	for _, l := range f.providers.leftOut {
		logger.Error(nil, "provider left out: its configuration cannot work", "provider", l.name, "reason", l.reason)
		recorder.Eventf(credsRef, corev1.EventTypeWarning, "ProviderUnavailable", "%s is left out: %s", l.name, l.reason)
	}
	ctrl, informers, err := operator.NewController(operator.Options{
		Config: f.ctrl, KubeClient: kube, Client: versioned.NewForConfigOrDie(cfg),
		Providers: adapters, CatalogInterval: f.catalogRefresh, Recorder: recorder, Registry: registry, SSHKeys: sshKeys,
	})
	if err != nil {
		return fail(err, "creating controller")
	}
	if ps := pricewatch.Find(adapters); ps != nil && f.providers.pricesConfigMap != "" {
		if err := pricewatch.Watch(ctx, kube, f.namespace, f.providers.pricesConfigMap, ps); err != nil {
			return fail(err, "watching the price override ConfigMap")
		}
	}
	srv, err := operator.Serve(ctx, f.metricsAddr, operator.MetricsHandler(registry, ctrl.Ready, f.pprof))
	if err != nil {
		return fail(err, "starting the metrics server")
	}
	defer srv.Close()

	creds.Start(ctx, ctrl.UnblockProviders)
	checkSSHKeys(ctx, adapters, f.providers.callTimeout, func(provider, msg string) {
		recorder.Eventf(credsRef, corev1.EventTypeWarning, "ProviderUnavailable", "%s: %s", provider, msg)
	})
	var election *operator.LeaderElection
	if f.leaderElect {
		election = &operator.LeaderElection{Name: f.leaseName, Namespace: f.namespace, Leases: kube.CoordinationV1(),
			LeaseDuration: f.leaseDuration, RenewDeadline: f.renewDeadline, RetryPeriod: f.retryPeriod}
	}
	switch err := operator.Run(ctx, ctrl, informers, f.workers, election); {
	case errors.Is(err, operator.ErrLeadershipLost):
		logger.Info("lost the leader Lease; exiting")
		return 1
	case err != nil:
		return fail(err, "running the controller")
	}
	logger.Info("stopped")
	return 0
}

// signalContext is cancelled by the first SIGTERM or SIGINT (drain and
// release the Lease); a second one exits at once.
func signalContext() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-ch
		klog.Info("shutting down; send the signal again to exit at once")
		cancel()
		<-ch
		klog.Info("second signal: exiting")
		os.Exit(1)
	}()
	return ctx
}

func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig != "" {
		return clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if cfg, err := rest.InClusterConfig(); err == nil {
		return cfg, nil
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
}
