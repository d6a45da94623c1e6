package integration

// Integration tests of machine kinds and bootstrap formats
// (../shared/DESIGN.md "Machine kinds"): container requests on RunPod's
// REST v2 simulator through the generated client, and VM requests whose
// bootstrap format decides which providers may serve them.

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	"github.com/solanyn/gpu-operator/pkg/controller"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/selector"
)

// createBody is the part of a REST v2 createPod body the tests look at.
type createBody struct {
	Name  string            `json:"name"`
	Image string            `json:"image"`
	Args  *string           `json:"args"`
	Env   map[string]string `json:"env"`
	Ports []string          `json:"ports"`
	Gpu   struct {
		ID    string `json:"id"`
		Count int    `json:"count"`
	} `json:"gpu"`
	DataCenterIDs []string `json:"dataCenterIds"`
}

func (r *rig) createBodies() []createBody {
	r.t.Helper()
	var out []createBody
	for _, raw := range r.stack.RunPod.CreateBodies() {
		var b createBody
		if err := json.Unmarshal(raw, &b); err != nil {
			r.t.Fatalf("create body %s: %v", raw, err)
		}
		out = append(out, b)
	}
	return out
}

// secret creates a Secret in the rig's namespace, with the consent label
// when optIn.
func (r *rig) secret(name string, optIn bool, data map[string]string) {
	r.t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name}, StringData: data}
	if optIn {
		s.Labels = map[string]string{controller.LabelBootstrapConsent: "true"}
	}
	if _, err := r.kube.CoreV1().Secrets(r.ns).Create(r.t.Context(), s, metav1.CreateOptions{}); err != nil {
		r.t.Fatal(err)
	}
}

