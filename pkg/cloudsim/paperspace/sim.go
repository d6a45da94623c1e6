// Package paperspace simulates the Paperspace v1 API
// (https://api.paperspace.com/v1) for the operator's tests and demo.
//
// The server serves the spec's paths under the same "/v1" prefix as the real
// API, so an adapter's BaseURL is the server's URL + "/v1":
//
//	GET    /v1/machine-availability?machineType=&region=  {available}
//	POST   /v1/machines                                   {event, data}
//	GET    /v1/machines?after=&limit=&name=&region=&machineType=
//	GET    /v1/machines/{id}
//	DELETE /v1/machines/{id}                              {event, data}
//	GET    /v1/os-templates?after=&limit=&name=
//	POST   /v1/startup-scripts
//	GET    /v1/startup-scripts?after=&limit=&name=
//	DELETE /v1/startup-scripts/{id}
//
// OS templates (DefaultTemplates unless SetTemplates says otherwise) list
// the machine types they are available on; a create names one, and a
// template that does not list the machine type is refused (see create).
// Startup scripts stay until deleted, assigned to the machines created with
// them. SetStuckOff makes creates of a machine type in a region succeed and
// leave the machine off for good after provisioning: Paperspace's capacity
// miss (SkyPilot saw H100x8 machines sit off for over an hour,
// skypilot-org/skypilot PR #3197). SetLongRegionNames makes machines show
// their region as the legacy display name ("East Coast (NY2)").
//
// Catalog entries are Paperspace machine type labels (A100-80Gx4) in the
// native regions ny2, ca1 and ams1; the API has no prices, so the catalog's
// prices only show up as a machine's usageRate. Machines are provisioning
// for BootDelay after creation and ready afterwards; Preempt turns one off
// (Paperspace has no spot, but machines do get shut down under you); DELETE
// marks it deleted (dtDeleted set, state stopping) and it disappears from the
// API TerminateDelay later, when its capacity is returned.
//
// Errors use Paperspace's body {"message", "code"} with its tRPC-style codes:
// 401 UNAUTHORIZED for a bad key, 429 TOO_MANY_REQUESTS with Retry-After,
// 500 INTERNAL_SERVER_ERROR for injected faults, 503 SERVICE_UNAVAILABLE when
// down, 404 NOT_FOUND, 400 BAD_REQUEST for invalid input and for a type out
// of capacity ("Out of capacity for ..."), 403 FORBIDDEN for the machine
// limit (Config.Quota: "... reached your team's machine limit ...").
package paperspace

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"k8s.io/utils/clock"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/paperspace/paperspaceapi"
)

// Regions are the native regions of the simulated API.
var Regions = []string{"ny2", "ca1", "ams1"}

// CPUMachineTypes are CPU-only machine type labels, which only the CPU
// templates list; the catalog sells none of them.
var CPUMachineTypes = []string{"C5", "C6", "C7", "C8", "C9", "C10"}

// MachineTypes are the GPU machine type labels DefaultCatalog sells.
var MachineTypes = []string{
	"A100-80G", "A100-80Gx2", "A100-80Gx4", "A100-80Gx8", "H100", "H100x8",
	"A6000", "A6000x2", "A6000x4", "A5000", "A5000x2", "A5000x4",
	"A4000", "A4000x2", "A4000x4", "V100-32G", "V100-32Gx2", "V100-32Gx4",
	"P4000", "RTX4000",
}

// DefaultCatalog sells every type of MachineTypes in every region with the
// given capacity each (negative: unlimited) and no prices.
func DefaultCatalog(capacity int) []cloudsim.CatalogEntry {
	var entries []cloudsim.CatalogEntry
	for _, mt := range MachineTypes {
		for _, r := range Regions {
			entries = append(entries, cloudsim.CatalogEntry{InstanceType: mt, GPUs: GPUsOf(mt), Region: r, Capacity: capacity})
		}
	}
	return entries
}

// GPUsOf is the GPU count of a machine type label: N for "<model>xN", else 1.
func GPUsOf(label string) int {
	if i := strings.LastIndexByte(label, 'x'); i > 0 {
		if n, err := strconv.Atoi(label[i+1:]); err == nil && n > 0 {
			return n
		}
	}
	return 1
}

