package events

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"mime"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"

	"github.com/lethe-dev/lethe/internal/schemaerr"
)

//go:embed schemas/*.json
var schemaFS embed.FS

// ContentTypeJSON is the only datacontenttype lethe events use.
const ContentTypeJSON = "application/json"

// Bounds on context attributes. Pub/Sub attribute values are capped at
// 1024 bytes; ours stay well below, and printable so they are log-safe.
const (
	maxIDLen      = 256
	maxSourceLen  = 256
	maxSubjectLen = 512
)

var (
	// ErrUnknownType: the event type is not part of the contract.
	ErrUnknownType = errors.New("events: unknown event type")
	// ErrInvalidEvent: a context attribute is missing or wrong.
	ErrInvalidEvent = errors.New("events: invalid event")
	// ErrInvalidData: the data fails its schema or the strict decode.
	ErrInvalidData = errors.New("events: invalid data")
	// ErrTargetType: Decode was given a target that is no payload type at
	// all (a bug in the caller, not in the event: not permanent).
	ErrTargetType = errors.New("events: decode target does not match event type")
	// ErrUnexpectedType: a valid event of another type than the consumer
	// takes (misrouted: no retry can help, so permanent).
	ErrUnexpectedType = errors.New("events: event is not of the type this consumer takes")
)

// Registry holds the compiled schema of every event type. It is safe for
// concurrent use; build one per process with NewRegistry.
type Registry struct {
	schemas map[string]*jsonschema.Schema
}

// Schema returns the embedded JSON Schema document of typ.
func Schema(typ string) ([]byte, bool) {
	if _, ok := TopicFor(typ); !ok {
		return nil, false
	}
	b, err := schemaFS.ReadFile("schemas/" + typ + ".json")
	if err != nil {
		return nil, false
	}
	return b, true
}

// NewRegistry compiles the embedded schemas (draft 2020-12, formats asserted).
func NewRegistry() (*Registry, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	// Schemas are never fetched: every $id is added below from the binary.
	c.UseLoader(noLoader{})
	for _, typ := range AllTypes() {
		raw, ok := Schema(typ)
		if !ok {
			return nil, fmt.Errorf("events.NewRegistry: no embedded schema for %s", typ)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			return nil, fmt.Errorf("events.NewRegistry: parse schema %s: %w", typ, err)
		}
		if id, _ := doc.(map[string]any)["$id"].(string); id != DataSchema(typ) {
			return nil, fmt.Errorf("events.NewRegistry: schema %s: $id %q, want %q", typ, id, DataSchema(typ))
		}
		if err := c.AddResource(DataSchema(typ), doc); err != nil {
			return nil, fmt.Errorf("events.NewRegistry: jsonschema.AddResource(%s): %w", typ, err)
		}
	}
	r := &Registry{schemas: make(map[string]*jsonschema.Schema, len(AllTypes()))}
	for _, typ := range AllTypes() {
		s, err := c.Compile(DataSchema(typ))
		if err != nil {
			return nil, fmt.Errorf("events.NewRegistry: jsonschema.Compile(%s): %w", typ, err)
		}
		r.schemas[typ] = s
	}
	return r, nil
}

type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("events: schema loading disabled (%s)", url)
}

// New builds an event of type typ with a random id. See NewWithID.
func (r *Registry) New(typ, subject string, data any) (event.Event, error) {
	return r.NewWithID(NewID(), typ, subject, data)
}

