package bus

import (
	"bufio"
	"maps"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"

	"github.com/lethe-dev/lethe/events"
)

func baseEvent() event.Event {
	e := event.New()
	e.SetID("id-1")
	e.SetSource("//lethe.dev/pipeline")
	e.SetType("dev.lethe.test.happened.v1")
	return e
}

func baseAttrs() map[string]string {
	return map[string]string{
		"ce-specversion": "1.0",
		"ce-id":          "id-1",
		"ce-source":      "//lethe.dev/pipeline",
		"ce-type":        "dev.lethe.test.happened.v1",
	}
}

func with(m map[string]string, kv ...string) map[string]string {
	out := maps.Clone(m)
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

// TestToMessage checks the binary-mode mapping attribute by attribute
// against the binding: lower-case ce-<name>, canonical string values,
// datacontenttype as content-type, data as the body.
func TestToMessage(t *testing.T) {
	tests := []struct {
		name      string
		edit      func(*event.Event)
		wantAttrs map[string]string
		wantData  string
	}{
		{"required only", func(*event.Event) {}, baseAttrs(), ""},
		{
			"subject, time, dataschema, content type, data",
			func(e *event.Event) {
				e.SetSubject("users/ab12/conversations/c1")
				e.SetTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("X", -7*3600)))
				e.SetDataSchema("https://lethe.dev/schemas/x.json")
				_ = e.SetData("application/json; charset=utf-8", []byte(`{"a":1}`))
			},
			with(baseAttrs(),
				"ce-subject", "users/ab12/conversations/c1",
				"ce-time", "2026-01-02T10:04:05Z", // UTC, no fraction when there is none
				"ce-dataschema", "https://lethe.dev/schemas/x.json",
				"content-type", "application/json; charset=utf-8"),
			`{"a":1}`,
		},
		{
			"fractional seconds kept to the nanosecond",
			func(e *event.Event) { e.SetTime(time.Date(2026, 1, 2, 3, 4, 5, 120000000, time.UTC)) },
			with(baseAttrs(), "ce-time", "2026-01-02T03:04:05.12Z"),
			"",
		},
		{
			"extensions in canonical form",
			func(e *event.Event) {
				e.SetExtension("partitionkey", "conv-1")
				e.SetExtension("Count", 42) // names are lower-cased
				e.SetExtension("neg", int32(-5))
				e.SetExtension("flag", false)
				e.SetExtension("blob", []byte{0xde, 0xad, 0xbe, 0xef})
				e.SetExtension("when", time.Date(2026, 5, 6, 7, 8, 9, 0, time.FixedZone("Y", 3600)))
				e.SetExtension("ref", *types.ParseURIRef("/a/b"))
			},
			with(baseAttrs(),
				"ce-partitionkey", "conv-1",
				"ce-count", "42",
				"ce-neg", "-5",
				"ce-flag", "false",
				"ce-blob", "3q2+7w==",
				"ce-when", "2026-05-06T06:08:09Z",
				"ce-ref", "/a/b"),
			"",
		},
		{
			"binary data is the body byte for byte",
			func(e *event.Event) { _ = e.SetData("application/octet-stream", []byte{0, 1, 2, 0xff}) },
			with(baseAttrs(), "content-type", "application/octet-stream"),
			"\x00\x01\x02\xff",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := baseEvent()
			tc.edit(&e)
			data, attrs, err := ToMessage(e)
			if err != nil {
				t.Fatalf("ToMessage: %v", err)
			}
			if !maps.Equal(attrs, tc.wantAttrs) {
				t.Errorf("attrs:\n got %v\nwant %v", attrs, tc.wantAttrs)
			}
			if string(data) != tc.wantData {
				t.Errorf("data = %q, want %q", data, tc.wantData)
			}
		})
	}
}

func TestToMessageErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(*event.Event)
	}{
		{"missing id", func(e *event.Event) { e.SetID("") }},
		{"missing type", func(e *event.Event) { e.SetType("") }},
		{"specversion 0.3", func(e *event.Event) { e.SetSpecVersion("0.3") }},
		{"value over 1 KiB", func(e *event.Event) { e.SetSubject(strings.Repeat("s", 1025)) }},
		{"invalid UTF-8", func(e *event.Event) { e.SetSubject("users/\xff") }},
		{"too many attributes", func(e *event.Event) {
			for i := range 100 {
				e.SetExtension("x"+strings.Repeat("a", i%20)+string(rune('a'+i/20)), "v")
			}
		}},
		{"no context", func(e *event.Event) { e.Context = nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := baseEvent()
			tc.edit(&e)
			_, _, err := ToMessage(e)
			if err == nil || !events.IsPermanent(err) {
				t.Fatalf("ToMessage = %v, want a permanent error", err)
			}
		})
	}
}

func TestFromMessage(t *testing.T) {
	tests := []struct {
		name  string
		data  string
		attrs map[string]string
		check func(t *testing.T, e event.Event)
	}{
		{
			"binary, every attribute",
			`{"a":1}`,
			with(baseAttrs(),
				"ce-subject", "users/ab12/c1",
				"ce-time", "2026-11-23T10:11:12.5+01:00",
				"ce-dataschema", "https://lethe.dev/s.json",
				"content-type", "application/json",
				"ce-partitionkey", "conv-1"),
			func(t *testing.T, e event.Event) {
				if e.ID() != "id-1" || e.Source() != "//lethe.dev/pipeline" || e.Type() != "dev.lethe.test.happened.v1" ||
					e.Subject() != "users/ab12/c1" || e.DataSchema() != "https://lethe.dev/s.json" ||
					e.DataContentType() != "application/json" || string(e.Data()) != `{"a":1}` {
					t.Errorf("event = %s", e)
				}
				if !e.Time().Equal(time.Date(2026, 11, 23, 9, 11, 12, 5e8, time.UTC)) {
					t.Errorf("time = %v", e.Time())
				}
				if e.Extensions()["partitionkey"] != "conv-1" {
					t.Errorf("extensions = %v", e.Extensions())
				}
			},
		},
		{
			"attribute names are case-insensitive",
			"x",
			map[string]string{"CE-SpecVersion": "1.0", "Ce-Id": "id-1", "CE-SOURCE": "/s", "ce-Type": "t", "Content-Type": "text/plain", "CE-Trace": "abc"},
			func(t *testing.T, e event.Event) {
				if e.ID() != "id-1" || e.Source() != "/s" || e.DataContentType() != "text/plain" || e.Extensions()["trace"] != "abc" {
					t.Errorf("event = %s", e)
				}
			},
		},
		{
			"ce-datacontenttype accepted when content-type is absent",
			"x",
			with(baseAttrs(), "ce-datacontenttype", "text/plain"),
			func(t *testing.T, e event.Event) {
				if e.DataContentType() != "text/plain" {
					t.Errorf("datacontenttype = %q", e.DataContentType())
				}
			},
		},
		{
			"no body, no content type",
			"",
			baseAttrs(),
			func(t *testing.T, e event.Event) {
				if e.Data() != nil || e.DataContentType() != "" {
					t.Errorf("data = %q (%q)", e.Data(), e.DataContentType())
				}
			},
		},
		{
			"non-ce attributes are ignored",
			"",
			with(baseAttrs(), "lethe-dead-letter-reason", "x", "googclient_deliveryattempt", "3", "cex-y", "z"),
			func(t *testing.T, e event.Event) {
				if len(e.Extensions()) != 0 {
					t.Errorf("extensions = %v", e.Extensions())
				}
			},
		},
		{
			"structured JSON",
			`{"specversion":"1.0","id":"s1","source":"/src","type":"t.v1","subject":"users/x","data":{"k":[1,2]},"partitionkey":"p"}`,
			map[string]string{"content-type": "application/cloudevents+json; charset=UTF-8"},
			func(t *testing.T, e event.Event) {
				if e.ID() != "s1" || e.Source() != "/src" || e.Subject() != "users/x" || string(e.Data()) != `{"k":[1,2]}` || e.Extensions()["partitionkey"] != "p" {
					t.Errorf("event = %s", e)
				}
			},
		},
		{
			"structured with data_base64, media type in upper case",
			`{"specversion":"1.0","id":"s2","source":"/src","type":"t.v1","datacontenttype":"application/octet-stream","data_base64":"AAEC"}`,
			map[string]string{"Content-Type": "Application/CloudEvents+JSON"},
			func(t *testing.T, e event.Event) {
				if string(e.Data()) != "\x00\x01\x02" {
					t.Errorf("data = %q", e.Data())
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := FromMessage([]byte(tc.data), tc.attrs)
			if err != nil {
				t.Fatalf("FromMessage: %v", err)
			}
			tc.check(t, e)
		})
	}
}

func TestFromMessageErrors(t *testing.T) {
	tests := []struct {
		name    string
		data    string
		attrs   map[string]string
		wantErr string
	}{
		{"no attributes", "hello", nil, "missing ce-specversion"},
		{"missing id", "", func() map[string]string { a := baseAttrs(); delete(a, "ce-id"); return a }(), "ce-id"},
		{"blank id", "", with(baseAttrs(), "ce-id", "  "), "ce-id"},
		{"missing source", "", func() map[string]string { a := baseAttrs(); delete(a, "ce-source"); return a }(), "ce-source"},
		{"missing type", "", func() map[string]string { a := baseAttrs(); delete(a, "ce-type"); return a }(), "ce-type"},
		{"specversion 0.3", "", with(baseAttrs(), "ce-specversion", "0.3"), "specversion"},
		{"bad time", "", with(baseAttrs(), "ce-time", "2026-13-01"), "ce-time"},
		{"relative dataschema", "", with(baseAttrs(), "ce-dataschema", "/schemas/x"), "dataschema"},
		{"empty subject", "", with(baseAttrs(), "ce-subject", ""), "subject"},
		{"bad content type", "", with(baseAttrs(), "content-type", "not a media type;;"), "datacontenttype"},
		{"extension with dash", "", with(baseAttrs(), "ce-trace-id", "x"), "only a-z and 0-9"},
		{"extension named data", "", with(baseAttrs(), "ce-data", "x"), "reserved"},
		{"empty extension name", "", with(baseAttrs(), "ce-", "x"), "empty extension name"},
		{"case duplicates disagree", "", with(baseAttrs(), "CE-ID", "other"), "given twice"},
		{"content types disagree", "", with(baseAttrs(), "content-type", "a/b", "ce-datacontenttype", "c/d"), "disagree"},
		{"structured bad JSON", `{"id":`, map[string]string{"content-type": "application/cloudevents+json"}, "structured event"},
		{"structured not an object", `[1,2]`, map[string]string{"content-type": "application/cloudevents+json"}, "structured event"},
		{"structured 0.3", `{"specversion":"0.3","id":"a","source":"/s","type":"t"}`, map[string]string{"content-type": "application/cloudevents+json"}, "specversion"},
		{"structured missing type", `{"specversion":"1.0","id":"a","source":"/s"}`, map[string]string{"content-type": "application/cloudevents+json"}, "type"},
		{"batch format", `[]`, map[string]string{"content-type": "application/cloudevents-batch+json"}, "unsupported event format"},
		{"avro format", `x`, map[string]string{"content-type": "application/cloudevents+avro"}, "unsupported event format"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := FromMessage([]byte(tc.data), tc.attrs)
			if err == nil {
				t.Fatal("FromMessage succeeded, want error")
			}
			if !events.IsPermanent(err) {
				t.Errorf("error %v is not permanent", err)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not mention %q", err, tc.wantErr)
			}
		})
	}
}

