package functions_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/forget"
	"github.com/lethe-dev/lethe/app/phones"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/functions"
	"github.com/lethe-dev/lethe/infra/audio"
	"github.com/lethe-dev/lethe/infra/auth/jwtverify"
	"github.com/lethe-dev/lethe/infra/auth/localissuer"
	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/blobs/dirblobs"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/docs/sqlitedocs"
	"github.com/lethe-dev/lethe/infra/embed"
	"github.com/lethe-dev/lethe/infra/embed/hashembed"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/keys/filekek"
	"github.com/lethe-dev/lethe/infra/keys/pseudonym"
	"github.com/lethe-dev/lethe/infra/keys/secrets"
	"github.com/lethe-dev/lethe/infra/logging"
	"github.com/lethe-dev/lethe/infra/ratelimit"
	"github.com/lethe-dev/lethe/infra/ratelimit/memlimit"
	"github.com/lethe-dev/lethe/infra/security"
	"github.com/lethe-dev/lethe/infra/vectors"
	"github.com/lethe-dev/lethe/infra/vectors/flatvectors"
)

// recordingBus keeps what was published; fail makes Publish fail.
type recordingBus struct {
	mu     sync.Mutex
	events []event.Event
	fail   error
}

func (b *recordingBus) Publish(ctx context.Context, topic string, e event.Event) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail != nil {
		return b.fail
	}
	b.events = append(b.events, e)
	return nil
}

func (b *recordingBus) published() []event.Event {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]event.Event(nil), b.events...)
}

func (b *recordingBus) setFail(err error) {
	b.mu.Lock()
	b.fail = err
	b.mu.Unlock()
}

type edge struct {
	t      testing.TB
	url    string
	srv    *functions.Server // its Routes() are what it serves
	issuer *localissuer.Issuer
	bus    *recordingBus
	docs   docs.Store
	dir    string
	pseudo *pseudonym.Pseudonymizer
	logs   *bytes.Buffer
	blobs  blobs.Bucket
	keys   *keys.Keyring
	events *events.Registry
	saga   *forget.Saga
	// sessions records the uids whose sessions were revoked.
	sessions *revokedSessions
	vectors  vectors.Index
	// phones and calls back the Twilio routes (edgeOptions.twilio).
	phones *phones.Registry
	calls  *phones.Calls
}

type revokedSessions struct {
	mu   sync.Mutex
	uids []string
}

func (r *revokedSessions) RevokeSessions(ctx context.Context, uid string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.uids = append(r.uids, uid)
	return nil
}

func newEdge(t testing.TB, maxChunk int64) *edge {
	return newEdgeWithLimits(t, maxChunk, functions.Limits{})
}

func newEdgeWithLimits(t testing.TB, maxChunk int64, limits functions.Limits) *edge {
	t.Helper()
	return newEdgeWith(t, edgeOptions{maxChunk: maxChunk, limits: limits})
}

// edgeOptions are what tests vary in the edge's Deps.
type edgeOptions struct {
	maxChunk  int64
	limits    functions.Limits
	uploads   functions.UploadSigner // nil: signed uploads not configured
	maxUpload int64
	ttl       time.Duration
	now       func() time.Time  // nil: the real clock
	exportKey []byte            // signs export download URLs
	retention records.Retention // defaults of users who set none
	// deadLetters serves the admin dead-letter routes; nil: 501.
	deadLetters functions.DeadLetters
	embedder    embed.Embedder // nil: hashembed
	noJWKS      bool           // the issuer's keys not served (LETHE_AUTH=firebase)
	// Hardening: the shared limiter (nil: in-memory), trusted proxy
	// hops, security signals, the admin second factor, browser policy.
	limiter      ratelimit.Limiter
	proxyHops    int
	security     *security.Signals
	secondFactor bool
	browser      functions.BrowserPolicy
	streams      functions.StreamLimits
	// twilio configures the Twilio webhooks and phones; nil: neither.
	twilio *twilioSetup
	leases ratelimit.Leases // nil: in-process
}

