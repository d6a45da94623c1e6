package budget_test

import (
	"errors"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
)

const ns = "team-a"

// t0 is mid-December 2026, UTC.
var t0 = time.Date(2026, 12, 15, 12, 0, 0, 0, time.UTC)

func ptr[T any](v T) *T { return &v }

func at(t time.Time) *metav1.Time { m := metav1.NewTime(t); return &m }

func request(name string, opts ...func(*tgpv1.GPURequest)) *tgpv1.GPURequest {
	r := &tgpv1.GPURequest{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("uid-" + name)},
		Spec:       tgpv1.GPURequestSpec{GPUType: "A100", GPUCount: 1},
		Status:     tgpv1.GPURequestStatus{Phase: tgpv1.PhasePending},
	}
	for _, o := range opts {
		o(r)
	}
	return r
}

// running: a Ready machine at price, launched (and billed up to) since.
func running(price float64, since time.Time) func(*tgpv1.GPURequest) {
	return func(r *tgpv1.GPURequest) {
		st := &r.Status
		st.Phase, st.MachineName, st.InstanceID = tgpv1.PhaseReady, "tgp-"+r.Name+"-1", "i-"+r.Name
		st.HourlyPrice, st.LaunchedAt, st.ProvisionedAt, st.CostUpdatedAt = ptr(price), at(since), at(since), at(since)
		st.AccumulatedCost = ptr(0.0)
	}
}

// writeAhead: the Provisioning record written before a launch call.
func writeAhead(price float64, machine string) func(*tgpv1.GPURequest) {
	return func(r *tgpv1.GPURequest) {
		st := &r.Status
		st.Phase, st.MachineName, st.HourlyPrice = tgpv1.PhaseProvisioning, machine, ptr(price)
	}
}

func terminated(price float64) func(*tgpv1.GPURequest) {
	return func(r *tgpv1.GPURequest) {
		st := &r.Status
		st.Phase, st.MachineName, st.InstanceID, st.HourlyPrice = tgpv1.PhaseTerminated, "tgp-"+r.Name+"-1", "i-"+r.Name, ptr(price)
	}
}

func gpus(n int32) func(*tgpv1.GPURequest) { return func(r *tgpv1.GPURequest) { r.Spec.GPUCount = n } }

func spent(month string, cost float64) func(*tgpv1.GPURequest) {
	return func(r *tgpv1.GPURequest) { r.Status.MonthCost = &tgpv1.MonthCost{Month: month, Cost: cost} }
}

func newBudget(name string, opts ...func(*tgpv1.GPUBudget)) *tgpv1.GPUBudget {
	b := &tgpv1.GPUBudget{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("uid-budget-" + name), Generation: 1}}
	for _, o := range opts {
		o(b)
	}
	return b
}

func maxHourly(v float64) func(*tgpv1.GPUBudget) {
	return func(b *tgpv1.GPUBudget) { b.Spec.MaxHourlySpend = ptr(v) }
}

func monthly(v float64, action tgpv1.MonthlyLimitAction) func(*tgpv1.GPUBudget) {
	return func(b *tgpv1.GPUBudget) { b.Spec.MonthlyLimit, b.Spec.OnMonthlyLimit = ptr(v), action }
}

func maxGPUs(v int32) func(*tgpv1.GPUBudget) {
	return func(b *tgpv1.GPUBudget) { b.Spec.MaxGPUs = ptr(v) }
}

// fakeSource is a Source over slices a test can change while the ledger runs.
type fakeSource struct {
	mu       sync.Mutex
	budgets  []*tgpv1.GPUBudget
	requests []*tgpv1.GPURequest
	err      error
}

func (s *fakeSource) Budgets(namespace string) ([]*tgpv1.GPUBudget, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*tgpv1.GPUBudget
	for _, b := range s.budgets {
		if b.Namespace == namespace {
			out = append(out, b)
		}
	}
	return out, s.err
}

func (s *fakeSource) Requests(namespace string) ([]*tgpv1.GPURequest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*tgpv1.GPURequest
	for _, r := range s.requests {
		if r.Namespace == namespace {
			out = append(out, r)
		}
	}
	return out, s.err
}

// set replaces the request with r's UID (or adds r), as an informer update does.
func (s *fakeSource) set(r *tgpv1.GPURequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, o := range s.requests {
		if o.UID == r.UID {
			s.requests[i] = r
			return
		}
	}
	s.requests = append(s.requests, r)
}

func (s *fakeSource) remove(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, o := range s.requests {
		if o.UID == uid {
			s.requests = append(s.requests[:i], s.requests[i+1:]...)
			return
		}
	}
}

var errListing = errors.New("informer not synced")
