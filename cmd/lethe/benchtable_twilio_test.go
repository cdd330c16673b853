package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/twilioapi/twiliofake"
	"github.com/lethe-dev/lethe/infra/twiliosig"
)

// benchPublishDelay is LETHE_PUBLISH_DELAY for the webhook row: the
// default, as deployed.
var benchPublishDelay = time.Millisecond

// benchWebhooksPerClient: each load client posts this many SMS webhooks.
const benchWebhooksPerClient = 100

// benchWebhookForms are distinct signed SMS webhooks (one MessageSid
// each), made before the clock starts: signing is Twilio's work.
func benchWebhookForms(from string) (bodies []string, sigs []string) {
	for i := range benchClients * benchWebhooksPerClient {
		f := url.Values{"AccountSid": {e2eAccount}, "MessageSid": {fmt.Sprintf("SM%032x", i+1)}, "From": {from},
			"To": {"+15005550006"}, "Body": {fmt.Sprintf("bench memo %d about the quarterly garden plan", i)}, "NumMedia": {"0"},
			"SmsStatus": {"received"}, "ApiVersion": {"2010-04-01"}}
		bodies = append(bodies, f.Encode())
		sigs = append(sigs, twiliosig.Sign(e2eToken, e2ePublic+"/twilio/sms", f))
	}
	return bodies, sigs
}

func benchPostWebhook(hc *http.Client, u, body, sig string) error {
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", sig)
	return benchDo(hc, req, http.StatusOK)
}

// benchBareWebhook is the floor: a net/http handler that reads the same
// body and answers the same empty TwiML, nothing else.
func benchBareWebhook(b *testing.B) string {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			http.Error(w, "read", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "text/xml; charset=utf-8")
		_, _ = io.WriteString(w, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response></Response>\n")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

// BenchmarkTableTwilioWebhook: the SMS webhook through the real edge
// (signature over the public URL, schema on the parameters, owner lookup,
// body sealed under the owner's key, one CloudEvent published on the
// embedded bus before the answer) with every worker off, against a bare
// net/http handler that reads the same body, in the same run: 16 clients.
func BenchmarkTableTwilioWebhook(b *testing.B) {
	const from = "+15557650101"
	bodies, sigs := benchWebhookForms(from)
	hc := benchHTTPClient()
	for range b.N {
		bare := benchBareWebhook(b)
		floor, err := benchLoad(benchWebhooksPerClient, func(c, i int) error {
			k := c*benchWebhooksPerClient + i
			return benchPostWebhook(hc, bare+"/twilio/sms", bodies[k], sigs[k])
		})
		if err != nil {
			b.Fatal(err)
		}

		fake := twiliofake.New(e2eAccount, e2eToken)
		b.Cleanup(fake.Close)
		cfg := testConfig(b)
		cfg.Workers = "none"
		cfg.PublishDelay = benchPublishDelay
		cfg.TwilioAuthToken, cfg.TwilioAccountSID, cfg.PublicURL = e2eToken, e2eAccount, e2ePublic
		cfg.TwilioAPIURL, cfg.TwilioFrom, cfg.TwilioDeleteRecordings = fake.URL, "+15005550006", true
		p := startTestPipeline(b, cfg, overrides{})
		tok, err := p.app.issuer.Mint("bench-twilio", time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		proveNumber(client{b, "http://" + p.addr, tok}, fake, from, true)
		edge, err := benchLoad(benchWebhooksPerClient, func(c, i int) error {
			k := c*benchWebhooksPerClient + i
			return benchPostWebhook(hc, "http://"+p.addr+"/twilio/sms", bodies[k], sigs[k])
		})
		if err != nil {
			b.Fatal(err)
		}
		if err := p.stop(); err != nil {
			b.Fatal(err)
		}
		hc.CloseIdleConnections()

		b.ReportMetric(edge.perSecond(), "webhooks/s")
		b.ReportMetric(benchMS(benchPercentile(edge.lat, 50)), "p50-ms")
		b.ReportMetric(benchMS(benchPercentile(edge.lat, 99)), "p99-ms")
		b.ReportMetric(floor.perSecond(), "bare-webhooks/s")
		b.ReportMetric(benchMS(benchPercentile(floor.lat, 99)), "bare-p99-ms")
		b.ReportMetric(float64(len(edge.lat)), "webhooks")
	}
}
