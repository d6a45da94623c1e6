package lambda_test

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/lambda"
)

// Seed corpora live in testdata/fuzz/<FuzzName>/.

// FuzzNormalizeOffers checks that any instance-types body either fails to
// decode or yields only well-formed offers.
func FuzzNormalizeOffers(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		offers, err := lambda.NormalizeOffers(body)
		if err != nil {
			if offers != nil {
				t.Fatalf("offers %v returned with error %v", offers, err)
			}
			return
		}
		seen := map[string]bool{}
		for _, o := range offers {
			gpu, count, ok := lambda.CanonicalGPU(o.InstanceType)
			switch {
			case !ok || gpu != o.GPUType || count != o.GPUCount:
				t.Fatalf("offer %+v does not match its type name", o)
			case !slices.Contains(providers.CanonicalGPUTypes, o.GPUType):
				t.Fatalf("offer %+v has a non-canonical GPU type", o)
			case canonicalRegion(o.ProviderRegion) != o.Region || o.Region == "":
				t.Fatalf("offer %+v has an unmapped region", o)
			case o.Capacity != providers.OnDemand || !o.Available || o.PriceSource != providers.PriceSourceAPI:
				t.Fatalf("offer %+v: want available on-demand API-priced", o)
			case o.HourlyPrice <= 0 || o.Provider != providers.LambdaLabs:
				t.Fatalf("offer %+v: bad price or provider", o)
			case seen[o.ID()]:
				t.Fatalf("duplicate offer %s", o.ID())
			}
			seen[o.ID()] = true
		}
	})
}

func canonicalRegion(native string) string {
	r, _ := lambda.CanonicalRegion(native)
	return r
}

// FuzzNormalizeInstances checks that any instances body yields only the
// operator's instances, each with a known normalized state.
func FuzzNormalizeInstances(f *testing.F) {
	states := []providers.InstanceState{providers.StatePending, providers.StateBooting, providers.StateRunning,
		providers.StateInterrupted, providers.StateTerminating, providers.StateTerminated}
	f.Fuzz(func(t *testing.T, body []byte) {
		list, err := lambda.NormalizeInstances(body)
		if err != nil {
			return
		}
		for _, in := range list {
			if !providers.IsOperatorMachine(in.Name) || in.Spot || in.Provider != providers.LambdaLabs {
				t.Fatalf("instance %+v should not be listed", in)
			}
			if !slices.Contains(states, in.State) || in.State != lambda.NormalizeState(in.NativeState) {
				t.Fatalf("instance %+v has an inconsistent state", in)
			}
		}
	})
}

// FuzzClassifyResponse checks that every non-2xx response becomes a
// classified error, that 429s always carry a wait, and that 2xx never fail.
func FuzzClassifyResponse(f *testing.F) {
	classes := []providers.ErrorClass{providers.ClassCapacity, providers.ClassQuota, providers.ClassUnauthorized,
		providers.ClassRateLimited, providers.ClassNotFound, providers.ClassInvalid, providers.ClassTransient}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		err := lambda.ClassifyResponse(status, h, body, now)
		if status >= 200 && status < 300 {
			if err != nil {
				t.Fatalf("2xx classified as %v", err)
			}
			return
		}
		var pe *providers.Error
		if !errors.As(err, &pe) {
			t.Fatalf("status %d: error %v is not a *providers.Error", status, err)
		}
		if !slices.Contains(classes, pe.Class) {
			t.Fatalf("unknown class %q", pe.Class)
		}
		if status == http.StatusTooManyRequests && (pe.Class != providers.ClassRateLimited || pe.RetryAfter <= 0) {
			t.Fatalf("429 gave %+v", pe)
		}
		// Messages are bounded (512 bytes and "...") and single-line.
		if pe.RetryAfter < 0 || len(pe.Message) > 515 || len(pe.Code) > 515 || strings.ContainsAny(pe.Message+pe.Code, "\n\r\x00") {
			t.Fatalf("bad error fields: %+v", pe)
		}
		_ = pe.Error()
	})
}
