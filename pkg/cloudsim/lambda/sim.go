// Package lambda simulates the Lambda Cloud API (../shared/provider-specs/
// lambda, openapi 1.8.3) over real HTTP: the instance-types, launch, list,
// get and terminate endpoints and the SSH key list, with the spec's paths,
// JSON shapes (encoded with the generated lambdaapi types), instance
// statuses and error envelope.
//
// The account has SSH keys (DefaultSSHKeyName from the start; AddSSHKey and
// RemoveSSHKey change them). A launch must name exactly one of them, as the
// spec's InstanceLaunchRequest.ssh_key_names says ("Currently, exactly one
// SSH key must be specified"); anything else is refused with 400
// global/invalid-parameters, the spec's ApiErrorInvalidParameters.
//
// Instance status is computed from the clock whenever it is read: booting
// until CreatedAt+BootDelay, then active; preempted once Preempt is called;
// terminating for TerminateDelay after a terminate, then terminated, at which
// point its capacity returns to the catalog.
package lambda

import (
	"encoding/json"
	"errors"
	"fmt"
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
	"github.com/solanyn/gpu-operator/pkg/providers/lambda/lambdaapi"
)

// Error codes the simulator answers with. All but codeRateLimited are named
// in the spec; the spec documents no 429 body, so that code is the
// simulator's own.
const (
	codeInvalidAPIKey        = "global/invalid-api-key"
	codeObjectDoesNotExist   = "global/object-does-not-exist"
	codeInvalidParameters    = "global/invalid-parameters"
	codeQuotaExceeded        = "global/quota-exceeded"
	codeInternalError        = "global/internal-error"
	codeInsufficientCapacity = "instance-operations/launch/insufficient-capacity"
	codeRateLimited          = "global/rate-limited"
)

// Endpoints, as counted in cloudsim.Counters.Requests.
const (
	EndpointInstanceTypes = "GET /api/v1/instance-types"
	EndpointLaunch        = "POST /api/v1/instance-operations/launch"
	EndpointInstances     = "GET /api/v1/instances"
	EndpointInstance      = "GET /api/v1/instances/{id}"
	EndpointTerminate     = "POST /api/v1/instance-operations/terminate"
	EndpointSSHKeys       = "GET /api/v1/ssh-keys"
)

// DefaultSSHKeyName is the SSH key every simulated account starts with.
const DefaultSSHKeyName = "gpu-operator"

// The spec's patterns for InstanceLaunchRequest.hostname and tag keys.
var (
	hostnamePattern = regexp.MustCompile(`^[a-z0-9][0-9a-z-]{0,62}$`)
	tagKeyPattern   = regexp.MustCompile(`^[a-z][a-z0-9-:]+$`)
)

// Server is the Lambda simulator. It implements cloudsim.Simulator.
type Server struct {
	core *cloudsim.Core
	mux  *http.ServeMux

	mu        sync.Mutex
	instances map[string]*instance
	sshKeys   map[string]lambdaapi.SSHKey // by name
}

var _ cloudsim.Simulator = (*Server)(nil)

// ErrNotFound is returned by Preempt for an unknown instance.
var ErrNotFound = errors.New("lambda sim: no such instance")

// instance is one simulated instance; its status derives from the times.
type instance struct {
	id, name, hostname string
	instanceType       string
	region             string
	gpus               int
	priceCents         int
	userData           string
	sshKeys            []string
	tags               []lambdaapi.TagEntry
	ip                 string
	createdAt          time.Time
	preempted          bool
	terminateAt        time.Time // zero until terminated
	capacityReturned   bool
}