// Template is a simulated OS template.
type Template struct {
	ID, Name  string
	AgentType string
	// OS is the operatingSystemLabel.
	OS            string
	DefaultSizeGB *float64
	Created       time.Time
	// MachineTypes are the labels the template is available on; Listed
	// are more labels it lists with isAvailable false.
	MachineTypes, Listed []string
}

// DefaultTemplates are modelled on the list `pspace os-template list` printed
// in November 2024 (ids, names, OS labels and default sizes; quoted in
// public Terraform for Paperspace): the CPU images prod-u22-cpu (t0nspur5)
// and prod-u20-cpu on the CPU types, the GPU desktop image prod-u22-gpu and
// a Windows GPU image on every GPU type, and the ML-in-a-Box images on the
// A100-80G and H100 (Ubuntu 22.04) and V100 (Ubuntu 20.04) types. Which
// machine types each lists is the simulator's assumption; the spec only says
// that availableMachineTypes exists.
func DefaultTemplates() []Template {
	day := func(y, m, d int) time.Time { return time.Date(y, time.Month(m), d, 0, 0, 0, 0, time.UTC) }
	hundred := 100.0
	var a100h100, v100 []string
	for _, mt := range MachineTypes {
		switch {
		case strings.HasPrefix(mt, "A100-80G"), strings.HasPrefix(mt, "H100"):
			a100h100 = append(a100h100, mt)
		case strings.HasPrefix(mt, "V100"):
			v100 = append(v100, mt)
		}
	}
	return []Template{
		{ID: "t0nspur5", Name: "prod-u22-cpu-241018", AgentType: "LinuxHeadless", OS: "Ubuntu 22.04 Server", Created: day(2024, 10, 18),
			MachineTypes: CPUMachineTypes, Listed: MachineTypes},
		{ID: "tkni3aa4", Name: "prod-u20-cpu-241101", AgentType: "LinuxHeadless", OS: "Ubuntu 20.04 Server", Created: day(2024, 11, 1),
			MachineTypes: CPUMachineTypes},
		{ID: "t17d1a6i", Name: "prod-u22-gpu-241021", AgentType: "LinuxDesktop", OS: "Ubuntu 22.04 Desktop", Created: day(2024, 10, 21),
			MachineTypes: MachineTypes},
		{ID: "tvimtol9", Name: "mliab-u22-241101", AgentType: "LinuxHeadless", OS: "Ubuntu 22.04", DefaultSizeGB: &hundred,
			Created: day(2024, 11, 1), MachineTypes: a100h100},
		{ID: "twnlo3zj", Name: "mliab-u20-241101", AgentType: "LinuxHeadless", OS: "Ubuntu 20.04", Created: day(2024, 11, 1),
			MachineTypes: v100},
		{ID: "taoz1uxr", Name: "w22-gpu-220727", AgentType: "WindowsDesktop", OS: "Windows 10 (Server 2022) - Licensed", Created: day(2022, 7, 27),
			MachineTypes: MachineTypes},
	}
}

// Script is a simulated startup script.
type Script struct {
	ID, Name, Script string
	RunOnce          bool
	Created          time.Time
	// Machines are the ids of the machines created with it.
	Machines []string
	// Deleted is when it was deleted; zero while it exists.
	Deleted time.Time
}

// Server is the simulated Paperspace API.
type Server struct {
	core *cloudsim.Core
	mux  *http.ServeMux

	mu        sync.Mutex
	machines  []*machine // in creation order, which is also the list order
	byID      map[string]*machine
	scripts   []*Script // in creation order
	templates []Template
	stuckOff  map[[2]string]bool // machine type, region
	longNames bool
}

// machine is a simulated machine; its state follows from the clock.
type machine struct {
	id, name, machineType, region string
	templateID                    string
	gpus                          int
	usageRate                     float64
	userData                      string
	seq                           int
	started                       bool
	stuckOff                      bool // never leaves off after provisioning
	created                       time.Time
	preempted                     bool
	deleted                       time.Time // zero until DELETE
	gone                          bool      // deleted and TerminateDelay passed; capacity returned
}

var _ cloudsim.Simulator = (*Server)(nil)

