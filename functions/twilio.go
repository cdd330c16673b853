package functions

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/phones"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/ratelimit"
	"github.com/lethe-dev/lethe/infra/security"
	"github.com/lethe-dev/lethe/infra/twiliosig"
)

// Twilio webhooks: verify the signature over the configured public URL,
// check the parameters used against a schema, publish one CloudEvent and
// only then answer Twilio. Replays verify (Twilio's signature has no
// timestamp), so every event id is derived from the signed SIDs and every
// consumer is idempotent on it: a replay has exactly one effect.

// maxTwilioBody bounds a webhook body: an SMS of 1,600 characters with
// every parameter Twilio adds fits many times over.
const maxTwilioBody = 64 << 10

// Twilio configures the webhooks.
type Twilio struct {
	// Verifier checks X-Twilio-Signature; nil skips the check
	// (INF_TWILIO_SKIP_SIG_VERIFY, refused in production).
	Verifier *twiliosig.Verifier
	// PublicURL is where Twilio reaches the edge (LETHE_PUBLIC_URL); the
	// voice TwiML names its recording callback under it.
	PublicURL string
	// AccountSID, when set, is the only account whose webhooks are taken.
	AccountSID string
	// Phones finds the verified owner of a number; Calls records calls.
	Phones *phones.Registry
	Calls  *phones.Calls
	// PhoneHash is the keyed hash of a number (pseudonym.Phone).
	PhoneHash func(e164 string) string
}

// twilioSchemas: the parameters each webhook uses, by route. Parameters
// not listed are signed and otherwise ignored (Twilio adds new ones).
var twilioSchemas = map[string]string{
	"voice": `{"type":"object","required":["AccountSid","CallSid","From","CallStatus"],"properties":{
		"AccountSid":{"type":"string","pattern":"^AC[0-9a-f]{32}$"},
		"CallSid":{"type":"string","pattern":"^CA[0-9a-f]{32}$"},
		"From":{"type":"string","maxLength":64},
		"CallStatus":{"enum":["queued","ringing","in-progress","completed","busy","failed","no-answer","canceled"]}}}`,
	"status": `{"type":"object","required":["AccountSid","CallSid","CallStatus"],"properties":{
		"AccountSid":{"type":"string","pattern":"^AC[0-9a-f]{32}$"},
		"CallSid":{"type":"string","pattern":"^CA[0-9a-f]{32}$"},
		"CallStatus":{"enum":["queued","ringing","in-progress","completed","busy","failed","no-answer","canceled"]},
		"CallDuration":{"type":"string","pattern":"^[0-9]{1,5}$"}}}`,
	"recording": `{"type":"object","required":["AccountSid","CallSid","RecordingSid","RecordingStatus"],"properties":{
		"AccountSid":{"type":"string","pattern":"^AC[0-9a-f]{32}$"},
		"CallSid":{"type":"string","pattern":"^CA[0-9a-f]{32}$"},
		"RecordingSid":{"type":"string","pattern":"^RE[0-9a-f]{32}$"},
		"RecordingStatus":{"enum":["in-progress","completed","absent","failed"]},
		"RecordingDuration":{"type":"string","pattern":"^[0-9]{1,5}$"}}}`,
	"sms": `{"type":"object","required":["AccountSid","MessageSid","From","Body"],"properties":{
		"AccountSid":{"type":"string","pattern":"^AC[0-9a-f]{32}$"},
		"MessageSid":{"type":"string","pattern":"^(SM|MM)[0-9a-f]{32}$"},
		"From":{"type":"string","maxLength":64},
		"Body":{"type":"string","maxLength":1600}}}`,
}

// twilioParams lists, per route, the parameters validated (the schema's
// properties), so the instance holds exactly those.
var twilioParams = map[string][]string{
	"voice":     {"AccountSid", "CallSid", "From", "CallStatus"},
	"status":    {"AccountSid", "CallSid", "CallStatus", "CallDuration"},
	"recording": {"AccountSid", "CallSid", "RecordingSid", "RecordingStatus", "RecordingDuration"},
	"sms":       {"AccountSid", "MessageSid", "From", "Body"},
}

