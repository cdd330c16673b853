// Package httpretry is the HTTP plumbing shared by the hosted speech-to-text
// and embedding adapters: bounded retries with exponential backoff and full
// jitter, Retry-After, bounded bodies, and errors that carry a status code and
// the provider's error code but never a response body, a request body or a key.
package httpretry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Sentinels shared by every adapter built on this package; the adapters
// re-export them so callers never import an internal package.
var (
	// ErrRejected: the provider refused the request (a 4xx other than 408 and
	// 429). Sending it again will fail again.
	ErrRejected = errors.New("provider rejected the request")
	// ErrUnavailable: the provider was unreachable, overloaded or failing
	// (transport error, 408, 429, 5xx) and retries ran out. Worth retrying later.
	ErrUnavailable = errors.New("provider unavailable")
	// ErrBadResponse: a 2xx answer that is too large or does not have the
	// documented shape.
	ErrBadResponse = errors.New("provider sent a malformed response")
)

// Defaults. Bodies are bounded so a misbehaving server cannot exhaust memory.
const (
	DefaultMaxAttempts  = 4
	DefaultBaseDelay    = 500 * time.Millisecond
	DefaultMaxDelay     = 20 * time.Second
	DefaultMaxElapsed   = 2 * time.Minute
	DefaultMaxBody      = 8 << 20
	MaxErrorBody        = 4 << 10
	maxCodeLen          = 64
	maxRequestIDLen     = 128
	retryAfterMsHeader  = "Retry-After-Ms" // sent by OpenAI next to Retry-After
	requestIDHeader     = "X-Request-Id"
	deepgramRequestID   = "Dg-Request-Id"
	defaultDialTimeout  = 10 * time.Second
	defaultTLSTimeout   = 10 * time.Second
	defaultIdleConnTime = 90 * time.Second
)

// Policy bounds retries. Zero fields take the defaults above.
type Policy struct {
	MaxAttempts int           // total tries, including the first
	BaseDelay   time.Duration // backoff before the second try is drawn from [0, BaseDelay)
	MaxDelay    time.Duration // cap on one backoff
	// MaxElapsed: no retry is started whose wait would end later than this
	// after the first try began. A try in flight is bounded by the HTTP
	// client's timeout, so a call lasts at most MaxElapsed plus one timeout.
	MaxElapsed time.Duration
	// Sleep waits d or until ctx is done (then it returns ctx.Err()). Tests
	// inject one that records d and returns at once.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now is the clock for Retry-After dates and the elapsed budget.
	Now func() time.Time
	// Jitter returns a uniform value in [0, n); n > 0.
	Jitter func(n int64) int64
}

func (p Policy) withDefaults() Policy {
	if p.MaxAttempts <= 0 {
		p.MaxAttempts = DefaultMaxAttempts
	}
	if p.BaseDelay <= 0 {
		p.BaseDelay = DefaultBaseDelay
	}
	if p.MaxDelay <= 0 {
		p.MaxDelay = DefaultMaxDelay
	}
	if p.MaxElapsed <= 0 {
		p.MaxElapsed = DefaultMaxElapsed
	}
	if p.Sleep == nil {
		p.Sleep = SleepContext
	}
	if p.Now == nil {
		p.Now = time.Now
	}
	if p.Jitter == nil {
		p.Jitter = rand.Int64N
	}
	return p
}

// Backoff is the full-jitter delay before try number attempt+1 (attempt ≥ 1):
// uniform in [0, min(MaxDelay, BaseDelay·2^(attempt-1))).
func (p Policy) Backoff(attempt int) time.Duration {
	p = p.withDefaults()
	ceiling := p.BaseDelay
	for i := 1; i < attempt && ceiling < p.MaxDelay; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, p.MaxDelay)
	if ceiling <= 0 {
		return 0
	}
	return time.Duration(p.Jitter(int64(ceiling)))
}

