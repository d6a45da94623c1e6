package nodeagent

import (
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
)

// machines is a Simulator with a fixed list of machines.
type machines struct {
	cloudsim.Simulator
	list []cloudsim.Machine
}

func (m machines) Machines() []cloudsim.Machine { return m.list }

// allocatableGPUs is the nvidia.com/gpu the stored Node reports; -1 when it
// reports none.
func allocatableGPUs(t *testing.T, a *Agent, name string) int64 {
	t.Helper()
	n, err := a.Kube.CoreV1().Nodes().Get(t.Context(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	q, ok := n.Status.Allocatable[GPUResource]
	if !ok {
		return -1
	}
	if c := n.Status.Capacity[GPUResource]; c.Cmp(q) != 0 {
		t.Errorf("capacity %s, allocatable %s", c.String(), q.String())
	}
	return q.Value()
}

// A Node publishes the machine's GPUs at once by default, after
// DevicePluginDelay when set, and only once released under HoldGPUs.
func TestNodeGPUsAllocatable(t *testing.T) {
	sim := machines{list: []cloudsim.Machine{
		{Provider: "lambda", ID: "i-1", Name: "m-1", GPUs: 2, Active: true},
		{Provider: "lambda", ID: "i-2", Name: "m-2", GPUs: 1, Active: true},
	}}
	sync := func(a *Agent) {
		t.Helper()
		if err := a.Sync(t.Context()); err != nil {
			t.Fatal(err)
		}
	}

	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	a := &Agent{Kube: fake.NewClientset(), Simulators: []cloudsim.Simulator{sim}, Clock: clk}
	a.HoldGPUs("m-2", true)
	sync(a)
	if got := allocatableGPUs(t, a, "m-1"); got != 2 {
		t.Errorf("m-1 allocatable %d, want 2", got)
	}
	if got := allocatableGPUs(t, a, "m-2"); got != -1 {
		t.Errorf("m-2 allocatable %d while held, want none", got)
	}
	a.HoldGPUs("m-2", false)
	sync(a)
	if got := allocatableGPUs(t, a, "m-2"); got != 1 {
		t.Errorf("m-2 allocatable %d once released, want 1", got)
	}

	d := &Agent{Kube: fake.NewClientset(), Simulators: []cloudsim.Simulator{sim}, Clock: clk, DevicePluginDelay: 10 * time.Second}
	sync(d)
	if got := allocatableGPUs(t, d, "m-1"); got != -1 {
		t.Errorf("allocatable %d at registration, want none before the device plugin delay", got)
	}
	clk.Step(9 * time.Second)
	sync(d)
	if got := allocatableGPUs(t, d, "m-1"); got != -1 {
		t.Errorf("allocatable %d before the delay, want none", got)
	}
	clk.Step(time.Second)
	sync(d)
	if got := allocatableGPUs(t, d, "m-1"); got != 2 {
		t.Errorf("allocatable %d after the delay, want 2", got)
	}
}
