package functions

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/lethe-dev/lethe/app/ingest"
	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/infra/audio"
	"github.com/lethe-dev/lethe/infra/auth"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/ratelimit"
	"github.com/lethe-dev/lethe/infra/security"
)

// Close codes of GET /v1/listen. The standard ones: 1000 after the client's
// end (every chunk acked), 1009 a frame over the size limit, 1011 a server
// bug, 1013 a dependency failed (reconnect and resume). The application
// codes mirror HTTP statuses so they read at a glance.
const (
	CloseBadRequest      websocket.StatusCode = 4400 // bad query or client message
	CloseUnauthenticated websocket.StatusCode = 4401 // no token, or not a valid one
	CloseForbidden       websocket.StatusCode = 4403 // another user streams this conversation id
	CloseIdle            websocket.StatusCode = 4408 // no message within the idle timeout
	CloseBusy            websocket.StatusCode = 4409 // the conversation is already being streamed
	CloseErased          websocket.StatusCode = 4410 // the account was erased
	CloseTooLong         websocket.StatusCode = 4413 // the connection reached its maximum duration
	CloseBadAudio        websocket.StatusCode = 4415 // audio that does not decode
	CloseTooMany         websocket.StatusCode = 4429 // too many streams, or rate limited
)

// ListenSubprotocol is the subprotocol the edge speaks; a browser, which
// cannot set headers, offers it together with "bearer.<token>".
const ListenSubprotocol = "lethe.v1"

const bearerProtocolPrefix = "bearer."

// StreamLimits bound each streaming connection; zero fields take the
// defaults below.
type StreamLimits struct {
	// ChunkDuration is the audio of one chunk (whole seconds).
	ChunkDuration time.Duration
	// MaxFrameBytes bounds one WebSocket message.
	MaxFrameBytes int64
	// IdleTimeout closes a connection that sends nothing for that long.
	IdleTimeout time.Duration
	// MaxDuration closes a connection open that long (the client
	// reconnects and resumes).
	MaxDuration time.Duration
	// MaxPerUser caps a user's open streams across every instance.
	MaxPerUser int
	// LeaseTTL: how long a crashed instance's streams count against
	// their users.
	LeaseTTL time.Duration
	// TranscriptPoll: how often a connection looks for its chunks'
	// transcripts.
	TranscriptPoll time.Duration
}

func (l StreamLimits) withDefaults() StreamLimits {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.ChunkDuration, 10*time.Second)
	def(&l.IdleTimeout, 30*time.Second)
	def(&l.MaxDuration, 4*time.Hour)
	def(&l.LeaseTTL, 30*time.Second)
	def(&l.TranscriptPoll, time.Second)
	if l.MaxFrameBytes <= 0 {
		l.MaxFrameBytes = 64 << 10
	}
	if l.MaxPerUser <= 0 {
		l.MaxPerUser = 2
	}
	return l
}

// streamRequest is the query of GET /v1/listen.
type streamRequest struct {
	cid   string
	codec string // pcm16 | opus
	rate  int    // of the buffered PCM: the client's for pcm16, audio.STTRate for opus
}

// parseStreamQuery checks conversation_id, codec and sample_rate. PCM16 is
// little-endian mono at a rate of whole kHz (chunks then end on whole
// milliseconds); Opus packets decode to 16 kHz whatever rate they were
// encoded at, which must be one Opus has.
func parseStreamQuery(q map[string][]string) (streamRequest, error) {
	one := func(k string) string {
		if v := q[k]; len(v) == 1 {
			return v[0]
		}
		return ""
	}
	req := streamRequest{cid: one("conversation_id"), codec: one("codec")}
	if !records.ValidConversationID(req.cid) {
		return req, errors.New("conversation_id must match [A-Za-z0-9_-]{1,64}")
	}
	rateText := one("sample_rate")
	rate, err := strconv.Atoi(rateText)
	switch req.codec {
	case "pcm16":
		if err != nil || rate < audio.MinSampleRate || rate > audio.MaxSampleRate || rate%1000 != 0 {
			return req, errors.New("pcm16 needs sample_rate in whole kHz from 8000 to 48000")
		}
		req.rate = rate
	case "opus":
		if rateText != "" && (err != nil || (rate != 8000 && rate != 12000 && rate != 16000 && rate != 24000 && rate != 48000)) {
			return req, errors.New("opus sample_rate must be 8000, 12000, 16000, 24000 or 48000")
		}
		req.rate = audio.STTRate
	default:
		return req, errors.New("codec must be pcm16 or opus")
	}
	return req, nil
}

