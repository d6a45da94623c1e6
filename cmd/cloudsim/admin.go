package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	vastaisim "github.com/solanyn/gpu-operator/pkg/cloudsim/vastai"
)

// adminUsage is what GET / on the admin API answers.
const adminUsage = `cloudsim admin API
  GET  /machines[?provider=P]          every simulated machine (JSON list), terminated ones included
  GET  /counters                       requests, launches per machine name, 429s and injected 5xx per provider
  GET  /runpod/creates                 every POST /v2/pods body RunPod received, as sent (image, args, env, ports)
  GET  /vastai/creates                 every PUT /api/v0/asks/{id}/ body Vast.ai received, as sent
  GET  /vastai/ssh-runs?id=ID          what a Vast.ai VM's SSH server was asked to run (commands and scripts)
  POST /vastai/outbid?id=ID&price=P    place a competing bid of P $/h on the host of interruptible instance ID
                                       (or name=NAME): the instance stops if its bid is now below the host's
                                       minimum; raising its bid (changeBid) resumes it
  POST /preempt?provider=P&id=ID       take a machine back, as the provider does (Lambda reports it
                                       preempted, RunPod stops the pod (EXITED), Paperspace turns the
                                       machine off, Vast.ai outbids an interruptible instance by $0.10/h)
  POST /preempt?name=NAME              the same, by machine name (the live machine of that name)
  POST /capacity?provider=P&instanceType=T&region=R&n=N
                                       set how many more machines of T the provider can launch in R
                                       (0: sold out, -1: unlimited); the catalog shows it at its next read
  GET  /faults[?provider=P]            injected faults per provider
  POST /faults[?provider=P]            set injected faults (all providers when P is empty), body e.g.
                                       {"errorRate": 0.2, "rateLimitRate": 0, "retryAfter": "1s", "latency": "300ms", "down": false}
  GET  /healthz                        ok
`

// admin serves the admin API over a set of simulators.
type admin struct {
	sims []cloudsim.Simulator
}

func (a *admin) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, adminUsage) })
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /machines", a.machines)
	mux.HandleFunc("GET /counters", a.counters)
	mux.HandleFunc("GET /runpod/creates", a.runpodCreates)
	mux.HandleFunc("GET /vastai/creates", a.vastaiCreates)
	mux.HandleFunc("GET /vastai/ssh-runs", a.vastaiSSHRuns)
	mux.HandleFunc("POST /vastai/outbid", a.vastaiOutbid)
	mux.HandleFunc("POST /preempt", a.preempt)
	mux.HandleFunc("POST /capacity", a.capacity)
	mux.HandleFunc("GET /faults", a.getFaults)
	mux.HandleFunc("POST /faults", a.setFaults)
	return mux
}

// selected returns the simulators a ?provider= names (all when empty).
func (a *admin) selected(r *http.Request) ([]cloudsim.Simulator, error) {
	p := r.URL.Query().Get("provider")
	if p == "" {
		return a.sims, nil
	}
	for _, s := range a.sims {
		if s.Provider() == p {
			return []cloudsim.Simulator{s}, nil
		}
	}
	return nil, fmt.Errorf("provider %q is not simulated here (have %s)", p, strings.Join(a.names(), ", "))
}

func (a *admin) names() []string {
	out := make([]string, 0, len(a.sims))
	for _, s := range a.sims {
		out = append(out, s.Provider())
	}
	return out
}

