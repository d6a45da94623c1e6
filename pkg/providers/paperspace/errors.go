package paperspace

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/solanyn/gpu-operator/pkg/providers"
	"github.com/solanyn/gpu-operator/pkg/providers/paperspace/paperspaceapi"
)

// defaultRetryAfter is how long a 429 without a usable Retry-After blocks calls.
const defaultRetryAfter = time.Second

// maxMessage bounds the provider message copied into an error.
const maxMessage = 512

// ClassifyResponse turns a non-2xx Paperspace answer into a *providers.Error
// (nil for a 2xx).
// Paperspace's error body is {"message", "code", "details"?}; its codes are
// the generic tRPC ones (BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND,
// TOO_MANY_REQUESTS, INTERNAL_SERVER_ERROR, ...), so what went wrong is read
// from the status first and the message second:
//
//   - 429 or code TOO_MANY_REQUESTS: ClassRateLimited, RetryAfter from the
//     Retry-After header (1s when absent);
//   - 401 or code UNAUTHORIZED: ClassUnauthorized;
//   - 5xx and 408: ClassTransient;
//   - any other 4xx whose code or message speaks of capacity ("capacity",
//     "out of stock", "not available", "unavailable", "no availability"):
//     ClassCapacity;
//   - any other 4xx whose code or message speaks of quota ("quota", "limit"
//     other than "rate limit"): ClassQuota;
//   - 403: ClassUnauthorized; 404: ClassNotFound; other 4xx: ClassInvalid.
//
// now reads the Retry-After date form. ClassifyResponse is the adapter's
// providers.Classifier: the Caller names the operation.
func ClassifyResponse(status int, header http.Header, body []byte, now time.Time) error {
	if status >= 200 && status < 300 {
		return nil
	}
	e := &providers.Error{Provider: providers.Paperspace, HTTPStatus: status}
	var eb paperspaceapi.Error
	if json.Unmarshal(body, &eb) == nil {
		e.Code, e.Message = eb.Code, eb.Message
	} else {
		e.Message = strings.TrimSpace(string(body))
	}
	e.Code = truncate(e.Code, 64)
	e.Message = truncate(e.Message, maxMessage)
	text := strings.ToLower(e.Code + " " + e.Message)
	switch {
	case status == http.StatusTooManyRequests || e.Code == "TOO_MANY_REQUESTS":
		e.Class = providers.ClassRateLimited
		e.RetryAfter = providers.ParseRetryAfter(header, now)
		if e.RetryAfter <= 0 {
			e.RetryAfter = defaultRetryAfter
		}
	case status == http.StatusUnauthorized || e.Code == "UNAUTHORIZED":
		e.Class = providers.ClassUnauthorized
	case status >= 500 || status == http.StatusRequestTimeout:
		e.Class = providers.ClassTransient
		e.RetryAfter = providers.ParseRetryAfter(header, now)
	case containsAny(text, "capacity", "out of stock", "not available", "unavailable", "no availability"):
		e.Class = providers.ClassCapacity
	case strings.Contains(text, "quota") || strings.Contains(strings.ReplaceAll(text, "rate limit", ""), "limit"):
		e.Class = providers.ClassQuota
	default:
		e.Class = providers.ClassForStatus(status)
	}
	return e
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// truncate shortens s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