type twilioHooks struct {
	s       *Server
	cfg     *Twilio
	schemas map[string]*jsonschema.Schema
}

// routeTwilio registers the webhooks when Twilio is configured.
func (s *Server) routeTwilio() {
	if s.d.Twilio == nil {
		return
	}
	h := &twilioHooks{s: s, cfg: s.d.Twilio, schemas: map[string]*jsonschema.Schema{}}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(noSchemaLoader{})
	for name, src := range twilioSchemas {
		doc, err := jsonschema.UnmarshalJSON(strings.NewReader(src))
		if err == nil {
			id := "https://lethe.dev/schemas/api/twilio." + name + ".json"
			if err = c.AddResource(id, doc); err == nil {
				h.schemas[name], err = c.Compile(id)
			}
		}
		if err != nil {
			s.d.Logger.Error("twilio webhooks disabled", "schema", name, "error", err.Error())
			return
		}
	}
	s.mux.HandleFunc("POST /twilio/voice", h.serve("voice", h.voice))
	s.mux.HandleFunc("POST /twilio/status", h.serve("status", h.status))
	s.mux.HandleFunc("POST /twilio/recording", h.serve("recording", h.recording))
	s.mux.HandleFunc("POST /twilio/sms", h.serve("sms", h.sms))
}

// serve reads, verifies and validates; next sees only signed, valid
// parameters.
func (h *twilioHooks) serve(name string, next func(w http.ResponseWriter, r *http.Request, p url.Values)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxTwilioBody))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				writeError(w, http.StatusRequestEntityTooLarge, "too_large", "body too large")
				return
			}
			writeError(w, http.StatusBadRequest, "bad_request", "unreadable body")
			return
		}
		mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
		sig := r.Header.Get("X-Twilio-Signature")
		var params url.Values
		switch mt {
		case "application/x-www-form-urlencoded":
			if params, err = url.ParseQuery(string(body)); err != nil {
				writeError(w, http.StatusBadRequest, "bad_request", "body is not a form")
				return
			}
			if h.cfg.Verifier != nil {
				err = h.cfg.Verifier.VerifyForm(r.URL.RequestURI(), params, sig)
			}
		case "application/json":
			if h.cfg.Verifier != nil {
				err = h.cfg.Verifier.VerifyJSON(r.URL.RequestURI(), body, sig)
			}
			if err == nil {
				if params, err = jsonParams(body); err != nil {
					writeError(w, http.StatusBadRequest, "bad_request", "body is not a flat JSON object")
					return
				}
			}
		default:
			writeError(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "want a form or JSON body")
			return
		}
		if err != nil {
			h.refuse(w, r, name, "signature_failure")
			return
		}
		if !h.valid(name, params) {
			writeError(w, http.StatusBadRequest, "invalid", "parameters do not match the webhook's schema")
			return
		}
		if h.cfg.AccountSID != "" && params.Get("AccountSid") != h.cfg.AccountSID {
			h.refuse(w, r, name, "twilio_account_mismatch")
			return
		}
		next(w, r, params)
	}
}

// refuse answers 403 and records a security event (counted, logged with
// the route and the client address, alerted on in a burst), nothing of the
// request's content.
func (h *twilioHooks) refuse(w http.ResponseWriter, r *http.Request, name, kind string) {
	h.s.securityEvent(r, security.SignatureFailure, kind, "")
	// Forgeries count against the address like rejected tokens do.
	if !h.s.allow(w, r, rateKeyAuthFail+h.s.clientAddr(r), h.s.d.Limits.FailedAuth, ratelimit.FailClosed) {
		return
	}
	writeError(w, http.StatusForbidden, "forbidden", "request not signed by Twilio")
}

// jsonParams turns a flat JSON object of strings (and numbers and
// booleans, as strings) into parameters.
func jsonParams(body []byte) (url.Values, error) {
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, err
	}
	out := url.Values{}
	for k, v := range m {
		switch x := v.(type) {
		case string:
			out.Set(k, x)
		case float64, bool:
			out.Set(k, fmt.Sprint(x))
		case nil:
		default:
			// Nested values are not parameters this edge uses.
		}
	}
	return out, nil
}

