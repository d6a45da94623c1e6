package lambda

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

// Lambda's error codes (the spec's ApiError* schemas) the adapter acts on.
const (
	CodeInsufficientCapacity = "instance-operations/launch/insufficient-capacity"
	CodeQuotaExceeded        = "global/quota-exceeded"
	CodeInvalidAPIKey        = "global/invalid-api-key"
	CodeAccountInactive      = "global/account-inactive"
	CodeObjectDoesNotExist   = "global/object-does-not-exist"
	CodeInvalidParameters    = "global/invalid-parameters"
	CodeInternalError        = "global/internal-error"
)

// defaultRetryAfter is assumed when a 429 carries no usable Retry-After:
// Lambda's published general limit is one request per second.
const defaultRetryAfter = time.Second

// maxMessage bounds how much of a provider message ends up in an error.
const maxMessage = 512

// errorEnvelope is every Lambda error body: {"error": {code, message, suggestion}}.
type errorEnvelope struct {
	Error struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		Suggestion string `json:"suggestion"`
	} `json:"error"`
}

var codeClasses = map[string]providers.ErrorClass{
	CodeInsufficientCapacity: providers.ClassCapacity,
	CodeQuotaExceeded:        providers.ClassQuota,
	CodeInvalidAPIKey:        providers.ClassUnauthorized,
	CodeAccountInactive:      providers.ClassUnauthorized,
	CodeObjectDoesNotExist:   providers.ClassNotFound,
	CodeInvalidParameters:    providers.ClassInvalid,
	CodeInternalError:        providers.ClassTransient,
}

// ClassifyResponse turns a non-2xx Lambda response into a *providers.Error
// and returns nil for a 2xx; it is the adapter's providers.Classifier (the
// Caller names the operation). now is used to read an HTTP-date Retry-After. A 429 is always ClassRateLimited with
// a positive RetryAfter; otherwise Lambda's error code decides, and the HTTP
// status when the code is missing or unknown.
func ClassifyResponse(status int, header http.Header, body []byte, now time.Time) error {
	if status >= 200 && status < 300 {
		return nil
	}
	e := &providers.Error{Provider: providers.LambdaLabs, HTTPStatus: status}
	var env errorEnvelope
	if json.Unmarshal(body, &env) == nil && env.Error.Code != "" {
		e.Code = clean(env.Error.Code)
		msg := env.Error.Message
		if env.Error.Suggestion != "" {
			msg += " (" + env.Error.Suggestion + ")"
		}
		e.Message = clean(msg)
	} else {
		// Not Lambda's envelope (a proxy's HTML page, an empty body): keep a
		// bounded, printable excerpt for the message.
		e.Message = clean(string(body))
	}
	e.RetryAfter = providers.ParseRetryAfter(header, now)
	switch class, known := codeClasses[env.Error.Code]; {
	case status == http.StatusTooManyRequests:
		e.Class = providers.ClassRateLimited
		if e.RetryAfter <= 0 {
			e.RetryAfter = defaultRetryAfter
		}
	case known:
		e.Class = class
	default:
		e.Class = providers.ClassForStatus(status)
	}
	return e
}

// clean makes provider text safe for messages and logs: valid UTF-8, no
// control characters, bounded length.
func clean(s string) string {
	s = strings.ToValidUTF8(s, "")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	s = strings.TrimSpace(s)
	if len(s) > maxMessage {
		cut := maxMessage
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return s
}