func newEdgeWith(t testing.TB, o edgeOptions) *edge {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	reg, err := events.NewRegistry()
	must(t, err)
	iss, err := localissuer.Open(filepath.Join(dir, "issuer.pem"))
	must(t, err)
	ver, err := iss.Verifier()
	must(t, err)
	store, err := sqlitedocs.Open(ctx, filepath.Join(dir, "docs.db"))
	must(t, err)
	t.Cleanup(func() { store.Close() })
	bucket, err := dirblobs.Open(filepath.Join(dir, "blobs"))
	must(t, err)
	idx, err := flatvectors.Open(filepath.Join(dir, "vectors"))
	must(t, err)
	t.Cleanup(func() { idx.Close() })
	kek, err := filekek.Open(filepath.Join(dir, "kek.json"))
	must(t, err)
	secret, err := secrets.New(store, kek).Get(context.Background(), secrets.UIDHMAC, 1)
	must(t, err)
	bus := &recordingBus{}
	logs := &bytes.Buffer{}
	e := &edge{t: t, issuer: iss, bus: bus, docs: store, dir: dir, pseudo: pseudonym.New(1, secret), logs: logs}
	keyring := keys.NewKeyring(kek, keys.NewDocsKeysetStore(store), keys.Options{})
	var primary ratelimit.Limiter = memlimit.New(memlimit.Options{})
	if o.limiter != nil {
		primary = o.limiter
	}
	limiter := ratelimit.NewFallback(primary, memlimit.New(memlimit.Options{}), nil)
	trail := &audit.Log{Docs: store}
	e.saga = &forget.Saga{Docs: store, Blobs: bucket, Vectors: idx, Keys: keyring, Rates: limiter,
		RateKeys: functions.RateLimitKeys, Audit: trail, Bus: bus, Events: reg}
	e.sessions = &revokedSessions{}
	e.blobs, e.events, e.keys, e.vectors = bucket, reg, keyring, idx
	jwks := iss.JWKS()
	if o.noJWKS {
		jwks = nil
	}
	var leases ratelimit.Leases = memlimit.NewLeases(nil)
	if o.leases != nil {
		leases = o.leases
	}
	var embedder embed.Embedder = hashembed.New()
	if o.embedder != nil {
		embedder = o.embedder
	}
	var tw *functions.Twilio
	if o.twilio != nil {
		e.phones = &phones.Registry{Docs: store, Hash: e.pseudo.Phone, Digest: keyring, SMS: o.twilio.sms, Now: o.now}
		e.calls = &phones.Calls{Docs: store, Now: o.now}
		tw = o.twilio.config(t, e)
	}
	srv := functions.New(functions.Deps{
		Twilio: tw, Phones: e.phones,
		Erasures: e.saga, Conversations: &forget.Conversations{Docs: store, Blobs: bucket, Vectors: idx, Audit: trail},
		Audit: trail, Sessions: e.sessions,
		Verifier: ver, Pseudonyms: e.pseudo, Docs: store, Blobs: bucket,
		Keys:    keyring,
		Vectors: idx, Embedder: embedder, Bus: bus, Events: reg,
		Logger:        logging.New(&lockedWriter{w: logs}, logging.Options{Level: slog.LevelDebug}),
		LogUsers:      logging.NewUserHasher(1, []byte("0123456789abcdef0123456789abcdef")),
		MaxChunkBytes: o.maxChunk, JWKS: jwks,
		Limiter: limiter,
		Limits:  o.limits,
		Uploads: o.uploads, MaxUploadBytes: o.maxUpload, UploadURLTTL: o.ttl,
		Now: o.now, ExportURLKey: o.exportKey,
		Retention:        o.retention,
		DeadLetters:      o.deadLetters,
		TrustedProxyHops: o.proxyHops, Security: o.security, AdminSecondFactor: o.secondFactor, Browser: o.browser,
		Leases: leases, Streams: o.streams,
	})
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	e.url = ts.URL
	e.srv = srv
	return e
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func (e *edge) token(uid string) string {
	tok, err := e.issuer.Mint(uid, time.Hour)
	must(e.t, err)
	return tok
}

type reply struct {
	status int
	body   map[string]any
	header http.Header
}

func (e *edge) do(method, path, token, contentType string, body []byte) reply {
	e.t.Helper()
	return e.send(e.request(method, path, token, contentType, body))
}

// request is a request to the edge with a bearer token and a body of
// contentType ("" for none of either).
func (e *edge) request(method, path, token, contentType string, body []byte) *http.Request {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, bytes.NewReader(body))
	must(e.t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return req
}

// send does req and reads the JSON reply (every edge reply is JSON).
func (e *edge) send(req *http.Request) reply {
	e.t.Helper()
	r := e.doRaw(req)
	var m map[string]any
	if len(r.body) > 0 {
		if err := json.Unmarshal(r.body, &m); err != nil {
			e.t.Fatalf("%s %s: non-JSON reply %q", req.Method, req.URL.Path, r.body)
		}
	}
	return reply{r.status, m, r.header}
}

type rawReply struct {
	status int
	body   []byte
	header http.Header
}

// doRaw sends req and reads the answer as bytes.
func (e *edge) doRaw(req *http.Request) rawReply {
	e.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	must(e.t, err)
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return rawReply{resp.StatusCode, nil, resp.Header} // the connection is another protocol's now
	}
	raw, err := io.ReadAll(resp.Body)
	must(e.t, err)
	return rawReply{resp.StatusCode, raw, resp.Header}
}

