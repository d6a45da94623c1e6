package bootstrap

import (
	"fmt"
	"regexp"
	"sort"
	"strings"

	kubeletapis "k8s.io/kubelet/pkg/apis"
)

// nodeLabelFlagRE finds the labels a kubelet is started with in user
// data: kubelet's --node-labels (one comma-separated list, as kubeadm's
// KUBELET_EXTRA_ARGS carries it) and k3s's --node-label (one label, may
// repeat), each with "=" or a space before its value.
var nodeLabelFlagRE = regexp.MustCompile(`--node-labels?[= ]([^\s"'\\]+)`)

// wellKnownNamespaces are the label namespaces a refusal may name, most
// specific first: fixed strings, so no part of the user data (which may
// hold .Values) is echoed. The last two are the namespaces the kubelet
// checks: every key it may refuse falls under one of these.
var wellKnownNamespaces = []string{"node-role.kubernetes.io", "node-restriction.kubernetes.io", "kubernetes.io", "k8s.io"}

// RefusedKubeletLabels reports the Node labels in userData's kubelet flags
// that a kubelet may not set on its own Node: keys under kubernetes.io/ or
// k8s.io/ (and their subdomains) other than the kubelet's own (hostname,
// os, arch, instance type, topology, and the kubelet.kubernetes.io/ and
// node.kubernetes.io/ namespaces). The kubelet refuses to start with one
// ("unknown 'kubernetes.io' or 'k8s.io' labels specified with
// --node-labels") and the NodeRestriction admission plugin refuses a Node
// that a node's credentials create with one, so such a machine never
// joins. The error names only well-known namespaces, never text of the
// user data; nil when every label is one a kubelet may set.
func RefusedKubeletLabels(userData string) error {
	refused := map[string]bool{}
	n := 0
	for _, m := range nodeLabelFlagRE.FindAllStringSubmatch(userData, -1) {
		for _, item := range strings.Split(m[1], ",") {
			key, _, _ := strings.Cut(item, "=")
			known, ok := wellKnownNamespace(key)
			if !ok || kubeletapis.IsKubeletLabel(key) {
				continue // not a kubernetes.io or k8s.io key, or one of the kubelet's own
			}
			n++
			refused[known+"/"] = true
		}
	}
	if n == 0 {
		return nil
	}
	names := make([]string, 0, len(refused))
	for ns := range refused {
		names = append(names, ns)
	}
	sort.Strings(names)
	return fmt.Errorf("the user data starts the kubelet with %d Node label(s) under %s, which a kubelet may not set on its own Node "+
		"(the kubelet refuses them and the NodeRestriction admission plugin forbids them): the machine could never join; "+
		"remove them from the template and have an administrator label the Node after it joins",
		n, strings.Join(names, " and "))
}

// wellKnownNamespace is the first of wellKnownNamespaces that key's
// namespace is or is a subdomain of.
func wellKnownNamespace(key string) (string, bool) {
	ns, _, ok := strings.Cut(key, "/")
	if !ok {
		return "", false
	}
	for _, known := range wellKnownNamespaces {
		if ns == known || strings.HasSuffix(ns, "."+known) {
			return known, true
		}
	}
	return "", false
}