// ListenMessage is a text message from a streaming client. The only one
// today is {"type":"end"}.
type ListenMessage struct {
	Type string `json:"type"`
}

// maxListenMessage bounds a client's text message.
const maxListenMessage = 1024

// ParseListenMessage reads a client's text message: a JSON object with a
// known type and nothing else.
func ParseListenMessage(b []byte) (ListenMessage, error) {
	var m ListenMessage
	if len(b) > maxListenMessage {
		return m, errors.New("message too long")
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return ListenMessage{}, fmt.Errorf("not a message: %w", err)
	}
	if dec.More() {
		return ListenMessage{}, errors.New("trailing data after the message")
	}
	if m.Type != "end" {
		return ListenMessage{}, errors.New(`type must be "end"`)
	}
	return m, nil
}

// Server messages.
type (
	helloMessage struct {
		Type    string `json:"type"` // hello
		LastSeq *int   `json:"last_seq"`
		EndMS   *int64 `json:"end_ms"`
	}
	ackMessage struct {
		Type  string `json:"type"` // ack
		Seq   int    `json:"seq"`
		EndMS int64  `json:"end_ms"`
	}
	transcriptMessage struct {
		Type string `json:"type"` // transcript
		Seq  int    `json:"seq"`
		Text string `json:"text"`
	}
)

// closeErr is why a stream ends: the code and reason sent to the client.
type closeErr struct {
	code   websocket.StatusCode
	reason string
}

func (e *closeErr) Error() string { return fmt.Sprintf("close %d: %s", e.code, e.reason) }

func closeWith(code websocket.StatusCode, reason string) *closeErr { return &closeErr{code, reason} }

// listen is GET /v1/listen: streaming ingest over a WebSocket. The
// handshake is accepted before the token is checked, so that every refusal
// reaches a browser as a close code rather than a bare failed handshake.
func (s *Server) listen(w http.ResponseWriter, r *http.Request) {
	if s.d.Leases == nil {
		writeError(w, http.StatusNotImplemented, "not_configured", "streaming is not configured")
		return
	}
	// Same-origin pages always; other origins only from the CORS
	// allowlist (coder/websocket refuses any other Origin).
	conn, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{ListenSubprotocol}, OriginPatterns: s.d.Browser.originHosts()})
	if err != nil {
		return // Accept answered the request
	}
	defer conn.CloseNow()
	lim := s.d.Streams.withDefaults()
	conn.SetReadLimit(lim.MaxFrameBytes)
	ctx := r.Context()
	st, cerr := s.openStream(ctx, r, lim)
	if cerr == nil {
		defer st.release()
		cerr = st.run(ctx, conn)
	}
	attrs := []any{"chunks", 0}
	if st != nil {
		attrs = []any{"chunks", st.chunks}
		if s.d.LogUsers != nil {
			attrs = append(attrs, s.d.LogUsers.Attr(st.caller.uid))
		}
	}
	if cerr != nil {
		attrs = append(attrs, "close_code", int(cerr.code), "close_reason", cerr.reason)
		_ = conn.Close(cerr.code, cerr.reason)
	}
	s.d.Logger.InfoContext(ctx, "stream closed", attrs...)
}

// streamToken is the bearer token from the Authorization header or, for
// browsers, the "bearer.<token>" subprotocol.
func streamToken(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		return bearer(h)
	}
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(v, ",") {
			if tok, ok := strings.CutPrefix(strings.TrimSpace(p), bearerProtocolPrefix); ok {
				return bearer("Bearer " + tok)
			}
		}
	}
	return "", false
}

