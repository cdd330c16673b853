package transcribe_test

import (
	"testing"
	"time"

	"github.com/lethe-dev/lethe/app/records"
	"github.com/lethe-dev/lethe/workers/internal/workertest"
)

// TestHandleSchedulesExpiries: the transcript's expiry follows the user's
// policy (or the defaults); audio kept 0 days is due as soon as its
// transcript exists, and audio kept longer was scheduled at intake.
func TestHandleSchedulesExpiries(t *testing.T) {
	defaults := records.Retention{AudioDays: 30, TranscriptDays: 365, VectorDays: 365, ExportDays: 7}
	tests := []struct {
		name           string
		own            *records.Retention // the user's policy, nil: none
		wantTranscript time.Duration
		atIntake       bool          // the intake scheduled the audio (policy > 0 then)
		wantAudio      time.Duration // from the transcription time; -1: none
	}{
		{"defaults", nil, 365 * 24 * time.Hour, true, 0},
		{"own policy", &records.Retention{AudioDays: 2, TranscriptDays: 10, VectorDays: 5}, 10 * 24 * time.Hour, true, 0},
		{"audio until transcribed", &records.Retention{AudioDays: 0, TranscriptDays: 1}, 24 * time.Hour, true, 0},
		// The policy went from 0 to 2 days between intake and now: the
		// audio gets its expiry from its arrival, a minute ago.
		{"audio kept, none at intake", &records.Retention{AudioDays: 2, TranscriptDays: 1}, 24 * time.Hour, false, 2*24*time.Hour - time.Minute},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			e.w.Retention = defaults
			user := workertest.UserID(t, "a")
			if tc.own != nil {
				if err := records.WriteRetention(t.Context(), e.docs, user, *tc.own); err != nil {
					t.Fatal(err)
				}
			}
			c := e.seedChunk(t, user, cid, 1, tone(1600), "audio/wav")
			intakeAt := e.now.Add(-time.Hour) // what an intake scheduled, if it did
			if tc.atIntake {
				if err := records.ScheduleExpiry(t.Context(), e.docs, user, records.Expiry{Class: records.ClassAudio, Ref: records.ChunkID(cid, 1), At: intakeAt}); err != nil {
					t.Fatal(err)
				}
			}
			if err := e.w.Handle(t.Context(), e.chunkEvent(t, user, c)); err != nil {
				t.Fatalf("Handle: %v", err)
			}
			ref := records.ChunkID(cid, 1)
			tr, ok, err := records.ReadExpiry(t.Context(), e.docs, user, records.ClassTranscript, ref)
			if err != nil || !ok || !tr.At.Equal(e.now.Add(tc.wantTranscript)) {
				t.Errorf("transcript expiry %+v (%v, %v), want %v", tr, ok, err, e.now.Add(tc.wantTranscript))
			}
			want := intakeAt // left as the intake scheduled it
			if tc.own != nil && tc.own.AudioDays == 0 {
				want = e.now // due now that the words exist
			} else if !tc.atIntake {
				want = e.now.Add(tc.wantAudio)
			}
			au, ok, err := records.ReadExpiry(t.Context(), e.docs, user, records.ClassAudio, ref)
			if err != nil || !ok || !au.At.Equal(want) {
				t.Errorf("audio expiry %+v (%v, %v), want %v", au, ok, err, want)
			}
		})
	}
}

// TestHandleAudioDeletedByRetention: a re-drive of a chunk whose audio a
// sweep deleted is dropped, not retried forever.
func TestHandleAudioDeletedByRetention(t *testing.T) {
	e := newEnv(t)
	user := workertest.UserID(t, "a")
	c := e.seedChunk(t, user, cid, 2, tone(1600), "audio/wav")
	gone := c
	gone.BlobKey, gone.AudioDeletedAt = "", e.now
	e.putChunk(t, user, gone)
	if got := workertest.Classify(e.w.Handle(t.Context(), e.chunkEvent(t, user, c))); got != workertest.Dropped {
		t.Errorf("outcome %s, want dropped", got)
	}
	if e.stt.count() != 0 {
		t.Error("transcribed audio that retention deleted")
	}
}