// NewWithID builds an event with every context attribute filled (id, source
// = Source, type, subject, time now in UTC, datacontenttype application/json,
// dataschema) and validates it exactly as Validate does on receive, so
// nothing that fails on receive can be published. data must be the payload
// type of typ (value or pointer). Failures are permanent errors.
func (r *Registry) NewWithID(id, typ, subject string, data any) (event.Event, error) {
	want, ok := payloadType(typ)
	if !ok {
		return event.Event{}, Permanent(fmt.Errorf("events.New: %w: %s", ErrUnknownType, clip(typ)))
	}
	got := reflect.TypeOf(data)
	if got != nil && got.Kind() == reflect.Pointer {
		got = got.Elem()
	}
	if got != want {
		return event.Event{}, Permanent(fmt.Errorf("events.New: %w: %s carries %v, got %v", ErrTargetType, typ, want, got))
	}
	raw, err := json.Marshal(data)
	if err != nil {
		return event.Event{}, Permanent(fmt.Errorf("events.New: json.Marshal: %w", err))
	}
	e := event.New(event.CloudEventsVersionV1)
	e.SetID(id)
	e.SetSource(Source)
	e.SetType(typ)
	e.SetSubject(subject)
	e.SetTime(time.Now().UTC())
	e.SetDataSchema(DataSchema(typ))
	e.SetDataContentType(ContentTypeJSON)
	e.DataEncoded = raw
	if _, err := r.check(e); err != nil {
		return event.Event{}, fmt.Errorf("events.New: %w", err)
	}
	return e, nil
}

// Validate checks e strictly: known type; id, source, specversion 1.0, type,
// subject, time, datacontenttype application/json present and well formed;
// dataschema equal to DataSchema(type); data at most MaxDataSize, valid
// against the schema, with no unknown fields; and, when the payload names a
// user, a subject under users/<user>. Every failure is a permanent error
// whose message names the attribute or the JSON pointer of the field, never
// its value.
func (r *Registry) Validate(e event.Event) error {
	_, err := r.check(e)
	return err
}

// Decode validates e (see Validate) and decodes its data into into, which
// must be a pointer to the payload type of e.Type(). An event of another
// type than into's is misrouted: a permanent error wrapping
// ErrUnexpectedType. A target that is no payload type is a plain error
// wrapping ErrTargetType (a caller bug, so not poison).
func (r *Registry) Decode(e event.Event, into any) error {
	want, _ := payloadType(e.Type())
	t := reflect.TypeOf(into)
	if t == nil || t.Kind() != reflect.Pointer || reflect.ValueOf(into).IsNil() || !isPayloadType(t.Elem()) {
		return fmt.Errorf("events.Decode: %w: %s needs *%v, got %T", ErrTargetType, e.Type(), want, into)
	}
	data, err := r.check(e)
	if err != nil {
		return err
	}
	if t.Elem() != want {
		return Permanent(fmt.Errorf("events.Decode: %w: wants %v", ErrUnexpectedType, t.Elem()))
	}
	return strictUnmarshal(data, into)
}

// DecodeAny validates e and returns its payload as a pointer to the type's Go
// payload (e.g. *TwilioSMSReceived), for handlers of topics carrying several
// types.
func (r *Registry) DecodeAny(e event.Event) (any, error) {
	data, err := r.check(e)
	if err != nil {
		return nil, err
	}
	p, _ := NewPayload(e.Type())
	if err := strictUnmarshal(data, p); err != nil {
		return nil, err
	}
	return p, nil
}

// ValidateData checks raw JSON data against the schema of typ (size, schema,
// unknown fields), without a surrounding event.
func (r *Registry) ValidateData(typ string, data []byte) error {
	_, err := r.checkData(typ, data)
	return err
}