// New builds a simulator; a nil clock means the real clock.
func New(cfg cloudsim.Config, clk clock.Clock) *Server {
	s := &Server{core: cloudsim.NewCore(cfg, clk), instances: map[string]*instance{}, sshKeys: map[string]lambdaapi.SSHKey{}}
	s.AddSSHKey(DefaultSSHKeyName)
	mux := http.NewServeMux()
	mux.HandleFunc(EndpointInstanceTypes, s.gate(EndpointInstanceTypes, false, s.listInstanceTypes))
	mux.HandleFunc(EndpointLaunch, s.gate(EndpointLaunch, true, s.launch))
	mux.HandleFunc(EndpointInstances, s.gate(EndpointInstances, false, s.listInstances))
	mux.HandleFunc(EndpointInstance, s.gate(EndpointInstance, false, s.getInstance))
	mux.HandleFunc(EndpointTerminate, s.gate(EndpointTerminate, false, s.terminate))
	mux.HandleFunc(EndpointSSHKeys, s.gate(EndpointSSHKeys, false, s.listSSHKeys))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, codeObjectDoesNotExist, "No such endpoint.", "")
	})
	s.mux = mux
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Provider implements cloudsim.Simulator.
func (s *Server) Provider() string { return providers.LambdaLabs }

// Core implements cloudsim.Simulator.
func (s *Server) Core() *cloudsim.Core { return s.core }

// Machines implements cloudsim.Simulator: every instance ever launched,
// terminated ones included, ordered by ID.
func (s *Server) Machines() []cloudsim.Machine {
	now := s.core.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked(now)
	out := make([]cloudsim.Machine, 0, len(s.instances))
	for _, in := range s.instances {
		st := in.status(now, s.core.Config())
		out = append(out, cloudsim.Machine{
			Provider:     providers.LambdaLabs,
			ID:           in.id,
			Name:         in.name,
			InstanceType: in.instanceType,
			Region:       in.region,
			GPUs:         in.gpus,
			UserData:     in.userData,
			NativeState:  string(st),
			Active:       st == lambdaapi.Active,
			Live:         st != lambdaapi.Terminated,
			Preempted:    in.preempted,
		})
	}
	cloudsim.SortMachines(out)
	return out
}

// AddSSHKey registers an SSH key name in the account (a no-op if it is).
func (s *Server) AddSSHKey(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sshKeys[name]; ok {
		return
	}
	id := s.core.NextID("sshkey")
	s.sshKeys[name] = lambdaapi.SSHKey{Id: id, Name: name, PublicKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI" + id + " " + name}
}

// RemoveSSHKey deletes an SSH key name from the account.
func (s *Server) RemoveSSHKey(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.sshKeys, name)
}

// Preempt implements cloudsim.Simulator. Lambda sells no spot capacity, but
// its status enum has "preempted"; any running or booting instance can be
// taken back. It stays (billing, Live) until terminated.
func (s *Server) Preempt(id string) error {
	now := s.core.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	in, ok := s.instances[id]
	if !ok {
		return fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	if st := in.status(now, s.core.Config()); st != lambdaapi.Booting && st != lambdaapi.Active {
		return fmt.Errorf("lambda sim: cannot preempt instance %q: it is %s", id, st)
	}
	in.preempted = true
	return nil
}

// status is the instance's Lambda status at now.
func (in *instance) status(now time.Time, cfg cloudsim.Config) lambdaapi.InstanceStatus {
	switch {
	case !in.terminateAt.IsZero() && now.Before(in.terminateAt.Add(cfg.TerminateDelay)):
		return lambdaapi.Terminating
	case !in.terminateAt.IsZero():
		return lambdaapi.Terminated
	case in.preempted:
		return lambdaapi.Preempted
	case now.Before(in.createdAt.Add(cfg.BootDelay)):
		return lambdaapi.Booting
	default:
		return lambdaapi.Active
	}
}

// settleLocked returns the capacity of instances that have become
// terminated since the last look. Callers hold s.mu.
func (s *Server) settleLocked(now time.Time) {
	for _, in := range s.instances {
		if !in.capacityReturned && in.status(now, s.core.Config()) == lambdaapi.Terminated {
			in.capacityReturned = true
			s.core.ReturnCapacity(in.instanceType, in.region)
		}
	}
}

// gate admits a call through the core and answers refusals in Lambda's format.
func (s *Server) gate(endpoint string, launch bool, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		switch s.core.Admit(r.Context(), endpoint, apiKey(r), launch) {
		case cloudsim.Serve:
			h(w, r)
		case cloudsim.Unauthorized:
			writeError(w, http.StatusUnauthorized, codeInvalidAPIKey,
				"API key was invalid, expired, or deleted.", "Check your API key or create a new one, then try again.")
		case cloudsim.RateLimited:
			w.Header().Set("Retry-After", strconv.Itoa(s.core.RetryAfter()))
			writeError(w, http.StatusTooManyRequests, codeRateLimited, "Too many requests.", "Wait and try again.")
		case cloudsim.Fail:
			writeError(w, http.StatusInternalServerError, codeInternalError, "Internal server error.", "")
		case cloudsim.Unavailable:
			writeError(w, http.StatusServiceUnavailable, codeInternalError, "Service temporarily unavailable.", "")
		}
	}
}

