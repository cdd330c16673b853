package processing_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/app/processing"
	"github.com/lethe-dev/lethe/app/records"
)

func embedded() processing.Settings {
	return processing.Settings{Env: "development", Documents: "sqlite", Blobs: "dir", Vectors: "flat", STT: "pocketsphinx",
		Embedder: "hashing", KEK: "file", RateLimit: "memory", Auth: "local", Bus: "embedded", DataDir: "/var/lib/lethe",
		ErasureJournal: "/var/lib/lethe.erasures", OpenAIBaseURL: "https://api.openai.com/v1",
		Retention:    records.Retention{AudioDays: 30, TranscriptDays: 365, VectorDays: 365, ExportDays: 7},
		ExportURLTTL: 15 * time.Minute, UploadURLTTL: 15 * time.Minute, RateWindow: time.Minute}
}

func render(t *testing.T, s processing.Settings) (processing.Record, string) {
	t.Helper()
	r := processing.Build(s)
	var md bytes.Buffer
	if err := r.Markdown(&md); err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return r, md.String() + string(j)
}

func activity(t *testing.T, r processing.Record, name string) processing.Activity {
	t.Helper()
	for _, a := range r.Activities {
		if a.Name == name {
			return a
		}
	}
	t.Fatalf("no activity %q", name)
	return processing.Activity{}
}

// TestRecordFollowsConfiguration: each change of adapter or retention
// shows in the record, and only that change does.
func TestRecordFollowsConfiguration(t *testing.T) {
	_, base := render(t, embedded())
	if !strings.Contains(base, "PocketSphinx") || !strings.Contains(base, "none: every store and provider runs on this machine") {
		t.Fatalf("embedded record:\n%s", base)
	}
	for _, tc := range []struct {
		name     string
		change   func(*processing.Settings)
		activity string
		want     []string
		gone     []string
	}{
		{"deepgram", func(s *processing.Settings) { s.STT = "deepgram" }, "transcription",
			[]string{"Deepgram", "mip_opt_out=true", "to the processors named above: Deepgram"}, []string{"PocketSphinx"}},
		{"self-hosted whisper", func(s *processing.Settings) {
			s.STT, s.OpenAIBaseURL, s.OpenAISTTModel = "openai", "http://whisper.internal:8080/v1", "whisper-1"
		}, "transcription", []string{"whisper.internal:8080", "whisper-1"}, []string{"PocketSphinx"}},
		{"audio days", func(s *processing.Settings) { s.Retention.AudioDays = 3 }, "audio capture", []string{"audio: 3 days"}, []string{"audio: 30 days"}},
		{"audio at once", func(s *processing.Settings) { s.Retention.AudioDays = 0 }, "audio capture", []string{"audio: deleted at the first retention sweep"}, []string{"audio: 30 days"}},
		{"transcript days", func(s *processing.Settings) { s.Retention.TranscriptDays = 90 }, "transcription", []string{"transcripts: 90 days"}, []string{"transcripts: 365 days"}},
		{"firestore", func(s *processing.Settings) { s.Documents, s.ProjectID = "firestore", "acme-prod" }, "notes", []string{"Firestore (project acme-prod)"}, []string{"docs.db"}},
		{"pinecone", func(s *processing.Settings) { s.Vectors, s.Embedder = "pinecone", "pinecone" }, "search", []string{"Pinecone Inference", "namespace per user"}, []string{"feature-hashing"}},
		{"kms", func(s *processing.Settings) { s.KEK = "gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k" }, "accounts and keys", []string{"Cloud KMS key projects/p/locations/l/keyRings/r/cryptoKeys/k"}, []string{"kek.json"}},
		{"redis", func(s *processing.Settings) { s.RateLimit = "redis://user:secretpw@10.0.0.3:6379/0" }, "abuse prevention", []string{"10.0.0.3:6379"}, []string{"secretpw", "in-process rate limiter"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := embedded()
			tc.change(&s)
			r, all := render(t, s)
			if all == base {
				t.Fatal("the record did not change")
			}
			a, _ := json.Marshal(activity(t, r, tc.activity))
			for _, w := range tc.want {
				if !strings.Contains(string(a), w) && !strings.Contains(all, w) {
					t.Errorf("record lacks %q:\n%s", w, a)
				}
			}
			for _, g := range tc.gone {
				if strings.Contains(all, g) {
					t.Errorf("record still says %q", g)
				}
			}
		})
	}
}

func TestMarkdownEscapesCells(t *testing.T) {
	s := embedded()
	s.STT, s.OpenAIBaseURL, s.OpenAISTTModel = "openai", "http://h/v1", "a|b"
	var md bytes.Buffer
	if err := processing.Build(s).Markdown(&md); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), `a\|b`) {
		t.Fatal("a | in a cell was not escaped")
	}
}
