package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"

	"github.com/lethe-dev/lethe/app/phones"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/twilioapi/twiliofake"
	"github.com/lethe-dev/lethe/infra/twiliosig"
)

// TestTwilioConfigRefusals: the real process refuses unsigned webhooks
// and a missing token in production, and webhooks without a public URL
// anywhere.
func TestTwilioConfigRefusals(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"skip flag in production", []string{"LETHE_ENV=production", "INF_TWILIO_SKIP_SIG_VERIFY=true", "LETHE_PUBLIC_URL=https://lethe.example"}, "INF_TWILIO_SKIP_SIG_VERIFY=true"},
		{"no token in production", []string{"LETHE_ENV=production"}, "INF_TWILIO_AUTH_TOKEN is empty"},
		{"no public URL", []string{"INF_TWILIO_AUTH_TOKEN=tok"}, "LETHE_PUBLIC_URL"},
		{"public URL with a query", []string{"INF_TWILIO_AUTH_TOKEN=tok", "LETHE_PUBLIC_URL=https://x.example/?a=1"}, "LETHE_PUBLIC_URL"},
		{"bad account SID", []string{"INF_TWILIO_ACCOUNT_SID=AC12"}, "INF_TWILIO_ACCOUNT_SID"},
		{"secondary without primary", []string{"INF_TWILIO_AUTH_TOKEN_SECONDARY=x", "LETHE_PUBLIC_URL=https://x.example"}, "INF_TWILIO_AUTH_TOKEN_SECONDARY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.CommandContext(context.Background(), os.Args[0], "run")
			cmd.Env = append(letheEnv(t.TempDir()), tc.env...)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatal("lethe run started")
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("error does not name %s: %s", tc.want, out)
			}
		})
	}
}

const (
	e2eAccount = "AC00112233445566778899aabbccddeeff"
	e2eToken   = "e2e-twilio-auth-token"
	e2ePublic  = "https://lethe.example"
)

// twilioClient posts webhooks as Twilio does: form-encoded, signed over
// the public URL.
type twilioClient struct {
	t    *testing.T
	base string
}

