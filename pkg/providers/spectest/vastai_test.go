package spectest

import (
	"net/http"
	"testing"
)

func TestVastAI(t *testing.T) {
	t.Parallel()
	spec := Load(t, VastAI)
	const create = `{"image": "docker.io/vastai/kvm:ubuntu_22", "disk": 64, "runtype": "ssh_direct", "vm": true, "price": 0.35, "onstart": "bash /root/join.sh", "label": "gpu-req-a"}`
	runAll(t, spec, []exchange{
		// With the trailing slash Vast.ai's guide and CLI send.
		{name: "CreateInstance", method: http.MethodPut, path: "/api/v0/asks/1234567/", reqBody: create,
			status: 200, respBody: `{"success": true, "new_contract": 1234568}`},
		{name: "CreateInstanceNoSlash", method: http.MethodPut, path: "/api/v0/asks/1234567", reqBody: create,
			status: 200, respBody: `{"success": true, "new_contract": 1234568}`},
		{name: "ContractIDOfWrongType", method: http.MethodPut, path: "/api/v0/asks/1234567/", reqBody: create,
			status: 200, respBody: `{"success": true, "new_contract": "1234568"}`,
			want: []string{"vastai", "PUT /api/v0/asks/1234567/ -> 200", "new_contract"}},
		{name: "OfferIDNotInteger", method: http.MethodPut, path: "/api/v0/asks/m-abc/", reqBody: create,
			status: 404, respBody: `{"success": false, "error": "invalid_args", "msg": "no_such_ask"}`,
			want: []string{"request does not match", `"id"`}},
		{name: "UnknownRunType", method: http.MethodPut, path: "/api/v0/asks/1234567/",
			reqBody: `{"image": "docker.io/vastai/kvm:ubuntu_22", "runtype": "kubelet"}`,
			status:  200, respBody: `{"success": true, "new_contract": 1234568}`,
			want: []string{"request does not match", "/runtype"}},
		{name: "BidTooLow", method: http.MethodPut, path: "/api/v0/asks/1234567/",
			reqBody: `{"image": "docker.io/vastai/kvm:ubuntu_22", "price": 0}`,
			status:  200, respBody: `{"success": true, "new_contract": 1234568}`,
			want: []string{"request does not match", "/price"}},
		{name: "ErrorOutsideEnum", method: http.MethodPut, path: "/api/v0/asks/1234567/", reqBody: create,
			status: 400, respBody: `{"success": false, "error": "out_of_capacity", "msg": "no capacity"}`,
			want: []string{"-> 400", "/error"}},
		{name: "RateLimited", method: http.MethodPut, path: "/api/v0/asks/1234567/", reqBody: create,
			status: 429, respBody: `{"detail": "API requests too frequent endpoint threshold=4.5"}`},
		{name: "DestroyInstance", method: http.MethodDelete, path: "/api/v0/instances/1234568/",
			status: 200, respBody: `{"success": true}`},
	})
}
