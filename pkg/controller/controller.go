// Package controller owns the GPURequest workqueue and lifecycle: informers
// turn GPURequests, Nodes and Pods into keys on a named, typed, rate-limited
// queue; workers select an offer (pkg/selector), launch it through a
// provider adapter (pkg/providers), follow the instance through the shared
// poller, wait for its Node, and terminate it when its lifetime, idle time or
// the object ends.
//
// One file per stage, each owning its conditions and phases:
//
//	sync.go         the dispatch of one sync, finalizers, the status write,
//	                validation of stored specs (Failed/InvalidSpec)
//	launch.go       selection, the write-ahead record, launch and failover,
//	                adoption by name: OffersAvailable, Launched; Pending,
//	                Provisioning
//	bootstrap.go    the consent-labelled bootstrap Secret and its bounded
//	                rendering (Launched=False/BootstrapError)
//	join.go         Booting, Joining, Ready and the join timeout: NodeJoined,
//	                Ready
//	ssh.go          bootstrap delivery over SSH for providers whose create
//	                cannot carry it (Vast.ai), once per machine, off the
//	                workers; the operator's key pair and the pinned host
//	                keys in Secrets of its namespace: NodeJoined reasons
//	                DeliveringBootstrap, BootstrapDelivered, BootstrapFailed
//	liveness.go     interruptions and the relaunch: Interrupted
//	bids.go         bid markets (providers.Bidder): the bid of a spot
//	                launch under the spot cap, the re-bid of an outbid
//	                instance, or its interruption (Interrupted/Outbid)
//	termination.go  lifetime, idle time, deletion, drain, one terminate call:
//	                Terminating, Terminated
//	jointoken.go    per-machine kubeadm bootstrap tokens (--mint-join-tokens)
//	cost.go         accumulatedCost (and monthCost) and the cost metric
//	budgets.go      GPUBudgets: the budget worker and GPUBudget status
//	                (Exceeded), OverBudget refusals at selection
//	                (OffersAvailable=False/OverBudget), the headroom
//	                reservation around each launch, termination under a
//	                reached monthly limit (Terminating/MonthlyLimit), the
//	                spend of deleted requests kept in their budgets
//	ownership.go    what proves a machine or Node is a request's
//	availability.go offerings marked unavailable, providers blocked
//	nodes.go        Node labels, taints, lookups; inventory.go the instance
//	                poller; collector.go the leaked-instance collector;
//	                metrics.go the metrics
//
// A sync (sync.go) loads one copy of the request into a syncCtx; the stage
// for its phase mutates that copy in memory, and the sync writes status once
// at the end, only when it changed (or cost is due). The one deliberate
// exception is the write-ahead record (writeAhead): the machine name and
// chosen offer before each launch call, the termination start before the
// terminate calls. A sync that fails writes nothing else and is retried from
// the stored status. Real-cluster tests live in ./integration.
package controller

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	coreinformers "k8s.io/client-go/informers/core/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	policyv1client "k8s.io/client-go/kubernetes/typed/policy/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned"
	tgpinformers "github.com/solanyn/gpu-operator/pkg/generated/informers/externalversions/tgp/v1"
	tgplisters "github.com/solanyn/gpu-operator/pkg/generated/listers/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/vastai/sshboot"
	"github.com/solanyn/gpu-operator/pkg/selector"
)

// QueueName names the workqueue (and its workqueue_* metrics).
const QueueName = "gpurequests"

// FieldManager names the operator's writes to Nodes.
const FieldManager = "gpu-operator"

// Indexes on the GPURequest informer.
const (
	byMachineName = "machineName"
	byNodeName    = "nodeName"
)

