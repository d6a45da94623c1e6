package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"k8s.io/klog/v2"

	"github.com/solanyn/gpu-operator/pkg/controller"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

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

// parseOperatorFlags parses the operator's flags (klog's included) and
// refuses a verbosity above maxVerbosity; a code other than exitOK is the
// exit status.
func parseOperatorFlags(args []string) (*operatorFlags, int) {
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
	fs.StringVar(&f.ctrl.GPUResourceName, "gpu-resource-name", controller.DefaultGPUResource, "Extended resource a Node's allocatable must carry, spec.gpuCount of it, before its request is Ready (the join timeout covers the wait); empty turns the check off.")
	fs.DurationVar(&f.ctrl.DrainTimeout, "drain-timeout", 5*time.Minute, "How long a drain may take before the machine is terminated anyway.")
	fs.DurationVar(&f.ctrl.NodeNotReadyGrace, "node-not-ready-grace", 2*time.Minute, "How long a Node may be NotReady while its provider says running before it counts as interrupted.")
	fs.DurationVar(&f.ctrl.GCInterval, "gc-interval", 3*time.Minute, "How often leaked instances are collected.")
	fs.DurationVar(&f.ctrl.GCGrace, "gc-grace", 2*time.Minute, "How old an unclaimed instance must be before it is collected.")
	fs.DurationVar(&f.ctrl.UnavailableTTL, "unavailable-ttl", 3*time.Minute, "How long an offering that failed to launch is skipped.")
	fs.DurationVar(&f.ctrl.AuthRetryDelay, "auth-retry-delay", time.Minute, "How long a provider that rejected its credentials is skipped (a change of the credentials Secret lifts it at once).")
	fs.DurationVar(&f.ctrl.CostInterval, "cost-interval", time.Minute, "How often accumulatedCost is brought up to date.")
	fs.BoolVar(&f.ctrl.MintJoinTokens, "mint-join-tokens", false, "Create one kubeadm bootstrap token per machine (a bootstrap.kubernetes.io/token Secret in kube-system expiring with --join-timeout, deleted once the Node has joined) for templates as .JoinToken, with .APIServerURL, .CACertHash and .CACertData; needs --api-server-url.")
	fs.StringVar(&f.ctrl.APIServerURL, "api-server-url", "", "The API server address machines reach (https://host:6443), as templates see it in .APIServerURL; required with --mint-join-tokens.")
	f.providers.register(fs)
	if err := fs.Parse(args); err != nil {
		return nil, exitUsage
	}
	if err := checkVerbosity(fs); err != nil {
		fmt.Fprintf(os.Stderr, "gpu-operator: %v\n", err)
		return nil, exitUsage
	}
	if f.ctrl.MintJoinTokens && f.ctrl.APIServerURL == "" {
		fmt.Fprintln(os.Stderr, "gpu-operator: --mint-join-tokens needs --api-server-url (the address machines reach the API server at)")
		return nil, exitUsage
	}
	f.ctrl.OperatorNamespace = f.namespace
	return &f, exitOK
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
