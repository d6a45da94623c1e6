package paperspace

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	testclock "k8s.io/utils/clock/testing"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/spectest"
)

const key = "sim-key"

// gpuTemplate is DefaultTemplates' Ubuntu 22.04 GPU image, on every GPU type.
const gpuTemplate = "t17d1a6i"

func newSim(cfg cloudsim.Config) (*Server, *testclock.FakeClock) {
	cfg.APIKey = key
	clk := testclock.NewFakeClock(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
	return New(cfg, clk), clk
}

// do sends one request to the simulator and decodes its JSON answer.
func do(t *testing.T, s *Server, method, target, body string) (int, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(method, target, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, req)
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s %s: answer %q is not a JSON object: %v", method, target, rec.Body.String(), err)
	}
	return rec.Code, out
}

func create(t *testing.T, s *Server, name, mt, region string) string {
	t.Helper()
	code, out := do(t, s, "POST", "/v1/machines",
		`{"name":"`+name+`","machineType":"`+mt+`","region":"`+region+`","templateId":"`+gpuTemplate+`","diskSize":100}`)
	if code != http.StatusOK {
		t.Fatalf("create %s: %d %v", name, code, out)
	}
	return out["data"].(map[string]any)["id"].(string)
}

func TestDefaultCatalog(t *testing.T) {
	cat := DefaultCatalog(3)
	if len(cat) != len(MachineTypes)*len(Regions) {
		t.Fatalf("%d entries", len(cat))
	}
	gpus := map[string]int{}
	for _, e := range cat {
		if e.Capacity != 3 {
			t.Fatalf("entry %+v", e)
		}
		gpus[e.InstanceType] = e.GPUs
	}
	for mt, n := range map[string]int{"A100-80Gx8": 8, "H100": 1, "V100-32Gx2": 2, "RTX4000": 1} {
		if gpus[mt] != n {
			t.Errorf("%s has %d GPUs, want %d", mt, gpus[mt], n)
		}
	}
}

func TestErrorsAndRouting(t *testing.T) {
	s, _ := newSim(cloudsim.Config{Catalog: DefaultCatalog(1)})
	rec := httptest.NewRecorder()
	s.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/machines", nil))
	if rec.Code != http.StatusUnauthorized || !strings.Contains(rec.Body.String(), `"code":"UNAUTHORIZED"`) {
		t.Errorf("no key: %d %s", rec.Code, rec.Body)
	}
	if code, out := do(t, s, "GET", "/v1/nope", ""); code != http.StatusNotFound || out["code"] != "NOT_FOUND" {
		t.Errorf("unknown path: %d %v", code, out)
	}
	if code, out := do(t, s, "GET", "/v1/machine-availability?machineType=H100", ""); code != http.StatusBadRequest || out["message"] == "" {
		t.Errorf("availability without region: %d %v", code, out)
	}
	if code, out := do(t, s, "GET", "/v1/machine-availability?machineType=B200&region=ny2", ""); code != http.StatusOK || out["available"] != false {
		t.Errorf("availability of an unsold type: %d %v", code, out)
	}
	if code, out := do(t, s, "GET", "/v1/machines?limit=121", ""); code != http.StatusBadRequest {
		t.Errorf("limit 121: %d %v", code, out)
	}
	if code, out := do(t, s, "GET", "/v1/machines?after=ps999", ""); code != http.StatusBadRequest {
		t.Errorf("unknown cursor: %d %v", code, out)
	}
	if code, out := do(t, s, "POST", "/v1/machines", `{"name":"x","machineType":"H100","region":"ny2","templateId":"`+gpuTemplate+`","diskSize":100,"startupScriptId":"ss9"}`); code != http.StatusBadRequest {
		t.Errorf("unknown startup script: %d %v", code, out)
	}
	if err := s.Preempt("ps404"); err == nil {
		t.Error("preempting an unknown machine succeeded")
	}
}

func TestListFiltersAndPages(t *testing.T) {
	s, _ := newSim(cloudsim.Config{Catalog: DefaultCatalog(-1)})
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		create(t, s, "gpur-"+n, "A4000", "ny2")
	}
	create(t, s, "gpur-c", "A4000", "ca1")

	var names []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatal("the cursor does not end")
		}
		_, out := do(t, s, "GET", "/v1/machines?region=ny2&limit=2&after="+cursor, "")
		for _, it := range out["items"].([]any) {
			names = append(names, it.(map[string]any)["name"].(string))
		}
		if out["hasMore"] != true {
			if _, ok := out["nextPage"]; ok {
				t.Fatalf("last page has a nextPage: %v", out)
			}
			break
		}
		cursor = out["nextPage"].(string)
	}
	if strings.Join(names, ",") != "gpur-a,gpur-b,gpur-c,gpur-d,gpur-e" {
		t.Fatalf("paged through %v", names)
	}
	_, out := do(t, s, "GET", "/v1/machines?name=gpur-c", "")
	if items := out["items"].([]any); len(items) != 2 {
		t.Fatalf("name filter returned %v", items)
	}
}