// apiKey accepts the spec's three forms: "Bearer KEY", "Basic
// base64(KEY:)" and "Basic KEY".
func apiKey(r *http.Request) string {
	if k := cloudsim.BearerKey(r); k != "" {
		return k
	}
	if user, _, ok := r.BasicAuth(); ok {
		return user
	}
	if k, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Basic "); ok {
		return k
	}
	return ""
}

func (s *Server) listInstanceTypes(w http.ResponseWriter, _ *http.Request) {
	now := s.core.Now()
	s.mu.Lock()
	s.settleLocked(now)
	s.mu.Unlock()
	types := lambdaapi.InstanceTypes{}
	for _, e := range s.core.Catalog() {
		item, seen := types[e.InstanceType]
		if !seen {
			// Lambda has one price per type: the first catalog entry's.
			item = lambdaapi.InstanceTypesItem{
				InstanceType:                 instanceType(e.InstanceType, e.GPUs, priceCents(e.OnDemandPrice)),
				RegionsWithCapacityAvailable: []lambdaapi.Region{},
			}
		}
		if e.Capacity != 0 {
			item.RegionsWithCapacityAvailable = append(item.RegionsWithCapacityAvailable, region(e.Region))
		}
		types[e.InstanceType] = item
	}
	writeData(w, types)
}

func (s *Server) launch(w http.ResponseWriter, r *http.Request) {
	var req lambdaapi.InstanceLaunchRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 2<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, codeInvalidParameters, "Invalid request body: "+err.Error(), "")
		return
	}
	region := string(req.RegionName)
	entry, ok := s.core.Entry(req.InstanceTypeName, region)
	if msg := validateLaunch(req, ok); msg != "" {
		writeError(w, http.StatusBadRequest, codeInvalidParameters, msg, "")
		return
	}
	if msg := s.checkSSHKeys(req.SshKeyNames); msg != "" {
		writeError(w, http.StatusBadRequest, codeInvalidParameters, msg, "Name exactly one SSH key registered in your account.")
		return
	}
	if !ok {
		writeError(w, http.StatusBadRequest, codeInvalidParameters,
			fmt.Sprintf("Instance type %q is not offered in region %q.", req.InstanceTypeName, region), "")
		return
	}
	now := s.core.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settleLocked(now)
	if q := s.core.Config().Quota; q > 0 && s.liveLocked(now) >= q {
		writeError(w, http.StatusBadRequest, codeQuotaExceeded, "Quota exceeded.",
			"Terminate instances or request a quota increase.")
		return
	}
	if !s.core.TakeCapacity(entry.InstanceType, region) {
		writeError(w, http.StatusBadRequest, codeInsufficientCapacity,
			"Not enough capacity to fulfill launch request.", "Choose another instance type or region.")
		return
	}
	seq := s.core.NextID("")
	in := &instance{
		id:           "lambda-" + seq,
		name:         deref(req.Name),
		hostname:     deref(req.Hostname),
		instanceType: entry.InstanceType,
		region:       region,
		gpus:         entry.GPUs,
		priceCents:   priceCents(entry.OnDemandPrice),
		userData:     deref(req.UserData),
		sshKeys:      req.SshKeyNames,
		ip:           testNetIP(seq),
		createdAt:    now,
	}
	if req.Tags != nil {
		for _, t := range *req.Tags {
			in.tags = append(in.tags, lambdaapi.TagEntry(t))
		}
	}
	s.instances[in.id] = in
	s.core.RecordLaunch(in.name)
	writeData(w, lambdaapi.InstanceLaunchResponse{InstanceIds: []string{in.id}})
}

