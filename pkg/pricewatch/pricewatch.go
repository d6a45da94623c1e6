// Package pricewatch keeps a provider's price table in step with an override
// ConfigMap. Paperspace's API has no price endpoint, so its adapter prices
// offers from a shipped table; an operator may replace entries of that table
// by writing one key per machine type (USD/h) into the ConfigMap, and the
// change takes effect without a restart.
package pricewatch

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"

	"github.com/solanyn/gpu-operator/pkg/operator/kubeinformer"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/paperspace"
)

// PriceSetter is a provider whose price table can be replaced while it
// runs; SetPrices(nil) restores the shipped table. *paperspace.Adapter
// satisfies it.
type PriceSetter interface {
	SetPrices(*paperspace.PriceTable)
}

var _ PriceSetter = (*paperspace.Adapter)(nil)

// Find returns the first of ps that is a PriceSetter, or nil.
func Find(ps []providers.Provider) PriceSetter {
	for _, p := range ps {
		if s, ok := p.(PriceSetter); ok {
			return s
		}
	}
	return nil
}

// Watch starts an informer on the ConfigMap namespace/name that lasts until
// ctx ends, and returns without waiting for it to sync. Each version of the
// ConfigMap replaces target's table with the shipped table plus the
// ConfigMap's entries; a ConfigMap with an entry that is not a non-negative
// decimal is logged and ignored (the last good table stays); deleting the
// ConfigMap restores the shipped table. Logs go to ctx's logger.
func Watch(ctx context.Context, kube kubeinformer.CoreClient, namespace, name string, target PriceSetter) error {
	logger := klog.FromContext(ctx)
	informer := kubeinformer.New(kube, corev1.SchemeGroupVersion.WithResource("configmaps"), kube.CoreV1().ConfigMaps(namespace), &corev1.ConfigMap{},
		kubeinformer.Options{TweakListOptions: func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		}})
	apply := func(obj any) {
		cm, ok := obj.(*corev1.ConfigMap)
		if !ok {
			target.SetPrices(nil)
			return
		}
		table, err := paperspace.DefaultPriceTable().WithConfigMapData(cm.Namespace, cm.Name, cm.Data)
		if err != nil {
			logger.Error(err, "ignoring invalid Paperspace price override", "configmap", klog.KObj(cm))
			return
		}
		target.SetPrices(table)
		logger.Info("Paperspace price overrides applied", "configmap", klog.KObj(cm), "entries", len(cm.Data))
	}
	_, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    apply,
		UpdateFunc: func(_, n any) { apply(n) },
		DeleteFunc: func(any) { target.SetPrices(nil) },
	})
	if err != nil {
		return err
	}
	go informer.RunWithContext(ctx)
	return nil
}