func TestMachineLifecycle(t *testing.T) {
	s, clk := newSim(cloudsim.Config{Catalog: []cloudsim.CatalogEntry{{InstanceType: "H100x8", GPUs: 8, Region: "ams1", Capacity: 1}}, BootDelay: time.Minute})
	code, out := do(t, s, "POST", "/v1/startup-scripts", `{"name":"gpur-l","script":"#!/bin/sh\necho hi","isRunOnce":true}`)
	if code != http.StatusOK || out["isRunOnce"] != true {
		t.Fatalf("startup script: %d %v", code, out)
	}
	code, out = do(t, s, "POST", "/v1/machines",
		`{"name":"gpur-l","machineType":"H100x8","region":"ams1","templateId":"`+gpuTemplate+`","diskSize":100,"startupScriptId":"`+out["id"].(string)+`"}`)
	if code != http.StatusOK || out["event"].(map[string]any)["name"] != "create" {
		t.Fatalf("create: %d %v", code, out)
	}
	id := out["data"].(map[string]any)["id"].(string)
	state := func() string {
		_, m := do(t, s, "GET", "/v1/machines/"+id, "")
		return m["state"].(string)
	}
	if st := state(); st != "provisioning" {
		t.Fatalf("state %s, want provisioning", st)
	}
	if _, avail := do(t, s, "GET", "/v1/machine-availability?machineType=H100x8&region=ams1", ""); avail["available"] != false {
		t.Fatalf("capacity 1 used, availability %v", avail)
	}
	clk.Step(time.Minute)
	if st := state(); st != "ready" {
		t.Fatalf("state %s after BootDelay, want ready", st)
	}
	if m := s.Machines()[0]; !m.Active || !m.Live || m.UserData != "#!/bin/sh\necho hi" || m.GPUs != 8 {
		t.Fatalf("machine %+v", m)
	}
	if err := s.Preempt(id); err != nil {
		t.Fatal(err)
	}
	if st := state(); st != "off" {
		t.Fatalf("state %s after preemption, want off", st)
	}
	// No TerminateDelay: gone at once, capacity back.
	code, out = do(t, s, "DELETE", "/v1/machines/"+id, "")
	if code != http.StatusOK || out["data"].(map[string]any)["dtDeleted"] == nil {
		t.Fatalf("delete: %d %v", code, out)
	}
	if code, _ := do(t, s, "GET", "/v1/machines/"+id, ""); code != http.StatusNotFound {
		t.Fatalf("deleted machine answers %d", code)
	}
	if _, avail := do(t, s, "GET", "/v1/machine-availability?machineType=H100x8&region=ams1", ""); avail["available"] != true {
		t.Fatalf("capacity not returned: %v", avail)
	}
	if m := s.Machines()[0]; m.Live || m.Active || m.NativeState != "deleted" {
		t.Fatalf("deleted machine %+v", m)
	}
	if err := s.Preempt(id); err == nil {
		t.Fatal("preempting a deleted machine succeeded")
	}
}

func TestStartOnCreateFalse(t *testing.T) {
	s, clk := newSim(cloudsim.Config{Catalog: DefaultCatalog(-1)})
	code, out := do(t, s, "POST", "/v1/machines", `{"name":"gpur-off","machineType":"P4000","region":"ca1","templateId":"`+gpuTemplate+`","diskSize":50,"startOnCreate":false}`)
	if code != http.StatusOK {
		t.Fatalf("create: %d %v", code, out)
	}
	clk.Step(time.Hour)
	if m := s.Machines()[0]; m.NativeState != "off" || m.Active {
		t.Fatalf("machine created stopped: %+v", m)
	}
}

// checked serves s behind spectest's middleware: every request it gets and
// every answer it gives must match Paperspace's official document.
func checked(t *testing.T, s *Server) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(spectest.Load(t, providers.Paperspace).Middleware(t, s))
	t.Cleanup(srv.Close)
	return srv
}

