package functions_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/functions"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/ratelimit"
	"github.com/lethe-dev/lethe/infra/twiliosig"
)

// The public URL Twilio signs: configuration, deliberately not the test
// server's address, so a verifier that used Host would fail every test.
const twPublic = "https://lethe.example"

const (
	twToken   = "primary-auth-token-0001"
	twAccount = "AC0123456789abcdef0123456789abcdef"
	twCall    = "CA0123456789abcdef0123456789abcdef"
	twRec     = "RE0123456789abcdef0123456789abcdef"
	twSMS     = "SM0123456789abcdef0123456789abcdef"
	aliceTel  = "+15551230001"
	bobTel    = "+15551230002"
)

// fakeSMS keeps the codes the registry sends.
type fakeSMS struct {
	mu   sync.Mutex
	sent map[string]string
}

func (f *fakeSMS) SendSMS(_ context.Context, to, body string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.sent == nil {
		f.sent = map[string]string{}
	}
	f.sent[to] = body
	return nil
}

func (f *fakeSMS) code(to string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return regexp.MustCompile(`[0-9]{6}`).FindString(f.sent[to])
}

type twilioSetup struct {
	tokens []string // none: verification skipped
	sms    *fakeSMS
}

func (s *twilioSetup) config(t testing.TB, e *edge) *functions.Twilio {
	cfg := &functions.Twilio{PublicURL: twPublic, AccountSID: twAccount, Phones: e.phones, Calls: e.calls, PhoneHash: e.pseudo.Phone}
	if len(s.tokens) > 0 {
		v, err := twiliosig.New(twPublic, s.tokens...)
		must(t, err)
		cfg.Verifier = v
	}
	return cfg
}

func newTwilioEdge(t testing.TB, tokens ...string) (*edge, *fakeSMS) {
	sms := &fakeSMS{}
	return newEdgeWith(t, edgeOptions{twilio: &twilioSetup{tokens: tokens, sms: sms}}), sms
}

// verifyPhone proves number for uid through the API, reading the code
// from the fake Twilio as its owner would from their phone.
func (e *edge) verifyPhone(sms *fakeSMS, uid, number string) string {
	e.t.Helper()
	tok := e.token(uid)
	r := e.do("POST", "/v1/me/phones", tok, "application/json", []byte(`{"number":"`+number+`"}`))
	if r.status != http.StatusCreated {
		e.t.Fatalf("add phone: %d %v", r.status, r.body)
	}
	id := r.body["id"].(string)
	r = e.do("POST", "/v1/me/phones/"+id+"/verify", tok, "application/json", []byte(`{"code":"`+sms.code(number)+`"}`))
	if r.status != http.StatusOK || r.body["verified"] != true {
		e.t.Fatalf("verify phone: %d %v", r.status, r.body)
	}
	return id
}

type twReply struct {
	status int
	body   string
}