// TestContainerRequestReadyOnRunPod: a GPURequest with spec.container is
// served by a RunPod pod (never by the cheaper Lambda VM of the same GPU),
// created with the image, the args as one shell-quoted string, the env
// (a literal and a value from an opted-in Secret) and the ports as
// "port/protocol", and is Ready when the pod runs, with its address and
// port mappings in status and no Node. Deleting it deletes the pod.
func TestContainerRequestReadyOnRunPod(t *testing.T) {
	r := newRig(t, rigOptions{sims: stack.Config{
		RunPod: simConfig(rtx4090("US-CA-2", 0.44)),
		Lambda: simConfig(lambdaRTX4090("us-west-1", 0.30)),
	}})
	const token = "tok-3f9c2a7d51e8"
	r.secret("notebook-env", true, map[string]string{"token": token})
	created := r.create(`
metadata: {name: notebook}
spec:
  gpuType: RTX4090
  maxPrice: 0.50
  container:
    image: runpod/pytorch:2.8.0-py3.11-cuda12.8.1-devel-ubuntu22.04
    args: [bash, -c, "echo $GREETING; exec jupyter lab --port=8888", it's]
    env:
    - {name: GREETING, value: hello world}
    - {name: JUPYTER_TOKEN, valueFrom: {secretName: notebook-env, key: token}}
    ports: [{port: 8888, protocol: http}, {port: 22}]`)
	req := r.waitPhase("notebook", tgpv1.PhaseReady, readyTimeout)
	st := req.Status
	machine := machinePrefix(created) + "1"

	if st.Provider != providers.RunPod || st.ProviderRegion != "US-CA-2" || st.Region != "us-west-1" || st.Spot || price(st.HourlyPrice) != 0.44 ||
		st.MachineName != machine || st.Attempt != 1 {
		t.Errorf("Ready on %s/%s(%s) spot=%v $%v as %s attempt %d, want runpod/us-west-1(US-CA-2) on-demand $0.44 as %s attempt 1",
			st.Provider, st.Region, st.ProviderRegion, st.Spot, price(st.HourlyPrice), st.MachineName, st.Attempt, machine)
	}
	bodies := r.createBodies()
	if len(bodies) != 1 {
		t.Fatalf("%d createPod calls, want 1: %+v", len(bodies), bodies)
	}
	b := bodies[0]
	wantArgs := `bash -c 'echo $GREETING; exec jupyter lab --port=8888' 'it'\''s'`
	if b.Name != machine || b.Image != "runpod/pytorch:2.8.0-py3.11-cuda12.8.1-devel-ubuntu22.04" || b.Args == nil || *b.Args != wantArgs ||
		b.Gpu.ID != "NVIDIA GeForce RTX 4090" || b.Gpu.Count != 1 || !slices.Equal(b.DataCenterIDs, []string{"US-CA-2"}) {
		t.Errorf("create body %+v (args %q), want name %s, the image, args %q, 1x NVIDIA GeForce RTX 4090 in [US-CA-2]", b, deref(b.Args), machine, wantArgs)
	}
	if want := map[string]string{"GREETING": "hello world", "JUPYTER_TOKEN": token}; !maps.Equal(b.Env, want) {
		t.Errorf("create env %v, want %v", b.Env, want)
	}
	if want := []string{"8888/http", "22/tcp"}; !slices.Equal(b.Ports, want) {
		t.Errorf("create ports %v, want %v", b.Ports, want)
	}

	// Where the ports are reachable: the running pod's mappings.
	if st.PublicIP == "" || len(st.Ports) != 2 {
		t.Fatalf("publicIP %q, ports %+v; want an address and two mapped ports", st.PublicIP, st.Ports)
	}
	public := map[int32]int32{}
	for i, p := range st.Ports {
		want := [2]any{int32(8888), "http"}
		if i == 1 {
			want = [2]any{int32(22), "tcp"}
		}
		if p.Port != want[0] || p.Protocol != want[1] || p.PublicIP != st.PublicIP || p.PublicPort == 0 {
			t.Errorf("status.ports[%d] %+v, want %d/%s on %s with a public port", i, p, want[0], want[1], st.PublicIP)
		}
		public[p.PublicPort] = p.Port
	}
	if len(public) != 2 {
		t.Errorf("status.ports %+v map two container ports to one public port", st.Ports)
	}

	for _, c := range []struct {
		typ, reason string
		status      metav1.ConditionStatus
	}{
		{tgpv1.ConditionReady, "ContainerRunning", metav1.ConditionTrue},
		{tgpv1.ConditionLaunched, "Launched", metav1.ConditionTrue},
		{tgpv1.ConditionOffersAvailable, "OffersFound", metav1.ConditionTrue},
		{tgpv1.ConditionNodeJoined, "NotApplicable", metav1.ConditionFalse},
	} {
		if got := meta.FindStatusCondition(st.Conditions, c.typ); got == nil || got.Status != c.status || got.Reason != c.reason {
			t.Errorf("condition %s %+v, want %s/%s", c.typ, got, c.status, c.reason)
		}
	}
	if st.NodeName != "" || st.ReadyAt == nil || st.ObservedGeneration != req.Generation {
		t.Errorf("nodeName %q readyAt %v observedGeneration %d (generation %d); want no Node, a readyAt, current", st.NodeName, st.ReadyAt, st.ObservedGeneration, req.Generation)
	}
	// The cheaper Lambda VM lost for its kind and was never launched.
	if got := r.rejections(req)["lambdalabs/gpu_1x_rtx4090/us-west-1"]; got != "WrongMachineKind" {
		t.Errorf("the Lambda VM lost for %q, want WrongMachineKind", got)
	}
	if n := len(r.stack.Lambda.Machines()); n != 0 {
		t.Errorf("%d Lambda VMs launched for a container request, want none", n)
	}
	// No Node: after one more pass of the node agent, none exists under the
	// machine's name or carrying the request's UID.
	if err := r.agent.Sync(t.Context()); err != nil {
		t.Fatal(err)
	}
	if _, err := r.kube.CoreV1().Nodes().Get(t.Context(), machine, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("get Node %s: %v, want NotFound", machine, err)
	}
	nodes, err := r.kube.CoreV1().Nodes().List(t.Context(), metav1.ListOptions{LabelSelector: controller.LabelRequestUID + "=" + string(created.UID)})
	if err != nil || len(nodes.Items) != 0 {
		t.Errorf("Nodes of the request: %v (%v), want none", nodes, err)
	}
	r.assertColumns("notebook", "RTX4090", "1", "false", "runpod", "us-west-1", "0.44", "Ready")

	// The Secret's value went to RunPod only: not to status, not to Events.
	raw, _ := json.Marshal(r.get("notebook"))
	evs, _ := r.kube.CoreV1().Events(r.ns).List(t.Context(), metav1.ListOptions{})
	rawEvents, _ := json.Marshal(evs)
	if strings.Contains(string(raw), token) || strings.Contains(string(rawEvents), token) {
		t.Errorf("the env Secret's value appears in the GPURequest or its Events")
	}

	r.waitGone("notebook", r.delete("notebook"), readyTimeout)
	waitNoLive(t, r)
	if n := launches(r.stack, providers.RunPod, machine); n != 1 || len(r.stack.RunPod.Machines()) != 1 {
		t.Errorf("%s launched %d times, %d pods ever; want one", machine, n, len(r.stack.RunPod.Machines()))
	}
}