// New builds the simulator; a nil clock means the real clock.
func New(cfg cloudsim.Config, clk clock.Clock) *Server {
	s := &Server{
		core:      cloudsim.NewCore(cfg, clk),
		mux:       http.NewServeMux(),
		byID:      map[string]*machine{},
		templates: DefaultTemplates(),
		stuckOff:  map[[2]string]bool{},
	}
	s.handle("GET /v1/machine-availability", false, s.availability)
	s.handle("POST /v1/machines", true, s.create)
	s.handle("GET /v1/machines", false, s.list)
	s.handle("GET /v1/machines/{id}", false, s.get)
	s.handle("DELETE /v1/machines/{id}", false, s.delete)
	s.handle("POST /v1/startup-scripts", false, s.createScript)
	s.handle("GET /v1/startup-scripts", false, s.listScripts)
	s.handle("DELETE /v1/startup-scripts/{id}", false, s.deleteScript)
	s.handle("GET /v1/os-templates", false, s.listTemplates)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "No procedure found on path "+r.URL.Path)
	})
	return s
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Provider is providers.Paperspace.
func (s *Server) Provider() string { return providers.Paperspace }

// Core gives the shared counters, faults and catalog.
func (s *Server) Core() *cloudsim.Core { return s.core }

// Machines returns every machine ever created, deleted ones included,
// ordered by id; UserData is the machine's startup script.
func (s *Server) Machines() []cloudsim.Machine {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.core.Now()
	s.sweepLocked(now)
	out := make([]cloudsim.Machine, 0, len(s.machines))
	for _, m := range s.machines {
		state := s.stateLocked(m, now)
		out = append(out, cloudsim.Machine{
			Provider:     providers.Paperspace,
			ID:           m.id,
			Name:         m.name,
			InstanceType: m.machineType,
			Region:       m.region,
			GPUs:         m.gpus,
			UserData:     m.userData,
			NativeState:  state,
			Active:       state == "ready",
			Live:         !m.gone,
			Preempted:    m.preempted,
		})
	}
	cloudsim.SortMachines(out)
	return out
}

// Preempt shuts a machine down as Paperspace's forced shutdown would: it
// stays, off, until deleted.
func (s *Server) Preempt(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.byID[id]
	if !ok || !m.deleted.IsZero() {
		return fmt.Errorf("paperspace sim: no live machine %q", id)
	}
	m.preempted = true
	return nil
}

// SetTemplates replaces the OS templates.
func (s *Server) SetTemplates(ts []Template) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.templates = append([]Template(nil), ts...)
}

// SetStuckOff makes machines created from now on of machineType in region
// stay off after provisioning (on) or boot normally (off).
func (s *Server) SetStuckOff(machineType, region string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stuckOff[[2]string{machineType, region}] = on
}

// SetLongRegionNames makes machines show their region as the legacy display
// name ("East Coast (NY2)") instead of the code.
func (s *Server) SetLongRegionNames(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.longNames = on
}

// RegionDisplayNames are the legacy API's names of the regions.
var RegionDisplayNames = map[string]string{"ny2": "East Coast (NY2)", "ca1": "West Coast (CA1)", "ams1": "Europe (AMS1)"}

// TemplateOf is the OS template machine id was created from ("" if unknown).
func (s *Server) TemplateOf(id string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if m, ok := s.byID[id]; ok {
		return m.templateID
	}
	return ""
}

// Scripts returns every startup script that exists, in creation order.
func (s *Server) Scripts() []Script {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Script
	for _, sc := range s.scripts {
		if sc.Deleted.IsZero() {
			c := *sc
			c.Machines = append([]string(nil), sc.Machines...)
			out = append(out, c)
		}
	}
	return out
}

// handle registers an API endpoint behind Core.Admit.
func (s *Server) handle(pattern string, launch bool, h http.HandlerFunc) {
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		switch s.core.Admit(r.Context(), pattern, cloudsim.BearerKey(r), launch) {
		case cloudsim.Unauthorized:
			writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "You must be authenticated to access this resource: invalid API key")
		case cloudsim.RateLimited:
			w.Header().Set("Retry-After", strconv.Itoa(s.core.RetryAfter()))
			writeError(w, http.StatusTooManyRequests, "TOO_MANY_REQUESTS", "Too many requests, please slow down")
		case cloudsim.Fail:
			writeError(w, http.StatusInternalServerError, "INTERNAL_SERVER_ERROR", "An unexpected error occurred")
		case cloudsim.Unavailable:
			writeError(w, http.StatusServiceUnavailable, "SERVICE_UNAVAILABLE", "The service is temporarily down for maintenance")
		default:
			h(w, r)
		}
	})
}

