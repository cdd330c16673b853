package functions_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/functions"
	"github.com/lethe-dev/lethe/infra/audio"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/ratelimit"
	"github.com/lethe-dev/lethe/infra/ratelimit/memlimit"
	"github.com/lethe-dev/lethe/internal/streamtest"
)

// speech is the espeak-ng sentence of testdata at 16 kHz.
func speech(t testing.TB) []int16 {
	t.Helper()
	b, err := os.ReadFile("../testdata/speech-hello.wav")
	must(t, err)
	p, err := audio.Decode("audio/wav", b)
	must(t, err)
	return p.Samples
}

func speechPackets(t testing.TB) [][]byte {
	t.Helper()
	b, err := os.ReadFile("../testdata/speech-hello.opus")
	must(t, err)
	pkts, err := audio.OpusPackets(b)
	must(t, err)
	return pkts
}

func pcmQuery(cid string) url.Values {
	return url.Values{"conversation_id": {cid}, "codec": {"pcm16"}, "sample_rate": {"16000"}}
}

func opusQuery(cid string) url.Values {
	return url.Values{"conversation_id": {cid}, "codec": {"opus"}, "sample_rate": {"16000"}}
}

func (e *edge) dial(ctx context.Context, o streamtest.Options) *streamtest.Client {
	e.t.Helper()
	c, err := streamtest.Dial(ctx, e.url, o)
	must(e.t, err)
	return c
}

// refusal dials and returns the close code the server ends with.
func (e *edge) refusal(ctx context.Context, o streamtest.Options) websocket.StatusCode {
	e.t.Helper()
	_, err := streamtest.Dial(ctx, e.url, o)
	if err == nil {
		e.t.Fatal("the stream was opened")
	}
	return websocket.CloseStatus(err)
}

// dialResuming dials again after a drop.
func (e *edge) dialResuming(ctx context.Context, o streamtest.Options) *streamtest.Client {
	e.t.Helper()
	c, err := streamtest.DialResuming(ctx, e.url, o)
	must(e.t, err)
	return c
}

// checkDurable fails unless chunk seq is durable right now: its record (with
// its stream span ending at endMS), its sealed blob and its event.
func (e *edge) checkDurable(ctx context.Context, user, cid string, seq int, endMS int64) {
	e.t.Helper()
	d, err := e.docs.Get(ctx, records.ChunkKey(user, cid, seq))
	if err != nil {
		e.t.Fatalf("ack %d read before its record exists: %v", seq, err)
	}
	c, err := records.ChunkFrom(d)
	must(e.t, err)
	if c.Stream == nil || c.Stream.EndMS != endMS || c.Origin != "stream" {
		e.t.Fatalf("chunk %d: stream %+v origin %q, ack end_ms %d", seq, c.Stream, c.Origin, endMS)
	}
	r, _, err := e.blobs.Read(ctx, c.BlobKey)
	if err != nil {
		e.t.Fatalf("ack %d read before its blob exists: %v", seq, err)
	}
	r.Close()
	for _, ev := range e.bus.published() {
		if ev.ID() == c.EventID {
			return
		}
	}
	e.t.Fatalf("ack %d read before its event was published", seq)
}

// storedAudio is the conversation's audio as the stores hold it, chunk by
// chunk in seq order; it fails unless seqs run 0..n-1 and spans join up.
func (e *edge) storedAudio(ctx context.Context, user, cid string) []int16 {
	e.t.Helper()
	found, err := e.docs.Query(ctx, docs.Query{User: user, Collection: records.Chunks,
		Filters: []docs.Filter{{Field: records.FieldConversation, Op: docs.Eq, Value: cid}}, OrderBy: records.FieldSeq})
	must(e.t, err)
	var out []int16
	var end int64
	for i, d := range found {
		c, err := records.ChunkFrom(d)
		must(e.t, err)
		if c.Seq != i || c.Stream == nil || c.Stream.StartMS != end {
			e.t.Fatalf("chunk %d: seq %d span %+v, previous end %d", i, c.Seq, c.Stream, end)
		}
		end = c.Stream.EndMS
		r, _, err := e.blobs.Read(ctx, c.BlobKey)
		must(e.t, err)
		sealed, err := io.ReadAll(r)
		r.Close()
		must(e.t, err)
		wav, err := e.keys.Open(ctx, user, sealed, keys.AD(user, "blobs", c.BlobKey, "audio"))
		must(e.t, err)
		p, err := audio.Decode(c.ContentType, wav)
		must(e.t, err)
		if int64(len(p.Samples)) != (c.Stream.EndMS-c.Stream.StartMS)*int64(p.SampleRate)/1000 {
			e.t.Fatalf("chunk %d holds %d samples for span %+v", i, len(p.Samples), c.Stream)
		}
		out = append(out, p.Samples...)
	}
	return out
}