// TestContainerEnvNeedsConsentedSecret: an env value from a Secret without
// the consent label is never read into a pod: the request stays Pending
// with Launched=False/BootstrapError naming the label, and RunPod gets no
// create call.
func TestContainerEnvNeedsConsentedSecret(t *testing.T) {
	r := newRig(t, rigOptions{sims: stack.Config{RunPod: simConfig(rtx4090("US-CA-2", 0.44))}})
	const password = "db-pass-81c4e0"
	r.secret("db", false, map[string]string{"password": password})
	r.create(`
metadata: {name: no-consent}
spec:
  gpuType: RTX4090
  container:
    image: busybox
    env: [{name: PGPASSWORD, valueFrom: {secretName: db, key: password}}]`)
	req := r.waitFor("no-consent", readyTimeout, "Launched=False/BootstrapError", func(req *tgpv1.GPURequest) bool {
		c := meta.FindStatusCondition(req.Status.Conditions, tgpv1.ConditionLaunched)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == "BootstrapError"
	})
	if c := meta.FindStatusCondition(req.Status.Conditions, tgpv1.ConditionLaunched); req.Status.Phase != tgpv1.PhasePending ||
		!strings.Contains(c.Message, controller.LabelBootstrapConsent) || strings.Contains(c.Message, password) {
		t.Errorf("phase %s, Launched message %q; want Pending, naming the label %s and not the value", req.Status.Phase, c.Message, controller.LabelBootstrapConsent)
	}
	if n := len(r.stack.RunPod.CreateBodies()); n != 0 {
		t.Errorf("%d createPod calls, want none", n)
	}
}

// TestRunPodCreateThen500IsAdopted: RunPod creates the pod and answers 500
// (as it has been seen to). The answer is ambiguous, so the operator lists
// the pods, finds its own by name and adopts it: exactly one pod ever
// exists for the request, although a second data center could have taken
// a second one.
func TestRunPodCreateThen500IsAdopted(t *testing.T) {
	r := newRig(t, rigOptions{sims: stack.Config{RunPod: simConfig(rtx4090("US-CA-2", 0.44), rtx4090("US-TX-3", 0.44))}, noStart: true})
	r.stack.RunPod.FailAfterCreate(1)
	r.start()
	created := r.create(`
metadata: {name: flaky}
spec: {gpuType: RTX4090, maxPrice: 0.50, container: {image: busybox, args: [sleep, infinity]}}`)
	want := machinePrefix(created) + "1"
	ready := r.waitFor("flaky", readyTimeout, "Ready (or a second attempt)", func(req *tgpv1.GPURequest) bool {
		return req.Status.Phase == tgpv1.PhaseReady || req.Status.Attempt > 1
	})
	if ready.Status.Phase != tgpv1.PhaseReady || ready.Status.MachineName != want || ready.Status.Attempt != 1 {
		t.Fatalf("%s on %s attempt %d, want Ready on %s attempt 1; launches per name %v",
			ready.Status.Phase, ready.Status.MachineName, ready.Status.Attempt, want, launchedFor(r.stack.RunPod, created))
	}
	if n := len(r.stack.RunPod.CreateBodies()); n != 1 {
		t.Errorf("%d createPod calls, want 1 (the 500 is not retried)", n)
	}
	if got := launchedFor(r.stack.RunPod, created); len(got) != 1 || got[want] != 1 {
		t.Errorf("launches per machine name %v, want only %s once", got, want)
	}
	if n := r.liveFor(created); n != 1 {
		t.Errorf("%d live pods for the request, want 1", n)
	}
	if m := r.machineFor(want); ready.Status.InstanceID != m.ID {
		t.Errorf("status instance %s, want the pod created before the 500, %s", ready.Status.InstanceID, m.ID)
	}
	if evs, ok := r.waitEvents("flaky", "LaunchFailed", "Adopted", "Ready"); !ok {
		t.Errorf("events %v, want LaunchFailed (the 500), Adopted and Ready", evs)
	}
	// Over the whole life of the request, no other pod was created.
	r.waitGone("flaky", r.delete("flaky"), readyTimeout)
	waitNoLive(t, r)
	if n := len(r.stack.RunPod.Machines()); n != 1 {
		t.Errorf("%d pods ever created, want 1", n)
	}
}

