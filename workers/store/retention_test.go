package store_test

import (
	"testing"
	"time"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/infra/embed/hashembed"
	"github.com/lethe-dev/lethe/workers/internal/workertest"
)

// TestHandleSchedulesVectorExpiry: a vector expires after its own
// retention, but never after its transcript.
func TestHandleSchedulesVectorExpiry(t *testing.T) {
	const d = 24 * time.Hour
	tests := []struct {
		name       string
		vectorDays int
		transcript time.Duration // from now; 0: none scheduled
		want       time.Duration
	}{
		{"own retention", 5, 10 * d, 5 * d},
		{"capped by the transcript", 30, 2 * d, 2 * d},
		{"no transcript expiry", 7, 0, 7 * d},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.w.Retention = records.Retention{AudioDays: 1, TranscriptDays: 365, VectorDays: tc.vectorDays}
			user := workertest.UserID(t, "a")
			e.seedChunk(t, user, cid, 5, records.StatusTranscribed)
			ref := records.ChunkID(cid, 5)
			if tc.transcript != 0 {
				err := records.ScheduleExpiry(t.Context(), e.docs, user, records.Expiry{Class: records.ClassTranscript, Ref: ref, At: e.now.Add(tc.transcript)})
				if err != nil {
					t.Fatal(err)
				}
			}
			if err := e.w.Handle(t.Context(), e.embeddingEvent(t, user, cid, 5, hashembed.Vector(text))); err != nil {
				t.Fatalf("Handle: %v", err)
			}
			got, ok, err := records.ReadExpiry(t.Context(), e.docs, user, records.ClassVector, ref)
			if err != nil || !ok || !got.At.Equal(e.now.Add(tc.want)) {
				t.Errorf("vector expiry %+v (%v, %v), want %v", got, ok, err, e.now.Add(tc.want))
			}
		})
	}
}
