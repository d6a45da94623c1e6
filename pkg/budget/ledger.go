package budget

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/clock"

	tgpv1 "github.com/solanyn/gpu-operator/pkg/apis/tgp/v1"
	listers "github.com/solanyn/gpu-operator/pkg/generated/listers/tgp/v1"
)

// ReasonOverBudget is the reason an offer loses, and a request stays
// Pending with OffersAvailable=False, when a GPUBudget refuses it.
const ReasonOverBudget = "OverBudget"

// CommitTTL bounds how long a committed reservation is counted while the
// ledger's Source has not yet shown the launched machine in the request's
// status (normally it shows it within moments: the write-ahead record is
// written before the launch call).
const CommitTTL = 10 * time.Minute

// OverBudgetError says which GPUBudget refuses a launch and why.
type OverBudgetError struct {
	Namespace string
	// Budget is the refusing GPUBudget's name.
	Budget string
	// Limit is the refusing limit: maxHourlySpend, monthlyLimit or maxGPUs.
	Limit string
	// Message explains it in dollars or GPUs.
	Message string
}

func (e *OverBudgetError) Error() string {
	return fmt.Sprintf("GPUBudget %s/%s: %s", e.Namespace, e.Budget, e.Message)
}

// AsOverBudget returns the OverBudgetError in err's chain, if any.
func AsOverBudget(err error) (*OverBudgetError, bool) {
	var e *OverBudgetError
	ok := errors.As(err, &e)
	return e, ok
}

// Source lists a namespace's GPUBudgets and GPURequests, as the operator's
// informers hold them. It must not call the API server.
type Source interface {
	Budgets(namespace string) ([]*tgpv1.GPUBudget, error)
	Requests(namespace string) ([]*tgpv1.GPURequest, error)
}

// ListerSource is the Source the controller builds from its listers.
func ListerSource(budgets listers.GPUBudgetLister, requests listers.GPURequestLister) Source {
	return listerSource{budgets, requests}
}

type listerSource struct {
	budgets  listers.GPUBudgetLister
	requests listers.GPURequestLister
}

func (s listerSource) Budgets(ns string) ([]*tgpv1.GPUBudget, error) {
	return s.budgets.GPUBudgets(ns).List(labels.Everything())
}

func (s listerSource) Requests(ns string) ([]*tgpv1.GPURequest, error) {
	return s.requests.GPURequests(ns).List(labels.Everything())
}

// Claim is a launch (or relaunch) about to be made for one GPURequest.
type Claim struct {
	Namespace string
	// Request is the GPURequest's UID (required). A request has at most one
	// machine: its claim replaces what its status says it runs, and its
	// earlier reservation, if any.
	Request types.UID
	// Name is the GPURequest's name, for messages.
	Name string
	// Machine is the machine name the launch uses (the write-ahead record's
	// status.machineName). Once the Source shows it with HourlyPrice in the
	// request's status, a committed reservation is no longer needed.
	Machine string
	// HourlyPrice is the offer's price, USD per hour for the whole machine.
	HourlyPrice float64
	// GPUs is the offer's GPU count.
	GPUs int32
}

// Ledger holds the headroom that launches in flight have reserved, on top
// of what the Source shows, so two workers launching in one namespace at
// once never take it past a budget. It is safe for concurrent use; each
// namespace is checked and reserved under its own lock.
type Ledger struct {
	src   Source
	clock clock.PassiveClock

	mu         sync.Mutex
	namespaces map[string]*nsLedger
}

type nsLedger struct {
	mu  sync.Mutex
	res map[types.UID]*Reservation
}

// NewLedger returns an empty ledger over src; clk drives the month, the
// accrual estimate and CommitTTL.
func NewLedger(src Source, clk clock.PassiveClock) *Ledger {
	return &Ledger{src: src, clock: clk, namespaces: map[string]*nsLedger{}}
}

func (l *Ledger) namespace(ns string) *nsLedger {
	l.mu.Lock()
	defer l.mu.Unlock()
	nl := l.namespaces[ns]
	if nl == nil {
		nl = &nsLedger{res: map[types.UID]*Reservation{}}
		l.namespaces[ns] = nl
	}
	return nl
}

// Reservation is headroom held for one Claim until Release or Commit.
type Reservation struct {
	l     *Ledger
	nl    *nsLedger
	claim Claim
	price micros

	// Guarded by nl.mu.
	committed   bool
	committedAt time.Time
	done        bool
}

