// Command gpu-operator runs the GPURequest operator, and offers two
// subcommands for people about to spend money: `offers` (a dry run of the
// selection against live catalogs) and `validate-credentials`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	"github.com/solanyn/gpu-operator/pkg/controller"
	"github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned"
	tgpscheme "github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned/scheme"
	tgpinformers "github.com/solanyn/gpu-operator/pkg/generated/informers/externalversions"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "offers":
			os.Exit(runOffers(os.Args[2:], os.Stdout))
		case "validate-credentials":
			os.Exit(runValidateCredentials(os.Args[2:], os.Stdout))
		}
	}
	os.Exit(runOperator(os.Args[1:]))
}

type operatorFlags struct {
	kubeconfig     string
	namespace      string
	metricsAddr    string
	pprof          bool
	workers        int
	leaderElect    bool
	leaseName      string
	leaseDuration  time.Duration
	renewDeadline  time.Duration
	retryPeriod    time.Duration
	kubeQPS        float64
	kubeBurst      int
	catalogRefresh time.Duration
	ctrl           controller.Config
	providers      providerFlags
}

func runOperator(args []string) int {
	fs := flag.NewFlagSet("gpu-operator", flag.ExitOnError)
	klog.InitFlags(fs)
	var f operatorFlags
	fs.StringVar(&f.kubeconfig, "kubeconfig", "", "Path to a kubeconfig; empty uses the in-cluster config.")
	fs.StringVar(&f.namespace, "namespace", envOr("POD_NAMESPACE", "gpu-operator"), "Namespace of the operator's Lease and credentials Secret.")
	fs.StringVar(&f.metricsAddr, "metrics-addr", ":8080", "Address of the /metrics, /healthz and /readyz server.")
	fs.BoolVar(&f.pprof, "enable-pprof", false, "Serve Go's /debug/pprof profiles on the metrics address.")
	fs.IntVar(&f.workers, "workers", 4, "Number of workers syncing GPURequests.")
	fs.BoolVar(&f.leaderElect, "leader-elect", true, "Run only while holding the leader Lease, so replicas can stand by.")
	fs.StringVar(&f.leaseName, "lease-name", "gpu-operator", "Name of the leader election Lease.")
	fs.DurationVar(&f.leaseDuration, "lease-duration", 15*time.Second, "Leader election lease duration.")
	fs.DurationVar(&f.renewDeadline, "renew-deadline", 10*time.Second, "Leader election renew deadline.")
	fs.DurationVar(&f.retryPeriod, "retry-period", 2*time.Second, "Leader election retry period.")
	fs.Float64Var(&f.kubeQPS, "kube-api-qps", 50, "Client QPS to the Kubernetes API.")
	fs.IntVar(&f.kubeBurst, "kube-api-burst", 100, "Client burst to the Kubernetes API.")
	fs.DurationVar(&f.catalogRefresh, "catalog-interval", providers.DefaultCatalogInterval, "How often each provider's catalog (prices and availability) is refreshed.")
	fs.DurationVar(&f.ctrl.PollInterval, "poll-interval", 15*time.Second, "How often each provider's instances are listed.")
	fs.DurationVar(&f.ctrl.JoinTimeout, "join-timeout", 15*time.Minute, "How long a launched machine may take to join as a Ready Node.")
	fs.DurationVar(&f.ctrl.DrainTimeout, "drain-timeout", 5*time.Minute, "How long a drain may take before the machine is terminated anyway.")
	fs.DurationVar(&f.ctrl.NodeNotReadyGrace, "node-not-ready-grace", 2*time.Minute, "How long a Node may be NotReady while its provider says running before it counts as interrupted.")
	fs.DurationVar(&f.ctrl.GCInterval, "gc-interval", 3*time.Minute, "How often leaked instances are collected.")
	fs.DurationVar(&f.ctrl.GCGrace, "gc-grace", 2*time.Minute, "How old an unclaimed instance must be before it is collected.")
	fs.DurationVar(&f.ctrl.UnavailableTTL, "unavailable-ttl", 3*time.Minute, "How long an offering that failed to launch is skipped.")
	fs.DurationVar(&f.ctrl.AuthRetryDelay, "auth-retry-delay", time.Minute, "How long a provider that rejected its credentials is skipped (a change of the credentials Secret lifts it at once).")
	fs.DurationVar(&f.ctrl.CostInterval, "cost-interval", time.Minute, "How often accumulatedCost is brought up to date.")
	f.providers.register(fs)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := checkVerbosity(fs); err != nil {
		fmt.Fprintf(os.Stderr, "gpu-operator: %v\n", err)
		return exitUsage
	}
	f.ctrl.OperatorNamespace = f.namespace

	ctx := signalContext()
	logger := klog.FromContext(ctx)

	cfg, err := restConfig(f.kubeconfig)
	if err != nil {
		logger.Error(err, "loading Kubernetes client config")
		return 1
	}
	cfg.QPS, cfg.Burst = float32(f.kubeQPS), f.kubeBurst
	cfg.UserAgent = "gpu-operator"
	kube := kubernetes.NewForConfigOrDie(cfg)
	client := versioned.NewForConfigOrDie(cfg)

	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	workqueue.SetProvider(controller.NewWorkqueueMetrics(registry))

	kubeFactory := informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithTransform(controller.TrimForCache))
	tgpFactory := tgpinformers.NewSharedInformerFactoryWithOptions(client, 0, tgpinformers.WithTransform(controller.TrimForCache))
	creds := newCredentials(kube, f.namespace, f.providers.secretName)
	adapters, err := f.providers.build(creds.key)
	if err != nil {
		logger.Error(err, "configuring providers")
		return 1
	}

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	// Events get their own client (and rate limiter): a burst of them never
	// delays the writes that move requests along.
	eventKube := kubernetes.NewForConfigOrDie(cfg)
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: eventKube.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	_ = tgpscheme.AddToScheme(tgpscheme.Scheme)
	recorder := broadcaster.NewRecorder(tgpscheme.Scheme, corev1.EventSource{Component: "gpu-operator"})

	ctrl, err := controller.New(controller.Options{
		Config:     f.ctrl,
		KubeClient: kube,
		Client:     client,
		Requests:   tgpFactory.Tgp().V1().GPURequests(),
		Nodes:      kubeFactory.Core().V1().Nodes(),
		Pods:       kubeFactory.Core().V1().Pods(),
		Providers:  adapters,
		Catalog:    providers.NewCatalog(adapters, f.catalogRefresh, clock.RealClock{}),
		Recorder:   recorder,
		Clock:      clock.RealClock{},
		Registry:   registry,
	})
	if err != nil {
		logger.Error(err, "creating controller")
		return 1
	}
	if err := f.providers.watchPrices(ctx, kube, f.namespace, adapters); err != nil {
		logger.Error(err, "watching the price override ConfigMap")
		return 1
	}

	srv, err := serveMetrics(f.metricsAddr, registry, ctrl.Ready, f.pprof)
	if err != nil {
		logger.Error(err, "starting the metrics server")
		return 1
	}
	defer srv.Close()

	creds.start(ctx, ctrl.UnblockProviders)
	kubeFactory.Start(ctx.Done())
	tgpFactory.Start(ctx.Done())
	defer kubeFactory.Shutdown()
	defer tgpFactory.Shutdown()
	if err := ctrl.WaitForCaches(ctx); err != nil {
		logger.Error(err, "waiting for caches")
		return 1
	}

	run := func(ctx context.Context) {
		if err := ctrl.Run(ctx, f.workers); err != nil {
			logger.Error(err, "controller stopped")
		}
	}
	if !f.leaderElect {
		run(ctx)
		logger.Info("stopped")
		return 0
	}
	id, _ := os.Hostname()
	id = id + "_" + string(uuid.NewUUID())
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metaName(f.leaseName, f.namespace),
		Client:     kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: id},
	}
	leaderelection.RunOrDie(ctx, leaderelection.LeaderElectionConfig{
		Lock:            lock,
		Name:            f.leaseName,
		ReleaseOnCancel: true,
		LeaseDuration:   f.leaseDuration,
		RenewDeadline:   f.renewDeadline,
		RetryPeriod:     f.retryPeriod,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				logger.Info("became leader", "identity", id)
				run(ctx)
			},
			OnStoppedLeading: func() {
				logger.Info("stopped leading", "identity", id)
			},
		},
	})
	if ctx.Err() == nil {
		// Leadership was lost without a shutdown: exit so a restart rejoins
		// the election with clean state.
		logger.Info("lost the leader Lease; exiting")
		return 1
	}
	logger.Info("stopped")
	return 0
}

