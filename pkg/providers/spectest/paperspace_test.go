package spectest

import (
	"net/http"
	"strings"
	"testing"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

// paperspaceMachine is a Paperspace machine shaped per the document's
// GET /machines item schema (every field is required there).
const paperspaceMachine = `{
  "id": "psabc123",
  "name": "gpu-req-a",
  "state": "provisioning",
  "os": "Ubuntu 22.04",
  "machineType": "A100-80Gx4",
  "agentType": "LinuxMachine",
  "cpus": 48,
  "ram": 541165879296,
  "storageTotal": 536870912000,
  "storageUsed": 0,
  "accelerators": [{"name": "A100-80G", "memory": 85899345920, "count": 4}],
  "region": "ny2",
  "privateIp": null,
  "networkId": null,
  "publicIp": null,
  "publicIpType": "dynamic",
  "autoShutdownEnabled": false,
  "autoShutdownTimeout": null,
  "autoShutdownForce": null,
  "autoSnapshotEnabled": false,
  "autoSnapshotFrequency": null,
  "autoSnapshotSaveCount": null,
  "updatesPending": false,
  "restorePointEnabled": false,
  "restorePointFrequency": null,
  "restorePointSnapshotId": null,
  "usageRate": 12.72,
  "storageRate": 0.29,
  "dtCreated": "2026-12-01T12:00:00Z",
  "dtModified": "2026-12-01T12:00:00Z",
  "dtDeleted": null,
  "reservation": null
}`

const paperspaceCreate = `{"name": "gpu-req-a", "machineType": "A100-80Gx4", "templateId": "tabc123", "diskSize": 100, "region": "ny2", "publicIpType": "dynamic", "startOnCreate": true}`

const paperspaceEvent = `{"id": "ev123", "name": "create", "state": "new", "machineId": "psabc123", "dtCreated": "2026-12-01T12:00:00Z", "dtStarted": null, "dtFinished": null, "error": null}`

func TestPaperspace(t *testing.T) {
	t.Parallel()
	spec := Load(t, providers.Paperspace)
	runAll(t, spec, []exchange{
		{name: "ListMachines", method: http.MethodGet, path: "/v1/machines?name=gpu-req-a&limit=120",
			status: 200, respBody: `{"hasMore": false, "items": [` + paperspaceMachine + `]}`},
		{name: "StateOutsideEnum", method: http.MethodGet, path: "/v1/machines",
			status: 200, respBody: `{"hasMore": false, "items": [` + strings.Replace(paperspaceMachine, `"provisioning"`, `"running"`, 1) + `]}`,
			want: []string{"paperspace", "GET /v1/machines -> 200", "/items/0/state", "provisioning"}},
		{name: "MachineMissingRequiredField", method: http.MethodGet, path: "/v1/machines",
			status: 200, respBody: `{"hasMore": false, "items": [` + strings.Replace(paperspaceMachine, `"publicIpType": "dynamic",`, "", 1) + `]}`,
			want: []string{"/items/0", "publicIpType"}},
		{name: "QueryOutOfRange", method: http.MethodGet, path: "/v1/machines?limit=500",
			status: 200, respBody: `{"hasMore": false, "items": []}`,
			want: []string{"request does not match", "limit"}},
		// The base path is the server's (https://api.paperspace.com/v1),
		// not part of the document's paths.
		{name: "WithoutBasePath", method: http.MethodGet, path: "/machines",
			status: 200, respBody: `{"hasMore": false, "items": []}`,
			want: []string{"GET /machines", "no path of the document matches"}},
		{name: "Create", method: http.MethodPost, path: "/v1/machines", reqBody: paperspaceCreate,
			status: 200, respBody: `{"event": ` + paperspaceEvent + `, "data": ` + paperspaceMachine + `}`},
		{name: "CreateWithoutDiskSize", method: http.MethodPost, path: "/v1/machines",
			reqBody: strings.Replace(paperspaceCreate, `"diskSize": 100, `, "", 1),
			status:  200, respBody: `{"event": ` + paperspaceEvent + `, "data": ` + paperspaceMachine + `}`,
			want: []string{"request does not match", "diskSize"}},
		{name: "EventStateOutsideEnum", method: http.MethodPost, path: "/v1/machines", reqBody: paperspaceCreate,
			status: 200, respBody: `{"event": ` + strings.Replace(paperspaceEvent, `"new"`, `"pending"`, 1) + `, "data": ` + paperspaceMachine + `}`,
			want: []string{"/event/state"}},
		// Only default declares errors: it applies to any status.
		{name: "NotFoundDefault", method: http.MethodGet, path: "/v1/machines/psnope",
			status: 404, respBody: `{"message": "Not found", "code": "NOT_FOUND"}`},
		{name: "ErrorShape", method: http.MethodGet, path: "/v1/machines/psnope",
			status: 404, respBody: `{"error": {"message": "Not found"}}`,
			want: []string{"-> 404", "message"}},
		{name: "LegacyAPIKeyHeader", method: http.MethodGet, path: "/v1/machines/psabc123", auth: "-",
			header: map[string]string{"X-Api-Key": "test-key"}, // the retired v0 API's header
			status: 401, respBody: `{"message": "Unauthorized", "code": "UNAUTHORIZED"}`,
			want: []string{"request does not match", "bearer"}},
	})
}