// twPost sends a webhook as Twilio would, signed (when token is set) over
// the public URL; mutate changes the request after signing.
func (e *edge) twPost(path string, form url.Values, token string, mutate func(*http.Request)) twReply {
	e.t.Helper()
	req, err := http.NewRequest("POST", e.url+path, strings.NewReader(form.Encode()))
	must(e.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if token != "" {
		req.Header.Set("X-Twilio-Signature", twiliosig.Sign(token, twPublic+path, form))
	}
	if mutate != nil {
		mutate(req)
	}
	resp, err := http.DefaultClient.Do(req)
	must(e.t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return twReply{resp.StatusCode, string(b)}
}

func smsForm(from, body string) url.Values {
	return url.Values{"AccountSid": {twAccount}, "MessageSid": {twSMS}, "From": {from}, "To": {"+15550000000"}, "Body": {body}, "NumMedia": {"0"}}
}

func TestTwilioSignatures(t *testing.T) {
	e, sms := newTwilioEdge(t, twToken, "secondary-token-0002")
	e.verifyPhone(sms, "alice", aliceTel)
	form := smsForm(aliceTel, "remember the milk")
	reform := func(f func(url.Values)) func(*http.Request) {
		return func(r *http.Request) {
			v := smsForm(aliceTel, "remember the milk")
			f(v)
			r.Body = io.NopCloser(strings.NewReader(v.Encode()))
			r.ContentLength = int64(len(v.Encode()))
		}
	}
	resign := func(u string) func(*http.Request) {
		return func(r *http.Request) { r.Header.Set("X-Twilio-Signature", twiliosig.Sign(twToken, u, form)) }
	}
	tests := []struct {
		name   string
		token  string
		mutate func(*http.Request)
		want   int
	}{
		{"valid", twToken, nil, http.StatusOK},
		{"valid with the second token (rotation)", "secondary-token-0002", nil, http.StatusOK},
		{"signed with the default port", "", resign("https://lethe.example:443/twilio/sms"), http.StatusOK},
		{"one parameter changed", twToken, reform(func(v url.Values) { v.Set("Body", "remember the mild") }), http.StatusForbidden},
		{"one parameter added", twToken, reform(func(v url.Values) { v.Set("Extra", "1") }), http.StatusForbidden},
		{"http:// URL signed", "", resign("http://lethe.example/twilio/sms"), http.StatusForbidden},
		{"signed for the Host header's URL", "", func(r *http.Request) {
			r.Header.Set("X-Twilio-Signature", twiliosig.Sign(twToken, e.url+"/twilio/sms", form))
			r.Header.Set("X-Forwarded-Proto", "http")
		}, http.StatusForbidden},
		{"signed for another path", "", resign(twPublic + "/twilio/voice"), http.StatusForbidden},
		{"missing header", "", nil, http.StatusForbidden},
		{"another token", "not-our-token", nil, http.StatusForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(e.bus.published())
			r := e.twPost("/twilio/sms", form, tt.token, tt.mutate)
			if r.status != tt.want {
				t.Fatalf("status %d, want %d (%s)", r.status, tt.want, r.body)
			}
			got := len(e.bus.published()) - before
			switch {
			case tt.want == http.StatusOK && got != 1:
				t.Fatalf("published %d events, want 1", got)
			case tt.want != http.StatusOK && got != 0:
				t.Fatalf("a refused request published %d events", got)
			}
		})
	}
	if !strings.Contains(e.logs.String(), `"security_event":"signature_failure"`) {
		t.Fatal("no signature_failure security event logged")
	}
	if strings.Contains(e.logs.String(), aliceTel) || strings.Contains(e.logs.String(), "remember the milk") {
		t.Fatal("the logs hold the number or the message")
	}
}

func TestTwilioJSONBody(t *testing.T) {
	e, sms := newTwilioEdge(t, twToken)
	e.verifyPhone(sms, "alice", aliceTel)
	body := []byte(`{"AccountSid":"` + twAccount + `","MessageSid":"` + twSMS + `","From":"` + aliceTel + `","Body":"json memo"}`)
	sum := sha256.Sum256(body)
	path := "/twilio/sms?bodySHA256=" + hex.EncodeToString(sum[:])
	sig := twiliosig.Sign(twToken, twPublic+path, nil)
	post := func(b []byte) int {
		req, _ := http.NewRequest("POST", e.url+path, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Twilio-Signature", sig)
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	changed := bytes.Clone(body)
	changed[len(changed)-3] ^= 1
	if code := post(changed); code != http.StatusForbidden {
		t.Fatalf("one byte changed: %d, want 403", code)
	}
	if n := len(e.bus.published()); n != 0 {
		t.Fatalf("published %d", n)
	}
	if code := post(body); code != http.StatusOK {
		t.Fatalf("signed JSON: %d", code)
	}
	if n := len(e.bus.published()); n != 1 {
		t.Fatalf("published %d, want 1", n)
	}
}

func TestTwilioRepeatedKeysAndReplays(t *testing.T) {
	e, sms := newTwilioEdge(t, twToken)
	e.verifyPhone(sms, "alice", aliceTel)
	form := smsForm(aliceTel, "pictures of the whiteboard")
	form["MediaUrl0"] = []string{"https://api.twilio.com/m/2", "https://api.twilio.com/m/1"}
	for i := range 3 {
		if r := e.twPost("/twilio/sms", form, twToken, nil); r.status != http.StatusOK || !strings.Contains(r.body, "<Response></Response>") {
			t.Fatalf("attempt %d: %d %s", i, r.status, r.body)
		}
	}
	evs := e.bus.published()
	if len(evs) != 3 || evs[0].ID() != evs[1].ID() || evs[1].ID() != evs[2].ID() {
		t.Fatalf("replays published %d events with ids that differ", len(evs))
	}
	// The body travels sealed under alice's key; the number as a hash.
	var in events.TwilioSMSReceived
	must(t, e.events.Decode(evs[0], &in))
	alice := e.pseudo.User("alice")
	if in.User != alice || in.FromHash != e.pseudo.Phone(aliceTel) || strings.Contains(string(evs[0].Data()), aliceTel) {
		t.Fatalf("event %+v", in)
	}
	sealed, _ := base64.StdEncoding.DecodeString(in.SealedBody)
	plain, err := e.keys.Open(context.Background(), alice, sealed, keys.AD(alice, "events/"+events.TypeTwilioSMSReceived, evs[0].ID(), "sealed_body"))
	if err != nil || string(plain) != "pictures of the whiteboard" {
		t.Fatalf("sealed body opens to %q (%v)", plain, err)
	}
	// A repeated parameter the edge acts on is ambiguous: refused.
	dup := smsForm(aliceTel, "x")
	dup["Body"] = []string{"x", "y"}
	if r := e.twPost("/twilio/sms", dup, twToken, nil); r.status != http.StatusBadRequest {
		t.Fatalf("repeated Body: %d", r.status)
	}
}

func TestTwilioUnknownOrUnverifiedNumberDropped(t *testing.T) {
	e, sms := newTwilioEdge(t, twToken)
	e.verifyPhone(sms, "alice", aliceTel)
	// Bob registers a number and never proves it.
	if r := e.do("POST", "/v1/me/phones", e.token("bob"), "application/json", []byte(`{"number":"`+bobTel+`"}`)); r.status != http.StatusCreated {
		t.Fatalf("bob adds: %d", r.status)
	}
	for _, from := range []string{bobTel, "+15559999999", "anonymous"} {
		if r := e.twPost("/twilio/sms", smsForm(from, "hello"), twToken, nil); r.status != http.StatusOK {
			t.Fatalf("sms from %s: %d", from, r.status)
		}
		v := url.Values{"AccountSid": {twAccount}, "CallSid": {twCall}, "From": {from}, "CallStatus": {"ringing"}}
		if r := e.twPost("/twilio/voice", v, twToken, nil); r.status != http.StatusOK || !strings.Contains(r.body, "<Reject/>") {
			t.Fatalf("call from %s: %d %s", from, r.status, r.body)
		}
	}
	if n := len(e.bus.published()); n != 0 {
		t.Fatalf("published %d events for unverified numbers", n)
	}
	entries, _, err := (&audit.Log{Docs: e.docs}).List(context.Background(), audit.Filter{})
	must(t, err)
	dropped := 0
	for _, en := range entries {
		if en.Action == functions.ActionTwilioDropped {
			dropped++
		}
	}
	if dropped != 6 {
		t.Fatalf("%d drop entries, want 6", dropped)
	}
}

func TestTwilioCallFlow(t *testing.T) {
	e, sms := newTwilioEdge(t, twToken)
	e.verifyPhone(sms, "alice", aliceTel)
	alice := e.pseudo.User("alice")
	voice := url.Values{"AccountSid": {twAccount}, "CallSid": {twCall}, "From": {aliceTel}, "To": {"+15550000000"}, "CallStatus": {"ringing"}}
	r := e.twPost("/twilio/voice", voice, twToken, nil)
	if r.status != http.StatusOK || !strings.Contains(r.body, `<Record recordingStatusCallback="https://lethe.example/twilio/recording"`) {
		t.Fatalf("voice: %d %s", r.status, r.body)
	}
	rec := url.Values{"AccountSid": {twAccount}, "CallSid": {twCall}, "RecordingSid": {twRec}, "RecordingStatus": {"completed"},
		"RecordingDuration": {"7"}, "RecordingUrl": {"https://evil.example/steal"}}
	if r := e.twPost("/twilio/recording", rec, twToken, nil); r.status != http.StatusNoContent {
		t.Fatalf("recording: %d %s", r.status, r.body)
	}
	status := url.Values{"AccountSid": {twAccount}, "CallSid": {twCall}, "CallStatus": {"completed"}, "CallDuration": {"9"}}
	if r := e.twPost("/twilio/status", status, twToken, nil); r.status != http.StatusNoContent {
		t.Fatalf("status: %d", r.status)
	}
	evs := e.bus.published()
	if len(evs) != 3 {
		t.Fatalf("published %d, want call, recording, status", len(evs))
	}
	var got events.TwilioRecordingCompleted
	must(t, e.events.Decode(evs[1], &got))
	if got.User != alice || got.RecordingSID != twRec || got.CallSID != twCall || strings.Contains(string(evs[1].Data()), "evil") {
		t.Fatalf("recording event %+v", got)
	}
	// A recording of a call nobody recorded, and a non-final recording
	// status: nothing published.
	other := url.Values{"AccountSid": {twAccount}, "CallSid": {"CA" + strings.Repeat("9", 32)}, "RecordingSid": {twRec}, "RecordingStatus": {"completed"}}
	inprog := url.Values{"AccountSid": {twAccount}, "CallSid": {twCall}, "RecordingSid": {twRec}, "RecordingStatus": {"in-progress"}}
	for _, v := range []url.Values{other, inprog} {
		if r := e.twPost("/twilio/recording", v, twToken, nil); r.status != http.StatusNoContent {
			t.Fatalf("recording: %d", r.status)
		}
	}
	if n := len(e.bus.published()); n != 3 {
		t.Fatalf("published %d, want still 3", n)
	}
}

func TestTwilioMalformed(t *testing.T) {
	e, sms := newTwilioEdge(t, twToken)
	e.verifyPhone(sms, "alice", aliceTel)
	bad := func(f func(url.Values)) url.Values { v := smsForm(aliceTel, "x"); f(v); return v }
	for name, v := range map[string]url.Values{
		"bad MessageSid":  bad(func(v url.Values) { v.Set("MessageSid", "SM../../x") }),
		"missing From":    bad(func(v url.Values) { v.Del("From") }),
		"uppercase SID":   bad(func(v url.Values) { v.Set("MessageSid", strings.ToUpper(twSMS)) }),
		"body over 1600":  bad(func(v url.Values) { v.Set("Body", strings.Repeat("a", 1601)) }),
		"bad account SID": bad(func(v url.Values) { v.Set("AccountSid", "ACnope") }),
	} {
		t.Run(name, func(t *testing.T) {
			if r := e.twPost("/twilio/sms", v, twToken, nil); r.status != http.StatusBadRequest {
				t.Fatalf("%d, want 400", r.status)
			}
		})
	}
	t.Run("another account", func(t *testing.T) {
		v := bad(func(v url.Values) { v.Set("AccountSid", "AC"+strings.Repeat("f", 32)) })
		if r := e.twPost("/twilio/sms", v, twToken, nil); r.status != http.StatusForbidden {
			t.Fatalf("%d, want 403", r.status)
		}
	})
	t.Run("oversized", func(t *testing.T) {
		v := bad(func(v url.Values) { v.Set("Pad", strings.Repeat("a", 70<<10)) })
		if r := e.twPost("/twilio/sms", v, twToken, nil); r.status != http.StatusRequestEntityTooLarge {
			t.Fatalf("%d, want 413", r.status)
		}
	})
	t.Run("wrong content type", func(t *testing.T) {
		r := e.twPost("/twilio/sms", smsForm(aliceTel, "x"), twToken, func(r *http.Request) { r.Header.Set("Content-Type", "text/plain") })
		if r.status != http.StatusUnsupportedMediaType {
			t.Fatalf("%d, want 415", r.status)
		}
	})
	if n := len(e.bus.published()); n != 0 {
		t.Fatalf("published %d", n)
	}
}

func TestTwilioForgeriesAreRateLimited(t *testing.T) {
	sms := &fakeSMS{}
	e := newEdgeWith(t, edgeOptions{twilio: &twilioSetup{tokens: []string{twToken}, sms: sms},
		limits: functions.Limits{FailedAuth: ratelimit.PerMinute(2, 2)}})
	codes := []int{}
	for range 4 {
		codes = append(codes, e.twPost("/twilio/sms", smsForm(aliceTel, "x"), "forged-token", nil).status)
	}
	if codes[0] != http.StatusForbidden || codes[3] != http.StatusTooManyRequests {
		t.Fatalf("statuses %v: want 403 then 429", codes)
	}
}

func TestTwilioPublishFailureIsNotAcknowledged(t *testing.T) {
	e, sms := newTwilioEdge(t, twToken)
	e.verifyPhone(sms, "alice", aliceTel)
	e.bus.setFail(fmt.Errorf("bus down"))
	if r := e.twPost("/twilio/sms", smsForm(aliceTel, "x"), twToken, nil); r.status != http.StatusServiceUnavailable {
		t.Fatalf("%d, want 503 so Twilio retries", r.status)
	}
}

func TestPhonesAPI(t *testing.T) {
	e, sms := newTwilioEdge(t, twToken)
	alice, bob := e.token("alice"), e.token("bob")
	for name, body := range map[string]string{
		"not E.164": `{"number":"5551230001"}`, "extra field": `{"number":"` + aliceTel + `","x":1}`,
		"not JSON": `number=1`, "number not a string": `{"number":15551230001}`,
	} {
		if r := e.do("POST", "/v1/me/phones", alice, "application/json", []byte(body)); r.status != http.StatusBadRequest {
			t.Fatalf("%s: %d", name, r.status)
		}
	}
	r := e.do("POST", "/v1/me/phones", alice, "application/json", []byte(`{"number":"`+aliceTel+`"}`))
	if r.status != http.StatusCreated || r.body["masked"] != "+1••••••••01" || r.body["verified"] != false {
		t.Fatalf("add: %d %v", r.status, r.body)
	}
	id := r.body["id"].(string)
	if strings.Contains(fmt.Sprint(r.body), "5551230001") {
		t.Fatal("the reply holds the number")
	}
	code := sms.code(aliceTel)
	wrong := "000000"
	if code == wrong {
		wrong = "000001"
	}
	if r := e.do("POST", "/v1/me/phones/"+id+"/verify", alice, "application/json", []byte(`{"code":"`+wrong+`"}`)); r.status != http.StatusBadRequest || errCode(r) != "wrong_code" {
		t.Fatalf("wrong code: %d %s", r.status, errCode(r))
	}
	if r := e.do("POST", "/v1/me/phones/"+id+"/verify", bob, "application/json", []byte(`{"code":"`+code+`"}`)); r.status != http.StatusNotFound {
		t.Fatalf("bob verifies alice's phone: %d", r.status)
	}
	if r := e.do("POST", "/v1/me/phones/"+id+"/verify", alice, "application/json", []byte(`{"code":"`+code+`"}`)); r.status != http.StatusOK {
		t.Fatalf("verify: %d", r.status)
	}
	if r := e.do("POST", "/v1/me/phones/"+id+"/verify", alice, "application/json", []byte(`{"code":"`+code+`"}`)); r.status != http.StatusConflict {
		t.Fatalf("replayed verify: %d, want 409", r.status)
	}
	if r := e.do("POST", "/v1/me/phones", alice, "application/json", []byte(`{"number":"`+strings.Repeat("1", 2<<10)+`"}`)); r.status != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized body: %d", r.status)
	}
	if r := e.do("POST", "/v1/me/phones", bob, "application/json", []byte(`{"number":"`+aliceTel+`"}`)); r.status != http.StatusConflict {
		t.Fatalf("bob adds alice's verified number: %d", r.status)
	}
	r = e.do("GET", "/v1/me/phones", alice, "", nil)
	if list, _ := r.body["phones"].([]any); r.status != http.StatusOK || len(list) != 1 {
		t.Fatalf("list: %d %v", r.status, r.body)
	}
	if r := e.do("GET", "/v1/me/phones", bob, "", nil); len(r.body["phones"].([]any)) != 0 {
		t.Fatalf("bob lists %v", r.body)
	}
	if r := e.do("DELETE", "/v1/me/phones/"+id, bob, "", nil); r.status != http.StatusNotFound {
		t.Fatalf("bob deletes alice's phone: %d", r.status)
	}
	if r := e.do("DELETE", "/v1/me/phones/"+id, alice, "", nil); r.status != http.StatusNoContent {
		t.Fatalf("delete: %d", r.status)
	}
	if r := e.do("GET", "/v1/me/phones", "", "", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("no token: %d", r.status)
	}
}

// FuzzTwilioWebhook: any body, form or JSON, signed or not, to any
// webhook is answered with a client error or success, never a 5xx, and
// nothing unsigned publishes.
func FuzzTwilioWebhook(f *testing.F) {
	f.Add("sms", smsForm(aliceTel, "hi").Encode(), true, false)
	f.Add("voice", "AccountSid="+twAccount+"&CallSid="+twCall+"&From=%2B1&CallStatus=ringing", true, false)
	f.Add("recording", "RecordingSid=RE&RecordingStatus=completed&a=1&a=2", false, false)
	f.Add("status", "%zz", true, false)
	f.Add("sms", `{"AccountSid":"`+twAccount+`","MessageSid":"`+twSMS+`","From":"+1","Body":{"x":[1]}}`, true, true)
	e, _ := newTwilioEdge(f, twToken)
	f.Fuzz(func(t *testing.T, route, body string, sign, asJSON bool) {
		path := "/twilio/" + map[bool]string{true: route, false: "sms"}[route == "sms" || route == "voice" || route == "status" || route == "recording"]
		ct := "application/x-www-form-urlencoded"
		var sig string
		if asJSON {
			sum := sha256.Sum256([]byte(body))
			path += "?bodySHA256=" + hex.EncodeToString(sum[:])
			ct = "application/json"
			sig = twiliosig.Sign(twToken, twPublic+path, nil)
		} else if form, err := url.ParseQuery(body); err == nil {
			sig = twiliosig.Sign(twToken, twPublic+path, form)
		}
		req, err := http.NewRequest("POST", e.url+path, strings.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", ct)
		if sign {
			req.Header.Set("X-Twilio-Signature", sig)
		}
		before := len(e.bus.published())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			t.Fatalf("%s %q: %d", path, body, resp.StatusCode)
		}
		if !sign && len(e.bus.published()) != before {
			t.Fatal("an unsigned request published")
		}
	})
}
