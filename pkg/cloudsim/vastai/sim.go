// Package vastai simulates Vast.ai's REST API (https://console.vast.ai,
// ../shared/provider-specs/vastai/openapi.yaml) over HTTP for tests, the
// demo and the benchmarks: a marketplace of individual hosts, on-demand and
// interruptible (bid) rentals, VM and container instances, and a real SSH
// server on loopback for every VM. It serves the operations the operator
// uses, each with and without the trailing slash Vast.ai's guide and CLI
// send:
//
//   - POST /api/v0/bundles (searchOffers): the marketplace, filtered,
//     ordered and limited as the request asks;
//   - PUT /api/v0/asks/{id} (createInstance): {"success": true,
//     "new_contract": id};
//   - GET /api/v1/instances (showInstances): 25 a page, keyset pagination
//     with next_token;
//   - DELETE /api/v0/instances/{id} (destroyInstance);
//   - PUT /api/v0/instances/bid_price/{id} (changeBid);
//   - POST and GET /api/v0/ssh (createSshKey, getSshKeysUser).
//
// Errors are Vast.ai's {"success": false, "error": code, "msg": text} with
// the spec's codes and example wording where it has them (a create on an
// ask that is gone: 404 "no_such_ask Instance type by id N is not
// available."; a bid that cannot start with cancel_unavail: 410; a VM
// without an account SSH key: 400 no_ssh_key_for_vm); 429s are {"detail":
// "API requests too frequent ..."} with Retry-After; a bad key is 401
// auth_error "Invalid user key", except on the search, whose spec declares
// 404 for it. What the spec does not document is marked where it is
// answered (an account out of credit: 403 insufficient_credit; injected
// 5xx).
//
// # The marketplace
//
// Config.Hosts (and Config.Market, generated) are the hosts; each is one
// ask and one entry of the shared catalog (cloudsim.Config.Catalog is
// replaced by them): InstanceType the ask id, Region the geolocation,
// OnDemandPrice dph_total, SpotPrice min_bid, Capacity 1, so
// Core().SetCapacity(askID, geolocation, 0) rents a host to someone else. A
// rented host is not rentable; destroying its instance frees it.
//
// # Bids
//
// An interruptible instance ("price" on create) holds its host while its
// bid is at least the host's effective minimum bid: the host's MinBid, or
// a competing bid plus $0.001 once Outbid has placed one. Outbid stops the
// instance as Vast.ai does when it loses the bid (actual_status stopped,
// intended_status running: the instance still exists and bills its disk);
// raising its bid (changeBid) to the effective minimum resumes it, since
// "paused instances resume when they regain priority" (Vast.ai's
// instance-types guide). An instance is listed with min_bid the effective
// minimum and dph_base its bid.
//
// # VMs and SSH
//
// A VM ("vm": true; the host must have VMs enabled, the image must be one
// of docker.io/vastai/kvm, and the account must have an SSH key) gets its
// own SSH server on 127.0.0.1 (public_ipaddr 127.0.0.1, "ports"
// {"22/tcp": [{"HostPort": port}]}, ssh_host and ssh_port the same), which
// accepts, as root, the account's keys as they were when the VM was created
// ("SSH keys cannot be edited on running VMs") and answers only while the
// VM runs. It records every command and its standard input (SSHRuns); the
// latest script that exited 0 is the machine's UserData, which the node
// agent reads the Node name from, and a VM is Active (joins) only once it
// runs and has been bootstrapped. Containers (runtype args) get their env
// ports ("-p 8080:8080") mapped to public ports of a TEST-NET address.
//
// An instance's actual_status is null for the first half of BootDelay,
// "loading" for the second, then "running". A destroyed instance is gone
// from the list at once.
package vastai

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"k8s.io/utils/clock"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/providers"
)

// Messages. Where the spec has an example, it is used as given.
const (
	// MsgBadKey is the spec's example message for a bad key (showInstance's 401).
	MsgBadKey = "Invalid user key"
	// MsgNoCredit answers a create beyond cloudsim.Config.Quota. The spec
	// documents no answer for an account out of credit (see the adapter's
	// CodeInsufficientCredit).
	MsgNoCredit = "error 403/4000: insufficient credit: your balance cannot cover another instance; add credit"
)

// Config is the simulator's configuration.
type Config struct {
	cloudsim.Config
	// Hosts are the marketplace's hosts (with Market's, if any).
	Hosts []Host `json:"hosts,omitempty"`
	// Market generates more hosts.
	Market *Market `json:"market,omitempty"`
}

// host is a host and its competition.
type host struct {
	Host
	key       string  // catalog InstanceType
	competing float64 // highest competing bid placed by Outbid; 0: none
}

// minBid is the bid that wins the host now.
func (h *host) minBid() float64 {
	if h.competing > 0 {
		return math.Max(h.MinBid, round3(h.competing+0.001))
	}
	return h.MinBid
}

// instance is a simulated instance.
type instance struct {
	id        int
	label     string
	host      *host
	vm        bool
	image     string
	runtype   string
	args      []string
	env       [][2]string // env vars, in order
	ports     []int       // container ports ("-p N:N")
	bid       float64     // 0: on-demand
	seq       int
	createdAt time.Time
	outbid    bool
	destroyed bool
	ssh       *sshServer
}

// Server is the Vast.ai simulator. It is safe for concurrent use.
type Server struct {
	core *cloudsim.Core
	mux  *http.ServeMux

	mu              sync.Mutex
	hosts           []*host
	byAsk           map[int]*host
	instances       map[int]*instance
	order           []int // instance ids in creation order
	keys            []accountKey
	creates         [][]byte
	failAfterCreate int
	closed          bool
}

type accountKey struct {
	id        int
	line      string
	key       ssh.PublicKey
	createdAt time.Time
}

var _ cloudsim.Simulator = (*Server)(nil)

