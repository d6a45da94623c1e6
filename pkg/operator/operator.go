// Package operator wires the GPURequest controller the one way the operator
// binary runs it: informers whose caches hold objects trimmed by
// controller.TrimForCache, a provider catalog, the controller, its event
// recorder, its metrics and health server, and leader election. The binary
// and every test that must run the controller as the binary does use it, so
// the wiring exists once.
package operator

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/solanyn/gpu-operator/pkg/controller"
	"github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned"
	tgpscheme "github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned/scheme"
	tgpinformers "github.com/solanyn/gpu-operator/pkg/generated/informers/externalversions"
	"github.com/solanyn/gpu-operator/pkg/operator/kubeinformer"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// Informers are the shared informers the controller reads: Nodes and Pods
// (built by package kubeinformer, not client-go's all-groups factory) and
// the GPURequest factory.
type Informers struct {
	Nodes, Pods cache.SharedIndexInformer
	TGP         tgpinformers.SharedInformerFactory
	// running tracks the Node and Pod informers' goroutines.
	running *sync.WaitGroup
}

// NewInformers returns informers whose caches hold objects trimmed by
// controller.TrimForCache. namespace limits the GPURequests to one
// namespace ("" is every namespace, as the operator watches); Nodes and Pods
// are always cluster-wide.
func NewInformers(kube controller.KubeClient, client versioned.Interface, namespace string) Informers {
	o := kubeinformer.Options{Transform: controller.TrimForCache}
	return Informers{
		Nodes: kubeinformer.New(kube, corev1.SchemeGroupVersion.WithResource("nodes"), kube.CoreV1().Nodes(), &corev1.Node{}, o),
		Pods:  kubeinformer.New(kube, corev1.SchemeGroupVersion.WithResource("pods"), kube.CoreV1().Pods(corev1.NamespaceAll), &corev1.Pod{}, o),
		TGP: tgpinformers.NewSharedInformerFactoryWithOptions(client, 0,
			tgpinformers.WithTransform(controller.TrimForCache), tgpinformers.WithNamespace(namespace)),
		running: &sync.WaitGroup{},
	}
}

// Start starts the informers; they stop with ctx. Call it once.
func (i Informers) Start(ctx context.Context) {
	i.running.Go(func() { i.Nodes.RunWithContext(ctx) })
	i.running.Go(func() { i.Pods.RunWithContext(ctx) })
	i.TGP.Start(ctx.Done())
}

// Shutdown waits for the started informers to stop (after ctx of Start ended).
func (i Informers) Shutdown() {
	i.running.Wait()
	i.TGP.Shutdown()
}

// nodeInformer and podInformer give the controller the Node and Pod
// informers with their listers, as client-go's informers/core/v1 types do.
type nodeInformer struct{ cache.SharedIndexInformer }

func (i nodeInformer) Informer() cache.SharedIndexInformer { return i.SharedIndexInformer }
func (i nodeInformer) Lister() corelisters.NodeLister {
	return corelisters.NewNodeLister(i.GetIndexer())
}

type podInformer struct{ cache.SharedIndexInformer }

func (i podInformer) Informer() cache.SharedIndexInformer { return i.SharedIndexInformer }
func (i podInformer) Lister() corelisters.PodLister {
	return corelisters.NewPodLister(i.GetIndexer())
}

// Options are what NewController needs.
type Options struct {
	Config     controller.Config
	KubeClient controller.KubeClient // a *Clientset, a kubernetes.Interface
	Client     versioned.Interface
	// Namespace limits the GPURequests the controller sees; "" is every
	// namespace.
	Namespace string
	Providers []providers.Provider
	// CatalogInterval is how often each provider's catalog is refreshed;
	// 0 is providers.DefaultCatalogInterval.
	CatalogInterval time.Duration
	Recorder        record.EventRecorder
	// Clock drives the controller, its queue and the catalog; nil is the
	// real clock.
	Clock clock.WithTicker
	// Registry receives the controller's metrics; nil is a fresh registry.
	Registry prometheus.Registerer
	// SSHKeys is the operator's SSH key pair, shared with the adapters that
	// register it (Vast.ai); nil makes the controller its own.
	SSHKeys *controller.SSHKeys
}

// NewController builds the informers (NewInformers) and the controller on
// them, with a catalog of o.Providers. Start the informers (Run does) before
// the controller waits for its caches.
func NewController(o Options) (*controller.Controller, Informers, error) {
	if o.Clock == nil {
		o.Clock = clock.RealClock{}
	}
	inf := NewInformers(o.KubeClient, o.Client, o.Namespace)
	ctrl, err := controller.New(controller.Options{
		Config:     o.Config,
		KubeClient: o.KubeClient,
		Client:     o.Client,
		Requests:   inf.TGP.Tgp().V1().GPURequests(),
		Budgets:    inf.TGP.Tgp().V1().GPUBudgets(),
		Nodes:      nodeInformer{inf.Nodes},
		Pods:       podInformer{inf.Pods},
		Providers:  o.Providers,
		Catalog:    providers.NewCatalog(o.Providers, o.CatalogInterval, o.Clock),
		Recorder:   o.Recorder,
		Clock:      o.Clock,
		Registry:   o.Registry,
		SSHKeys:    o.SSHKeys,
	})
	if err != nil {
		return nil, Informers{}, err
	}
	return ctrl, inf, nil
}

// NewRecorder starts an event broadcaster that writes Events through events
// (give it a client of its own, so a burst of Events never delays the writes
// that move requests along) and returns a recorder of GPURequest and core
// objects for component, and the function that stops the broadcaster.
func NewRecorder(ctx context.Context, events corev1client.EventsGetter, component string) (record.EventRecorder, func()) {
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&corev1client.EventSinkImpl{Interface: events.Events("")})
	return broadcaster.NewRecorder(tgpscheme.Scheme, corev1.EventSource{Component: component}), broadcaster.Shutdown
}