// validateLaunch checks what the spec requires of a launch body. A region
// the catalog sells counts as valid even outside the spec's enum: Lambda
// answers with codes the 1.8.3 enum lacks (europe-south-1).
func validateLaunch(req lambdaapi.InstanceLaunchRequest, sold bool) string {
	switch {
	case req.RegionName == "" || (!req.RegionName.Valid() && !sold):
		return fmt.Sprintf("Invalid region_name %q.", req.RegionName)
	case req.InstanceTypeName == "":
		return "instance_type_name is required."
	case req.SshKeyNames == nil:
		return "ssh_key_names is required."
	case req.Name != nil && len(*req.Name) > 64:
		return "name must be 64 characters or fewer."
	case req.Hostname != nil && !hostnamePattern.MatchString(*req.Hostname):
		return fmt.Sprintf("Invalid hostname %q.", *req.Hostname)
	case req.UserData != nil && len(*req.UserData) > 1<<20:
		return "user_data must not exceed 1MB."
	}
	if req.Tags != nil {
		for _, t := range *req.Tags {
			if len(t.Key) > 55 || !tagKeyPattern.MatchString(t.Key) || len(t.Value) > 128 {
				return fmt.Sprintf("Invalid tag %q.", t.Key)
			}
		}
	}
	return ""
}

