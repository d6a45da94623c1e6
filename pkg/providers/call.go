package providers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/utils/clock"
)

// Defaults every adapter shares (the request rates are provider facts and
// each adapter's own).
const (
	// DefaultCallTimeout bounds one HTTP exchange, request to last body byte.
	DefaultCallTimeout = 30 * time.Second
	// DefaultMaxBody is the largest response body read.
	DefaultMaxBody = 64 << 20
	// DefaultRetryAfter is the wait assumed after a rate-limited answer that
	// names none.
	DefaultRetryAfter = time.Second
)

// Classifier turns a provider's non-2xx answer into a classified error,
// normally a *Error with Provider, Class, HTTPStatus and, where the body has
// them, Code and Message; RetryAfter for ClassRateLimited. now reads an
// HTTP-date Retry-After. The Caller fills in Operation; anything else than a
// *Error counts as ClassTransient.
type Classifier func(status int, header http.Header, body []byte, now time.Time) error

// OrDefault returns def for the zero value and v otherwise. It is how every
// adapter reads its Config: zero takes the adapter's default, a negative
// rate, interval or timeout turns the limit off.
func OrDefault[T int64 | float64 | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// CallConfig configures a Caller. Its values are literal: a zero or negative
// rate, interval, timeout or cap is no limit at all (adapters map their own
// zero values to their defaults with OrDefault first).
type CallConfig struct {
	// Provider names the provider in every error (LambdaLabs, ...).
	Provider string
	// Key returns the current API key. It is called for every request, so
	// a rotated Secret takes effect at once. The key is sent only as
	// "Authorization: Bearer <key>"; it is never logged, and it is scrubbed
	// from every error the Caller returns.
	Key func() string
	// Classify reads the provider's error bodies.
	Classify Classifier
	// HTTPClient sends the requests (nil: a new http.Client).
	HTTPClient *http.Client
	// RequestsPerSecond limits all calls client-side, with a burst of the
	// rate rounded up. The limiter runs on real time.
	RequestsPerSecond float64
	// LaunchInterval allows one launch (a CallLaunch) per interval, on top of
	// RequestsPerSecond. A launch whose slot is in the future fails at once.
	LaunchInterval time.Duration
	// CallTimeout bounds each HTTP exchange once the call has its turn.
	CallTimeout time.Duration
	// MaxBody caps the response body read, in bytes.
	MaxBody int64
	// Clock times Retry-After windows (nil: the real clock).
	Clock clock.PassiveClock
}

// Caller is one provider's HTTP call layer; every adapter sends all of its
// calls through one. It is the HttpRequestDoer of the adapter's generated
// clients, so no request can skip it, and per request it:
//
//  1. fails with ClassUnauthorized, sending nothing, when Key returns "";
//  2. fails with ClassRateLimited and the time left, sending nothing, while
//     the Retry-After of the provider's last rate-limited answer runs;
//  3. for a launch (CallLaunch), takes the launch slot or fails at once with
//     ClassRateLimited and the wait for the next slot;
//  4. waits for its turn at the rate limiter if the wait fits in the
//     context's deadline and in CallTimeout, and otherwise fails at once
//     with ClassRateLimited and the wait as RetryAfter;
//  5. sets the bearer key and sends under CallTimeout;
//  6. reads the body up to MaxBody, classifies a non-2xx answer with the
//     provider's Classifier, and after a rate-limited answer blocks every
//     call until its Retry-After (DefaultRetryAfter if it names none) has
//     passed on the Clock.
//
// Every error it returns is a *Error of the provider's, ClassTransient for
// transport failures, timeouts and unreadable bodies. A Caller is safe for
// concurrent use.
type Caller struct {
	provider string
	key      func() string
	classify Classifier
	client   *http.Client
	clock    clock.PassiveClock
	// pace is the limiters' time: real time (a test may set a fake one).
	pace     clock.Clock
	limiter  *rate.Limiter // nil: unlimited
	launches *rate.Limiter // nil: unlimited
	timeout  time.Duration // <= 0: none
	maxBody  int64         // <= 0: no cap

	mu           sync.Mutex
	blockedUntil time.Time // no call before this (the provider's Retry-After)
}

// NewCaller builds a Caller.
func NewCaller(cfg CallConfig) (*Caller, error) {
	switch {
	case cfg.Provider == "":
		return nil, errors.New("providers: CallConfig.Provider is required")
	case cfg.Key == nil:
		return nil, fmt.Errorf("%s: Key is required", cfg.Provider)
	case cfg.Classify == nil:
		return nil, fmt.Errorf("%s: CallConfig.Classify is required", cfg.Provider)
	case math.IsNaN(cfg.RequestsPerSecond):
		return nil, fmt.Errorf("%s: RequestsPerSecond is NaN", cfg.Provider)
	}
	c := &Caller{
		provider: cfg.Provider,
		key:      cfg.Key,
		classify: cfg.Classify,
		client:   cfg.HTTPClient,
		clock:    cfg.Clock,
		pace:     clock.RealClock{},
		timeout:  cfg.CallTimeout,
		maxBody:  cfg.MaxBody,
	}
	if c.client == nil {
		c.client = &http.Client{}
	}
	if c.clock == nil {
		c.clock = clock.RealClock{}
	}
	if rps := cfg.RequestsPerSecond; rps > 0 && !math.IsInf(rps, 1) {
		c.limiter = rate.NewLimiter(rate.Limit(rps), int(math.Ceil(rps)))
	}
	if every := cfg.LaunchInterval; every > 0 {
		c.launches = rate.NewLimiter(rate.Every(every), 1)
	}
	return c, nil
}

// Send sends one request, normally a generated client's method bound to its
// arguments; the client must have the Caller as its HttpRequestDoer.
type Send func(ctx context.Context) (*http.Response, error)

// Call makes one API call named op (for errors) and returns the body of its
// 2xx answer or a classified *Error.
func (c *Caller) Call(ctx context.Context, op string, send Send) ([]byte, error) {
	return c.call(ctx, callInfo{op: op}, send)
}

// CallLaunch is Call for a request that creates a machine: it also needs a
// slot of the launch limiter.
func (c *Caller) CallLaunch(ctx context.Context, op string, send Send) ([]byte, error) {
	return c.call(ctx, callInfo{op: op, launch: true}, send)
}

func (c *Caller) call(ctx context.Context, info callInfo, send Send) ([]byte, error) {
	resp, err := send(context.WithValue(ctx, callKey{}, info))
	if err != nil {
		return nil, c.Wrap(info.op, err)
	}
	defer resp.Body.Close()
	// Do has read and capped the body already: hand over its bytes.
	if mb, ok := resp.Body.(*memBody); ok {
		return mb.b, nil
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, c.Wrap(info.op, err)
	}
	return body, nil
}

// Wrap makes err a *Error of the provider's for op: a classified error
// keeps its class, anything else (an adapter's decode failure, a request
// the generated client could not build) is ClassTransient. The current key
// is scrubbed from its text.
func (c *Caller) Wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	var pe *Error
	if !errors.As(err, &pe) {
		pe = &Error{Provider: c.provider, Class: ClassTransient, Err: err}
	}
	if pe.Operation == "" {
		pe.Operation = op
	}
	return redact(pe, c.key())
}

