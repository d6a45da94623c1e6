// Package runpod simulates RunPod's APIs over HTTP for tests and the demo:
//
//   - REST v1 pods under /v1: POST/GET /v1/pods, GET/DELETE /v1/pods/{podId},
//     with RunPod's plain-text errors;
//   - the REST v2 GPU catalog at GET /v2/catalog/gpus, with
//     application/problem+json errors;
//   - GraphQL at POST /graphql, answering the gpuTypes { lowestPrice } query
//     (parsed just enough), with {"errors": [{"message"}]} errors.
//
// JSON shapes come from the generated clients of RunPod's own specs. Catalog
// entries are RunPod GPU types (InstanceType) in data centers (Region); GPUs
// is the largest pod of the type there and prices are per GPU, as RunPod
// quotes them.
//
// Pods are RUNNING from creation; until CreatedAt+BootDelay they have no
// public IP (booting). Preempt stops an interruptible pod (EXITED; it still
// exists and bills its disk). DELETE marks a pod TERMINATED: it stays listed
// for TerminateDelay, then GET answers 404.
package runpod

import (
	"bytes"
	"encoding/base64"
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
	"github.com/solanyn/gpu-operator/pkg/providers/runpod/runpodv1"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod/runpodv2"
)

// UserDataEnv is the pod environment variable holding the base64 user data;
// it is the adapter's convention (providers/runpod.UserDataEnv), which RunPod
// itself does not know about.
const UserDataEnv = "TGP_USER_DATA"

// Error texts, as RunPod words them where known.
const (
	// MsgNoCapacity is RunPod's answer when nothing matching is free.
	MsgNoCapacity = "There are no longer any instances available with the requested specifications. Please refresh and try again."
	// MsgQuota is sent when the account's pod quota is used up.
	MsgQuota = "You have reached the maximum number of pods allowed by your account quota. Terminate a pod or contact support to raise your limit."
)

// Server is the RunPod simulator. It is safe for concurrent use.
type Server struct {
	core *cloudsim.Core
	mux  *http.ServeMux

	mu    sync.Mutex
	pods  map[string]*pod
	order []string // pod ids in creation order
}

// pod is a simulated pod.
type pod struct {
	id, name      string
	gpuType, dc   string
	gpus          int
	interruptible bool
	perGPU        float64 // USD/h per GPU as billed
	image         string
	env           map[string]any
	seq           int
	createdAt     time.Time
	preempted     bool      // stopped by Preempt (EXITED)
	terminatedAt  time.Time // zero while not deleted
}

var _ cloudsim.Simulator = (*Server)(nil)

// New builds a simulator; a nil clock means the real clock.
func New(cfg cloudsim.Config, clk clock.Clock) *Server {
	s := &Server{core: cloudsim.NewCore(cfg, clk), mux: http.NewServeMux(), pods: map[string]*pod{}}
	s.handle("POST /v1/pods", formatV1, true, s.createPod)
	s.handle("GET /v1/pods", formatV1, false, s.listPods)
	s.handle("GET /v1/pods/{podId}", formatV1, false, s.getPod)
	s.handle("DELETE /v1/pods/{podId}", formatV1, false, s.deletePod)
	s.handle("GET /v2/catalog/gpus", formatV2, false, s.catalog)
	s.handle("POST /graphql", formatGraphQL, false, s.graphql)
	return s
}

// Provider is providers.RunPod.
func (s *Server) Provider() string { return providers.RunPod }

// Core gives the shared counters, faults and catalog.
func (s *Server) Core() *cloudsim.Core { return s.core }

// ServeHTTP serves the RunPod APIs.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// errFormat is one of RunPod's three error formats.
type errFormat int

const (
	formatV1      errFormat = iota // text/plain
	formatV2                       // application/problem+json
	formatGraphQL                  // {"errors": [{"message"}]}
)

// maxRequest bounds request bodies.
const maxRequest = 1 << 20

