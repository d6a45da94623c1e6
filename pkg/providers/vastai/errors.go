package vastai

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/solanyn/gpu-operator/pkg/providers"
)

// maxMessage bounds the provider text copied into an error.
const maxMessage = 512

// Vast.ai's error codes (the "error" field of its error bodies) that the
// classification reads. Sources: openapi.yaml's createInstance (400 enum
// invalid_args, invalid_price, no_ssh_key_for_vm; 404 and 410 "no_such_ask"
// in the message or the code), showInstance's 401 example (auth_error,
// "Invalid user key"), changeBid (404 no_such_instance) and destroyInstance
// (404 not_found).
const (
	CodeAuth           = "auth_error"
	CodeInvalidArgs    = "invalid_args"
	CodeInvalidPrice   = "invalid_price"
	CodeNoSSHKeyForVM  = "no_ssh_key_for_vm"
	CodeNoSuchAsk      = "no_such_ask"
	CodeNoSuchInstance = "no_such_instance"
	CodeNotFound       = "not_found"
	// CodeInsufficientCredit is an ASSUMPTION: the spec documents no answer
	// for an account whose credit cannot cover another instance (its
	// pricing guide only says "credits required upfront"). The simulator
	// answers it as a 403 with this code; the adapter also recognises
	// messages about insufficient credit or balance (quotaPhrases). Should
	// Vast.ai word it otherwise, such launches fail with the class of their
	// status instead (a 403 is then ClassUnauthorized).
	CodeInsufficientCredit = "insufficient_credit"
)

// quotaPhrases are what an answer about the account's credit says.
var quotaPhrases = []string{"insufficient credit", "insufficient funds", "credit balance", "not enough credit"}

// ClassifyResponse turns a Vast.ai answer into a *providers.Error, or nil
// for a 2xx. Vast.ai's errors are {"success": false, "error": code, "msg":
// text} (the spec's Error schema; a create's also carries "ask_id"), and its
// 429s {"detail": text}. Classes, checked in this order:
//
//   - 429: ClassRateLimited after Retry-After (the spec declares no header;
//     one that is sent is honoured), else providers.DefaultRetryAfter;
//   - 5xx: ClassTransient, with Retry-After when one is sent;
//   - 401, code auth_error, or a message saying "Invalid user key":
//     ClassUnauthorized. The spec's search (POST /api/v0/bundles) answers a
//     bad key with a 404 ("Unauthorized - invalid or missing API key"), so
//     the body, not the status, decides;
//   - code insufficient_credit or a message about credit (quotaPhrases):
//     ClassQuota;
//   - 410, code no_such_ask or a message naming no_such_ask (the spec's 404
//     to a create: "no_such_ask Instance type by id 1234567 is not
//     available."), or code invalid_price (a bid below what the machine
//     takes now: the market moved since the catalog was read): ClassCapacity,
//     so the controller fails over to the next offer;
//   - 403 with code invalid_args (the spec's "Offer ... is not your own"):
//     ClassInvalid; any other 403: ClassUnauthorized;
//   - 404: ClassNotFound (destroy's not_found, changeBid's no_such_instance);
//   - any other 4xx (invalid_args, no_ssh_key_for_vm, invalid_request,
//     invalid_token): ClassInvalid.
//
// now resolves an HTTP-date Retry-After. It is the adapter's
// providers.Classifier: the Caller names the operation and scrubs the key.
func ClassifyResponse(status int, header http.Header, body []byte, now time.Time) error {
	if status >= 200 && status < 300 {
		return nil
	}
	code, msg := ErrorBody(body)
	lower := strings.ToLower(msg)
	e := &providers.Error{Provider: providers.VastAI, HTTPStatus: status, Code: code, Message: msg, Class: providers.ClassForStatus(status)}
	switch {
	case status == http.StatusTooManyRequests:
		e.Class = providers.ClassRateLimited
		e.RetryAfter = providers.ParseRetryAfter(header, now)
		if e.RetryAfter <= 0 {
			e.RetryAfter = providers.DefaultRetryAfter
		}
	case status >= 500:
		e.Class = providers.ClassTransient
		e.RetryAfter = providers.ParseRetryAfter(header, now)
	case status == http.StatusUnauthorized || code == CodeAuth || strings.Contains(lower, "invalid user key"):
		e.Class = providers.ClassUnauthorized
	case code == CodeInsufficientCredit || containsAny(lower, quotaPhrases):
		e.Class = providers.ClassQuota
	case status == http.StatusGone || code == CodeNoSuchAsk || strings.Contains(lower, CodeNoSuchAsk) || code == CodeInvalidPrice:
		e.Class = providers.ClassCapacity
	case status == http.StatusForbidden && code == CodeInvalidArgs:
		e.Class = providers.ClassInvalid
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

// ErrorBody reads a Vast.ai error body: its code ("error") and its text
// ("msg", or a 429's "detail"); a body that is not such a document (a
// proxy's page) is the text itself. Both are valid UTF-8, at most
// maxMessage bytes.
func ErrorBody(body []byte) (code, msg string) {
	body = bytes.TrimSpace(body)
	msg = string(body)
	if len(body) > 0 && body[0] == '{' {
		var doc struct {
			Error  json.RawMessage `json:"error"`
			Msg    string          `json:"msg"`
			Detail string          `json:"detail"`
		}
		if json.Unmarshal(body, &doc) == nil {
			var s string
			if json.Unmarshal(doc.Error, &s) == nil {
				code = s
			}
			switch {
			case doc.Msg != "":
				msg = doc.Msg
			case doc.Detail != "":
				msg = doc.Detail
			case code != "":
				msg = ""
			}
		}
	}
	return clean(code), clean(msg)
}

func clean(s string) string {
	return providers.TruncateMessage(strings.ToValidUTF8(s, "\uFFFD"), maxMessage)
}