// check runs every rule of Validate and returns the data bytes.
func (r *Registry) check(e event.Event) ([]byte, error) {
	if e.Context == nil {
		return nil, invalidEvent("context", "missing")
	}
	// Setters that failed leave FieldErrors behind (and the old value in
	// place); the SDK's own checks come first. Only attribute names are
	// reported: the SDK's messages may quote values.
	if err := e.Validate(); err != nil {
		var ve event.ValidationError
		if errors.As(err, &ve) {
			attrs := slices.Sorted(maps.Keys(ve))
			return nil, invalidEvent(strings.Join(attrs, ", "), "rejected by the CloudEvents SDK")
		}
		return nil, invalidEvent("context", "rejected by the CloudEvents SDK")
	}
	if sv := e.SpecVersion(); sv != event.CloudEventsVersionV1 {
		return nil, invalidEvent("specversion", "must be 1.0")
	}
	typ := e.Type()
	if typ == "" {
		return nil, invalidEvent("type", "missing")
	}
	if _, ok := r.schemas[typ]; !ok {
		return nil, Permanent(fmt.Errorf("%w: attribute type: %s", ErrUnknownType, clip(typ)))
	}
	if err := checkToken("id", e.ID(), maxIDLen); err != nil {
		return nil, err
	}
	if err := checkToken("source", e.Source(), maxSourceLen); err != nil {
		return nil, err
	}
	subject := e.Subject()
	if err := checkToken("subject", subject, maxSubjectLen); err != nil {
		return nil, err
	}
	if !subjectRE.MatchString(subject) {
		return nil, invalidEvent("subject", "must be slash-separated segments of [A-Za-z0-9_.:#=-]")
	}
	if e.Time().IsZero() {
		return nil, invalidEvent("time", "missing")
	}
	if ct := e.DataContentType(); ct == "" {
		return nil, invalidEvent("datacontenttype", "missing")
	} else if !isJSONContentType(ct) {
		return nil, invalidEvent("datacontenttype", "must be application/json")
	}
	if ds := e.DataSchema(); ds == "" {
		return nil, invalidEvent("dataschema", "missing")
	} else if ds != DataSchema(typ) {
		return nil, invalidEvent("dataschema", "does not match type "+typ)
	}
	data := e.Data()
	inst, err := r.checkData(typ, data)
	if err != nil {
		return nil, err
	}
	// The subject is what logs, routing and dead-letter tooling see: it must
	// not claim a different user than the payload.
	if user, ok := inst["user"].(string); ok {
		prefix := "users/" + user
		if subject != prefix && !strings.HasPrefix(subject, prefix+"/") {
			return nil, invalidEvent("subject", "must be users/<user>[/...] for the payload's /user")
		}
	}
	return data, nil
}

func (r *Registry) checkData(typ string, data []byte) (map[string]any, error) {
	s, ok := r.schemas[typ]
	if !ok {
		return nil, Permanent(fmt.Errorf("%w: %s", ErrUnknownType, clip(typ)))
	}
	if len(data) == 0 {
		return nil, invalidData("data: missing")
	}
	if len(data) > MaxDataSize {
		return nil, invalidData(fmt.Sprintf("data: %d bytes, limit %d", len(data), MaxDataSize))
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return nil, invalidData(describeJSONError("data", err))
	}
	if err := s.Validate(inst); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return nil, invalidData(describeValidation(ve))
		}
		return nil, invalidData("data: schema validation failed")
	}
	obj, _ := inst.(map[string]any) // every schema has type object
	// Defence in depth against a schema and a Go type drifting apart: the
	// Go type must accept exactly what the schema accepted.
	p, _ := NewPayload(typ)
	if err := strictUnmarshal(data, p); err != nil {
		return nil, err
	}
	return obj, nil
}

