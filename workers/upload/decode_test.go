package upload_test

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/events"
	"github.com/lethe-dev/lethe/infra/blobs/gcsnotify"
	"github.com/lethe-dev/lethe/infra/bus"
	"github.com/lethe-dev/lethe/workers/internal/workertest"
	"github.com/lethe-dev/lethe/workers/upload"
)

func TestDecoder(t *testing.T) {
	e := newEnv(t)
	user := workertest.UserID(t, "a")
	hello := readTestdata(t, "speech-hello.wav")
	a := e.put(t, user, 42, hello, "audio/wav; rate=16000")
	attrs, body := notification(a, "OBJECT_FINALIZE")
	attrs["eventTime"] = "2026-11-23T11:00:00.123456+01:00"

	ev, err := e.decode(mustJSON(t, body), attrs)
	if err != nil {
		t.Fatalf("Decoder: %v", err)
	}
	if err := e.Events.Validate(ev); err != nil {
		t.Errorf("decoded event does not validate: %v", err)
	}
	wantID := events.DeriveID("gcs-upload", e.bucket, a.Name, strconv.FormatInt(a.Generation, 10))
	if ev.ID() != wantID {
		t.Errorf("id = %q, want %q", ev.ID(), wantID)
	}
	if ev.Type() != events.TypeUploadFinalized {
		t.Errorf("type = %q", ev.Type())
	}
	if want := events.Subject(user, "conversations", cid, "chunks", "42"); ev.Subject() != want {
		t.Errorf("subject = %q, want %q", ev.Subject(), want)
	}
	if want := "//storage.googleapis.com/projects/_/buckets/" + e.bucket; ev.Source() != want {
		t.Errorf("source = %q, want %q", ev.Source(), want)
	}
	if want := time.Date(2026, 11, 23, 10, 0, 0, 123456000, time.UTC); !ev.Time().Equal(want) {
		t.Errorf("time = %v, want the notification's eventTime %v", ev.Time(), want)
	}
	var p events.UploadFinalized
	if err := e.Events.Decode(ev, &p); err != nil {
		t.Fatalf("registry Decode: %v", err)
	}
	want := events.UploadFinalized{
		User: user, ConversationID: cid, Seq: 42, Bucket: e.bucket, Object: a.Name,
		Generation: a.Generation, Size: int64(len(hello)), ContentType: "audio/wav; rate=16000", CRC32C: a.CRC32C,
	}
	if p != want {
		t.Errorf("payload = %+v, want %+v", p, want)
	}
	if a.CRC32C == 0 || a.Generation <= 0 {
		t.Fatalf("the fake reported crc32c %d generation %d: the test checks nothing", a.CRC32C, a.Generation)
	}
}

// eventTime is the notification's when it parses as RFC 3339, else now.
func TestDecoderEventTime(t *testing.T) {
	e := newEnv(t)
	a := e.put(t, workertest.UserID(t, "a"), 1, readTestdata(t, "speech-hello.wav"), contentWAV)
	for _, tc := range []struct {
		name, attr string
		want       time.Time
	}{
		{"utc", "2026-11-23T10:00:00Z", time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)},
		{"missing", "", e.now},
		{"not a time", "yesterday", e.now},
		{"not RFC 3339", "Mon, 23 Nov 2026 10:00:00 GMT", e.now},
		{"year zero", "0000-01-01T00:00:00Z", e.now},
	} {
		t.Run(tc.name, func(t *testing.T) {
			attrs, body := notification(a, "OBJECT_FINALIZE")
			if tc.attr == "" {
				delete(attrs, "eventTime")
			} else {
				attrs["eventTime"] = tc.attr
			}
			ev, err := e.decode(mustJSON(t, body), attrs)
			if err != nil {
				t.Fatalf("Decoder: %v", err)
			}
			if !ev.Time().Equal(tc.want) {
				t.Errorf("time = %v, want %v", ev.Time(), tc.want)
			}
			if err := e.Events.Validate(ev); err != nil {
				t.Errorf("event does not validate: %v", err)
			}
		})
	}
}

