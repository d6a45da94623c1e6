package integration

// Integration tests of the tenant-safety fixes (../shared/DESIGN.md
// "Lifecycle", "Tenancy and safety"): the real API server and etcd of
// TestMain, the real controller, the simulators over HTTP and the node agent.
// The unit versions of these tests are in safety_test.go.

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/yaml"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	lambdasim "github.com/solanyn/gpu-operator/pkg/cloudsim/lambda"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	"github.com/solanyn/gpu-operator/pkg/controller"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/lambda"
)

// withheldLaunches stands in front of the Lambda simulator and makes its
// launch answers ambiguous: the simulator serves the create in full (the
// instance exists and is counted), then the answer is held back until the
// client gives up, so the adapter sees its call timeout. Faults.Latency
// cannot do this on its own: it delays before the create, and Core.Admit
// serves the create only once the client has gone, racing the operator's
// follow-up listing (and it slows every other call too).
type withheldLaunches struct {
	sim      http.Handler
	withheld atomic.Int32
}

func (h *withheldLaunches) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method+" "+r.URL.Path != lambdasim.EndpointLaunch {
		h.sim.ServeHTTP(w, r)
		return
	}
	rec := httptest.NewRecorder()
	h.sim.ServeHTTP(rec, r)
	if rec.Code != http.StatusOK {
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
		return
	}
	h.withheld.Add(1)
	select {
	case <-r.Context().Done(): // the adapter timed out and hung up
	case <-time.After(30 * time.Second):
	}
}

// launchedFor sums a simulator's launches (create calls that made an
// instance) per machine name of the request.
func launchedFor(sim cloudsim.Simulator, req *tgpv1.GPURequest) map[string]int {
	out := map[string]int{}
	for name, n := range sim.Core().Counters().Launches {
		if strings.HasPrefix(name, machinePrefix(req)) {
			out[name] = n
		}
	}
	return out
}

// waitGone polls until the request no longer exists and returns how long
// that took from since.
func (r *rig) waitGone(name string, since time.Time, timeout time.Duration) time.Duration {
	r.t.Helper()
	err := wait.PollUntilContextTimeout(r.t.Context(), 20*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		_, err := r.client.TgpV1().GPURequests(r.ns).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		req, _ := r.client.TgpV1().GPURequests(r.ns).Get(r.t.Context(), name, metav1.GetOptions{})
		r.t.Fatalf("%s still exists %s after its deletion (finalizers %v); status %+v", name, timeout, finalizersOf(req), statusOf(req))
	}
	return time.Since(since)
}

// waitEvents polls the request's Events (recorded asynchronously) until
// they hold every wanted reason, for at most 5s.
func (r *rig) waitEvents(name string, reasons ...string) ([]string, bool) {
	r.t.Helper()
	var evs []string
	err := wait.PollUntilContextTimeout(r.t.Context(), 50*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
		evs = r.events(name)
		return containsAll(evs, reasons...), nil
	})
	return evs, err == nil
}

func finalizersOf(req *tgpv1.GPURequest) []string {
	if req == nil {
		return nil
	}
	return req.Finalizers
}

func (r *rig) delete(name string) time.Time {
	r.t.Helper()
	at := time.Now()
	if err := r.client.TgpV1().GPURequests(r.ns).Delete(r.t.Context(), name, metav1.DeleteOptions{}); err != nil {
		r.t.Fatal(err)
	}
	return at
}

