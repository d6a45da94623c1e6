package controller

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/selector"
)

// Labels the operator puts on every Node it provisions.
const (
	LabelRequest          = "tgp.solanyn.com/request"
	LabelRequestNamespace = "tgp.solanyn.com/request-namespace"
	LabelProvider         = "tgp.solanyn.com/provider"
	LabelRegion           = "tgp.solanyn.com/region"
	LabelGPUType          = "tgp.solanyn.com/gpu-type"
	LabelSpot             = "tgp.solanyn.com/spot"
)

const (
	podsByNode        = "spec.nodeName"
	nodesByProviderID = "spec.providerID"
)

func indexNodeByProviderID(obj any) ([]string, error) {
	n := obj.(*corev1.Node)
	if n.Spec.ProviderID == "" {
		return nil, nil
	}
	return []string{n.Spec.ProviderID}, nil
}

func indexPodByNode(obj any) ([]string, error) {
	p := obj.(*corev1.Pod)
	if p.Spec.NodeName == "" {
		return nil, nil
	}
	return []string{p.Spec.NodeName}, nil
}

// nodeLabels are the spec's nodeLabels plus the operator's own.
func nodeLabels(req *tgpv1.GPURequest, provider, region string, spot bool) map[string]string {
	l := make(map[string]string, len(req.Spec.NodeLabels)+6)
	for k, v := range req.Spec.NodeLabels {
		l[k] = v
	}
	l[LabelRequest] = req.Name
	l[LabelRequestNamespace] = req.Namespace
	l[LabelProvider] = provider
	l[LabelRegion] = region
	l[LabelGPUType] = req.Spec.GPUType
	l[LabelSpot] = fmt.Sprint(spot)
	return l
}

// findNode finds the request's Node by the name it was rendered with, or by
// the providerID <provider>://<instance id>.
func (c *Controller) findNode(req *tgpv1.GPURequest) *corev1.Node {
	st := &req.Status
	for _, name := range []string{st.NodeName, st.MachineName} {
		if name == "" {
			continue
		}
		if n, err := c.nodes.Get(name); err == nil {
			return n
		}
	}
	if st.InstanceID == "" {
		return nil
	}
	objs, _ := c.nodeIdx.ByIndex(nodesByProviderID, st.Provider+"://"+st.InstanceID)
	if len(objs) == 0 {
		return nil
	}
	return objs[0].(*corev1.Node)
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// readySince is when the Node's Ready condition last changed.
func readySince(n *corev1.Node) time.Time {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.LastTransitionTime.Time
		}
	}
	return n.CreationTimestamp.Time
}

// labelNode applies the request's labels and taints to its Node.
func (c *Controller) labelNode(ctx context.Context, req *tgpv1.GPURequest, node *corev1.Node) error {
	want := nodeLabels(req, req.Status.Provider, req.Status.Region, req.Status.Spot)
	n := node.DeepCopy()
	changed := false
	if n.Labels == nil {
		n.Labels = map[string]string{}
	}
	for k, v := range want {
		if n.Labels[k] != v {
			n.Labels[k], changed = v, true
		}
	}
	for _, t := range req.Spec.NodeTaints {
		if t := (corev1.Taint{Key: t.Key, Value: t.Value, Effect: t.Effect}); !hasTaint(n.Spec.Taints, t) {
			n.Spec.Taints, changed = append(n.Spec.Taints, t), true
		}
	}
	if !changed {
		return nil
	}
	_, err := c.kube.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{})
	return err
}

func hasTaint(ts []corev1.Taint, t corev1.Taint) bool {
	for _, x := range ts {
		if x.Key == t.Key && x.Effect == t.Effect && x.Value == t.Value {
			return true
		}
	}
	return false
}

// workloadPods are the pods on a node that keep it busy and are drained:
// not DaemonSet pods, not mirror pods, not finished.
func (c *Controller) workloadPods(node string) []*corev1.Pod {
	objs, _ := c.pods.ByIndex(podsByNode, node)
	var out []*corev1.Pod
	for _, o := range objs {
		p := o.(*corev1.Pod)
		if podFinished(p) || isDaemonSetPod(p) || isMirrorPod(p) {
			continue
		}
		out = append(out, p)
	}
	return out
}

func (c *Controller) nodeBusy(node string) bool { return len(c.workloadPods(node)) > 0 }

func podFinished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

func isDaemonSetPod(p *corev1.Pod) bool {
	for _, o := range p.OwnerReferences {
		if o.Kind == "DaemonSet" && o.Controller != nil && *o.Controller {
			return true
		}
	}
	return false
}

func isMirrorPod(p *corev1.Pod) bool {
	_, ok := p.Annotations[corev1.MirrorPodAnnotationKey]
	return ok
}

// deleteNode removes a Node; a missing one is fine.
func (c *Controller) deleteNode(ctx context.Context, name string) error {
	if name == "" {
		return nil
	}
	err := c.kube.CoreV1().Nodes().Delete(ctx, name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// providerBlocked and blockProvider keep a provider whose credentials failed
// out of selection until the block expires (or its Secret changes).
func (c *Controller) blockProvider(provider string, d time.Duration) {
	c.blockMu.Lock()
	defer c.blockMu.Unlock()
	if c.blocked == nil {
		c.blocked = map[string]time.Time{}
	}
	c.blocked[provider] = c.clock.Now().Add(d)
}

// unavailableNow is what selection passes over right now: the offerings that
// recently failed to launch and the providers blocked for their credentials.
func (c *Controller) unavailableNow() selector.Unavailable {
	u := selector.Unavailable{Offerings: c.unavailable.Keys()}
	now := c.clock.Now()
	c.blockMu.Lock()
	defer c.blockMu.Unlock()
	for provider, until := range c.blocked {
		if now.Before(until) {
			u.Providers = append(u.Providers, provider)
		}
	}
	return u
}

func (c *Controller) isUnavailable(key providers.OfferingKey) bool {
	c.blockMu.Lock()
	until, ok := c.blocked[key.Provider]
	c.blockMu.Unlock()
	if ok && c.clock.Now().Before(until) {
		return true
	}
	return c.unavailable.IsUnavailable(key)
}

// UnblockProviders lifts authentication blocks when credentials change, and
// wakes the requests that were waiting for an offer.
func (c *Controller) UnblockProviders() {
	c.blockMu.Lock()
	c.blocked = nil
	c.blockMu.Unlock()
	c.enqueuePending()
}
