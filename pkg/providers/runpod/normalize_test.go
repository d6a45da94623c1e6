package runpod_test

import (
	"encoding/json"
	"math"
	"net/http"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod/runpodv2"
)

var now = time.Date(2026, 9, 1, 12, 0, 0, 0, time.UTC)

func TestClassifyResponse(t *testing.T) {
	problem := func(status int, detail string) string {
		return `{"title":"` + http.StatusText(status) + `","status":` + strconv.Itoa(status) + `,"detail":"` + detail + `"}`
	}
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
		{"no content", 204, nil, ``, "", 0, ""},
		{"capacity", 400, nil, problem(400, "There are no longer any instances available with the requested specifications. Please refresh and try again."),
			providers.ClassCapacity, 0, "Bad Request: There are no longer"},
		{"capacity, other ending", 400, nil, problem(400, "There are no longer any instances available with enough disk space."), providers.ClassCapacity, 0, ""},
		{"machine lacks resources", 400, nil, problem(400, "This machine does not have the resources to deploy your pod."), providers.ClassCapacity, 0, ""},
		// The spec's own 400 example: a rule violation, not capacity.
		{"bad request", 400, nil, problem(400, "request could not be processed"), providers.ClassInvalid, 0, "Bad Request: request could not be processed"},
		// Capacity words outside the matched wording stay invalid: one
		// tenant's input must not mark an offering unavailable for all.
		{"capacity-ish words are not capacity", 400, nil, problem(400, "image not available: capacity of the registry exceeded"), providers.ClassInvalid, 0, ""},
		{"capacity wording only in detail", 400, nil, `{"title":"There are no longer any instances available","status":400,"detail":"bad ports"}`, providers.ClassInvalid, 0, ""},
		{"capacity text on a 500 stays transient", 500, nil, problem(500, "There are no longer any instances available"), providers.ClassTransient, 0, ""},
		{"plain-text 400", 400, nil, "There are no longer any instances available", providers.ClassInvalid, 0, "There are no longer"},
		{"insufficient balance", 402, nil, problem(402, "insufficient balance"), providers.ClassQuota, 0, "Payment Required: insufficient balance"},
		{"validation", 422, nil, `{"title":"Unprocessable Entity","status":422,"detail":"Request validation failed.","errors":["$: additional properties 'bogus' not allowed"]}`,
			providers.ClassInvalid, 0, "Unprocessable Entity: Request validation failed.: $: additional properties 'bogus' not allowed"},
		{"conflict", 409, nil, problem(409, "action not valid"), providers.ClassInvalid, 0, "Conflict: action not valid"},
		{"unauthorized", 401, nil, problem(401, "missing bearer token"), providers.ClassUnauthorized, 0, "Unauthorized: missing bearer token"},
		{"forbidden", 403, nil, problem(403, "access denied"), providers.ClassUnauthorized, 0, "Forbidden: access denied"},
		{"not found", 404, nil, problem(404, "pod not found"), providers.ClassNotFound, 0, "Not Found: pod not found"},
		{"not found, any body", 404, nil, "<html>gone</html>", providers.ClassNotFound, 0, "<html>"},
		{"429 seconds", 429, http.Header{"Retry-After": {"12"}, "Ratelimit": {`"minute";r=0;t=30`}}, problem(429, "rate limit exceeded for the minute window"),
			providers.ClassRateLimited, 12 * time.Second, "Too Many Requests"},
		{"429 date", 429, http.Header{"Retry-After": {now.Add(5 * time.Second).Format(http.TimeFormat)}}, "", providers.ClassRateLimited, 5 * time.Second, ""},
		{"429 RateLimit header only", 429, http.Header{"Ratelimit": {`"minute";r=0;t=12, "hour";r=2800;t=1812`}}, "", providers.ClassRateLimited, 12 * time.Second, ""},
		{"429 two windows exhausted", 429, http.Header{"Ratelimit": {`"minute";r=0;t=12, "hour";r=0;t=1812`}}, "", providers.ClassRateLimited, 1812 * time.Second, ""},
		{"429 unreadable RateLimit", 429, http.Header{"Ratelimit": {`minute;r=x;t=-1`}}, "", providers.ClassRateLimited, time.Second, ""},
		{"429 without header", 429, nil, "", providers.ClassRateLimited, time.Second, ""},
		{"503 retry-after", 503, http.Header{"Retry-After": {"30"}}, problem(503, "down"), providers.ClassTransient, 30 * time.Second, "Service Unavailable: down"},
		{"502 html", 502, nil, "<html>bad gateway</html>", providers.ClassTransient, 0, "<html>bad gateway"},
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
	for _, body := range []string{
		strings.Repeat("é", 1000) + "\xff",
		`{"title":"Bad Request","status":400,"detail":"` + strings.Repeat("é", 1000) + `"}`,
	} {
		msg, _ := runpod.ErrorMessage([]byte(body))
		if len(msg) > 512 || !utf8.ValidString(msg) || !strings.HasSuffix(msg, "…") {
			t.Errorf("message of %d bytes, valid %v: %q", len(msg), utf8.ValidString(msg), msg[len(msg)-10:])
		}
	}
}

