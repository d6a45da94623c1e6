package paperspace_test

import (
	"context"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/paperspace"
)

func (e *env) instances(t *testing.T) map[string]providers.Instance {
	t.Helper()
	list, err := e.a.Instances(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]providers.Instance{}
	for _, in := range list {
		out[in.Name] = in
	}
	return out
}

// A machine that provisions and then stays off without ever starting is a
// capacity miss: the first listing that shows it off reports it failed
// (which the controller fails over from), not interrupted; a machine seen
// running that goes off is interrupted.
func TestStuckOffAfterCreateIsACapacityMiss(t *testing.T) {
	e := newEnv(t, cloudsim.Config{BootDelay: time.Minute, Catalog: []cloudsim.CatalogEntry{
		entry("H100x8", "ny2", -1), entry("H100x8", "ca1", -1),
	}}, nil)
	ctx := context.Background()
	e.sim.SetStuckOff("H100x8", "ny2", true)
	if _, err := e.a.Launch(ctx, launchReq("gpur-stuck-0", "H100x8", "ny2", "#!/bin/bash\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.a.Launch(ctx, launchReq("gpur-fine-0", "H100x8", "ca1", "#!/bin/bash\n")); err != nil {
		t.Fatal(err)
	}
	got := e.instances(t)
	if got["gpur-stuck-0"].State != providers.StatePending || got["gpur-fine-0"].State != providers.StatePending {
		t.Fatalf("while provisioning: %+v", got)
	}
	e.clock.Step(time.Minute)
	got = e.instances(t)
	if in := got["gpur-stuck-0"]; in.State != providers.StateFailed || in.NativeState != paperspace.NeverStartedState {
		t.Fatalf("stuck machine %+v, want failed (%s)", in, paperspace.NeverStartedState)
	}
	if in := got["gpur-fine-0"]; in.State != providers.StateRunning {
		t.Fatalf("other machine %+v, want running", in)
	}
	// Hours later it is still a capacity miss, never an interruption.
	e.clock.Step(3 * time.Hour)
	if in := e.instances(t)["gpur-stuck-0"]; in.State != providers.StateFailed {
		t.Fatalf("stuck machine later %+v", in)
	}
	// Seen running, then off: interrupted.
	if err := e.sim.Preempt(got["gpur-fine-0"].ID); err != nil {
		t.Fatal(err)
	}
	if in := e.instances(t)["gpur-fine-0"]; in.State != providers.StateInterrupted || in.NativeState != "off" {
		t.Fatalf("machine off after running %+v, want interrupted", in)
	}
}

// With a NeverStartedGrace the machine waits (booting) until the grace
// after its create has passed.
func TestNeverStartedGrace(t *testing.T) {
	e := newEnvWith(t, cloudsim.Config{Catalog: []cloudsim.CatalogEntry{entry("A100-80G", "ams1", -1)}}, nil,
		func(c *paperspace.Config) { c.NeverStartedGrace = 5 * time.Minute })
	e.sim.SetStuckOff("A100-80G", "ams1", true)
	if _, err := e.a.Launch(context.Background(), launchReq("gpur-grace-0", "A100-80G", "ams1", "")); err != nil {
		t.Fatal(err)
	}
	if in := e.instances(t)["gpur-grace-0"]; in.State != providers.StateBooting || in.NativeState != "off" {
		t.Fatalf("within the grace %+v, want booting (off)", in)
	}
	e.clock.Step(5 * time.Minute)
	if in := e.instances(t)["gpur-grace-0"]; in.State != providers.StateFailed {
		t.Fatalf("after the grace %+v, want failed", in)
	}
}

// The spec's region codes are what the adapter sends; the legacy display
// names are read as the same codes.
func TestRegionDisplayNamesAreRead(t *testing.T) {
	e := newEnv(t, cloudsim.Config{Catalog: []cloudsim.CatalogEntry{entry("A5000", "ams1", -1), entry("A5000", "ny2", -1)}}, nil)
	ctx := context.Background()
	for _, r := range []string{"ams1", "ny2"} {
		if _, err := e.a.Launch(ctx, launchReq("gpur-reg-"+r, "A5000", r, "")); err != nil {
			t.Fatal(err)
		}
	}
	e.sim.SetLongRegionNames(true)
	got := e.instances(t)
	if got["gpur-reg-ams1"].ProviderRegion != "ams1" || got["gpur-reg-ny2"].ProviderRegion != "ny2" {
		t.Fatalf("regions read from display names: %+v", got)
	}
	for in, want := range map[string]string{
		"East Coast (NY2)": "ny2", "West Coast (CA1)": "ca1", "Europe (AMS1)": "ams1", "ny2": "ny2", " CA1 ": "ca1",
	} {
		if got := paperspace.NativeRegion(in); got != want {
			t.Errorf("NativeRegion(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestBootstrapFormatsAreScriptsOnly(t *testing.T) {
	e := newEnv(t, cloudsim.Config{}, nil)
	if got := providers.BootstrapFormats(e.a); !slices.Equal(got, []providers.BootstrapFormat{providers.FormatScript}) {
		t.Fatalf("BootstrapFormats = %v, want [script]", got)
	}
}

func scriptNames(e *env) []string {
	var out []string
	for _, s := range e.sim.Scripts() {
		out = append(out, s.Name)
	}
	slices.Sort(out)
	return out
}

// Terminate deletes the machine, then its startup script; a refused create
// deletes its script at once; an ambiguous one keeps it for the machine
// that may exist.
func TestStartupScriptsAreDeleted(t *testing.T) {
	e := newEnv(t, cloudsim.Config{Catalog: []cloudsim.CatalogEntry{entry("A4000", "ny2", 1)}}, nil)
	ctx := context.Background()
	in, err := e.a.Launch(ctx, launchReq("gpur-del-0", "A4000", "ny2", "#!/bin/bash\necho join-secret\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := scriptNames(e); !slices.Equal(got, []string{"gpur-del-0"}) {
		t.Fatalf("scripts after launch %v", got)
	}
	// Out of capacity now: the refused create's script goes at once.
	_, err = e.a.Launch(ctx, launchReq("gpur-del-1", "A4000", "ny2", "#!/bin/bash\necho other\n"))
	wantClass(t, err, providers.ClassCapacity, http.StatusBadRequest)
	if got := scriptNames(e); !slices.Equal(got, []string{"gpur-del-0"}) {
		t.Fatalf("scripts after a refused create %v, want only gpur-del-0's", got)
	}
	if err := e.a.Terminate(ctx, in.ID); err != nil {
		t.Fatal(err)
	}
	if got := scriptNames(e); len(got) != 0 {
		t.Fatalf("scripts after terminate %v, want none", got)
	}
	// Terminating again (the machine is gone) is still fine.
	if err := e.a.Terminate(ctx, in.ID); err != nil {
		t.Fatal(err)
	}

	// The create's answer is lost: the machine exists, its script stays.
	var lose atomic.Bool
	lose.Store(true)
	e2 := newEnv(t, cloudsim.Config{Catalog: []cloudsim.CatalogEntry{entry("A4000", "ny2", -1)}}, loseCreateAnswers(&lose))
	_, err = e2.a.Launch(ctx, launchReq("gpur-amb-0", "A4000", "ny2", "#!/bin/bash\n"))
	wantClass(t, err, providers.ClassTransient, http.StatusBadGateway)
	if got := scriptNames(e2); !slices.Equal(got, []string{"gpur-amb-0"}) || len(e2.sim.Machines()) != 1 {
		t.Fatalf("scripts %v, machines %+v; want the script kept for the machine", got, e2.sim.Machines())
	}
}

// deleteBehindTheAdapter deletes a machine with a plain DELETE, as a
// process that crashed before its script delete would have.
func deleteBehindTheAdapter(t *testing.T, e *env, id string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, e.url+"/machines/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+testKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE machine %s: %d", id, resp.StatusCode)
	}
}

// A crash between a machine's delete and its script's (or a failed script
// delete) leaves the script; the sweep Instances runs deletes it once no
// listed machine has its name, and only then: never a live machine's, never
// one without the operator's prefix, never one younger than the grace, and
// at most once per ScriptSweepInterval.
func TestScriptSweep(t *testing.T) {
	e := newEnv(t, cloudsim.Config{Catalog: []cloudsim.CatalogEntry{entry("A4000", "ny2", -1)}}, nil)
	ctx := context.Background()
	gone, err := e.a.Launch(ctx, launchReq("gpur-gone-0", "A4000", "ny2", "#!/bin/bash\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.a.Launch(ctx, launchReq("gpur-live-0", "A4000", "ny2", "#!/bin/bash\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := e.a.Launch(ctx, launchReq("someone-elses", "A4000", "ny2", "#!/bin/bash\n")); err != nil {
		t.Fatal(err)
	}
	// The machine is deleted behind the adapter's back (a crash after the
	// machine delete): its script stays.
	deleteBehindTheAdapter(t, e, gone.ID)
	want := []string{"gpur-gone-0", "gpur-live-0", "someone-elses"}
	if got := scriptNames(e); !slices.Equal(got, want) {
		t.Fatalf("scripts %v, want %v", got, want)
	}
	// Too young: kept.
	e.instances(t)
	if got := scriptNames(e); !slices.Equal(got, want) {
		t.Fatalf("scripts after a sweep inside the grace %v, want %v", got, want)
	}
	// Old enough, and the sweep is due.
	e.clock.Step(10 * time.Minute)
	e.instances(t)
	if got := scriptNames(e); !slices.Equal(got, []string{"gpur-live-0", "someone-elses"}) {
		t.Fatalf("scripts after the sweep %v, want gpur-gone-0's deleted", got)
	}
	// Not due again yet: no script listing.
	before := e.sim.Core().Counters().Requests["GET /v1/startup-scripts"]
	e.instances(t)
	if n := e.sim.Core().Counters().Requests["GET /v1/startup-scripts"] - before; n != 0 {
		t.Fatalf("%d script listings within the sweep interval", n)
	}
}
