package spectest

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

// lambdaInstance is one Lambda Cloud instance shaped per the document's
// Instance schema; status is left to the caller.
const lambdaInstance = `{
  "id": "0920582c7ff041399e34823a0be62549",
  "name": "gpu-req-a",
  "ip": "198.51.100.2",
  "private_ip": "10.0.2.100",
  "status": %q,
  "ssh_key_names": ["operator"],
  "file_system_names": [],
  "region": {"name": "us-west-1", "description": "California, USA"},
  "instance_type": {
    "name": "gpu_1x_h100_pcie",
    "description": "1x H100 (80 GB PCIe)",
    "gpu_description": "H100 (80 GB PCIe)",
    "price_cents_per_hour": %s,
    "specs": {"vcpus": 26, "memory_gib": 200, "storage_gib": 1024, "gpus": 1}
  },
  "hostname": "gpu-req-a",
  "actions": {
    "migrate": {"available": false, "reason_code": "vm-has-not-launched", "reason_description": "not launched"},
    "rebuild": {"available": true},
    "restart": {"available": true},
    "cold_reboot": {"available": true},
    "terminate": {"available": true}
  }
}`

func lambdaList(status, price string) string {
	return `{"data": [` + fmt.Sprintf(lambdaInstance, status, price) + `]}`
}

const lambdaNotFound = `{"error": {"code": "global/object-does-not-exist", "message": "Instance not found.", "suggestion": "Check the instance ID."}}`

func TestLambda(t *testing.T) {
	t.Parallel()
	spec := Load(t, providers.LambdaLabs)
	runAll(t, spec, []exchange{
		{name: "ListInstances", method: http.MethodGet, path: "/api/v1/instances",
			status: 200, respBody: lambdaList("active", "249")},
		{name: "BasicAuthAccepted", method: http.MethodGet, path: "/api/v1/instances", auth: "Basic dGVzdC1rZXk6",
			status: 200, respBody: `{"data": []}`},
		{name: "StatusOutsideEnum", method: http.MethodGet, path: "/api/v1/instances",
			status: 200, respBody: lambdaList("running", "249"),
			want: []string{"lambdalabs", "GET /api/v1/instances -> 200", "/data/0/status", "running"}},
		{name: "PriceOfWrongType", method: http.MethodGet, path: "/api/v1/instances",
			status: 200, respBody: lambdaList("active", `"249"`),
			want: []string{"/data/0/instance_type/price_cents_per_hour", "integer"}},
		{name: "UnknownEnvelopeField", method: http.MethodGet, path: "/api/v1/instances",
			status: 200, respBody: `{"data": [], "next": null}`,
			want: []string{"next"}},
		{name: "NotFound", method: http.MethodGet, path: "/api/v1/instances/0920582c7ff041399e34823a0be62549",
			status: 404, respBody: lambdaNotFound},
		{name: "NotFoundWrongCode", method: http.MethodGet, path: "/api/v1/instances/x",
			status: 404, respBody: `{"error": {"code": "not_found", "message": "no such instance", "suggestion": "none"}}`,
			want: []string{"-> 404", "/error/code"}},
		{name: "ErrorAsPlainText", method: http.MethodGet, path: "/api/v1/instances/x",
			status: 404, contentType: "text/plain", respBody: "404 page not found",
			want: []string{"-> 404", "text/plain", "404 page not found"}},
		{name: "UndeclaredStatus", method: http.MethodGet, path: "/api/v1/instances",
			status: 500, respBody: `{"error": {"code": "global/internal-error", "message": "boom", "suggestion": "retry"}}`,
			want: []string{"-> 500", "status 500 is not declared", "listInstances", "200, 401, 403"}},
		{name: "Launch", method: http.MethodPost, path: "/api/v1/instance-operations/launch",
			reqBody: `{"region_name": "us-west-1", "instance_type_name": "gpu_1x_h100_pcie", "ssh_key_names": ["operator"], "name": "gpu-req-a", "user_data": "#cloud-config\n"}`,
			status:  200, respBody: `{"data": {"instance_ids": ["0920582c7ff041399e34823a0be62549"]}}`},
		{name: "LaunchWithoutSSHKey", method: http.MethodPost, path: "/api/v1/instance-operations/launch",
			reqBody: `{"region_name": "us-west-1", "instance_type_name": "gpu_1x_h100_pcie"}`,
			status:  200, respBody: `{"data": {"instance_ids": ["0920582c7ff041399e34823a0be62549"]}}`,
			want: []string{"POST /api/v1/instance-operations/launch", "request does not match", "ssh_key_names"}},
		{name: "LaunchUnknownRegion", method: http.MethodPost, path: "/api/v1/instance-operations/launch",
			reqBody: `{"region_name": "mars-1", "instance_type_name": "gpu_1x_h100_pcie", "ssh_key_names": ["operator"]}`,
			status:  400, respBody: `{"error": {"code": "global/invalid-parameters", "message": "Invalid region.", "suggestion": "Pick a region."}}`,
			want: []string{"request does not match", "/region_name", "mars-1"}},
		{name: "InsufficientCapacity", method: http.MethodPost, path: "/api/v1/instance-operations/launch",
			reqBody: `{"region_name": "us-west-1", "instance_type_name": "gpu_1x_h100_pcie", "ssh_key_names": ["operator"]}`,
			status:  400, respBody: `{"error": {"code": "instance-operations/launch/insufficient-capacity", "message": "Not enough capacity.", "suggestion": "Try another region."}}`},
		{name: "NoCredentials", method: http.MethodGet, path: "/api/v1/instances", auth: "-",
			status: 401, respBody: `{"error": {"code": "global/invalid-api-key", "message": "API key was invalid, expired, or deleted.", "suggestion": "Check your API key."}}`,
			want: []string{"request does not match", "Authorization"}},
		{name: "UnknownPath", method: http.MethodGet, path: "/api/v1/instance-ops",
			status: 404, respBody: lambdaNotFound,
			want: []string{"GET /api/v1/instance-ops", "no path of the document matches"}},
		{name: "UnknownMethod", method: http.MethodDelete, path: "/api/v1/instances/x",
			status: 404, respBody: lambdaNotFound,
			want: []string{"no DELETE operation"}},
		{name: "BodyOnGet", method: http.MethodGet, path: "/api/v1/instances", reqBody: `{"x": 1}`,
			status: 200, respBody: `{"data": []}`,
			want: []string{"request does not match"}},
	})
}

// Lambda documents its rate limits only in prose, so a 429 is undeclared:
// it fails unless the caller allows it with a reason.
func TestAllowStatus(t *testing.T) {
	t.Parallel()
	spec := Load(t, providers.LambdaLabs)
	e := exchange{method: http.MethodGet, path: "/api/v1/instances", status: 429,
		respBody: `{"error": {"code": "global/rate-limited", "message": "slow down"}}`}
	t.Run("Strict", func(t *testing.T) {
		t.Parallel()
		e := e
		e.want = []string{"status 429 is not declared"}
		e.run(t, spec)
	})
	t.Run("Allowed", func(t *testing.T) {
		t.Parallel()
		e.run(t, spec, AllowStatus(429, "Lambda's info.description: one request per second"))
	})
	t.Run("OnlyThatStatus", func(t *testing.T) {
		t.Parallel()
		e := e
		e.status = 503
		e.want = []string{"status 503 is not declared"}
		e.run(t, spec, AllowStatus(429, "rate limits"))
	})
}
