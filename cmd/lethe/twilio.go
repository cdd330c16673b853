package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/lethe-dev/lethe/app/ingest"
	"github.com/lethe-dev/lethe/app/phones"
	"github.com/lethe-dev/lethe/functions"
	"github.com/lethe-dev/lethe/infra/bus"
	"github.com/lethe-dev/lethe/infra/twilioapi"
	"github.com/lethe-dev/lethe/infra/twiliosig"
	"github.com/lethe-dev/lethe/workers/twilio"
)

// workerTwilio takes the twilio topic: recordings, SMS, call statuses.
const workerTwilio = "twilio"

var accountSIDRE = regexp.MustCompile(`^AC[0-9a-f]{32}$`)

// twilioWebhooks: the webhooks are routed when they can be verified (a
// token) or when verification is skipped on purpose (development only).
func (c Config) twilioWebhooks() bool { return c.TwilioAuthToken != "" || c.TwilioSkipSigVerify }

// twilioAPI: Twilio's REST API can be called (phone codes, recordings).
func (c Config) twilioAPI() bool { return c.TwilioAuthToken != "" && c.TwilioAccountSID != "" }

// validateTwilio checks the Twilio settings, naming the variable at fault.
func (c Config) validateTwilio() []error {
	var errs []error
	if c.TwilioAccountSID != "" && !accountSIDRE.MatchString(c.TwilioAccountSID) {
		errs = append(errs, errors.New("INF_TWILIO_ACCOUNT_SID: want AC followed by 32 lowercase hex digits"))
	}
	if c.TwilioAuthTokenSecondary != "" && c.TwilioAuthToken == "" {
		errs = append(errs, errors.New("INF_TWILIO_AUTH_TOKEN_SECONDARY is set without INF_TWILIO_AUTH_TOKEN"))
	}
	if c.twilioWebhooks() {
		u, err := url.Parse(c.PublicURL)
		if c.PublicURL == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" || u.User != nil {
			errs = append(errs, fmt.Errorf("LETHE_PUBLIC_URL=%q: Twilio signs the public URL of its webhooks; want http(s)://host[:port] (https in production)", c.PublicURL))
		}
	}
	if u, err := url.Parse(c.TwilioAPIURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Errorf("LETHE_TWILIO_API_URL=%q: want http(s)://host", c.TwilioAPIURL))
	}
	if c.PushEndpoint != "" {
		if u, err := url.Parse(c.PushEndpoint); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("LETHE_PUSH_ENDPOINT=%q: want http(s)://host[:port]", c.PushEndpoint))
		}
	}
	return errs
}

// servesTwilio reports whether the process serves Twilio's webhooks (the
// edge, in lethe run or lethe edge) or runs the twilio worker; an operator's
// command (users, dlq, backup, ...) or another worker needs no Twilio token.
func (c Config) servesTwilio() bool {
	switch c.command {
	case "run", "edge", "":
		return true
	case "worker":
		for _, a := range c.commandArgs {
			if slices.Contains(splitList(a), workerTwilio) {
				return true
			}
		}
	}
	return false
}

// guardTwilio refuses, in production, unsigned webhooks and webhooks that
// cannot be verified.
func (c Config) guardTwilio() []error {
	var errs []error
	if c.TwilioSkipSigVerify {
		errs = append(errs, errors.New("INF_TWILIO_SKIP_SIG_VERIFY=true: anyone could post calls and messages into users' accounts; refused when LETHE_ENV=production"))
	}
	if c.TwilioAuthToken == "" && c.servesTwilio() {
		errs = append(errs, errors.New("INF_TWILIO_AUTH_TOKEN is empty: Twilio webhooks cannot be verified; refused when LETHE_ENV=production"))
	}
	if c.PublicURL != "" && !strings.HasPrefix(c.PublicURL, "https://") {
		errs = append(errs, errors.New("LETHE_PUBLIC_URL is not https: refused when LETHE_ENV=production"))
	}
	return errs
}

