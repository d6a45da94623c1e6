package nodeagent

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
)

func TestNodeNameAndKubeletFlags(t *testing.T) {
	userData := `#cloud-config
hostname: gpur-0f8fad5bd9cb469f-2
write_files:
  - path: /etc/default/kubelet
    content: |
      KUBELET_EXTRA_ARGS="--node-labels=tgp.solanyn.com/spot=true,workload=train --register-with-taints=nvidia.com/gpu=true:NoSchedule"
`
	if got := NodeName(cloudsim.Machine{Name: "fallback", UserData: userData}); got != "gpur-0f8fad5bd9cb469f-2" {
		t.Errorf("node name %q", got)
	}
	if got := NodeName(cloudsim.Machine{Name: "fallback"}); got != "fallback" {
		t.Errorf("node name without user data %q, want the machine name", got)
	}
	labels, taints := kubeletFlags(userData)
	if diff := cmp.Diff(map[string]string{"tgp.solanyn.com/spot": "true", "workload": "train"}, labels); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]corev1.Taint{{Key: "nvidia.com/gpu", Value: "true", Effect: corev1.TaintEffectNoSchedule}}, taints); diff != "" {
		t.Errorf("taints (-want +got):\n%s", diff)
	}
}