// TestRoundTrip: binary mode is lossless for string-valued attributes.
func TestRoundTrip(t *testing.T) {
	e := baseEvent()
	e.SetSubject("users/ab12/c1")
	e.SetTime(time.Date(2026, 11, 23, 9, 11, 12, 123456789, time.UTC))
	e.SetDataSchema("https://lethe.dev/s.json")
	e.SetExtension("partitionkey", "c1")
	if err := e.SetData("application/json", map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	data, attrs, err := ToMessage(e)
	if err != nil {
		t.Fatal(err)
	}
	back, err := FromMessage(data, attrs)
	if err != nil {
		t.Fatal(err)
	}
	if back.String() != e.String() {
		t.Errorf("round trip changed the event:\n got %s\nwant %s", back, e)
	}
}

func TestTruncateUTF8(t *testing.T) {
	tests := []struct {
		in   string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"ééé", 5, "éé"}, // never splits a rune
		{"a\xffb", 10, "a\uFFFDb"},
		{strings.Repeat("é", 2000), 1024, strings.Repeat("é", 512)},
	}
	for _, tc := range tests {
		got := truncateUTF8(tc.in, tc.n)
		if got != tc.want || len(got) > tc.n || !utf8.ValidString(got) {
			t.Errorf("truncateUTF8(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}

// encodeAttrs/decodeAttrs let the fuzzer drive attributes through one
// string: "key=value" lines.
func decodeAttrs(s string) map[string]string {
	attrs := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		attrs[k] = v
	}
	return attrs
}

func encodeAttrs(m map[string]string) string {
	var b strings.Builder
	for k, v := range m {
		b.WriteString(k + "=" + v + "\n")
	}
	return b.String()
}

// FuzzFromMessage: FromMessage never panics, fails only with permanent
// errors, and what it accepts and ToMessage can carry is a fixed point of
// ToMessage∘FromMessage.
func FuzzFromMessage(f *testing.F) {
	f.Add([]byte(`{"a":1}`), encodeAttrs(with(baseAttrs(), "content-type", "application/json", "ce-time", "2026-01-02T03:04:05Z", "ce-partitionkey", "k")))
	f.Add([]byte(""), encodeAttrs(baseAttrs()))
	f.Add([]byte(`{"specversion":"1.0","id":"a","source":"/s","type":"t","data":{"x":1},"ext":"v"}`), "content-type=application/cloudevents+json\n")
	f.Add([]byte(`{"specversion":"1.0","id":"a","source":"/s","type":"t","datacontenttype":"text/plain","data":"hi","data_base64":"aGk="}`), "content-type=application/cloudevents+json\n")
	f.Add([]byte("\x00\xff"), "CE-ID=x\nce-specversion=1.0\nce-dataschema=http://x/y\n")
	f.Fuzz(func(t *testing.T, data []byte, attrLines string) {
		e, err := FromMessage(data, decodeAttrs(attrLines))
		if err != nil {
			if !events.IsPermanent(err) {
				t.Fatalf("non-permanent error: %v", err)
			}
			return
		}
		d1, a1, err := ToMessage(e)
		if err != nil {
			if !events.IsPermanent(err) {
				t.Fatalf("ToMessage non-permanent error: %v", err)
			}
			return // e.g. an attribute over Pub/Sub's limits
		}
		e2, err := FromMessage(d1, a1)
		if err != nil {
			t.Fatalf("FromMessage rejects what ToMessage produced: %v\nattrs %v", err, a1)
		}
		d2, a2, err := ToMessage(e2)
		if err != nil {
			t.Fatalf("second ToMessage: %v", err)
		}
		if string(d1) != string(d2) || !maps.Equal(a1, a2) {
			t.Fatalf("mapping not stable:\n%v %q\n%v %q", a1, d1, a2, d2)
		}
	})
}
