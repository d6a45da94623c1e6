// Package operator wires the GPURequest controller the one way the operator
// binary runs it: informer factories whose caches hold objects trimmed by
// controller.TrimForCache, a provider catalog, the controller, its event
// recorder, its metrics and health server, and leader election. The binary
// and every test that must run the controller as the binary does use it, so
// the wiring exists once.
package operator

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/solanyn/gpu-operator/pkg/controller"
	"github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned"
	tgpscheme "github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned/scheme"
	tgpinformers "github.com/solanyn/gpu-operator/pkg/generated/informers/externalversions"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// Informers are the shared informer factories the controller reads.
type Informers struct {
	Kube informers.SharedInformerFactory
	TGP  tgpinformers.SharedInformerFactory
}

// NewInformers returns factories whose caches hold objects trimmed by
// controller.TrimForCache. namespace limits the GPURequests to one
// namespace ("" is every namespace, as the operator watches); Nodes and Pods
// are always cluster-wide.
func NewInformers(kube kubernetes.Interface, client versioned.Interface, namespace string) Informers {
	return Informers{
		Kube: informers.NewSharedInformerFactoryWithOptions(kube, 0, informers.WithTransform(controller.TrimForCache)),
		TGP: tgpinformers.NewSharedInformerFactoryWithOptions(client, 0,
			tgpinformers.WithTransform(controller.TrimForCache), tgpinformers.WithNamespace(namespace)),
	}
}

// Start starts every informer requested so far; they stop with ctx.
func (i Informers) Start(ctx context.Context) {
	i.Kube.Start(ctx.Done())
	i.TGP.Start(ctx.Done())
}

// Shutdown waits for the started informers to stop (after ctx of Start ended).
func (i Informers) Shutdown() {
	i.Kube.Shutdown()
	i.TGP.Shutdown()
}

// Options are what NewController needs.
type Options struct {
	Config     controller.Config
	KubeClient kubernetes.Interface
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
		Nodes:      inf.Kube.Core().V1().Nodes(),
		Pods:       inf.Kube.Core().V1().Pods(),
		Providers:  o.Providers,
		Catalog:    providers.NewCatalog(o.Providers, o.CatalogInterval, o.Clock),
		Recorder:   o.Recorder,
		Clock:      o.Clock,
		Registry:   o.Registry,
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
func NewRecorder(ctx context.Context, events kubernetes.Interface, component string) (record.EventRecorder, func()) {
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: events.CoreV1().Events("")})
	return broadcaster.NewRecorder(tgpscheme.Scheme, corev1.EventSource{Component: component}), broadcaster.Shutdown
}
