package functions

import (
	"encoding/json"
	"testing"

	"github.com/lethe-dev/lethe/app/records"
)

// FuzzRetentionBody: the policy parser never panics, and whatever it
// accepts is in bounds and is exactly what the body says.
func FuzzRetentionBody(f *testing.F) {
	for _, s := range []string{
		`{"audio_days": 0, "transcript_days": 365, "vector_days": 365, "export_days": 7}`,
		`{"audio_days": 3e1, "transcript_days": 36500, "vector_days": 1.0, "export_days": 0}`,
		`{"audio_days": -1}`, `null`, `[]`, `{"a":1}`, `{"audio_days": 1e400}`, "\xff",
	} {
		f.Add([]byte(s))
	}
	rt := newRetentionRoutes(&Server{})
	f.Fuzz(func(t *testing.T, body []byte) {
		pol, err := rt.validate(body)
		if err != nil {
			return
		}
		if verr := pol.Validate(); verr != nil {
			t.Fatalf("accepted %q as %+v: %v", body, pol, verr)
		}
		var raw map[string]float64
		if err := json.Unmarshal(body, &raw); err != nil || len(raw) != 4 {
			t.Fatalf("accepted %q, which is not four numbers: %v", body, err)
		}
		want := records.Retention{AudioDays: int(raw["audio_days"]), TranscriptDays: int(raw["transcript_days"]),
			VectorDays: int(raw["vector_days"]), ExportDays: int(raw["export_days"])}
		if pol != want {
			t.Fatalf("accepted %q as %+v, want %+v", body, pol, want)
		}
	})
}