// New builds a simulator; a nil clock means the real clock. The catalog of
// cfg.Config is replaced by the hosts' (see the package doc).
func New(cfg Config, clk clock.Clock) *Server {
	hosts := append([]Host(nil), cfg.Hosts...)
	if cfg.Market != nil && cfg.Market.Hosts > 0 {
		hosts = append(hosts, GenerateHosts(*cfg.Market)...)
	}
	core := cfg.Config
	core.Catalog = CatalogOf(hosts)
	s := &Server{
		core: cloudsim.NewCore(core, clk), mux: http.NewServeMux(),
		byAsk: map[int]*host{}, instances: map[int]*instance{},
	}
	for _, h := range hosts {
		if h.MachineID == 0 {
			h.MachineID = h.ID + 1_000_000_000
		}
		hh := &host{Host: h, key: strconv.Itoa(h.ID)}
		s.hosts = append(s.hosts, hh)
		s.byAsk[h.ID] = hh
	}
	both := func(method, path string, launch bool, h http.HandlerFunc) {
		s.handle(method+" "+path, method+" "+path, launch, h)
		s.handle(method+" "+path+"/", method+" "+path, launch, h)
	}
	both(http.MethodPost, "/api/v0/bundles", false, s.search)
	both(http.MethodPut, "/api/v0/asks/{id}", true, s.create)
	both(http.MethodGet, "/api/v1/instances", false, s.list)
	both(http.MethodDelete, "/api/v0/instances/{id}", false, s.destroy)
	both(http.MethodPut, "/api/v0/instances/bid_price/{id}", false, s.changeBid)
	both(http.MethodPost, "/api/v0/ssh", false, s.createKey)
	both(http.MethodGet, "/api/v0/ssh", false, s.listKeys)
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return s
}

// CatalogOf is the shared catalog of a marketplace: one entry per host
// (InstanceType the ask id, Region the geolocation, GPUs, OnDemandPrice
// dph_total, SpotPrice min_bid, Capacity 1).
func CatalogOf(hosts []Host) []cloudsim.CatalogEntry {
	out := make([]cloudsim.CatalogEntry, 0, len(hosts))
	for _, h := range hosts {
		out = append(out, cloudsim.CatalogEntry{InstanceType: strconv.Itoa(h.ID), GPUs: h.NumGPUs, Region: h.Geolocation,
			OnDemandPrice: h.DPHTotal, SpotPrice: h.MinBid, Capacity: 1})
	}
	return out
}

// Provider is providers.VastAI.
func (s *Server) Provider() string { return providers.VastAI }

// Core gives the shared counters, faults and catalog.
func (s *Server) Core() *cloudsim.Core { return s.core }

// ServeHTTP serves the Vast.ai API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Close stops every VM's SSH server.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	var servers []*sshServer
	for _, in := range s.instances {
		if in.ssh != nil {
			servers = append(servers, in.ssh)
		}
	}
	s.mu.Unlock()
	for _, srv := range servers {
		srv.close()
	}
}

// Hosts returns the marketplace's hosts.
func (s *Server) Hosts() []Host {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Host, len(s.hosts))
	for i, h := range s.hosts {
		out[i] = h.Host
	}
	return out
}

// maxRequest bounds request bodies.
const maxRequest = 1 << 20

// handle registers h behind core.Admit under pattern, counting it as
// endpoint, and answers the gate's verdicts in Vast.ai's formats.
func (s *Server) handle(pattern, endpoint string, launch bool, h http.HandlerFunc) {
	search := strings.Contains(endpoint, "/bundles")
	destroy := strings.HasPrefix(endpoint, http.MethodDelete)
	s.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		// Read the whole request first, as a real front end does.
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequest))
		if err != nil {
			writeError(w, http.StatusRequestEntityTooLarge, "invalid_request", "request body too large")
			return
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
		switch s.core.Admit(r.Context(), endpoint, cloudsim.BearerKey(r), launch) {
		case cloudsim.Serve:
			h(w, r)
		case cloudsim.Unauthorized:
			if search {
				// The spec's search: "404: Unauthorized - invalid or missing API key".
				writeJSON(w, http.StatusNotFound, map[string]string{"error": "auth_error", "msg": MsgBadKey})
				return
			}
			writeError(w, http.StatusUnauthorized, "auth_error", MsgBadKey)
		case cloudsim.RateLimited:
			w.Header().Set("Retry-After", strconv.Itoa(s.core.RetryAfter()))
			msg := fmt.Sprintf("API requests too frequent endpoint threshold=%.1f", s.core.Config().RequestsPerSecond)
			if destroy {
				// destroyInstance's 429 is in the error format.
				writeError(w, http.StatusTooManyRequests, "rate_limit_exceeded", msg)
				return
			}
			writeJSON(w, http.StatusTooManyRequests, map[string]string{"detail": msg})
		case cloudsim.Fail:
			// The spec declares no 5xx; an injected fault in the error format.
			writeError(w, http.StatusInternalServerError, "server_error", "internal server error")
		case cloudsim.Unavailable:
			writeError(w, http.StatusServiceUnavailable, "service_unavailable", "service temporarily unavailable")
		}
	})
}

type errorBody struct {
	Success bool   `json:"success"`
	Error   string `json:"error"`
	Msg     string `json:"msg"`
	AskID   *int   `json:"ask_id,omitempty"`
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, errorBody{Error: code, Msg: msg})
}