// permit counts one event against key like allow, without answering.
func (s *Server) permit(r *http.Request, key string, l ratelimit.Limit, mode ratelimit.Mode, uid string) *closeErr {
	ctx := r.Context()
	if s.d.Limiter == nil || l.Rate == 0 {
		return nil
	}
	res, err := s.d.Limiter.Allow(ctx, key, l, mode)
	if err != nil {
		s.d.Logger.ErrorContext(ctx, "rate limiter failed", "error", err.Error())
		return closeWith(websocket.StatusTryAgainLater, "rate limiting is unavailable")
	}
	if !res.Allowed {
		class, _, _ := strings.Cut(key, ":")
		s.securityEvent(r, security.RateLimited, class, uid)
		return closeWith(CloseTooMany, "rate limited")
	}
	return nil
}

// openStream authenticates, checks the query, claims the conversation and
// the stream slots, and reads where the stream stands.
func (s *Server) openStream(ctx context.Context, r *http.Request, lim StreamLimits) (*stream, *closeErr) {
	raw, ok := streamToken(r)
	var id auth.Identity
	var err error
	if ok {
		id, err = s.d.Verifier.Verify(ctx, raw)
		if err != nil && !errors.Is(err, auth.ErrUnauthenticated) {
			s.d.Logger.ErrorContext(ctx, "token verification failed", "error", err.Error())
			return nil, closeWith(websocket.StatusTryAgainLater, "cannot verify tokens now")
		}
	}
	if !ok || err != nil {
		reason := security.ReasonInvalid
		if !ok {
			reason = security.ReasonMissing
		}
		s.securityEvent(r, security.AuthFailure, reason, "")
		if cerr := s.permit(r, rateKeyAuthFail+s.clientAddr(r), s.d.Limits.FailedAuth, ratelimit.FailClosed, ""); cerr != nil {
			return nil, cerr
		}
		return nil, closeWith(CloseUnauthenticated, "a valid bearer token is required")
	}
	c := caller{uid: id.UID, user: s.d.Pseudonyms.User(id.UID)}
	gone, err := records.Tombstoned(ctx, s.d.Docs, c.user)
	if err != nil {
		return nil, s.streamUnavailable(ctx, "records.Tombstoned", err)
	}
	if gone {
		return nil, closeWith(CloseErased, "this account was erased")
	}
	if cerr := s.permit(r, rateKeyUser+c.user, s.d.Limits.PerUser, ratelimit.FallbackLocal, id.UID); cerr != nil {
		return nil, cerr
	}
	req, err := parseStreamQuery(r.URL.Query())
	if err != nil {
		return nil, closeWith(CloseBadRequest, err.Error())
	}
	owned, err := records.ClaimStream(ctx, s.d.Docs, s.d.Pseudonyms.User("conversation:"+req.cid), c.user, s.d.Now())
	if err != nil {
		return nil, s.streamUnavailable(ctx, "records.ClaimStream", err)
	}
	if !owned {
		s.d.Logger.WarnContext(ctx, "stream into another user's conversation refused", "security_event", "forbidden_conversation")
		return nil, closeWith(CloseForbidden, "this conversation id belongs to another user")
	}
	st := &stream{s: s, lim: lim, req: req, caller: c, holder: newHolder(), pending: map[int]bool{}, acked: make(chan struct{}, 1)}
	st.userKey, st.convKey = "streams:"+c.user, "stream:"+c.user+":"+req.cid
	got, err := s.d.Leases.Acquire(ctx, st.userKey, st.holder, lim.MaxPerUser, lim.LeaseTTL)
	if err != nil {
		return nil, s.streamUnavailable(ctx, "leases.Acquire user", err)
	}
	if !got {
		return nil, closeWith(CloseTooMany, "too many open streams")
	}
	got, err = s.d.Leases.Acquire(ctx, st.convKey, st.holder, 1, lim.LeaseTTL)
	if err != nil || !got {
		_ = s.d.Leases.Release(context.WithoutCancel(ctx), st.userKey, st.holder)
		if err != nil {
			return nil, s.streamUnavailable(ctx, "leases.Acquire conversation", err)
		}
		return nil, closeWith(CloseBusy, "this conversation is already being streamed")
	}
	last, ok, err := records.LastChunk(ctx, s.d.Docs, c.user, req.cid)
	if err != nil {
		st.release()
		return nil, s.streamUnavailable(ctx, "records.LastChunk", err)
	}
	if ok {
		st.lastSeq = &last.Seq
		if last.Stream != nil {
			st.endMS = last.Stream.EndMS
		}
	}
	return st, nil
}