func errCode(r reply) string {
	if e, ok := r.body["error"].(map[string]any); ok {
		s, _ := e["code"].(string)
		return s
	}
	return ""
}

// tone is a short PCM16 WAV: real audio, made here.
func tone(hz float64, ms int) []byte {
	const rate = 16000
	n := rate * ms / 1000
	s := make([]int16, n)
	for i := range s {
		s[i] = int16(8000 * math.Sin(2*math.Pi*hz*float64(i)/rate))
	}
	return audio.EncodeWAV(audio.PCM{SampleRate: rate, Samples: s})
}

func TestAuthentication(t *testing.T) {
	e := newEdge(t, 1<<20)
	other, err := localissuer.Open(filepath.Join(t.TempDir(), "other.pem"))
	must(t, err)
	forged, err := other.Mint("alice", time.Hour)
	must(t, err)
	good := e.token("alice")
	parts := strings.Split(good, ".")
	tampered := parts[0] + "." + strings.TrimRight(parts[1], "=") + "x." + parts[2]
	tests := []struct {
		name, header string
	}{
		{"no header", ""},
		{"basic scheme", "Basic YWxpY2U6cHc="},
		{"empty bearer", "Bearer "},
		{"garbage", "Bearer not.a.token"},
		{"another issuer's key", "Bearer " + forged},
		{"tampered payload", "Bearer " + tampered},
		{"alg none", "Bearer eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSJ9."},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for _, path := range []string{"/v1/conversations", "/v1/search", "/v1/conversations/c1"} {
				method, body := "GET", ""
				if path == "/v1/search" {
					method, body = "POST", `{"q":"x"}`
				}
				req, _ := http.NewRequest(method, e.url+path, strings.NewReader(body))
				if tc.header != "" {
					req.Header.Set("Authorization", tc.header)
				}
				resp, err := http.DefaultClient.Do(req)
				must(t, err)
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized {
					t.Errorf("GET %s: status %d, want 401", path, resp.StatusCode)
				}
				if resp.Header.Get("WWW-Authenticate") == "" {
					t.Errorf("GET %s: no WWW-Authenticate", path)
				}
			}
		})
	}
	if !strings.Contains(e.logs.String(), `"security_event":"auth_failure"`) {
		t.Error("rejected tokens are not logged as security events")
	}
	if strings.Contains(e.logs.String(), parts[2]) || strings.Contains(e.logs.String(), forged) {
		t.Error("a token reached the logs")
	}
}

func TestExpiredTokenRejected(t *testing.T) {
	e := newEdge(t, 1<<20)
	keysFn, err := jwtverify.KeysFromJWKSJSON(e.issuer.JWKS())
	must(t, err)
	late, err := jwtverify.New(jwtverify.Config{Issuer: localissuer.IssuerURL, Audience: localissuer.Audience, Keys: keysFn,
		Now: func() time.Time { return time.Now().Add(2 * time.Hour) }})
	must(t, err)
	if _, err := late.Verify(context.Background(), e.token("alice")); err == nil {
		t.Fatal("a token an hour past its expiry verified")
	}
}