func writeAskError(w http.ResponseWriter, status int, code, msg string, ask int) {
	writeJSON(w, status, errorBody{Error: code, Msg: msg, AskID: &ask})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// ---- search ----

// offerJSON is a search result: the fields of the spec's example.
type offerJSON struct {
	ID                int      `json:"id"`
	AskContractID     int      `json:"ask_contract_id"`
	BundleID          int      `json:"bundle_id"`
	MachineID         int      `json:"machine_id"`
	HostID            int      `json:"host_id"`
	GPUName           string   `json:"gpu_name"`
	NumGPUs           int      `json:"num_gpus"`
	GPURAM            int      `json:"gpu_ram"`
	GPUTotalRAM       int      `json:"gpu_total_ram"`
	GPUFrac           float64  `json:"gpu_frac"`
	GPUArch           string   `json:"gpu_arch"`
	Geolocation       string   `json:"geolocation"`
	DPHTotal          float64  `json:"dph_total"`
	DPHBase           float64  `json:"dph_base"`
	MinBid            *float64 `json:"min_bid"`
	IsBid             bool     `json:"is_bid"`
	Reliability       float64  `json:"reliability"`
	Reliability2      float64  `json:"reliability2"`
	Rentable          bool     `json:"rentable"`
	Rented            bool     `json:"rented"`
	Verification      string   `json:"verification"`
	VMsEnabled        bool     `json:"vms_enabled"`
	CPUCores          int      `json:"cpu_cores"`
	CPURAM            int      `json:"cpu_ram"`
	DiskSpace         float64  `json:"disk_space"`
	InetDown          float64  `json:"inet_down"`
	InetUp            float64  `json:"inet_up"`
	CUDAMaxGood       float64  `json:"cuda_max_good"`
	DirectPortCount   int      `json:"direct_port_count"`
	StaticIP          bool     `json:"static_ip"`
	StorageCost       float64  `json:"storage_cost"`
	External          bool     `json:"external"`
	ResourceType      string   `json:"resource_type"`
	TimeRemaining     string   `json:"time_remaining"`
	TimeRemainingBid  string   `json:"time_remaining_isbid"`
	DLPerf            float64  `json:"dlperf"`
	Score             float64  `json:"score"`
	PublicIPAddr      string   `json:"public_ipaddr"`
	CPUArch           string   `json:"cpu_arch"`
	HostingType       int      `json:"hosting_type"`
	BundledResults    *int     `json:"bundled_results"`
	ClusterID         *int     `json:"cluster_id"`
	Webpage           *string  `json:"webpage"`
	Logo              string   `json:"logo"`
	DriverVersion     string   `json:"driver_version"`
	ComputeCap        int      `json:"compute_cap"`
	PCIeBW            float64  `json:"pcie_bw"`
	CreditDiscountMax float64  `json:"credit_discount_max"`
}

// searchKeys are the body keys that are not filters.
var searchKeys = map[string]bool{"type": true, "limit": true, "order": true, "allocated_storage": true, "disable_bundling": true}

// filterOps are the spec's filter operators.
var filterOps = map[string]bool{"eq": true, "neq": true, "gt": true, "lt": true, "gte": true, "lte": true, "in": true, "notin": true}

// view is one host as a search sees it.
type view struct {
	h        *host
	rentable bool
	rented   bool
	price    float64 // dph_total for the search type
	minBid   float64
}

// field reads a filterable field of a view: a number, a string or a bool;
// ok is false for a field the simulator does not filter on.
func (v *view) field(name string) (any, bool) {
	h := v.h
	switch name {
	case "verified":
		return h.Verified, true
	case "verification":
		if h.Verified {
			return "verified", true
		}
		return "unverified", true
	case "rentable":
		return v.rentable, true
	case "rented":
		return v.rented, true
	case "reliability", "reliability2":
		return h.Reliability, true
	case "gpu_name":
		return h.GPUName, true
	case "num_gpus":
		return float64(h.NumGPUs), true
	case "gpu_ram":
		return float64(h.GPURAM), true
	case "gpu_total_ram":
		return float64(h.GPURAM * h.NumGPUs), true
	case "dph_total":
		return v.price, true
	case "min_bid":
		return v.minBid, true
	case "geolocation":
		return countryOf(h.Geolocation), true
	case "vms_enabled":
		return h.VMsEnabled, true
	case "id":
		return float64(h.ID), true
	case "machine_id":
		return float64(h.MachineID), true
	}
	return nil, false
}

// countryOf is the country code of a geolocation ("Texas, US": US).
func countryOf(geo string) string {
	if i := strings.LastIndexByte(geo, ','); i >= 0 {
		return strings.TrimSpace(geo[i+1:])
	}
	return strings.TrimSpace(geo)
}

type filter struct {
	field string
	op    string
	value any // float64, string, bool, or []any for in/notin
}

// match reports whether v passes f.
func (f filter) match(v *view) bool {
	got, _ := v.field(f.field)
	switch f.op {
	case "in", "notin":
		list, _ := f.value.([]any)
		in := slices.ContainsFunc(list, func(x any) bool { return equal(got, x) })
		return in == (f.op == "in")
	case "eq":
		return equal(got, f.value)
	case "neq":
		return !equal(got, f.value)
	}
	a, ok1 := got.(float64)
	b, ok2 := f.value.(float64)
	if !ok1 || !ok2 {
		return false
	}
	switch f.op {
	case "gt":
		return a > b
	case "lt":
		return a < b
	case "gte":
		return a >= b
	case "lte":
		return a <= b
	}
	return false
}

func equal(a, b any) bool {
	if as, ok := a.(string); ok {
		bs, ok := b.(string)
		// GPU names are also written with "_" for " " (the spec's examples).
		return ok && (as == bs || strings.ReplaceAll(as, " ", "_") == bs)
	}
	return a == b
}

// search serves POST /api/v0/bundles. The filters it applies are the
// fields of view.field; other fields are accepted and ignored. Absent
// verified, rentable and rented take the spec's defaults ({"eq": true},
// {"eq": true}, {"eq": false}); an empty object ({}) is no constraint.
// type bid searches hosts that rent interruptible instances and prices
// them at their minimum bid; reserved is priced as ondemand. Results are
// ordered by "order" (any numeric field), else by id, and cut to "limit"
// (the spec names no default: without one every match is returned).
// allocated_storage is accepted; prices do not depend on it.
func (s *Server) search(w http.ResponseWriter, r *http.Request) {
	var body map[string]json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "msg": "Invalid json body"})
		return
	}
	bad := func(msg string) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "invalid_request", "msg": msg})
	}
	typ := "ondemand"
	if raw, ok := body["type"]; ok {
		if json.Unmarshal(raw, &typ) != nil || (typ != "ondemand" && typ != "bid" && typ != "reserved" && typ != "on-demand") {
			bad("type must be ondemand, bid or reserved")
			return
		}
	}
	limit := -1
	if raw, ok := body["limit"]; ok {
		if json.Unmarshal(raw, &limit) != nil || limit < 0 {
			bad("limit must be a non-negative integer")
			return
		}
	}
	var order [][]string
	if raw, ok := body["order"]; ok {
		if json.Unmarshal(raw, &order) != nil {
			bad("order must be a list of [field, direction] pairs")
			return
		}
	}
	var filters []filter
	defaults := map[string]bool{"verified": true, "rentable": true, "rented": false}
	for name, raw := range body {
		if searchKeys[name] {
			continue
		}
		var ops map[string]any
		if err := json.Unmarshal(raw, &ops); err != nil {
			bad(fmt.Sprintf("filter %s must be an object of operators", name))
			return
		}
		if _, known := (&view{h: &host{}}).field(name); !known {
			continue // not simulated: accepted and ignored
		}
		delete(defaults, name)
		for op, v := range ops {
			if !filterOps[op] {
				bad(fmt.Sprintf("filter %s: unknown operator %q", name, op))
				return
			}
			if (op == "in" || op == "notin") != isList(v) {
				bad(fmt.Sprintf("filter %s: %s takes %s", name, op, map[bool]string{true: "a list", false: "a single value"}[op == "in" || op == "notin"]))
				return
			}
			filters = append(filters, filter{field: name, op: op, value: v})
		}
	}
	for name, want := range defaults {
		filters = append(filters, filter{field: name, op: "eq", value: want})
	}

	catalog := s.core.Catalog()
	capacity := make(map[string]int, len(catalog))
	for _, e := range catalog {
		capacity[e.InstanceType] = e.Capacity
	}
	s.mu.Lock()
	rentedMachines := map[int]bool{}
	for _, in := range s.instances {
		if !in.destroyed {
			rentedMachines[in.host.MachineID] = true
		}
	}
	views := make([]view, 0, len(s.hosts))
	for _, h := range s.hosts {
		v := view{h: h, rentable: capacity[h.key] != 0, rented: rentedMachines[h.MachineID], minBid: h.minBid(), price: h.DPHTotal}
		if typ == "bid" {
			if h.MinBid <= 0 {
				continue
			}
			v.price = v.minBid
		}
		if !slices.ContainsFunc(filters, func(f filter) bool { return !f.match(&v) }) {
			views = append(views, v)
		}
	}
	s.mu.Unlock()

	sortViews(views, order)
	if limit >= 0 && len(views) > limit {
		views = views[:limit]
	}
	offers := make([]offerJSON, len(views))
	for i := range views {
		offers[i] = renderOffer(&views[i], typ == "bid")
	}
	writeJSON(w, http.StatusOK, struct {
		Offers []offerJSON `json:"offers"`
	}{offers})
}