func (s *Server) availability(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	mt, region := q.Get("machineType"), q.Get("region")
	if mt == "" || region == "" {
		writeError(w, http.StatusBadRequest, "BAD_REQUEST", "machineType and region are required")
		return
	}
	s.mu.Lock()
	s.sweepLocked(s.core.Now())
	s.mu.Unlock()
	e, ok := s.core.Entry(mt, region)
	writeJSON(w, http.StatusOK, map[string]bool{"available": ok && e.Capacity != 0})
}

func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	var req paperspaceapi.MachinesCreateJSONBody
	if !decodeBody(w, r, &req) {
		return
	}
	if req.Name == "" || req.MachineType == "" || req.TemplateId == "" || req.Region == "" || req.DiskSize <= 0 {
		writeError(w, http.StatusBadRequest, "BAD_REQUEST", "name, machineType, templateId, region and a positive diskSize are required")
		return
	}
	entry, ok := s.core.Entry(req.MachineType, req.Region)
	if !ok {
		writeError(w, http.StatusBadRequest, "BAD_REQUEST", fmt.Sprintf("Invalid machine type %q for region %q", req.MachineType, req.Region))
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.core.Now()
	s.sweepLocked(now)
	if msg := s.checkTemplateLocked(req.TemplateId, req.MachineType); msg != "" {
		writeError(w, http.StatusBadRequest, "BAD_REQUEST", msg)
		return
	}
	var script *Script
	if req.StartupScriptId != nil {
		if script = s.scriptLocked(*req.StartupScriptId); script == nil {
			writeError(w, http.StatusBadRequest, "BAD_REQUEST", fmt.Sprintf("Invalid startup script id %q", *req.StartupScriptId))
			return
		}
	}
	if quota := s.core.Config().Quota; quota > 0 && s.liveLocked() >= quota {
		writeError(w, http.StatusForbidden, "FORBIDDEN", fmt.Sprintf("You have reached your team's machine limit of %d. Contact support to raise it.", quota))
		return
	}
	if !s.core.TakeCapacity(req.MachineType, req.Region) {
		writeError(w, http.StatusBadRequest, "BAD_REQUEST", fmt.Sprintf("Out of capacity for %s in %s. Please try again later or choose another region.", req.MachineType, req.Region))
		return
	}
	gpus := entry.GPUs
	if gpus <= 0 {
		gpus = GPUsOf(req.MachineType)
	}
	m := &machine{
		id:          s.core.NextID("ps"),
		name:        req.Name,
		machineType: req.MachineType,
		region:      req.Region,
		gpus:        gpus,
		usageRate:   entry.OnDemandPrice,
		seq:         len(s.machines) + 1,
		started:     req.StartOnCreate == nil || *req.StartOnCreate,
		templateID:  req.TemplateId,
		stuckOff:    s.stuckOff[[2]string{req.MachineType, req.Region}],
		created:     now,
	}
	if script != nil {
		m.userData = script.Script
		script.Machines = append(script.Machines, m.id)
	}
	s.machines = append(s.machines, m)
	s.byID[m.id] = m
	s.core.RecordLaunch(m.name)
	writeJSON(w, http.StatusOK, map[string]any{"event": event("create", m.id, now), "data": s.jsonLocked(m, now)})
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := 20
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 120 {
			writeError(w, http.StatusBadRequest, "BAD_REQUEST", "limit must be an integer from 1 to 120")
			return
		}
		limit = n
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.core.Now()
	s.sweepLocked(now)
	start := 0
	if after := q.Get("after"); after != "" {
		m, ok := s.byID[after]
		if !ok {
			writeError(w, http.StatusBadRequest, "BAD_REQUEST", "Invalid cursor")
			return
		}
		start = m.seq // seq is the index of the next machine
	}
	items := []machineJSON{}
	next := ""
	for _, m := range s.machines[start:] {
		if m.gone || !matches(q, "name", m.name) || !matches(q, "region", m.region) || !matches(q, "machineType", m.machineType) {
			continue
		}
		if len(items) == limit {
			next = items[len(items)-1].ID
			break
		}
		items = append(items, s.jsonLocked(m, now))
	}
	page := map[string]any{"hasMore": next != "", "items": items}
	if next != "" {
		page["nextPage"] = next
	}
	writeJSON(w, http.StatusOK, page)
}