func TestPutChunkRejectsBadInput(t *testing.T) {
	e := newEdge(t, 64<<10)
	tok := e.token("alice")
	wav := tone(440, 200)
	tests := []struct {
		name, path, ct string
		body           []byte
		status         int
		code           string
	}{
		{"conversation id with slash-like chars", "/v1/conversations/a.b/chunks/0", "audio/wav", wav, 400, "invalid_conversation_id"},
		{"conversation id too long", "/v1/conversations/" + strings.Repeat("a", 65) + "/chunks/0", "audio/wav", wav, 400, "invalid_conversation_id"},
		{"negative seq", "/v1/conversations/c1/chunks/-1", "audio/wav", wav, 400, "invalid_seq"},
		{"zero-padded seq", "/v1/conversations/c1/chunks/01", "audio/wav", wav, 400, "invalid_seq"},
		{"seq too large", "/v1/conversations/c1/chunks/1000001", "audio/wav", wav, 400, "invalid_seq"},
		{"seq not a number", "/v1/conversations/c1/chunks/zero", "audio/wav", wav, 400, "invalid_seq"},
		{"no content type", "/v1/conversations/c1/chunks/0", "", wav, 415, "unsupported_media_type"},
		{"json content type", "/v1/conversations/c1/chunks/0", "application/json", []byte(`{}`), 415, "unsupported_media_type"},
		{"mp3", "/v1/conversations/c1/chunks/0", "audio/mpeg", wav, 415, "unsupported_media_type"},
		{"empty body", "/v1/conversations/c1/chunks/0", "audio/wav", nil, 400, "empty_body"},
		{"wav header lies", "/v1/conversations/c1/chunks/0", "audio/wav", append([]byte("RIFF\xff\xff\xff\x7fWAVEfmt "), make([]byte, 40)...), 400, "malformed_audio"},
		{"not wav at all", "/v1/conversations/c1/chunks/0", "audio/wav", []byte("hello this is text"), 400, "malformed_audio"},
		{"L16 without rate", "/v1/conversations/c1/chunks/0", "audio/L16", make([]byte, 3200), 0, ""},
		{"ogg that is not ogg", "/v1/conversations/c1/chunks/0", "audio/ogg;codecs=opus", wav, 400, "malformed_audio"},
		{"oversized", "/v1/conversations/c1/chunks/0", "audio/wav", tone(440, 4000), 413, "too_large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("PUT", tc.path, tok, tc.ct, tc.body)
			if tc.status == 0 { // either unsupported or malformed is a clear answer
				if r.status != 400 && r.status != 415 {
					t.Fatalf("status %d, want 400 or 415", r.status)
				}
				return
			}
			if r.status != tc.status || errCode(r) != tc.code {
				t.Fatalf("status %d code %q, want %d %q", r.status, errCode(r), tc.status, tc.code)
			}
		})
	}
	if n := len(e.bus.published()); n != 0 {
		t.Fatalf("bad input published %d events", n)
	}
	found, err := e.docs.Query(context.Background(), docs.Query{AllUsers: true, Collection: records.Chunks})
	must(t, err)
	if len(found) != 0 {
		t.Fatalf("bad input left %d chunk records", len(found))
	}
}

func TestPutChunkDurableIdempotentAndSealed(t *testing.T) {
	e := newEdge(t, 1<<20)
	tok := e.token("alice")
	wav := tone(440, 300)
	r := e.do("PUT", "/v1/conversations/c1/chunks/0", tok, "audio/wav", wav)
	if r.status != http.StatusAccepted || r.body["status"] != "accepted" {
		t.Fatalf("first upload: %d %v", r.status, r.body)
	}
	evs := e.bus.published()
	if len(evs) != 1 {
		t.Fatalf("%d events, want 1", len(evs))
	}
	user := e.pseudo.User("alice")
	ev := evs[0]
	if ev.Type() != events.TypeChunkReceived || ev.Subject() != "users/"+user+"/conversations/c1/chunks/0" {
		t.Fatalf("event type %q subject %q", ev.Type(), ev.Subject())
	}
	if bytes.Contains(ev.Data(), []byte("alice")) {
		t.Fatal("event data carries the raw uid")
	}
	d, err := e.docs.Get(context.Background(), records.ChunkKey(user, "c1", 0))
	must(t, err)
	c, err := records.ChunkFrom(d)
	must(t, err)
	if c.Status != records.StatusReceived || !c.Published || c.EventID != ev.ID() {
		t.Fatalf("chunk record %+v", c)
	}
	// The blob is sealed: the PCM bytes are not in it.
	files := 0
	err = filepath.WalkDir(filepath.Join(e.dir, "blobs"), func(path string, de os.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		files++
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, wav[44:1044]) {
			t.Errorf("%s holds plaintext PCM", path)
		}
		return nil
	})
	must(t, err)
	if files == 0 {
		t.Fatal("no blob written")
	}

	// A retry with the same bytes: success, no second event.
	r = e.do("PUT", "/v1/conversations/c1/chunks/0", tok, "audio/wav", wav)
	if r.status != http.StatusAccepted || r.body["status"] != "duplicate" {
		t.Fatalf("replay: %d %v", r.status, r.body)
	}
	// Other bytes for the same seq: conflict.
	r = e.do("PUT", "/v1/conversations/c1/chunks/0", tok, "audio/wav", tone(880, 300))
	if r.status != http.StatusConflict || errCode(r) != "conflict" {
		t.Fatalf("conflicting retry: %d %v", r.status, r.body)
	}
	if n := len(e.bus.published()); n != 1 {
		t.Fatalf("%d events after replay and conflict, want 1", n)
	}
}