// ackDurable is a Drain callback that checks each ack's chunk is durable
// when the ack is read, and collects the acks.
func (e *edge) ackDurable(ctx context.Context, user, cid string, acks *[]int) func(streamtest.Message) error {
	return func(m streamtest.Message) error {
		if m.Type == "ack" {
			e.checkDurable(ctx, user, cid, *m.Seq, *m.EndMS)
			*acks = append(*acks, *m.Seq)
		}
		return nil
	}
}

func TestListenStreamsSpeechWithDurableAcks(t *testing.T) {
	ctx := context.Background()
	e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, streams: functions.StreamLimits{ChunkDuration: time.Second}})
	samples := speech(t)
	packets := speechPackets(t)
	for _, tc := range []struct {
		name    string
		query   func(string) url.Values
		send    func(*streamtest.Client) error
		browser bool
	}{
		// 1001-byte frames: samples split across frames, chunks cut mid-frame.
		{"pcm16", pcmQuery, func(c *streamtest.Client) error { return c.SendPCM(ctx, samples, 1001) }, false},
		{"opus", opusQuery, func(c *streamtest.Client) error { return c.SendPackets(ctx, packets) }, false},
		{"pcm16-browser", pcmQuery, func(c *streamtest.Client) error { return c.SendPCM(ctx, samples, 3200) }, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			uid, cid := "u-"+tc.name, "c-"+tc.name
			user := e.pseudo.User(uid)
			c := e.dial(ctx, streamtest.Options{Token: e.token(uid), Browser: tc.browser, Query: tc.query(cid)})
			if c.Hello.LastSeq != nil || c.Hello.EndMS != nil {
				t.Fatalf("hello of a new conversation: %+v", c.Hello)
			}
			if tc.browser && c.Conn.Subprotocol() != functions.ListenSubprotocol {
				t.Fatalf("subprotocol %q", c.Conn.Subprotocol())
			}
			must(t, tc.send(c))
			must(t, c.End(ctx))
			var acks []int
			code, err := c.Drain(ctx, e.ackDurable(ctx, user, cid, &acks))
			must(t, err)
			if code != websocket.StatusNormalClosure {
				t.Fatalf("closed with %d, want 1000", code)
			}
			got := e.storedAudio(ctx, user, cid)
			wantMS := int64(len(samples)) / 16
			if tc.name == "opus" {
				wantMS = int64(len(packets)) * 20
			}
			if !slices.Equal(acks, seqs(int((wantMS+999)/1000))) {
				t.Fatalf("acks %v for %d ms", acks, wantMS)
			}
			if int64(len(got)) != wantMS*16 {
				t.Fatalf("stored %d samples, want %d", len(got), wantMS*16)
			}
			if tc.name != "opus" && !slices.Equal(got, samples[:wantMS*16]) {
				t.Fatal("the stored audio is not the streamed audio")
			}
		})
	}
}

func seqs(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// A client that drops mid-stream, even before reading its acks, resumes at
// the hello's end_ms: the stores then hold the audio exactly once.
func TestListenResumeAfterDrop(t *testing.T) {
	ctx := context.Background()
	e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, streams: functions.StreamLimits{ChunkDuration: time.Second}})
	samples := speech(t)
	uid, cid := "resumer", "resumed"
	user, tok := e.pseudo.User(uid), e.token(uid)
	for _, stop := range []int{len(samples) * 2 / 5, len(samples) * 3 / 4} {
		c := e.dialResuming(ctx, streamtest.Options{Token: tok, Query: pcmQuery(cid)})
		from := int(c.ResumeMS() * 16)
		must(t, c.SendPCM(ctx, samples[from:stop], 777))
		c.Conn.CloseNow() // acks unread: lost
	}
	c := e.dialResuming(ctx, streamtest.Options{Token: tok, Query: pcmQuery(cid)})
	if c.Hello.LastSeq == nil || *c.Hello.EndMS != int64(*c.Hello.LastSeq+1)*1000 {
		t.Fatalf("hello after two drops: %+v", c.Hello)
	}
	must(t, c.SendPCM(ctx, samples[c.ResumeMS()*16:], 4000))
	must(t, c.End(ctx))
	var acks []int
	code, err := c.Drain(ctx, e.ackDurable(ctx, user, cid, &acks))
	must(t, err)
	if code != websocket.StatusNormalClosure || len(acks) == 0 || acks[0] != *c.Hello.LastSeq+1 {
		t.Fatalf("close %d, acks %v after hello %+v", code, acks, c.Hello)
	}
	if got := e.storedAudio(ctx, user, cid); !slices.Equal(got, samples[:len(samples)/16*16]) {
		t.Fatalf("stored %d samples, streamed %d: gap or duplicate", len(got), len(samples))
	}
	// A client that ends at once acks the last chunk again.
	c = e.dial(ctx, streamtest.Options{Token: tok, Query: pcmQuery(cid)})
	must(t, c.End(ctx))
	acks = nil
	code, err = c.Drain(ctx, e.ackDurable(ctx, user, cid, &acks))
	must(t, err)
	if code != websocket.StatusNormalClosure || !slices.Equal(acks, []int{*c.Hello.LastSeq}) {
		t.Fatalf("end without audio: close %d acks %v", code, acks)
	}
}

