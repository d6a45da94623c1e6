package controller

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
)

// TrimForCache is an informer transform that keeps the caches small: it drops
// managedFields from every object (nil is left out of writes, so the server
// keeps its own); it keeps of a Pod only what idle detection and draining
// read (Pods are never written back), and of a Node's status only its
// conditions and the extended resources of its allocatable, those with a
// "/" in the name (nvidia.com/gpu, amd.com/gpu: the GPU readiness check
// reads the configured one, which this function cannot know; cpu, memory,
// pods and hugepages are left out). The operator updates Nodes through the
// main resource, whose writes never change status; images, capacity and
// addresses are the bulk of a real Node.
func TrimForCache(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	switch o := obj.(type) {
	case *corev1.Pod:
		o.Spec = corev1.PodSpec{NodeName: o.Spec.NodeName}
		o.Status = corev1.PodStatus{Phase: o.Status.Phase}
	case *corev1.Node:
		var alloc corev1.ResourceList
		for name, q := range o.Status.Allocatable {
			if strings.Contains(string(name), "/") {
				if alloc == nil {
					alloc = corev1.ResourceList{}
				}
				alloc[name] = q
			}
		}
		o.Status = corev1.NodeStatus{Conditions: o.Status.Conditions, Allocatable: alloc}
	}
	return obj, nil
}