// Config holds the controller's tunables; zero values take the defaults.
type Config struct {
	// PollInterval is how often each provider's instances are listed.
	PollInterval time.Duration
	// JoinTimeout bounds the wait for a launched machine's Node.
	JoinTimeout time.Duration
	// DrainTimeout bounds the drain before a machine is terminated anyway.
	DrainTimeout time.Duration
	// NodeNotReadyGrace is how long a Node may be NotReady while the provider
	// says running before the machine counts as interrupted.
	NodeNotReadyGrace time.Duration
	// CostInterval is how often accumulatedCost is brought up to date.
	CostInterval time.Duration
	// GCInterval is how often the leaked-instance collector runs.
	GCInterval time.Duration
	// GCGrace is how long an unclaimed instance is left alone.
	GCGrace time.Duration
	// UnavailableTTL is how long a failed offering is skipped.
	UnavailableTTL time.Duration
	// MaxLaunchesPerSync bounds failover within one sync.
	MaxLaunchesPerSync int
	// AuthRetryDelay is how long to wait after an authentication failure.
	AuthRetryDelay time.Duration
	// OperatorNamespace is the operator's own namespace (its credentials
	// and its SSH Secrets live there); it is never a source of bootstrap
	// Secrets.
	OperatorNamespace string
	// SSHTimeout bounds one SSH connection of a bootstrap delivery, the
	// script's run included (default sshboot.DefaultTimeout).
	SSHTimeout time.Duration
	// SSHAttempts is how many connections one delivery tries before the
	// script starts (default sshboot.DefaultAttempts), SSHBackoff the first
	// wait between them (default sshboot.DefaultBackoff).
	SSHAttempts int
	SSHBackoff  time.Duration
	// BootstrapDeliveries is how many deliveries (each of SSHAttempts
	// connections) a machine gets before it counts as failed to join
	// (default 3). A script that started is never run again.
	BootstrapDeliveries int
	// MintJoinTokens gives each VM its own kubeadm bootstrap token
	// (jointoken.go), deleted once its Node has joined.
	MintJoinTokens bool
	// APIServerURL is the address machines reach the API server at
	// (.APIServerURL); required with MintJoinTokens.
	APIServerURL string
	// GPUResourceName is the extended resource a Node's allocatable must
	// carry, spec.gpuCount of it, before its request is Ready (join.go).
	// Unlike the other fields, empty is not defaulted: it turns the check
	// off. The operator's --gpu-resource-name sets it (DefaultGPUResource).
	GPUResourceName string
}

func (c *Config) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.PollInterval, 15*time.Second)
	def(&c.JoinTimeout, 15*time.Minute)
	def(&c.DrainTimeout, 5*time.Minute)
	def(&c.NodeNotReadyGrace, 2*time.Minute)
	def(&c.CostInterval, time.Minute)
	def(&c.GCInterval, 3*time.Minute)
	def(&c.GCGrace, 2*time.Minute)
	def(&c.UnavailableTTL, 3*time.Minute)
	def(&c.AuthRetryDelay, time.Minute)
	if c.MaxLaunchesPerSync <= 0 {
		c.MaxLaunchesPerSync = 5
	}
	def(&c.SSHTimeout, sshboot.DefaultTimeout)
	def(&c.SSHBackoff, sshboot.DefaultBackoff)
	if c.SSHAttempts <= 0 {
		c.SSHAttempts = sshboot.DefaultAttempts
	}
	if c.BootstrapDeliveries <= 0 {
		c.BootstrapDeliveries = 3
	}
	if c.OperatorNamespace == "" {
		c.OperatorNamespace = "gpu-operator"
	}
}

// KubeClient is what the controller uses of the Kubernetes API: core (Nodes,
// Secrets) and policy (Evictions). kubernetes.Interface and the fake
// clientset satisfy it; it is narrower so the binary need not link a client
// for every API group.
type KubeClient interface {
	CoreV1() corev1client.CoreV1Interface
	PolicyV1() policyv1client.PolicyV1Interface
}

// Options are the controller's collaborators.
type Options struct {
	Config     Config
	KubeClient KubeClient
	Client     versioned.Interface
	Requests   tgpinformers.GPURequestInformer
	// Budgets watches GPUBudgets; nil means no budget applies anywhere.
	Budgets   tgpinformers.GPUBudgetInformer
	Nodes     coreinformers.NodeInformer
	Pods      coreinformers.PodInformer
	Providers []providers.Provider
	// Catalog caches the providers' offers; nil builds one with the default interval.
	Catalog  *providers.Catalog
	Recorder record.EventRecorder
	Clock    clock.WithTicker
	Registry prometheus.Registerer
	// SSHKeys is the operator's SSH key pair for VMs bootstrapped over SSH
	// (ssh.go); the same value's PublicKey goes to the Vast.ai adapter. Nil
	// makes one over KubeClient in Config.OperatorNamespace.
	SSHKeys *SSHKeys
}