// An ack is never sent for a chunk that could not be made durable.
func TestListenNoAckWithoutDurability(t *testing.T) {
	ctx := context.Background()
	e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, streams: functions.StreamLimits{ChunkDuration: time.Second}})
	e.bus.setFail(errors.New("pubsub down"))
	c := e.dial(ctx, streamtest.Options{Token: e.token("u"), Query: pcmQuery("c")})
	must(t, c.SendPCM(ctx, speech(t)[:20000], 3200))
	code, err := c.Drain(ctx, func(m streamtest.Message) error {
		if m.Type == "ack" {
			return fmt.Errorf("ack %d while the event could not be published", *m.Seq)
		}
		return nil
	})
	must(t, err)
	if code != websocket.StatusTryAgainLater {
		t.Fatalf("closed with %d, want 1013", code)
	}
}

func TestListenRefusals(t *testing.T) {
	ctx := context.Background()
	e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, streams: functions.StreamLimits{
		ChunkDuration: time.Second, MaxFrameBytes: 4096, IdleTimeout: 300 * time.Millisecond, MaxPerUser: 2,
	}})
	owner := e.dial(ctx, streamtest.Options{Token: e.token("owner"), Query: pcmQuery("owned")})
	defer owner.Conn.CloseNow()
	busy := e.dial(ctx, streamtest.Options{Token: e.token("busy"), Query: pcmQuery("b1")})
	defer busy.Conn.CloseNow()
	busy2 := e.dial(ctx, streamtest.Options{Token: e.token("busy"), Query: pcmQuery("b2")})
	defer busy2.Conn.CloseNow()
	erased := e.token("erased")
	if r := e.do("DELETE", "/v1/me", erased, "", nil); r.status != http.StatusAccepted {
		t.Fatalf("DELETE /v1/me: %d", r.status)
	}
	forged := e.token("mallory")
	forged = forged[:len(forged)-4] + "AAAA"
	for _, tc := range []struct {
		name string
		o    streamtest.Options
		want websocket.StatusCode
	}{
		{"no token", streamtest.Options{Query: pcmQuery("x")}, functions.CloseUnauthenticated},
		{"forged token", streamtest.Options{Token: forged, Query: pcmQuery("x")}, functions.CloseUnauthenticated},
		{"forged browser token", streamtest.Options{Token: forged, Browser: true, Query: pcmQuery("x")}, functions.CloseUnauthenticated},
		{"another user's conversation", streamtest.Options{Token: e.token("mallory"), Query: pcmQuery("owned")}, functions.CloseForbidden},
		{"conversation already streaming", streamtest.Options{Token: e.token("owner"), Query: pcmQuery("owned")}, functions.CloseBusy},
		{"too many streams", streamtest.Options{Token: e.token("busy"), Query: pcmQuery("b3")}, functions.CloseTooMany},
		{"erased account", streamtest.Options{Token: erased, Query: pcmQuery("x")}, functions.CloseErased},
		{"bad codec", streamtest.Options{Token: e.token("u"), Query: url.Values{"conversation_id": {"x"}, "codec": {"mp3"}}}, functions.CloseBadRequest},
		{"bad rate", streamtest.Options{Token: e.token("u"), Query: url.Values{"conversation_id": {"x"}, "codec": {"pcm16"}, "sample_rate": {"44100"}}}, functions.CloseBadRequest},
		{"bad conversation id", streamtest.Options{Token: e.token("u"), Query: pcmQuery("a/b")}, functions.CloseBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := e.refusal(ctx, tc.o); got != tc.want {
				t.Fatalf("closed with %d, want %d", got, tc.want)
			}
		})
	}
	inStream := []struct {
		name  string
		query url.Values
		send  func(*streamtest.Client) error
		want  websocket.StatusCode
	}{
		{"oversized frame", pcmQuery("big"), func(c *streamtest.Client) error { return c.SendPCM(ctx, make([]int16, 4096), 8192) }, websocket.StatusMessageTooBig},
		{"idle client", pcmQuery("idle"), func(c *streamtest.Client) error { return nil }, functions.CloseIdle},
		{"bad message", pcmQuery("msg"), func(c *streamtest.Client) error {
			return c.Conn.Write(ctx, websocket.MessageText, []byte(`{"type":"pause"}`))
		}, functions.CloseBadRequest},
		{"bad opus packet", opusQuery("opus"), func(c *streamtest.Client) error {
			return c.SendPackets(ctx, [][]byte{{0xff, 0xff, 0xff}})
		}, functions.CloseBadAudio},
	}
	for i, tc := range inStream {
		t.Run(tc.name, func(t *testing.T) {
			c := e.dial(ctx, streamtest.Options{Token: e.token("in-stream-" + strconv.Itoa(i)), Query: tc.query})
			must(t, tc.send(c))
			code, err := c.Drain(ctx, nil)
			must(t, err)
			if code != tc.want {
				t.Fatalf("closed with %d, want %d", code, tc.want)
			}
		})
	}
}