// get sends an authenticated GET to srv and decodes the JSON answer.
func get(t *testing.T, srv *httptest.Server, path string, v any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	return resp.StatusCode
}

type templatesPage struct {
	HasMore  bool   `json:"hasMore"`
	NextPage string `json:"nextPage"`
	Items    []struct {
		ID                    string `json:"id"`
		Name                  string `json:"name"`
		AvailableMachineTypes []struct {
			MachineTypeLabel string `json:"machineTypeLabel"`
			IsAvailable      bool   `json:"isAvailable"`
		} `json:"availableMachineTypes"`
	} `json:"items"`
}

func TestOSTemplates(t *testing.T) {
	s, _ := newSim(cloudsim.Config{Catalog: DefaultCatalog(1)})
	srv := checked(t, s)
	var all []string
	available := map[string][]string{}
	unavailable := map[string][]string{}
	path := "/v1/os-templates?limit=4"
	for range 5 {
		var page templatesPage
		if code := get(t, srv, path, &page); code != http.StatusOK {
			t.Fatalf("GET %s: %d", path, code)
		}
		for _, it := range page.Items {
			all = append(all, it.ID)
			for _, mt := range it.AvailableMachineTypes {
				if mt.IsAvailable {
					available[it.ID] = append(available[it.ID], mt.MachineTypeLabel)
				} else {
					unavailable[it.ID] = append(unavailable[it.ID], mt.MachineTypeLabel)
				}
			}
		}
		if !page.HasMore {
			break
		}
		path = "/v1/os-templates?limit=4&after=" + page.NextPage
	}
	if len(all) != len(DefaultTemplates()) {
		t.Fatalf("listed %v, want the %d default templates", all, len(DefaultTemplates()))
	}
	if slices.Contains(available["t0nspur5"], "H100") || !slices.Contains(unavailable["t0nspur5"], "H100") || !slices.Contains(available["t0nspur5"], "C5") {
		t.Errorf("t0nspur5 (the CPU image) lists %v available, %v unavailable; want CPU types only available", available["t0nspur5"], unavailable["t0nspur5"])
	}
	if !slices.Contains(available[gpuTemplate], "H100") || !slices.Contains(available["tvimtol9"], "A100-80Gx8") {
		t.Errorf("GPU templates list %v and %v", available[gpuTemplate], available["tvimtol9"])
	}
	var one templatesPage
	if get(t, srv, "/v1/os-templates?name=mliab-u20-241101", &one); len(one.Items) != 1 || one.Items[0].ID != "twnlo3zj" {
		t.Errorf("name filter: %+v", one.Items)
	}
}

// A GPU machine type created from the CPU template is refused (the
// simulator's assumption: see checkTemplateLocked).
func TestCPUTemplateRefusedForGPUType(t *testing.T) {
	s, _ := newSim(cloudsim.Config{Catalog: DefaultCatalog(1)})
	code, out := do(t, s, "POST", "/v1/machines", `{"name":"gpur-cpu","machineType":"H100","region":"ny2","templateId":"t0nspur5","diskSize":100}`)
	if code != http.StatusBadRequest || out["code"] != "BAD_REQUEST" || !strings.Contains(out["message"].(string), "cannot be used with machine type H100") {
		t.Fatalf("create from the CPU template: %d %v", code, out)
	}
	code, out = do(t, s, "POST", "/v1/machines", `{"name":"gpur-x","machineType":"H100","region":"ny2","templateId":"tnope","diskSize":100}`)
	if code != http.StatusBadRequest || !strings.Contains(out["message"].(string), "Invalid template") {
		t.Fatalf("create from an unknown template: %d %v", code, out)
	}
	if len(s.Machines()) != 0 || len(s.Core().Counters().Launches) != 0 {
		t.Fatalf("refused creates made machines: %+v", s.Machines())
	}
	create(t, s, "gpur-gpu", "H100", "ny2")
}

type scriptsPage struct {
	HasMore  bool   `json:"hasMore"`
	NextPage string `json:"nextPage"`
	Items    []struct {
		ID       string   `json:"id"`
		Name     string   `json:"name"`
		Assigned []string `json:"assignedMachineIds"`
	} `json:"items"`
}

