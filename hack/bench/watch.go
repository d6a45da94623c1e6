package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/cache"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned"
	tgpinformers "github.com/solanyn/gpu-operator/pkg/generated/informers/externalversions"
	tgpinformersv1 "github.com/solanyn/gpu-operator/pkg/generated/informers/externalversions/tgp/v1"
	tgplisters "github.com/solanyn/gpu-operator/pkg/generated/listers/tgp/v1"
)

// requestWatcher follows every GPURequest through a watch (no polling of
// the API server, which would skew the benchmark) and records when each
// was first seen Ready.
type requestWatcher struct {
	lister tgplisters.GPURequestLister

	mu        sync.Mutex
	readyAt   map[string]time.Time
	lastReady time.Time
}

func watchRequests(ctx context.Context, client versioned.Interface) (*requestWatcher, error) {
	f := tgpinformers.NewSharedInformerFactory(client, 0)
	inf := f.Tgp().V1().GPURequests()
	w := &requestWatcher{lister: inf.Lister(), readyAt: map[string]time.Time{}}
	observe := func(obj any) {
		r, ok := obj.(*tgpv1.GPURequest)
		if !ok || r.Status.Phase != tgpv1.PhaseReady {
			return
		}
		now := time.Now()
		key := r.Namespace + "/" + r.Name
		w.mu.Lock()
		if _, seen := w.readyAt[key]; !seen {
			w.readyAt[key] = now
			w.lastReady = now
		}
		w.mu.Unlock()
	}
	if err := startObserving(ctx, f, inf, observe); err != nil {
		return nil, err
	}
	return w, nil
}

// everReady is how many requests have been seen Ready at least once.
func (w *requestWatcher) everReady() (int, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.readyAt), w.lastReady
}

// all returns the cached requests.
func (w *requestWatcher) all() []tgpv1.GPURequest {
	list, _ := w.lister.List(labels.Everything())
	out := make([]tgpv1.GPURequest, 0, len(list))
	for _, r := range list {
		out = append(out, *r)
	}
	return out
}

// countReady counts requests whose current phase is Ready.
func (w *requestWatcher) countReady() int {
	n := 0
	for _, r := range w.all() {
		if r.Status.Phase == tgpv1.PhaseReady {
			n++
		}
	}
	return n
}

// waitAllReady waits until n requests are Ready at once, logging progress.
func (w *requestWatcher) waitAllReady(ctx context.Context, n int, timeout time.Duration, logf func(string, ...any)) error {
	lastLog := time.Now()
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		list, _ := w.lister.List(labels.Everything())
		ready := 0
		for _, r := range list {
			if r.Status.Phase == tgpv1.PhaseReady {
				ready++
			}
		}
		if time.Since(lastLog) > 10*time.Second {
			logf("  %d/%d Ready (%s)", ready, n, formatPhases(phaseCounts(w.all())))
			lastLog = time.Now()
		}
		return len(list) >= n && ready >= n, nil
	})
	if err != nil {
		return fmt.Errorf("not all %d requests Ready within %s: %s: %w", n, timeout, formatPhases(phaseCounts(w.all())), err)
	}
	return nil
}

// startObserving calls observe with every GPURequest added or updated, then
// starts the factory and waits for its cache.
func startObserving(ctx context.Context, f tgpinformers.SharedInformerFactory, inf tgpinformersv1.GPURequestInformer, observe func(any)) error {
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    observe,
		UpdateFunc: func(_, n any) { observe(n) },
	}); err != nil {
		return err
	}
	f.Start(ctx.Done())
	for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("cache for %v not synced", typ)
		}
	}
	return nil
}