// A connection open for the maximum duration is closed with 4413, so a
// client reconnects (and resumes) rather than holding one socket forever.
func TestListenMaxDuration(t *testing.T) {
	ctx := context.Background()
	e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, streams: functions.StreamLimits{MaxDuration: 200 * time.Millisecond, IdleTimeout: time.Hour}})
	c := e.dial(ctx, streamtest.Options{Token: e.token("u"), Query: pcmQuery("long")})
	code, err := c.Drain(ctx, nil)
	must(t, err)
	if code != functions.CloseTooLong {
		t.Fatalf("closed with %d, want %d", code, functions.CloseTooLong)
	}
}

// An erasure deletes the user's stream claims too: they are global, keyed
// by a hash of the conversation id, but name the user.
func TestListenErasureForgetsStreamClaims(t *testing.T) {
	ctx := context.Background()
	e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, streams: functions.StreamLimits{ChunkDuration: time.Second}})
	tok := e.token("claimer")
	c := e.dial(ctx, streamtest.Options{Token: tok, Query: pcmQuery("claimed")})
	must(t, c.SendPCM(ctx, speech(t)[:20000], 3200))
	must(t, c.End(ctx))
	if code, err := c.Drain(ctx, nil); err != nil || code != websocket.StatusNormalClosure {
		t.Fatalf("stream: %d %v", code, err)
	}
	claims := func() int {
		found, err := e.docs.Query(ctx, docs.Query{Collection: records.StreamClaims})
		must(t, err)
		return len(found)
	}
	if claims() != 1 {
		t.Fatalf("%d stream claims, want 1", claims())
	}
	r := e.do("DELETE", "/v1/me", tok, "", nil)
	id, _ := r.body["id"].(string)
	if r.status != http.StatusAccepted || id == "" {
		t.Fatalf("DELETE /v1/me: %d %v", r.status, r.body)
	}
	if _, err := e.saga.Run(ctx, id); err != nil {
		t.Fatal(err)
	}
	if n := claims(); n != 0 {
		t.Fatalf("%d stream claims left after the erasure", n)
	}
	// The id is free again: another user may stream it.
	other := e.dial(ctx, streamtest.Options{Token: e.token("next"), Query: pcmQuery("claimed")})
	other.Conn.CloseNow()
}

// losingLeases reports every lease lost once lost is set, as a limiter
// whose lease lapsed (and was perhaps taken) would.
type losingLeases struct {
	ratelimit.Leases
	lost atomic.Bool
}

func (l *losingLeases) Renew(ctx context.Context, key, holder string, ttl time.Duration) (bool, error) {
	if l.lost.Load() {
		return false, nil
	}
	return l.Leases.Renew(ctx, key, holder, ttl)
}

// A stream whose lease is lost closes 1013: another instance may hold the
// conversation now, and two writers of one conversation must not run.
func TestListenLeaseLost(t *testing.T) {
	ctx := context.Background()
	leases := &losingLeases{Leases: memlimit.NewLeases(nil)}
	e := newEdgeWith(t, edgeOptions{maxChunk: 1 << 20, leases: leases,
		streams: functions.StreamLimits{LeaseTTL: 90 * time.Millisecond, IdleTimeout: time.Hour}})
	c := e.dial(ctx, streamtest.Options{Token: e.token("u"), Query: pcmQuery("lease")})
	leases.lost.Store(true)
	code, err := c.Drain(ctx, nil)
	must(t, err)
	if code != websocket.StatusTryAgainLater {
		t.Fatalf("closed with %d, want 1013", code)
	}
}
