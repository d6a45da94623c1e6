package bootstrap

import (
	"errors"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
)

// testData is a machine's data with n labels and two taints.
func testData(n int) Data {
	labels := make(map[string]string, n)
	for i := range n {
		labels[fmt.Sprintf("example.com/l%02d", i)] = fmt.Sprintf("v%02d", i)
	}
	taints := []tgpv1.NodeTaint{
		{Key: "nvidia.com/gpu", Value: "true", Effect: corev1.TaintEffectNoSchedule},
		{Key: "example.com/dedicated", Effect: corev1.TaintEffectNoExecute},
	}
	return Data{
		NodeName: "tgp-6f1c-1", RequestName: "train", RequestNamespace: "team-a",
		Provider: "lambda", Region: "us-east-1",
		Labels: labels, Taints: taints,
		KubeletLabels: KubeletLabels(labels), KubeletTaints: KubeletTaints(taints),
	}
}

// classOf is the class of a Render error, "" for nil; it fails the test
// for an error that is not an *Error.
func classOf(t *testing.T, err error) string {
	t.Helper()
	if err == nil {
		return ""
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T is not an *Error: %v", err, err)
	}
	return e.Class
}

func lineOf2(t *testing.T, err error) int {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %T is not an *Error: %v", err, err)
	}
	return e.Line
}
