package upload_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/workers/internal/workertest"
	"github.com/lethe-dev/lethe/workers/upload"
)

// FuzzDecoder: whatever a notification holds, the decoder does not panic,
// fails only as drop or poison, and every event it returns validates with
// the registry and names the object it was told about.
func FuzzDecoder(f *testing.F) {
	const (
		bucket = "lethe-uploads"
		user   = "0123456789abcdef0123456789abcdef"
		object = "uploads/" + user + "/conv-1_a/0000042"
		gen    = "1731234567890123"
	)
	reg, err := events.NewRegistry()
	if err != nil {
		f.Fatalf("events.NewRegistry: %v", err)
	}
	body := func(name, generation, size, ctype, crc string) []byte {
		b, err := json.Marshal(map[string]any{
			"kind": "storage#object", "id": bucket + "/" + name + "/" + generation,
			"name": name, "bucket": bucket, "generation": generation, "metageneration": "1",
			"contentType": ctype, "size": size, "crc32c": crc, "md5Hash": "1B2M2Y8AsgTpgAmY7PhCfg==",
			"timeCreated": "2026-11-23T10:00:00.000Z", "updated": "2026-11-23T10:00:00.000Z",
			"storageClass": "STANDARD", "metadata": map[string]string{"k": "v"},
		})
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	valid := body(object, gen, "104864", "audio/wav", "nH3/Ug==")
	f.Add(valid, "OBJECT_FINALIZE", bucket, object, gen, "2026-11-23T10:00:00.000000Z")
	f.Add(body(object, gen, "5964", "audio/ogg; codecs=opus", "AAAAAA=="), "OBJECT_FINALIZE", bucket, object, gen, "")
	f.Add(body(object, gen, "1", "audio/L16;rate=16000", "/////w=="), "OBJECT_DELETE", bucket, object, gen, "x")
	f.Add(body(object, "9007199254740993", "1", "audio/wav", "AAAAAA=="), "OBJECT_FINALIZE", bucket, object, "9007199254740993", "")
	f.Add(body(object, gen, "5497558138881", "audio/wav", "AAAAAA=="), "OBJECT_FINALIZE", bucket, object, gen, "9999-12-31T23:59:59-01:00")
	f.Add([]byte(`{"kind":"storage#object"}`), "OBJECT_FINALIZE", bucket, "uploads/../x", "1", "")
	f.Add([]byte(`null`), "", "", "", "", "")

	now := time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)
	decode := upload.Decoder(reg, bucket, func() time.Time { return now })
	// The corpus starts from a notification that decodes.
	if _, err := decode(valid, map[string]string{
		"eventType": "OBJECT_FINALIZE", "payloadFormat": "JSON_API_V1", "bucketId": bucket,
		"objectId": object, "objectGeneration": gen,
	}); err != nil {
		f.Fatalf("valid seed: %v", err)
	}
	f.Fuzz(func(t *testing.T, data []byte, eventType, bucketID, objectID, generation, eventTime string) {
		attrs := map[string]string{
			"eventType": eventType, "payloadFormat": "JSON_API_V1", "bucketId": bucketID,
			"objectId": objectID, "objectGeneration": generation, "eventTime": eventTime,
		}
		ev, err := decode(data, attrs)
		if err != nil {
			switch got := workertest.Classify(err); {
			case got == workertest.Dropped && eventType == "OBJECT_FINALIZE":
				t.Fatalf("a finalize notification was dropped: %v", err)
			case got != workertest.Dropped && got != workertest.Permanent:
				t.Fatalf("Decoder = %v (%s), want dropped or permanent", err, got)
			}
			return
		}
		if err := reg.Validate(ev); err != nil {
			t.Fatalf("decoded event does not validate: %v", err)
		}
		var p events.UploadFinalized
		if err := reg.Decode(ev, &p); err != nil {
			t.Fatalf("decoded event does not decode: %v", err)
		}
		if eventType != "OBJECT_FINALIZE" || p.Bucket != bucket || p.Object != objectID || bucketID != bucket {
			t.Fatalf("decoded %+v from eventType %q bucket %q object %q", p, eventType, bucketID, objectID)
		}
		if ev.Source() != "//storage.googleapis.com/projects/_/buckets/"+bucket || ev.Time().IsZero() {
			t.Fatalf("source %q time %v", ev.Source(), ev.Time())
		}
		if _, err := json.Marshal(ev); err != nil {
			t.Fatalf("event does not encode: %v", err)
		}
	})
}
