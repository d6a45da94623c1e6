// Package runpod simulates RunPod's REST v2 API (https://api.runpod.io,
// ../shared/provider-specs/runpod/rest-v2-openapi.json) over HTTP for tests
// and the demo. It serves the operations the operator uses and their
// neighbours:
//
//   - GET /v2/pods (listPods), answered wrapped: {"pods": [...]};
//   - POST /v2/pods (createPod), 201 with the Pod;
//   - GET and DELETE /v2/pods/{id} (getPod, deletePod: 204);
//   - POST /v2/pods/{id}/action (podAction: start, stop, restart, terminate);
//   - GET /v2/catalog/gpus (listGpuTypes) with include=AVAILABILITY, product,
//     count and cloud.
//
// Every error is an RFC 9457 application/problem+json ErrorResponse
// {title, status, detail[, errors]}, with the spec's own example wording
// where it has one. Every authenticated answer carries RateLimit and
// RateLimit-Policy headers when the simulator enforces a rate; a 429 also
// carries Retry-After in integer seconds. Pods are rendered with every
// field the spec's Pod requires. REST v1 and GraphQL are not served: RunPod
// retired v1 on 2026-11-15, and the operator uses neither.
//
// Catalog entries are RunPod GPU types (InstanceType) in data centers
// (Region); GPUs is the largest pod of the type there and OnDemandPrice the
// price of one GPU, as RunPod quotes them. SpotPrice is ignored: RunPod
// sells no spot capacity any more. The simulator sells its whole catalog in
// both clouds (SECURE and COMMUNITY) at the same price and from the same
// capacity, and records which cloud each pod was asked for.
//
// Pods are containers: a new pod is PROVISIONING, then STARTING, then
// RUNNING (SetDelays; by default half of BootDelay each), and only a RUNNING
// pod has runtime port mappings with a public IP. Preempt stops a pod as
// RunPod does when it takes the machine back (EXITED, still billing its
// disk); Fail puts it in ERROR. A deleted pod is TERMINATED and listed for
// TerminateDelay, then gone (404). FailAfterCreate makes creates answer 500
// after the pod exists, as RunPod has been seen to.
package runpod

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod/runpodv2"
)

// Error details. RunPod's spec gives example problem bodies for most
// statuses; those are used as given. Capacity has none (see MsgNoCapacity).
const (
	// MsgNoCapacity is the detail of a 400 when nothing matching is free:
	// RunPod's scheduler wording as reported in public issues (see the
	// adapter's capacityPhrases); REST v2 documents no text of its own.
	MsgNoCapacity = "There are no longer any instances available with the requested specifications. Please refresh and try again."
	// MsgBalance is the detail of the 402 sent when the account's quota of
	// live pods (cloudsim.Config.Quota) is used up; 402 "Insufficient
	// balance" is the one account limit createPod documents.
	MsgBalance = "insufficient balance: your account balance cannot cover another pod"
	// MsgNotFound is the spec's example detail of a 404.
	MsgNotFound = "pod not found"
)

// Server is the RunPod simulator. It is safe for concurrent use.
type Server struct {
	core *cloudsim.Core
	mux  *http.ServeMux

	mu              sync.Mutex
	pods            map[string]*pod
	order           []string // pod ids in creation order
	creates         [][]byte // every create body received, in order
	failAfterCreate int      // creates left that answer 500 after making the pod
	provisionDelay  time.Duration
	startDelay      time.Duration
}

// pod is a simulated pod.
type pod struct {
	id, name     string
	gpuType, dc  string
	gpus         int
	cloud        runpodv2.Cloud
	perGPU       float64 // USD/h per GPU as billed
	image, args  string
	env          map[string]string
	ports        []string // "port/protocol", as created
	seq          int
	createdAt    time.Time
	stoppedAt    time.Time // zero unless stopped (EXITED)
	preempted    bool      // stopped by Preempt, not by a stop action
	failed       bool      // ERROR
	terminatedAt time.Time // zero while not deleted
}

var _ cloudsim.Simulator = (*Server)(nil)

