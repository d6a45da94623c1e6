package spectest

import (
	"net/http"
	"strings"
	"testing"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

// runpodPod is a RunPod REST v2 Pod shaped per the document (its own
// example, with a null data center and start time).
const runpodPod = `{
  "id": "7h9k2m4n6p",
  "name": "gpu-req-a",
  "image": "ghcr.io/solanyn/node:1",
  "args": "",
  "disk": 50,
  "ports": ["22/tcp"],
  "env": {"NODE_NAME": "gpu-req-a"},
  "registry": null,
  "status": "PROVISIONING",
  "actions": ["stop", "terminate"],
  "mounts": {},
  "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 1},
  "cloud": "SECURE",
  "dataCenterId": null,
  "cudaVersion": null,
  "ssh": {"proxy": null, "direct": null},
  "template": null,
  "cost": 0.69,
  "locked": false,
  "globalNetworking": {"enabled": false},
  "runtime": null,
  "createdAt": "2026-12-01T12:00:00Z",
  "startedAt": null
}`

const runpodCreate = `{"name": "gpu-req-a", "image": "ghcr.io/solanyn/node:1", "gpu": {"id": "NVIDIA GeForce RTX 4090", "count": 1}, "cloud": "SECURE", "dataCenterIds": ["US-TX-3"], "ports": ["22/tcp"], "env": {"NODE_NAME": "gpu-req-a"}}`

const runpodNotFound = `{"title": "Not Found", "status": 404, "detail": "pod not found"}`

func TestRunPod(t *testing.T) {
	t.Parallel()
	spec := Load(t, providers.RunPod)
	runAll(t, spec, []exchange{
		{name: "ListPods", method: http.MethodGet, path: "/v2/pods",
			status: 200, respBody: `{"pods": [` + runpodPod + `]}`},
		{name: "PodMissingRequiredField", method: http.MethodGet, path: "/v2/pods",
			status: 200, respBody: `{"pods": [` + strings.Replace(runpodPod, `"cost": 0.69,`, "", 1) + `]}`,
			want: []string{"runpod", "GET /v2/pods -> 200", "/pods/0", "cost"}},
		{name: "PodStatusOutsideEnum", method: http.MethodGet, path: "/v2/pods",
			status: 200, respBody: `{"pods": [` + strings.Replace(runpodPod, `"PROVISIONING"`, `"STOPPED"`, 1) + `]}`,
			want: []string{"/pods/0", "/status", "PROVISIONING"}},
		{name: "UnwrappedList", method: http.MethodGet, path: "/v2/pods",
			status: 200, respBody: `[` + runpodPod + `]`,
			want: []string{"object"}},
		{name: "Create", method: http.MethodPost, path: "/v2/pods", reqBody: runpodCreate,
			status: 201, respBody: runpodPod},
		// unevaluatedProperties: false, which a 3.0 rewrite drops: v2
		// has no spot.
		{name: "CreateInterruptible", method: http.MethodPost, path: "/v2/pods",
			reqBody: strings.Replace(runpodCreate, `"cloud"`, `"interruptible": true, "cloud"`, 1),
			status:  201, respBody: runpodPod,
			want: []string{"POST /v2/pods", "request does not match", "interruptible"}},
		// if/then, which a 3.0 rewrite drops: image is required without a
		// template.
		{name: "CreateWithoutImage", method: http.MethodPost, path: "/v2/pods",
			reqBody: strings.Replace(runpodCreate, `"image": "ghcr.io/solanyn/node:1", `, "", 1),
			status:  201, respBody: runpodPod,
			want: []string{"request does not match", "image"}},
		{name: "CreateV1Shape", method: http.MethodPost, path: "/v2/pods",
			reqBody: `{"name": "gpu-req-a", "imageName": "ghcr.io/solanyn/node:1", "gpuTypeIds": ["NVIDIA GeForce RTX 4090"], "gpuCount": 1}`,
			status:  201, respBody: runpodPod,
			want: []string{"request does not match"}},
		{name: "NoCapacity", method: http.MethodPost, path: "/v2/pods", reqBody: runpodCreate,
			status: 400, contentType: "application/problem+json",
			respBody: `{"title": "Bad Request", "status": 400, "detail": "There are no longer any instances available with the requested specifications."}`},
		{name: "NotFound", method: http.MethodGet, path: "/v2/pods/7h9k2m4n6p",
			status: 404, contentType: "application/problem+json", respBody: runpodNotFound},
		{name: "ErrorMissingDetail", method: http.MethodGet, path: "/v2/pods/7h9k2m4n6p",
			status: 404, contentType: "application/problem+json", respBody: `{"title": "Not Found", "status": 404}`,
			want: []string{"-> 404", "detail"}},
		{name: "ErrorAsJSON", method: http.MethodGet, path: "/v2/pods/7h9k2m4n6p",
			status: 404, respBody: runpodNotFound,
			want: []string{"-> 404", "application/json"}},
		// Only default declares 5xx: it applies.
		{name: "DefaultApplies", method: http.MethodGet, path: "/v2/pods/7h9k2m4n6p",
			status: 503, contentType: "application/problem+json",
			respBody: `{"title": "Service Unavailable", "status": 503, "detail": "try again"}`},
		{name: "DefaultShapeChecked", method: http.MethodGet, path: "/v2/pods/7h9k2m4n6p",
			status: 503, contentType: "application/problem+json", respBody: `{"error": "unavailable"}`,
			want: []string{"-> 503", "title"}},
		{name: "Terminate", method: http.MethodPost, path: "/v2/pods/7h9k2m4n6p/action", reqBody: `{"action": "terminate"}`,
			status: 204},
		{name: "UnknownAction", method: http.MethodPost, path: "/v2/pods/7h9k2m4n6p/action", reqBody: `{"action": "delete"}`,
			status: 204,
			want:   []string{"request does not match", "/action"}},
		// REST v1 was retired on 2026-11-15: nothing in v2 answers it.
		{name: "RetiredV1", method: http.MethodGet, path: "/v1/pods",
			status: 200, respBody: `[]`,
			want: []string{"GET /v1/pods", "no path of the document matches"}},
		{name: "CatalogGPUByName", method: http.MethodGet, path: "/v2/catalog/gpus/NVIDIA%20GeForce%20RTX%204090",
			status: 404, contentType: "application/problem+json", respBody: `{"title": "Not Found", "status": 404, "detail": "gpu type not found"}`},
	})
}
