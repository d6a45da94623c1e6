package runpod_test

import (
	"encoding/json"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod"
	"github.com/solanyn/gpu-operator/pkg/providers/runpod/runpodv2"
)

// The seed corpora live in testdata/fuzz/<FuzzName>/.

// FuzzClassifyResponse feeds arbitrary statuses, Retry-After and RateLimit
// values and bodies (problem+json or anything else) to ClassifyResponse.
func FuzzClassifyResponse(f *testing.F) {
	f.Fuzz(func(t *testing.T, status int, retryAfter string, body []byte) {
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
			h.Set("RateLimit", retryAfter)
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
		if pe.Class == providers.ClassCapacity && status != http.StatusBadRequest {
			t.Fatalf("status %d classified %s", status, pe.Class)
		}
		if pe.Class == providers.ClassQuota && status != http.StatusPaymentRequired {
			t.Fatalf("status %d classified %s", status, pe.Class)
		}
		if !utf8.ValidString(pe.Message) || len(pe.Message) > 512 {
			t.Fatalf("message of %d bytes, valid UTF-8 %v", len(pe.Message), utf8.ValidString(pe.Message))
		}
	})
}

// FuzzNormalizeOffers feeds arbitrary catalog bodies through the offer
// pipeline for both clouds; whatever gets through must be a well-formed offer.
func FuzzNormalizeOffers(f *testing.F) {
	f.Fuzz(func(t *testing.T, catalog []byte) {
		for _, cloud := range []runpod.Cloud{runpod.SecureCloud, runpod.CommunityCloud} {
			offers, err := runpod.NormalizeOffers(catalog, cloud)
			if err != nil {
				return
			}
			checkOffers(t, offers)
		}
	})
}

// FuzzNormalizePod decodes arbitrary pod JSON and normalizes it.
func FuzzNormalizePod(f *testing.F) {
	f.Fuzz(func(t *testing.T, body []byte) {
		var p runpodv2.Pod
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
		if inst.Spot {
			t.Fatal("RunPod sells no spot, yet the pod is spot")
		}
		for _, m := range inst.Ports {
			if m.Port < 1 || m.PublicPort < 0 {
				t.Fatalf("port mapping %+v", m)
			}
		}
		if inst.Provider != providers.RunPod {
			t.Fatalf("provider %q", inst.Provider)
		}
	})
}

// FuzzJoinArgs checks that any argument list survives a POSIX shell's
// splitting of the joined string.
func FuzzJoinArgs(f *testing.F) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		f.Skip("no sh")
	}
	f.Add("a", "b c", "it's")
	f.Fuzz(func(t *testing.T, a, b, c string) {
		args := []string{a, b, c}
		for _, s := range args {
			if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
				return // not representable in an exec'd argument
			}
		}
		out, err := exec.Command(sh, "-c", `eval "set -- $0"; for a in "$@"; do printf '%s\000' "$a"; done`, runpod.JoinArgs(args)).Output()
		if err != nil {
			t.Fatal(err)
		}
		got := strings.Split(string(out), "\x00")
		if got = got[:len(got)-1]; !slices.Equal(got, args) {
			t.Fatalf("%q joined as %q splits into %q", args, runpod.JoinArgs(args), got)
		}
	})
}