// Redeliveries of one upload are one event (replays dedupe); another
// upload to the same name is another event.
func TestDecoderIDs(t *testing.T) {
	e := newEnv(t)
	user := workertest.UserID(t, "a")
	hello := readTestdata(t, "speech-hello.wav")
	first := e.put(t, user, 1, hello, contentWAV)
	second := e.put(t, user, 1, hello, contentWAV)
	if first.Generation == second.Generation {
		t.Fatal("two uploads share a generation")
	}
	decode := func(t *testing.T, attrs map[string]string, body map[string]any) string {
		t.Helper()
		ev, err := e.decode(mustJSON(t, body), attrs)
		if err != nil {
			t.Fatalf("Decoder: %v", err)
		}
		return ev.ID()
	}
	attrs1, body1 := notification(first, "OBJECT_FINALIZE")
	id1 := decode(t, attrs1, body1)
	if again := decode(t, attrs1, body1); again != id1 {
		t.Errorf("redelivery id %q, first %q", again, id1)
	}
	// Cloud Storage may send the notification again later, with another
	// eventTime and notification config: still the same upload.
	attrs1b, body1b := notification(first, "OBJECT_FINALIZE")
	attrs1b["eventTime"] = "2030-01-01T00:00:00Z"
	attrs1b["notificationConfig"] = "projects/_/buckets/" + e.bucket + "/notificationConfigs/2"
	body1b["metageneration"] = "2"
	if again := decode(t, attrs1b, body1b); again != id1 {
		t.Errorf("later redelivery id %q, first %q", again, id1)
	}
	attrs2, body2 := notification(second, "OBJECT_FINALIZE")
	if id2 := decode(t, attrs2, body2); id2 == id1 {
		t.Error("another generation of the same object has the same id")
	}
	// Same object name and generation in another bucket: another upload.
	attrs3, body3 := notification(first, "OBJECT_FINALIZE")
	attrs3["bucketId"], body3["bucket"] = "another-bucket", "another-bucket"
	ev3, err := upload.Decoder(e.Events, "another-bucket", nil)(mustJSON(t, body3), attrs3)
	if err != nil {
		t.Fatalf("Decoder(another bucket): %v", err)
	}
	if ev3.ID() == id1 {
		t.Error("the same name and generation in another bucket has the same id")
	}
}

// Delete, archive and metadata notifications are acknowledged and dropped.
func TestDecoderDropsOtherEventTypes(t *testing.T) {
	e := newEnv(t)
	a := e.put(t, workertest.UserID(t, "a"), 1, readTestdata(t, "speech-hello.wav"), contentWAV)
	for _, et := range []string{"OBJECT_DELETE", "OBJECT_ARCHIVE", "OBJECT_METADATA_UPDATE"} {
		t.Run(et, func(t *testing.T) {
			attrs, body := notification(a, et)
			_, err := e.decode(mustJSON(t, body), attrs)
			if got := workertest.Classify(err); got != workertest.Dropped {
				t.Errorf("Decoder = %v (%s), want dropped", err, got)
			}
			if !errors.Is(err, gcsnotify.ErrNotFinalize) {
				t.Errorf("Decoder = %v, want ErrNotFinalize in the chain", err)
			}
			_, err = bus.Decode(e.decode, mustJSON(t, body), attrs)
			if got := bus.Classify(err); got != bus.OutcomeDrop {
				t.Errorf("bus.Decode = %v (%s), want drop", err, got)
			}
		})
	}
}