// maxVerbosity is the highest klog verbosity the operator accepts: from 8
// on, client-go's REST client logs API request and response bodies (hex
// dumps of protobuf included), and the operator reads Secrets (bootstrap
// templates, provider credentials).
const maxVerbosity = 7

// checkVerbosity refuses, after parsing, a -v or a -vmodule level (klog's
// flags on fs) above maxVerbosity.
func checkVerbosity(fs *flag.FlagSet) error {
	const why = "would make client-go log API request and response bodies, including Secrets; the highest accepted verbosity is"
	if v, ok := fs.Lookup("v").Value.(flag.Getter).Get().(klog.Level); ok && v > maxVerbosity {
		return fmt.Errorf("-v=%d %s %d", v, why, maxVerbosity)
	}
	for _, pat := range strings.Split(fs.Lookup("vmodule").Value.String(), ",") {
		if _, level, _ := strings.Cut(pat, "="); level != "" {
			if v, err := strconv.Atoi(level); err == nil && v > maxVerbosity {
				return fmt.Errorf("-vmodule=%s %s %d", pat, why, maxVerbosity)
			}
		}
	}
	return nil
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

func serveMetrics(addr string, reg *prometheus.Registry, ready func() bool, withPprof bool) (*http.Server, error) {
	mux := http.NewServeMux()
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready() {
			http.Error(w, "caches not synced", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			klog.ErrorS(err, "metrics server")
		}
	}()
	klog.InfoS("serving metrics and health", "addr", ln.Addr().String())
	return srv, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
