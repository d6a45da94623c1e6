package runpod_test

import (
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod/runpodv1"
)

var now = time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC)

func TestClassifyResponse(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		header     http.Header
		body       string
		class      providers.ErrorClass
		retryAfter time.Duration
		message    string
	}{
		{"ok", 200, nil, `{}`, "", 0, ""},
		{"created", 201, nil, `{}`, "", 0, ""},
		{"v1 capacity", 400, nil, "There are no longer any instances available with the requested specifications. Please refresh and try again.", providers.ClassCapacity, 0, "There are no longer"},
		{"not enough GPUs", 400, nil, "Not enough GPUs of that type free", providers.ClassCapacity, 0, ""},
		{"machine lacks resources", 400, nil, "This machine does not have the resources to deploy your pod.", providers.ClassCapacity, 0, ""},
		{"funds are quota not capacity", 400, nil, "Not enough funds to rent this pod", providers.ClassQuota, 0, ""},
		{"pod limit", 400, nil, "Pod limit reached for your account", providers.ClassQuota, 0, ""},
		{"v2 quota", 400, nil, `{"title":"Bad Request","status":400,"detail":"quota exceeded"}`, providers.ClassQuota, 0, "Bad Request: quota exceeded"},
		{"v2 validation", 422, nil, `{"title":"Unprocessable Entity","status":422,"detail":"invalid body","errors":["$: additional properties 'bogus' not allowed"]}`,
			providers.ClassInvalid, 0, "Unprocessable Entity: invalid body: $: additional properties 'bogus' not allowed"},
		{"v1 invalid", 400, nil, "Invalid input: gpuCount must be at least 1", providers.ClassInvalid, 0, "Invalid input"},
		{"unauthorized", 401, nil, "Unauthorized", providers.ClassUnauthorized, 0, "Unauthorized"},
		{"forbidden", 403, nil, `{"title":"Forbidden","status":403,"detail":"access denied"}`, providers.ClassUnauthorized, 0, "Forbidden: access denied"},
		{"not found", 404, nil, "Pod not found.", providers.ClassNotFound, 0, "Pod not found."},
		{"429 seconds", 429, http.Header{"Retry-After": {"12"}}, `{"title":"Too Many Requests","status":429,"detail":"rate limit exceeded for the minute window"}`,
			providers.ClassRateLimited, 12 * time.Second, "Too Many Requests"},
		{"429 date", 429, http.Header{"Retry-After": {now.Add(5 * time.Second).Format(http.TimeFormat)}}, "", providers.ClassRateLimited, 5 * time.Second, ""},
		{"429 without header", 429, nil, "", providers.ClassRateLimited, time.Second, ""},
		{"500 with capacity text stays transient", 500, nil, "no capacity", providers.ClassTransient, 0, ""},
		{"503 retry-after", 503, http.Header{"Retry-After": {"30"}}, "down", providers.ClassTransient, 30 * time.Second, "down"},
		{"graphql body on 400", 400, nil, `{"errors":[{"message":"Something about capacity"}]}`, providers.ClassCapacity, 0, "Something about capacity"},
		{"v1 unauthorized schema", 401, nil, `{"message":"invalid api key"}`, providers.ClassUnauthorized, 0, "invalid api key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := runpod.ClassifyResponse(tc.status, tc.header, []byte(tc.body), now)
			if tc.class == "" {
				if err != nil {
					t.Fatalf("got %v, want nil", err)
				}
				return
			}
			pe, ok := err.(*providers.Error)
			if !ok {
				t.Fatalf("got %T %v", err, err)
			}
			if pe.Class != tc.class || pe.RetryAfter != tc.retryAfter || pe.HTTPStatus != tc.status || pe.Provider != providers.RunPod {
				t.Errorf("got %+v, want class %s retry-after %v", pe, tc.class, tc.retryAfter)
			}
			if !strings.HasPrefix(pe.Message, tc.message) {
				t.Errorf("message %q, want prefix %q", pe.Message, tc.message)
			}
		})
	}
}

func TestErrorMessageIsBounded(t *testing.T) {
	msg := runpod.ErrorMessage([]byte(strings.Repeat("é", 1000) + "\xff"))
	if len(msg) > 512 || !utf8.ValidString(msg) || !strings.HasSuffix(msg, "…") {
		t.Errorf("message of %d bytes, valid %v: %q", len(msg), utf8.ValidString(msg), msg[len(msg)-10:])
	}
}