// Claim is what was reserved.
func (r *Reservation) Claim() Claim { return r.claim }

// Release gives the headroom back: the launch failed, or was not made
// (the write-ahead record could not be written). Safe to call more than
// once, and after Commit, when it does nothing (so `defer r.Release()`
// after a Reserve is always right).
func (r *Reservation) Release() {
	r.nl.mu.Lock()
	defer r.nl.mu.Unlock()
	if r.done || r.committed {
		return
	}
	r.drop()
}

// Commit records that the launch succeeded (or may have: an ambiguous
// answer that may have created the machine counts as a success). The
// headroom stays taken until the Source shows the machine in the request's
// status, the request is gone from the Source, or CommitTTL passes. Safe to
// call more than once; after Release it does nothing.
func (r *Reservation) Commit() {
	r.nl.mu.Lock()
	defer r.nl.mu.Unlock()
	if r.done || r.committed {
		return
	}
	r.committed, r.committedAt = true, r.l.clock.Now()
}

// drop removes r; nl.mu is held.
func (r *Reservation) drop() {
	r.done = true
	if r.nl.res[r.claim.Request] == r {
		delete(r.nl.res, r.claim.Request)
	}
}

// Forget drops the reservation of a request whose machine the controller
// terminated or whose object is gone, without waiting for the Source.
func (l *Ledger) Forget(namespace string, request types.UID) {
	nl := l.namespace(namespace)
	nl.mu.Lock()
	defer nl.mu.Unlock()
	if r := nl.res[request]; r != nil {
		r.drop()
	}
}

// InFlight is what the namespace's reservations hold (pending and
// committed, not yet shown by the Source): for metrics and tests.
func (l *Ledger) InFlight(namespace string) (hourly float64, gpus int64, n int) {
	nl := l.namespace(namespace)
	nl.mu.Lock()
	defer nl.mu.Unlock()
	var h micros
	for _, r := range nl.res {
		h = h.add(r.price)
		gpus += int64(r.claim.GPUs)
	}
	return h.dollars(), gpus, len(nl.res)
}

// Headroom is what every GPUBudget of a namespace still allows one request
// to launch, counting the other requests' live machines and reservations.
// The selector asks it about each offer (Admit); Reserve asks it again,
// under the namespace's lock, for the offer chosen.
type Headroom struct {
	namespace string
	budgets   []budgetRoom
}

type budgetRoom struct {
	name string
	spec tgpv1.GPUBudgetSpec
	used usage
}

// Limited reports whether any valid GPUBudget applies.
func (h Headroom) Limited() bool { return len(h.budgets) > 0 }

// Admit returns nil when a machine at price (USD/h) with gpus GPUs fits
// every budget, or the *OverBudgetError of the first budget (by name) that
// refuses it: its monthlyLimit is reached, or the machine would take hourly
// spend above maxHourlySpend or GPUs above maxGPUs. Equal to a limit fits.
func (h Headroom) Admit(price float64, gpus int32) error {
	p := toMicros(price)
	for _, b := range h.budgets {
		refuse := func(limit, msg string) error {
			return &OverBudgetError{Namespace: h.namespace, Budget: b.name, Limit: limit, Message: msg}
		}
		spec, u := &b.spec, b.used
		if spec.MonthlyLimit != nil && u.month >= toMicros(*spec.MonthlyLimit) {
			return refuse(LimitMonthlyLimit, monthlyMessage(spec, u.month))
		}
		if spec.MaxHourlySpend != nil {
			if maxH := toMicros(*spec.MaxHourlySpend); u.hourly.add(p) > maxH {
				return refuse(LimitMaxHourlySpend, fmt.Sprintf("a machine at %s/h would take hourly spend to %s/h, over maxHourlySpend %s/h (headroom %s/h)",
					p, u.hourly.add(p), maxH, max(maxH-u.hourly, 0)))
			}
		}
		if spec.MaxGPUs != nil && u.gpus+int64(max(gpus, 0)) > int64(*spec.MaxGPUs) {
			return refuse(LimitMaxGPUs, fmt.Sprintf("%d GPUs would take GPUs in use to %d, over maxGPUs %d (headroom %d)",
				gpus, u.gpus+int64(gpus), *spec.MaxGPUs, max(int64(*spec.MaxGPUs)-u.gpus, 0)))
		}
	}
	return nil
}