// New builds a simulator; a nil clock means the real clock.
func New(cfg cloudsim.Config, clk clock.Clock) *Server {
	s := &Server{
		core: cloudsim.NewCore(cfg, clk), mux: http.NewServeMux(), pods: map[string]*pod{},
		provisionDelay: cfg.BootDelay / 2,
	}
	s.startDelay = cfg.BootDelay - s.provisionDelay
	s.handle("GET /v2/pods", false, s.listPods)
	s.handle("POST /v2/pods", true, s.createPod)
	s.handle("GET /v2/pods/{id}", false, s.getPod)
	s.handle("DELETE /v2/pods/{id}", false, s.deletePod)
	s.handle("POST /v2/pods/{id}/action", false, s.podAction)
	s.handle("GET /v2/catalog/gpus", false, s.catalog)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "resource not found")
	})
	return s
}

// Provider is providers.RunPod.
func (s *Server) Provider() string { return providers.RunPod }

// Core gives the shared counters, faults and catalog.
func (s *Server) Core() *cloudsim.Core { return s.core }

// ServeHTTP serves the RunPod API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// SetDelays sets how long a new pod stays PROVISIONING and then STARTING
// before it is RUNNING (default: BootDelay split in two halves).
func (s *Server) SetDelays(provisioning, starting time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.provisionDelay, s.startDelay = provisioning, starting
}

// FailAfterCreate makes the next n creates that would succeed create their
// pod and then answer 500, as RunPod has: the caller cannot tell whether the
// pod exists. The pods count as launches.
func (s *Server) FailAfterCreate(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failAfterCreate = n
}

// CreateBodies returns every POST /v2/pods body the simulator has admitted,
// as received, in order (tests assert on the exact JSON).
func (s *Server) CreateBodies() []json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]json.RawMessage, len(s.creates))
	for i, b := range s.creates {
		out[i] = slices.Clone(b)
	}
	return out
}

// maxRequest bounds request bodies.
const maxRequest = 1 << 20

// handle registers h behind core.Admit, answering the gate's verdicts with
// RunPod's problem documents.
func (s *Server) handle(endpoint string, launch bool, h http.HandlerFunc) {
	s.mux.HandleFunc(endpoint, func(w http.ResponseWriter, r *http.Request) {
		// Read the whole request first, as a real front end does: only then
		// does net/http watch the connection, so a client that gives up
		// (times out) cancels r.Context() during injected latency, and the
		// call then goes on to be served, like a request whose answer is lost.
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequest))
		if err != nil {
			writeProblem(w, http.StatusRequestEntityTooLarge, "request body too large")
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		gate := s.core.Admit(r.Context(), endpoint, cloudsim.BearerKey(r), launch)
		if gate != cloudsim.Unauthorized {
			s.rateHeaders(w, gate == cloudsim.RateLimited)
		}
		switch gate {
		case cloudsim.Serve:
			h(w, r)
		case cloudsim.Unauthorized:
			detail := "invalid bearer token"
			if cloudsim.BearerKey(r) == "" {
				detail = "missing bearer token" // the spec's example
			}
			writeProblem(w, http.StatusUnauthorized, detail)
		case cloudsim.RateLimited:
			w.Header().Set("Retry-After", strconv.Itoa(s.core.RetryAfter()))
			writeProblem(w, http.StatusTooManyRequests, "rate limit exceeded for the minute window")
		case cloudsim.Fail:
			writeProblem(w, http.StatusInternalServerError, "an unexpected error occurred")
		case cloudsim.Unavailable:
			writeProblem(w, http.StatusServiceUnavailable, "service temporarily unavailable")
		}
	})
}

// rateHeaders sets RateLimit-Policy and RateLimit for the simulator's
// enforced rate, as a per-minute window (the spec's window names are minute,
// hour and day); exhausted reports the window as used up.
func (s *Server) rateHeaders(w http.ResponseWriter, exhausted bool) {
	rps := s.core.Config().RequestsPerSecond
	if rps <= 0 && !exhausted {
		return
	}
	quota := max(1, int(rps*60))
	remaining := quota
	if exhausted {
		remaining = 0
	}
	reset := 60
	if exhausted {
		reset = s.core.RetryAfter()
	}
	w.Header().Set("RateLimit-Policy", fmt.Sprintf(`"minute";q=%d;w=60`, quota))
	w.Header().Set("RateLimit", fmt.Sprintf(`"minute";r=%d;t=%d`, remaining, reset))
}

