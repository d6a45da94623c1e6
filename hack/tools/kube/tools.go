//go:build tools

// Package tools pins kube-apiserver, kube-controller-manager and kubectl for the test and demo control plane.
package tools

import (
	_ "k8s.io/kubectl/pkg/cmd"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
)