func matches(q map[string][]string, key, v string) bool {
	f, ok := q[key]
	return !ok || f[0] == v
}

func (s *Server) get(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.core.Now()
	s.sweepLocked(now)
	m, ok := s.byID[r.PathValue("id")]
	if !ok || m.gone {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "Machine not found")
		return
	}
	writeJSON(w, http.StatusOK, s.jsonLocked(m, now))
}

func (s *Server) delete(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.core.Now()
	s.sweepLocked(now)
	m, ok := s.byID[r.PathValue("id")]
	if !ok || m.gone {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "Machine not found")
		return
	}
	if m.deleted.IsZero() {
		m.deleted = now
	}
	data := s.jsonLocked(m, now)
	s.sweepLocked(now) // with no TerminateDelay the machine is gone at once
	writeJSON(w, http.StatusOK, map[string]any{"event": event("deactivate", m.id, now), "data": data})
}

func (s *Server) createScript(w http.ResponseWriter, r *http.Request) {
	var req paperspaceapi.StartupScriptsCreateJSONBody
	if !decodeBody(w, r, &req) {
		return
	}
	if req.Name == "" || req.Script == "" {
		writeError(w, http.StatusBadRequest, "BAD_REQUEST", "name and script are required")
		return
	}
	sc := &Script{ID: s.core.NextID("ss"), Name: req.Name, Script: req.Script,
		RunOnce: req.IsRunOnce != nil && *req.IsRunOnce, Created: s.core.Now()}
	s.mu.Lock()
	s.scripts = append(s.scripts, sc)
	out := scriptJSONOf(sc)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// scriptJSON is a startup script in the spec's shape (every required field).
type scriptJSON struct {
	ID                 string     `json:"id"`
	Name               string     `json:"name"`
	Description        *string    `json:"description"`
	IsEnabled          bool       `json:"isEnabled"`
	IsRunOnce          bool       `json:"isRunOnce"`
	AssignedMachineIDs []string   `json:"assignedMachineIds"`
	DtCreated          time.Time  `json:"dtCreated"`
	DtDeleted          *time.Time `json:"dtDeleted"`
}

func scriptJSONOf(sc *Script) scriptJSON {
	j := scriptJSON{ID: sc.ID, Name: sc.Name, IsEnabled: true, IsRunOnce: sc.RunOnce,
		AssignedMachineIDs: append([]string{}, sc.Machines...), DtCreated: sc.Created.UTC()}
	if !sc.Deleted.IsZero() {
		d := sc.Deleted.UTC()
		j.DtDeleted = &d
	}
	return j
}

// scriptLocked finds a startup script that exists.
func (s *Server) scriptLocked(id string) *Script {
	for _, sc := range s.scripts {
		if sc.ID == id && sc.Deleted.IsZero() {
			return sc
		}
	}
	return nil
}

func (s *Server) listScripts(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var items []scriptJSON
	for _, sc := range s.scripts {
		if sc.Deleted.IsZero() && matches(r.URL.Query(), "name", sc.Name) {
			items = append(items, scriptJSONOf(sc))
		}
	}
	writePage(w, r, items, func(j scriptJSON) string { return j.ID })
}

func (s *Server) deleteScript(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.scriptLocked(r.PathValue("id"))
	if sc == nil {
		writeError(w, http.StatusNotFound, "NOT_FOUND", "Startup script not found")
		return
	}
	sc.Deleted = s.core.Now()
	writeJSON(w, http.StatusOK, scriptJSONOf(sc))
}

// templateJSON is an OS template in the spec's shape.
type templateJSON struct {
	ID                    string          `json:"id"`
	Name                  string          `json:"name"`
	AgentType             string          `json:"agentType"`
	OperatingSystemLabel  string          `json:"operatingSystemLabel"`
	DefaultSizeGb         *float64        `json:"defaultSizeGb"`
	AvailableMachineTypes []availableType `json:"availableMachineTypes"`
	DtCreated             time.Time       `json:"dtCreated"`
}

type availableType struct {
	MachineTypeLabel string `json:"machineTypeLabel"`
	IsAvailable      bool   `json:"isAvailable"`
}

func (s *Server) listTemplates(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	ts := append([]Template(nil), s.templates...)
	s.mu.Unlock()
	var items []templateJSON
	for _, t := range ts {
		if !matches(r.URL.Query(), "name", t.Name) {
			continue
		}
		j := templateJSON{ID: t.ID, Name: t.Name, AgentType: t.AgentType, OperatingSystemLabel: t.OS,
			DefaultSizeGb: t.DefaultSizeGB, AvailableMachineTypes: []availableType{}, DtCreated: t.Created.UTC()}
		for _, mt := range t.MachineTypes {
			j.AvailableMachineTypes = append(j.AvailableMachineTypes, availableType{MachineTypeLabel: mt, IsAvailable: true})
		}
		for _, mt := range t.Listed {
			if !slices.Contains(t.MachineTypes, mt) {
				j.AvailableMachineTypes = append(j.AvailableMachineTypes, availableType{MachineTypeLabel: mt})
			}
		}
		items = append(items, j)
	}
	writePage(w, r, items, func(j templateJSON) string { return j.ID })
}

// checkTemplateLocked refuses a create from a template that does not exist
// or does not list the machine type as available. The spec documents
// availableMachineTypes on each template but not what a create from a
// template that lacks the type answers; a 400 BAD_REQUEST in the spec's
// error body (components.responses.error) is the simulator's assumption,
// made so that a GPU machine type created from a CPU template (t0nspur5)
// fails in tests instead of booting without GPU drivers.
func (s *Server) checkTemplateLocked(id, machineType string) string {
	for _, t := range s.templates {
		if t.ID != id {
			continue
		}
		if !slices.Contains(t.MachineTypes, machineType) {
			return fmt.Sprintf("Template %s (%s) cannot be used with machine type %s", t.ID, t.Name, machineType)
		}
		return ""
	}
	return fmt.Sprintf("Invalid template id %q", id)
}

// writePage writes one cursor page of items, {hasMore, nextPage, items}:
// ?after= is the id of the last item of the previous page, ?limit= 1..120
// (default 20).
func writePage[T any](w http.ResponseWriter, r *http.Request, items []T, id func(T) string) {
	q := r.URL.Query()
	limit := 20
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 120 {
			writeError(w, http.StatusBadRequest, "BAD_REQUEST", "limit must be an integer from 1 to 120")
			return
		}
		limit = n
	}
	start := 0
	if after := q.Get("after"); after != "" {
		i := slices.IndexFunc(items, func(it T) bool { return id(it) == after })
		if i < 0 {
			writeError(w, http.StatusBadRequest, "BAD_REQUEST", "Invalid cursor")
			return
		}
		start = i + 1
	}
	page := items[start:]
	out := map[string]any{"hasMore": false, "items": []T{}}
	if len(page) > limit {
		page = page[:limit]
		out["hasMore"], out["nextPage"] = true, id(page[len(page)-1])
	}
	if len(page) > 0 {
		out["items"] = page
	}
	writeJSON(w, http.StatusOK, out)
}

