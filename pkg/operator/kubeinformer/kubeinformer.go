// Package kubeinformer builds a shared informer of one built-in resource
// from that resource's typed client, as the generated factory of
// k8s.io/client-go/informers does for it (the same list and watch calls,
// namespace index, watch-list check, resync period and transform), without
// that factory. The factory serves every API group: linking it links an
// informer, a lister and a typed client for each of them, which is most of
// the operator's binary. The operator informs on four core resources only
// (Nodes, Pods, its credentials Secret and its price ConfigMap).
package kubeinformer

import (
	"context"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
)

// CoreClient is a clientset with the core/v1 group: operator.Clientset,
// kubernetes.Interface or the fake clientset.
type CoreClient interface {
	CoreV1() corev1client.CoreV1Interface
}

// ListWatcher is the typed client of one resource in one namespace (or all),
// for example CoreV1().Nodes() or CoreV1().Secrets(namespace); L is its
// list type.
type ListWatcher[L runtime.Object] interface {
	List(ctx context.Context, opts metav1.ListOptions) (L, error)
	Watch(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error)
}

// Options are the factory options the operator uses; zero values are the
// factory's defaults.
type Options struct {
	// ResyncPeriod is the informer's default resync period; 0 is none.
	ResyncPeriod time.Duration
	// TweakListOptions changes every list and watch request
	// (informers.WithTweakListOptions), e.g. to select one object by name.
	TweakListOptions func(*metav1.ListOptions)
	// Transform runs on every object before it is cached
	// (informers.WithTransform).
	Transform cache.TransformFunc
}

// New returns an informer of resource (whose objects look like example)
// that lists and watches through lw. clientset is the client lw came from:
// like the factory, the informer asks it whether it supports watch-list
// requests (the fake clientset says it does not). The informer has the
// factory's namespace index; start it with Run or RunWithContext.
func New[L runtime.Object](clientset any, resource schema.GroupVersionResource, lw ListWatcher[L], example runtime.Object, o Options) cache.SharedIndexInformer {
	tweak := func(opts *metav1.ListOptions) {
		if o.TweakListOptions != nil {
			o.TweakListOptions(opts)
		}
	}
	informer := cache.NewSharedIndexInformerWithOptions(
		cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
			ListWithContextFunc: func(ctx context.Context, opts metav1.ListOptions) (runtime.Object, error) {
				tweak(&opts)
				return lw.List(ctx, opts)
			},
			WatchFuncWithContext: func(ctx context.Context, opts metav1.ListOptions) (watch.Interface, error) {
				tweak(&opts)
				return lw.Watch(ctx, opts)
			},
		}, clientset),
		example,
		cache.SharedIndexInformerOptions{
			ResyncPeriod: o.ResyncPeriod,
			Indexers:     cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc},
			// Unnamed, as the factory's without WithInformerName: no
			// metrics, the resource named in the queue's slow-handler traces.
			Identifier: (*cache.InformerName)(nil).WithResource(resource),
		},
	)
	if o.Transform != nil {
		// Cannot fail: the informer has not started.
		_ = informer.SetTransform(o.Transform)
	}
	return informer
}