// checkSSHKeys refuses anything but exactly one registered SSH key name.
func (s *Server) checkSSHKeys(names []string) string {
	if len(names) != 1 {
		return fmt.Sprintf("Exactly one SSH key must be specified in ssh_key_names; got %d.", len(names))
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.sshKeys[names[0]]; !ok {
		return fmt.Sprintf("SSH key %q does not exist.", names[0])
	}
	return ""
}

func (s *Server) listSSHKeys(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	keys := make([]lambdaapi.SSHKey, 0, len(s.sshKeys))
	for _, k := range s.sshKeys {
		keys = append(keys, k)
	}
	s.mu.Unlock()
	slices.SortFunc(keys, func(a, b lambdaapi.SSHKey) int { return strings.Compare(a.Name, b.Name) })
	writeData(w, keys)
}

// liveLocked counts instances that are not terminated. Callers hold s.mu.
func (s *Server) liveLocked(now time.Time) int {
	n := 0
	for _, in := range s.instances {
		if in.status(now, s.core.Config()) != lambdaapi.Terminated {
			n++
		}
	}
	return n
}

func (s *Server) listInstances(w http.ResponseWriter, _ *http.Request) {
	now := s.core.Now()
	s.mu.Lock()
	s.settleLocked(now)
	ids := make([]string, 0, len(s.instances))
	for id := range s.instances {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make([]lambdaapi.Instance, 0, len(ids))
	for _, id := range ids {
		out = append(out, s.instances[id].api(now, s.core.Config()))
	}
	s.mu.Unlock()
	writeData(w, out)
}

func (s *Server) getInstance(w http.ResponseWriter, r *http.Request) {
	now := s.core.Now()
	s.mu.Lock()
	s.settleLocked(now)
	in, ok := s.instances[r.PathValue("id")]
	var out lambdaapi.Instance
	if ok {
		out = in.api(now, s.core.Config())
	}
	s.mu.Unlock()
	if !ok {
		writeError(w, http.StatusNotFound, codeObjectDoesNotExist, "Specified instance does not exist.", "")
		return
	}
	writeData(w, out)
}

// terminate terminates every listed instance, or none if one is unknown.
// Terminating an instance that is already terminating or terminated
// succeeds and reports it again.
func (s *Server) terminate(w http.ResponseWriter, r *http.Request) {
	var req lambdaapi.InstanceTerminateRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || len(req.InstanceIds) == 0 {
		writeError(w, http.StatusBadRequest, codeInvalidParameters, "instance_ids must list at least one instance.", "")
		return
	}
	now := s.core.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range req.InstanceIds {
		if _, ok := s.instances[id]; !ok {
			writeError(w, http.StatusNotFound, codeObjectDoesNotExist, "Specified instance does not exist.", "")
			return
		}
	}
	out := lambdaapi.InstanceTerminateResponse{TerminatedInstances: []lambdaapi.Instance{}}
	for _, id := range req.InstanceIds {
		in := s.instances[id]
		if in.terminateAt.IsZero() {
			in.terminateAt = now
		}
		out.TerminatedInstances = append(out.TerminatedInstances, in.api(now, s.core.Config()))
	}
	s.settleLocked(now) // a zero TerminateDelay terminates at once
	writeData(w, out)
}

// api renders the instance in the spec's shape.
func (in *instance) api(now time.Time, cfg cloudsim.Config) lambdaapi.Instance {
	st := in.status(now, cfg)
	gone := st == lambdaapi.Terminating || st == lambdaapi.Terminated
	action := lambdaapi.InstanceActionAvailabilityDetails{Available: !gone && st != lambdaapi.Booting}
	out := lambdaapi.Instance{
		Id:              in.id,
		Status:          st,
		SshKeyNames:     append([]string{}, in.sshKeys...),
		FileSystemNames: []string{},
		Region:          region(in.region),
		InstanceType:    instanceType(in.instanceType, in.gpus, in.priceCents),
		Actions: lambdaapi.InstanceActionAvailability{
			ColdReboot: action, Migrate: action, Rebuild: action, Restart: action,
			Terminate: lambdaapi.InstanceActionAvailabilityDetails{Available: !gone},
		},
	}
	if in.name != "" {
		out.Name = &in.name
	}
	if in.hostname != "" {
		out.Hostname = &in.hostname
	}
	if st != lambdaapi.Booting && !gone {
		out.Ip = &in.ip
	}
	if len(in.tags) > 0 {
		tags := slices.Clone(in.tags)
		out.Tags = &tags
	}
	return out
}

// instanceType renders a catalog type; the specs beyond the GPU count are
// plausible, fixed multiples.
func instanceType(name string, gpus, cents int) lambdaapi.InstanceType {
	model := name
	if _, m, ok := strings.Cut(name, "x_"); ok {
		model = strings.ToUpper(m)
	}
	return lambdaapi.InstanceType{
		Name:              name,
		Description:       fmt.Sprintf("%dx %s", gpus, model),
		GpuDescription:    model,
		PriceCentsPerHour: cents,
		Specs: lambdaapi.InstanceTypeSpecs{
			Gpus: gpus, Vcpus: 26 * max(gpus, 1), MemoryGib: 200 * max(gpus, 1), StorageGib: 1024 * max(gpus, 1),
		},
	}
}

// region renders a native region; the simulator does not know the places,
// so the description repeats the code.
func region(code string) lambdaapi.Region {
	return lambdaapi.Region{Name: lambdaapi.PublicRegionCode(code), Description: code}
}

// priceCents converts the catalog's USD/h into Lambda's integer cents.
func priceCents(usd float64) int { return int(usd*100 + 0.5) }

// testNetIP derives a documentation address (TEST-NET-2) from an id sequence.
func testNetIP(seq string) string {
	n, _ := strconv.Atoi(seq)
	return fmt.Sprintf("198.51.%d.%d", 100+(n/254)%100, 1+n%254)
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// writeData writes Lambda's success envelope {"data": v}.
func writeData(w http.ResponseWriter, v any) {
	writeJSON(w, http.StatusOK, struct {
		Data any `json:"data"`
	}{v})
}

// apiError is Lambda's error object.
type apiError struct {
	Code       string `json:"code"`
	Message    string `json:"message"`
	Suggestion string `json:"suggestion,omitempty"`
}

// writeError writes Lambda's error envelope {"error": {code, message, suggestion}}.
func writeError(w http.ResponseWriter, status int, code, message, suggestion string) {
	writeJSON(w, status, struct {
		Error apiError `json:"error"`
	}{apiError{Code: code, Message: message, Suggestion: suggestion}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// The values are plain structs that always encode; a failed write means
	// the client has gone, and there is no one left to tell.
	_ = json.NewEncoder(w).Encode(v)
}
