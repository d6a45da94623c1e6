package sshboot_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/cloudsim/stack"
	vastaisim "github.com/solanyn/gpu-operator/pkg/cloudsim/vastai"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/vastai/sshboot"
)

func TestNewKeyLoadKey(t *testing.T) {
	t.Parallel()
	pemKey, pub, err := sshboot.NewKey("gpu-operator")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(pemKey), "OPENSSH PRIVATE KEY") || !strings.HasPrefix(pub, "ssh-ed25519 ") || !strings.HasSuffix(pub, " gpu-operator") {
		t.Fatalf("NewKey: %q / %q", pemKey[:40], pub)
	}
	signer, pub2, err := sshboot.LoadKey(pemKey, "")
	if err != nil {
		t.Fatal(err)
	}
	if !sshboot.SameKey(pub, pub2) || signer.PublicKey().Type() != ssh.KeyAlgoED25519 {
		t.Errorf("LoadKey gave %q, want the key of %q", pub2, pub)
	}
	_, other, _ := sshboot.NewKey("")
	if sshboot.SameKey(pub, other) || sshboot.SameKey(pub, "not a key") {
		t.Error("SameKey matched different keys")
	}
	if _, _, err := sshboot.LoadKey([]byte("garbage"), ""); err == nil {
		t.Error("LoadKey accepted garbage")
	}
}