func (c twilioClient) post(path string, form url.Values) (int, string) {
	c.t.Helper()
	req, err := http.NewRequest("POST", c.base+path, strings.NewReader(form.Encode()))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", twiliosig.Sign(e2eToken, e2ePublic+path, form))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// search is the one place e2e tests search (the API may move to a POST
// body; switch it here).
func search(c client, q string) searchReply {
	c.t.Helper()
	var res searchReply
	if code := c.search(q, &res); code != http.StatusOK {
		c.t.Fatalf("search %q: %d", q, code)
	}
	return res
}

// waitSearch polls until q finds a conversation whose id has prefix.
func waitSearch(c client, q, prefix string) string {
	c.t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		for _, r := range search(c, q).Results {
			if strings.HasPrefix(r.ConversationID, prefix) {
				return r.ConversationID
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	c.t.Fatalf("search %q found no %s* conversation in time", q, prefix)
	return ""
}

// proveNumber registers number for c's user and enters the code the fake
// Twilio was asked to send to it.
func proveNumber(c client, fake *twiliofake.Server, number string, verify bool) {
	c.t.Helper()
	var added struct {
		ID string `json:"id"`
	}
	if code := c.do("POST", "/v1/me/phones", "application/json", []byte(`{"number":"`+number+`"}`), &added); code != http.StatusCreated {
		c.t.Fatalf("add %s: %d", number, code)
	}
	if !verify {
		return
	}
	var sent string
	for _, m := range fake.Messages() {
		if m.To == number {
			sent = regexp.MustCompile(`[0-9]{6}`).FindString(m.Body)
		}
	}
	if code := c.do("POST", "/v1/me/phones/"+added.ID+"/verify", "application/json", []byte(`{"code":"`+sent+`"}`), nil); code != http.StatusOK {
		c.t.Fatalf("verify %s: %d", number, code)
	}
}

// TestTwilioEndToEndPush: Twilio webhooks into memories on the Pub/Sub
// and Firestore emulators with real push delivery: every subscription is a push
// subscription to the running edge's /push/{subscription} and no pull
// receiver runs. An SMS from a verified number, sent three times, is one
// memory found by its owner's search and by nobody else's; an SMS from a
// number registered but never verified keeps nothing; a call's recording
// is fetched from the fake Twilio (404 until ready, then a redirect),
// transcribed, searchable, and deleted at Twilio.
func TestTwilioEndToEndPush(t *testing.T) {
	psHost, fsHost := requireEmulators(t)
	requirePocketSphinx(t)
	fake := twiliofake.New(e2eAccount, e2eToken)
	t.Cleanup(fake.Close)

	// The emulator pushes to a fixed address: reserve a port first.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	cfg := testConfig(t)
	cfg.ProjectID = fmt.Sprintf("twilio-e2e-%d", time.Now().UnixNano())
	cfg.Bus, cfg.PubSubEmulatorHost = "gcp", psHost
	cfg.Documents, cfg.FirestoreEmulatorHost = "firestore", fsHost
	cfg.Addr, cfg.Delivery, cfg.PushEndpoint = addr, "push", "http://"+addr
	cfg.Workers = "transcribe,embed,store,twilio"
	cfg.TwilioAuthToken, cfg.TwilioAccountSID, cfg.PublicURL = e2eToken, e2eAccount, e2ePublic
	cfg.TwilioAPIURL, cfg.TwilioFrom, cfg.TwilioDeleteRecordings = fake.URL, "+15005550006", true
	if errs := cfg.validateTwilio(); len(errs) > 0 {
		t.Fatal(errs)
	}
	p := startTestPipeline(t, cfg, overrides{})
	// Delivery is the emulator's push: the subscription pushes to the
	// running edge and nothing pulls.
	sub, err := p.app.bus.Client().SubscriptionAdminClient.GetSubscription(context.Background(),
		&pubsubpb.GetSubscriptionRequest{Subscription: p.app.bus.SubscriptionName(workerTwilio)})
	if err != nil {
		t.Fatal(err)
	}
	if got := sub.GetPushConfig().GetPushEndpoint(); got != "http://"+addr+"/push/twilio" {
		t.Fatalf("twilio subscription push endpoint %q", got)
	}
	if sub.GetDeadLetterPolicy().GetDeadLetterTopic() != p.app.bus.TopicName("twilio-dead-letter") {
		t.Fatalf("dead-letter policy %v", sub.GetDeadLetterPolicy())
	}
	mint := func(uid string) client {
		tok, err := p.app.issuer.Mint(uid, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return client{t, "http://" + p.addr, tok}
	}
	alice, bob := mint("alice-twilio"), mint("bob-twilio")
	tw := twilioClient{t, "http://" + p.addr}
	const aliceTel, carolTel = "+15557650001", "+15557650003"
	proveNumber(alice, fake, aliceTel, true)
	proveNumber(bob, fake, carolTel, false) // bob cannot read carol's code

	// SMS: three deliveries of one signed webhook.
	sms := url.Values{"AccountSid": {e2eAccount}, "MessageSid": {"SM00112233445566778899aabbccddeeff"},
		"From": {aliceTel}, "To": {"+15005550006"}, "Body": {"pick up the saxophone reeds thursday"}, "NumMedia": {"0"}}
	for i := range 3 {
		if code, body := tw.post("/twilio/sms", sms); code != http.StatusOK || !strings.Contains(body, "<Response>") {
			t.Fatalf("sms %d: %d %s", i, code, body)
		}
	}
	stranger := url.Values{"AccountSid": {e2eAccount}, "MessageSid": {"SM99112233445566778899aabbccddeeff"},
		"From": {carolTel}, "To": {"+15005550006"}, "Body": {"carol private saxophone note"}}
	if code, _ := tw.post("/twilio/sms", stranger); code != http.StatusOK {
		t.Fatalf("stranger sms: %d", code)
	}
	smsConv := waitSearch(alice, "saxophone reeds", "sms-")
	if res := search(bob, "saxophone reeds"); len(res.Results) != 0 {
		t.Fatalf("bob finds alice's SMS: %+v", res.Results)
	}

	// A call: answered with TwiML that records, then the recording.
	call := url.Values{"AccountSid": {e2eAccount}, "CallSid": {"CA00112233445566778899aabbccddeeff"},
		"From": {aliceTel}, "To": {"+15005550006"}, "CallStatus": {"ringing"}}
	if code, body := tw.post("/twilio/voice", call); code != http.StatusOK || !strings.Contains(body, "<Record") {
		t.Fatalf("voice: %d %s", code, body)
	}
	wav, err := readTestdata("speech-hello.wav")
	if err != nil {
		t.Fatal(err)
	}
	const recSID = "RE00112233445566778899aabbccddeeff"
	fake.AddRecording(recSID, wav, 2)
	rec := url.Values{"AccountSid": {e2eAccount}, "CallSid": call["CallSid"], "RecordingSid": {recSID},
		"RecordingStatus": {"completed"}, "RecordingDuration": {"3"}, "RecordingUrl": {"https://evil.example/r"}}
	if code, _ := tw.post("/twilio/recording", rec); code != http.StatusNoContent {
		t.Fatalf("recording: %d", code)
	}
	status := url.Values{"AccountSid": {e2eAccount}, "CallSid": call["CallSid"], "CallStatus": {"completed"}, "CallDuration": {"4"}}
	if code, _ := tw.post("/twilio/status", status); code != http.StatusNoContent {
		t.Fatalf("status: %d", code)
	}
	callConv := waitSearch(alice, "hello", "call-")
	if res := search(bob, "hello"); len(res.Results) != 0 {
		t.Fatalf("bob finds alice's call: %+v", res.Results)
	}
	deadline := time.Now().Add(time.Minute)
	for len(fake.Deleted()) == 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if d := fake.Deleted(); len(d) != 1 || d[0] != recSID {
		t.Fatalf("Twilio saw deletes %v, want %s", d, recSID)
	}
	if fake.Fetches(recSID) < 3 {
		t.Fatalf("fetched %d times; the fake answers 404 twice first", fake.Fetches(recSID))
	}
	ctx := context.Background()
	calls := &phones.Calls{Docs: p.app.docs}
	deadline = time.Now().Add(time.Minute)
	for {
		c, ok, err := calls.Get(ctx, call.Get("CallSid"))
		if err != nil {
			t.Fatal(err)
		}
		if ok && c.Status == "completed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("call record %+v", c)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// One memory per SMS despite three deliveries; nothing of carol's.
	user := p.app.pseudo.User("alice-twilio")
	convs, err := p.app.docs.Query(ctx, docs.Query{User: user, Collection: records.Conversations})
	if err != nil {
		t.Fatal(err)
	}
	if len(convs) != 2 {
		t.Fatalf("alice has %d conversations, want the SMS and the call (%s, %s)", len(convs), smsConv, callConv)
	}
	if n, err := p.app.vectors.Count(ctx, user); err != nil || n != 2 {
		t.Fatalf("alice has %d vectors (%v), want 2", n, err)
	}
	bobUser := p.app.pseudo.User("bob-twilio")
	if n, _ := p.app.docs.CountUser(ctx, bobUser); n > 2 {
		// bob's keyset and his unverified phone, nothing else.
		t.Fatalf("bob holds %d documents", n)
	}
	if res := search(bob, "carol private saxophone"); len(res.Results) != 0 {
		t.Fatal("the stranger's SMS was kept")
	}
}

// TestTwilioPullMode: the same intake with the twilio worker pulling from
// its subscription (lethe run's default delivery, embedded bus).
func TestTwilioPullMode(t *testing.T) {
	fake := twiliofake.New(e2eAccount, e2eToken)
	t.Cleanup(fake.Close)
	cfg := testConfig(t)
	cfg.Workers = "transcribe,embed,store,twilio"
	cfg.TwilioAuthToken, cfg.TwilioAccountSID, cfg.PublicURL = e2eToken, e2eAccount, e2ePublic
	cfg.TwilioAPIURL, cfg.TwilioFrom, cfg.TwilioDeleteRecordings = fake.URL, "+15005550006", false
	p := startTestPipeline(t, cfg, overrides{STT: instantSTT{}})
	tok, err := p.app.issuer.Mint("alice-pull", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	alice := client{t, "http://" + p.addr, tok}
	tw := twilioClient{t, "http://" + p.addr}
	const tel = "+15557650201"
	proveNumber(alice, fake, tel, true)
	sms := url.Values{"AccountSid": {e2eAccount}, "MessageSid": {"SM00000000000000000000000000000201"},
		"From": {tel}, "Body": {"renew the library card"}}
	if code, _ := tw.post("/twilio/sms", sms); code != http.StatusOK {
		t.Fatalf("sms: %d", code)
	}
	waitSearch(alice, "library card", "sms-")

	call := url.Values{"AccountSid": {e2eAccount}, "CallSid": {"CA00000000000000000000000000000201"}, "From": {tel}, "CallStatus": {"ringing"}}
	if code, _ := tw.post("/twilio/voice", call); code != http.StatusOK {
		t.Fatalf("voice: %d", code)
	}
	wav, err := readTestdata("speech-hello.wav")
	if err != nil {
		t.Fatal(err)
	}
	const recSID = "RE00000000000000000000000000000201"
	fake.AddRecording(recSID, wav, 1)
	rec := url.Values{"AccountSid": {e2eAccount}, "CallSid": call["CallSid"], "RecordingSid": {recSID}, "RecordingStatus": {"completed"}}
	if code, _ := tw.post("/twilio/recording", rec); code != http.StatusNoContent {
		t.Fatalf("recording: %d", code)
	}
	waitSearch(alice, "instant words", "call-")
	if d := fake.Deleted(); len(d) != 0 {
		t.Fatalf("deleted %v with LETHE_TWILIO_DELETE_RECORDINGS=false", d)
	}
}

// TestTwilioTokenOnlyWhereTwilioIsServed: production refuses a missing
// Twilio token in the processes that verify webhooks or call Twilio (the
// edge, lethe run, the twilio worker), not in other workers or an
// operator's commands, which never hold the token.
func TestTwilioTokenOnlyWhereTwilioIsServed(t *testing.T) {
	for _, tc := range []struct {
		command string
		args    []string
		refused bool
	}{
		{"run", nil, true},
		{"edge", nil, true},
		{"worker", []string{"twilio"}, true},
		{"worker", []string{"transcribe,twilio"}, true},
		{"worker", []string{"transcribe"}, false},
		{"users", []string{"erase", "alice"}, false},
		{"dlq", []string{"list", "audio"}, false},
	} {
		t.Run(tc.command+" "+strings.Join(tc.args, " "), func(t *testing.T) {
			c := Config{Env: envProduction, command: tc.command, commandArgs: tc.args}
			refused := false
			for _, err := range c.guardTwilio() {
				refused = refused || strings.Contains(err.Error(), "INF_TWILIO_AUTH_TOKEN is empty")
			}
			if refused != tc.refused {
				t.Fatalf("refused %v, want %v", refused, tc.refused)
			}
		})
	}
}