func (s *Server) streamUnavailable(ctx context.Context, call string, err error) *closeErr {
	s.d.Logger.ErrorContext(ctx, "dependency failed", "call", call, "error", err.Error())
	return closeWith(websocket.StatusTryAgainLater, "a dependency failed; reconnect and resume")
}

func newHolder() string {
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// stream is one open connection's state. The read loop owns the buffer and
// the position; the transcript poller shares only pending.
type stream struct {
	s      *Server
	lim    StreamLimits
	req    streamRequest
	caller caller
	holder string

	userKey, convKey string

	lastSeq *int  // last durable chunk (nil: none yet)
	endMS   int64 // stream time the durable chunks cover
	chunks  int   // cut on this connection

	// wav holds a WAV header's room, then the audio after endMS as
	// little-endian PCM16 at req.rate (pcm16: the client's bytes as they
	// came, a sample split across frames included): a chunk is sent to the
	// intake in place, with no copy.
	wav  []byte
	opus *audio.OpusPacketDecoder

	mu      sync.Mutex
	pending map[int]bool  // acked, transcript not yet sent
	acked   chan struct{} // a new chunk is pending
}

func (st *stream) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, k := range []string{st.convKey, st.userKey} {
		if err := st.s.d.Leases.Release(ctx, k, st.holder); err != nil {
			st.s.d.Logger.WarnContext(ctx, "stream lease not released; it expires", "error", err.Error())
		}
	}
}

func (st *stream) msPerSample() int { return st.req.rate / 1000 } // samples per millisecond

// run sends hello, then reads until the client ends, a limit is reached or
// the connection fails; it returns how to close (nil: already closed).
func (st *stream) run(ctx context.Context, conn *websocket.Conn) *closeErr {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hello := helloMessage{Type: "hello", LastSeq: st.lastSeq}
	if st.lastSeq != nil {
		hello.EndMS = &st.endMS
	}
	if err := writeMessage(ctx, conn, hello); err != nil {
		return nil
	}
	if st.req.codec == "opus" {
		dec, err := audio.NewOpusPacketDecoder()
		if err != nil {
			return st.s.streamUnavailable(ctx, "audio.NewOpusPacketDecoder", err)
		}
		st.opus = dec
	}
	target := int(st.lim.ChunkDuration/time.Second) * st.req.rate
	// Room for one chunk and a typical frame that completes it (a larger
	// frame grows the buffer once).
	st.wav = make([]byte, audio.WAVHeaderLen, audio.WAVHeaderLen+2*target+int(min(st.lim.MaxFrameBytes, 16<<10)))

	// Limits: the timers close the connection, which ends the read.
	var limitHit sync.Once
	var limitErr *closeErr
	hit := func(code websocket.StatusCode, reason string) func() {
		return func() {
			limitHit.Do(func() { limitErr = closeWith(code, reason) })
			_ = conn.Close(code, reason)
		}
	}
	idle := time.AfterFunc(st.lim.IdleTimeout, hit(CloseIdle, "idle timeout"))
	defer idle.Stop()
	maxDur := time.AfterFunc(st.lim.MaxDuration, hit(CloseTooLong, "maximum stream duration reached; reconnect to resume"))
	defer maxDur.Stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(2)
	go func() {
		defer wg.Done()
		st.keepLeases(ctx, hit(websocket.StatusTryAgainLater, "stream lease lost; reconnect to resume"))
	}()
	go func() { defer wg.Done(); st.sendTranscripts(ctx, conn) }()

	for {
		typ, data, err := st.read(ctx, conn)
		if err != nil {
			limitHit.Do(func() {})
			if limitErr != nil {
				return nil // the timer closed it
			}
			if websocket.CloseStatus(err) == -1 && !errors.Is(err, context.Canceled) {
				st.s.d.Logger.DebugContext(ctx, "stream read ended", "error", err.Error())
			}
			return nil
		}
		idle.Reset(st.lim.IdleTimeout)
		if typ == websocket.MessageText {
			if _, err := ParseListenMessage(data); err != nil {
				// The reason never echoes the message (and a close
				// reason must fit 123 bytes).
				return closeWith(CloseBadRequest, `bad message: the only one is {"type":"end"}`)
			}
			// end: cut what is buffered, ack the last chunk, close 1000.
			if cerr := st.cut(ctx, conn, st.samples()-st.samples()%st.msPerSample()); cerr != nil {
				return cerr
			}
			if st.lastSeq != nil && st.chunks == 0 {
				if err := writeMessage(ctx, conn, ackMessage{Type: "ack", Seq: *st.lastSeq, EndMS: st.endMS}); err != nil {
					return nil
				}
			}
			return closeWith(websocket.StatusNormalClosure, "end")
		}
		if st.opus != nil {
			if cerr := st.feedOpus(data); cerr != nil {
				return cerr
			}
		}
		for st.samples() >= target {
			n := target
			if st.opus != nil {
				n = st.samples() // whole packets: the client resends packets, not samples
			}
			if cerr := st.cut(ctx, conn, n); cerr != nil {
				return cerr
			}
		}
	}
}

