package transcribe_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/audio"
	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/stt"
	"github.com/lethe-dev/lethe/workers/internal/workertest"
)

// pieceSTT answers with words that depend on the piece it is given, and
// fails its failAt-th call as a recogniser outage would.
type pieceSTT struct {
	mu     sync.Mutex
	calls  int
	failAt int
}

func pieceText(pcm audio.PCM) string {
	var sum int64
	for _, s := range pcm.Samples {
		sum += int64(s)
	}
	return fmt.Sprintf("piece of %d samples sum %d", len(pcm.Samples), sum)
}

func (p *pieceSTT) Transcribe(_ context.Context, pcm audio.PCM) (stt.Transcript, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	if p.calls == p.failAt {
		return stt.Transcript{}, stt.ErrUnavailable
	}
	return stt.Transcript{Text: pieceText(pcm), Model: "piece-stt"}, nil
}

func (p *pieceSTT) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.calls
}

func (e *env) parts(t *testing.T, user string) []docs.Doc {
	t.Helper()
	ds, err := e.docs.Query(t.Context(), docs.Query{User: user, Collection: records.SegmentParts})
	if err != nil {
		t.Fatalf("docs.Query segment parts: %v", err)
	}
	return ds
}

// A chunk longer than a piece is recognised piece by piece; a recogniser
// outage part-way is retried from the first piece not done (the done ones
// are not recognised again), the segment holds every piece's text in
// order, and no redelivery makes a second segment, piece or event.
func TestHandleLongChunkInPieces(t *testing.T) {
	e := newEnv(t)
	rec := &pieceSTT{failAt: 3}
	e.w.STT = rec
	cut := audio.Cutting{Max: time.Second, Rate: audio.STTRate}
	e.w.Cutting = cut
	user := workertest.UserID(t, "a")
	body := tone(5*16000 + 800) // 5.05 s: six pieces
	c := e.seedChunk(t, user, cid, 2, body, "audio/wav")

	// What the pieces are, cut by the audio package itself.
	s, err := audio.Open("audio/wav", body)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for piece, err := range audio.Segments(s, cut) {
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, pieceText(piece.PCM))
	}
	if len(want) != 6 {
		t.Fatalf("%d pieces, want 6", len(want))
	}

	err = e.w.Handle(t.Context(), e.chunkEvent(t, user, c))
	if err == nil || events.IsPermanent(err) {
		t.Fatalf("Handle with the recogniser down at piece 3 = %v, want a transient error", err)
	}
	if n := len(e.parts(t, user)); n != 2 {
		t.Fatalf("%d pieces stored before the outage, want 2", n)
	}
	if n := len(e.segments(t, user)); n != 0 {
		t.Fatalf("%d segments after a failed attempt", n)
	}

	for range 2 { // the redelivery, then a duplicate of it
		if err := e.w.Handle(t.Context(), e.chunkEvent(t, user, c)); err != nil {
			t.Fatalf("Handle: %v", err)
		}
	}
	// 2 done + 1 failed + 4 left; nothing recognised twice.
	if n := rec.count(); n != 7 {
		t.Errorf("recogniser calls = %d, want 7", n)
	}
	segs := e.segments(t, user)
	if len(segs) != 1 {
		t.Fatalf("%d segments, want 1", len(segs))
	}
	seg, err := records.SegmentFrom(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	text, err := e.keys.Open(t.Context(), user, seg.SealedText, keys.AD(user, records.Segments, records.ChunkID(cid, 2), "text"))
	if err != nil {
		t.Fatal(err)
	}
	if string(text) != strings.Join(want, " ") {
		t.Errorf("segment text %q, want the pieces' in order %q", text, strings.Join(want, " "))
	}
	if seg.DurationMS != 5050 || seg.Model != "piece-stt" {
		t.Errorf("segment lasts %d ms by %q, want 5050 by piece-stt", seg.DurationMS, seg.Model)
	}
	if n := len(e.parts(t, user)); n != 0 {
		t.Errorf("%d pieces left after the segment was written", n)
	}
	pubs := e.bus.All()
	if len(pubs) == 0 {
		t.Fatal("no transcript event")
	}
	for _, p := range pubs {
		if p.Event.ID() != pubs[0].Event.ID() {
			t.Fatalf("two transcript events with different ids: %s, %s", pubs[0].Event.ID(), p.Event.ID())
		}
	}
}

// A stored piece of other audio (the seq erased and accepted again with
// other bytes) or of another cut is not reused.
func TestHandlePieceOfOtherAudioNotReused(t *testing.T) {
	e := newEnv(t)
	rec := &pieceSTT{}
	e.w.STT = rec
	user := workertest.UserID(t, "a")
	c := e.seedChunk(t, user, cid, 0, tone(1600), "audio/wav")
	ad := keys.AD(user, records.SegmentParts, records.SegmentPartID(cid, 0, 0), "text")
	sealed, err := e.keys.Seal(t.Context(), user, []byte("stale words"), ad)
	if err != nil {
		t.Fatal(err)
	}
	stale := records.SegmentPart{ConversationID: cid, Seq: 0, Part: 0, Digest: digest([]byte("other")), DurationMS: 100, SealedText: sealed, Model: "old"}
	d, err := stale.Doc(user)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.docs.Put(t.Context(), d); err != nil {
		t.Fatal(err)
	}
	if err := e.w.Handle(t.Context(), e.chunkEvent(t, user, c)); err != nil {
		t.Fatalf("Handle: %v", err)
	}
	if rec.count() != 1 {
		t.Fatalf("recogniser calls = %d, want 1 (the stale piece ignored)", rec.count())
	}
	seg, err := records.SegmentFrom(e.segments(t, user)[0])
	if err != nil {
		t.Fatal(err)
	}
	text, err := e.keys.Open(t.Context(), user, seg.SealedText, keys.AD(user, records.Segments, records.ChunkID(cid, 0), "text"))
	if err != nil || strings.Contains(string(text), "stale") {
		t.Fatalf("segment text %q (%v) reuses a piece of other audio", text, err)
	}
}
