package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/bootstrap"
)

// Labels the operator puts on every Node it provisions.
const (
	// LabelRequestUID is the proof of ownership: the operator acts on a Node
	// only when it carries the request's UID here (or a providerID of the
	// request's instance). Admission keeps tenants out of tgp.solanyn.com/.
	LabelRequestUID = "tgp.solanyn.com/request-uid"
	// LabelRequest is the request's name, set only when the name is a valid
	// label value (names may be up to 253 characters, label values 63).
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
	nodesByRequestUID = "requestUID"
)

func indexNodeByRequestUID(obj any) ([]string, error) {
	if uid := obj.(*corev1.Node).Labels[LabelRequestUID]; uid != "" {
		return []string{uid}, nil
	}
	return nil, nil
}

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

// nodeLabels are the spec's valid, unreserved nodeLabels plus the operator's own.
func nodeLabels(req *tgpv1.GPURequest, provider, region string, spot bool) map[string]string {
	l := make(map[string]string, len(req.Spec.NodeLabels)+7)
	for k, v := range req.Spec.NodeLabels {
		// Admission refuses these; an object stored before the rules must
		// still never put a reserved or malformed label on a Node.
		if tgpv1.IsReservedLabelKey(k) || len(validation.IsQualifiedName(k)) > 0 || len(validation.IsValidLabelValue(v)) > 0 {
			continue
		}
		l[k] = v
	}
	l[LabelRequestUID] = string(req.UID)
	if len(validation.IsValidLabelValue(req.Name)) == 0 {
		l[LabelRequest] = req.Name
	}
	l[LabelRequestNamespace] = req.Namespace
	l[LabelProvider] = provider
	l[LabelRegion] = region
	l[LabelGPUType] = req.Spec.GPUType
	l[LabelSpot] = fmt.Sprint(spot)
	return l
}

// findNode finds the Node of the request's current machine: by the name
// it was rendered with, by the name recorded in status, or by the providerID
// <provider>://<instance id> of the instance the provider lists under the
// machine name. A Node is returned only when it provably belongs to the
// request (ownsNode), whatever status says.
func (c *Controller) findNode(req *tgpv1.GPURequest) *corev1.Node {
	machine := currentMachine(req)
	if machine == "" {
		return nil
	}
	for _, name := range []string{machine, req.Status.NodeName} {
		if name == "" {
			continue
		}
		if n, err := c.nodes.Get(name); err == nil && c.ownsNode(req, n) {
			return n
		}
	}
	inst, found, _ := c.inventory.Lookup(req.Status.Provider, machine)
	if !found {
		return nil
	}
	objs, _ := c.nodeIdx.ByIndex(nodesByProviderID, req.Status.Provider+"://"+inst.ID)
	for _, o := range objs {
		if n := o.(*corev1.Node); c.ownsNode(req, n) {
			return n
		}
	}
	return nil
}

