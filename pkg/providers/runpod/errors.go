package runpod

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

// defaultRetryAfter is how long to back off after a 429 that names no
// Retry-After (RunPod documents the header, but a missing one must not make
// the adapter retry at once).
const defaultRetryAfter = time.Second

// maxMessage bounds the provider text copied into an error.
const maxMessage = 512

// RunPod reports capacity exhaustion and account limits as plain 400s with no
// machine-readable code (REST v1 documents 400/401/404 with text bodies only;
// v2 sends application/problem+json whose detail is the same kind of text).
// The class is therefore read from the text. Quota phrases are checked first
// so that "not enough funds" is a quota problem, not a capacity one.
var (
	// quotaPhrases mark account limits: pod quotas, spend limits, balance.
	quotaPhrases = []string{
		"quota",
		"limit", // "spend limit", "pod limit reached", "limit exceeded"
		"insufficient funds",
		"not enough funds",
		"insufficient balance",
		"balance is too low",
		"low balance",
	}
	// capacityPhrases mark "nothing of that kind free right now", e.g. RunPod's
	// "There are no longer any instances available with the requested
	// specifications. Please refresh and try again." and GraphQL's "This
	// machine does not have the resources to deploy your pod."
	capacityPhrases = []string{
		"no longer any instances available",
		"no instances currently available",
		"no instances available",
		"no available",
		"not enough",
		"capacity",
		"does not have the resources",
		"unavailable",
		"not available",
		"out of stock",
		"sold out",
	}
	// authPhrases mark credential failures reported inside a GraphQL 200.
	authPhrases = []string{"unauthorized", "unauthenticated", "not authorized", "forbidden", "api key", "authentication"}
	// rateLimitPhrases mark throttling reported inside a GraphQL body.
	rateLimitPhrases = []string{"rate limit", "too many requests"}
)

// ClassifyResponse turns a RunPod HTTP response into a *providers.Error, or
// nil for a 2xx. It understands all three of RunPod's error formats: REST v1
// plain text, REST v2 application/problem+json {title, status, detail,
// errors[]} and GraphQL {errors: [{message}]}. now resolves an HTTP-date
// Retry-After. It is the adapter's providers.Classifier: the Caller names
// the operation and scrubs the key, should RunPod ever echo it.
func ClassifyResponse(status int, header http.Header, body []byte, now time.Time) error {
	if status >= 200 && status < 300 {
		return nil
	}
	msg := ErrorMessage(body)
	e := &providers.Error{Provider: providers.RunPod, HTTPStatus: status, Message: msg, Class: providers.ClassForStatus(status)}
	switch {
	case status == http.StatusTooManyRequests:
		e.RetryAfter = providers.ParseRetryAfter(header, now)
		if e.RetryAfter <= 0 {
			e.RetryAfter = defaultRetryAfter
		}
	case status >= 500:
		// A 503 may say when to come back; the class stays transient.
		e.RetryAfter = providers.ParseRetryAfter(header, now)
	case e.Class == providers.ClassInvalid && status >= 400:
		// Only a 4xx rejection can mean "no capacity" or "over quota".
		e.Class = classifyText(msg, providers.ClassInvalid)
	}
	return e
}

// classifyText reads a quota or capacity class from provider text, falling
// back to def.
func classifyText(msg string, def providers.ErrorClass) providers.ErrorClass {
	lower := strings.ToLower(msg)
	switch {
	case containsAny(lower, quotaPhrases):
		return providers.ClassQuota
	case containsAny(lower, capacityPhrases):
		return providers.ClassCapacity
	}
	return def
}

// classifyGraphQL classifies the errors RunPod's GraphQL API returns with an
// HTTP 200.
func classifyGraphQL(op, msg string) error {
	lower := strings.ToLower(msg)
	e := &providers.Error{Provider: providers.RunPod, Operation: op, HTTPStatus: http.StatusOK, Message: msg}
	switch {
	case containsAny(lower, authPhrases):
		e.Class = providers.ClassUnauthorized
	case containsAny(lower, rateLimitPhrases):
		e.Class, e.RetryAfter = providers.ClassRateLimited, defaultRetryAfter
	default:
		e.Class = classifyText(msg, providers.ClassInvalid)
	}
	return e
}

func containsAny(s string, subs []string) bool {
	for _, sub := range subs {
		if strings.Contains(s, sub) {
			return true
		}
	}
	return false
}

// graphQLErrors is the error part of a GraphQL response.
type graphQLErrors struct {
	Errors []struct {
		Message string `json:"message"`
	} `json:"errors"`
}

// joined returns the messages of a GraphQL error list, "" when there are none.
func (g graphQLErrors) joined() string {
	msgs := make([]string, 0, len(g.Errors))
	for _, e := range g.Errors {
		if e.Message != "" {
			msgs = append(msgs, e.Message)
		}
	}
	return strings.Join(msgs, "; ")
}

// ErrorMessage extracts the human-readable text of a RunPod error body: the
// title, detail and validation errors of a v2 problem document, the messages
// of a GraphQL error list, the message of a {"message"|"error": ...} object,
// or else the (plain-text v1) body itself. The result is valid UTF-8 and at
// most maxMessage bytes long.
func ErrorMessage(body []byte) string {
	body = bytes.TrimSpace(body)
	msg := string(body)
	if len(body) > 0 && body[0] == '{' {
		if m, ok := jsonMessage(body); ok {
			msg = m
		}
	}
	return truncate(strings.ToValidUTF8(msg, "\uFFFD"), maxMessage)
}

// jsonMessage reads the message of a JSON error body in any of RunPod's
// shapes. "errors" is a list of strings in a v2 problem document and a list
// of {message} objects in a GraphQL response, so it is decoded in two steps.
func jsonMessage(body []byte) (string, bool) {
	var doc struct {
		Title   string          `json:"title"`
		Detail  string          `json:"detail"`
		Errors  json.RawMessage `json:"errors"`
		Message string          `json:"message"`
		Error   string          `json:"error"`
	}
	if json.Unmarshal(body, &doc) != nil {
		return "", false
	}
	parts := make([]string, 0, 4)
	for _, m := range []string{doc.Title, doc.Detail} {
		if m != "" {
			parts = append(parts, m)
		}
	}
	if len(doc.Errors) > 0 {
		var problems []string
		var gql graphQLErrors
		if json.Unmarshal(doc.Errors, &problems) == nil {
			parts = append(parts, problems...)
		} else if json.Unmarshal(doc.Errors, &gql.Errors) == nil {
			if m := gql.joined(); m != "" {
				parts = append(parts, m)
			}
		}
	}
	for _, m := range []string{doc.Message, doc.Error} {
		if m != "" {
			parts = append(parts, m)
		}
	}
	if len(parts) == 0 {
		return "", false
	}
	return strings.Join(parts, ": "), true
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut
// with an ellipsis.
func truncate(s string, n int) string {
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