// handle registers h behind core.Admit, answering the gate's verdicts in
// the API's own error format.
func (s *Server) handle(endpoint string, f errFormat, launch bool, h http.HandlerFunc) {
	s.mux.HandleFunc(endpoint, func(w http.ResponseWriter, r *http.Request) {
		// Read the whole request first, as a real front end does: only then
		// does net/http watch the connection, so a client that gives up
		// (times out) cancels r.Context() during injected latency, and the
		// call then goes on to be served, like a request whose answer is lost.
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequest))
		if err != nil {
			writeError(w, f, http.StatusRequestEntityTooLarge, "request body too large")
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		switch s.core.Admit(r.Context(), endpoint, cloudsim.BearerKey(r), launch) {
		case cloudsim.Serve:
			h(w, r)
		case cloudsim.Unauthorized:
			if f == formatGraphQL {
				// GraphQL reports even authentication failures in a 200.
				writeError(w, f, http.StatusOK, "Unauthorized request, please check your API key.")
				return
			}
			writeError(w, f, http.StatusUnauthorized, "Unauthorized: missing or invalid API key")
		case cloudsim.RateLimited:
			w.Header().Set("Retry-After", strconv.Itoa(s.core.RetryAfter()))
			writeError(w, f, http.StatusTooManyRequests, "rate limit exceeded for the minute window")
		case cloudsim.Fail:
			writeError(w, f, http.StatusInternalServerError, "Something went wrong. Please try again later.")
		case cloudsim.Unavailable:
			writeError(w, f, http.StatusServiceUnavailable, "Service temporarily unavailable")
		}
	})
}

