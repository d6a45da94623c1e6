package runpod

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

// maxMessage bounds the provider text copied into an error.
const maxMessage = 512

// capacityPhrases are what a createPod 400 says when no machine of the
// requested GPU type is free in the requested data centers.
//
// RunPod's REST v2 spec (createPod's description) says capacity exhaustion
// is a 400 that "currently carries no machine-readable code of its own — only
// a human-readable detail", and it publishes no example of that detail. The
// phrases below are an ASSUMPTION: they are the wording RunPod's pod
// scheduler has used for years behind GraphQL and REST v1, which REST v2
// fronts, as reported verbatim in public issues:
//   - "There are no longer any instances available with the requested
//     specifications. Please refresh and try again." (runpod/runpodctl#189,
//     mlabonne/llm-autoeval#3), also "... with the request specifications.
//     Please try again later." (dstackai/dstack#1740) and "... with enough
//     disk space." (runpod/runpod-python#297);
//   - "This machine does not have the resources to deploy your pod."
//     (TheLastBen/fast-stable-diffusion#2484).
//
// The match is deliberately narrow: any other 400 is ClassInvalid, which
// fails only the request that sent it, whereas ClassCapacity marks the
// offering unavailable for every tenant; a broad match would let one
// tenant's bad image or args take an offering away from the others. Should
// RunPod word capacity differently in v2, such launches fail as invalid
// instead of failing over: add the new wording here.
var capacityPhrases = []string{
	"no longer any instances available",
	"does not have the resources to deploy",
}

// ClassifyResponse turns a RunPod REST v2 answer into a *providers.Error, or
// nil for a 2xx. Errors are RFC 9457 application/problem+json documents
// {title, status, detail, errors[]} (the spec's ErrorResponse); the class
// comes from the status, as createPod's description of its failures says:
//
//   - 400: a request that breaks a rule, or no capacity for this GPU type and
//     data center; capacity is told apart by its detail (capacityPhrases),
//     everything else is ClassInvalid;
//   - 402 (insufficient balance; "no candidate will succeed"): ClassQuota;
//   - 401, 403: ClassUnauthorized;
//   - 404: ClassNotFound;
//   - 409 (an action not valid for the pod's status, a cluster member pod)
//     and 422 (the body does not match the contract; "never retry"):
//     ClassInvalid;
//   - 429: ClassRateLimited after Retry-After (integer seconds on this API),
//     else the reset time of the exhausted window of the RateLimit header,
//     else providers.DefaultRetryAfter;
//   - 5xx: ClassTransient, with Retry-After when a 503 sends one. A 5xx to a
//     create is ambiguous: RunPod has answered 500 after creating the pod.
//
// now resolves an HTTP-date Retry-After. It is the adapter's
// providers.Classifier: the Caller names the operation and scrubs the key,
// should RunPod ever echo it.
func ClassifyResponse(status int, header http.Header, body []byte, now time.Time) error {
	if status >= 200 && status < 300 {
		return nil
	}
	msg, detail := ErrorMessage(body)
	e := &providers.Error{Provider: providers.RunPod, HTTPStatus: status, Message: msg, Class: providers.ClassForStatus(status)}
	switch {
	case status == http.StatusTooManyRequests:
		e.RetryAfter = providers.ParseRetryAfter(header, now)
		if e.RetryAfter <= 0 {
			e.RetryAfter = rateLimitReset(header)
		}
		if e.RetryAfter <= 0 {
			e.RetryAfter = providers.DefaultRetryAfter
		}
	case status >= 500:
		e.RetryAfter = providers.ParseRetryAfter(header, now)
	case status == http.StatusPaymentRequired:
		e.Class = providers.ClassQuota
	case status == http.StatusBadRequest && isCapacity(detail):
		e.Class = providers.ClassCapacity
	}
	return e
}

// isCapacity reports whether a 400's detail is a capacity miss.
func isCapacity(detail string) bool {
	lower := strings.ToLower(detail)
	for _, p := range capacityPhrases {
		if strings.Contains(lower, p) {
			return true
		}
	}
	return false
}

// rateLimitReset reads the RateLimit header RunPod sends (IETF
// ratelimit-headers draft, e.g. `"minute";r=0;t=12, "hour";r=2800;t=1812`)
// and returns the longest reset time t of a window with no requests left
// (r=0), or 0 when none is exhausted or the header is absent or unreadable.
func rateLimitReset(h http.Header) time.Duration {
	var longest time.Duration
	for _, v := range h.Values("RateLimit") {
		for _, member := range strings.Split(v, ",") {
			params := strings.Split(member, ";")
			remaining, reset := -1, -1
			for _, p := range params[1:] {
				k, val, ok := strings.Cut(strings.TrimSpace(p), "=")
				if !ok {
					continue
				}
				n, err := strconv.Atoi(strings.TrimSpace(val))
				if err != nil || n < 0 {
					continue
				}
				switch k {
				case "r":
					remaining = n
				case "t":
					reset = n
				}
			}
			if remaining == 0 && reset > 0 && reset < math.MaxInt32 {
				longest = max(longest, time.Duration(reset)*time.Second)
			}
		}
	}
	return longest
}

// ErrorMessage extracts the human-readable text of a RunPod error body:
// "title: detail: errors..." for a problem document, else the body itself
// (a proxy's plain-text or HTML page). detail is the problem's detail alone
// ("" when there is none). Both are valid UTF-8 and at most maxMessage bytes.
func ErrorMessage(body []byte) (msg, detail string) {
	body = bytes.TrimSpace(body)
	msg = string(body)
	if len(body) > 0 && body[0] == '{' {
		if m, d, ok := problemMessage(body); ok {
			msg, detail = m, d
		}
	}
	return clean(msg), clean(detail)
}

func clean(s string) string {
	return providers.TruncateMessage(strings.ToValidUTF8(s, "\uFFFD"), maxMessage)
}

// problemMessage reads an RFC 9457 problem document.
func problemMessage(body []byte) (msg, detail string, ok bool) {
	var doc struct {
		Title  string          `json:"title"`
		Detail string          `json:"detail"`
		Errors json.RawMessage `json:"errors"`
	}
	if json.Unmarshal(body, &doc) != nil {
		return "", "", false
	}
	parts := make([]string, 0, 4)
	for _, m := range []string{doc.Title, doc.Detail} {
		if m != "" {
			parts = append(parts, m)
		}
	}
	var problems []string
	if len(doc.Errors) > 0 && json.Unmarshal(doc.Errors, &problems) == nil {
		for _, p := range problems {
			if p != "" {
				parts = append(parts, p)
			}
		}
	}
	if len(parts) == 0 {
		return "", "", false
	}
	return strings.Join(parts, ": "), doc.Detail, true
}