// SleepContext waits d, or until ctx is done.
func SleepContext(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// NewClient is the default client: overall and connection timeouts, and no
// redirects, because a redirect could carry a key header (Api-Key is not one
// net/http strips) to another host.
func NewClient(timeout time.Duration) *http.Client {
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: defaultDialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          32,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       defaultIdleConnTime,
		TLSHandshakeTimeout:   defaultTLSTimeout,
		ExpectContinueTimeout: time.Second,
	}
	return &http.Client{
		Timeout:   timeout,
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// ErrorInfo is what an adapter may take from an error body: short,
// machine-readable identifiers only, never the message.
type ErrorInfo struct {
	Code      string // provider's error code or type, e.g. "INVALID_ARGUMENT"
	Param     string // the request field the provider blames, e.g. "response_format"
	RequestID string // provider's request id, for support tickets
}

// StatusError is a non-2xx answer. Its text has the provider, the status and
// the provider's code; the body itself is dropped once ErrorInfo is taken.
type StatusError struct {
	Provider   string
	Op         string // e.g. "POST /v1/listen"
	StatusCode int
	Info       ErrorInfo
	RetryAfter time.Duration // the server's Retry-After, 0 if none
	Attempts   int
}

func (e *StatusError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s: HTTP %d", e.Provider, e.Op, e.StatusCode)
	if e.Info.Code != "" {
		fmt.Fprintf(&b, " (code %s)", e.Info.Code)
	}
	if e.Info.Param != "" {
		fmt.Fprintf(&b, " (param %s)", e.Info.Param)
	}
	if e.Info.RequestID != "" {
		fmt.Fprintf(&b, " (request %s)", e.Info.RequestID)
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " after %d attempts", e.Attempts)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, ", retry after %s", e.RetryAfter)
	}
	return b.String()
}

// Unwrap classifies the status: ErrUnavailable when a later try may succeed,
// ErrRejected otherwise.
func (e *StatusError) Unwrap() error {
	if retryableStatus(e.StatusCode) {
		return ErrUnavailable
	}
	return ErrRejected
}

// Retryable lets callers that cannot import this package ask through
// errors.As(err, &interface{ Retryable() bool }).
func (e *StatusError) Retryable() bool { return retryableStatus(e.StatusCode) }

func retryableStatus(code int) bool {
	return code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500
}

// Client sends requests with the retry policy.
type Client struct {
	Provider string // names the provider in errors, e.g. "deepgram"
	HTTP     *http.Client
	Policy   Policy
	MaxBody  int64 // bound on a 2xx body; 0 = DefaultMaxBody
	// DecodeError takes identifiers from a (bounded) error body; nil = none.
	DecodeError func(body []byte) ErrorInfo
}

// Do sends the request that build makes (once per try, so bodies can be
// re-read) and returns the body of the first 2xx answer. build must not put
// secrets in the URL. Errors wrap ErrRejected, ErrUnavailable, ErrBadResponse
// or the context's error.
func (c *Client) Do(ctx context.Context, build func(ctx context.Context) (*http.Request, error)) ([]byte, http.Header, error) {
	p := c.Policy.withDefaults()
	maxBody := c.MaxBody
	if maxBody <= 0 {
		maxBody = DefaultMaxBody
	}
	start := p.Now()
	var last error
	for attempt := 1; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, nil, c.stopped(err, last)
		}
		req, err := build(ctx)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: build request: %w", c.Provider, err)
		}
		op := req.Method + " " + req.URL.Path

		body, hdr, retryAfter, err := c.once(req, op, attempt, maxBody, p.Now)
		if err == nil {
			return body, hdr, nil
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, nil, c.stopped(ctxErr, err)
		}
		if !retryable(err) {
			return nil, nil, err
		}
		last = err
		if attempt >= p.MaxAttempts {
			return nil, nil, exhausted(err)
		}
		wait := max(p.Backoff(attempt), retryAfter)
		if p.Now().Sub(start)+wait > p.MaxElapsed {
			// The server asks for more patience than our budget: report it so
			// the caller can redeliver later instead of holding a worker.
			return nil, nil, exhausted(err)
		}
		if err := p.Sleep(ctx, wait); err != nil {
			return nil, nil, c.stopped(err, last)
		}
	}
}

