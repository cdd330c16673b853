package events

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
)

// schemaDoc is the part of our schemas the tests reason about.
type schemaDoc struct {
	ID                   string                    `json:"$id"`
	Schema               string                    `json:"$schema"`
	Type                 string                    `json:"type"`
	AdditionalProperties *bool                     `json:"additionalProperties"`
	Required             []string                  `json:"required"`
	Properties           map[string]map[string]any `json:"properties"`
}

func loadSchema(t *testing.T, typ string) schemaDoc {
	t.Helper()
	raw, ok := Schema(typ)
	if !ok {
		t.Fatalf("no schema for %s", typ)
	}
	var s schemaDoc
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("schema %s: %v", typ, err)
	}
	return s
}

func marshalMap(t *testing.T, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wantPermanent asserts err is permanent and its message names every needle.
func wantPermanent(t *testing.T, err error, needles ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error, want permanent error naming %q", needles)
	}
	if !IsPermanent(err) {
		t.Fatalf("error %q is not permanent", err)
	}
	for _, n := range needles {
		if !strings.Contains(err.Error(), n) {
			t.Fatalf("error %q does not name %q", err, n)
		}
	}
}

func TestCatalog(t *testing.T) {
	wantTopic := map[string]string{
		TypeChunkReceived:        TopicAudio,
		TypeUploadFinalized:      TopicUploads,
		TypeTranscriptCreated:    TopicTranscripts,
		TypeEmbeddingCreated:     TopicEmbeddings,
		TypeTwilioRecordingDone:  TopicTwilio,
		TypeTwilioSMSReceived:    TopicTwilio,
		TypeTwilioCallStatus:     TopicTwilio,
		TypeRetentionSweep:       TopicLifecycle,
		TypeConversationErasure:  TopicLifecycle,
		TypeUserErasureRequested: TopicLifecycle,
		TypeUserExportRequested:  TopicLifecycle,
	}
	if len(AllTypes()) != len(wantTopic) {
		t.Fatalf("AllTypes has %d types, want %d", len(AllTypes()), len(wantTopic))
	}
	versioned := regexp.MustCompile(`^dev\.lethe\.[a-z]+(\.[a-z]+)+\.v[0-9]+$`)
	for _, typ := range AllTypes() {
		got, ok := TopicFor(typ)
		if !ok || got != wantTopic[typ] {
			t.Errorf("TopicFor(%s) = %q, %v; want %q", typ, got, ok, wantTopic[typ])
		}
		if !slices.Contains(AllTopics(), got) {
			t.Errorf("topic %q of %s not in AllTopics", got, typ)
		}
		if !versioned.MatchString(typ) {
			t.Errorf("type %s is not dev.lethe.<noun>.<verb>.vN", typ)
		}
		if want := "https://lethe.dev/schemas/" + typ + ".json"; DataSchema(typ) != want {
			t.Errorf("DataSchema(%s) = %s", typ, DataSchema(typ))
		}
	}
	if _, ok := TopicFor("dev.lethe.nope.v1"); ok {
		t.Error("TopicFor(unknown) ok")
	}
	if got := DeadLetterTopic(TopicAudio); got != "audio-dead-letter" {
		t.Errorf("DeadLetterTopic = %q", got)
	}
	if got := Subject(testUser, "conversations", "c1"); got != "users/"+testUser+"/conversations/c1" {
		t.Errorf("Subject = %q", got)
	}
	if got := Subject(testUser); got != "users/"+testUser {
		t.Errorf("Subject() = %q", got)
	}
}

func TestDeriveIDAndNewID(t *testing.T) {
	a := DeriveID("in-1", "transcribe")
	if a != DeriveID("in-1", "transcribe") {
		t.Fatal("DeriveID not deterministic")
	}
	if !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(a) {
		t.Fatalf("DeriveID = %q", a)
	}
	for _, other := range [][]string{{"in-1", "embed"}, {"in-2", "transcribe"}, {"in-1t", "ranscribe"}, {"in-1transcribe"}, {"in-1", "transcribe", ""}} {
		if DeriveID(other...) == a {
			t.Errorf("DeriveID(%q) collides with (in-1, transcribe)", other)
		}
	}
	uuidRE := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := NewID()
		if !uuidRE.MatchString(id) {
			t.Fatalf("NewID = %q, not a v4 UUID", id)
		}
		if seen[id] {
			t.Fatalf("NewID repeated %q", id)
		}
		seen[id] = true
	}
}