// Controller runs the GPURequest lifecycle.
type Controller struct {
	cfg         Config
	kube        KubeClient
	client      versioned.Interface
	requests    tgplisters.GPURequestLister
	requestIdx  cache.Indexer
	nodes       corelisters.NodeLister
	nodeIdx     cache.Indexer
	pods        cache.Indexer
	synced      []cache.InformerSynced
	providers   map[string]providers.Provider
	catalog     *providers.Catalog
	inventory   *Inventory
	unavailable *UnavailableCache
	queue       workqueue.TypedRateLimitingInterface[cache.ObjectName]
	recorder    record.EventRecorder
	clock       clock.WithTicker
	metrics     *Metrics
	// budget is nil when GPUBudgets are not watched (budgets.go).
	budget *budgets

	indexMu      sync.Mutex
	index        *selector.Index
	indexVersion uint64

	// launchedHere maps machine names this process launched to when the
	// launch returned (a few dozen bytes each, for the process's life).
	launchedHere sync.Map
	// ambiguous maps machine names whose launch got no definite answer
	// (ClassTransient) and that no listing has shown yet to when the
	// answer came; such a request launches nothing else until a listing
	// started after that settles it.
	ambiguous sync.Map
	// terminateSent maps provider/instance id to when a terminate call was
	// last sent for it.
	terminateSent sync.Map
	// pendingCost holds, per request UID, cost accrued but not yet written.
	pendingCost sync.Map
	// rebids maps machine names to the last bid raised on them (bids.go).
	rebids sync.Map
	// nodeGone maps bid-market machine names to when their Ready Node was
	// first found gone (bids.go).
	nodeGone sync.Map
	// tokens caches what --mint-join-tokens reads and writes (jointoken.go).
	tokens joinTokens
	// sshKeys is the operator's SSH key pair and deliveries the bootstrap
	// deliveries over SSH (ssh.go).
	sshKeys    *SSHKeys
	deliveries *deliveries

	blockMu sync.Mutex
	blocked map[string]time.Time

	readyMu sync.RWMutex
	ready   bool
}

