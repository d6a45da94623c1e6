package paperspace_test

import (
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/paperspace"
)

var classes = []providers.ErrorClass{
	providers.ClassCapacity, providers.ClassQuota, providers.ClassUnauthorized, providers.ClassRateLimited,
	providers.ClassNotFound, providers.ClassInvalid, providers.ClassTransient,
}

var states = []providers.InstanceState{
	providers.StatePending, providers.StateBooting, providers.StateRunning, providers.StateInterrupted,
	providers.StateTerminating, providers.StateTerminated, providers.StateFailed,
}

// FuzzClassifyResponse: any error answer yields a well-formed classified
// error whose class agrees with the status where the status decides.
func FuzzClassifyResponse(f *testing.F) {
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		if status < 400 || status > 599 {
			status = 400 + (status%200+200)%200
		}
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		pe, ok := paperspace.ClassifyResponse(status, h, body, time.Now()).(*providers.Error)
		if !ok {
			t.Fatal("not a *providers.Error")
		}
		if !slices.Contains(classes, pe.Class) || pe.HTTPStatus != status || pe.Provider != providers.Paperspace {
			t.Fatalf("malformed error %+v", pe)
		}
		if len(pe.Message) > 512 || len(pe.Code) > 64 || pe.RetryAfter < 0 {
			t.Fatalf("unbounded error %+v", pe)
		}
		switch {
		case status == http.StatusTooManyRequests && (pe.Class != providers.ClassRateLimited || pe.RetryAfter <= 0):
			t.Fatalf("429 classified %s, retry after %s", pe.Class, pe.RetryAfter)
		case status == http.StatusUnauthorized && pe.Class != providers.ClassUnauthorized:
			t.Fatalf("401 classified %s", pe.Class)
		case status >= 500 && pe.Class != providers.ClassTransient && pe.Class != providers.ClassRateLimited && pe.Class != providers.ClassUnauthorized:
			t.Fatalf("%d classified %s", status, pe.Class)
		}
		_ = pe.Error()
	})
}

// FuzzDecodeMachinePage: a decoded page only holds well-formed instances.
func FuzzDecodeMachinePage(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		page, err := paperspace.DecodeMachinePage(body)
		if err != nil {
			return
		}
		for _, m := range page.Machines {
			in := m.Instance
			if in.ID == "" || in.Provider != providers.Paperspace || in.Spot || !slices.Contains(states, in.State) {
				t.Fatalf("malformed instance %+v", in)
			}
			if in.State == providers.StateRunning && in.NativeState != "ready" && in.NativeState != "serviceready" {
				t.Fatalf("%q reported running", in.NativeState)
			}
		}
	})
}

// FuzzParseMachineType: a parsed label is <model>[x<N>] of a known model and
// its GPU type is canonical.
func FuzzParseMachineType(f *testing.F) {
	f.Fuzz(func(t *testing.T, label string) {
		gpu, count, ok := paperspace.ParseMachineType(label)
		if !ok {
			if gpu != "" || count != 0 {
				t.Fatalf("rejected %q but returned %q, %d", label, gpu, count)
			}
			return
		}
		if !slices.Contains(providers.CanonicalGPUTypes, gpu) || count < 1 || count > 64 {
			t.Fatalf("%q parsed as %q x %d", label, gpu, count)
		}
		model := label
		if count > 1 || label[len(label)-2:] == "x1" {
			model = label[:len(label)-len("x"+strconv.Itoa(count))]
		}
		if paperspace.GPUModels[model] != gpu {
			t.Fatalf("%q parsed as %q x %d, but its model %q maps to %q", label, gpu, count, model, paperspace.GPUModels[model])
		}
	})
}