func TestPutChunkPublishFailureIsNotAcknowledged(t *testing.T) {
	e := newEdge(t, 1<<20)
	tok := e.token("alice")
	wav := tone(300, 200)
	e.bus.setFail(errors.New("pubsub down"))
	r := e.do("PUT", "/v1/conversations/c1/chunks/3", tok, "audio/wav", wav)
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503 while the bus is down", r.status)
	}
	if strings.Contains(r.body["error"].(map[string]any)["message"].(string), "pubsub") {
		t.Fatal("error reply leaks internals")
	}
	e.bus.setFail(nil)
	r = e.do("PUT", "/v1/conversations/c1/chunks/3", tok, "audio/wav", wav)
	if r.status != http.StatusAccepted {
		t.Fatalf("retry after outage: %d %v", r.status, r.body)
	}
	evs := e.bus.published()
	if len(evs) != 1 {
		t.Fatalf("%d events, want 1", len(evs))
	}
	want := records.ChunkEventID(e.pseudo.User("alice"), "c1", 3, r.body["digest"].(string))
	if evs[0].ID() != want {
		t.Fatalf("event id %s, want the deterministic %s", evs[0].ID(), want)
	}
}

func TestCrossUserIsolation(t *testing.T) {
	e := newEdge(t, 1<<20)
	alice, bob := e.token("alice"), e.token("bob")
	if r := e.do("PUT", "/v1/conversations/shared/chunks/0", alice, "audio/wav", tone(440, 200)); r.status != 202 {
		t.Fatalf("alice upload: %d", r.status)
	}
	if r := e.do("GET", "/v1/conversations/shared", bob, "", nil); r.status != 404 {
		t.Fatalf("bob reads alice's conversation: %d, want 404", r.status)
	}
	r := e.do("GET", "/v1/conversations", bob, "", nil)
	if r.status != 200 || len(r.body["conversations"].([]any)) != 0 {
		t.Fatalf("bob's list: %d %v", r.status, r.body)
	}
	// Bob's chunk 0 of "shared" is his own: not a conflict with alice's.
	if r := e.do("PUT", "/v1/conversations/shared/chunks/0", bob, "audio/wav", tone(880, 200)); r.status != 202 || r.body["status"] != "accepted" {
		t.Fatalf("bob upload: %d %v", r.status, r.body)
	}
	r = e.do("GET", "/v1/conversations", alice, "", nil)
	if r.status != 200 || len(r.body["conversations"].([]any)) != 1 {
		t.Fatalf("alice's list: %d %v", r.status, r.body)
	}
	r = e.do("GET", "/v1/conversations/shared", alice, "", nil)
	if r.status != 200 || len(r.body["chunks"].([]any)) != 1 || r.body["status"] != "processing" {
		t.Fatalf("alice's conversation: %d %v", r.status, r.body)
	}
}

func TestSearchValidation(t *testing.T) {
	e := newEdge(t, 1<<20)
	tok := e.token("alice")
	for _, body := range []string{``, `{}`, `{"q":""}`, `{"q":"` + strings.Repeat("a", 513) + `"}`, `{"q":"x","k":0}`, `{"q":"x","k":51}`,
		`{"q":"x","k":"abc"}`, `{"q":"   "}`, `{"q":"x","limit":3}`, `{"q":"x"} {}`, `["x"]`, `null`, `{"q":"x","cursor":"%%"}`} {
		if r := e.do("POST", "/v1/search", tok, "application/json", []byte(body)); r.status != 400 {
			t.Errorf("POST %s: %d %v, want 400", body, r.status, r.body)
		}
	}
	r := e.search(tok, `{"q":"hello"}`)
	if r.status != 200 || len(r.body["results"].([]any)) != 0 {
		t.Fatalf("search with no memories: %d %v", r.status, r.body)
	}
}

