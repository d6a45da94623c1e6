package integration

// Integration tests of Vast.ai (issue 14) on the real control plane, with
// the Vast.ai simulator behind the real adapter: interruptible VMs are bids
// placed under the request's spot cap, a lost bid is first re-bid and then
// an interruption, VM bootstraps arrive over SSH (the simulator's real SSH
// server records what it ran, and its node agent registers the Node from
// that), and container offers serve container requests.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	vastaisim "github.com/solanyn/gpu-operator/pkg/cloudsim/vastai"
	"github.com/solanyn/gpu-operator/pkg/controller"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/vastai/sshboot"
)

// vastHost is a verified, reliable RTX 4090 host in California (us-west-1):
// a VM host when vm, renting interruptible instances from minBid when it is
// positive, on demand at dph.
func vastHost(id int, minBid, dph float64, vm bool) vastaisim.Host {
	return vastaisim.Host{ID: id, GPUName: "RTX 4090", NumGPUs: 1, GPURAM: 24564, Geolocation: "California, US",
		DPHTotal: dph, MinBid: minBid, Reliability: 0.99, Verified: true, VMsEnabled: vm}
}

// vastRig runs the Vast.ai simulator alone, with the operator's namespace
// (where its SSH Secrets go) made for the test.
func vastRig(t *testing.T, hosts ...vastaisim.Host) *rig {
	t.Helper()
	opNS := fmt.Sprintf("op-%08x", rand.Uint32())
	if _, err := kubernetes.NewForConfigOrDie(env.Config).CoreV1().Namespaces().Create(t.Context(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: opNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return newRig(t, rigOptions{
		sims: stack.Config{VastAI: &vastaisim.Config{Config: cloudsim.Config{APIKey: "test-key", BootDelay: 300 * time.Millisecond}, Hosts: hosts}},
		config: controller.Config{OperatorNamespace: opNS,
			SSHTimeout: 10 * time.Second, SSHAttempts: 20, SSHBackoff: 50 * time.Millisecond},
	})
}

// spotTrainingJob creates the product's first example, as shipped.
func (r *rig) spotTrainingJob() *tgpv1.GPURequest {
	r.t.Helper()
	manifest, err := os.ReadFile(filepath.Join(env.Root, "manifests", "examples", "spot-training-job.yaml"))
	if err != nil {
		r.t.Fatal(err)
	}
	req := r.create(string(manifest))
	if s := req.Spec; !s.SpotInstance || price(s.MaxSpotPrice) != 0.25 || price(s.MaxPrice) != 0.50 || s.GPUType != "RTX4090" {
		r.t.Fatalf("the example's spec %+v is not the one these tests are about", s)
	}
	return req
}

// createBid is the bid ("price") of each Vast.ai create, in order (0: none).
func (r *rig) createBids() []float64 {
	r.t.Helper()
	var out []float64
	for _, raw := range r.stack.VastAI.CreateBodies() {
		var b struct {
			Price *float64 `json:"price"`
		}
		if err := json.Unmarshal(raw, &b); err != nil {
			r.t.Fatal(err)
		}
		out = append(out, price(b.Price))
	}
	return out
}

// checkSSHBootstrap checks that machine's VM ran its bootstrap over SSH
// exactly once, with the operator's key from its Secret, and that the host
// key pinned for it is the host's.
func (r *rig) checkSSHBootstrap(st tgpv1.GPURequestStatus) {
	r.t.Helper()
	runs, err := r.stack.VastAI.SSHRuns(st.InstanceID)
	if err != nil {
		r.t.Fatal(err)
	}
	if len(runs) != 1 || runs[0].Command != sshboot.Command || runs[0].Exit != 0 || runs[0].User != "root" ||
		!strings.HasPrefix(runs[0].Stdin, "#!/bin/bash") || !strings.Contains(runs[0].Stdin, st.MachineName) {
		r.t.Fatalf("SSH runs on instance %s: %d (%+v); want one run of the bootstrap script for %s", st.InstanceID, len(runs), runs, st.MachineName)
	}
	ns := r.cfg.OperatorNamespace
	keySecret, err := r.kube.CoreV1().Secrets(ns).Get(r.t.Context(), controller.SSHKeySecret, metav1.GetOptions{})
	if err != nil {
		r.t.Fatalf("the operator's SSH key Secret: %v", err)
	}
	signer, public, err := sshboot.LoadKey(keySecret.Data[corev1.SSHAuthPrivateKey], "")
	if err != nil {
		r.t.Fatal(err)
	}
	if fp := ssh.FingerprintSHA256(signer.PublicKey()); runs[0].Key != fp {
		r.t.Errorf("the bootstrap ran with key %s, want the operator's %s", runs[0].Key, fp)
	}
	if !slices.ContainsFunc(r.stack.VastAI.AccountKeys(), func(k string) bool { return sshboot.SameKey(k, public) }) {
		r.t.Errorf("the operator's public key is not registered with the account (%v)", r.stack.VastAI.AccountKeys())
	}
	hosts, err := r.kube.CoreV1().Secrets(ns).Get(r.t.Context(), controller.SSHHostsSecret, metav1.GetOptions{})
	if err != nil {
		r.t.Fatalf("the pinned host keys Secret: %v", err)
	}
	var rec struct{ HostKey, State string }
	if err := json.Unmarshal(hosts.Data[st.MachineName], &rec); err != nil {
		r.t.Fatalf("host key record of %s: %q: %v", st.MachineName, hosts.Data[st.MachineName], err)
	}
	want, err := r.stack.VastAI.HostKey(st.InstanceID)
	if err != nil {
		r.t.Fatal(err)
	}
	if !sshboot.SameKey(rec.HostKey, want) || rec.State != "delivered" {
		r.t.Errorf("record of %s: %+v; want the host's key %q pinned and the delivery done", st.MachineName, rec, want)
	}
}

// checkNoSecretsShown checks that neither the request's status nor its
// Events carry the script or the key.
func (r *rig) checkNoSecretsShown(name string) {
	r.t.Helper()
	st, _ := json.Marshal(r.get(name).Status)
	list, err := r.kube.CoreV1().Events(r.ns).List(r.t.Context(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		r.t.Fatal(err)
	}
	text := string(st)
	for _, e := range list.Items {
		text += "\n" + e.Message
	}
	for _, leak := range []string{"hostnamectl", "set -eu", "PRIVATE KEY", "ssh-ed25519"} {
		if strings.Contains(text, leak) {
			r.t.Errorf("status or Events of %s show %q:\n%s", name, leak, text)
		}
	}
}

// TestVastAISpotTrainingJob is the product's first example on Vast.ai's
// market: an interruptible VM under the spot cap when one exists, an
// on-demand one under maxPrice when none does, Pending with the reason when
// neither fits.
func TestVastAISpotTrainingJob(t *testing.T) {
	t.Run("interruptible VM under the spot cap", func(t *testing.T) {
		// 101: bids from $0.20; 102: cheaper on demand but only a container
		// host; 103: a VM host whose minimum bid is over the cap.
		r := vastRig(t, vastHost(101, 0.20, 0.45, true), vastHost(102, 0.10, 0.30, false), vastHost(103, 0.26, 0.40, true))
		r.spotTrainingJob()
		req := r.waitPhase("spot-training-job", tgpv1.PhaseReady, readyTimeout)
		st := req.Status
		if st.Provider != providers.VastAI || st.InstanceType != "101" || !st.Spot || price(st.HourlyPrice) != 0.21 || st.Region != "us-west-1" {
			t.Errorf("Ready on %s %s spot=%v at $%v in %s; want Vast.ai host 101, interruptible, at the bid $0.21 (0.20 + 5%%) in us-west-1",
				st.Provider, st.InstanceType, st.Spot, price(st.HourlyPrice), st.Region)
		}
		if bids := r.createBids(); !slices.Equal(bids, []float64{0.21}) {
			t.Errorf("creates with bids %v, want one create bidding 0.21", bids)
		}
		if c := meta.FindStatusCondition(st.Conditions, tgpv1.ConditionNodeJoined); c == nil || c.Status != metav1.ConditionTrue || st.NodeName != st.MachineName {
			t.Errorf("NodeJoined %+v node %q; want the machine's Node joined", c, st.NodeName)
		}
		r.checkSSHBootstrap(st)
		if ev := r.events("spot-training-job"); !slices.Contains(ev, "BootstrapDelivered") || !slices.Contains(ev, "Ready") {
			t.Errorf("events %v; want BootstrapDelivered and Ready", ev)
		}
		r.checkNoSecretsShown("spot-training-job")
	})

	t.Run("on-demand fallback under maxPrice", func(t *testing.T) {
		r := vastRig(t, vastHost(201, 0.30, 0.45, true), vastHost(202, 0.27, 0.55, true))
		r.spotTrainingJob()
		req := r.waitPhase("spot-training-job", tgpv1.PhaseReady, readyTimeout)
		st := req.Status
		if st.Provider != providers.VastAI || st.InstanceType != "201" || st.Spot || price(st.HourlyPrice) != 0.45 {
			t.Errorf("Ready on %s %s spot=%v at $%v; want host 201 on demand at $0.45", st.Provider, st.InstanceType, st.Spot, price(st.HourlyPrice))
		}
		if bids := r.createBids(); !slices.Equal(bids, []float64{-1}) {
			t.Errorf("creates with bids %v, want one on-demand create without a bid", bids)
		}
		r.checkSSHBootstrap(st)
	})

	t.Run("neither: Pending with the reason", func(t *testing.T) {
		r := vastRig(t, vastHost(301, 0.30, 0.60, true))
		r.spotTrainingJob()
		req := r.waitFor("spot-training-job", readyTimeout, "Pending with a selection", func(req *tgpv1.GPURequest) bool {
			return req.Status.Phase == tgpv1.PhasePending && req.Status.Message != ""
		})
		msg := req.Status.Message
		if !strings.Contains(msg, "OverSpotCap") || !strings.Contains(msg, "OverOnDemandCap") {
			t.Errorf("message %q; want the spot offer over the spot cap and the on-demand one over maxPrice", msg)
		}
		if c := meta.FindStatusCondition(req.Status.Conditions, tgpv1.ConditionOffersAvailable); c == nil || c.Status != metav1.ConditionFalse || c.Reason != "NoEligibleOffers" {
			t.Errorf("OffersAvailable %+v; want False/NoEligibleOffers", c)
		}
		// It stays so: no create over several polls (the wait ends early,
		// and the test fails, at the first create).
		_ = wait.PollUntilContextTimeout(t.Context(), 100*time.Millisecond, 5*r.cfg.PollInterval, true, func(context.Context) (bool, error) {
			return len(r.stack.VastAI.CreateBodies()) > 0, nil
		})
		if n := len(r.stack.VastAI.CreateBodies()); n != 0 || r.get("spot-training-job").Status.Phase != tgpv1.PhasePending {
			t.Errorf("%d creates, phase %s; want none and Pending", n, r.get("spot-training-job").Status.Phase)
		}
	})
}

// TestVastAILostBid: an outbid instance is first re-bid within the spot cap
// (same instance, no interruption); when the cap cannot win it back, the
// stopped instance is destroyed and the request relaunched on another host,
// and nothing is left running but the new machine.
func TestVastAILostBid(t *testing.T) {
	r := vastRig(t, vastHost(401, 0.20, 0.45, true), vastHost(402, 0.22, 0.46, true))
	r.spotTrainingJob()
	first := r.waitPhase("spot-training-job", tgpv1.PhaseReady, readyTimeout).Status
	if first.InstanceType != "401" || price(first.HourlyPrice) != 0.21 {
		t.Fatalf("Ready on host %s at $%v; want host 401 at the bid $0.21", first.InstanceType, price(first.HourlyPrice))
	}

	// A competing bid of $0.23: winning back takes $0.231, the policy bids
	// 0.231 + 5% = $0.243, under the cap.
	if err := r.stack.VastAI.Outbid(first.InstanceID, 0.23); err != nil {
		t.Fatal(err)
	}
	rebid := r.waitFor("spot-training-job", readyTimeout, "the re-bid", func(req *tgpv1.GPURequest) bool {
		return price(req.Status.HourlyPrice) == 0.243
	}).Status
	if rebid.InstanceID != first.InstanceID || rebid.Interruptions != 0 || rebid.Phase != tgpv1.PhaseReady {
		t.Errorf("after the re-bid: instance %s interruptions %d phase %s; want %s, 0, Ready", rebid.InstanceID, rebid.Interruptions, rebid.Phase, first.InstanceID)
	}
	if ev := r.events("spot-training-job"); !slices.Contains(ev, "Rebid") || slices.Contains(ev, "Interrupted") {
		t.Errorf("events %v; want Rebid and no Interrupted", ev)
	}
	// The simulator resumes it: its bid wins again.
	err := wait.PollUntilContextTimeout(t.Context(), 50*time.Millisecond, readyTimeout, true, func(context.Context) (bool, error) {
		for _, m := range r.stack.Machines() {
			if m.ID == first.InstanceID {
				return m.Live && !m.Preempted && m.NativeState == "running", nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("instance %s did not resume after the re-bid: %+v", first.InstanceID, r.stack.Machines())
	}
	if runs, _ := r.stack.VastAI.SSHRuns(first.InstanceID); len(runs) != 1 {
		t.Errorf("%d SSH runs on the resumed instance; the bootstrap runs once per machine", len(runs))
	}

	// A competing bid of $0.30: winning back takes $0.301, over the cap of
	// $0.25: an interruption, relaunched on host 402 at 0.22 + 5% = $0.231.
	if err := r.stack.VastAI.Outbid(first.InstanceID, 0.30); err != nil {
		t.Fatal(err)
	}
	second := r.waitFor("spot-training-job", readyTimeout, "Ready on another host", func(req *tgpv1.GPURequest) bool {
		return req.Status.Phase == tgpv1.PhaseReady && req.Status.Interruptions == 1
	}).Status
	if second.InstanceType != "402" || second.InstanceID == first.InstanceID || price(second.HourlyPrice) != 0.231 || !second.Spot {
		t.Errorf("relaunched on host %s (instance %s) at $%v spot=%v; want host 402 at the bid $0.231", second.InstanceType, second.InstanceID, price(second.HourlyPrice), second.Spot)
	}
	if c := meta.FindStatusCondition(second.Conditions, tgpv1.ConditionInterrupted); c == nil || c.Reason != "Recovered" || !strings.Contains(c.Message, "Outbid") {
		t.Errorf("Interrupted %+v; want Recovered from Outbid", c)
	}
	r.checkSSHBootstrap(second)
	live := r.liveMachines()
	if len(live) != 1 || live[0].ID != second.InstanceID {
		t.Errorf("live machines %+v; want only %s (the stopped instance destroyed)", live, second.InstanceID)
	}
	if ev := r.events("spot-training-job"); !slices.Contains(ev, "Interrupted") {
		t.Errorf("events %v; want Interrupted", ev)
	}
	if bids := r.createBids(); !slices.Equal(bids, []float64{0.21, 0.231}) {
		t.Errorf("creates with bids %v, want 0.21 then 0.231", bids)
	}
	r.checkNoSecretsShown("spot-training-job")
}

// TestVastAIContainer: a container request is served by a Vast.ai container
// offer and is Ready with its ports, without SSH or a Node.
func TestVastAIContainer(t *testing.T) {
	r := vastRig(t, vastHost(501, 0, 0.40, false), vastHost(502, 0, 0.35, true))
	r.create(`
metadata: {name: notebook}
spec:
  gpuType: RTX4090
  maxPrice: 0.50
  container:
    image: vastai/pytorch:latest
    env: [{name: GREETING, value: hello}]
    ports: [{port: 8888, protocol: http}]`)
	st := r.waitPhase("notebook", tgpv1.PhaseReady, readyTimeout).Status
	if st.Provider != providers.VastAI || st.InstanceType != "501" || st.Spot || price(st.HourlyPrice) != 0.40 || st.NodeName != "" {
		t.Errorf("Ready on %s %s spot=%v at $%v node %q; want the container host 501 on demand at $0.40 and no Node",
			st.Provider, st.InstanceType, st.Spot, price(st.HourlyPrice), st.NodeName)
	}
	if len(st.Ports) != 1 || st.Ports[0].Port != 8888 || st.Ports[0].PublicPort <= 0 || st.Ports[0].PublicIP == "" {
		t.Errorf("ports %+v; want 8888 mapped to a public address and port", st.Ports)
	}
	if runs, err := r.stack.VastAI.SSHRuns(st.InstanceID); err == nil && len(runs) != 0 {
		t.Errorf("%d SSH runs on a container", len(runs))
	}
}