// TestSafetyAmbiguousLaunchIsAdopted: Lambda creates the machine but the
// adapter's call times out before the answer. The operator must find the
// machine by its name and adopt it. The previous controller retired the name
// and failed over to the next offer, creating one machine per retired name
// (seen: attempt 5, all five regions marked unavailable, never Ready).
func TestSafetyAmbiguousLaunchIsAdopted(t *testing.T) {
	var catalog []cloudsim.CatalogEntry
	for _, region := range []string{"us-east-1", "us-east-2", "us-west-1", "us-west-2", "us-south-1"} {
		catalog = append(catalog, cloudsim.CatalogEntry{InstanceType: "gpu_1x_a10", GPUs: 1, Region: region, OnDemandPrice: 0.75, Capacity: -1})
	}
	r := newRig(t, rigOptions{sims: stack.Config{Lambda: simConfig(catalog...)}, noStart: true})
	const callTimeout = time.Second
	front := &withheldLaunches{sim: r.stack.Lambda}
	srv := httptest.NewServer(front)
	t.Cleanup(srv.Close)
	adapter, err := lambda.New(lambda.Config{BaseURL: srv.URL, Key: func() string { return "test-key" },
		RequestsPerSecond: 1e6, LaunchInterval: -1, CallTimeout: callTimeout, SSHKeyName: lambdasim.DefaultSSHKeyName})
	if err != nil {
		t.Fatal(err)
	}
	r.buildWith(controller.Config{PollInterval: 300 * time.Millisecond}, []providers.Provider{adapter})
	r.start()

	start := time.Now()
	created := r.create(`
metadata: {name: slow}
spec: {gpuType: A10}`)
	want := machinePrefix(created) + "1"
	// A second attempt means the first name was retired: stop there.
	ready := r.waitFor("slow", readyTimeout, "Ready (or a second attempt)", func(req *tgpv1.GPURequest) bool {
		return req.Status.Phase == tgpv1.PhaseReady || req.Status.Attempt > 1
	})
	t.Logf("%s on attempt %d %s after the create (adapter call timeout %s)", ready.Status.Phase, ready.Status.Attempt,
		time.Since(start).Round(time.Millisecond), callTimeout)
	if ready.Status.Phase != tgpv1.PhaseReady {
		t.Fatalf("attempt %d (%s) in phase %s: the ambiguous first launch was not adopted; launches per name %v",
			ready.Status.Attempt, ready.Status.MachineName, ready.Status.Phase, launchedFor(r.stack.Lambda, created))
	}

	if n := front.withheld.Load(); n < 1 {
		t.Fatalf("no launch answer was withheld: the ambiguous path was not exercised")
	}
	if got := launchedFor(r.stack.Lambda, created); len(got) != 1 || got[want] != 1 {
		t.Errorf("launches per machine name %v, want only %s once", got, want)
	}
	if n := r.stack.Lambda.Core().Counters().Requests[lambdasim.EndpointLaunch]; n != 1 {
		t.Errorf("%d create calls reached Lambda, want 1", n)
	}
	if ready.Status.MachineName != want || ready.Status.Attempt != 1 {
		t.Errorf("Ready on %s attempt %d, want %s attempt 1", ready.Status.MachineName, ready.Status.Attempt, want)
	}
	if m := r.machineFor(want); ready.Status.InstanceID != m.ID {
		t.Errorf("status instance %s, want the created %s", ready.Status.InstanceID, m.ID)
	}
	if n := r.liveFor(created); n != 1 {
		t.Errorf("%d live machines for the request, want 1", n)
	}
	if evs, ok := r.waitEvents("slow", "LaunchFailed", "Adopted", "Ready"); !ok {
		t.Errorf("events %v, want LaunchFailed (the timeout), Adopted and Ready", evs)
	}
	// Deleting the request terminates the adopted machine (the request
	// claims it), and no other name was launched in the meantime.
	r.waitGone("slow", r.delete("slow"), readyTimeout)
	waitNoLive(t, r)
	if got := launchedFor(r.stack.Lambda, created); len(got) != 1 {
		t.Errorf("launches per machine name %v after the deletion, want only %s", got, want)
	}
}