func TestNormalizeOffers(t *testing.T) {
	catalog := `{"gpus":[
		{"id":"NVIDIA A40","name":"A40","pool":null,"manufacturer":"NVIDIA","memory":48,"secure":true,"community":true,
		 "price":{"secure":0.35,"community":0.2},"maxCount":{"secure":3,"community":2},
		 "availability":"HIGH","dataCenters":[{"id":"US-GA-1","name":"US Georgia 1","availability":"HIGH"},{"id":"MARS-1","name":"Mars","availability":"HIGH"},{"id":"EU-SE-1","name":"Sweden","availability":"SOMETHING_NEW"}]},
		{"id":"NVIDIA L4","name":"L4","pool":null,"manufacturer":"NVIDIA","memory":24,"secure":false,"community":true,
		 "price":{"secure":0.3,"community":0.2},"maxCount":{"secure":8,"community":1},
		 "availability":"LOW","dataCenters":[{"id":"US-GA-1","name":"US Georgia 1","availability":"LOW"}]},
		{"id":"NVIDIA GeForce RTX 3070","name":"RTX 3070","pool":null,"manufacturer":"NVIDIA","memory":8,"secure":true,"community":true,
		 "price":{"secure":0.13,"community":0.1},"maxCount":{"secure":8,"community":8},
		 "availability":"HIGH","dataCenters":[{"id":"US-GA-1","name":"US Georgia 1","availability":"HIGH"}]},
		{"id":"NVIDIA L40S","name":"L40S","pool":null,"manufacturer":"NVIDIA","memory":48,"secure":true,"community":false,
		 "price":{"secure":0.86,"community":0},"maxCount":{"secure":8,"community":0},"availability":"NONE"},
		{"id":"NVIDIA H100 80GB HBM3","name":"H100","pool":null,"manufacturer":"NVIDIA","memory":80,"secure":true,"community":true,
		 "price":{"secure":0,"community":0},"maxCount":{"secure":8,"community":8},
		 "availability":"HIGH","dataCenters":[{"id":"US-GA-1","name":"US Georgia 1","availability":"HIGH"}]}
	]}`
	list := func(offers []providers.Offer) []string {
		var got []string
		for _, o := range offers {
			if o.Capacity != providers.OnDemand || o.Kind != providers.Container || o.Provider != providers.RunPod ||
				o.PriceSource != providers.PriceSourceAPI || o.Region != runpod.Regions[o.ProviderRegion] || o.GPUType != runpod.GPUTypes[o.InstanceType] {
				t.Errorf("offer %+v is not an on-demand RunPod container offer", o)
			}
			got = append(got, o.InstanceType+"/"+strconv.Itoa(o.GPUCount)+"/"+o.ProviderRegion+"/"+
				strconv.FormatFloat(o.HourlyPrice, 'f', -1, 64)+"/"+strconv.FormatBool(o.Available))
		}
		return got
	}
	// Secure: L4 is not sold there, the RTX 3070 has no canonical name, the
	// L40S is unavailable everywhere (no dataCenters), the H100 has no price;
	// MARS-1 is not a known data center; every count up to maxCount.
	offers, err := runpod.NormalizeOffers([]byte(catalog), runpod.SecureCloud)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"NVIDIA A40/1/US-GA-1/0.35/true", "NVIDIA A40/1/EU-SE-1/0.35/false",
		"NVIDIA A40/2/US-GA-1/0.7/true", "NVIDIA A40/2/EU-SE-1/0.7/false",
		"NVIDIA A40/3/US-GA-1/1.05/true", "NVIDIA A40/3/EU-SE-1/1.05/false",
	}
	if got := list(offers); !slices.Equal(got, want) {
		t.Errorf("secure offers\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Community: the community price and maxCount.
	offers, err = runpod.NormalizeOffers([]byte(catalog), runpod.CommunityCloud)
	if err != nil {
		t.Fatal(err)
	}
	want = []string{
		"NVIDIA A40/1/US-GA-1/0.2/true", "NVIDIA A40/1/EU-SE-1/0.2/false",
		"NVIDIA A40/2/US-GA-1/0.4/true", "NVIDIA A40/2/EU-SE-1/0.4/false",
		"NVIDIA L4/1/US-GA-1/0.2/true",
	}
	if got := list(offers); !slices.Equal(got, want) {
		t.Errorf("community offers\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if _, err := runpod.NormalizeOffers([]byte(`{"gpus":`), runpod.SecureCloud); err == nil {
		t.Error("truncated catalog decoded")
	}
	// A maxCount above the API's largest count is capped at 16.
	huge := `{"gpus":[{"id":"NVIDIA A40","name":"A40","secure":true,"community":true,"price":{"secure":1,"community":1},
		"maxCount":{"secure":100000,"community":0},"dataCenters":[{"id":"US-GA-1","name":"x","availability":"HIGH"}]}]}`
	if offers, err := runpod.NormalizeOffers([]byte(huge), runpod.SecureCloud); err != nil || len(offers) != 16 {
		t.Errorf("maxCount 100000 gave %d offers (%v), want 16", len(offers), err)
	}
}

func TestNormalizePod(t *testing.T) {
	tests := []struct {
		json  string
		state providers.InstanceState
	}{
		{`{"id":"a","name":"gpur-a","status":"PROVISIONING","runtime":null}`, providers.StatePending},
		{`{"id":"a","status":"STARTING"}`, providers.StateBooting},
		{`{"id":"a","status":"RUNNING","runtime":{"uptime":5}}`, providers.StateRunning},
		{`{"id":"a","status":"EXITED","cost":0}`, providers.StateInterrupted},
		{`{"id":"a","status":"ERROR"}`, providers.StateFailed},
		{`{"id":"a","status":"TERMINATED"}`, providers.StateTerminated},
		{`{"id":"a","status":"PAUSED"}`, providers.StatePending},
		{`{"id":"a"}`, providers.StatePending},
	}
	for _, tc := range tests {
		var p runpodv2.Pod
		if err := json.Unmarshal([]byte(tc.json), &p); err != nil {
			t.Fatal(err)
		}
		got := runpod.NormalizePod(p)
		if got.State != tc.state || got.Spot || got.ID != "a" || got.Provider != providers.RunPod || got.NativeState != string(p.Status) {
			t.Errorf("%s -> %+v, want %s", tc.json, got, tc.state)
		}
	}
	var p runpodv2.Pod
	body := `{"id":"a","name":"gpur-x","status":"RUNNING","gpu":{"id":"NVIDIA L4","count":2},"dataCenterId":"EU-RO-1",
		"ssh":{"proxy":null,"direct":null},"runtime":{"ports":[
			{"private":8888,"public":null,"type":"http","ip":null},
			{"private":22,"public":34446,"type":"tcp","ip":"195.26.233.3"},
			{"private":null,"public":1,"type":"tcp","ip":"1.2.3.4"}]}}`
	if err := json.Unmarshal([]byte(body), &p); err != nil {
		t.Fatal(err)
	}
	got := runpod.NormalizePod(p)
	wantPorts := []providers.PortMapping{{Port: 8888, Protocol: "http"}, {Port: 22, Protocol: "tcp", PublicIP: "195.26.233.3", PublicPort: 34446}}
	if got.InstanceType != "NVIDIA L4" || got.ProviderRegion != "EU-RO-1" || got.Name != "gpur-x" || got.PublicIP != "195.26.233.3" ||
		!slices.Equal(got.Ports, wantPorts) {
		t.Errorf("got %+v, want L4 in EU-RO-1 at 195.26.233.3 with ports %+v", got, wantPorts)
	}
}

// JoinArgs must give a string a POSIX shell splits back into exactly the
// arguments (the assumption about how RunPod splits REST v2's args).
func TestJoinArgsRoundTripsThroughAShell(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to split with")
	}
	for _, args := range [][]string{
		{"python", "train.py", "--epochs=3", "--out", "/workspace/run_1"},
		{"bash", "-c", "echo $STARTUP | base64 -d | bash"},
		{"it's", `"double"`, "back\\slash", "tab\there", "new\nline", "", "*", "~", "$(id)", "`id`", "a b"},
		{"ünïcødé", "x;y", "a&&b", "#comment"},
	} {
		joined := runpod.JoinArgs(args)
		out, err := exec.Command(sh, "-c", `eval "set -- $0"; for a in "$@"; do printf '%s\000' "$a"; done`, joined).Output()
		if err != nil {
			t.Fatalf("sh on %q: %v", joined, err)
		}
		got := strings.Split(string(out), "\x00")
		got = got[:len(got)-1]
		if !slices.Equal(got, args) {
			t.Errorf("JoinArgs(%q) = %q, which a shell splits into %q", args, joined, got)
		}
	}
	if got := runpod.JoinArgs([]string{"python", "-m", "http.server", "8888"}); got != "python -m http.server 8888" {
		t.Errorf("plain words are quoted: %q", got)
	}
}

func TestParseCloud(t *testing.T) {
	for in, want := range map[string]runpod.Cloud{"": runpod.SecureCloud, "secure": runpod.SecureCloud, " COMMUNITY ": runpod.CommunityCloud} {
		if got, err := runpod.ParseCloud(in); err != nil || got != want {
			t.Errorf("ParseCloud(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := runpod.ParseCloud("spot"); err == nil {
		t.Error(`ParseCloud("spot") succeeded`)
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
func checkOffers(t *testing.T, offers []providers.Offer) {
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
		if o.GPUCount < 1 || o.GPUCount > 16 {
			t.Fatalf("offer with count %d", o.GPUCount)
		}
		if o.Capacity != providers.OnDemand || o.Kind != providers.Container {
			t.Fatalf("offer with capacity %q, kind %q", o.Capacity, o.Kind)
		}
		if o.Provider != providers.RunPod || o.PriceSource != providers.PriceSourceAPI {
			t.Fatalf("offer %+v", o)
		}
	}
}