// withPush makes every subscription a push subscription to the edge's
// /push/{subscription} under LETHE_PUSH_ENDPOINT (the emulator or a
// development project; in production Terraform creates them).
func withPush(cfg Config, specs []bus.TopicSpec) []bus.TopicSpec {
	if cfg.Delivery != "push" || cfg.PushEndpoint == "" {
		return specs
	}
	base := strings.TrimSuffix(cfg.PushEndpoint, "/")
	out := make([]bus.TopicSpec, len(specs))
	for i, t := range specs {
		t.Subscriptions = append([]bus.SubscriptionSpec(nil), t.Subscriptions...)
		for j := range t.Subscriptions {
			t.Subscriptions[j].PushEndpoint = base + "/push/" + t.Subscriptions[j].Name
		}
		out[i] = t
	}
	return out
}

// twilioParts are the Twilio pieces of a process: the webhooks' settings,
// the phone registry, and the worker's handler.
type twilioParts struct {
	webhooks *functions.Twilio
	phones   *phones.Registry
	worker   *twilio.Worker
}

func (a *app) twilio(cfg Config, intake *ingest.Intake) (twilioParts, error) {
	var out twilioParts
	var api *twilioapi.Client
	if cfg.twilioAPI() {
		var err error
		api, err = twilioapi.New(twilioapi.Config{BaseURL: cfg.TwilioAPIURL, AccountSID: cfg.TwilioAccountSID,
			AuthToken: cfg.TwilioAuthToken, From: cfg.TwilioFrom, MaxRecordingBytes: cfg.MaxChunkBytes})
		if err != nil {
			return out, fmt.Errorf("twilioapi.New: %w", err)
		}
	}
	calls := &phones.Calls{Docs: a.docs, Now: intake.Now}
	if api != nil {
		out.phones = &phones.Registry{Docs: a.docs, Hash: a.pseudo.Phone, Digest: a.keys, SMS: api, Now: intake.Now}
	}
	if cfg.twilioWebhooks() {
		reg := out.phones
		if reg == nil {
			// No API to send codes: nothing can be verified, so every
			// number is unknown; the webhooks still verify and drop.
			reg = &phones.Registry{Docs: a.docs, Hash: a.pseudo.Phone, Digest: a.keys, Now: intake.Now}
		}
		w := &functions.Twilio{PublicURL: cfg.PublicURL, AccountSID: cfg.TwilioAccountSID, Phones: reg, Calls: calls, PhoneHash: a.pseudo.Phone}
		if !cfg.TwilioSkipSigVerify {
			v, err := twiliosig.New(cfg.PublicURL, cfg.TwilioAuthToken, cfg.TwilioAuthTokenSecondary)
			if err != nil {
				return out, fmt.Errorf("twiliosig.New: %w", err)
			}
			w.Verifier = v
		}
		out.webhooks = w
	}
	if api != nil {
		out.worker = &twilio.Worker{Intake: intake, Docs: a.docs, Keys: a.keys, Media: twilioMedia{api},
			Owners: out.phones, Calls: calls, Audit: a.audit, Events: a.events, Logger: a.log,
			KeepTwilioCopy: !cfg.TwilioDeleteRecordings}
	}
	return out, nil
}

// twilioMedia adapts the REST client to the worker's port.
type twilioMedia struct{ c *twilioapi.Client }

func (m twilioMedia) FetchRecording(ctx context.Context, sid string) (twilio.Recording, error) {
	r, err := m.c.FetchRecording(ctx, sid)
	switch {
	case errors.Is(err, twilioapi.ErrNotReady):
		return twilio.Recording{}, fmt.Errorf("%w: %w", twilio.ErrNotReady, err)
	case errors.Is(err, twilioapi.ErrRejected), errors.Is(err, twilioapi.ErrTooLarge):
		return twilio.Recording{}, fmt.Errorf("%w: %w", twilio.ErrRejected, err)
	case err != nil:
		return twilio.Recording{}, err
	}
	return twilio.Recording{Audio: r.Audio, ContentType: r.ContentType}, nil
}

func (m twilioMedia) DeleteRecording(ctx context.Context, sid string) error {
	return m.c.DeleteRecording(ctx, sid)
}