func (a *admin) machines(w http.ResponseWriter, r *http.Request) {
	sims, err := a.selected(r)
	if err != nil {
		httpError(w, http.StatusBadRequest, err)
		return
	}
	out := []cloudsim.Machine{}
	for _, s := range sims {
		ms := s.Machines()
		cloudsim.SortMachines(ms)
		out = append(out, ms...)
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *admin) counters(w http.ResponseWriter, _ *http.Request) {
	out := map[string]cloudsim.Counters{}
	for _, s := range a.sims {
		out[s.Provider()] = s.Core().Counters()
	}
	writeJSON(w, http.StatusOK, out)
}

// runpodCreates lists the pod create bodies RunPod's simulator received.
func (a *admin) runpodCreates(w http.ResponseWriter, _ *http.Request) {
	for _, s := range a.sims {
		if rp, ok := s.(interface{ CreateBodies() []json.RawMessage }); ok {
			writeJSON(w, http.StatusOK, rp.CreateBodies())
			return
		}
	}
	httpError(w, http.StatusNotFound, errors.New("runpod is not simulated here"))
}

// vastai is the Vast.ai simulator, if it runs here.
func (a *admin) vastai() (*vastaisim.Server, error) {
	for _, s := range a.sims {
		if v, ok := s.(*vastaisim.Server); ok {
			return v, nil
		}
	}
	return nil, errors.New("vastai is not simulated here")
}

// vastaiCreates lists the create bodies Vast.ai's simulator received.
func (a *admin) vastaiCreates(w http.ResponseWriter, _ *http.Request) {
	v, err := a.vastai()
	if err != nil {
		httpError(w, http.StatusNotFound, err)
		return
	}
	writeJSON(w, http.StatusOK, v.CreateBodies())
}

// vastaiSSHRuns lists what a VM's SSH server ran.
func (a *admin) vastaiSSHRuns(w http.ResponseWriter, r *http.Request) {
	v, err := a.vastai()
	if err != nil {
		httpError(w, http.StatusNotFound, err)
		return
	}
	runs, err := v.SSHRuns(r.URL.Query().Get("id"))
	if err != nil {
		httpError(w, http.StatusNotFound, err)
		return
	}
	writeJSON(w, http.StatusOK, runs)
}

// vastaiOutbid places a competing bid on an interruptible instance's host,
// by id or by the name of the live instance.
func (a *admin) vastaiOutbid(w http.ResponseWriter, r *http.Request) {
	v, err := a.vastai()
	if err != nil {
		httpError(w, http.StatusNotFound, err)
		return
	}
	q := r.URL.Query()
	id, name := q.Get("id"), q.Get("name")
	price, perr := strconv.ParseFloat(q.Get("price"), 64)
	if (id == "") == (name == "") || perr != nil || !(price > 0) {
		httpError(w, http.StatusBadRequest, errors.New("give exactly one of id= or name=, and price= (USD/h, positive)"))
		return
	}
	if name != "" {
		for _, m := range v.Machines() {
			if m.Name == name && m.Live {
				id = m.ID
			}
		}
		if id == "" {
			httpError(w, http.StatusNotFound, fmt.Errorf("no live Vast.ai instance named %q", name))
			return
		}
	}
	if err := v.Outbid(id, price); err != nil {
		httpError(w, http.StatusConflict, err)
		return
	}
	for _, m := range v.Machines() {
		if m.ID == id {
			writeJSON(w, http.StatusOK, m)
			return
		}
	}
}

// preempt takes a machine back, by provider and id or by machine name.
func (a *admin) preempt(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	id, name := q.Get("id"), q.Get("name")
	if (id == "") == (name == "") {
		httpError(w, http.StatusBadRequest, errors.New("give exactly one of id= (with provider=) or name="))
		return
	}
	sims, err := a.selected(r)
	if err != nil {
		httpError(w, http.StatusBadRequest, err)
		return
	}
	var target *cloudsim.Machine
	var sim cloudsim.Simulator
	for _, s := range sims {
		for _, m := range s.Machines() {
			if (id != "" && m.ID == id) || (name != "" && m.Name == name && m.Live && !m.Preempted) {
				target, sim = &m, s
				break
			}
		}
		if target != nil {
			break
		}
	}
	if target == nil {
		httpError(w, http.StatusNotFound, fmt.Errorf("no live machine with id %q / name %q", id, name))
		return
	}
	if err := sim.Preempt(target.ID); err != nil {
		httpError(w, http.StatusConflict, err)
		return
	}
	for _, m := range sim.Machines() {
		if m.ID == target.ID {
			writeJSON(w, http.StatusOK, m)
			return
		}
	}
	writeJSON(w, http.StatusOK, target)
}

// capacity sets the capacity left of one catalog entry, as another customer
// renting the last machines (or a provider adding some) would.
func (a *admin) capacity(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	typ, region, provider := q.Get("instanceType"), q.Get("region"), q.Get("provider")
	n, err := strconv.Atoi(q.Get("n"))
	if provider == "" || typ == "" || region == "" || err != nil || n < -1 {
		httpError(w, http.StatusBadRequest, errors.New("give provider=, instanceType=, region= and n= (a count, or -1 for unlimited)"))
		return
	}
	sims, err := a.selected(r)
	if err != nil {
		httpError(w, http.StatusBadRequest, err)
		return
	}
	core := sims[0].Core()
	if !core.SetCapacity(typ, region, n) {
		httpError(w, http.StatusNotFound, fmt.Errorf("%s sells no %q in %q here", provider, typ, region))
		return
	}
	e, _ := core.Entry(typ, region)
	writeJSON(w, http.StatusOK, e)
}

func (a *admin) getFaults(w http.ResponseWriter, r *http.Request) {
	sims, err := a.selected(r)
	if err != nil {
		httpError(w, http.StatusBadRequest, err)
		return
	}
	out := map[string]Faults{}
	for _, s := range sims {
		out[s.Provider()] = FaultsOf(s.Core().Faults())
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *admin) setFaults(w http.ResponseWriter, r *http.Request) {
	sims, err := a.selected(r)
	if err != nil {
		httpError(w, http.StatusBadRequest, err)
		return
	}
	var f Faults
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		httpError(w, http.StatusBadRequest, fmt.Errorf("decoding faults: %w", err))
		return
	}
	if f.ErrorRate < 0 || f.ErrorRate > 1 || f.RateLimitRate < 0 || f.RateLimitRate > 1 || f.Latency < 0 || f.RetryAfter < 0 {
		httpError(w, http.StatusBadRequest, errors.New("rates must be within 0..1 and durations not negative"))
		return
	}
	out := map[string]Faults{}
	for _, s := range sims {
		s.Core().SetFaults(f.Sim())
		out[s.Provider()] = f
	}
	writeJSON(w, http.StatusOK, out)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func httpError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}