// TestBootstrapFormatChoosesProvider: Paperspace runs only a startup script,
// Lambda cloud-init or a script. With A6000 VMs cheaper on Paperspace, a
// bootstrap Secret holding only cloud-init goes to the dearer Lambda
// (Paperspace loses with NoBootstrapForProvider); naming a script as well
// (scriptKey) lets the price decide, and Paperspace gets the script.
func TestBootstrapFormatChoosesProvider(t *testing.T) {
	r := newRig(t, rigOptions{sims: stack.Config{
		Lambda:     simConfig(cloudsim.CatalogEntry{InstanceType: "gpu_1x_a6000", GPUs: 1, Region: "us-east-1", OnDemandPrice: 2.20, Capacity: -1}),
		Paperspace: simConfig(cloudsim.CatalogEntry{InstanceType: "A6000", GPUs: 1, Region: "ny2", Capacity: -1}), // list price $1.89
	}})
	r.secret("boot", true, map[string]string{
		"userdata": "#cloud-config\nhostname: {{ .NodeName }}\nruncmd:\n  - [kubeadm, join, --token, \"{{ .JoinToken }}\"]\n",
		"script":   "#!/bin/bash\nhostnamectl set-hostname {{ shell .NodeName }}\nkubeadm join --token {{ shell .JoinToken }}\n",
	})
	userData := func(name string) string {
		t.Helper()
		return r.machineFor(name).UserData
	}

	cloudInit := r.create(`
metadata: {name: cloud-init-only}
spec: {gpuType: A6000, maxPrice: 3.0, bootstrap: {secretName: boot}}`)
	req := r.assertReadyOn("cloud-init-only", want{providers.LambdaLabs, "us-east-1", "us-east-1", false, 2.20})
	// Select ranks a request with a bootstrap Secret as if every provider
	// could run it. The launch checked the bootstrap right after the GPU
	// and the machine kind, so every Paperspace offer that got past those
	// lost for it, whatever else it would have lost for later.
	res := r.ctrl.Select(t.Context(), req)
	paperspace, eligible := 0, 0
	for _, o := range res.RankedOffers() {
		if o.Provider == providers.Paperspace {
			paperspace, eligible = paperspace+1, eligible+1
		}
	}
	for _, rej := range res.Rejected() {
		switch rej.Reason {
		case selector.ProviderPinnedElsewhere, selector.WrongGPUType, selector.WrongGPUCount, selector.WrongMachineKind:
		default:
			if rej.Offer.Provider == providers.Paperspace {
				paperspace++
			}
		}
	}
	if want := fmt.Sprintf(" %d NoBootstrapForProvider", paperspace); eligible == 0 || !strings.Contains(req.Status.Selection, want) {
		t.Errorf("selection %q does not say that the %d Paperspace A6000 offers (%d of them otherwise eligible) lost for NoBootstrapForProvider",
			req.Status.Selection, paperspace, eligible)
	}
	if n := len(r.stack.Paperspace.Machines()); n != 0 {
		t.Errorf("%d Paperspace machines launched with a cloud-init bootstrap, want none", n)
	}
	if ud, want := userData(req.Status.MachineName), "#cloud-config\nhostname: "+machinePrefix(cloudInit)+"1\nruncmd:\n"; !strings.HasPrefix(ud, want) {
		t.Errorf("Lambda user data %q, want the rendered cloud-init %q", ud, want)
	}

	withScript := r.create(`
metadata: {name: with-script}
spec: {gpuType: A6000, maxPrice: 3.0, bootstrap: {secretName: boot, scriptKey: script}}`)
	req = r.assertReadyOn("with-script", want{providers.Paperspace, "us-east-1", "ny2", false, 1.89})
	if strings.Contains(req.Status.Selection, "NoBootstrapForProvider") || !strings.HasPrefix(req.Status.Selection, "chose paperspace/") {
		t.Errorf("selection %q, want Paperspace chosen and no offer passed over for its bootstrap", req.Status.Selection)
	}
	if ud, want := userData(req.Status.MachineName), "#!/bin/bash\nhostnamectl set-hostname '"+machinePrefix(withScript)+"1'\nkubeadm join --token "; !strings.HasPrefix(ud, want) {
		t.Errorf("Paperspace startup script %q, want the rendered script %q", ud, want)
	}
	if n := len(r.stack.Lambda.Machines()); n != 1 {
		t.Errorf("%d Lambda machines, want only the cloud-init request's", n)
	}
}

func deref(p *string) string {
	if p == nil {
		return "<nil>"
	}
	return *p
}
