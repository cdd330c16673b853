package ingest_test

import (
	"testing"
	"time"

	"github.com/lethe-dev/lethe/app/ingest"
	"github.com/lethe-dev/lethe/app/records"
)

// TestAcceptSchedulesAudioExpiry: accepted audio carries its expiry from
// the user's policy (or the defaults); audio kept 0 days has none at
// intake (the transcriber schedules it once the words exist).
func TestAcceptSchedulesAudioExpiry(t *testing.T) {
	tests := []struct {
		name     string
		defaults records.Retention
		own      *records.Retention
		want     time.Duration // 0: no expiry at intake
	}{
		{"defaults", records.Retention{AudioDays: 30}, nil, 30 * 24 * time.Hour},
		{"own policy", records.Retention{AudioDays: 30}, &records.Retention{AudioDays: 3}, 3 * 24 * time.Hour},
		{"until transcribed", records.Retention{AudioDays: 30}, &records.Retention{AudioDays: 0}, 0},
		{"default until transcribed", records.Retention{}, nil, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			f.in.Retention = tc.defaults
			user := userID(t, "alice")
			if tc.own != nil {
				if err := records.WriteRetention(t.Context(), f.docs, user, *tc.own); err != nil {
					t.Fatal(err)
				}
			}
			_, err := f.in.Accept(t.Context(), ingest.Chunk{User: user, ConversationID: "c1", Seq: 2,
				ContentType: "audio/wav", Audio: speech(t), Origin: ingest.OriginApp})
			if err != nil {
				t.Fatal(err)
			}
			got, ok, err := records.ReadExpiry(t.Context(), f.docs, user, records.ClassAudio, records.ChunkID("c1", 2))
			if err != nil || ok != (tc.want != 0) || (ok && !got.At.Equal(f.now.Add(tc.want))) {
				t.Errorf("audio expiry %+v (%v, %v), want %v after %v", got, ok, err, tc.want, f.now)
			}
		})
	}
}