func isList(v any) bool { _, ok := v.([]any); return ok }

// sortViews orders views by the order pairs that name numeric fields, in
// turn, then by id.
func sortViews(vs []view, order [][]string) {
	type key struct {
		field string
		desc  bool
	}
	var keys []key
	for _, o := range order {
		if len(o) != 2 {
			continue
		}
		if x, ok := (&view{h: &host{}}).field(o[0]); ok {
			if _, num := x.(float64); num {
				keys = append(keys, key{o[0], strings.EqualFold(o[1], "desc")})
			}
		}
	}
	num := func(v *view, field string) float64 { x, _ := v.field(field); f, _ := x.(float64); return f }
	sort.SliceStable(vs, func(i, j int) bool {
		for _, k := range keys {
			if a, b := num(&vs[i], k.field), num(&vs[j], k.field); a != b {
				return (a < b) != k.desc
			}
		}
		return vs[i].h.ID < vs[j].h.ID
	})
}

func renderOffer(v *view, bid bool) offerJSON {
	h := v.h
	o := offerJSON{
		ID: h.ID, AskContractID: h.ID, BundleID: h.ID, MachineID: h.MachineID, HostID: 50_000 + h.MachineID%10_000,
		GPUName: h.GPUName, NumGPUs: h.NumGPUs, GPURAM: h.GPURAM, GPUTotalRAM: h.GPURAM * h.NumGPUs, GPUFrac: 1,
		GPUArch: "nvidia", Geolocation: h.Geolocation, DPHTotal: v.price, DPHBase: v.price, IsBid: bid,
		Reliability: h.Reliability, Reliability2: h.Reliability, Rentable: v.rentable, Rented: v.rented,
		Verification: "unverified", VMsEnabled: h.VMsEnabled, CPUCores: 16 * h.NumGPUs, CPURAM: 65536 * h.NumGPUs,
		DiskSpace: 500, InetDown: 1000, InetUp: 1000, CUDAMaxGood: 12.8, DirectPortCount: 100, StaticIP: true,
		StorageCost: 0.1, ResourceType: "gpu", DLPerf: 30 * float64(h.NumGPUs), Score: 100 * h.Reliability,
		PublicIPAddr: fmt.Sprintf("198.51.100.%d", h.ID%250+1), CPUArch: "amd64", Logo: "/static/logos/vastai_small2.png",
		DriverVersion: "570.124.04", ComputeCap: 890, PCIeBW: 25, CreditDiscountMax: 0.4,
	}
	if h.Verified {
		o.Verification = "verified"
	}
	if h.MinBid > 0 {
		o.MinBid = new(v.minBid)
	}
	return o
}

// ---- create ----

// createRequest is createInstance's body as the simulator reads it; env
// is the guide's object or the spec's Docker-flag string.
type createRequest struct {
	Image          *string         `json:"image"`
	TemplateHashID *string         `json:"template_hash_id"`
	Label          *string         `json:"label"`
	Disk           *float64        `json:"disk"`
	Runtype        *string         `json:"runtype"`
	TargetState    *string         `json:"target_state"`
	Price          *float64        `json:"price"`
	Env            json.RawMessage `json:"env"`
	Onstart        *string         `json:"onstart"`
	Args           []string        `json:"args"`
	ArgsStr        *string         `json:"args_str"`
	CancelUnavail  *bool           `json:"cancel_unavail"`
	VM             *bool           `json:"vm"`
}

var runtypes = []string{"ssh", "jupyter", "args", "ssh_proxy", "ssh_direct", "jupyter_proxy", "jupyter_direct"}

// VMImagePrefix is the repository every VM image comes from
// (virtual-machines.mdx: "All VM templates must use one of these images").
const VMImagePrefix = "docker.io/vastai/kvm:"