// TestSchemasLint: every schema is strict and bounded, and agrees with its Go
// type field for field (so the strict Go decode and the schema never drift).
func TestSchemasLint(t *testing.T) {
	for _, typ := range AllTypes() {
		t.Run(typ, func(t *testing.T) {
			s := loadSchema(t, typ)
			if s.ID != DataSchema(typ) {
				t.Errorf("$id = %q", s.ID)
			}
			if s.Schema != "https://json-schema.org/draft/2020-12/schema" {
				t.Errorf("$schema = %q", s.Schema)
			}
			if s.Type != "object" || s.AdditionalProperties == nil || *s.AdditionalProperties {
				t.Errorf("want type object with additionalProperties false")
			}
			for name, p := range s.Properties {
				switch p["type"] {
				case "string":
					if _, ok := p["maxLength"]; !ok {
						t.Errorf("%s: string without maxLength", name)
					}
					_, hasPattern := p["pattern"]
					_, hasEnum := p["enum"]
					_, hasFormat := p["format"]
					if !hasPattern && !hasEnum && !hasFormat {
						t.Errorf("%s: string without pattern, enum or format", name)
					}
				case "integer", "number":
					_, hasMin := p["minimum"]
					_, hasMax := p["maximum"]
					if !hasMin || !hasMax {
						t.Errorf("%s: number without minimum and maximum", name)
					}
				case "array":
					if _, ok := p["maxItems"]; !ok {
						t.Errorf("%s: array without maxItems", name)
					}
				default:
					t.Errorf("%s: unexpected type %v", name, p["type"])
				}
			}
			// Go type ↔ schema: same field names; required ⇔ not omitempty.
			pt, _ := payloadType(typ)
			var goFields, goRequired []string
			for f := range pt.Fields() {
				name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
				goFields = append(goFields, name)
				if !strings.Contains(opts, "omitempty") {
					goRequired = append(goRequired, name)
				}
			}
			var schemaFields []string
			for name := range s.Properties {
				schemaFields = append(schemaFields, name)
			}
			slices.Sort(goFields)
			slices.Sort(schemaFields)
			if !slices.Equal(goFields, schemaFields) {
				t.Errorf("Go fields %v != schema properties %v", goFields, schemaFields)
			}
			req := slices.Clone(s.Required)
			slices.Sort(req)
			slices.Sort(goRequired)
			if !slices.Equal(goRequired, req) {
				t.Errorf("Go non-omitempty fields %v != schema required %v", goRequired, req)
			}
		})
	}
}

