package transcribe_test

import (
	"strings"
	"testing"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/workers/internal/workertest"
)

// TestHandleSealedAudioLimit: audio that fits the limit exactly is
// transcribed; one byte over fails the chunk as too large (final, with
// that reason), never cut short and then reported as tampering.
func TestHandleSealedAudioLimit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		slack int64 // limit minus the sealed blob's size
		fits  bool
	}{
		{"exactly the limit", 0, true},
		{"one byte over", -1, false},
		{"far over", -1 << 10, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			user := workertest.UserID(t, "a")
			c := e.seedChunk(t, user, cid, 1, tone(1600), "audio/wav")
			rc, attrs, err := e.blobs.Read(t.Context(), c.BlobKey)
			if err != nil {
				t.Fatal(err)
			}
			rc.Close()
			e.w.MaxSealedAudio = attrs.Size + tc.slack
			err = e.w.Handle(t.Context(), e.chunkEvent(t, user, c))
			got := e.chunk(t, user, cid, 1)
			if tc.fits {
				if err != nil || got.Status != records.StatusTranscribed {
					t.Fatalf("Handle = %v, chunk %q; want transcribed", err, got.Status)
				}
				return
			}
			if outcome := workertest.Classify(err); outcome != workertest.Permanent {
				t.Fatalf("outcome %s (%v), want permanent", outcome, err)
			}
			if got.Status != records.StatusFailed || !strings.Contains(got.FailReason, "too large") {
				t.Fatalf("chunk %q (%q), want failed as too large", got.Status, got.FailReason)
			}
			if strings.Contains(err.Error(), "decrypt") || e.stt.count() != 0 || len(e.bus.All()) != 0 {
				t.Fatalf("oversized audio was opened, transcribed or published: %v", err)
			}
		})
	}
}