// callKey carries a callInfo in a request's context from Call to Do.
type callKey struct{}

type callInfo struct {
	op     string
	launch bool
}

// Do implements the generated clients' HttpRequestDoer (see Caller). A 2xx
// response comes back with its body in memory; any other answer is an error.
func (c *Caller) Do(req *http.Request) (*http.Response, error) {
	info, ok := req.Context().Value(callKey{}).(callInfo)
	if !ok {
		info.op = req.Method + " " + req.URL.Path
	}
	key := c.key()
	resp, err := c.do(req, info, key)
	if err != nil {
		return nil, redact(err, key)
	}
	return resp, nil
}

func (c *Caller) do(req *http.Request, info callInfo, key string) (*http.Response, error) {
	sent := false
	defer func() {
		// The transport closes the body of a request it was given.
		if !sent && req.Body != nil {
			req.Body.Close()
		}
	}()
	if key == "" {
		return nil, &Error{Provider: c.provider, Operation: info.op, Class: ClassUnauthorized, Message: "no API key configured"}
	}
	if err := c.checkBlocked(info.op); err != nil {
		return nil, err
	}
	var (
		launchSlot *rate.Reservation
		reservedAt time.Time
	)
	if info.launch && c.launches != nil {
		reservedAt = c.pace.Now()
		launchSlot = c.launches.ReserveN(reservedAt, 1)
		if d := launchSlot.DelayFrom(reservedAt); d > 0 {
			launchSlot.CancelAt(reservedAt)
			return nil, c.rateLimited(info.op, d, "client-side launch limit; no request sent")
		}
	}
	giveBack := func() {
		if launchSlot != nil {
			// As of its own time: a slot already due is not given back later.
			launchSlot.CancelAt(reservedAt)
		}
	}
	if err := c.waitTurn(req.Context(), info.op); err != nil {
		giveBack()
		return nil, err
	}
	// A rate-limited answer may have arrived while this call waited.
	if err := c.checkBlocked(info.op); err != nil {
		giveBack()
		return nil, err
	}

	ctx := req.Context()
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel() // after the body is read below
	}
	out := req.Clone(ctx)
	out.Header.Set("Authorization", "Bearer "+key)
	sent = true
	resp, err := c.client.Do(out)
	if err != nil {
		return nil, &Error{Provider: c.provider, Operation: info.op, Class: ClassTransient, Err: err}
	}
	body, tooLarge, err := c.readBody(resp.Body, resp.ContentLength)
	resp.Body.Close()
	if err != nil {
		return nil, &Error{Provider: c.provider, Operation: info.op, Class: ClassTransient, HTTPStatus: resp.StatusCode, Err: err}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, c.classified(info.op, resp, body)
	}
	if tooLarge {
		return nil, &Error{Provider: c.provider, Operation: info.op, Class: ClassTransient, HTTPStatus: resp.StatusCode,
			Message: fmt.Sprintf("response body larger than %d bytes", c.maxBody)}
	}
	resp.Body = &memBody{Reader: bytes.NewReader(body), b: body}
	resp.ContentLength = int64(len(body))
	return resp, nil
}