// sweepLocked retires deleted machines whose TerminateDelay has passed and
// returns their capacity.
func (s *Server) sweepLocked(now time.Time) {
	delay := s.core.Config().TerminateDelay
	for _, m := range s.machines {
		if !m.gone && !m.deleted.IsZero() && !now.Before(m.deleted.Add(delay)) {
			m.gone = true
			s.core.ReturnCapacity(m.machineType, m.region)
		}
	}
}

// liveLocked counts the machines that still exist.
func (s *Server) liveLocked() int {
	n := 0
	for _, m := range s.machines {
		if !m.gone {
			n++
		}
	}
	return n
}

// stateLocked is the machine's Paperspace state at now ("deleted" once gone,
// which the API never shows).
func (s *Server) stateLocked(m *machine, now time.Time) string {
	switch {
	case m.gone:
		return "deleted"
	case !m.deleted.IsZero():
		return "stopping"
	case m.preempted || !m.started:
		return "off"
	case now.Before(m.created.Add(s.core.Config().BootDelay)):
		return "provisioning"
	case m.stuckOff:
		return "off"
	default:
		return "ready"
	}
}

// machineJSON is a machine in the spec's shape (every required field).
type machineJSON struct {
	ID                     string        `json:"id"`
	Name                   string        `json:"name"`
	State                  string        `json:"state"`
	OS                     string        `json:"os"`
	MachineType            string        `json:"machineType"`
	AgentType              string        `json:"agentType"`
	CPUs                   int           `json:"cpus"`
	RAM                    int64         `json:"ram"`
	StorageTotal           int64         `json:"storageTotal"`
	StorageUsed            int64         `json:"storageUsed"`
	Accelerators           []accelerator `json:"accelerators"`
	Region                 string        `json:"region"`
	PrivateIP              *string       `json:"privateIp"`
	NetworkID              *string       `json:"networkId"`
	PublicIP               *string       `json:"publicIp"`
	PublicIPType           string        `json:"publicIpType"`
	AutoShutdownEnabled    bool          `json:"autoShutdownEnabled"`
	AutoShutdownTimeout    *float64      `json:"autoShutdownTimeout"`
	AutoShutdownForce      *bool         `json:"autoShutdownForce"`
	AutoSnapshotEnabled    bool          `json:"autoSnapshotEnabled"`
	AutoSnapshotFrequency  *string       `json:"autoSnapshotFrequency"`
	AutoSnapshotSaveCount  *float64      `json:"autoSnapshotSaveCount"`
	UpdatesPending         bool          `json:"updatesPending"`
	RestorePointEnabled    bool          `json:"restorePointEnabled"`
	RestorePointFrequency  *string       `json:"restorePointFrequency"`
	RestorePointSnapshotID *string       `json:"restorePointSnapshotId"`
	UsageRate              float64       `json:"usageRate"`
	StorageRate            float64       `json:"storageRate"`
	DtCreated              time.Time     `json:"dtCreated"`
	DtModified             time.Time     `json:"dtModified"`
	DtDeleted              *time.Time    `json:"dtDeleted"`
	Reservation            *struct{}     `json:"reservation"`
}

