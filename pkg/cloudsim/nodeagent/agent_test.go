package nodeagent

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/bootstrap"
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

// The default bootstrap, a bash script, names its Node on a hostnamectl
// line and carries the kubelet flags inside a shell-quoted line.
func TestNodeNameAndKubeletFlagsOfDefaultTemplate(t *testing.T) {
	labels := map[string]string{"tgp.solanyn.com/spot": "true", "workload": "train", "example.com/empty": ""}
	taints := []tgpv1.NodeTaint{
		{Key: "nvidia.com/gpu", Value: "true", Effect: corev1.TaintEffectNoSchedule},
		{Key: "dedicated", Effect: corev1.TaintEffectNoExecute},
	}
	const name = "gpur-0f8fad5bd9cb469f-2"
	userData, err := bootstrap.Render(bootstrap.DefaultTemplate, bootstrap.Data{
		NodeName: name, Labels: labels, Taints: taints,
		KubeletLabels: bootstrap.KubeletLabels(labels), KubeletTaints: bootstrap.KubeletTaints(taints),
	}, bootstrap.Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if got := NodeName(cloudsim.Machine{Name: "fallback", UserData: userData}); got != name {
		t.Errorf("node name %q, want %q; user data:\n%s", got, name, userData)
	}
	gotLabels, gotTaints := kubeletFlags(userData)
	if diff := cmp.Diff(labels, gotLabels); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
	want := []corev1.Taint{
		{Key: "nvidia.com/gpu", Value: "true", Effect: corev1.TaintEffectNoSchedule},
		{Key: "dedicated", Effect: corev1.TaintEffectNoExecute},
	}
	if diff := cmp.Diff(want, gotTaints); diff != "" {
		t.Errorf("taints (-want +got):\n%s", diff)
	}
}

func TestNodeNameForms(t *testing.T) {
	for _, tc := range []struct{ userData, want string }{
		{"#cloud-config\nhostname: a-1\n", "a-1"},
		{"#cloud-config\nhostname: \"a-1\"\n", "a-1"},
		{"machine:\n  network:\n    hostname: 'a.b-1'\n", "a.b-1"},
		{"#!/bin/bash\nhostnamectl set-hostname 'a-1'\n", "a-1"},
		{"#!/bin/bash\nhostnamectl set-hostname \"a-1\"\n", "a-1"},
		{"#!/bin/bash\r\n  hostnamectl  set-hostname a-1\r\n", "a-1"},
		{"#!/bin/bash\nhostnamectl set-hostname 'b-2'\nhostnamectl set-hostname 'c-3'\n", "b-2"},
		// Not a name: a comment, mismatched quotes, another command, a
		// name that is not a DNS subdomain.
		{"#!/bin/bash\n# hostnamectl set-hostname a-1\n", "fallback"},
		{"#!/bin/bash\nhostnamectl set-hostname 'a-1\"\n", "fallback"},
		{"#!/bin/bash\nhostnamectl status a-1\n", "fallback"},
		{"#!/bin/bash\nhostnamectl set-hostname 'A_1'\n", "fallback"},
		{"#!/bin/bash\nhostnamectl set-hostname a-1; reboot\n", "fallback"},
	} {
		if got := NodeName(cloudsim.Machine{Name: "fallback", UserData: tc.userData}); got != tc.want {
			t.Errorf("%q: node name %q, want %q", tc.userData, got, tc.want)
		}
	}
}