func TestDecodeQuotes(t *testing.T) {
	body := `{"data":{"gpuTypes":[
		{"id":"NVIDIA A40","count1":{"minimumBidPrice":0.2,"uninterruptablePrice":0.35,"stockStatus":"High"},"count2":null,
		 "count4":{"minimumBidPrice":null,"uninterruptablePrice":0.35,"stockStatus":null}},
		{"id":"NVIDIA L4","count1":{"minimumBidPrice":0.1,"stockStatus":"None"}, "other":{"x":1}},
		{"count1":{}}
	]}}`
	q, err := runpod.DecodeQuotes([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	want := runpod.Quotes{
		"NVIDIA A40": {1: {SpotPerGPU: 0.2, InStock: true}, 4: {}},
		"NVIDIA L4":  {1: {SpotPerGPU: 0.1}},
	}
	if got, _ := json.Marshal(q); string(got) != mustJSON(t, want) {
		t.Errorf("quotes %s, want %s", got, mustJSON(t, want))
	}

	for body, class := range map[string]providers.ErrorClass{
		`{"errors":[{"message":"Unauthorized request, please check your API key."}]}`: providers.ClassUnauthorized,
		`{"errors":[{"message":"Too many requests"}]}`:                                providers.ClassRateLimited,
		`{"errors":[{"message":"Cannot query field \"foo\" on type \"GpuType\"."}]}`:  providers.ClassInvalid,
		`{"errors":[{}]}`: providers.ClassInvalid,
		`{"data":null}`:   providers.ClassTransient, // neither data nor errors
		`not json`:        providers.ClassTransient,
	} {
		if _, err := runpod.DecodeQuotes([]byte(body)); providers.ClassOf(err) != class {
			t.Errorf("DecodeQuotes(%s) = %v, want %s", body, err, class)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestNormalizeOffersSkipsAndPrices(t *testing.T) {
	catalog := `{"gpus":[
		{"id":"NVIDIA A40","name":"A40","secure":true,"community":true,"price":{"secure":0.35,"community":0.2},"maxCount":{"secure":4,"community":8},
		 "availability":"HIGH","dataCenters":[{"id":"US-GA-1","name":"US Georgia 1","availability":"HIGH"},{"id":"MARS-1","name":"Mars","availability":"HIGH"},{"id":"EU-SE-1","name":"Sweden","availability":"SOMETHING_NEW"}]},
		{"id":"NVIDIA L4","name":"L4","secure":false,"community":true,"price":{"secure":0.3,"community":0.2},"maxCount":{"secure":8,"community":8},
		 "availability":"HIGH","dataCenters":[{"id":"US-GA-1","name":"US Georgia 1","availability":"HIGH"}]},
		{"id":"NVIDIA GeForce RTX 3070","name":"RTX 3070","secure":true,"community":true,"price":{"secure":0.13,"community":0.1},"maxCount":{"secure":8,"community":8},
		 "availability":"HIGH","dataCenters":[{"id":"US-GA-1","name":"US Georgia 1","availability":"HIGH"}]},
		{"id":"NVIDIA L40S","name":"L40S","secure":true,"community":false,"price":{"secure":0.86,"community":0},"maxCount":{"secure":8,"community":0},"availability":"NONE"}
	]}`
	quotes := runpod.Quotes{"NVIDIA A40": {1: {SpotPerGPU: 0.17, InStock: true}, 2: {SpotPerGPU: 0.17, InStock: true}, 4: {InStock: true}}}
	offers, err := runpod.NormalizeOffers([]byte(catalog), quotes, []int{1, 2, 4, 8})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range offers {
		got = append(got, o.InstanceType+"/"+strconv.Itoa(o.GPUCount)+"/"+o.ProviderRegion+"/"+string(o.Capacity)+"/"+
			strconv.FormatFloat(o.HourlyPrice, 'f', -1, 64)+"/"+strconv.FormatBool(o.Available))
	}
	want := []string{
		"NVIDIA A40/1/US-GA-1/on-demand/0.35/true", "NVIDIA A40/1/US-GA-1/spot/0.17/true",
		"NVIDIA A40/1/EU-SE-1/on-demand/0.35/false", "NVIDIA A40/1/EU-SE-1/spot/0.17/false",
		"NVIDIA A40/2/US-GA-1/on-demand/0.7/true", "NVIDIA A40/2/US-GA-1/spot/0.34/true",
		"NVIDIA A40/2/EU-SE-1/on-demand/0.7/false", "NVIDIA A40/2/EU-SE-1/spot/0.34/false",
		"NVIDIA A40/4/US-GA-1/on-demand/1.4/true",
		"NVIDIA A40/4/EU-SE-1/on-demand/1.4/false",
	}
	if !slices.Equal(got, want) {
		t.Errorf("offers\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, err := runpod.NormalizeOffers([]byte(`{"gpus":`), nil, []int{1}); err == nil {
		t.Error("truncated catalog decoded")
	}
}

func TestNormalizePod(t *testing.T) {
	tests := []struct {
		json  string
		state providers.InstanceState
		spot  bool
	}{
		{`{"id":"a","name":"gpur-a","desiredStatus":"RUNNING","interruptible":false}`, providers.StateBooting, false},
		{`{"id":"a","desiredStatus":"RUNNING","publicIp":"100.65.0.1"}`, providers.StateRunning, false},
		{`{"id":"a","desiredStatus":"RUNNING","publicIp":null}`, providers.StateBooting, false},
		{`{"id":"a","desiredStatus":"EXITED","interruptible":true}`, providers.StateInterrupted, true},
		{`{"id":"a","desiredStatus":"EXITED","interruptible":false}`, providers.StateFailed, false},
		{`{"id":"a","desiredStatus":"TERMINATED"}`, providers.StateTerminated, false},
		{`{"id":"a","desiredStatus":"PAUSED"}`, providers.StatePending, false},
		{`{"id":"a"}`, providers.StatePending, false},
	}
	for _, tc := range tests {
		var p runpodv1.Pod
		if err := json.Unmarshal([]byte(tc.json), &p); err != nil {
			t.Fatal(err)
		}
		if got := runpod.NormalizePod(p); got.State != tc.state || got.Spot != tc.spot || got.ID != "a" || got.Provider != providers.RunPod {
			t.Errorf("%s -> %+v, want %s spot=%v", tc.json, got, tc.state, tc.spot)
		}
	}
	var p runpodv1.Pod
	if err := json.Unmarshal([]byte(`{"id":"a","gpu":{"id":"NVIDIA L4","count":2},"machine":{"gpuTypeId":"other","dataCenterId":"EU-RO-1"}}`), &p); err != nil {
		t.Fatal(err)
	}
	if got := runpod.NormalizePod(p); got.InstanceType != "NVIDIA L4" || got.ProviderRegion != "EU-RO-1" {
		t.Errorf("got %+v", got)
	}
}

func TestTablesAreCanonical(t *testing.T) {
	for id, c := range runpod.GPUTypes {
		if !slices.Contains(providers.CanonicalGPUTypes, c) {
			t.Errorf("GPU type %q maps to non-canonical %q", id, c)
		}
	}
	for dc, r := range runpod.Regions {
		if r == "" || strings.ToLower(r) != r {
			t.Errorf("data center %q maps to %q", dc, r)
		}
	}
	if runpod.GPUTypes["NVIDIA H100 NVL"] != "H100" || runpod.Regions["EUR-IS-2"] != "eu-north-2" {
		t.Error("spot-check of the tables failed")
	}
}

// checkOffers asserts the invariants every normalized offer keeps.
func checkOffers(t *testing.T, offers []providers.Offer, counts []int) {
	t.Helper()
	for _, o := range offers {
		if !slices.Contains(providers.CanonicalGPUTypes, o.GPUType) || runpod.GPUTypes[o.InstanceType] != o.GPUType {
			t.Fatalf("offer with GPU type %q/%q", o.InstanceType, o.GPUType)
		}
		if runpod.Regions[o.ProviderRegion] != o.Region || o.Region == "" {
			t.Fatalf("offer with region %q/%q", o.ProviderRegion, o.Region)
		}
		if !(o.HourlyPrice > 0) || math.IsInf(o.HourlyPrice, 0) {
			t.Fatalf("offer with price %v", o.HourlyPrice)
		}
		if !slices.Contains(counts, o.GPUCount) {
			t.Fatalf("offer with count %d", o.GPUCount)
		}
		if o.Capacity != providers.Spot && o.Capacity != providers.OnDemand {
			t.Fatalf("offer with capacity %q", o.Capacity)
		}
		if o.Provider != providers.RunPod || o.PriceSource != providers.PriceSourceAPI {
			t.Fatalf("offer %+v", o)
		}
	}
}