type accelerator struct {
	Name   string `json:"name"`
	Memory *int   `json:"memory"`
	Count  int    `json:"count"`
}

func (s *Server) jsonLocked(m *machine, now time.Time) machineJSON {
	const gib = int64(1) << 30
	state := s.stateLocked(m, now)
	model := m.machineType
	if i := strings.LastIndexByte(model, 'x'); i > 0 && GPUsOf(model) > 1 {
		model = model[:i]
	}
	j := machineJSON{
		ID: m.id, Name: m.name, State: state, OS: "Ubuntu 22.04", MachineType: m.machineType,
		AgentType: "LinuxHeadless", CPUs: 8 * m.gpus, RAM: 45 * gib * int64(m.gpus),
		StorageTotal: 100 * gib, StorageUsed: 8 * gib,
		Accelerators: []accelerator{{Name: model, Count: m.gpus}},
		Region:       s.regionName(m.region), PublicIPType: "dynamic",
		UsageRate: m.usageRate, StorageRate: 0.00014,
		DtCreated: m.created.UTC(), DtModified: m.created.UTC(),
	}
	private := fmt.Sprintf("10.0.%d.%d", m.seq/250, m.seq%250+2)
	j.PrivateIP = &private
	if state == "ready" {
		public := fmt.Sprintf("198.51.100.%d", m.seq%250+2)
		j.PublicIP = &public
	}
	if !m.deleted.IsZero() {
		d := m.deleted.UTC()
		j.DtDeleted, j.DtModified = &d, d
	}
	return j
}

// regionName is how machines show their region.
func (s *Server) regionName(code string) string {
	if long, ok := RegionDisplayNames[code]; ok && s.longNames {
		return long
	}
	return code
}

// event is the {event} half of an async answer; the simulated operation
// has already been applied, so the event is done.
func event(name, machineID string, now time.Time) map[string]any {
	t := now.UTC()
	return map[string]any{
		"id": "ev" + machineID + name, "name": name, "state": "done", "machineId": machineID,
		"dtCreated": t, "dtStarted": t, "dtFinished": t, "error": nil,
	}
}

// decodeBody reads a JSON body strictly: the spec's request schemas forbid
// additional properties.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(http.MaxBytesReader(w, r.Body, 1<<20)); err != nil {
		writeError(w, http.StatusBadRequest, "BAD_REQUEST", "Could not read the request body")
		return false
	}
	dec := json.NewDecoder(&buf)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, "PARSE_ERROR", "Invalid JSON body: "+err.Error())
		return false
	}
	return true
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, map[string]string{"message": message, "code": code})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