// ownedNodes are every Node that provably belongs to one of the request's
// machines: the current one, and any left by earlier attempts.
func (c *Controller) ownedNodes(req *tgpv1.GPURequest) []*corev1.Node {
	var out []*corev1.Node
	seen := map[string]bool{}
	add := func(n *corev1.Node) {
		if n != nil && !seen[n.Name] && c.ownsNode(req, n) {
			seen[n.Name] = true
			out = append(out, n)
		}
	}
	if objs, err := c.nodeIdx.ByIndex(nodesByRequestUID, string(req.UID)); err == nil {
		for _, o := range objs {
			add(o.(*corev1.Node))
		}
	}
	for _, in := range c.inventory.ForRequest(machinePrefix(req.UID)) {
		if n, err := c.nodes.Get(in.Name); err == nil {
			add(n)
		}
		if objs, err := c.nodeIdx.ByIndex(nodesByProviderID, in.Provider+"://"+in.ID); err == nil {
			for _, o := range objs {
				add(o.(*corev1.Node))
			}
		}
	}
	return out
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

// Annotations on a provisioned Node recording which of the spec's labels
// and taints the operator applied, so an edit that drops one from the spec
// drops it from the Node too (and nothing else is ever removed).
const (
	AnnotationAppliedLabels = "tgp.solanyn.com/applied-labels"
	AnnotationAppliedTaints = "tgp.solanyn.com/applied-taints"
)

// labelNode brings the Node's labels and taints to the request's: the
// operator's labels, spec.nodeLabels and spec.nodeTaints, applied when the
// Node first becomes Ready and again after every edit. It sends one merge
// patch guarded by the Node's resourceVersion (the taint list is replaced
// as a whole), and nothing when the Node is already up to date.
func (c *Controller) labelNode(ctx context.Context, req *tgpv1.GPURequest, node *corev1.Node) error {
	want := nodeLabels(req, req.Status.Provider, req.Status.Region, req.Status.Spot)
	labels := map[string]any{}
	for k, v := range want {
		if cur, ok := node.Labels[k]; !ok || cur != v {
			labels[k] = v
		}
	}
	for _, k := range splitApplied(node.Annotations[AnnotationAppliedLabels]) {
		if _, keep := want[k]; !keep {
			if _, ok := node.Labels[k]; ok {
				labels[k] = nil
			}
		}
	}
	applied := make([]string, 0, len(req.Spec.NodeLabels))
	for k := range req.Spec.NodeLabels {
		applied = append(applied, k)
	}
	sort.Strings(applied)

	wantTaints := make([]corev1.Taint, 0, len(req.Spec.NodeTaints))
	for _, t := range req.Spec.NodeTaints {
		wantTaints = append(wantTaints, corev1.Taint{Key: t.Key, Value: t.Value, Effect: t.Effect})
	}
	dropped := map[string]bool{}
	for _, t := range splitApplied(node.Annotations[AnnotationAppliedTaints]) {
		dropped[t] = true
	}
	for _, t := range wantTaints {
		delete(dropped, taintString(t))
	}
	taints := make([]corev1.Taint, 0, len(node.Spec.Taints)+len(wantTaints))
	taintsChanged := false
	for _, t := range node.Spec.Taints {
		if dropped[taintString(t)] {
			taintsChanged = true
			continue
		}
		taints = append(taints, t)
	}
	for _, t := range wantTaints {
		if !hasTaint(taints, t) {
			taints, taintsChanged = append(taints, t), true
		}
	}
	annotations := map[string]any{}
	if v := strings.Join(applied, ","); node.Annotations[AnnotationAppliedLabels] != v {
		annotations[AnnotationAppliedLabels] = v
	}
	if v := bootstrap.KubeletTaints(req.Spec.NodeTaints); node.Annotations[AnnotationAppliedTaints] != v {
		annotations[AnnotationAppliedTaints] = v
	}
	if len(labels) == 0 && len(annotations) == 0 && !taintsChanged {
		return nil
	}
	patch := map[string]any{"metadata": map[string]any{
		"resourceVersion": node.ResourceVersion, "labels": labels, "annotations": annotations,
	}}
	if taintsChanged {
		patch["spec"] = map[string]any{"taints": taints}
	}
	data, err := json.Marshal(patch)
	if err != nil {
		return err
	}
	_, err = c.kube.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType, data, metav1.PatchOptions{FieldManager: FieldManager})
	return err
}

func splitApplied(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

func taintString(t corev1.Taint) string { return t.Key + "=" + t.Value + ":" + string(t.Effect) }

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

// deleteNode removes a Node that ownership proved is the request's; the
// UID precondition makes sure it is that very Node, not one registered under
// the same name since. A missing one is fine.
func (c *Controller) deleteNode(ctx context.Context, n *corev1.Node) error {
	uid := n.UID
	opts := metav1.DeleteOptions{}
	if uid != "" {
		opts.Preconditions = &metav1.Preconditions{UID: &uid}
	}
	err := c.kube.CoreV1().Nodes().Delete(ctx, n.Name, opts)
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}