// memBody is a response body already read into memory; Call takes its bytes
// without copying them again (an instance list can be megabytes).
type memBody struct {
	*bytes.Reader
	b []byte
}

func (*memBody) Close() error { return nil }

// readBody reads up to maxBody bytes and reports whether there was more. A
// declared length within the cap sizes the buffer once, instead of
// io.ReadAll's doubling (which holds up to twice the body while it grows).
func (c *Caller) readBody(r io.Reader, length int64) ([]byte, bool, error) {
	limit := c.maxBody
	if limit <= 0 {
		limit = math.MaxInt64 - 1
	}
	if length > 0 && length <= limit {
		b := make([]byte, length)
		n, err := io.ReadFull(r, b)
		if err == io.ErrUnexpectedEOF {
			err = nil // shorter than declared: what arrived is the body
		}
		if err != nil {
			return b[:n], false, err
		}
		// Nothing may follow the declared length; read one byte to be sure.
		var one [1]byte
		if m, _ := r.Read(one[:]); m == 0 {
			return b[:n], false, nil
		}
		rest, err := io.ReadAll(io.LimitReader(r, limit-length))
		b = append(append(b, one[0]), rest...)
		if int64(len(b)) > limit {
			return b[:limit], true, err
		}
		return b, false, err
	}
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if int64(len(b)) > limit {
		return b[:limit], true, err
	}
	return b, false, err
}