func TestStartupScriptsListAndDelete(t *testing.T) {
	s, _ := newSim(cloudsim.Config{Catalog: DefaultCatalog(-1)})
	srv := checked(t, s)
	var ids []string
	for _, n := range []string{"gpur-a", "gpur-b", "gpur-a"} {
		code, out := do(t, s, "POST", "/v1/startup-scripts", `{"name":"`+n+`","script":"#!/bin/bash\necho `+n+`\n","isRunOnce":true}`)
		if code != http.StatusOK {
			t.Fatalf("create script: %d %v", code, out)
		}
		ids = append(ids, out["id"].(string))
	}
	code, out := do(t, s, "POST", "/v1/machines",
		`{"name":"gpur-b","machineType":"H100","region":"ny2","templateId":"`+gpuTemplate+`","diskSize":100,"startupScriptId":"`+ids[1]+`"}`)
	if code != http.StatusOK {
		t.Fatalf("create: %d %v", code, out)
	}
	machineID := out["data"].(map[string]any)["id"].(string)

	var page scriptsPage
	if get(t, srv, "/v1/startup-scripts?name=gpur-a", &page); len(page.Items) != 2 || page.Items[0].ID != ids[0] || page.Items[1].ID != ids[2] {
		t.Fatalf("scripts named gpur-a: %+v", page.Items)
	}
	var first, second scriptsPage
	get(t, srv, "/v1/startup-scripts?limit=2", &first)
	if len(first.Items) != 2 || !first.HasMore {
		t.Fatalf("first page %+v", first)
	}
	get(t, srv, "/v1/startup-scripts?limit=2&after="+first.NextPage, &second)
	if len(second.Items) != 1 || second.HasMore || second.Items[0].ID != ids[2] {
		t.Fatalf("second page %+v", second)
	}
	if b := first.Items[1]; b.ID != ids[1] || !slices.Equal(b.Assigned, []string{machineID}) {
		t.Fatalf("script of gpur-b %+v, want assigned to %s", b, machineID)
	}

	req, _ := http.NewRequest(http.MethodDelete, srv.URL+"/v1/startup-scripts/"+ids[0], nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var deleted map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&deleted)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || deleted["id"] != ids[0] || deleted["dtDeleted"] == nil {
		t.Fatalf("delete: %d %v", resp.StatusCode, deleted)
	}
	if code, out := do(t, s, "DELETE", "/v1/startup-scripts/"+ids[0], ""); code != http.StatusNotFound || out["code"] != "NOT_FOUND" {
		t.Fatalf("second delete: %d %v", code, out)
	}
	if got := s.Scripts(); len(got) != 2 || got[0].ID != ids[1] || got[1].ID != ids[2] {
		t.Fatalf("scripts left %+v", got)
	}
	if m := s.Machines(); len(m) != 1 || m[0].UserData != "#!/bin/bash\necho gpur-b\n" {
		t.Fatalf("machines %+v", m)
	}
}

// SetStuckOff: the machine provisions, then stays off for good; the others
// boot.
func TestStuckOff(t *testing.T) {
	s, clk := newSim(cloudsim.Config{Catalog: DefaultCatalog(-1), BootDelay: time.Minute})
	s.SetStuckOff("H100", "ny2", true)
	stuck := create(t, s, "gpur-stuck", "H100", "ny2")
	fine := create(t, s, "gpur-fine", "H100", "ca1")
	state := func(id string) string {
		_, out := do(t, s, "GET", "/v1/machines/"+id, "")
		return out["state"].(string)
	}
	if state(stuck) != "provisioning" || state(fine) != "provisioning" {
		t.Fatalf("before BootDelay: %s, %s", state(stuck), state(fine))
	}
	clk.Step(time.Hour)
	if state(stuck) != "off" || state(fine) != "ready" {
		t.Fatalf("after an hour: stuck %s, fine %s; want off and ready", state(stuck), state(fine))
	}
	for _, m := range s.Machines() {
		if m.ID == stuck && (m.Active || !m.Live || m.Preempted) {
			t.Errorf("stuck machine %+v, want live, inactive, not preempted", m)
		}
	}
	s.SetStuckOff("H100", "ny2", false)
	again := create(t, s, "gpur-again", "H100", "ny2")
	clk.Step(time.Minute)
	if state(again) != "ready" {
		t.Fatalf("after SetStuckOff(false): %s", state(again))
	}
}

func TestLongRegionNames(t *testing.T) {
	s, _ := newSim(cloudsim.Config{Catalog: DefaultCatalog(-1)})
	id := create(t, s, "gpur-r", "H100", "ams1")
	s.SetLongRegionNames(true)
	if _, out := do(t, s, "GET", "/v1/machines/"+id, ""); out["region"] != "Europe (AMS1)" {
		t.Fatalf("region %v, want Europe (AMS1)", out["region"])
	}
}