// writeProblem answers an RFC 9457 problem document (the spec's ErrorResponse).
func writeProblem(w http.ResponseWriter, status int, detail string, errs ...string) {
	p := runpodv2.ErrorResponse{Title: http.StatusText(status), Status: status, Detail: detail}
	if len(errs) > 0 {
		p.Errors = &errs
	}
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(p)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// portRE is REST v2's "port/protocol" (the spec's examples: 8888/http, 22/tcp).
var portRE = regexp.MustCompile(`^([0-9]{1,5})/(http|tcp)$`)

// createPod serves POST /v2/pods.
func (s *Server) createPod(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	var in runpodv2.CreatePodRequest
	dec := json.NewDecoder(bytes.NewReader(raw))
	// CreatePodRequest is unevaluatedProperties: false.
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		writeProblem(w, http.StatusUnprocessableEntity, "Request validation failed.", "$: "+err.Error())
		return
	}
	s.mu.Lock()
	s.creates = append(s.creates, raw)
	s.mu.Unlock()

	var violations []string
	if in.Name == "" {
		violations = append(violations, "$.name: minLength: got 0, want 1")
	}
	if in.Gpu != nil && in.Gpu.Count != nil && *in.Gpu.Count < 1 {
		violations = append(violations, fmt.Sprintf("$.gpu.count: minimum: got %d, want 1", *in.Gpu.Count))
	}
	if in.TemplateId == nil && (in.Image == nil || *in.Image == "") {
		violations = append(violations, "$: missing property 'image'")
	}
	if in.Cloud != nil && !in.Cloud.Valid() {
		violations = append(violations, fmt.Sprintf("$.cloud: value must be one of 'SECURE', 'COMMUNITY', got %q", *in.Cloud))
	}
	var ports []string
	if in.Ports != nil {
		for i, p := range *in.Ports {
			m := portRE.FindStringSubmatch(p)
			if m == nil {
				violations = append(violations, fmt.Sprintf("$.ports[%d]: %q is not port/protocol (http or tcp)", i, p))
				continue
			}
			if n, _ := strconv.Atoi(m[1]); n < 1 || n > 65535 {
				violations = append(violations, fmt.Sprintf("$.ports[%d]: %q is not port/protocol (http or tcp)", i, p))
				continue
			}
			ports = append(ports, p)
		}
	}
	if len(violations) > 0 {
		writeProblem(w, http.StatusUnprocessableEntity, "Request validation failed.", violations...)
		return
	}
	switch {
	case in.Gpu == nil && in.Cpu == nil, in.Gpu != nil && in.Cpu != nil:
		writeProblem(w, http.StatusBadRequest, "exactly one of gpu or cpu must be set")
		return
	case in.Cpu != nil:
		writeProblem(w, http.StatusBadRequest, "CPU pods are not simulated")
		return
	case in.TemplateId != nil:
		writeProblem(w, http.StatusNotFound, "template not found") // the simulator has no templates
		return
	}
	count := 1
	if in.Gpu.Count != nil {
		count = *in.Gpu.Count
	}
	cloud := runpodv2.CloudSECURE
	if in.Cloud != nil {
		cloud = *in.Cloud
	}
	catalog := s.core.Catalog()
	if !slices.ContainsFunc(catalog, func(e cloudsim.CatalogEntry) bool { return e.InstanceType == in.Gpu.Id }) {
		writeProblem(w, http.StatusBadRequest, fmt.Sprintf("unknown GPU type %q", in.Gpu.Id))
		return
	}
	var dcs []string
	if in.DataCenterIds != nil {
		for _, dc := range *in.DataCenterIds {
			if !slices.ContainsFunc(catalog, func(e cloudsim.CatalogEntry) bool { return e.Region == dc }) {
				writeProblem(w, http.StatusBadRequest, fmt.Sprintf("unknown data center %q", dc))
				return
			}
			dcs = append(dcs, dc)
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if q := s.core.Config().Quota; q > 0 && s.liveLocked() >= q {
		writeProblem(w, http.StatusPaymentRequired, MsgBalance)
		return
	}
	// Place the pod in the first data center, in catalog order, that sells
	// the type at this size and has a free machine (any, when none is given).
	for _, e := range catalog {
		if e.InstanceType != in.Gpu.Id || (len(dcs) > 0 && !slices.Contains(dcs, e.Region)) || e.GPUs < count || e.OnDemandPrice <= 0 {
			continue
		}
		if !s.core.TakeCapacity(e.InstanceType, e.Region) {
			continue
		}
		now := s.core.Now()
		p := &pod{
			id: s.core.NextID("pod"), name: in.Name, gpuType: e.InstanceType, dc: e.Region, gpus: count, cloud: cloud,
			perGPU: e.OnDemandPrice, image: derefp(in.Image), args: derefp(in.Args),
			env: map[string]string{}, ports: ports, seq: len(s.order) + 1, createdAt: now,
		}
		if in.Env != nil {
			for k, v := range *in.Env {
				p.env[k] = v
			}
		}
		s.pods[p.id] = p
		s.order = append(s.order, p.id)
		s.core.RecordLaunch(p.name)
		if s.failAfterCreate > 0 {
			s.failAfterCreate--
			writeProblem(w, http.StatusInternalServerError, "an unexpected error occurred")
			return
		}
		// The create answers the pod as it starts, PROVISIONING ("the pod
		// starts in PROVISIONING": createPod), whatever the delays.
		out := s.render(p, now)
		out.Status, out.Actions, out.Cost, out.StartedAt, out.Runtime, out.Ssh.Direct = runpodv2.PROVISIONING, actions(runpodv2.PROVISIONING), 0, nil, nil, nil
		writeJSON(w, http.StatusCreated, out)
		return
	}
	writeProblem(w, http.StatusBadRequest, MsgNoCapacity)
}

// liveLocked counts pods not terminated (stopped ones count: they still exist).
func (s *Server) liveLocked() int {
	n := 0
	for _, p := range s.pods {
		if p.terminatedAt.IsZero() {
			n++
		}
	}
	return n
}

// visible reports whether a pod is still returned by the API at now.
func (s *Server) visible(p *pod, now time.Time) bool {
	return p.terminatedAt.IsZero() || now.Before(p.terminatedAt.Add(s.core.Config().TerminateDelay))
}

// listPods serves GET /v2/pods (includeClusterPods changes nothing: the
// simulator has no clusters).
func (s *Server) listPods(w http.ResponseWriter, r *http.Request) {
	if v := r.URL.Query().Get("includeClusterPods"); v != "" && v != "true" && v != "false" {
		writeProblem(w, http.StatusUnprocessableEntity, "Request validation failed.", "includeClusterPods: value must be a boolean")
		return
	}
	now := s.core.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	// ListPodsResponse, with the pods rendered as podJSON.
	pods := make([]podJSON, 0, len(s.order))
	for _, id := range s.order {
		if p := s.pods[id]; s.visible(p, now) {
			pods = append(pods, s.render(p, now))
		}
	}
	writeJSON(w, http.StatusOK, struct {
		Pods []podJSON `json:"pods"`
	}{pods})
}

// getPod serves GET /v2/pods/{id}.
func (s *Server) getPod(w http.ResponseWriter, r *http.Request) {
	now := s.core.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pods[r.PathValue("id")]
	if !ok || !s.visible(p, now) {
		writeProblem(w, http.StatusNotFound, MsgNotFound)
		return
	}
	writeJSON(w, http.StatusOK, s.render(p, now))
}

// deletePod serves DELETE /v2/pods/{id}: 204, or 404 for a pod that is
// gone or already deleted.
func (s *Server) deletePod(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.terminateLocked(r.PathValue("id")) {
		writeProblem(w, http.StatusNotFound, MsgNotFound)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// terminateLocked deletes a pod; false when there is none to delete.
func (s *Server) terminateLocked(id string) bool {
	p, ok := s.pods[id]
	if !ok || !p.terminatedAt.IsZero() {
		return false
	}
	p.terminatedAt = s.core.Now()
	if p.stoppedAt.IsZero() {
		s.core.ReturnCapacity(p.gpuType, p.dc) // a stopped pod gave its GPUs back already
	}
	return true
}

// podAction serves POST /v2/pods/{id}/action. Valid actions per status, as
// the spec lists them: RUNNING stop/restart/terminate; EXITED and ERROR
// start/terminate; PROVISIONING and STARTING stop/terminate. Anything else
// is 409.
func (s *Server) podAction(w http.ResponseWriter, r *http.Request) {
	var in runpodv2.PodActionRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil || !in.Action.Valid() {
		writeProblem(w, http.StatusUnprocessableEntity, "Request validation failed.", "$.action: value must be one of 'start', 'stop', 'restart', 'terminate'")
		return
	}
	now := s.core.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pods[r.PathValue("id")]
	if !ok || !s.visible(p, now) || !p.terminatedAt.IsZero() {
		writeProblem(w, http.StatusNotFound, MsgNotFound)
		return
	}
	st := s.status(p, now)
	if !slices.Contains(actions(st), in.Action) {
		writeProblem(w, http.StatusConflict, fmt.Sprintf("action %q is not valid for a pod in status %s", in.Action, st))
		return
	}
	switch in.Action {
	case runpodv2.Terminate:
		s.terminateLocked(p.id)
		w.WriteHeader(http.StatusNoContent)
		return
	case runpodv2.Stop:
		s.stopLocked(p, false)
	case runpodv2.Start:
		// A failed pod kept its GPUs; a stopped one needs them back.
		if !p.failed && !s.core.TakeCapacity(p.gpuType, p.dc) {
			writeProblem(w, http.StatusBadRequest, MsgNoCapacity)
			return
		}
		p.stoppedAt, p.preempted, p.failed, p.createdAt = time.Time{}, false, false, now
	case runpodv2.Restart:
		p.createdAt = now.Add(-s.provisionDelay) // back to STARTING
	}
	writeJSON(w, http.StatusOK, s.render(p, now))
}

// stopLocked stops a pod: EXITED, its GPUs released, its disk kept.
func (s *Server) stopLocked(p *pod, preempted bool) {
	p.stoppedAt, p.preempted = s.core.Now(), preempted
	s.core.ReturnCapacity(p.gpuType, p.dc)
}

// status is a pod's PodStatus at now.
func (s *Server) status(p *pod, now time.Time) runpodv2.PodStatus {
	switch {
	case !p.terminatedAt.IsZero():
		return runpodv2.TERMINATED
	case p.failed:
		return runpodv2.ERROR
	case !p.stoppedAt.IsZero():
		return runpodv2.EXITED
	case now.Before(p.createdAt.Add(s.provisionDelay)):
		return runpodv2.PROVISIONING
	case now.Before(p.createdAt.Add(s.provisionDelay + s.startDelay)):
		return runpodv2.STARTING
	}
	return runpodv2.RUNNING
}

// actions are the valid transitions of a status (the spec's podAction).
func actions(st runpodv2.PodStatus) []runpodv2.PodAction {
	switch st {
	case runpodv2.RUNNING:
		return []runpodv2.PodAction{runpodv2.Stop, runpodv2.Restart, runpodv2.Terminate}
	case runpodv2.EXITED, runpodv2.ERROR:
		return []runpodv2.PodAction{runpodv2.Start, runpodv2.Terminate}
	case runpodv2.PROVISIONING, runpodv2.STARTING:
		return []runpodv2.PodAction{runpodv2.Stop, runpodv2.Terminate}
	}
	return []runpodv2.PodAction{}
}

// podJSON is a Pod as RunPod sends it. The generated runpodv2.Pod cannot
// say null for ssh.proxy, ssh.direct and runtime (the spec's anyOf with null
// became plain structs), so those fields are shadowed here.
type podJSON struct {
	runpodv2.Pod
	Ssh     podSsh               `json:"ssh"`
	Runtime *runpodv2.PodRuntime `json:"runtime"`
}

type podSsh struct {
	Proxy  *runpodv2.PodSshEndpoint `json:"proxy"`
	Direct *runpodv2.PodSshEndpoint `json:"direct"`
}

// publicIP is the address of a pod's host.
func publicIP(p *pod) string { return fmt.Sprintf("100.65.%d.%d", p.seq/250, p.seq%250+1) }

// publicPort is the host port a pod's i-th exposed port is mapped to.
func publicPort(p *pod, i int) int { return 10000 + (p.seq%5000)*10 + i }

// render is the Pod of p at now, with every field the spec requires.
func (s *Server) render(p *pod, now time.Time) podJSON {
	st := s.status(p, now)
	out := podJSON{Pod: runpodv2.Pod{
		Id:               p.id,
		Name:             p.name,
		Status:           st,
		Actions:          actions(st),
		Image:            p.image,
		Args:             p.args,
		Disk:             50,
		Mounts:           runpodv2.Mounts{},
		Ports:            append([]string{}, p.ports...),
		Env:              map[string]string{},
		Cloud:            p.cloud,
		DataCenterId:     new(p.dc),
		CudaVersion:      new("12.8"),
		Cost:             0,
		GlobalNetworking: runpodv2.PodGlobalNetworking{Enabled: false},
		CreatedAt:        p.createdAt.UTC(),
		Gpu:              &runpodv2.GpuConfig{Id: p.gpuType, Count: new(p.gpus)},
	}}
	for k, v := range p.env {
		out.Env[k] = v
	}
	if st != runpodv2.TERMINATED {
		out.Ssh.Proxy = &runpodv2.PodSshEndpoint{Host: "ssh.runpod.io", Port: 22, Username: p.id + "-64411eb2", Command: "ssh " + p.id + "-64411eb2@ssh.runpod.io"}
	}
	if st == runpodv2.RUNNING {
		out.Cost = p.perGPU * float64(p.gpus)
		out.StartedAt = new(p.createdAt.Add(s.provisionDelay + s.startDelay).UTC())
		rt := &runpodv2.PodRuntime{Uptime: new(int(now.Sub(*out.StartedAt).Seconds())), Ports: &[]runpodv2.PodRuntimePort{}}
		ip := publicIP(p)
		for i, spec := range p.ports {
			port, proto, _ := strings.Cut(spec, "/")
			n, _ := strconv.Atoi(port)
			m := runpodv2.PodRuntimePort{Private: new(n), Type: new(proto), Ip: new(ip), Public: new(publicPort(p, i))}
			*rt.Ports = append(*rt.Ports, m)
			if spec == "22/tcp" {
				out.Ssh.Direct = &runpodv2.PodSshEndpoint{Host: ip, Port: publicPort(p, i), Username: "root",
					Command: fmt.Sprintf("ssh root@%s -p %d", ip, publicPort(p, i))}
			}
		}
		out.Runtime = rt
	}
	return out
}

// Preempt stops a pod the way RunPod does when it takes a machine back on
// its own (host maintenance or failure, an exhausted balance): the pod is
// EXITED, its GPUs are released, and it still exists (billing its disk)
// until it is deleted. RunPod sells no spot capacity, so any pod that is not
// already stopped, failed or deleted can be stopped.
func (s *Server) Preempt(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pods[id]
	switch {
	case !ok:
		return fmt.Errorf("runpod sim: no pod %q", id)
	case !p.terminatedAt.IsZero() || !p.stoppedAt.IsZero() || p.failed:
		return fmt.Errorf("runpod sim: pod %q is %s", id, s.status(p, s.core.Now()))
	}
	s.stopLocked(p, true)
	return nil
}

// Fail puts a pod that is not deleted or stopped into ERROR ("an
// unrecoverable error state"); it keeps its GPUs until it is deleted.
func (s *Server) Fail(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pods[id]
	switch {
	case !ok:
		return fmt.Errorf("runpod sim: no pod %q", id)
	case !p.terminatedAt.IsZero() || !p.stoppedAt.IsZero():
		return fmt.Errorf("runpod sim: pod %q is %s", id, s.status(p, s.core.Now()))
	}
	p.failed = true
	return nil
}

// Machines returns every pod ever created, terminated ones included. Every
// one is a Container: the node agent registers no Node for it.
func (s *Server) Machines() []cloudsim.Machine {
	now := s.core.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]cloudsim.Machine, 0, len(s.pods))
	for _, p := range s.pods {
		st := s.status(p, now)
		out = append(out, cloudsim.Machine{
			Provider: providers.RunPod, ID: p.id, Name: p.name, InstanceType: p.gpuType, Region: p.dc,
			GPUs: p.gpus, NativeState: string(st), Container: true,
			Active: st == runpodv2.RUNNING, Live: p.terminatedAt.IsZero(), Preempted: p.preempted,
		})
	}
	cloudsim.SortMachines(out)
	return out
}

// stock is RunPod's availability level for a remaining capacity
// (negative: unlimited).
func stock(capacity int) runpodv2.AvailabilityLevel {
	switch {
	case capacity < 0 || capacity >= 10:
		return runpodv2.HIGH
	case capacity >= 3:
		return runpodv2.MEDIUM
	case capacity > 0:
		return runpodv2.LOW
	}
	return runpodv2.NONE
}

// levelRank orders availability levels.
var levelRank = map[runpodv2.AvailabilityLevel]int{runpodv2.NONE: 0, runpodv2.LOW: 1, runpodv2.MEDIUM: 2, runpodv2.HIGH: 3}

// memoryGB reads the VRAM from a GPU type id ("NVIDIA H100 80GB HBM3": 80).
var memoryGB = regexp.MustCompile(`([0-9]+)GB`)

// catalog serves GET /v2/catalog/gpus. A type's price is the lowest
// on-demand price of its entries, its maxCount the largest entry, in both
// clouds. With include=AVAILABILITY (which, as in RunPod, requires product
// and vice versa; count and cloud are valid only with it) it adds
// availability for pods of `count` GPUs: per data center from the entry's
// remaining capacity, omitting dataCenters when none has any.
func (s *Server) catalog(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	include, product := q.Get("include"), q.Get("product")
	if include != "" && include != string(runpodv2.AVAILABILITY) {
		writeProblem(w, http.StatusUnprocessableEntity, "Request validation failed.", fmt.Sprintf("include: unsupported value %q", include))
		return
	}
	withAvailability := include != ""
	if withAvailability != (product != "") {
		writeProblem(w, http.StatusBadRequest, "product is required with include=AVAILABILITY and valid only with it")
		return
	}
	if !withAvailability && (q.Has("count") || q.Has("cloud")) {
		writeProblem(w, http.StatusBadRequest, "count and cloud are valid only with include=AVAILABILITY")
		return
	}
	for _, p := range strings.Split(product, ",") {
		if p != "" && !slices.Contains([]runpodv2.Product{runpodv2.POD, runpodv2.CLUSTER, runpodv2.SERVERLESS}, runpodv2.Product(p)) {
			writeProblem(w, http.StatusUnprocessableEntity, "Request validation failed.", fmt.Sprintf("product: unsupported value %q", p))
			return
		}
	}
	count := 1
	if v := q.Get("count"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeProblem(w, http.StatusUnprocessableEntity, "Request validation failed.", "count: must be an integer of at least 1")
			return
		}
		count = n
	}
	if v := q.Get("cloud"); v != "" && !runpodv2.GpuCloudFilter(v).Valid() {
		writeProblem(w, http.StatusUnprocessableEntity, "Request validation failed.", fmt.Sprintf("cloud: unsupported value %q", v))
		return
	}

	resp := runpodv2.ListGpuTypesResponse{Gpus: []runpodv2.GpuType{}}
	index := map[string]int{}
	for _, e := range s.core.Catalog() {
		i, ok := index[e.InstanceType]
		if !ok {
			i = len(resp.Gpus)
			index[e.InstanceType] = i
			g := runpodv2.GpuType{Id: e.InstanceType, Name: displayName(e.InstanceType), Manufacturer: runpodv2.GpuManufacturerNVIDIA,
				Secure: true, Community: true}
			if strings.HasPrefix(e.InstanceType, "AMD") {
				g.Manufacturer = runpodv2.GpuManufacturerAMD
			}
			if m := memoryGB.FindStringSubmatch(e.InstanceType); m != nil {
				g.Memory, _ = strconv.Atoi(m[1])
			}
			if withAvailability {
				g.Availability = new(runpodv2.NONE)
				g.DataCenters = &[]runpodv2.DataCenterAvailability{}
			}
			resp.Gpus = append(resp.Gpus, g)
		}
		g := &resp.Gpus[i]
		if e.OnDemandPrice > 0 && (g.Price.Secure == 0 || e.OnDemandPrice < g.Price.Secure) {
			g.Price.Secure, g.Price.Community = e.OnDemandPrice, e.OnDemandPrice
		}
		g.MaxCount.Secure = max(g.MaxCount.Secure, e.GPUs)
		g.MaxCount.Community = g.MaxCount.Secure
		if !withAvailability || e.GPUs < count || e.OnDemandPrice <= 0 {
			continue
		}
		level := stock(e.Capacity)
		*g.DataCenters = append(*g.DataCenters, runpodv2.DataCenterAvailability{Id: e.Region, Name: e.Region, Availability: level})
		if levelRank[level] > levelRank[*g.Availability] {
			*g.Availability = level
		}
	}
	for i := range resp.Gpus {
		if g := &resp.Gpus[i]; g.Availability != nil && *g.Availability == runpodv2.NONE {
			g.DataCenters = nil // unavailable everywhere: omitted, as documented
		}
	}
	writeJSON(w, http.StatusOK, resp)
}

// displayName is RunPod's short name of a GPU type ("RTX 4090", "H100 80GB HBM3").
func displayName(id string) string {
	return strings.TrimPrefix(strings.TrimPrefix(strings.TrimPrefix(id, "NVIDIA "), "GeForce "), "Tesla ")
}

func derefp[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}