// create serves PUT /api/v0/asks/{id}.
func (s *Server) create(w http.ResponseWriter, r *http.Request) {
	raw, _ := io.ReadAll(r.Body)
	ask, err := strconv.Atoi(r.PathValue("id"))
	if err != nil || ask <= 0 {
		writeError(w, http.StatusBadRequest, "invalid_args", "error 400/3467: Invalid args: 'id' is required and must be a valid offer ID")
		return
	}
	var in createRequest
	if err := json.Unmarshal(raw, &in); err != nil {
		writeAskError(w, http.StatusBadRequest, "invalid_args", "error 400/3467: Invalid args: "+err.Error(), ask)
		return
	}
	s.mu.Lock()
	s.creates = append(s.creates, raw)
	s.mu.Unlock()
	invalid := func(code, msg string) { writeAskError(w, http.StatusBadRequest, code, "error 400/3467: "+msg, ask) }
	env, ports, err := parseEnv(in.Env)
	switch {
	case err != nil:
		invalid("invalid_args", "Invalid args: env: "+err.Error())
		return
	case in.TemplateHashID != nil:
		writeAskError(w, http.StatusNotFound, "invalid_args", "template not found", ask) // no templates here
		return
	case in.Image == nil || strings.TrimSpace(*in.Image) == "":
		invalid("invalid_args", "Invalid args: 'image' is required")
		return
	case in.Runtype != nil && !slices.Contains(runtypes, *in.Runtype):
		invalid("invalid_args", fmt.Sprintf("Invalid args: unknown runtype %q", *in.Runtype))
		return
	case in.TargetState != nil && *in.TargetState != "running" && *in.TargetState != "stopped":
		invalid("invalid_args", "Invalid args: target_state must be running or stopped")
		return
	case in.Price != nil && (*in.Price < 0.001 || *in.Price > 128):
		invalid("invalid_price", "Please set a bid price between 0.001 and 128.")
		return
	}
	vm := in.VM != nil && *in.VM
	runtype := "ssh"
	if in.Runtype != nil {
		runtype = *in.Runtype
	} else if len(in.Args) > 0 || in.ArgsStr != nil {
		runtype = "args"
	}
	if vm && !strings.HasPrefix(*in.Image, VMImagePrefix) {
		invalid("invalid_args", "Invalid args: a VM instance needs a "+VMImagePrefix+"* image")
		return
	}
	if vm && runtype != "ssh" && runtype != "ssh_direct" && runtype != "ssh_proxy" {
		invalid("invalid_args", "Invalid args: VMs support only the SSH launch mode")
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.byAsk[ask]
	notAvailable := func() {
		writeAskError(w, http.StatusNotFound, "invalid_args", fmt.Sprintf("error 404/3603: no_such_ask Instance type by id %d is not available.", ask), ask)
	}
	if !ok {
		notAvailable()
		return
	}
	switch {
	case vm && !h.VMsEnabled:
		invalid("invalid_args", fmt.Sprintf("Invalid args: machine %d does not have VMs enabled", h.MachineID))
		return
	case vm && len(s.keys) == 0:
		invalid("no_ssh_key_for_vm", "A VM can only be reached over SSH: add an SSH key to your account before you create one")
		return
	case in.Price != nil && h.MinBid <= 0:
		invalid("invalid_args", fmt.Sprintf("Invalid args: machine %d rents no interruptible instances", h.MachineID))
		return
	case in.Price != nil && *in.Price < h.MinBid:
		invalid("invalid_price", fmt.Sprintf("bid price %.3f is below the minimum bid %.3f of this machine", *in.Price, h.MinBid))
		return
	}
	if q := s.core.Config().Quota; q > 0 && s.liveLocked() >= q {
		writeAskError(w, http.StatusForbidden, "insufficient_credit", MsgNoCredit, ask)
		return
	}
	cancel := in.Price == nil // on-demand with target_state running defaults to true
	if in.CancelUnavail != nil {
		cancel = *in.CancelUnavail
	}
	losing := in.Price != nil && *in.Price < h.minBid()
	if losing && cancel {
		writeAskError(w, http.StatusGone, "no_such_ask", fmt.Sprintf("error 410/3907: no_such_ask Instance type %d is no longer available.", ask), ask)
		return
	}
	if !s.core.TakeCapacity(h.key, h.Geolocation) {
		notAvailable()
		return
	}
	id, _ := strconv.Atoi(s.core.NextID(""))
	inst := &instance{
		id: id, label: deref(in.Label), host: h, vm: vm, image: *in.Image, runtype: runtype, args: in.Args,
		env: env, ports: ports, seq: len(s.order) + 1, createdAt: s.core.Now(), outbid: losing,
	}
	if in.Price != nil {
		inst.bid = round3(*in.Price)
	}
	if vm {
		var keys []ssh.PublicKey
		for _, k := range s.keys {
			keys = append(keys, k.key)
		}
		srv, err := startSSH(keys, func() bool { return s.running(inst) }, s.core.Now)
		if err != nil {
			s.core.ReturnCapacity(h.key, h.Geolocation)
			writeError(w, http.StatusInternalServerError, "server_error", "starting the VM: "+err.Error())
			return
		}
		inst.ssh = srv
	}
	s.instances[id] = inst
	s.order = append(s.order, id)
	s.core.RecordLaunch(inst.label)
	if s.failAfterCreate > 0 {
		s.failAfterCreate--
		writeError(w, http.StatusInternalServerError, "server_error", "internal server error")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"success": true, "new_contract": id})
}

// parseEnv reads a create's env: the guide's object ({"NAME": "value",
// "-p 8000:8000": "1"}) or the spec's Docker-flag string ("-e NAME=value
// -p 8000:8000"), into variables and exposed container ports.
func parseEnv(raw json.RawMessage) ([][2]string, []int, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil, nil
	}
	var vars [][2]string
	var ports []int
	addPort := func(spec string) error {
		hostSide, container, ok := strings.Cut(strings.TrimSuffix(strings.TrimSuffix(spec, "/tcp"), "/udp"), ":")
		if !ok {
			container = hostSide
		}
		n, err := strconv.Atoi(container)
		if err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("bad port mapping %q", spec)
		}
		if !slices.Contains(ports, n) {
			ports = append(ports, n)
		}
		return nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, nil, err
		}
		fields := strings.Fields(s)
		for i := 0; i < len(fields); i++ {
			switch fields[i] {
			case "-e", "-p":
				if i+1 >= len(fields) {
					return nil, nil, fmt.Errorf("%s without a value", fields[i])
				}
				i++
				if fields[i-1] == "-p" {
					if err := addPort(fields[i]); err != nil {
						return nil, nil, err
					}
					continue
				}
				k, v, _ := strings.Cut(fields[i], "=")
				vars = append(vars, [2]string{k, v})
			}
		}
		return vars, ports, nil
	}
	var m map[string]string
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, nil, fmt.Errorf("must be an object of strings: %v", err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if p, ok := strings.CutPrefix(k, "-p "); ok {
			if err := addPort(strings.TrimSpace(p)); err != nil {
				return nil, nil, err
			}
			continue
		}
		if strings.HasPrefix(k, "-") {
			continue // another Docker option: not simulated
		}
		vars = append(vars, [2]string{k, m[k]})
	}
	return vars, ports, nil
}

func (s *Server) liveLocked() int {
	n := 0
	for _, in := range s.instances {
		if !in.destroyed {
			n++
		}
	}
	return n
}

// status is an instance's actual_status ("" for null) at now.
func (s *Server) status(in *instance, now time.Time) string {
	boot := s.core.Config().BootDelay
	switch {
	case in.outbid:
		return "stopped"
	case now.Before(in.createdAt.Add(boot / 2)):
		return ""
	case now.Before(in.createdAt.Add(boot)):
		return "loading"
	}
	return "running"
}

// running reports whether an instance runs now (for its SSH server).
func (s *Server) running(in *instance) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !in.destroyed && s.status(in, s.core.Now()) == "running"
}

// ---- list ----

// portMap is a running instance's "ports" entry.
type portMap struct {
	HostIP   string `json:"HostIp"`
	HostPort string `json:"HostPort"`
}

