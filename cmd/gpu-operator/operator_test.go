package main

import (
	"bufio"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	"github.com/solanyn/gpu-operator/pkg/generated/clientset/versioned"
	"github.com/solanyn/gpu-operator/pkg/testenv"
)

// buildOperator compiles this command into a temporary directory.
func buildOperator(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "gpu-operator")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

func kubectl(t *testing.T, env *testenv.Env, args ...string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(env.Root, "bin", "kubectl"), append([]string{"--kubeconfig", env.Kubeconfig}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestManifestsApplyAndRBACHasNoWildcard(t *testing.T) {
	env := testenv.StartT(t)
	kubectl(t, env, "apply", "-f", filepath.Join(env.Root, "manifests"))
	kube := kubernetes.NewForConfigOrDie(env.Config)
	ctx := t.Context()
	cr, err := kube.RbacV1().ClusterRoles().Get(ctx, "gpu-operator", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	role, err := kube.RbacV1().Roles("gpu-operator").Get(ctx, "gpu-operator", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, rule := range append(cr.Rules, role.Rules...) {
		for _, v := range [][]string{rule.Verbs, rule.Resources, rule.APIGroups, rule.ResourceNames} {
			for _, s := range v {
				if strings.Contains(s, "*") {
					t.Errorf("RBAC rule %+v has a wildcard", rule)
				}
			}
		}
	}
	dep, err := kube.AppsV1().Deployments("gpu-operator").Get(ctx, "gpu-operator", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *dep.Spec.Replicas != 2 {
		t.Errorf("replicas %d, want 2", *dep.Spec.Replicas)
	}
	pod := dep.Spec.Template.Spec
	c := pod.Containers[0]
	sc := c.SecurityContext
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot ||
		sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("pod must run non-root with a read-only root filesystem and no privilege escalation: %+v %+v", pod.SecurityContext, sc)
	}
	if c.LivenessProbe == nil || c.ReadinessProbe == nil || c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
		t.Errorf("container needs probes, requests and limits: %+v", c)
	}
	if !strings.Contains(strings.Join(c.Args, " "), "--leader-elect=true") {
		t.Errorf("leader election is not on: %v", c.Args)
	}
}

func TestOperatorBinary(t *testing.T) {
	env := testenv.StartT(t)
	bin := buildOperator(t)
	kubectl(t, env, "apply", "-f", filepath.Join(env.Root, "manifests", "00-namespace.yaml"))
	sims, err := stack.Start(stack.Config{RunPod: &cloudsim.Config{APIKey: "k", Catalog: []cloudsim.CatalogEntry{
		{InstanceType: "NVIDIA GeForce RTX 4090", GPUs: 8, Region: "US-CA-2", OnDemandPrice: 0.44, Capacity: -1},
	}}}, clock.RealClock{})
	if err != nil {
		t.Fatal(err)
	}
	defer sims.Close()

	metricsAddr, err := testenv.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--kubeconfig", env.Kubeconfig, "--namespace", "gpu-operator",
		"--metrics-addr", metricsAddr, "--lease-duration", "4s", "--renew-deadline", "3s", "--retry-period", "500ms",
		"--providers", "runpod", "--runpod-api-url", sims.URL("runpod"),
		"--poll-interval", "500ms", "-v", "2")
	cmd.Env = append(os.Environ(), "RUNPOD_API_KEY=k")
	logs := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("operator logs:\n%s", logs.String())
		}
	}()

	ctx := t.Context()
	kube := kubernetes.NewForConfigOrDie(env.Config)
	client := versioned.NewForConfigOrDie(env.Config)
	poll := func(what string, timeout time.Duration, cond func(context.Context) (bool, error)) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, cond); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	poll("the operator takes the Lease", 30*time.Second, func(ctx context.Context) (bool, error) {
		l, err := kube.CoordinationV1().Leases("gpu-operator").Get(ctx, "gpu-operator", metav1.GetOptions{})
		return err == nil && l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "", nil
	})

	// A request no catalog can meet stays Pending, with the finalizer,
	// observedGeneration and conditions set and an Event recorded.
	req := &tgpv1.GPURequest{ObjectMeta: metav1.ObjectMeta{Name: "first", Namespace: "default"},
		Spec: tgpv1.GPURequestSpec{GPUType: "B200", GPUCount: 8}}
	if _, err := client.TgpV1().GPURequests("default").Create(ctx, req, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll("finalizer, Pending and observedGeneration", 30*time.Second, func(ctx context.Context) (bool, error) {
		got, err := client.TgpV1().GPURequests("default").Get(ctx, "first", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		return len(got.Finalizers) == 1 && got.Finalizers[0] == tgpv1.Finalizer &&
			got.Status.Phase == tgpv1.PhasePending && got.Status.ObservedGeneration == got.Generation &&
			meta.IsStatusConditionFalse(got.Status.Conditions, tgpv1.ConditionOffersAvailable) &&
			meta.FindStatusCondition(got.Status.Conditions, tgpv1.ConditionReady) != nil, nil
	})
	poll("an Event for the request", 30*time.Second, func(ctx context.Context) (bool, error) {
		evs, err := kube.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=first"})
		return err == nil && len(evs.Items) > 0, nil
	})

	// Health, readiness and the named queue's workqueue metrics.
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + metricsAddr + path)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %v %v", path, err, resp)
		}
		resp.Body.Close()
	}
	metrics := scrape(t, "http://"+metricsAddr+"/metrics")
	for _, want := range []string{`workqueue_adds_total{name="gpurequests"}`, `workqueue_depth{name="gpurequests"}`, `gpu_operator_requests{phase="Pending"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}

	// Deleting the request (no instance yet) releases the finalizer.
	if err := client.TgpV1().GPURequests("default").Delete(ctx, "first", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	poll("the deleted request goes away", 30*time.Second, func(ctx context.Context) (bool, error) {
		_, err := client.TgpV1().GPURequests("default").Get(ctx, "first", metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})

	// SIGTERM: release the Lease and exit 0 within a few seconds.
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("operator exited with %v after SIGTERM, want 0", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("operator still running 10s after SIGTERM")
	}
	t.Logf("exited %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	l, err := kube.CoordinationV1().Leases("gpu-operator").Get(ctx, "gpu-operator", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity != "" {
		t.Errorf("Lease still held by %q after shutdown, want released", *l.Spec.HolderIdentity)
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		b.WriteString(sc.Text())
		b.WriteByte('\n')
	}
	return b.String()
}

// lockedBuffer collects a child's output safely.
type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
