package providers

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"
)

// ErrorClass is what the controller can do about a provider error.
type ErrorClass string

const (
	// ClassCapacity: the provider has no machine of that type in that region now.
	ClassCapacity ErrorClass = "InsufficientCapacity"
	// ClassQuota: the account may not run more of it.
	ClassQuota ErrorClass = "QuotaExceeded"
	// ClassUnauthorized: the credentials are missing, wrong or the account inactive.
	ClassUnauthorized ErrorClass = "Unauthorized"
	// ClassRateLimited: too many calls; wait RetryAfter.
	ClassRateLimited ErrorClass = "RateLimited"
	// ClassNotFound: the object does not exist.
	ClassNotFound ErrorClass = "NotFound"
	// ClassInvalid: the request is malformed; retrying cannot help.
	ClassInvalid ErrorClass = "InvalidRequest"
	// ClassTransient: 5xx, timeouts, connection errors; retry may help.
	ClassTransient ErrorClass = "Transient"
)

// Error is a classified provider error. It never carries credentials.
type Error struct {
	Provider  string
	Operation string
	Class     ErrorClass
	// HTTPStatus is the response status, 0 when no response arrived.
	HTTPStatus int
	// Code is the provider's own error code when it sends one.
	Code    string
	Message string
	// RetryAfter is set for ClassRateLimited (and 503s that send it).
	RetryAfter time.Duration
	// Err is the underlying transport error, if any.
	Err error
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("%s %s: %s", e.Provider, e.Operation, e.Class)
	if e.HTTPStatus != 0 {
		msg += fmt.Sprintf(" (HTTP %d", e.HTTPStatus)
		if e.Code != "" {
			msg += " " + e.Code
		}
		msg += ")"
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.RetryAfter > 0 {
		msg += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	return msg
}

func (e *Error) Unwrap() error { return e.Err }

// ClassOf returns the class of a provider error, ClassTransient for an
// unclassified non-nil error and "" for nil.
func ClassOf(err error) ErrorClass {
	if err == nil {
		return ""
	}
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Class
	}
	return ClassTransient
}

// IsClass reports whether err is a provider error of class c.
func IsClass(err error, c ErrorClass) bool { return err != nil && ClassOf(err) == c }

// RetryAfterOf returns how long the provider asked the caller to wait.
func RetryAfterOf(err error) (time.Duration, bool) {
	var pe *Error
	if errors.As(err, &pe) && pe.RetryAfter > 0 {
		return pe.RetryAfter, true
	}
	return 0, false
}

// ClassForStatus is the default class of an HTTP status when the provider's
// body says nothing more specific.
func ClassForStatus(status int) ErrorClass {
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return ClassUnauthorized
	case status == http.StatusNotFound:
		return ClassNotFound
	case status == http.StatusTooManyRequests:
		return ClassRateLimited
	case status >= 500 || status == http.StatusRequestTimeout:
		return ClassTransient
	default:
		return ClassInvalid
	}
}

// ParseRetryAfter reads a Retry-After header (delta-seconds or HTTP date).
func ParseRetryAfter(h http.Header, now time.Time) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs >= 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// TruncateMessage cuts provider text to at most n bytes on a rune boundary,
// marking a cut with an ellipsis, so a provider's answer quoted in an error
// stays short.
func TruncateMessage(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ellipsis = "…"
	n -= len(ellipsis)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + ellipsis
}