// samples is how many whole samples are buffered.
func (st *stream) samples() int { return (len(st.wav) - audio.WAVHeaderLen) / 2 }

// read reads the next message. PCM16 goes straight into the buffer (data
// is then nil): at 50 messages a second per stream, a copy per message
// adds up.
func (st *stream) read(ctx context.Context, conn *websocket.Conn) (websocket.MessageType, []byte, error) {
	typ, r, err := conn.Reader(ctx)
	if err != nil {
		return 0, nil, err
	}
	if typ != websocket.MessageBinary || st.opus != nil {
		data, err := io.ReadAll(r)
		return typ, data, err
	}
	for {
		if len(st.wav) == cap(st.wav) {
			st.wav = slices.Grow(st.wav, 4096)
		}
		n, err := r.Read(st.wav[len(st.wav):cap(st.wav)])
		st.wav = st.wav[:len(st.wav)+n]
		if errors.Is(err, io.EOF) {
			return typ, nil, nil
		}
		if err != nil {
			return 0, nil, err
		}
	}
}

// feedOpus decodes one Opus packet into the buffer.
func (st *stream) feedOpus(data []byte) *closeErr {
	pcm, err := st.opus.Decode(data)
	if err != nil {
		return closeWith(CloseBadAudio, "an Opus packet does not decode")
	}
	if len(pcm)%st.msPerSample() != 0 {
		return closeWith(CloseBadAudio, "Opus packets must last whole milliseconds")
	}
	for _, v := range pcm {
		st.wav = binary.LittleEndian.AppendUint16(st.wav, uint16(v))
	}
	return nil
}

// cut makes the first n buffered samples the next chunk through the intake
// and acks it once it is durable; n is whole milliseconds.
func (st *stream) cut(ctx context.Context, conn *websocket.Conn, n int) *closeErr {
	if n <= 0 {
		return nil
	}
	seq := 0
	if st.lastSeq != nil {
		seq = *st.lastSeq + 1
	}
	span := &records.StreamSpan{StartMS: st.endMS, EndMS: st.endMS + int64(n/st.msPerSample())}
	body := st.wav[:audio.WAVHeaderLen+2*n]
	audio.PutWAVHeader(body, st.req.rate, n)
	_, err := st.s.intake().Accept(ctx, ingest.Chunk{
		User: st.caller.user, ConversationID: st.req.cid, Seq: seq, ContentType: "audio/wav",
		Audio: body, Origin: ingest.OriginStream, Stream: span,
	})
	switch {
	case err == nil:
	case errors.Is(err, ingest.ErrTombstoned):
		return closeWith(CloseErased, "this account was erased")
	case errors.Is(err, ingest.ErrConflict):
		return closeWith(CloseBusy, "this seq was already accepted with other audio")
	case errors.Is(err, ingest.ErrMalformedAudio), errors.Is(err, ingest.ErrUnsupportedAudio), errors.Is(err, ingest.ErrEmptyAudio):
		return closeWith(CloseBadAudio, "the audio was refused")
	case errors.Is(err, ingest.ErrInvalid):
		return closeWith(CloseBadRequest, "the conversation has reached its last seq")
	default:
		return st.s.streamUnavailable(ctx, "ingest.Accept", err)
	}
	st.wav = st.wav[:audio.WAVHeaderLen+copy(st.wav[audio.WAVHeaderLen:], st.wav[len(body):])]
	st.lastSeq, st.endMS = &seq, span.EndMS
	st.chunks++
	st.mu.Lock()
	st.pending[seq] = true
	st.mu.Unlock()
	select {
	case st.acked <- struct{}{}:
	default:
	}
	if err := writeMessage(ctx, conn, ackMessage{Type: "ack", Seq: seq, EndMS: span.EndMS}); err != nil {
		return closeWith(websocket.StatusGoingAway, "write failed")
	}
	return nil
}