// New wires a controller; Run starts it.
func New(o Options) (*Controller, error) {
	o.Config.defaults()
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	c := &Controller{
		cfg:        o.Config,
		kube:       o.KubeClient,
		client:     o.Client,
		requests:   o.Requests.Lister(),
		nodes:      o.Nodes.Lister(),
		pods:       o.Pods.Informer().GetIndexer(),
		providers:  map[string]providers.Provider{},
		recorder:   o.Recorder,
		clock:      o.Clock,
		sshKeys:    o.SSHKeys,
		deliveries: newDeliveries(),
	}
	if c.sshKeys == nil {
		c.sshKeys = NewSSHKeys(o.KubeClient, o.Config.OperatorNamespace)
	}
	for _, p := range o.Providers {
		c.providers[p.Name()] = p
	}
	c.unavailable = NewUnavailableCache(o.Clock, o.Config.UnavailableTTL)
	c.metrics = NewMetrics(o.Registry, c.unavailable.Len)
	c.metrics.initProviders(c.providers)
	o.Registry.MustRegister(&requestCollector{c: c})
	c.catalog = o.Catalog
	if c.catalog == nil {
		c.catalog = providers.NewCatalog(o.Providers, 0, o.Clock)
	}
	c.catalog.OnRefresh = c.onCatalogRefresh
	c.inventory = NewInventory(c.providers, o.Config.PollInterval, o.Clock, c.metrics)
	c.inventory.OnChange = c.enqueueMachine
	c.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[cache.ObjectName](),
		workqueue.TypedRateLimitingQueueConfig[cache.ObjectName]{Name: QueueName, Clock: o.Clock},
	)

	reqInformer := o.Requests.Informer()
	if err := reqInformer.AddIndexers(cache.Indexers{
		// Only a machine name derived from the request's own UID claims an
		// instance: a name forged into status claims nothing, so the
		// forger's real machine stays visible to the collector.
		byMachineName: func(obj any) ([]string, error) {
			r := obj.(*tgpv1.GPURequest)
			if m := currentMachine(r); m != "" {
				return []string{m}, nil
			}
			return nil, nil
		},
		byNodeName: func(obj any) ([]string, error) {
			r := obj.(*tgpv1.GPURequest)
			if r.Status.NodeName == "" {
				return nil, nil
			}
			return []string{r.Status.NodeName}, nil
		},
	}); err != nil {
		return nil, err
	}
	c.requestIdx = reqInformer.GetIndexer()
	if err := o.Pods.Informer().AddIndexers(cache.Indexers{podsByNode: indexPodByNode}); err != nil {
		return nil, err
	}
	if err := o.Nodes.Informer().AddIndexers(cache.Indexers{nodesByProviderID: indexNodeByProviderID, nodesByRequestUID: indexNodeByRequestUID}); err != nil {
		return nil, err
	}
	c.nodeIdx = o.Nodes.Informer().GetIndexer()
	_, err := reqInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: c.enqueue,
		UpdateFunc: func(oldObj, newObj any) {
			o, n := oldObj.(*tgpv1.GPURequest), newObj.(*tgpv1.GPURequest)
			if o.ResourceVersion != n.ResourceVersion {
				c.budgetTouched(n) // spend and GPUs in use follow status
			}
			// The operator's own status writes do not need a new sync: the
			// sync that wrote them already returned its next step. Spec,
			// deletion and finalizer changes do.
			if o.ResourceVersion == n.ResourceVersion ||
				(o.Generation == n.Generation && o.DeletionTimestamp.Equal(n.DeletionTimestamp) &&
					len(o.Finalizers) == len(n.Finalizers)) {
				return
			}
			c.enqueue(n)
		},
		DeleteFunc: func(obj any) {
			c.enqueue(obj)
			if r, ok := tombstone[*tgpv1.GPURequest](obj); ok {
				c.budgetTouched(r)
			}
		},
	})
	if err != nil {
		return nil, err
	}
	if o.Budgets != nil {
		if err := c.watchBudgets(o.Budgets); err != nil {
			return nil, err
		}
		o.Registry.MustRegister(&budgetCollector{c: c})
	}
	if _, err := o.Nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { c.enqueueForNode(obj.(*corev1.Node)) },
		UpdateFunc: func(oldObj, newObj any) {
			o, n := oldObj.(*corev1.Node), newObj.(*corev1.Node)
			if nodeReady(o) != nodeReady(n) || o.Spec.ProviderID != n.Spec.ProviderID || !n.DeletionTimestamp.IsZero() ||
				gpuAllocatableChanged(o, n, c.cfg.GPUResourceName) {
				c.enqueueForNode(n)
			}
		},
		DeleteFunc: func(obj any) {
			if n, ok := tombstone[*corev1.Node](obj); ok {
				c.enqueueForNode(n)
			}
		},
	}); err != nil {
		return nil, err
	}
	if _, err := o.Pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { c.enqueueForPod(obj.(*corev1.Pod)) },
		UpdateFunc: func(oldObj, newObj any) {
			o, n := oldObj.(*corev1.Pod), newObj.(*corev1.Pod)
			if o.Spec.NodeName != n.Spec.NodeName || podFinished(o) != podFinished(n) {
				c.enqueueForPod(n)
			}
		},
		DeleteFunc: func(obj any) {
			if p, ok := tombstone[*corev1.Pod](obj); ok {
				c.enqueueForPod(p)
			}
		},
	}); err != nil {
		return nil, err
	}
	c.synced = append(c.synced, reqInformer.HasSynced, o.Nodes.Informer().HasSynced, o.Pods.Informer().HasSynced)
	return c, nil
}

func tombstone[T any](obj any) (T, bool) {
	if t, ok := obj.(T); ok {
		return t, true
	}
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		t, ok := d.Obj.(T)
		return t, ok
	}
	var zero T
	return zero, false
}

func (c *Controller) enqueue(obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	name, err := cache.ObjectToName(obj)
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	c.queue.Add(name)
}

func (c *Controller) enqueueIndexed(index, value string) {
	objs, err := c.requestIdx.ByIndex(index, value)
	if err != nil {
		utilruntime.HandleError(err)
		return
	}
	for _, o := range objs {
		c.enqueue(o)
	}
}

// enqueueMachine maps a provider instance back to its GPURequest.
func (c *Controller) enqueueMachine(_, name string) { c.enqueueIndexed(byMachineName, name) }