// instanceJSON is a v1 instance row, with the fields of the spec's schema.
type instanceJSON struct {
	ID                int                  `json:"id"`
	ActualStatus      *string              `json:"actual_status"`
	CurState          string               `json:"cur_state"`
	NextState         string               `json:"next_state"`
	IntendedStatus    string               `json:"intended_status"`
	Label             *string              `json:"label"`
	TemplateID        *int                 `json:"template_id"`
	TemplateHashID    *string              `json:"template_hash_id"`
	TemplateName      *string              `json:"template_name"`
	ImageUUID         string               `json:"image_uuid"`
	ImageArgs         []string             `json:"image_args"`
	ImageRuntype      string               `json:"image_runtype"`
	ExtraEnv          [][]string           `json:"extra_env"`
	Onstart           string               `json:"onstart"`
	JupyterToken      string               `json:"jupyter_token"`
	StatusMsg         *string              `json:"status_msg"`
	PublicIPAddr      string               `json:"public_ipaddr"`
	LocalIPAddrs      string               `json:"local_ipaddrs"`
	SSHHost           string               `json:"ssh_host"`
	SSHIdx            string               `json:"ssh_idx"`
	SSHPort           int                  `json:"ssh_port"`
	MachineDirSSHPort int                  `json:"machine_dir_ssh_port"`
	MachineID         int                  `json:"machine_id"`
	StartDate         float64              `json:"start_date"`
	EndDate           float64              `json:"end_date"`
	UptimeMins        *float64             `json:"uptime_mins"`
	Duration          float64              `json:"duration"`
	CPUArch           string               `json:"cpu_arch"`
	CPUCores          int                  `json:"cpu_cores"`
	CPURAM            int                  `json:"cpu_ram"`
	GPUName           string               `json:"gpu_name"`
	GPUArch           string               `json:"gpu_arch"`
	GPUTotalRAM       int                  `json:"gpu_totalram"`
	GPURAM            int                  `json:"gpu_ram"`
	GPUFrac           float64              `json:"gpu_frac"`
	DiskSpace         float64              `json:"disk_space"`
	DirectPortCount   int                  `json:"direct_port_count"`
	DirectPortStart   int                  `json:"direct_port_start"`
	DirectPortEnd     int                  `json:"direct_port_end"`
	Ports             map[string][]portMap `json:"ports"`
	StaticIP          bool                 `json:"static_ip"`
	Geolocation       string               `json:"geolocation"`
	Verification      string               `json:"verification"`
	Rentable          bool                 `json:"rentable"`
	HostID            int                  `json:"host_id"`
	MinBid            float64              `json:"min_bid"`
	IsBid             bool                 `json:"is_bid"`
	DPHBase           float64              `json:"dph_base"`
	DPHTotal          float64              `json:"dph_total"`
	Reliability2      float64              `json:"reliability2"`
	NumGPUs           int                  `json:"num_gpus"`
	TimeRemaining     string               `json:"time_remaining"`
	TimeRemainingBid  string               `json:"time_remaining_isbid"`
	CountryCode       *string              `json:"country_code"`
	VolumeInfo        []any                `json:"volume_info"`
}

// publicIP is the address of a container instance's host (TEST-NET-2); a
// VM's is loopback, where its SSH server listens.
func publicIP(in *instance) string {
	if in.vm {
		return "127.0.0.1"
	}
	return fmt.Sprintf("198.51.100.%d", in.seq%250+1)
}

// portBase is where an instance's public ports start.
func portBase(in *instance) int { return 20000 + (in.seq%2000)*10 }

func (s *Server) render(in *instance, now time.Time) instanceJSON {
	h := in.host
	st := s.status(in, now)
	out := instanceJSON{
		ID: in.id, CurState: "running", NextState: "running", IntendedStatus: "running", Label: new(in.label),
		ImageUUID: in.image, ImageArgs: append([]string{}, in.args...), ImageRuntype: in.runtype, ExtraEnv: [][]string{},
		PublicIPAddr: publicIP(in), LocalIPAddrs: "10.0.0.5 172.17.0.1", SSHIdx: "0", MachineID: h.MachineID,
		StartDate: float64(in.createdAt.UnixNano()) / 1e9, EndDate: float64(in.createdAt.Add(30 * 24 * time.Hour).Unix()),
		Duration: now.Sub(in.createdAt).Seconds(), CPUArch: "amd64", CPUCores: 16 * h.NumGPUs, CPURAM: 65536 * h.NumGPUs,
		GPUName: h.GPUName, GPUArch: "nvidia", GPUTotalRAM: h.GPURAM, GPURAM: h.GPURAM, GPUFrac: 1, DiskSpace: 50,
		DirectPortCount: 10, DirectPortStart: portBase(in), DirectPortEnd: portBase(in) + 9, StaticIP: true,
		Geolocation: h.Geolocation, Verification: "verified", Rentable: false, HostID: 50_000 + h.MachineID%10_000,
		MinBid: h.minBid(), IsBid: in.bid > 0, DPHBase: h.DPHTotal, DPHTotal: h.DPHTotal, Reliability2: h.Reliability,
		NumGPUs: h.NumGPUs, VolumeInfo: []any{},
	}
	if in.bid > 0 {
		out.DPHBase, out.DPHTotal = in.bid, in.bid
	}
	if !h.Verified {
		out.Verification = "unverified"
	}
	for _, kv := range in.env {
		out.ExtraEnv = append(out.ExtraEnv, []string{kv[0], kv[1]})
	}
	if cc := countryOf(h.Geolocation); len(cc) == 2 {
		out.CountryCode = new(cc)
	}
	if in.ssh != nil {
		out.SSHHost, out.SSHPort = "127.0.0.1", in.ssh.port()
		out.MachineDirSSHPort = in.ssh.port()
	} else {
		out.SSHHost, out.SSHPort = fmt.Sprintf("ssh%d.vast.ai", in.seq%10+1), 10000+in.seq%10000
	}
	switch st {
	case "":
		out.StatusMsg = new("Scheduling instance")
	case "loading":
		out.ActualStatus, out.StatusMsg = new(st), new("Loading image")
	case "stopped":
		out.ActualStatus, out.CurState, out.NextState = new(st), "stopped", "stopped"
		out.StatusMsg = new("outbid: a higher bid won this machine; the instance resumes when its bid wins again")
	case "running":
		out.ActualStatus = new(st)
		out.StatusMsg = new("success, running " + in.image)
		out.UptimeMins = new(math.Round(now.Sub(in.createdAt).Minutes()*100) / 100)
		out.Ports = map[string][]portMap{}
		if in.ssh != nil {
			out.Ports["22/tcp"] = []portMap{{HostIP: "0.0.0.0", HostPort: strconv.Itoa(in.ssh.port())}}
		}
		for i, p := range in.ports {
			out.Ports[strconv.Itoa(p)+"/tcp"] = []portMap{{HostIP: "0.0.0.0", HostPort: strconv.Itoa(portBase(in) + i)}}
		}
	}
	return out
}