// TestSafetyDeletingUnlaunchedRequestFinishes: a request that can never
// launch (its bootstrap Secret does not exist) is deleted; the finalizer is
// released at once. "seeded" carries a machine name in status as the
// write-ahead record leaves it when no launch call follows. The previous
// controller wrote the name before reading the bootstrap, so both had one,
// and on deletion waited for that machine forever (seen: still Terminating
// with the finalizer 5s after the delete).
func TestSafetyDeletingUnlaunchedRequestFinishes(t *testing.T) {
	r := a6000RigStopped(t)
	const manifest = `
metadata: {name: NAME}
spec:
  gpuType: A6000
  bootstrap: {secretName: does-not-exist}`
	plain := r.create(strings.Replace(manifest, "NAME", "plain", 1))
	seeded := r.create(strings.Replace(manifest, "NAME", "seeded", 1))
	seededMachine := machinePrefix(seeded) + "1"
	seeded.Status = tgpv1.GPURequestStatus{Phase: tgpv1.PhasePending, MachineName: seededMachine, Attempt: 1}
	if _, err := r.client.TgpV1().GPURequests(r.ns).UpdateStatus(t.Context(), seeded, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.start()
	for _, req := range []*tgpv1.GPURequest{plain, seeded} {
		stuck := r.waitFor(req.Name, readyTimeout, "Pending with BootstrapError", func(req *tgpv1.GPURequest) bool {
			c := meta.FindStatusCondition(req.Status.Conditions, tgpv1.ConditionLaunched)
			return req.Status.Phase == tgpv1.PhasePending && c != nil && c.Reason == "BootstrapError" && len(req.Finalizers) == 1
		})
		if req.Name == "seeded" && stuck.Status.MachineName != seededMachine {
			t.Fatalf("seeded: machine name %q in status, want %s kept", stuck.Status.MachineName, seededMachine)
		}
		t.Logf("%s: Pending/BootstrapError with machine name %q, finalizers %v", req.Name, stuck.Status.MachineName, stuck.Finalizers)
	}
	for _, name := range []string{"plain", "seeded"} {
		took := r.waitGone(name, r.delete(name), 5*time.Second)
		t.Logf("%s: gone %s after the delete", name, took.Round(time.Millisecond))
	}
	if ms := r.stack.Machines(); len(ms) != 0 {
		t.Errorf("machines %+v, want none launched", ms)
	}
}

func a6000RigStopped(t *testing.T) *rig {
	return newRig(t, rigOptions{
		sims:    stack.Config{Paperspace: simConfig(cloudsim.CatalogEntry{InstanceType: "A6000", GPUs: 1, Region: "ny2", Capacity: -1})},
		config:  controller.Config{PollInterval: 300 * time.Millisecond},
		noStart: true,
	})
}

// TestSafetyOneTerminateCallPerTermination deletes a Ready request and
// counts the terminate calls the simulator received. The simulator holds only
// this request's instance, so every call to the terminate endpoint is for it.
// The previous controller sent 2 (seen: 2 calls for the one instance).
func TestSafetyOneTerminateCallPerTermination(t *testing.T) {
	sim := simConfig(cloudsim.CatalogEntry{InstanceType: "gpu_1x_a10", GPUs: 1, Region: "us-east-1", OnDemandPrice: 0.75, Capacity: -1})
	sim.TerminateDelay = time.Second // listed as terminating for a while, as the real API does
	r := newRig(t, rigOptions{sims: stack.Config{Lambda: sim}, config: controller.Config{PollInterval: 300 * time.Millisecond}})
	created := r.create(`
metadata: {name: term}
spec: {gpuType: A10}`)
	ready := r.waitPhase("term", tgpv1.PhaseReady, readyTimeout)
	terminates := func() int { return r.stack.Lambda.Core().Counters().Requests[lambdasim.EndpointTerminate] }
	if n := terminates(); n != 0 {
		t.Fatalf("%d terminate calls before the deletion", n)
	}
	took := r.waitGone("term", r.delete("term"), readyTimeout)
	waitNoLive(t, r)
	r.nodeGone(ready.Status.NodeName)
	t.Logf("released %s after the delete; %d terminate call(s)", took.Round(time.Millisecond), terminates())
	if ms := r.stack.Machines(); len(ms) != 1 || ms[0].Name != machinePrefix(created)+"1" {
		t.Fatalf("simulator machines %+v, want only the request's", ms)
	}
	if n := terminates(); n != 1 {
		t.Errorf("%d terminate calls for instance %s, want 1", n, ready.Status.InstanceID)
	}
}

// TestSafetyIdleTimeoutSetLaterCountsFromIdleSince: the idle clock runs
// without idleTimeout, so a timeout set on a machine already idle for longer
// ends it at once. The previous controller ran the idle clock only while
// idleTimeout was set (seen: idleSince never set here), so it started at the
// edit and would end the machine idleTimeout later (at least 2s after the
// patch here, given idleSince's second precision).
func TestSafetyIdleTimeoutSetLaterCountsFromIdleSince(t *testing.T) {
	r := a6000Rig(t, controller.Config{})
	r.create(`
metadata: {name: idle-later}
spec: {gpuType: A6000}`)
	r.waitPhase("idle-later", tgpv1.PhaseReady, readyTimeout)
	const idleFor = 4 * time.Second
	// The idle clock runs without idleTimeout: idleSince is set at Ready.
	idle := r.waitFor("idle-later", idleFor+5*time.Second, "idleSince set and "+idleFor.String()+" old", func(req *tgpv1.GPURequest) bool {
		return req.Status.Phase == tgpv1.PhaseReady && req.Status.IdleSince != nil && time.Since(req.Status.IdleSince.Time) >= idleFor
	})
	patched := time.Now()
	r.patchSpec("idle-later", `{"spec":{"idleTimeout":"3s"}}`)
	const deadline = 1500 * time.Millisecond // the old behaviour: >= 2s
	done := r.waitFor("idle-later", deadline, "TerminationReason IdleTimeout", func(req *tgpv1.GPURequest) bool {
		return req.Status.TerminationReason == "IdleTimeout"
	})
	t.Logf("idle since %s (%s before the patch); termination for IdleTimeout seen %s after the patch, started at %s",
		idle.Status.IdleSince.UTC().Format(time.RFC3339), patched.Sub(idle.Status.IdleSince.Time).Round(time.Millisecond),
		time.Since(patched).Round(time.Millisecond), done.Status.TerminationStartedAt.UTC().Format(time.RFC3339))
	r.waitPhase("idle-later", tgpv1.PhaseTerminated, readyTimeout)
	waitNoLive(t, r)
}

// TestSafetyNodeLabelAndTaintEditsReachTheNode: edits of nodeLabels and
// nodeTaints after Ready are patched onto the Node, removals included. The
// previous controller applied them only when the Node joined (seen: team=a,
// old=x and no taint 5s after the edit).
func TestSafetyNodeLabelAndTaintEditsReachTheNode(t *testing.T) {
	r := a6000Rig(t, controller.Config{})
	req := r.create(`
metadata: {name: relabel}
spec:
  gpuType: A6000
  nodeLabels: {team: a, old: x}`)
	ready := r.waitPhase("relabel", tgpv1.PhaseReady, readyTimeout)
	nodeName := ready.Status.NodeName
	taint := corev1.Taint{Key: "example.com/dedicated", Value: "b", Effect: corev1.TaintEffectNoSchedule}
	hasTaint := func(n *corev1.Node) bool {
		return slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool {
			return t.Key == taint.Key && t.Value == taint.Value && t.Effect == taint.Effect
		})
	}
	waitNode := func(what string, cond func(*corev1.Node) bool) {
		t.Helper()
		start := time.Now()
		var last *corev1.Node
		err := wait.PollUntilContextTimeout(t.Context(), 20*time.Millisecond, 5*time.Second, true, func(ctx context.Context) (bool, error) {
			n, err := r.kube.CoreV1().Nodes().Get(ctx, nodeName, metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			last = n
			return cond(n), nil
		})
		if err != nil {
			var labels map[string]string
			var taints []corev1.Taint
			if last != nil {
				labels, taints = last.Labels, last.Spec.Taints
			}
			t.Fatalf("Node %s: %s not reached within 5s; labels %v taints %v", nodeName, what, labels, taints)
		}
		t.Logf("Node %s: %s after %s", nodeName, what, time.Since(start).Round(time.Millisecond))
	}
	waitNode("team=a, old=x at Ready", func(n *corev1.Node) bool { return n.Labels["team"] == "a" && n.Labels["old"] == "x" })

	r.patchSpec("relabel", `{"spec":{"nodeLabels":{"team":"b","old":null},"nodeTaints":[{"key":"example.com/dedicated","value":"b","effect":"NoSchedule"}]}}`)
	waitNode("team=b, no old, the taint", func(n *corev1.Node) bool {
		_, old := n.Labels["old"]
		return n.Labels["team"] == "b" && !old && hasTaint(n)
	})
	r.patchSpec("relabel", `{"spec":{"nodeTaints":null}}`)
	waitNode("the taint removed", func(n *corev1.Node) bool { return !hasTaint(n) && n.Labels["team"] == "b" })

	n, err := r.kube.CoreV1().Nodes().Get(t.Context(), nodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Labels[controller.LabelRequestUID] != string(req.UID) {
		t.Errorf("Node label %s=%q, want the request's UID kept", controller.LabelRequestUID, n.Labels[controller.LabelRequestUID])
	}
	if st := r.get("relabel").Status; st.Phase != tgpv1.PhaseReady || st.MachineName != ready.Status.MachineName {
		t.Errorf("phase %s on %s after the edits, want still Ready on %s", st.Phase, st.MachineName, ready.Status.MachineName)
	}
}

// TestSafetyAdmissionRefusesUnparsableDuration: "1d" never parses as a Go
// duration, so the API server refuses it (the full table of refused values
// is in pkg/apis/tgp/v1).
func TestSafetyAdmissionRefusesUnparsableDuration(t *testing.T) {
	r := a6000RigStopped(t)
	var req tgpv1.GPURequest
	if err := yaml.UnmarshalStrict([]byte(`
metadata: {name: one-day}
spec: {gpuType: A6000, maxLifetime: 1d}`), &req); err != nil {
		t.Fatal(err)
	}
	_, err := r.client.TgpV1().GPURequests(r.ns).Create(t.Context(), &req, metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec.maxLifetime") {
		t.Fatalf("create with maxLifetime 1d: %v; want Invalid naming spec.maxLifetime", err)
	}
	t.Logf("refused: %v", err)
	if _, err := r.client.TgpV1().GPURequests(r.ns).Get(t.Context(), "one-day", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("get after the refusal: %v, want NotFound", err)
	}
}
