// Package twilioapi is the adapter to Twilio's REST API that lethe needs:
// send an SMS (phone verification codes), fetch a call recording by its
// SID, delete it. The host is configuration (LETHE_TWILIO_API_URL), so tests
// point it at an httptest fake; a recording is only ever fetched from that
// host by SID, never from a URL a webhook carried.
package twilioapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Errors callers branch on.
var (
	// ErrNotReady: the recording does not exist yet (Twilio answers 404
	// for a while after the recording callback). Worth retrying.
	ErrNotReady = errors.New("twilioapi: recording not ready")
	// ErrRejected: Twilio refused the request (4xx other than 404/429);
	// retrying the same request will not help.
	ErrRejected = errors.New("twilioapi: request rejected")
	// ErrTooLarge: the recording is larger than the configured bound.
	ErrTooLarge = errors.New("twilioapi: recording too large")
)

var (
	accountRE   = regexp.MustCompile(`^AC[0-9a-f]{32}$`)
	recordingRE = regexp.MustCompile(`^RE[0-9a-f]{32}$`)
)

// Client calls Twilio with the account's SID and auth token (HTTP basic).
type Client struct {
	base       *url.URL
	accountSID string
	authToken  string
	from       string
	http       *http.Client
	maxBytes   int64
}

// Config configures a Client.
type Config struct {
	BaseURL    string // https://api.twilio.com, or a fake in tests
	AccountSID string
	AuthToken  string
	// From is the number (E.164) or Messaging Service SID (MG…) SMS are
	// sent from.
	From string
	// MaxRecordingBytes bounds a downloaded recording (default 32 MiB).
	MaxRecordingBytes int64
	// HTTP is the client to use (default: 30 s timeout, at most 5
	// redirects; Go drops the Authorization header on a redirect to
	// another host, so a media redirect never carries the credentials).
	HTTP *http.Client
}

// New checks cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return nil, fmt.Errorf("twilioapi: base URL %q: want http(s)://host", cfg.BaseURL)
	}
	if !accountRE.MatchString(cfg.AccountSID) {
		return nil, errors.New("twilioapi: account SID: want AC followed by 32 hex digits")
	}
	if cfg.AuthToken == "" {
		return nil, errors.New("twilioapi: no auth token")
	}
	c := &Client{base: u, accountSID: cfg.AccountSID, authToken: cfg.AuthToken, from: cfg.From, http: cfg.HTTP, maxBytes: cfg.MaxRecordingBytes}
	if c.http == nil {
		c.http = &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("twilioapi: too many redirects")
			}
			return nil
		}}
	}
	if c.maxBytes <= 0 {
		c.maxBytes = 32 << 20
	}
	return c, nil
}

func (c *Client) endpoint(parts ...string) string {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + "/2010-04-01/Accounts/" + c.accountSID + "/" + strings.Join(parts, "/")
	return u.String()
}

func (c *Client) do(req *http.Request) (*http.Response, error) {
	req.SetBasicAuth(c.accountSID, c.authToken)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("http.Do %s: %w", req.Method, err)
	}
	return resp, nil
}

// status maps a non-2xx answer to an error: 429 and 5xx are transient.
func status(op string, resp *http.Response) error {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	switch {
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return fmt.Errorf("twilioapi %s: status %d", op, resp.StatusCode)
	default:
		return fmt.Errorf("twilioapi %s: status %d: %w", op, resp.StatusCode, ErrRejected)
	}
}

// SendSMS sends body to the E.164 number to.
func (c *Client) SendSMS(ctx context.Context, to, body string) error {
	if c.from == "" {
		return fmt.Errorf("twilioapi SendSMS: no sender configured (LETHE_TWILIO_FROM): %w", ErrRejected)
	}
	form := url.Values{"To": {to}, "Body": {body}}
	if strings.HasPrefix(c.from, "MG") {
		form.Set("MessagingServiceSid", c.from)
	} else {
		form.Set("From", c.from)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint("Messages.json"), strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("http.NewRequest: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusOK {
		return status("SendSMS", resp)
	}
	var out struct {
		SID    string `json:"sid"`
		Status string `json:"status"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&out); err != nil {
		return fmt.Errorf("twilioapi SendSMS: decode answer: %w", err)
	}
	if out.Status == "failed" || out.Status == "undelivered" {
		return fmt.Errorf("twilioapi SendSMS: message %s: %w", out.Status, ErrRejected)
	}
	return nil
}

// Recording is downloaded audio.
type Recording struct {
	Audio       []byte
	ContentType string
}

// FetchRecording downloads recording sid as WAV from the configured host.
// 404 is ErrNotReady: Twilio announces a recording before its media is
// served.
func (c *Client) FetchRecording(ctx context.Context, sid string) (Recording, error) {
	if !recordingRE.MatchString(sid) {
		return Recording{}, fmt.Errorf("twilioapi FetchRecording: recording SID: %w", ErrRejected)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.endpoint("Recordings", sid+".wav"), nil)
	if err != nil {
		return Recording{}, fmt.Errorf("http.NewRequest: %w", err)
	}
	resp, err := c.do(req)
	if err != nil {
		return Recording{}, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return Recording{}, ErrNotReady
	case resp.StatusCode != http.StatusOK:
		return Recording{}, status("FetchRecording", resp)
	}
	if resp.ContentLength > c.maxBytes {
		return Recording{}, ErrTooLarge
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, c.maxBytes+1))
	if err != nil {
		return Recording{}, fmt.Errorf("twilioapi FetchRecording: read: %w", err)
	}
	if int64(len(b)) > c.maxBytes {
		return Recording{}, ErrTooLarge
	}
	ct := resp.Header.Get("Content-Type")
	if ct == "" || ct == "application/octet-stream" {
		ct = "audio/wav"
	}
	return Recording{Audio: b, ContentType: ct}, nil
}

// DeleteRecording deletes recording sid at Twilio; one already gone is
// not an error (a redelivered event deletes again).
func (c *Client) DeleteRecording(ctx context.Context, sid string) error {
	if !recordingRE.MatchString(sid) {
		return fmt.Errorf("twilioapi DeleteRecording: recording SID: %w", ErrRejected)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, c.endpoint("Recordings", sid+".json"), nil)
	if err != nil {
		return fmt.Errorf("http.NewRequest: %w", err)
	}
	resp, err := c.do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusNotFound {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil
	}
	return status("DeleteRecording", resp)
}
