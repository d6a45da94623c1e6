package lambda_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/lambda"
	"github.com/solanyn/gpu-operator/pkg/providers/lambda/lambdaapi"
	"github.com/solanyn/gpu-operator/pkg/providers/spectest"
)

func TestCanonicalGPU(t *testing.T) {
	tests := []struct {
		name  string
		gpu   string
		count int
	}{
		{"gpu_8x_a100", "A100", 8},
		{"gpu_1x_a100_sxm4", "A100", 1},
		{"gpu_8x_a100_80gb_sxm4", "A100-80GB", 8},
		{"gpu_1x_h100_pcie", "H100", 1},
		{"gpu_8x_h100_sxm5", "H100", 8},
		{"gpu_8x_h100_sxm5gdr", "H100", 8},
		{"gpu_1x_gh200", "GH200", 1},
		{"gpu_1x_a10", "A10", 1},
		{"gpu_2x_a6000", "A6000", 2},
		{"gpu_8x_v100", "V100", 8},
		{"gpu_8x_v100_n", "V100", 8},
		{"gpu_8x_b200_sxm6", "B200", 8},
		{"gpu_1x_h200", "H200", 1},
		{"gpu_1x_rtx6000", "", 0},
		{"cpu_4x_general", "", 0},
		{"gpu_0x_a100", "", 0},
		{"gpu_01x_a100", "", 0},
		{"gpu_x_a100", "", 0},
		{"gpu_1x_", "", 0},
	}
	for _, tt := range tests {
		gpu, count, ok := lambda.CanonicalGPU(tt.name)
		if gpu != tt.gpu || count != tt.count || ok != (tt.gpu != "") {
			t.Errorf("CanonicalGPU(%q) = %q, %d, %v; want %q, %d", tt.name, gpu, count, ok, tt.gpu, tt.count)
		}
	}
	for token, gpu := range lambda.GPUTypes {
		if !slices.Contains(providers.CanonicalGPUTypes, gpu) {
			t.Errorf("GPUTypes[%q] = %q is not a canonical GPU type", token, gpu)
		}
	}
}