// list serves GET /api/v1/instances: ordered by id (order_by may name id
// only, asc or desc), select_filters on id, label and actual_status (eq,
// neq, in, notin), 25 a page (limit above 25 is 25, at or below 0 is 5),
// after_token an opaque cursor. select_cols is accepted; every column is
// returned.
func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	bad := func(code, msg string) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": code, "msg": msg})
	}
	limit := 25
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			bad("invalid_request", "limit must be an integer")
			return
		}
		limit = min(n, 25)
		if n <= 0 {
			limit = 5
		}
	}
	desc := false
	if v := q.Get("order_by"); v != "" {
		var order []struct{ Col, Dir string }
		if err := json.Unmarshal([]byte(v), &order); err != nil {
			bad("invalid_request", "order_by must be a JSON list of {col, dir}")
			return
		}
		for _, o := range order {
			if o.Col != "id" {
				bad("invalid_request", fmt.Sprintf("Error in query parameters: %s is not a column the simulator orders by (id only)", o.Col))
				return
			}
			desc = o.Dir == "desc"
		}
	}
	type colFilter struct {
		col, op string
		vals    []string
	}
	var filters []colFilter
	if v := q.Get("select_filters"); v != "" {
		var m map[string]map[string]any
		if err := json.Unmarshal([]byte(v), &m); err != nil {
			bad("invalid_request", "select_filters must be a JSON object of column filters")
			return
		}
		for col, ops := range m {
			if col != "id" && col != "label" && col != "actual_status" {
				bad("invalid_request", fmt.Sprintf("Error in query parameters: %s is not a valid search key", col))
				return
			}
			for op, val := range ops {
				if op != "eq" && op != "neq" && op != "in" && op != "notin" {
					bad("invalid_request", fmt.Sprintf("Error in query parameters: operator %s is not simulated", op))
					return
				}
				var vals []string
				switch x := val.(type) {
				case []any:
					for _, e := range x {
						vals = append(vals, fmt.Sprint(e))
					}
				default:
					vals = []string{fmt.Sprint(x)}
				}
				filters = append(filters, colFilter{col: col, op: op, vals: vals})
			}
		}
	}
	after, hasAfter := 0, false
	if v := q.Get("after_token"); v != "" {
		n, ok := decodeToken(v)
		if !ok {
			bad("invalid_token", "Invalid after_token")
			return
		}
		after, hasAfter = n, true
	}

	now := s.core.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ids := make([]int, 0, len(s.order))
	labels := map[string]int{}
	for _, id := range s.order {
		in := s.instances[id]
		if in.destroyed {
			continue
		}
		st := s.status(in, now)
		pass := true
		for _, f := range filters {
			var got string
			switch f.col {
			case "id":
				got = strconv.Itoa(in.id)
			case "label":
				got = in.label
			case "actual_status":
				got = st
			}
			in := slices.Contains(f.vals, got)
			if (f.op == "eq" || f.op == "in") != in {
				pass = false
			}
		}
		if pass {
			ids = append(ids, id)
			labels[in.label]++
		}
	}
	sort.Ints(ids)
	if desc {
		slices.Reverse(ids)
	}
	total := len(ids)
	if hasAfter {
		i := slices.IndexFunc(ids, func(id int) bool { return (!desc && id > after) || (desc && id < after) })
		if i < 0 {
			ids = nil
		} else {
			ids = ids[i:]
		}
	}
	var next *string
	if len(ids) > limit {
		ids = ids[:limit]
		next = new(encodeToken(ids[len(ids)-1]))
	}
	rows := make([]instanceJSON, 0, len(ids))
	for _, id := range ids {
		rows = append(rows, s.render(s.instances[id], now))
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"success": true, "instances_found": len(rows), "total_instances": total, "label_counts": labels,
		"next_token": next, "instances": rows,
	})
}

// encodeToken is a page cursor, shaped like the spec's example
// (base64 of {"values": {"id": N}}).
func encodeToken(id int) string {
	return base64.StdEncoding.EncodeToString(fmt.Appendf(nil, `{"values": {"id": %d}}`, id))
}

func decodeToken(t string) (int, bool) {
	raw, err := base64.StdEncoding.DecodeString(t)
	if err != nil {
		return 0, false
	}
	var v struct {
		Values struct {
			ID *int `json:"id"`
		} `json:"values"`
	}
	if json.Unmarshal(raw, &v) != nil || v.Values.ID == nil {
		return 0, false
	}
	return *v.Values.ID, true
}

// ---- destroy and bids ----

// destroy serves DELETE /api/v0/instances/{id}: 404 not_found for an
// instance that does not exist (any more).
func (s *Server) destroy(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_args", "invalid instance_id")
		return
	}
	s.mu.Lock()
	in, ok := s.instances[id]
	if !ok || in.destroyed {
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, "not_found", "Instance not found")
		return
	}
	in.destroyed = true
	s.core.ReturnCapacity(in.host.key, in.host.Geolocation)
	srv := in.ssh
	s.mu.Unlock()
	if srv != nil {
		srv.close()
	}
	writeJSON(w, http.StatusOK, map[string]any{"success": true, "msg": "Instance destroyed successfully"})
}

