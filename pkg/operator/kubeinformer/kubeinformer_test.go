package kubeinformer

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
)

// TestNew: the informer lists and then watches (the fake clientset's
// watch-list opt-out reached it) through the client it was given, in that
// client's namespace and with the tweaked options; it caches transformed
// objects and has the namespace index.
func TestNew(t *testing.T) {
	kube := fake.NewClientset(
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: "creds"}, Data: map[string][]byte{"k": []byte("v")}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "elsewhere", Name: "creds"}},
	)
	selector := fields.OneTermEqualSelector("metadata.name", "creds").String()
	informer := New(kube, corev1.SchemeGroupVersion.WithResource("secrets"), kube.CoreV1().Secrets("ops"), &corev1.Secret{}, Options{
		TweakListOptions: func(o *metav1.ListOptions) { o.FieldSelector = selector },
		Transform: func(obj any) (any, error) {
			s := obj.(*corev1.Secret)
			s.Labels = map[string]string{"transformed": "yes"}
			return s, nil
		},
	})
	go informer.RunWithContext(t.Context())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if !cache.WaitFor(ctx, "", informer.HasSyncedChecker()) {
		t.Fatalf("informer did not sync within 10s; requests %v", kube.Actions())
	}

	// The watch follows the list that synced the cache.
	watching := func(context.Context) (bool, error) {
		for _, a := range kube.Actions() {
			if a.GetVerb() == "watch" {
				return true, nil
			}
		}
		return false, nil
	}
	if err := wait.PollUntilContextTimeout(ctx, 5*time.Millisecond, 10*time.Second, true, watching); err != nil {
		t.Fatalf("no watch within 10s; requests %v", kube.Actions())
	}
	var verbs []string
	for _, a := range kube.Actions() {
		if a.GetResource().Resource != "secrets" {
			continue
		}
		verbs = append(verbs, a.GetVerb())
		if a.GetNamespace() != "ops" {
			t.Errorf("%s in namespace %q, want ops", a.GetVerb(), a.GetNamespace())
		}
		var got string
		switch a := a.(type) {
		case k8stesting.ListAction:
			got = a.GetListRestrictions().Fields.String()
		case k8stesting.WatchAction:
			got = a.GetWatchRestrictions().Fields.String()
		}
		if got != selector {
			t.Errorf("%s with field selector %q, want %q", a.GetVerb(), got, selector)
		}
	}
	if len(verbs) < 2 || verbs[0] != "list" || verbs[1] != "watch" {
		t.Errorf("requests %v, want list then watch", verbs)
	}

	objs, err := informer.GetIndexer().ByIndex(cache.NamespaceIndex, "ops")
	if err != nil {
		t.Fatalf("namespace index: %v", err)
	}
	if len(objs) != 1 || objs[0].(*corev1.Secret).Labels["transformed"] != "yes" {
		t.Errorf("cached in ops: %+v, want the one Secret, transformed", objs)
	}
}