// strictUnmarshal decodes one JSON object into p, refusing unknown fields and
// trailing data.
func strictUnmarshal(data []byte, p any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(p); err != nil {
		return invalidData(describeJSONError("data", err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalidData("data: trailing data after the JSON object")
	}
	return nil
}

func invalidEvent(attr, msg string) error {
	return Permanent(fmt.Errorf("%w: attribute %s: %s", ErrInvalidEvent, attr, msg))
}

func invalidData(msg string) error {
	return Permanent(fmt.Errorf("%w: %s", ErrInvalidData, msg))
}

// checkToken requires a non-empty, bounded, printable-ASCII attribute.
func checkToken(attr, v string, max int) error {
	if v == "" {
		return invalidEvent(attr, "missing")
	}
	if len(v) > max {
		return invalidEvent(attr, "longer than "+strconv.Itoa(max))
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 0x21 || v[i] > 0x7e {
			return invalidEvent(attr, "must be printable ASCII without spaces")
		}
	}
	return nil
}

var subjectRE = regexp.MustCompile(`^[A-Za-z0-9_.:#=-]+(?:/[A-Za-z0-9_.:#=-]+)*$`)

func isJSONContentType(ct string) bool {
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != ContentTypeJSON {
		return false
	}
	for k, v := range params {
		if k != "charset" || !strings.EqualFold(v, "utf-8") {
			return false
		}
	}
	return true
}

// clip quotes an attacker-controlled string for an error message, bounded.
func clip(s string) string {
	if len(s) > 128 {
		s = s[:128] + "..."
	}
	return strconv.Quote(s)
}

// fieldNameRE: property names echoed in errors (unknown fields); anything
// else is described, not echoed, so errors never carry content.
var fieldNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

func pointerToken(tok string) string {
	if !fieldNameRE.MatchString(tok) {
		return fmt.Sprintf("<name of %d bytes>", len(tok))
	}
	return tok
}

func jsonPointer(toks []string) string {
	if len(toks) == 0 {
		return "/"
	}
	var b strings.Builder
	for _, t := range toks {
		b.WriteByte('/')
		b.WriteString(pointerToken(t))
	}
	return b.String()
}

func describeJSONError(where string, err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("%s: not valid JSON (offset %d)", where, se.Offset)
	case errors.As(err, &te):
		ptr := "/"
		if te.Field != "" {
			ptr = jsonPointer(strings.Split(te.Field, "."))
		}
		return fmt.Sprintf("%s: %s: wrong JSON type (want %v)", where, ptr, te.Type)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return where + ": truncated JSON"
	}
	// encoding/json reports unknown fields as `json: unknown field "name"`.
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		if n, err := strconv.Unquote(name); err == nil {
			return fmt.Sprintf("%s: /%s: unknown field", where, pointerToken(n))
		}
	}
	if strings.Contains(err.Error(), "after top-level value") {
		return where + ": trailing data after the JSON object"
	}
	if strings.Contains(err.Error(), "parsing time") {
		return where + ": bad time value"
	}
	return where + ": cannot decode JSON"
}

// describeValidation names every failing field by JSON pointer and keyword,
// never echoing the offending value (it may be user content or a raw id).
func describeValidation(ve *jsonschema.ValidationError) string {
	var msgs []string
	for e := range schemaerr.Leaves(ve) {
		msgs = append(msgs, describeLeaf(e)...)
	}
	slices.Sort(msgs)
	msgs = slices.Compact(msgs)
	const maxMsgs = 16
	if len(msgs) > maxMsgs {
		msgs = append(msgs[:maxMsgs], fmt.Sprintf("and %d more", len(msgs)-maxMsgs))
	}
	if len(msgs) == 0 {
		return "data: schema validation failed"
	}
	return "data: " + strings.Join(msgs, "; ")
}

func describeLeaf(e *jsonschema.ValidationError) []string {
	at := jsonPointer(e.InstanceLocation)
	child := func(name string) string {
		return jsonPointer(append(slices.Clone(e.InstanceLocation), name))
	}
	switch k := e.ErrorKind.(type) {
	case *kind.Required:
		out := make([]string, 0, len(k.Missing))
		for _, m := range k.Missing {
			out = append(out, child(m)+": required field missing")
		}
		return out
	case *kind.AdditionalProperties:
		out := make([]string, 0, len(k.Properties))
		for _, p := range k.Properties {
			out = append(out, child(p)+": unknown field")
		}
		return out
	case *kind.Type:
		return []string{fmt.Sprintf("%s: wrong type (want %s)", at, strings.Join(k.Want, " or "))}
	case *kind.Format:
		return []string{fmt.Sprintf("%s: not a valid %s", at, k.Want)}
	case *kind.Pattern:
		return []string{at + ": does not match the pattern"}
	case *kind.MaxLength:
		return []string{fmt.Sprintf("%s: longer than %d characters", at, k.Want)}
	case *kind.MinLength:
		return []string{fmt.Sprintf("%s: shorter than %d characters", at, k.Want)}
	case *kind.Maximum:
		return []string{at + ": above the maximum"}
	case *kind.Minimum:
		return []string{at + ": below the minimum"}
	case *kind.Enum:
		return []string{at + ": not one of the allowed values"}
	case *kind.Not:
		return []string{at + ": not allowed (e.g. a '.' or '..' path segment)"}
	}
	return []string{fmt.Sprintf("%s: fails %s", at, strings.Join(e.ErrorKind.KeywordPath(), "/"))}
}