// valid checks the parameters the route uses, each once: a repeated
// parameter the edge acts on is ambiguous, so it is invalid.
func (h *twilioHooks) valid(name string, p url.Values) bool {
	inst := map[string]any{}
	for _, k := range twilioParams[name] {
		switch vs := p[k]; len(vs) {
		case 0:
		case 1:
			inst[k] = vs[0]
		default:
			return false
		}
	}
	return h.schemas[name].Validate(inst) == nil
}

func (h *twilioHooks) drop(ctx context.Context, ref string) {
	if h.s.d.Audit == nil {
		return
	}
	if _, err := h.s.d.Audit.Append(ctx, audit.Entry{Actor: audit.ActorSystem, Action: ActionTwilioDropped, Ref: ref}); err != nil {
		h.s.d.Logger.ErrorContext(ctx, "audit append failed", "action", ActionTwilioDropped, "error", err.Error())
	}
}

// ActionTwilioDropped is the audit action of a Twilio event dropped
// because its number or call belongs to no verified user; the entry names
// the kind of event and no number.
const ActionTwilioDropped = "twilio.dropped"

// owner is the verified owner of number ("" for none); with alive, only
// one not erased (sealing checks that itself).
func (h *twilioHooks) owner(ctx context.Context, number string, alive bool) (string, error) {
	user, ok, err := h.cfg.Phones.OwnerOf(ctx, number)
	if err != nil || !ok || !alive {
		return user, err
	}
	gone, err := records.Tombstoned(ctx, h.s.d.Docs, user)
	if err != nil || gone {
		return "", err
	}
	return user, nil
}

