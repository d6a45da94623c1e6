package operator

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	tgpfake "github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned/fake"
)

var managed = []metav1.ManagedFieldsEntry{{Manager: "kubelet", Operation: metav1.ManagedFieldsOperationUpdate}}

func poll(t *testing.T, what string, cond func(context.Context) bool) {
	t.Helper()
	err := wait.PollUntilContextTimeout(t.Context(), 10*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		return cond(ctx), nil
	})
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// newTGPClient is a fake GPURequest clientset. It is the simple one: the
// field-managed fake cannot patch custom resources
// (https://github.com/kubernetes/kubernetes/issues/126850), and the
// controller patches finalizers.
func newTGPClient(objs ...runtime.Object) *tgpfake.Clientset {
	return tgpfake.NewSimpleClientset(objs...)
}

func request(ns, name string) *tgpv1.GPURequest {
	return &tgpv1.GPURequest{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ManagedFields: managed},
		Spec: tgpv1.GPURequestSpec{GPUType: "H100"}}
}

// TestNewControllerTrimsCaches: every cache the controller reads holds
// objects trimmed by controller.TrimForCache, and Namespace limits the
// GPURequests.
func TestNewControllerTrimsCaches(t *testing.T) {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "n1", ManagedFields: managed},
		Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
			Images:     []corev1.ContainerImage{{Names: []string{"cuda:12"}, SizeBytes: 1 << 30}},
			Addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0.1"}},
		},
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "work", Name: "p1", ManagedFields: managed},
		Spec:       corev1.PodSpec{NodeName: "n1", Containers: []corev1.Container{{Name: "train", Image: "cuda:12"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.1.0.1"},
	}
	kube := kubefake.NewClientset(node, pod)
	client := newTGPClient(request("a", "r1"), request("b", "r2"))
	ctrl, inf, err := NewController(Options{KubeClient: kube, Client: client, Namespace: "a", Recorder: record.NewFakeRecorder(10)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer inf.Shutdown()
	defer cancel()
	inf.Start(ctx)
	if err := ctrl.WaitForCaches(ctx); err != nil {
		t.Fatal(err)
	}
	if !ctrl.Ready() {
		t.Error("not Ready after WaitForCaches")
	}

	gotNode, err := nodeInformer{inf.Nodes}.Lister().Get("n1")
	if err != nil {
		t.Fatal(err)
	}
	if gotNode.ManagedFields != nil || gotNode.Status.Images != nil || gotNode.Status.Addresses != nil || len(gotNode.Status.Conditions) != 1 {
		t.Errorf("cached Node not trimmed to its conditions: %+v", gotNode)
	}
	gotPod, err := podInformer{inf.Pods}.Lister().Pods("work").Get("p1")
	if err != nil {
		t.Fatal(err)
	}
	if gotPod.ManagedFields != nil || gotPod.Spec.Containers != nil || gotPod.Status.PodIP != "" ||
		gotPod.Spec.NodeName != "n1" || gotPod.Status.Phase != corev1.PodRunning {
		t.Errorf("cached Pod not trimmed to its node and phase: %+v", gotPod)
	}
	reqs, err := inf.TGP.Tgp().V1().GPURequests().Lister().List(labels.Everything())
	if err != nil {
		t.Fatal(err)
	}
	if len(reqs) != 1 || reqs[0].Namespace != "a" || reqs[0].ManagedFields != nil {
		t.Errorf("cached GPURequests %+v, want only a/r1, without managedFields", reqs)
	}
}

// startRun runs Run in the background on fake clients; the returned channel
// yields its result.
func startRun(ctx context.Context, t *testing.T, kube *kubefake.Clientset, client *tgpfake.Clientset, le *LeaderElection) <-chan error {
	t.Helper()
	ctrl, inf, err := NewController(Options{KubeClient: kube, Client: client, Recorder: record.NewFakeRecorder(100),
		Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- Run(ctx, ctrl, inf, 1, le) }()
	return done
}

func result(t *testing.T, done <-chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return within 20s")
		return nil
	}
}

func hasFinalizer(ctx context.Context, client *tgpfake.Clientset, ns, name string) bool {
	r, err := client.TgpV1().GPURequests(ns).Get(ctx, name, metav1.GetOptions{})
	return err == nil && slices.Contains(r.Finalizers, tgpv1.Finalizer)
}

func holder(ctx context.Context, kube *kubefake.Clientset) string {
	l, err := kube.CoordinationV1().Leases("ops").Get(ctx, "gpu-operator", metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

func election(kube *kubefake.Clientset) *LeaderElection {
	return &LeaderElection{Name: "gpu-operator", Namespace: "ops", Leases: kube.CoordinationV1(), Identity: "me",
		LeaseDuration: time.Second, RenewDeadline: 500 * time.Millisecond, RetryPeriod: 50 * time.Millisecond}
}

// TestRunWithoutElection: the controller syncs requests at once and Run
// returns nil when ctx ends.
func TestRunWithoutElection(t *testing.T) {
	kube, client := kubefake.NewClientset(), newTGPClient(request("a", "r1"))
	ctx, cancel := context.WithCancel(t.Context())
	done := startRun(ctx, t, kube, client, nil)
	poll(t, "the request gets the finalizer", func(ctx context.Context) bool { return hasFinalizer(ctx, client, "a", "r1") })
	cancel()
	if err := result(t, done); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

// TestRunLeaderElection: the controller takes the Lease, syncs, and
// releases the Lease when ctx ends.
func TestRunLeaderElection(t *testing.T) {
	kube, client := kubefake.NewClientset(), newTGPClient(request("a", "r1"))
	ctx, cancel := context.WithCancel(t.Context())
	done := startRun(ctx, t, kube, client, election(kube))
	poll(t, "the Lease is taken", func(ctx context.Context) bool { return holder(ctx, kube) == "me" })
	poll(t, "the leader syncs the request", func(ctx context.Context) bool { return hasFinalizer(ctx, client, "a", "r1") })
	cancel()
	if err := result(t, done); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if h := holder(context.Background(), kube); h != "" {
		t.Errorf("Lease held by %q after shutdown, want released", h)
	}
}

// TestRunLeadershipLost: when the API server refuses every Lease write, the
// leader cannot renew and Run returns ErrLeadershipLost while ctx is still
// live (and does not hang on the informers, which it stops itself).
func TestRunLeadershipLost(t *testing.T) {
	kube, client := kubefake.NewClientset(), newTGPClient()
	var refuse atomic.Bool
	kube.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
		if refuse.Load() {
			return true, nil, apierrors.NewInternalError(errors.New("etcd is gone"))
		}
		return false, nil, nil
	})
	done := startRun(t.Context(), t, kube, client, election(kube))
	poll(t, "the Lease is taken", func(ctx context.Context) bool { return holder(ctx, kube) == "me" })
	refuse.Store(true)
	if err := result(t, done); !errors.Is(err, ErrLeadershipLost) {
		t.Errorf("Run = %v, want ErrLeadershipLost", err)
	}
}

func TestRunInvalidElection(t *testing.T) {
	kube := kubefake.NewClientset()
	le := election(kube)
	le.RenewDeadline = 2 * le.LeaseDuration
	if err := result(t, startRun(t.Context(), t, kube, newTGPClient(), le)); err == nil || errors.Is(err, ErrLeadershipLost) {
		t.Errorf("Run = %v, want the election's configuration error", err)
	}
}

func TestMetricsHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "test_total", Help: "A test counter."}))
	var ready atomic.Bool
	get := func(h http.Handler, path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	h := MetricsHandler(reg, ready.Load, false)
	for _, tt := range []struct {
		path  string
		ready bool
		code  int
		body  string
	}{
		{"/healthz", false, http.StatusOK, "ok"},
		{"/readyz", false, http.StatusServiceUnavailable, "caches not synced"},
		{"/readyz", true, http.StatusOK, "ok"},
		{"/metrics", true, http.StatusOK, "test_total 0"},
		{"/debug/pprof/", true, http.StatusNotFound, ""},
	} {
		ready.Store(tt.ready)
		if code, body := get(h, tt.path); code != tt.code || !strings.Contains(body, tt.body) {
			t.Errorf("GET %s (ready %v): %d %q, want %d with %q", tt.path, tt.ready, code, body, tt.code, tt.body)
		}
	}
	if code, body := get(MetricsHandler(reg, ready.Load, true), "/debug/pprof/"); code != http.StatusOK || !strings.Contains(body, "goroutine") {
		t.Errorf("GET /debug/pprof/ with pprof: %d", code)
	}
}

func TestServe(t *testing.T) {
	srv, err := Serve(t.Context(), "127.0.0.1:0", MetricsHandler(prometheus.NewRegistry(), func() bool { return true }, false))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + srv.Addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || string(body) != "ok\n" {
		t.Errorf("GET /healthz: %d %q", resp.StatusCode, body)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + srv.Addr + "/healthz"); err == nil {
		t.Error("still serving after Close")
	}
	if _, err := Serve(t.Context(), srv.Addr+"x", nil); err == nil {
		t.Error("Serve on a bad address succeeded")
	}
}

// TestNewRecorder: Events about GPURequests reach the API through the
// client given for them.
func TestNewRecorder(t *testing.T) {
	events := kubefake.NewClientset()
	recorder, stop := NewRecorder(t.Context(), events.CoreV1(), "gpu-operator")
	defer stop()
	recorder.Event(request("a", "r1"), corev1.EventTypeNormal, "Launched", "launched")
	poll(t, "the Event is written", func(ctx context.Context) bool {
		l, err := events.CoreV1().Events("a").List(ctx, metav1.ListOptions{})
		return err == nil && len(l.Items) == 1 && l.Items[0].Reason == "Launched" &&
			l.Items[0].InvolvedObject.Kind == "GPURequest" && l.Items[0].Source.Component == "gpu-operator"
	})
}