// writeError answers an error in format f.
func writeError(w http.ResponseWriter, f errFormat, status int, msg string) {
	switch f {
	case formatV1:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		fmt.Fprint(w, msg)
	case formatV2:
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(runpodv2.ErrorResponse{Title: http.StatusText(status), Status: status, Detail: msg})
	case formatGraphQL:
		writeJSON(w, status, map[string]any{"errors": []map[string]string{{"message": msg}}})
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// createPod serves POST /v1/pods.
func (s *Server) createPod(w http.ResponseWriter, r *http.Request) {
	var in runpodv1.PodCreateInput
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil {
		writeError(w, formatV1, http.StatusBadRequest, "Invalid input: request body is not valid JSON")
		return
	}
	if in.ComputeType != nil && *in.ComputeType == runpodv1.PodCreateInputComputeTypeCPU {
		writeError(w, formatV1, http.StatusBadRequest, "Invalid input: CPU pods are not simulated")
		return
	}
	name := deref(in.Name, "my pod")
	if len(name) > 191 {
		writeError(w, formatV1, http.StatusBadRequest, "Invalid input: name must be at most 191 characters")
		return
	}
	count := deref(in.GpuCount, 1)
	if count < 1 {
		writeError(w, formatV1, http.StatusBadRequest, "Invalid input: gpuCount must be at least 1")
		return
	}
	if in.GpuTypeIds == nil || len(*in.GpuTypeIds) == 0 {
		writeError(w, formatV1, http.StatusBadRequest, "Invalid input: gpuTypeIds is required for a GPU pod")
		return
	}
	spot := deref(in.Interruptible, false)
	catalog := s.core.Catalog()
	for _, t := range *in.GpuTypeIds {
		if !slices.ContainsFunc(catalog, func(e cloudsim.CatalogEntry) bool { return e.InstanceType == string(t) }) {
			writeError(w, formatV1, http.StatusBadRequest, fmt.Sprintf("Invalid input: gpuTypeIds contains an unknown GPU type %q", t))
			return
		}
	}
	var dcs []string
	if in.DataCenterIds != nil {
		for _, dc := range *in.DataCenterIds {
			if !slices.ContainsFunc(catalog, func(e cloudsim.CatalogEntry) bool { return e.Region == string(dc) }) {
				writeError(w, formatV1, http.StatusBadRequest, fmt.Sprintf("Invalid input: dataCenterIds contains an unknown data center %q", dc))
				return
			}
			dcs = append(dcs, string(dc))
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if q := s.core.Config().Quota; q > 0 && s.liveLocked() >= q {
		writeError(w, formatV1, http.StatusBadRequest, MsgQuota)
		return
	}
	// Rent the first type, in the order given, with a free machine in one of
	// the data centers (any, when none is given).
	for _, t := range *in.GpuTypeIds {
		for _, e := range catalog {
			price := e.OnDemandPrice
			if spot {
				price = e.SpotPrice
			}
			if e.InstanceType != string(t) || (dcs != nil && !slices.Contains(dcs, e.Region)) || e.GPUs < count || price <= 0 {
				continue
			}
			if !s.core.TakeCapacity(e.InstanceType, e.Region) {
				continue
			}
			p := &pod{
				id: s.core.NextID("pod"), name: name, gpuType: e.InstanceType, dc: e.Region, gpus: count,
				interruptible: spot, perGPU: price, image: deref(in.ImageName, ""), seq: len(s.order) + 1,
				createdAt: s.core.Now(),
			}
			if in.Env != nil {
				p.env = *in.Env
			}
			s.pods[p.id] = p
			s.order = append(s.order, p.id)
			s.core.RecordLaunch(name)
			writeJSON(w, http.StatusCreated, s.render(p, true, s.core.Now()))
			return
		}
	}
	writeError(w, formatV1, http.StatusBadRequest, MsgNoCapacity)
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

// listPods serves GET /v1/pods with its name, id and desiredStatus filters.
func (s *Server) listPods(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	machine := q.Get("includeMachine") == "true"
	now := s.core.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := runpodv1.Pods{}
	for _, id := range s.order {
		p := s.pods[id]
		if !s.visible(p, now) {
			continue
		}
		if v := q.Get("name"); v != "" && p.name != v {
			continue
		}
		if v := q.Get("id"); v != "" && p.id != v {
			continue
		}
		if v := q.Get("desiredStatus"); v != "" && string(status(p)) != v {
			continue
		}
		out = append(out, s.render(p, machine, now))
	}
	writeJSON(w, http.StatusOK, out)
}

// getPod serves GET /v1/pods/{podId}.
func (s *Server) getPod(w http.ResponseWriter, r *http.Request) {
	now := s.core.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pods[r.PathValue("podId")]
	if !ok || !s.visible(p, now) {
		writeError(w, formatV1, http.StatusNotFound, "Pod not found.")
		return
	}
	writeJSON(w, http.StatusOK, s.render(p, r.URL.Query().Get("includeMachine") == "true", now))
}

// deletePod serves DELETE /v1/pods/{podId}: 204, or 404 for a pod gone.
func (s *Server) deletePod(w http.ResponseWriter, r *http.Request) {
	now := s.core.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pods[r.PathValue("podId")]
	if !ok || !s.visible(p, now) {
		writeError(w, formatV1, http.StatusNotFound, "Pod not found.")
		return
	}
	if p.terminatedAt.IsZero() {
		p.terminatedAt = now
		s.core.ReturnCapacity(p.gpuType, p.dc)
	}
	w.WriteHeader(http.StatusNoContent)
}

// status is a pod's desiredStatus.
func status(p *pod) runpodv1.PodDesiredStatus {
	switch {
	case !p.terminatedAt.IsZero():
		return runpodv1.PodDesiredStatusTERMINATED
	case p.preempted:
		return runpodv1.PodDesiredStatusEXITED
	}
	return runpodv1.PodDesiredStatusRUNNING
}

// booted reports whether a running pod has finished initializing at now.
func (s *Server) booted(p *pod, now time.Time) bool {
	return status(p) == runpodv1.PodDesiredStatusRUNNING && !now.Before(p.createdAt.Add(s.core.Config().BootDelay))
}

// render is the REST v1 Pod of p at now; machine adds the machine object.
func (s *Server) render(p *pod, machine bool, now time.Time) runpodv1.Pod {
	out := runpodv1.Pod{
		Id:                new(p.id),
		Name:              new(p.name),
		DesiredStatus:     new(status(p)),
		Interruptible:     new(p.interruptible),
		CostPerHr:         new(p.perGPU * float64(p.gpus)),
		AdjustedCostPerHr: new(p.perGPU * float64(p.gpus)),
		Image:             new(p.image),
		MachineId:         new("m" + p.id),
		LastStartedAt:     new(p.createdAt.UTC().Format(time.RFC3339Nano)),
		LastStatusChange:  new("Rented by User: " + p.createdAt.UTC().Format(time.RFC1123)),
		PortMappings:      &map[string]any{},
	}
	if p.env != nil {
		out.Env = &p.env
	}
	out.Gpu = &runpodv1.Pod_Gpu{Id: new(p.gpuType), Count: new(p.gpus), DisplayName: new(displayName(p.gpuType))}
	if s.booted(p, now) {
		out.PublicIp = new(fmt.Sprintf("100.65.%d.%d", p.seq/250, p.seq%250+1))
		out.PortMappings = &map[string]any{"22": 10000 + p.seq}
	}
	switch {
	case p.preempted:
		out.LastStatusChange = new("Exited by Runpod: interruptible pod stopped to free up resources")
	case !p.terminatedAt.IsZero():
		out.LastStatusChange = new("Terminated by User: " + p.terminatedAt.UTC().Format(time.RFC1123))
	}
	if machine {
		out.Machine = &runpodv1.Pod_Machine{
			GpuTypeId:          new(p.gpuType),
			GpuDisplayName:     new(displayName(p.gpuType)),
			DataCenterId:       new(p.dc),
			Location:           new(p.dc),
			CurrentPricePerGpu: new(p.perGPU),
			SecureCloud:        new(true),
			SupportPublicIp:    new(true),
		}
	}
	return out
}

// displayName is RunPod's short name of a GPU type ("RTX 4090", "H100 80GB HBM3").
func displayName(id string) string {
	return strings.TrimPrefix(strings.TrimPrefix(strings.TrimPrefix(id, "NVIDIA "), "GeForce "), "Tesla ")
}

// Preempt stops an interruptible pod as RunPod does when it takes spot
// capacity back: desiredStatus EXITED, no public IP; the pod still exists
// (and bills its disk) until it is deleted.
func (s *Server) Preempt(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.pods[id]
	switch {
	case !ok:
		return fmt.Errorf("runpod sim: no pod %q", id)
	case !p.interruptible:
		return fmt.Errorf("runpod sim: pod %q is not interruptible", id)
	case status(p) != runpodv1.PodDesiredStatusRUNNING:
		return fmt.Errorf("runpod sim: pod %q is %s, not running", id, status(p))
	}
	p.preempted = true
	return nil
}

// Machines returns every pod ever created, terminated ones included, with
// the user data the adapter put in UserDataEnv.
func (s *Server) Machines() []cloudsim.Machine {
	now := s.core.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]cloudsim.Machine, 0, len(s.pods))
	for _, p := range s.pods {
		m := cloudsim.Machine{
			Provider: providers.RunPod, ID: p.id, Name: p.name, InstanceType: p.gpuType, Region: p.dc,
			GPUs: p.gpus, Spot: p.interruptible, NativeState: string(status(p)),
			Active: s.booted(p, now), Live: p.terminatedAt.IsZero(), Preempted: p.preempted,
		}
		if v, ok := p.env[UserDataEnv].(string); ok {
			if b, err := base64.StdEncoding.DecodeString(v); err == nil {
				m.UserData = string(b)
			}
		}
		out = append(out, m)
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

// catalog serves GET /v2/catalog/gpus. A type's price is the lowest on-demand
// price of its entries, its secure maxCount the largest entry. With
// include=AVAILABILITY (which, as in RunPod, requires product and vice versa)
// it adds availability for pods of `count` GPUs: per data center from the
// entry's remaining capacity, omitting dataCenters when none has any.
func (s *Server) catalog(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	include, product := q.Get("include"), q.Get("product")
	if include != "" && include != string(runpodv2.AVAILABILITY) {
		writeError(w, formatV2, http.StatusBadRequest, fmt.Sprintf("unsupported include %q", include))
		return
	}
	withAvailability := include != ""
	if withAvailability != (product != "") {
		writeError(w, formatV2, http.StatusBadRequest, "product is required with include=AVAILABILITY and valid only with it")
		return
	}
	count := 1
	if v := q.Get("count"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, formatV2, http.StatusBadRequest, "count must be a positive integer")
			return
		}
		count = n
	}
	// The simulator only has secure-cloud machines.
	community := q.Get("cloud") == string(runpodv2.COMMUNITY)

	resp := runpodv2.ListGpuTypesResponse{Gpus: []runpodv2.GpuType{}}
	index := map[string]int{}
	for _, e := range s.core.Catalog() {
		i, ok := index[e.InstanceType]
		if !ok {
			i = len(resp.Gpus)
			index[e.InstanceType] = i
			g := runpodv2.GpuType{Id: e.InstanceType, Name: displayName(e.InstanceType), Manufacturer: runpodv2.GpuManufacturerNVIDIA, Secure: true}
			if strings.HasPrefix(e.InstanceType, "AMD") {
				g.Manufacturer = runpodv2.GpuManufacturerAMD
			}
			if withAvailability {
				g.Availability = new(runpodv2.NONE)
				g.DataCenters = &[]runpodv2.DataCenterAvailability{}
			}
			resp.Gpus = append(resp.Gpus, g)
		}
		g := &resp.Gpus[i]
		if e.OnDemandPrice > 0 && (g.Price.Secure == 0 || e.OnDemandPrice < g.Price.Secure) {
			g.Price.Secure = e.OnDemandPrice
		}
		g.MaxCount.Secure = max(g.MaxCount.Secure, e.GPUs)
		if !withAvailability || e.GPUs < count {
			continue
		}
		level := stock(e.Capacity)
		if community {
			level = runpodv2.NONE
		}
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

// lowestPriceField matches one lowestPrice selection, aliased or not, and
// captures the alias and the input object.
var lowestPriceField = regexp.MustCompile(`(?:([_A-Za-z][_0-9A-Za-z]*)\s*:\s*)?lowestPrice\s*\(\s*input\s*:\s*\{([^}]*)\}\s*\)`)

// gpuCountArg finds gpuCount in a lowestPrice input object.
var gpuCountArg = regexp.MustCompile(`gpuCount\s*:\s*(\d+)`)

// graphql serves POST /graphql for the query
//
//	gpuTypes { id [alias:] lowestPrice(input: {gpuCount: N, ...}) { minimumBidPrice uninterruptablePrice stockStatus } ... }
//
// answering, per type and selection, the lowest spot price (minimumBidPrice)
// and on-demand price (uninterruptablePrice) per GPU over entries with at
// least N GPUs, and their stock; null when no entry is that large. Anything
// else gets a GraphQL error.
func (s *Server) graphql(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Query string `json:"query"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Query == "" {
		writeError(w, formatGraphQL, http.StatusBadRequest, "Must provide query string.")
		return
	}
	if !strings.Contains(req.Query, "gpuTypes") {
		writeError(w, formatGraphQL, http.StatusOK, "the simulator answers only gpuTypes queries")
		return
	}
	type selection struct {
		field string
		count int
	}
	var sels []selection
	for _, m := range lowestPriceField.FindAllStringSubmatch(req.Query, -1) {
		c := gpuCountArg.FindStringSubmatch(m[2])
		if c == nil {
			writeError(w, formatGraphQL, http.StatusOK, `Field "GpuLowestPriceInput.gpuCount" of required type "Int!" was not provided.`)
			return
		}
		n, err := strconv.Atoi(c[1])
		if err != nil {
			writeError(w, formatGraphQL, http.StatusOK, fmt.Sprintf("Int cannot represent value: %s", c[1]))
			return
		}
		field := m[1]
		if field == "" {
			field = "lowestPrice"
		}
		sels = append(sels, selection{field, n})
	}

	catalog := s.core.Catalog()
	var types []string
	for _, e := range catalog {
		if !slices.Contains(types, e.InstanceType) {
			types = append(types, e.InstanceType)
		}
	}
	gpuTypes := make([]map[string]any, 0, len(types))
	for _, t := range types {
		obj := map[string]any{"id": t}
		for _, sel := range sels {
			obj[sel.field] = lowestPrice(catalog, t, sel.count)
		}
		gpuTypes = append(gpuTypes, obj)
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": map[string]any{"gpuTypes": gpuTypes}})
}

// lowestPrice is GraphQL's LowestPrice of type t for pods of n GPUs, or nil.
func lowestPrice(catalog []cloudsim.CatalogEntry, t string, n int) map[string]any {
	var spot, onDemand float64
	capacity, found := 0, false
	for _, e := range catalog {
		if e.InstanceType != t || e.GPUs < n {
			continue
		}
		found = true
		if e.SpotPrice > 0 && (spot == 0 || e.SpotPrice < spot) {
			spot = e.SpotPrice
		}
		if e.OnDemandPrice > 0 && (onDemand == 0 || e.OnDemandPrice < onDemand) {
			onDemand = e.OnDemandPrice
		}
		if e.Capacity < 0 || capacity < 0 {
			capacity = -1
		} else {
			capacity += e.Capacity
		}
	}
	if !found {
		return nil
	}
	out := map[string]any{"gpuTypeId": t, "minimumBidPrice": nil, "uninterruptablePrice": nil, "stockStatus": nil}
	if spot > 0 {
		out["minimumBidPrice"] = spot
	}
	if onDemand > 0 {
		out["uninterruptablePrice"] = onDemand
	}
	if level := stock(capacity); level != runpodv2.NONE {
		// GraphQL spells stock levels in title case: "High", "Medium", "Low".
		out["stockStatus"] = string(level[:1]) + strings.ToLower(string(level[1:]))
	}
	return out
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