func (c *Controller) enqueueForNode(n *corev1.Node) {
	c.enqueueIndexed(byMachineName, n.Name)
	c.enqueueIndexed(byNodeName, n.Name)
}

func (c *Controller) enqueueForPod(p *corev1.Pod) {
	if p.Spec.NodeName != "" {
		c.enqueueIndexed(byNodeName, p.Spec.NodeName)
	}
}

// onCatalogRefresh records the catalog's health and wakes requests that were
// waiting for offers.
func (c *Controller) onCatalogRefresh(provider string, err error) {
	st := c.catalog.Status()[provider]
	if st.Stale {
		c.metrics.CatalogStale.WithLabelValues(provider).Set(1)
	} else {
		c.metrics.CatalogStale.WithLabelValues(provider).Set(0)
		c.metrics.CatalogRefreshed.WithLabelValues(provider).Set(float64(st.FetchedAt.Unix()))
	}
	c.metrics.observeCall(provider, "list_offers", err)
	if err != nil {
		return
	}
	c.enqueuePending() // new offers: requests waiting for one look again now
}

// enqueuePending enqueues every request waiting for an offer.
func (c *Controller) enqueuePending() {
	reqs, _ := c.requests.List(labelsEverything)
	for _, r := range reqs {
		if r.Status.Phase == tgpv1.PhasePending {
			c.enqueue(r)
		}
	}
}

// Ready reports whether caches have synced (for /readyz).
func (c *Controller) Ready() bool {
	c.readyMu.RLock()
	defer c.readyMu.RUnlock()
	return c.ready
}

// WaitForCaches blocks until the informers' caches have synced.
func (c *Controller) WaitForCaches(ctx context.Context) error {
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return errors.New("caches did not sync")
	}
	c.readyMu.Lock()
	c.ready = true
	c.readyMu.Unlock()
	return nil
}

// Run starts the catalog refresher, the instance poller, the leaked-instance
// collector and workers, and blocks until ctx ends; then it shuts the queue
// down and waits for every goroutine. Informers must have been started.
func (c *Controller) Run(ctx context.Context, workers int) error {
	defer utilruntime.HandleCrash()
	logger := klog.FromContext(ctx)
	if err := c.WaitForCaches(ctx); err != nil {
		return err
	}
	var wg wait.Group
	defer c.deliveries.wg.Wait() // SSH deliveries end with ctx (ssh.go)
	defer wg.Wait()
	defer c.queue.ShutDown()

	wg.StartWithContext(ctx, func(ctx context.Context) { c.catalog.Run(ctx, c.clock) })
	wg.StartWithContext(ctx, c.inventory.Run)
	// Workers start only once every provider has been listed: a machine
	// name in status without an instance id is then known to be unlaunched
	// (or is adopted), never launched twice.
	syncCtx, cancel := context.WithTimeout(ctx, 2*c.cfg.PollInterval+30*time.Second)
	if !c.inventory.WaitForSync(syncCtx) {
		logger.Info("not every provider could be listed yet; requests on those providers wait for their first list")
	}
	cancel()
	wg.StartWithContext(ctx, c.runCollector)
	if c.budget != nil {
		wg.StartWithContext(ctx, c.runBudgets)
	}
	logger.Info("starting workers", "count", workers)
	for range workers {
		wg.StartWithContext(ctx, func(ctx context.Context) {
			for c.processNextWorkItem(ctx) {
			}
		})
	}
	<-ctx.Done()
	logger.Info("shutting down workers")
	return nil
}

func (c *Controller) processNextWorkItem(ctx context.Context) bool {
	key, shutdown := c.queue.Get()
	if shutdown {
		return false
	}
	defer c.queue.Done(key)
	start := c.clock.Now()
	after, err := c.sync(ctx, key)
	c.metrics.SyncDuration.Observe(c.clock.Since(start).Seconds())
	switch {
	case err != nil:
		if !apierrors.IsConflict(err) {
			utilruntime.HandleErrorWithContext(ctx, err, "syncing GPURequest", "key", key.String())
		}
		c.queue.AddRateLimited(key)
	case after > 0:
		c.queue.Forget(key)
		c.queue.AddAfter(key, after)
	default:
		c.queue.Forget(key)
	}
	return true
}