// keepLeases renews the stream's leases until ctx ends. A lease found
// lost, or renewals failing for a whole TTL (the slot may have lapsed and
// been taken), calls onLost; a brief limiter outage does not.
func (st *stream) keepLeases(ctx context.Context, onLost func()) {
	t := time.NewTicker(st.lim.LeaseTTL / 3)
	defer t.Stop()
	lastOK := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		renewed := true
		for _, k := range []string{st.userKey, st.convKey} {
			ok, err := st.s.d.Leases.Renew(ctx, k, st.holder, st.lim.LeaseTTL)
			if ctx.Err() != nil {
				return
			}
			if err == nil && !ok {
				onLost()
				return
			}
			if err != nil {
				st.s.d.Logger.WarnContext(ctx, "stream lease renewal failed", "error", err.Error())
				renewed = false
			}
		}
		if renewed {
			lastOK = time.Now()
		} else if time.Since(lastOK) >= st.lim.LeaseTTL {
			onLost()
			return
		}
	}
}

// maxPendingTranscripts bounds what one connection waits for.
const maxPendingTranscripts = 64

// sendTranscripts sends each acked chunk's transcript once it is in the
// stores (any instance's workers may have written it). It polls every
// TranscriptPoll after an ack, backing off to 16 times that while nothing
// comes, so a stream whose transcripts lag costs few reads.
func (st *stream) sendTranscripts(ctx context.Context, conn *websocket.Conn) {
	wait := st.lim.TranscriptPoll
	t := time.NewTimer(wait)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-st.acked:
			wait = st.lim.TranscriptPoll
			t.Reset(wait)
			continue
		case <-t.C:
		}
		wait = min(2*wait, 16*st.lim.TranscriptPoll)
		t.Reset(wait)
		st.mu.Lock()
		low, n := records.MaxSeq+1, len(st.pending)
		for seq := range st.pending {
			low = min(low, seq)
		}
		if n > maxPendingTranscripts {
			delete(st.pending, low) // the client can read it from the conversation
		}
		st.mu.Unlock()
		if n == 0 {
			continue
		}
		segs, err := st.s.d.Docs.Query(ctx, docs.Query{
			User: st.caller.user, Collection: records.Segments, OrderBy: records.FieldSeq,
			Filters: []docs.Filter{
				{Field: records.FieldConversation, Op: docs.Eq, Value: st.req.cid},
				{Field: records.FieldSeq, Op: docs.Gte, Value: int64(low)},
			},
			Limit: maxPendingTranscripts,
		})
		if err != nil {
			if ctx.Err() == nil {
				st.s.d.Logger.WarnContext(ctx, "transcript poll failed", "error", err.Error())
			}
			continue
		}
		for _, d := range segs {
			seg, err := records.SegmentFrom(d)
			if err != nil {
				continue
			}
			st.mu.Lock()
			want := st.pending[seg.Seq]
			delete(st.pending, seg.Seq)
			st.mu.Unlock()
			if !want {
				continue
			}
			text, err := st.s.d.Keys.Open(ctx, st.caller.user, seg.SealedText, keys.AD(st.caller.user, records.Segments, d.Key.ID, "text"))
			if err != nil {
				st.s.d.Logger.WarnContext(ctx, "transcript not readable", "error", err.Error())
				continue
			}
			if err := writeMessage(ctx, conn, transcriptMessage{Type: "transcript", Seq: seg.Seq, Text: string(text)}); err != nil {
				return
			}
		}
	}
}

func writeMessage(ctx context.Context, conn *websocket.Conn, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("json.Marshal: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := conn.Write(ctx, websocket.MessageText, b); err != nil {
		return fmt.Errorf("websocket.Write: %w", err)
	}
	return nil
}