// once is one try. retryAfter is the server's wish, if any.
func (c *Client) once(req *http.Request, op string, attempt int, maxBody int64, now func() time.Time) ([]byte, http.Header, time.Duration, error) {
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, nil, 0, &transportError{provider: c.Provider, op: op, err: stripURL(err)}
	}
	defer resp.Body.Close()

	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
		if err != nil {
			// A body cut off mid-way is a transport failure: try again.
			return nil, nil, 0, &transportError{provider: c.Provider, op: op, err: stripURL(err)}
		}
		if int64(len(body)) > maxBody {
			return nil, nil, 0, fmt.Errorf("%s: %s: %w: body larger than %d bytes", c.Provider, op, ErrBadResponse, maxBody)
		}
		return body, resp.Header, 0, nil
	}

	// Read a bounded prefix for the error code, then drain a little more so
	// the connection can be reused; the content goes nowhere else.
	errBody, _ := io.ReadAll(io.LimitReader(resp.Body, MaxErrorBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	var info ErrorInfo
	if c.DecodeError != nil && len(errBody) > 0 {
		info = c.DecodeError(errBody)
	}
	info.Code = Identifier(info.Code, maxCodeLen)
	info.Param = Identifier(info.Param, maxCodeLen)
	if info.RequestID == "" {
		info.RequestID = resp.Header.Get(requestIDHeader)
	}
	if info.RequestID == "" {
		info.RequestID = resp.Header.Get(deepgramRequestID)
	}
	info.RequestID = Identifier(info.RequestID, maxRequestIDLen)
	retryAfter := RetryAfter(resp.Header, now)
	return nil, nil, retryAfter, &StatusError{
		Provider:   c.Provider,
		Op:         op,
		StatusCode: resp.StatusCode,
		Info:       info,
		RetryAfter: retryAfter,
		Attempts:   attempt,
	}
}

func (c *Client) stopped(ctxErr, last error) error {
	if last != nil {
		return fmt.Errorf("%s: gave up: %w (last failure: %v)", c.Provider, ctxErr, last)
	}
	return fmt.Errorf("%s: %w", c.Provider, ctxErr)
}

type transportError struct {
	provider, op string
	err          error
}

func (e *transportError) Error() string {
	return fmt.Sprintf("%s: %s: %v", e.provider, e.op, e.err)
}

// Unwrap keeps the cause (so net errors stay inspectable) and classifies.
func (e *transportError) Unwrap() []error { return []error{ErrUnavailable, e.err} }

func (e *transportError) Retryable() bool { return true }

func retryable(err error) bool {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Retryable()
	}
	var te *transportError
	return errors.As(err, &te)
}

// exhausted marks the last retryable failure as final; it still wraps
// ErrUnavailable through the failure itself.
func exhausted(err error) error {
	return fmt.Errorf("retries exhausted: %w", err)
}

// stripURL drops the *url.Error wrapper, whose text repeats the full URL.
func stripURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return fmt.Errorf("timeout: %w", ue.Err)
		}
		return ue.Err
	}
	return err
}

// RetryAfter reads Retry-After-Ms (milliseconds) or Retry-After (seconds or
// an HTTP date) and returns how long to wait; 0 when absent, invalid or past.
// Values are capped at one day so a hostile header cannot overflow.
func RetryAfter(h http.Header, now func() time.Time) time.Duration {
	const maxWait = 24 * time.Hour
	if v := strings.TrimSpace(h.Get(retryAfterMsHeader)); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 {
			if ms >= float64(maxWait/time.Millisecond) {
				return maxWait
			}
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs >= int64(maxWait/time.Second) {
			return maxWait
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		d := t.Sub(now())
		if d <= 0 {
			return 0
		}
		return min(d, maxWait)
	}
	return 0
}

// Identifier keeps s only if it looks like a code or id (short, printable
// ASCII letters, digits, space and ._-:/); anything else is dropped so that
// free text from a provider never reaches an error message.
func Identifier(s string, maxLen int) string {
	s = strings.TrimSpace(s)
	if s == "" || len(s) > maxLen {
		return ""
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune(" ._-:/", r):
		default:
			return ""
		}
	}
	return s
}

// JSONBody is a build helper: a POST with a JSON body and the given headers.
func JSONBody(ctx context.Context, rawURL string, body []byte, headers http.Header) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range headers {
		req.Header[k] = slices.Clone(v) // callers reuse headers across requests
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	return req, nil
}

// DescribeJSONError says what was wrong with a response body without quoting
// it: an offset for syntax errors, our own field path for type errors.
func DescribeJSONError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at offset %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q has the wrong type", typ.Field)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated JSON"
	default:
		return "invalid JSON"
	}
}