// TestPayloadSchemas: for each type, the valid example passes and every way
// of breaking a field fails with a permanent error naming that field.
func TestPayloadSchemas(t *testing.T) {
	r := newTestRegistry(t)
	for _, typ := range AllTypes() {
		t.Run(typ, func(t *testing.T) {
			payload, subject := example(t, typ)
			valid := marshalMap(t, payload)
			s := loadSchema(t, typ)

			if err := r.Validate(rawEvent(t, typ, subject, mustJSON(t, valid))); err != nil {
				t.Fatalf("valid example rejected: %v", err)
			}

			type mutation struct {
				name  string
				field string // named in the error as /field
				apply func(m map[string]any)
			}
			var muts []mutation
			for _, f := range s.Required {
				muts = append(muts, mutation{"missing " + f, f, func(m map[string]any) { delete(m, f) }})
			}
			muts = append(muts, mutation{"unknown field", "extra", func(m map[string]any) { m["extra"] = "x" }})
			for f, p := range s.Properties {
				switch p["type"] {
				case "string":
					max := int(p["maxLength"].(float64))
					muts = append(muts,
						mutation{"oversize " + f, f, func(m map[string]any) { m[f] = strings.Repeat("a", max+1) }},
						mutation{"bad pattern/format " + f, f, func(m map[string]any) { m[f] = "not valid!" }},
						mutation{"wrong type " + f, f, func(m map[string]any) { m[f] = 7 }},
					)
				case "integer":
					hi := p["maximum"].(float64)
					lo := p["minimum"].(float64)
					muts = append(muts,
						mutation{"above max " + f, f, func(m map[string]any) { m[f] = hi + 1 }},
						mutation{"below min " + f, f, func(m map[string]any) { m[f] = lo - 1 }},
						mutation{"fraction " + f, f, func(m map[string]any) { m[f] = lo + 0.5 }},
						mutation{"wrong type " + f, f, func(m map[string]any) { m[f] = "1" }},
					)
				}
			}
			for _, mu := range muts {
				t.Run(mu.name, func(t *testing.T) {
					m := marshalMap(t, payload)
					mu.apply(m)
					// Subject stays consistent with the payload's user (when
					// the user field itself is broken, the data check fails first).
					err := r.Validate(rawEvent(t, typ, subject, mustJSON(t, m)))
					wantPermanent(t, err, "/"+mu.field)
					if !errors.Is(err, ErrInvalidData) {
						t.Errorf("error %q does not wrap ErrInvalidData", err)
					}
					// The constructor refuses the same strings (other
					// mutations cannot be expressed through the Go type).
					if strings.HasPrefix(mu.name, "oversize") || strings.HasPrefix(mu.name, "bad pattern") {
						p, _ := NewPayload(typ)
						if err := json.Unmarshal(mustJSON(t, m), p); err != nil {
							return // the Go type cannot even carry it (time.Time)
						}
						_, err := r.New(typ, subject, p)
						wantPermanent(t, err, "/"+mu.field)
					}
				})
			}

			// Specific format and pattern cases named in the contract.
			specific := map[string]any{
				"user":            "alice@example.com", // a raw uid, not its hash
				"conversation_id": "../etc",
				"request_id":      "has space",
				"requested_at":    "2026-13-40T99:00:00Z",
				"received_at":     "yesterday",
				"digest":          strings.Repeat("AB", 32),
				"account_sid":     "AC" + strings.Repeat("G", 32),
				"call_sid":        testRE,
				"recording_sid":   testCA,
				"message_sid":     "XX" + strings.Repeat("0", 32),
				"sealed_text":     "not base64!",
				"sealed_vector":   "AAA",
				"sealed_body":     "====",
				"blob_key":        "audio/../../etc/passwd",
				"vector_id":       "conv-1",
				"call_status":     "exploded",
				"origin":          "carrier-pigeon",
			}
			for f, bad := range specific {
				if _, ok := s.Properties[f]; !ok {
					continue
				}
				t.Run("specific "+f, func(t *testing.T) {
					m := marshalMap(t, payload)
					m[f] = bad
					err := r.Validate(rawEvent(t, typ, subject, mustJSON(t, m)))
					wantPermanent(t, err, "/"+f)
					if s, ok := bad.(string); ok && strings.Contains(err.Error(), s) {
						t.Errorf("error %q echoes the offending value", err)
					}
				})
			}
		})
	}
}