func twiml(w http.ResponseWriter, body string) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?>`+"\n<Response>"+body+"</Response>\n")
}

func (h *twilioHooks) publish(ctx context.Context, w http.ResponseWriter, r *http.Request, id, typ, subject string, data any) bool {
	ev, err := h.s.d.Events.NewWithID(id, typ, subject, data)
	if err != nil {
		h.s.d.Logger.ErrorContext(ctx, "twilio event invalid", "type", typ, "error", err.Error())
		writeError(w, http.StatusInternalServerError, "internal", "internal error")
		return false
	}
	if err := h.s.d.Bus.Publish(ctx, events.TopicTwilio, ev); err != nil {
		// Not acknowledged: Twilio retries, and the retry has the same id.
		h.s.unavailable(w, r, "bus.Publish twilio", err)
		return false
	}
	return true
}

// voice answers a call from a verified number with TwiML that records it
// and calls back /twilio/recording; any other caller is rejected and
// nothing about the call is kept beyond an audit entry.
func (h *twilioHooks) voice(w http.ResponseWriter, r *http.Request, p url.Values) {
	ctx := r.Context()
	user, err := h.owner(ctx, p.Get("From"), true)
	if err != nil {
		h.s.unavailable(w, r, "phones.OwnerOf", err)
		return
	}
	if user == "" {
		h.drop(ctx, "voice/unknown-number")
		twiml(w, "<Reject/>")
		return
	}
	sid, status := p.Get("CallSid"), p.Get("CallStatus")
	if err := h.cfg.Calls.Start(ctx, sid, user, status); err != nil {
		if errors.Is(err, phones.ErrOtherOwner) {
			h.refuse(w, r, "voice", "twilio_call_owner_mismatch")
			return
		}
		h.s.unavailable(w, r, "phones.Calls.Start", err)
		return
	}
	if !h.publish(ctx, w, r, events.DeriveID("twilio-call", sid, status), events.TypeTwilioCallStatus,
		events.Subject(user, "twilio", "calls", sid),
		events.TwilioCallStatus{User: user, AccountSID: p.Get("AccountSid"), CallSID: sid, CallStatus: status}) {
		return
	}
	cb := html.EscapeString(strings.TrimSuffix(h.cfg.PublicURL, "/") + "/twilio/recording")
	twiml(w, `<Record recordingStatusCallback="`+cb+`" recordingStatusCallbackMethod="POST" recordingStatusCallbackEvent="completed" maxLength="3600" timeout="10" playBeep="true"/>`)
}

// status publishes a call status callback; the worker updates the call.
func (h *twilioHooks) status(w http.ResponseWriter, r *http.Request, p url.Values) {
	ctx := r.Context()
	sid, status := p.Get("CallSid"), p.Get("CallStatus")
	call, ok, err := h.cfg.Calls.Get(ctx, sid)
	if err != nil {
		h.s.unavailable(w, r, "phones.Calls.Get", err)
		return
	}
	if !ok {
		h.drop(ctx, "status/unknown-call")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	dur, _ := strconv.Atoi(p.Get("CallDuration"))
	if !h.publish(ctx, w, r, events.DeriveID("twilio-call", sid, status), events.TypeTwilioCallStatus,
		events.Subject(call.Owner, "twilio", "calls", sid),
		events.TwilioCallStatus{User: call.Owner, AccountSID: p.Get("AccountSid"), CallSID: sid, CallStatus: status, DurationS: dur}) {
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// recording publishes a completed recording of a recorded call; the
// worker fetches it by SID.
func (h *twilioHooks) recording(w http.ResponseWriter, r *http.Request, p url.Values) {
	ctx := r.Context()
	if p.Get("RecordingStatus") != "completed" {
		w.WriteHeader(http.StatusNoContent)
		return
	}
	sid, rec := p.Get("CallSid"), p.Get("RecordingSid")
	call, ok, err := h.cfg.Calls.Get(ctx, sid)
	if err != nil {
		h.s.unavailable(w, r, "phones.Calls.Get", err)
		return
	}
	if !ok {
		h.drop(ctx, "recording/unknown-call")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	dur, _ := strconv.Atoi(p.Get("RecordingDuration"))
	if !h.publish(ctx, w, r, events.DeriveID("twilio-recording", rec), events.TypeTwilioRecordingDone,
		events.Subject(call.Owner, "twilio", "recordings", rec),
		events.TwilioRecordingCompleted{User: call.Owner, AccountSID: p.Get("AccountSid"), CallSID: sid, RecordingSID: rec, DurationS: min(dur, 86400)}) {
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// sms publishes a message from a verified number, its body sealed with
// the owner's key (so it is never readable in the bus); a message from
// any other number is dropped with an audit entry and nothing kept.
func (h *twilioHooks) sms(w http.ResponseWriter, r *http.Request, p url.Values) {
	ctx := r.Context()
	from := p.Get("From")
	// Sealing refuses an erased owner (below): no tombstone read here.
	user, err := h.owner(ctx, from, false)
	if err != nil {
		h.s.unavailable(w, r, "phones.OwnerOf", err)
		return
	}
	if user == "" {
		h.drop(ctx, "sms/unknown-number")
		twiml(w, "")
		return
	}
	if strings.TrimSpace(p.Get("Body")) == "" {
		// Nothing to remember (an MMS without text, say).
		twiml(w, "")
		return
	}
	sid := p.Get("MessageSid")
	id := events.DeriveID("twilio-sms", sid)
	sealed, err := h.s.d.Keys.Seal(ctx, user, []byte(p.Get("Body")), keys.AD(user, "events/"+events.TypeTwilioSMSReceived, id, "sealed_body"))
	if errors.Is(err, keys.ErrTombstoned) {
		h.drop(ctx, "sms/erased-user")
		twiml(w, "")
		return
	}
	if err != nil {
		h.s.unavailable(w, r, "keys.Seal sms", err)
		return
	}
	if !h.publish(ctx, w, r, id, events.TypeTwilioSMSReceived, events.Subject(user, "twilio", "messages", sid),
		events.TwilioSMSReceived{User: user, AccountSID: p.Get("AccountSid"), MessageSID: sid,
			FromHash: h.cfg.PhoneHash(from), SealedBody: base64.StdEncoding.EncodeToString(sealed)}) {
		return
	}
	twiml(w, "")
}