// Headroom is the namespace's headroom for launching a machine for the
// request with UID request: that request's own live machine and
// reservation are left out (the launch replaces them).
func (l *Ledger) Headroom(namespace string, request types.UID) (Headroom, error) {
	nl := l.namespace(namespace)
	nl.mu.Lock()
	defer nl.mu.Unlock()
	return l.headroom(nl, namespace, request)
}

// Reserve checks the claim against every GPUBudget of its namespace,
// counting the live machines the Source shows and every other reservation,
// and holds its headroom when it fits. The check and the hold are one step
// under the namespace's lock, so concurrent claims never overshoot. An
// error from Admit is an *OverBudgetError naming the budget; any other
// error comes from the Source. The caller Releases the reservation when the
// launch fails or is not made and Commits it when the launch succeeded.
func (l *Ledger) Reserve(c Claim) (*Reservation, error) {
	if c.Request == "" {
		return nil, fmt.Errorf("budget: a claim needs the request's UID")
	}
	nl := l.namespace(c.Namespace)
	nl.mu.Lock()
	defer nl.mu.Unlock()
	h, err := l.headroom(nl, c.Namespace, c.Request)
	if err != nil {
		return nil, err
	}
	if err := h.Admit(c.HourlyPrice, c.GPUs); err != nil {
		return nil, err
	}
	if old := nl.res[c.Request]; old != nil {
		old.drop()
	}
	r := &Reservation{l: l, nl: nl, claim: c, price: toMicros(c.HourlyPrice)}
	nl.res[c.Request] = r
	return r, nil
}

// headroom computes a Headroom under nl.mu, first dropping committed
// reservations the Source has caught up with.
func (l *Ledger) headroom(nl *nsLedger, namespace string, request types.UID) (Headroom, error) {
	now := l.clock.Now()
	h := Headroom{namespace: namespace}
	all, err := l.src.Budgets(namespace)
	if err != nil {
		return h, err
	}
	var budgets []*tgpv1.GPUBudget
	for _, b := range byName(all) {
		if len(tgpv1.ValidateBudgetSpec(&b.Spec, field.NewPath("spec"))) == 0 {
			budgets = append(budgets, b)
		}
	}
	if len(budgets) == 0 {
		// Nothing to check. Reservations are still kept (a budget created
		// while a launch is in flight counts it), expiring by CommitTTL.
		for _, r := range nl.res {
			if r.committed && now.Sub(r.committedAt) > CommitTTL {
				r.drop()
			}
		}
		return h, nil
	}
	reqs, err := l.src.Requests(namespace)
	if err != nil {
		return h, err
	}
	byUID := make(map[types.UID]*tgpv1.GPURequest, len(reqs))
	for _, r := range reqs {
		byUID[r.UID] = r
	}
	for _, r := range nl.res {
		if r.committed && (shown(byUID[r.claim.Request], r) || now.Sub(r.committedAt) > CommitTTL) {
			r.drop()
		}
	}
	// A reservation stands in for its request's live machine (a relaunch
	// replaces it; a write-ahead record is the same machine).
	skip := func(uid types.UID) bool { return uid == request || nl.res[uid] != nil }
	var held usage
	for uid, r := range nl.res {
		if uid != request {
			held.hourly = held.hourly.add(r.price)
			held.gpus += int64(max(r.claim.GPUs, 0))
		}
	}
	listed := listedUIDs(reqs)
	for _, b := range budgets {
		d := deletedRecord(b, all, listed, now)
		u := count(&d, reqs, now, skip)
		u.hourly, u.gpus = u.hourly.add(held.hourly), u.gpus+held.gpus
		h.budgets = append(h.budgets, budgetRoom{name: b.Name, spec: b.Spec, used: u})
	}
	return h, nil
}

// shown reports whether the Source no longer needs committed reservation r:
// the request is gone, or its status shows r's machine at r's price (live
// or already over; either way the status now accounts for it).
func shown(req *tgpv1.GPURequest, r *Reservation) bool {
	if req == nil {
		return true
	}
	st := &req.Status
	if st.HourlyPrice == nil || toMicros(*st.HourlyPrice) != r.price {
		return false
	}
	if r.claim.Machine == "" {
		return Live(st)
	}
	return st.MachineName == r.claim.Machine
}