// Malformed and foreign notifications are poison: dead-lettered, never
// retried, and the error never quotes the object name.
func TestDecoderRejectsMalformed(t *testing.T) {
	e := newEnv(t)
	user := workertest.UserID(t, "a")
	a := e.put(t, user, 1, readTestdata(t, "speech-hello.wav"), contentWAV)
	other := workertest.UserID(t, "b")

	cases := []struct {
		name string
		// edit changes the notification; a non-nil result replaces the body.
		edit func(attrs map[string]string, body map[string]any) []byte
	}{
		{"body not JSON", func(map[string]string, map[string]any) []byte { return []byte("{not json") }},
		{"body empty", func(map[string]string, map[string]any) []byte { return []byte{} }},
		{"body a JSON array", func(map[string]string, map[string]any) []byte { return []byte(`[1,2]`) }},
		{"trailing data after the body", func(_ map[string]string, body map[string]any) []byte {
			return append(mustJSON(t, body), []byte(`{}`)...)
		}},
		{"body too large", func(_ map[string]string, body map[string]any) []byte {
			body["metadata"] = map[string]string{"pad": strings.Repeat("x", 70<<10)}
			return nil
		}},
		{"unknown eventType", func(attrs map[string]string, _ map[string]any) []byte {
			attrs["eventType"] = "OBJECT_EXPLODE"
			return nil
		}},
		{"missing eventType", func(attrs map[string]string, _ map[string]any) []byte { delete(attrs, "eventType"); return nil }},
		{"payloadFormat NONE", func(attrs map[string]string, _ map[string]any) []byte { attrs["payloadFormat"] = "NONE"; return nil }},
		{"another bucket than the decoder's", func(attrs map[string]string, body map[string]any) []byte {
			attrs["bucketId"], body["bucket"] = "someone-elses-bucket", "someone-elses-bucket"
			return nil
		}},
		{"body bucket disagrees with attributes", func(_ map[string]string, body map[string]any) []byte {
			body["bucket"] = "someone-elses-bucket"
			return nil
		}},
		{"body name disagrees with attributes (another user)", func(_ map[string]string, body map[string]any) []byte {
			body["name"] = "uploads/" + other + "/" + cid + "/0000001"
			return nil
		}},
		{"attribute objectId of another user than the body", func(attrs map[string]string, _ map[string]any) []byte {
			attrs["objectId"] = "uploads/" + other + "/" + cid + "/0000001"
			return nil
		}},
		{"body generation disagrees with attributes", func(_ map[string]string, body map[string]any) []byte {
			body["generation"] = strconv.FormatInt(a.Generation+1, 10)
			return nil
		}},
		{"generation as a JSON number", func(_ map[string]string, body map[string]any) []byte {
			body["generation"] = a.Generation
			return nil
		}},
		{"objectGeneration not a number", func(attrs map[string]string, _ map[string]any) []byte {
			attrs["objectGeneration"] = "latest"
			return nil
		}},
		{"object outside uploads/", func(attrs map[string]string, body map[string]any) []byte {
			name := "users/" + user + "/audio/" + cid + "/0000001"
			attrs["objectId"], body["name"] = name, name
			return nil
		}},
		{"object with a short seq", func(attrs map[string]string, body map[string]any) []byte {
			name := "uploads/" + user + "/" + cid + "/1"
			attrs["objectId"], body["name"] = name, name
			return nil
		}},
		{"object with traversal", func(attrs map[string]string, body map[string]any) []byte {
			name := "uploads/" + user + "/../" + cid + "/0000001"
			attrs["objectId"], body["name"] = name, name
			return nil
		}},
		{"object with an upper-case user hash", func(attrs map[string]string, body map[string]any) []byte {
			name := "uploads/" + strings.ToUpper(user) + "/" + cid + "/0000001"
			attrs["objectId"], body["name"] = name, name
			return nil
		}},
		{"kind not storage#object", func(_ map[string]string, body map[string]any) []byte { body["kind"] = "storage#bucket"; return nil }},
		{"size zero", func(_ map[string]string, body map[string]any) []byte { body["size"] = "0"; return nil }},
		{"crc32c not base64", func(_ map[string]string, body map[string]any) []byte { body["crc32c"] = "!!!"; return nil }},
		{"crc32c missing", func(_ map[string]string, body map[string]any) []byte { delete(body, "crc32c"); return nil }},
		{"content type not a media type", func(_ map[string]string, body map[string]any) []byte { body["contentType"] = "audio wav"; return nil }},
		{"content type beyond the schema's bound", func(_ map[string]string, body map[string]any) []byte {
			body["contentType"] = "audio/" + strings.Repeat("x", 140)
			return nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			attrs, body := notification(a, "OBJECT_FINALIZE")
			data := tc.edit(attrs, body)
			if data == nil {
				data = mustJSON(t, body)
			}
			_, err := e.decode(data, attrs)
			if got := workertest.Classify(err); got != workertest.Permanent {
				t.Fatalf("Decoder = %v (%s), want permanent", err, got)
			}
			if strings.Contains(err.Error(), user) || strings.Contains(err.Error(), other) {
				t.Errorf("error quotes a user hash: %v", err)
			}
			if _, err := bus.Decode(e.decode, data, attrs); bus.Classify(err) != bus.OutcomeDeadLetter {
				t.Errorf("bus.Decode = %v, want dead-letter", err)
			}
		})
	}
	// The unedited notification decodes: the cases above fail for their edit.
	attrs, body := notification(a, "OBJECT_FINALIZE")
	if _, err := e.decode(mustJSON(t, body), attrs); err != nil {
		t.Fatalf("unedited notification: %v", err)
	}
}