func TestEventAttributes(t *testing.T) {
	r := newTestRegistry(t)
	payload, subject := example(t, TypeChunkReceived)
	data := mustJSON(t, payload)
	tests := []struct {
		name   string
		mutate func(e *event.Event)
		want   string
		is     error
	}{
		{"unknown type", func(e *event.Event) { e.SetType("dev.lethe.nope.v1") }, "type", ErrUnknownType},
		{"missing type", func(e *event.Event) { e.SetType("") }, "type", ErrInvalidEvent},
		{"missing id", func(e *event.Event) { e.SetID("") }, "id", ErrInvalidEvent},
		{"id with space", func(e *event.Event) { e.SetID("a b") }, "id", ErrInvalidEvent},
		{"id too long", func(e *event.Event) { e.SetID(strings.Repeat("i", 257)) }, "id", ErrInvalidEvent},
		{"missing source", func(e *event.Event) { e.SetSource("") }, "source", ErrInvalidEvent},
		{"missing subject", func(e *event.Event) { e.SetSubject("") }, "subject", ErrInvalidEvent},
		{"subject of another user", func(e *event.Event) { e.SetSubject(Subject(testUser2, "conversations", "conv-1")) }, "subject", ErrInvalidEvent},
		{"subject user prefix only", func(e *event.Event) { e.SetSubject("users/" + testUser + "x") }, "subject", ErrInvalidEvent},
		{"subject with traversal chars", func(e *event.Event) { e.SetSubject("users/" + testUser + "//x") }, "subject", ErrInvalidEvent},
		{"missing time", func(e *event.Event) { e.SetTime(time.Time{}) }, "time", ErrInvalidEvent},
		{"missing datacontenttype", func(e *event.Event) { e.SetDataContentType("") }, "datacontenttype", ErrInvalidEvent},
		{"xml datacontenttype", func(e *event.Event) { e.SetDataContentType("application/xml") }, "datacontenttype", ErrInvalidEvent},
		{"json with latin1", func(e *event.Event) { e.SetDataContentType("application/json; charset=latin1") }, "datacontenttype", ErrInvalidEvent},
		{"missing dataschema", func(e *event.Event) { e.SetDataSchema("") }, "dataschema", ErrInvalidEvent},
		{"dataschema of another type", func(e *event.Event) { e.SetDataSchema(DataSchema(TypeTranscriptCreated)) }, "dataschema", ErrInvalidEvent},
		{"wrong specversion", func(e *event.Event) { e.SetSpecVersion(event.CloudEventsVersionV03) }, "specversion", ErrInvalidEvent},
		{"nil context", func(e *event.Event) { e.Context = nil }, "context", ErrInvalidEvent},
		{"no data", func(e *event.Event) { e.DataEncoded = nil }, "data", ErrInvalidData},
		{"not json", func(e *event.Event) { e.DataEncoded = []byte("{nope") }, "data", ErrInvalidData},
		{"trailing data", func(e *event.Event) { e.DataEncoded = append(slices.Clone(data), []byte(" {}")...) }, "data", ErrInvalidData},
		{"array", func(e *event.Event) { e.DataEncoded = []byte("[]") }, "data", ErrInvalidData},
		{"too large", func(e *event.Event) {
			e.DataEncoded = []byte(`{"pad":"` + strings.Repeat("x", MaxDataSize) + `"}`)
		}, "limit", ErrInvalidData},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := rawEvent(t, TypeChunkReceived, subject, data)
			tc.mutate(&e)
			err := r.Validate(e)
			wantPermanent(t, err, tc.want)
			if !errors.Is(err, tc.is) {
				t.Errorf("error %q does not wrap %v", err, tc.is)
			}
			var into ChunkReceived
			if err := r.Decode(e, &into); err == nil || !IsPermanent(err) {
				t.Errorf("Decode: %v, want permanent error", err)
			}
		})
	}
	// Accepted variants.
	for name, mutate := range map[string]func(*event.Event){
		"charset utf-8":  func(e *event.Event) { e.SetDataContentType("application/json; charset=utf-8") },
		"foreign source": func(e *event.Event) { e.SetSource("//cloudscheduler.googleapis.com/jobs/x") },
		"extension": func(e *event.Event) {
			e.SetExtension("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
		},
		"exact subject":   func(e *event.Event) { e.SetSubject(Subject(testUser)) },
		"non-UTC time":    func(e *event.Event) { e.SetTime(testTime.In(time.FixedZone("x", 3600))) },
		"structured mode": func(e *event.Event) { *e = viaStructured(t, *e) },
	} {
		t.Run("accepts "+name, func(t *testing.T) {
			e := rawEvent(t, TypeChunkReceived, subject, data)
			mutate(&e)
			if err := r.Validate(e); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

func viaStructured(t *testing.T, e event.Event) event.Event {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var out event.Event
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestRoundTrip(t *testing.T) {
	r := newTestRegistry(t)
	for _, typ := range AllTypes() {
		t.Run(typ, func(t *testing.T) {
			payload, subject := example(t, typ)
			before := time.Now().UTC().Add(-time.Second)
			e, err := r.New(typ, subject, payload)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if e.SpecVersion() != "1.0" || e.Source() != Source || e.Type() != typ || e.Subject() != subject ||
				e.DataContentType() != ContentTypeJSON || e.DataSchema() != DataSchema(typ) || e.ID() == "" {
				t.Fatalf("attributes not filled: %s", e.Context)
			}
			if e.Time().Before(before) || e.Time().Location() != time.UTC {
				t.Errorf("time %v not now in UTC", e.Time())
			}
			if err := e.Validate(); err != nil {
				t.Errorf("sdk Validate: %v", err)
			}
			// Decode into the payload type, through both wire forms.
			for name, ev := range map[string]event.Event{"direct": e, "structured": viaStructured(t, e)} {
				got, _ := NewPayload(typ)
				if err := r.Decode(ev, got); err != nil {
					t.Fatalf("%s Decode: %v", name, err)
				}
				if !reflect.DeepEqual(got, payload) {
					t.Errorf("%s round trip:\n got %+v\nwant %+v", name, got, payload)
				}
				anyP, err := r.DecodeAny(ev)
				if err != nil || !reflect.DeepEqual(anyP, payload) {
					t.Errorf("%s DecodeAny = %+v, %v", name, anyP, err)
				}
			}
			// Value (not pointer) payloads are accepted too.
			if _, err := r.New(typ, subject, reflect.ValueOf(payload).Elem().Interface()); err != nil {
				t.Errorf("New(value): %v", err)
			}
			// Deterministic ids.
			id := DeriveID("input-id", "stage")
			e2, err := r.NewWithID(id, typ, subject, payload)
			if err != nil || e2.ID() != id {
				t.Errorf("NewWithID = %v, %v", e2.ID(), err)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	r := newTestRegistry(t)
	chunk, subject := example(t, TypeChunkReceived)
	tests := []struct {
		name             string
		id, typ, subject string
		data             any
		want             string
		wantIs           error
	}{
		{"unknown type", "id", "dev.lethe.nope.v1", subject, chunk, "unknown", ErrUnknownType},
		{"wrong Go type", "id", TypeTranscriptCreated, subject, chunk, "TranscriptCreated", ErrTargetType},
		{"nil data", "id", TypeChunkReceived, subject, nil, "ChunkReceived", ErrTargetType},
		{"map data", "id", TypeChunkReceived, subject, map[string]any{}, "ChunkReceived", ErrTargetType},
		{"empty id", "", TypeChunkReceived, subject, chunk, "id", ErrInvalidEvent},
		{"bad subject", "id", TypeChunkReceived, "users/" + testUser2, chunk, "subject", ErrInvalidEvent},
		{"empty subject", "id", TypeChunkReceived, "", chunk, "subject", ErrInvalidEvent},
		{"bad field", "id", TypeChunkReceived, subject, &ChunkReceived{User: testUser}, "/conversation_id", ErrInvalidData},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.NewWithID(tc.id, tc.typ, tc.subject, tc.data)
			wantPermanent(t, err, tc.want)
			if !errors.Is(err, tc.wantIs) {
				t.Errorf("error %q does not wrap %v", err, tc.wantIs)
			}
		})
	}
}

func TestDecodeTarget(t *testing.T) {
	r := newTestRegistry(t)
	payload, subject := example(t, TypeChunkReceived)
	e, err := r.New(TypeChunkReceived, subject, payload)
	if err != nil {
		t.Fatal(err)
	}
	var wrong TranscriptCreated
	var nilPtr *ChunkReceived
	var value ChunkReceived
	var notPayload struct{ User string }
	for name, into := range map[string]any{"nil pointer": nilPtr, "non-pointer": value, "nil": nil, "not a payload": &notPayload} {
		err := r.Decode(e, into)
		if !errors.Is(err, ErrTargetType) || IsPermanent(err) {
			t.Errorf("%s: Decode = %v, want non-permanent ErrTargetType", name, err)
		}
	}
	// Another payload type: the event is misrouted, which is poison.
	if err := r.Decode(e, &wrong); !errors.Is(err, ErrUnexpectedType) || !IsPermanent(err) {
		t.Errorf("other payload type: Decode = %v, want permanent ErrUnexpectedType", err)
	}
}

// TestErrorsCarryNoValues: a payload full of would-be secrets produces
// errors that name fields but never echo values.
func TestErrorsCarryNoValues(t *testing.T) {
	r := newTestRegistry(t)
	secret := "alice@example.com said the launch code is 0000"
	m := map[string]any{
		"user": secret, "conversation_id": secret, "seq": secret, "blob_key": secret,
		"content_type": secret, "digest": secret, "size": -1, "origin": secret,
		"received_at": secret, secret: secret, "sealed_text": secret,
	}
	err := r.Validate(rawEvent(t, TypeChunkReceived, "users/x", mustJSON(t, m)))
	wantPermanent(t, err, "/user", "/seq", "/received_at")
	for _, frag := range []string{"alice", "launch", "0000"} {
		if strings.Contains(err.Error(), frag) {
			t.Fatalf("error %q echoes content", err)
		}
	}
	// Unknown types are echoed only quoted and bounded.
	e := rawEvent(t, strings.Repeat("t", 10000), "users/x", []byte("{}"))
	if err := r.Validate(e); err == nil || len(err.Error()) > 300 {
		t.Fatalf("unknown type error unbounded: %d bytes", len(fmt.Sprint(err)))
	}
}

func TestRegistryConcurrent(t *testing.T) {
	r := newTestRegistry(t)
	done := make(chan error)
	for _, typ := range AllTypes() {
		go func() {
			payload, subject := example(t, typ)
			for range 50 {
				e, err := r.New(typ, subject, payload)
				if err == nil {
					_, err = r.DecodeAny(e)
				}
				if err != nil {
					done <- err
					return
				}
			}
			done <- nil
		}()
	}
	for range AllTypes() {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}
