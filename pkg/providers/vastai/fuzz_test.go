package vastai_test

import (
	"encoding/json"
	"math"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/vastai"
)

var (
	fuzzNow         = time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	canonicalRegion = regexp.MustCompile(`^[a-z]{2}-[a-z]+-[0-9]+$`)
)

// FuzzClassifyResponse feeds arbitrary statuses, Retry-After values and
// bodies to ClassifyResponse.
func FuzzClassifyResponse(f *testing.F) {
	f.Add(404, "", []byte(`{"success": false, "error": "invalid_args", "msg": "error 404/3603: no_such_ask Instance type by id 1 is not available.", "ask_id": 1}`))
	f.Add(429, "5", []byte(`{"detail": "API requests too frequent endpoint threshold=4.5"}`))
	f.Add(401, "", []byte(`{"success": false, "error": "auth_error", "msg": "Invalid user key"}`))
	f.Add(403, "", []byte(`{"error": 7, "msg": null}`))
	f.Add(500, "Wed, 02 Dec 2026 00:00:00 GMT", []byte("\xff<html>"))
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		err := vastai.ClassifyResponse(status, h, body, fuzzNow)
		if status >= 200 && status < 300 {
			if err != nil {
				t.Fatalf("2xx classified as %v", err)
			}
			return
		}
		pe, ok := err.(*providers.Error)
		if !ok {
			t.Fatalf("status %d: %T %v", status, err, err)
		}
		switch pe.Class {
		case providers.ClassCapacity, providers.ClassQuota, providers.ClassUnauthorized, providers.ClassRateLimited,
			providers.ClassNotFound, providers.ClassInvalid, providers.ClassTransient:
		default:
			t.Fatalf("unknown class %q", pe.Class)
		}
		if (pe.Class == providers.ClassRateLimited) != (status == http.StatusTooManyRequests) {
			t.Fatalf("status %d classified %s", status, pe.Class)
		}
		if status >= 500 && pe.Class != providers.ClassTransient {
			t.Fatalf("status %d classified %s", status, pe.Class)
		}
		if pe.RetryAfter < 0 || (pe.Class == providers.ClassRateLimited && pe.RetryAfter == 0) {
			t.Fatalf("RetryAfter %v for %s", pe.RetryAfter, pe.Class)
		}
		if !utf8.ValidString(pe.Message) || len(pe.Message) > 512 || !utf8.ValidString(pe.Code) || len(pe.Code) > 512 {
			t.Fatalf("message %q / code %q", pe.Message, pe.Code)
		}
	})
}

// FuzzNormalizeOffers feeds arbitrary search answers to NormalizeOffers:
// whatever it returns is a valid offer.
func FuzzNormalizeOffers(f *testing.F) {
	f.Add([]byte(`{"offers": [{"id": 1, "gpu_name": "RTX 4090", "num_gpus": 1, "gpu_ram": 24564, "geolocation": "Texas, US", "dph_total": 0.4, "min_bid": 0.2, "vms_enabled": true}]}`),
		[]byte(`{"offers": [{"id": 1, "gpu_name": "A100 SXM4", "num_gpus": 8, "gpu_ram": 81920, "geolocation": null, "min_bid": 1e308}]}`))
	f.Add([]byte(`{"offers": [{"id": -1}, {"id": 1.5, "num_gpus": "x"}, {"id": 2, "gpu_name": "H100 SXM", "num_gpus": 0}]}`), []byte(`{"offers": null}`))
	f.Fuzz(func(t *testing.T, ondemand, bid []byte) {
		offers, err := vastai.NormalizeOffers(ondemand, bid, vastai.Filters{MinReliability: 0.98})
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, o := range offers {
			id, err := strconv.Atoi(o.InstanceType)
			switch {
			case o.Provider != providers.VastAI || err != nil || id <= 0:
				t.Fatalf("offer %+v", o)
			case !slices.Contains(providers.CanonicalGPUTypes, o.GPUType) || o.GPUCount < 1:
				t.Fatalf("offer %+v: GPU", o)
			case !canonicalRegion.MatchString(o.Region) || o.ProviderRegion == "":
				t.Fatalf("offer %+v: region", o)
			case !(o.HourlyPrice > 0) || math.IsInf(o.HourlyPrice, 0):
				t.Fatalf("offer %+v: price", o)
			case o.Capacity != providers.OnDemand && o.Capacity != providers.Spot:
				t.Fatalf("offer %+v: capacity", o)
			case seen[o.ID()]:
				t.Fatalf("offer %s twice", o.ID())
			}
			seen[o.ID()] = true
		}
	})
}

// FuzzNormalizeInstance feeds arbitrary v1 instance rows to
// NormalizeInstance.
func FuzzNormalizeInstance(f *testing.F) {
	f.Add([]byte(`{"id": 1, "actual_status": "stopped", "intended_status": "running", "is_bid": true, "min_bid": 0.3, "dph_base": 0.2, "label": "gpur-a"}`))
	f.Add([]byte(`{"id": 2, "actual_status": "running", "public_ipaddr": "1.2.3.4", "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": "2222"}], "x": []}, "image_runtype": "ssh_direct", "ssh_host": "h", "ssh_port": 9}`))
	f.Add([]byte(`{"id": 3, "actual_status": null, "ports": [8080], "status_msg": "\xff"}`))
	f.Fuzz(func(t *testing.T, row []byte) {
		var r vastai.InstanceJSON
		if json.Unmarshal(row, &r) != nil {
			return
		}
		in := vastai.NormalizeInstance(r)
		switch in.State {
		case providers.StatePending, providers.StateBooting, providers.StateRunning, providers.StateInterrupted, providers.StateFailed:
		default:
			t.Fatalf("state %q", in.State)
		}
		if in.Outbid && (in.State != providers.StateInterrupted || !in.Spot) {
			t.Fatalf("outbid %+v", in)
		}
		if in.SSH != nil && (in.State != providers.StateRunning || in.SSH.Port < 1 || in.SSH.Host == "") {
			t.Fatalf("SSH %+v of %+v", in.SSH, in)
		}
		for _, p := range in.Ports {
			if p.Port < 1 || p.PublicPort < 1 {
				t.Fatalf("port %+v", p)
			}
		}
	})
}

// FuzzRegion: every location maps to a canonical region, never to none.
func FuzzRegion(f *testing.F) {
	for _, s := range []string{"Texas, US", "California, United States", "FR", "", ",", "a, b, c", "Québec, CA", "x,\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, geo string) {
		if r := vastai.Region(geo); !canonicalRegion.MatchString(r) {
			t.Fatalf("Region(%q) = %q", geo, r)
		}
	})
}