// classified runs the provider's Classifier on a non-2xx answer (a body over
// the cap is classified on its first MaxBody bytes) and starts a Retry-After
// block for a rate-limited one.
func (c *Caller) classified(op string, resp *http.Response, body []byte) error {
	now := c.clock.Now()
	var pe *Error
	if err := c.classify(resp.StatusCode, resp.Header, body, now); !errors.As(err, &pe) {
		// nil for a non-2xx, or not a *Error: the Classifier could not
		// read the answer; the status still says something.
		pe = &Error{Class: ClassForStatus(resp.StatusCode), Err: err}
		if pe.Class == ClassRateLimited {
			pe.RetryAfter = ParseRetryAfter(resp.Header, now)
		}
	}
	if pe.Provider == "" {
		pe.Provider = c.provider
	}
	if pe.HTTPStatus == 0 {
		pe.HTTPStatus = resp.StatusCode
	}
	pe.Operation = op
	if pe.Class == ClassRateLimited {
		if pe.RetryAfter <= 0 {
			pe.RetryAfter = DefaultRetryAfter
		}
		c.block(now.Add(pe.RetryAfter))
	}
	return pe
}

// checkBlocked fails while a Retry-After runs.
func (c *Caller) checkBlocked(op string) error {
	c.mu.Lock()
	until := c.blockedUntil
	c.mu.Unlock()
	if wait := until.Sub(c.clock.Now()); wait > 0 {
		return c.rateLimited(op, wait, "waiting out "+c.provider+"'s Retry-After; no request sent")
	}
	return nil
}

// block refuses calls until until (a later block wins).
func (c *Caller) block(until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if until.After(c.blockedUntil) {
		c.blockedUntil = until
	}
}

// waitTurn waits for the rate limiter if the wait fits in the call's budget
// (the context's deadline and CallTimeout) and fails with ClassRateLimited
// otherwise, giving the slot back.
func (c *Caller) waitTurn(ctx context.Context, op string) error {
	if c.limiter == nil {
		return nil
	}
	now := c.pace.Now()
	r := c.limiter.ReserveN(now, 1)
	d := r.DelayFrom(now)
	if d == 0 {
		return nil
	}
	budget, bounded := c.timeout, c.timeout > 0
	if deadline, ok := ctx.Deadline(); ok {
		if left := time.Until(deadline); !bounded || left < budget {
			budget, bounded = left, true
		}
	}
	if bounded && d > budget {
		r.CancelAt(now)
		return c.rateLimited(op, d, "client-side rate limit; no request sent")
	}
	t := c.pace.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return nil
	case <-ctx.Done():
		r.CancelAt(c.pace.Now())
		return &Error{Provider: c.provider, Operation: op, Class: ClassTransient, Message: "gave up waiting for the rate limiter", Err: ctx.Err()}
	}
}

func (c *Caller) rateLimited(op string, d time.Duration, why string) error {
	return &Error{Provider: c.provider, Operation: op, Class: ClassRateLimited, RetryAfter: d, Message: why}
}

// redact scrubs key from a *Error's text: the provider's code and message
// (a provider may echo a request back) and the underlying error's text.
func redact(err error, key string) error {
	var pe *Error
	if key == "" || !errors.As(err, &pe) {
		return err
	}
	pe.Code = strings.ReplaceAll(pe.Code, key, "[redacted]")
	pe.Message = strings.ReplaceAll(pe.Message, key, "[redacted]")
	if pe.Err != nil && strings.Contains(pe.Err.Error(), key) {
		pe.Err = &redactedError{msg: strings.ReplaceAll(pe.Err.Error(), key, "[redacted]"), err: pe.Err}
	}
	return err
}

// redactedError is an error whose text had the key scrubbed; errors.Is and
// errors.As still see the original.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }
