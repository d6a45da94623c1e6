package paperspace

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	testclock "k8s.io/utils/clock/testing"

	"github.com/solanyn/gpu-operator/pkg/cloudsim"
)

const key = "sim-key"

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
		`{"name":"`+name+`","machineType":"`+mt+`","region":"`+region+`","templateId":"t0nspur5","diskSize":100}`)
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
	if code, out := do(t, s, "POST", "/v1/machines", `{"name":"x","machineType":"H100","region":"ny2","templateId":"t","diskSize":100,"startupScriptId":"ss9"}`); code != http.StatusBadRequest {
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
		`{"name":"gpur-l","machineType":"H100x8","region":"ams1","templateId":"t0nspur5","diskSize":100,"startupScriptId":"`+out["id"].(string)+`"}`)
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
	code, out := do(t, s, "POST", "/v1/machines", `{"name":"gpur-off","machineType":"P4000","region":"ca1","templateId":"t","diskSize":50,"startOnCreate":false}`)
	if code != http.StatusOK {
		t.Fatalf("create: %d %v", code, out)
	}
	clk.Step(time.Hour)
	if m := s.Machines()[0]; m.NativeState != "off" || m.Active {
		t.Fatalf("machine created stopped: %+v", m)
	}
}