// vm launches a Vast.ai VM on the simulator and returns the stack, the
// simulator and its instance id.
func vm(t *testing.T, boot time.Duration) (*stack.Stack, *vastaisim.Server, string) {
	t.Helper()
	st, err := stack.Start(stack.Config{VastAI: &vastaisim.Config{Config: cloudsim.Config{APIKey: "k", BootDelay: boot},
		Hosts: []vastaisim.Host{{ID: 7, GPUName: "RTX 4090", NumGPUs: 1, GPURAM: 24564, Geolocation: "Texas, US",
			DPHTotal: 0.4, Reliability: 0.99, Verified: true, VMsEnabled: true}}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Close)
	ps, err := st.Adapters(stack.AdapterOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	offers, err := ps[0].Offers(ctx)
	if err != nil || len(offers) == 0 {
		t.Fatalf("offers %v %v", offers, err)
	}
	in, err := ps[0].Launch(ctx, providers.LaunchRequest{Name: "gpur-ssh", Offer: offers[0]})
	if err != nil {
		t.Fatal(err)
	}
	return st, st.VastAI, in.ID
}

// endpoint is the VM's SSH endpoint, as the simulator's list reports it
// (the same port whether or not the VM runs yet).
func endpoint(t *testing.T, sim *vastaisim.Server, id string) providers.SSHEndpoint {
	t.Helper()
	return providers.SSHEndpoint{Host: "127.0.0.1", Port: port(t, sim, id), User: "root"}
}

func port(t *testing.T, sim *vastaisim.Server, id string) int {
	t.Helper()
	p, err := sim.SSHPort(id)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

const script = "#!/bin/sh\nhostnamectl set-hostname gpur-ssh\n"

var fast = sshboot.Options{Timeout: 5 * time.Second, Attempts: 100, Backoff: 20 * time.Millisecond}

func TestRunPinsTheHostKeyOnFirstUse(t *testing.T) {
	t.Parallel()
	st, sim, id := vm(t, 0)
	signer, _ := st.VastAISSHKey()
	target := endpoint(t, sim, id)
	ctx := context.Background()

	res, err := sshboot.Run(ctx, target, signer, script, fast)
	if err != nil {
		t.Fatalf("first Run: %v", err)
	}
	want, _ := sim.HostKey(id)
	if !res.Started || res.Attempts != 1 || !sshboot.SameKey(res.HostKey, want) {
		t.Errorf("first Run %+v, want the server's key %s pinned", res, want)
	}
	runs, _ := sim.SSHRuns(id)
	if len(runs) != 1 || runs[0].Stdin != script || runs[0].Command != sshboot.Command || runs[0].User != "root" {
		t.Fatalf("runs %+v", runs)
	}
	// With the pin, again: accepted.
	o := fast
	o.HostKey = res.HostKey
	if _, err := sshboot.Run(ctx, target, signer, script, o); err != nil {
		t.Fatalf("pinned Run: %v", err)
	}
	// Another host key: refused at once, nothing run, not retried.
	if err := sim.RotateHostKey(id); err != nil {
		t.Fatal(err)
	}
	res, err = sshboot.Run(ctx, target, signer, script, o)
	var mismatch *sshboot.HostKeyMismatchError
	if !errors.As(err, &mismatch) || res.Attempts != 1 || res.Started || res.HostKey != o.HostKey {
		t.Fatalf("Run after the host key changed: %+v, %v; want a refusal", res, err)
	}
	if runs, _ := sim.SSHRuns(id); len(runs) != 2 {
		t.Errorf("%d runs, want the 2 before the key changed", len(runs))
	}
}

func TestRunRetriesUntilTheVMRuns(t *testing.T) {
	t.Parallel()
	st, sim, id := vm(t, 400*time.Millisecond)
	signer, _ := st.VastAISSHKey()
	res, err := sshboot.Run(context.Background(), endpoint(t, sim, id), signer, script, fast)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Attempts < 2 {
		t.Errorf("Run took %d attempts; the VM was not running at first", res.Attempts)
	}
}

func TestRunDoesNotRerunAFailedScript(t *testing.T) {
	t.Parallel()
	st, sim, id := vm(t, 0)
	signer, _ := st.VastAISSHKey()
	if err := sim.SetSSHExitStatus(id, 3); err != nil {
		t.Fatal(err)
	}
	res, err := sshboot.Run(context.Background(), endpoint(t, sim, id), signer, script, fast)
	var exit *sshboot.ExitError
	if !errors.As(err, &exit) || exit.Status != 3 || !res.Started || res.Attempts != 1 {
		t.Fatalf("Run: %+v, %v; want exit status 3 after one attempt", res, err)
	}
	if m := sim.Machines()[0]; m.Active || m.UserData != "" {
		t.Errorf("a failed bootstrap counts: %+v", m)
	}
}

func TestRunGivesUp(t *testing.T) {
	t.Parallel()
	st, sim, id := vm(t, 0)
	// A key the VM does not know: every attempt fails, a bounded number.
	pemKey, _, _ := sshboot.NewKey("")
	stranger, _, _ := sshboot.LoadKey(pemKey, "")
	o := fast
	o.Attempts = 3
	res, err := sshboot.Run(context.Background(), endpoint(t, sim, id), stranger, script, o)
	if err == nil || res.Attempts != 3 || res.Started || !strings.Contains(err.Error(), "gave up after 3 attempts") {
		t.Fatalf("Run with an unknown key: %+v, %v", res, err)
	}
	// Nothing listens: the same.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	signer, _ := st.VastAISSHKey()
	o.Attempts = 2
	if res, err := sshboot.Run(context.Background(), providers.SSHEndpoint{Host: "127.0.0.1", Port: closed}, signer, script, o); err == nil || res.Attempts != 2 {
		t.Errorf("Run on a closed port: %+v, %v", res, err)
	}
	// A cancelled context stops the retries.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	o.Attempts = 100
	if _, err := sshboot.Run(ctx, providers.SSHEndpoint{Host: "127.0.0.1", Port: closed}, signer, script, o); !errors.Is(err, context.Canceled) {
		t.Errorf("Run with a cancelled context: %v", err)
	}
}

func TestRunRefusesWhatItCannotDeliver(t *testing.T) {
	t.Parallel()
	pemKey, _, _ := sshboot.NewKey("")
	signer, _, _ := sshboot.LoadKey(pemKey, "")
	target := providers.SSHEndpoint{Host: "127.0.0.1", Port: 22}
	if _, err := sshboot.Run(context.Background(), target, signer, "#cloud-config\nhostname: x\n", fast); !errors.Is(err, sshboot.ErrNotScript) {
		t.Errorf("cloud-config: %v", err)
	}
	if _, err := sshboot.Run(context.Background(), providers.SSHEndpoint{}, signer, script, fast); err == nil {
		t.Error("no endpoint: no error")
	}
	o := fast
	o.HostKey = "not a key"
	if _, err := sshboot.Run(context.Background(), target, signer, script, o); err == nil {
		t.Error("an unreadable pin: no error")
	}
}