// changeBid serves PUT /api/v0/instances/bid_price/{id}: the instance's
// bid becomes price; an outbid instance whose new bid wins resumes (and
// boots again).
func (s *Server) changeBid(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_args", "invalid instance id")
		return
	}
	var in struct {
		ClientID *string  `json:"client_id"`
		Price    *float64 `json:"price"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || in.ClientID == nil || in.Price == nil {
		writeError(w, http.StatusBadRequest, "invalid_args", "client_id and price are required")
		return
	}
	if *in.Price < 0.001 || *in.Price > 32 {
		writeError(w, http.StatusBadRequest, "invalid_args", "Please set a bid price >= 0.001.")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	inst, ok := s.instances[id]
	if !ok || inst.destroyed {
		writeError(w, http.StatusNotFound, "no_such_instance", "Instance with that ID does not exist.")
		return
	}
	if inst.bid == 0 {
		writeError(w, http.StatusBadRequest, "invalid_args", "Instance is not interruptible: it has no bid to change.")
		return
	}
	inst.bid = round3(*in.Price)
	if inst.outbid && inst.bid >= inst.host.minBid() {
		inst.outbid, inst.createdAt = false, s.core.Now()
	}
	writeJSON(w, http.StatusOK, map[string]bool{"success": true})
}

// Outbid places a competing bid of price on the host of interruptible
// instance id: an instance whose bid is below the host's new effective
// minimum (price plus $0.001) is stopped, as Vast.ai stops an instance that
// loses its bid.
func (s *Server) Outbid(id string, price float64) error {
	n, err := strconv.Atoi(id)
	if err != nil {
		return fmt.Errorf("vastai sim: %q is not an instance id", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	in, ok := s.instances[n]
	switch {
	case !ok || in.destroyed:
		return fmt.Errorf("vastai sim: no instance %s", id)
	case in.bid == 0:
		return fmt.Errorf("vastai sim: instance %s is on-demand: on-demand instances are never outbid", id)
	}
	in.host.competing = math.Max(in.host.competing, price)
	if in.bid < in.host.minBid() {
		in.outbid = true
	}
	return nil
}

// Preempt outbids interruptible instance id by $0.10 over its bid (see
// Outbid). On-demand instances have "highest priority" and are never
// interrupted.
func (s *Server) Preempt(id string) error {
	s.mu.Lock()
	n, _ := strconv.Atoi(id)
	in, ok := s.instances[n]
	bid := 0.0
	if ok {
		bid = in.bid
	}
	s.mu.Unlock()
	return s.Outbid(id, bid+0.10)
}

// FailAfterCreate makes the next n creates that would succeed create their
// instance and then answer 500: the caller cannot tell whether it exists.
func (s *Server) FailAfterCreate(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failAfterCreate = n
}

// CreateBodies returns every create body received, as sent, in order.
func (s *Server) CreateBodies() []json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]json.RawMessage, len(s.creates))
	for i, b := range s.creates {
		out[i] = slices.Clone(b)
	}
	return out
}

// ---- SSH keys ----

// createKey serves POST /api/v0/ssh: the key is added to the account (and,
// as the spec says, "to all your current instances": the containers; a VM
// keeps the keys it was created with).
func (s *Server) createKey(w http.ResponseWriter, r *http.Request) {
	var in struct {
		SSHKey string `json:"ssh_key"`
	}
	if err := json.NewDecoder(r.Body).Decode(&in); err != nil || strings.TrimSpace(in.SSHKey) == "" {
		writeError(w, http.StatusBadRequest, "no_ssh_key", "No ssh key provided")
		return
	}
	key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(in.SSHKey))
	if err != nil {
		writeError(w, http.StatusBadRequest, "no_ssh_key", "No ssh key provided: "+err.Error())
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := accountKey{id: len(s.keys) + 1, line: strings.TrimSpace(in.SSHKey), key: key, createdAt: s.core.Now()}
	s.keys = append(s.keys, k)
	writeJSON(w, http.StatusOK, map[string]any{"success": true, "key": map[string]any{
		"id": k.id, "user_id": 1, "public_key": k.line, "created_at": k.createdAt.UTC().Format(time.RFC3339), "deleted_at": nil}})
}

// listKeys serves GET /api/v0/ssh: the account's keys, or 404 when it has
// none (the spec: "No SSH keys found for the user").
func (s *Server) listKeys(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.keys) == 0 {
		writeError(w, http.StatusNotFound, "not_found", "No SSH keys found for the user.")
		return
	}
	out := make([]map[string]any, 0, len(s.keys))
	for _, k := range s.keys {
		out = append(out, map[string]any{"id": k.id, "user_id": 1, "key": k.line,
			"created_at": k.createdAt.UTC().Format(time.RFC3339), "deleted_at": nil})
	}
	writeJSON(w, http.StatusOK, out)
}

// AccountKeys returns the account's SSH keys, as registered.
func (s *Server) AccountKeys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.keys))
	for i, k := range s.keys {
		out[i] = k.line
	}
	return out
}

// ---- VMs' SSH ----

func (s *Server) sshOf(id string) (*sshServer, error) {
	n, err := strconv.Atoi(id)
	if err != nil {
		return nil, fmt.Errorf("vastai sim: %q is not an instance id", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	in, ok := s.instances[n]
	if !ok {
		return nil, fmt.Errorf("vastai sim: no instance %s", id)
	}
	if in.ssh == nil {
		return nil, fmt.Errorf("vastai sim: instance %s is a container: it has no SSH server of its own", id)
	}
	return in.ssh, nil
}

// SSHRuns returns the commands VM id's SSH server was asked to run.
func (s *Server) SSHRuns(id string) ([]SSHRun, error) {
	srv, err := s.sshOf(id)
	if err != nil {
		return nil, err
	}
	return srv.Runs(), nil
}

// SetSSHExitStatus makes VM id's SSH server answer status to the commands
// it is asked to run from now on.
func (s *Server) SetSSHExitStatus(id string, status int) error {
	srv, err := s.sshOf(id)
	if err != nil {
		return err
	}
	srv.setExit(status)
	return nil
}

// RotateHostKey gives VM id's SSH server a new host key, as a machine
// reinstalled (or an impostor) would present.
func (s *Server) RotateHostKey(id string) error {
	srv, err := s.sshOf(id)
	if err != nil {
		return err
	}
	return srv.rotateHostKey()
}

// SSHPort is the loopback port of VM id's SSH server.
func (s *Server) SSHPort(id string) (int, error) {
	srv, err := s.sshOf(id)
	if err != nil {
		return 0, err
	}
	return srv.port(), nil
}

// HostKey is VM id's current host key, in authorized_keys format.
func (s *Server) HostKey(id string) (string, error) {
	srv, err := s.sshOf(id)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(srv.hostPublicKey()))), nil
}

// Machines returns every instance ever created, destroyed ones included. A
// VM's UserData is the latest script its SSH server ran with exit status 0,
// and a VM is Active only once it runs and has one; a container is Active
// while it runs.
func (s *Server) Machines() []cloudsim.Machine {
	now := s.core.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]cloudsim.Machine, 0, len(s.instances))
	for _, in := range s.instances {
		st := s.status(in, now)
		m := cloudsim.Machine{
			Provider: providers.VastAI, ID: strconv.Itoa(in.id), Name: in.label, InstanceType: in.host.key,
			Region: in.host.Geolocation, GPUs: in.host.NumGPUs, Spot: in.bid > 0, NativeState: st,
			Container: !in.vm, Live: !in.destroyed, Preempted: in.outbid,
		}
		if m.NativeState == "" {
			m.NativeState = "scheduling"
		}
		if in.ssh != nil {
			m.UserData = in.ssh.lastScript()
		}
		m.Active = !in.destroyed && st == "running" && (!in.vm || m.UserData != "")
		out = append(out, m)
	}
	cloudsim.SortMachines(out)
	return out
}

func deref[T any](p *T) T {
	if p == nil {
		var zero T
		return zero
	}
	return *p
}
