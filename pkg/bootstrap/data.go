package bootstrap

import (
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
)

// Data is what a bootstrap template sees. The field names are the
// template's API: users' templates read .NodeName, .Labels, .Taints,
// .KubeletLabels and so on. Data has no methods, so a template can call
// none.
type Data struct {
	NodeName         string
	RequestName      string
	RequestNamespace string
	Provider         string
	Region           string
	// Labels are the joined Node's labels (the request's and the
	// operator's); Taints the request's taints. A template may range over
	// these two only.
	Labels map[string]string
	Taints []tgpv1.NodeTaint
	// KubeletLabels and KubeletTaints are Labels and Taints in the form of
	// kubelet's --node-labels and --register-with-taints flags, so the Node
	// registers already labelled and tainted (no workload lands on it first).
	KubeletLabels string
	KubeletTaints string
	// Values are the keys of the request's spec.bootstrap.valuesFrom Secret
	// (a Tailscale auth key, a k3s join token), read as .Values.<key>; a key
	// the Secret lacks is an error. A template may not range over them.
	// Nothing of them appears in an error.
	Values map[string]string
	// JoinToken is the machine's own kubeadm bootstrap token
	// ("<id>.<secret>", --mint-join-tokens; empty otherwise), with the
	// APIServerURL machines reach, the CA's public-key hash for kubeadm's
	// --discovery-token-ca-cert-hash ("sha256:...") and the CA bundle,
	// base64 (a kubeconfig's certificate-authority-data).
	JoinToken    string
	APIServerURL string
	CACertHash   string
	CACertData   string
}

// NewData is the data for the machine nodeName of req, launched on an
// offer of provider in region; labels are the Node's labels.
func NewData(req *tgpv1.GPURequest, nodeName, provider, region string, labels map[string]string) Data {
	return Data{
		NodeName:         nodeName,
		RequestName:      req.Name,
		RequestNamespace: req.Namespace,
		Provider:         provider,
		Region:           region,
		Labels:           labels,
		Taints:           req.Spec.NodeTaints,
		KubeletLabels:    KubeletLabels(labels),
		KubeletTaints:    KubeletTaints(req.Spec.NodeTaints),
	}
}

// KubeletLabels writes labels as kubelet's --node-labels value:
// "k1=v1,k2=v2", sorted by key. A label whose key is not a qualified name
// or whose value is not a label value is left out: the flag has no
// escaping, so a "," or "=" in it would add a label, and a space a kubelet
// flag. Admission refuses such labels; this is the second line.
func KubeletLabels(labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k, v := range labels {
		if validLabel(k, v) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var b strings.Builder
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(labels[k])
	}
	return b.String()
}

// KubeletTaints writes taints as kubelet's --register-with-taints value:
// "key=value:Effect,...", in the request's order. A taint with a key that
// is not a qualified name, a value that is not a label value or an
// unknown effect is left out, as in KubeletLabels.
func KubeletTaints(taints []tgpv1.NodeTaint) string {
	var b strings.Builder
	n := 0
	for _, t := range taints {
		if !validLabel(t.Key, t.Value) || !validEffect(t.Effect) {
			continue
		}
		if n++; n > 1 {
			b.WriteByte(',')
		}
		b.WriteString(t.Key)
		b.WriteByte('=')
		b.WriteString(t.Value)
		b.WriteByte(':')
		b.WriteString(string(t.Effect))
	}
	return b.String()
}

func validLabel(k, v string) bool {
	return len(validation.IsQualifiedName(k)) == 0 && len(validation.IsValidLabelValue(v)) == 0
}

func validEffect(e corev1.TaintEffect) bool {
	switch e {
	case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		return true
	}
	return false
}

// DefaultTemplate is rendered when a request names no bootstrap Secret. It
// is a bash script, the one format every VM provider runs at first boot
// (Paperspace runs a startup script; cloud-init, on Lambda, runs user data
// starting with "#!" as a script). It names the host, writes the kubelet
// flags to the defaults file that the kubelet unit of a pre-baked image
// reads (/etc/default/kubelet, or $TGP_KUBELET_DEFAULTS when set, which is
// how the tests run it), and restarts that kubelet, if the image has one,
// so it registers under the new name with the labels and taints. With a
// minted token (--mint-join-tokens) it also writes the kubelet's bootstrap
// kubeconfig where kubeadm's kubelet unit reads it
// (/etc/kubernetes/bootstrap-kubelet.conf, or $TGP_BOOTSTRAP_KUBECONFIG),
// so that kubelet joins by TLS bootstrap with this machine's own token.
//
// Every value is written with shell, one single-quoted word, so no value
// can end its word and run a command. The defaults line is single-quoted
// again, as systemd's EnvironmentFile reads it; KubeletLabels and
// KubeletTaints hold only valid labels and taints, which have no quote,
// space or comma of their own, so no value can end that quote or add a
// kubelet label or flag.
const DefaultTemplate = `#!/bin/bash
# Written by the gpu-operator for one machine: names the host and hands
# the Node's labels and taints to the kubelet of a pre-baked image.
set -eu

hostnamectl set-hostname {{ shell .NodeName }}

# The kubelet unit reads this file (systemd EnvironmentFile).
defaults="${TGP_KUBELET_DEFAULTS:-/etc/default/kubelet}"
printf '%s\n' {{ printf "KUBELET_EXTRA_ARGS='--node-labels=%s --register-with-taints=%s'" .KubeletLabels .KubeletTaints | shell }} >"$defaults"
{{- if .JoinToken }}

# The kubelet's bootstrap kubeconfig: with this machine's own token the
# kubelet asks the cluster for its client certificate (TLS bootstrap).
kubeconfig="${TGP_BOOTSTRAP_KUBECONFIG:-/etc/kubernetes/bootstrap-kubelet.conf}"
[ -d "${kubeconfig%/*}" ] || mkdir -p "${kubeconfig%/*}"
umask 077
printf '%s\n' 'apiVersion: v1' 'kind: Config' 'clusters:' '- name: cluster' '  cluster:' \
	{{ printf "    server: %s" .APIServerURL | shell }} \
	{{ printf "    certificate-authority-data: %s" .CACertData | shell }} \
	'users:' '- name: kubelet-bootstrap' '  user:' {{ printf "    token: %s" .JoinToken | shell }} \
	'contexts:' '- name: bootstrap' '  context: {cluster: cluster, user: kubelet-bootstrap}' \
	'current-context: bootstrap' >"$kubeconfig"
umask 022
{{- end }}

# A kubelet started before this script read neither the hostname nor the
# flags: restart it. An image without a kubelet.service unit (its kubelet
# starts some other way) is not an error; a kubelet unit that cannot be
# restarted is. --no-block: a kubelet unit ordered after the boot stage
# running this script (cloud-final, say) would otherwise wait for the
# script while the script waits for it, and boot would hang.
if systemctl cat kubelet.service >/dev/null 2>&1; then
	systemctl --no-block restart kubelet.service
else
	echo "no kubelet.service unit: not restarting a kubelet" >&2
fi
`