func TestHealthAndUnknownRoutes(t *testing.T) {
	e := newEdge(t, 1<<20)
	if r := e.do("GET", "/healthz", "", "", nil); r.status != 200 {
		t.Fatalf("healthz %d", r.status)
	}
	if r := e.do("GET", "/readyz", "", "", nil); r.status != 200 {
		t.Fatalf("readyz %d", r.status)
	}
	if r := e.do("GET", "/nope", "", "", nil); r.status != 404 || errCode(r) != "not_found" {
		t.Fatalf("unknown route %d %v", r.status, r.body)
	}
	if r := e.do("DELETE", "/v1/conversations", e.token("a"), "", nil); r.status != 405 && r.status != 404 {
		t.Fatalf("wrong method %d", r.status)
	}
	if r := e.do("GET", "/.well-known/jwks.json", "", "", nil); r.status != 200 || r.body["keys"] == nil {
		t.Fatalf("jwks %d %v", r.status, r.body)
	}
}

// BenchmarkPutChunk: one authenticated 1 s chunk through validation,
// decoding, sealing, the blob write, the record and the publish.
func BenchmarkPutChunk(b *testing.B) {
	e := newEdge(b, 16<<20)
	tok := e.token("bench")
	wav := tone(440, 1000)
	b.SetBytes(int64(len(wav)))
	b.ResetTimer()
	for i := range b.N {
		r := e.do("PUT", fmt.Sprintf("/v1/conversations/bench/chunks/%d", i), tok, "audio/wav", wav)
		if r.status != http.StatusAccepted {
			b.Fatalf("status %d", r.status)
		}
	}
}

func TestRateLimits(t *testing.T) {
	e := newEdgeWithLimits(t, 1<<20, functions.Limits{
		PerUser:    ratelimit.Limit{Rate: 3, Burst: 3, Period: time.Hour},
		Search:     ratelimit.Limit{Rate: 1, Burst: 1, Period: time.Hour},
		FailedAuth: ratelimit.Limit{Rate: 2, Burst: 2, Period: time.Hour},
	})
	alice, bob := e.token("alice"), e.token("bob")
	for i := range 3 {
		if r := e.do("GET", "/v1/conversations", alice, "", nil); r.status != 200 {
			t.Fatalf("request %d: %d", i, r.status)
		}
	}
	r := e.do("GET", "/v1/conversations", alice, "", nil)
	if r.status != http.StatusTooManyRequests || errCode(r) != "rate_limited" || r.header.Get("Retry-After") == "" {
		t.Fatalf("4th request: %d %v Retry-After=%q", r.status, r.body, r.header.Get("Retry-After"))
	}
	// Another user has their own budget; searches have a tighter one.
	if r := e.search(bob, `{"q":"hi"}`); r.status != 200 {
		t.Fatalf("bob's first search: %d", r.status)
	}
	if r := e.search(bob, `{"q":"hi"}`); r.status != http.StatusTooManyRequests {
		t.Fatalf("bob's second search: %d, want 429", r.status)
	}
	// Rejected tokens: two 401s, then 429 for that address.
	for i, want := range []int{401, 401, 429} {
		if r := e.do("GET", "/v1/conversations", "forged.token.here", "", nil); r.status != want {
			t.Fatalf("bad token %d: %d, want %d", i, r.status, want)
		}
	}
}

func TestAccessLogCarriesKeyedUserHashOnly(t *testing.T) {
	e := newEdge(t, 1<<20)
	if r := e.do("GET", "/v1/conversations", e.token("alice-log-uid"), "", nil); r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	logs := e.logs.String()
	want := logging.NewUserHasher(1, []byte("0123456789abcdef0123456789abcdef")).Attr("alice-log-uid").Value.String()
	if !strings.Contains(logs, want) {
		t.Fatalf("access log lacks the user hash %s: %s", want, logs)
	}
	if strings.Contains(logs, "alice-log-uid") {
		t.Fatal("access log holds the raw uid")
	}
}