func TestRegionsCoverTheSpec(t *testing.T) {
	want := map[string]string{
		"us-east-1": "us-east-1", "us-west-3": "us-west-3", "us-south-2": "us-south-2", "us-midwest-2": "us-midwest-2",
		"europe-central-1": "eu-central-1", "asia-south-1": "ap-south-1", "asia-northeast-1": "ap-northeast-1",
		"asia-northeast-2": "ap-northeast-2", "australia-east-1": "ap-southeast-2", "me-west-1": "me-west-1",
		"europe-south-1": "eu-south-1", "us-southeast-1": "us-southeast-1",
	}
	for native, canonical := range want {
		if got := lambda.Regions[native]; got != canonical {
			t.Errorf("Regions[%q] = %q, want %q", native, got, canonical)
		}
	}
	// Every PublicRegionCode of the spec itself (read from the shared
	// provider-specs directory, $PROVIDER_SPECS overriding; a missing
	// directory fails) has an explicit canonical region, and the generated
	// client knows the same codes.
	path := filepath.Join(spectest.Dir(t), "lambda", "openapi-1.8.3.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Components struct {
			Schemas struct {
				PublicRegionCode struct {
					Enum []string `json:"enum"`
				} `json:"PublicRegionCode"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	codes := doc.Components.Schemas.PublicRegionCode.Enum
	if len(codes) == 0 {
		t.Fatalf("%s has no PublicRegionCode enum", path)
	}
	canonical := map[string]string{}
	for _, code := range codes {
		r, ok := lambda.Regions[code]
		if !ok {
			t.Errorf("the spec's region %s has no canonical region in lambda.Regions", code)
			continue
		}
		if !lambdaapi.PublicRegionCode(code).Valid() {
			t.Errorf("the generated client does not know the spec's region %s: regenerate it", code)
		}
		if other, dup := canonical[r]; dup {
			t.Errorf("%s and %s both map to %s", other, code, r)
		}
		canonical[r] = code
	}
}

func TestCanonicalRegionRule(t *testing.T) {
	for native, want := range map[string]string{
		"europe-central-1": "eu-central-1", // the table wins
		"europe-north-7":   "eu-north-7",
		"asia-east-3":      "ap-east-3",
		"australia-west-1": "ap-west-1",
		"sa-east-1":        "sa-east-1",
	} {
		if got, ok := lambda.CanonicalRegion(native); !ok || got != want {
			t.Errorf("CanonicalRegion(%q) = %q, %v; want %q", native, got, ok, want)
		}
	}
	if _, ok := lambda.CanonicalRegion(""); ok {
		t.Error("an empty region has a canonical name")
	}
}

func TestNormalizeOffersSkipsInconsistentTypes(t *testing.T) {
	body := `{"data":{
	  "gpu_8x_h100_sxm5": {"instance_type": {"name": "gpu_8x_h100_sxm5", "price_cents_per_hour": 2392, "specs": {"gpus": 8}},
	    "regions_with_capacity_available": [{"name": "us-west-3"}, {"name": "us-west-3"}, {"name": ""}]},
	  "gpu_4x_a100": {"instance_type": {"name": "gpu_4x_a100", "price_cents_per_hour": 516, "specs": {"gpus": 8}},
	    "regions_with_capacity_available": [{"name": "us-east-1"}]},
	  "gpu_1x_a10": {"instance_type": {"name": "gpu_1x_a10", "price_cents_per_hour": 0, "specs": {"gpus": 1}},
	    "regions_with_capacity_available": [{"name": "us-east-1"}]}
	}}`
	offers, err := lambda.NormalizeOffers([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(offers) != 1 || offers[0].InstanceType != "gpu_8x_h100_sxm5" || offers[0].Region != "us-west-3" ||
		offers[0].HourlyPrice != 23.92 || offers[0].GPUCount != 8 {
		t.Fatalf("offers = %+v, want only gpu_8x_h100_sxm5 in us-west-3 at 23.92", offers)
	}
	if _, err := lambda.NormalizeOffers([]byte(`{"data": []}`)); err == nil {
		t.Fatal("a list where a map belongs decoded without error")
	}
}

func TestNormalizeState(t *testing.T) {
	want := map[string]providers.InstanceState{
		"booting": providers.StateBooting, "active": providers.StateRunning, "unhealthy": providers.StateRunning,
		"terminating": providers.StateTerminating, "terminated": providers.StateTerminated,
		"preempted": providers.StateInterrupted, "something-new": providers.StatePending,
	}
	for native, state := range want {
		if got := lambda.NormalizeState(native); got != state {
			t.Errorf("NormalizeState(%q) = %s, want %s", native, got, state)
		}
	}
}

func TestClassifyResponse(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	envelope := func(code string) []byte {
		return []byte(fmt.Sprintf(`{"error":{"code":%q,"message":"msg","suggestion":"do this"}}`, code))
	}
	tests := []struct {
		name       string
		status     int
		header     http.Header
		body       []byte
		class      providers.ErrorClass
		retryAfter time.Duration
	}{
		{"capacity", 400, nil, envelope(lambda.CodeInsufficientCapacity), providers.ClassCapacity, 0},
		{"quota", 400, nil, envelope(lambda.CodeQuotaExceeded), providers.ClassQuota, 0},
		{"invalid key", 401, nil, envelope(lambda.CodeInvalidAPIKey), providers.ClassUnauthorized, 0},
		{"account inactive", 403, nil, envelope(lambda.CodeAccountInactive), providers.ClassUnauthorized, 0},
		{"bare 403", 403, nil, nil, providers.ClassUnauthorized, 0},
		{"not found", 404, nil, envelope(lambda.CodeObjectDoesNotExist), providers.ClassNotFound, 0},
		{"bare 404", 404, nil, []byte("<html>nope</html>"), providers.ClassNotFound, 0},
		{"invalid parameters", 400, nil, envelope(lambda.CodeInvalidParameters), providers.ClassInvalid, 0},
		{"other 4xx code", 400, nil, envelope("filesystems/filesystem-in-use"), providers.ClassInvalid, 0},
		{"internal error", 500, nil, envelope(lambda.CodeInternalError), providers.ClassTransient, 0},
		{"bare 502", 502, nil, []byte("Bad Gateway"), providers.ClassTransient, 0},
		{"503 with Retry-After", 503, http.Header{"Retry-After": {"7"}}, nil, providers.ClassTransient, 7 * time.Second},
		{"429 seconds", 429, http.Header{"Retry-After": {"2"}}, envelope("global/rate-limited"), providers.ClassRateLimited, 2 * time.Second},
		{"429 date", 429, http.Header{"Retry-After": {now.Add(90 * time.Second).Format(http.TimeFormat)}}, nil, providers.ClassRateLimited, 90 * time.Second},
		{"429 without header", 429, nil, nil, providers.ClassRateLimited, time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := lambda.ClassifyResponse(tt.status, tt.header, tt.body, now)
			pe := wantClass(t, err, tt.class)
			if pe.RetryAfter != tt.retryAfter || pe.HTTPStatus != tt.status || pe.Provider != providers.LambdaLabs {
				t.Fatalf("error = %+v, want RetryAfter %s", pe, tt.retryAfter)
			}
		})
	}
	if err := lambda.ClassifyResponse(200, nil, envelope(lambda.CodeInternalError), now); err != nil {
		t.Fatalf("a 200 classified as %v", err)
	}
	pe := wantClass(t, lambda.ClassifyResponse(400, nil, envelope(lambda.CodeInvalidParameters), now), providers.ClassInvalid)
	if pe.Code != lambda.CodeInvalidParameters || pe.Message != "msg (do this)" {
		t.Fatalf("code %q, message %q", pe.Code, pe.Message)
	}
}

// catalogBody is a GET /api/v1/instance-types body with types*regions entries.
func catalogBody(tb testing.TB, types, regions int) []byte {
	tb.Helper()
	models := []string{"a10", "a100_80gb_sxm4", "h100_sxm5", "gh200", "b200_sxm6", "a6000", "rtx6000"}
	codes := make([]string, 0, len(lambda.Regions))
	for code := range lambda.Regions {
		codes = append(codes, code)
	}
	slices.Sort(codes)
	data := lambdaapi.InstanceTypes{}
	for i := range types {
		gpus := 1 << (i % 4)
		name := fmt.Sprintf("gpu_%dx_%s_v%d", gpus, models[i%len(models)], i)
		item := lambdaapi.InstanceTypesItem{InstanceType: lambdaapi.InstanceType{
			Name: name, Description: name, GpuDescription: models[i%len(models)], PriceCentsPerHour: 100 + i%5000,
			Specs: lambdaapi.InstanceTypeSpecs{Gpus: gpus, Vcpus: 30 * gpus, MemoryGib: 200 * gpus, StorageGib: 1024 * gpus},
		}}
		for r := range regions {
			code := codes[(i+r)%len(codes)]
			item.RegionsWithCapacityAvailable = append(item.RegionsWithCapacityAvailable,
				lambdaapi.Region{Name: lambdaapi.PublicRegionCode(code), Description: code})
		}
		data[name] = item
	}
	b, err := json.Marshal(map[string]any{"data": data})
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// BenchmarkNormalizeOffers10k decodes and normalizes a 10,000-entry catalog
// (5,000 instance types, each with capacity in 2 regions).
func BenchmarkNormalizeOffers10k(b *testing.B) {
	body := catalogBody(b, 5000, 2)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	var offers []providers.Offer
	for b.Loop() {
		var err error
		if offers, err = lambda.NormalizeOffers(body); err != nil {
			b.Fatal(err)
		}
	}
	// The 714 rtx6000 types are skipped; the other 4,286 yield 2 offers each.
	if len(offers) != 8572 {
		b.Fatalf("got %d offers, want 8572", len(offers))
	}
}
