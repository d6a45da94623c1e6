package runpod_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"unicode/utf8"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod/runpodv1"
)

// The seed corpora live in testdata/fuzz/<FuzzName>/.

// FuzzClassifyResponse feeds arbitrary statuses, Retry-After values and
// bodies (plain text, problem+json, GraphQL) to ClassifyResponse.
func FuzzClassifyResponse(f *testing.F) {
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		err := runpod.ClassifyResponse(status, h, body, now)
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
		if pe.Class == providers.ClassRateLimited && pe.RetryAfter <= 0 {
			t.Fatalf("429 without a positive RetryAfter")
		}
		if pe.RetryAfter < 0 {
			t.Fatalf("negative RetryAfter %v", pe.RetryAfter)
		}
		if (pe.Class == providers.ClassCapacity || pe.Class == providers.ClassQuota) && (status < 400 || status >= 500) {
			t.Fatalf("status %d classified %s", status, pe.Class)
		}
		if !utf8.ValidString(pe.Message) || len(pe.Message) > 512 {
			t.Fatalf("message of %d bytes, valid UTF-8 %v", len(pe.Message), utf8.ValidString(pe.Message))
		}
	})
}

// FuzzNormalizeOffers feeds arbitrary catalog and GraphQL bodies through the
// offer pipeline; whatever gets through must be a well-formed offer.
func FuzzNormalizeOffers(f *testing.F) {
	counts := []int{1, 2, 4, 8}
	f.Fuzz(func(t *testing.T, catalog, graphql []byte) {
		quotes, err := runpod.DecodeQuotes(graphql)
		if err != nil {
			if pe, ok := err.(*providers.Error); ok && !utf8.ValidString(pe.Message) {
				t.Fatalf("invalid UTF-8 in %q", pe.Message)
			}
			quotes = nil
		}
		offers, err := runpod.NormalizeOffers(catalog, quotes, counts)
		if err != nil {
			return
		}
		checkOffers(t, offers, counts)
	})
}

// FuzzNormalizePod decodes arbitrary pod JSON and normalizes it.
func FuzzNormalizePod(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		var p runpodv1.Pod
		if json.Unmarshal(body, &p) != nil {
			return
		}
		inst := runpod.NormalizePod(p)
		switch inst.State {
		case providers.StatePending, providers.StateBooting, providers.StateRunning, providers.StateInterrupted,
			providers.StateTerminated, providers.StateFailed:
		default:
			t.Fatalf("state %q", inst.State)
		}
		if inst.State == providers.StateInterrupted && !inst.Spot {
			t.Fatal("on-demand pod interrupted")
		}
		if inst.State == providers.StateRunning && inst.PublicIP == "" {
			t.Fatal("running without an IP")
		}
		if inst.Provider != providers.RunPod {
			t.Fatalf("provider %q", inst.Provider)
		}
	})
}
