package bus

import (
	"errors"
	"fmt"
	"mime"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"

	"github.com/lethe-dev/lethe/events"
)

// Pub/Sub attribute names of the CloudEvents Pub/Sub protocol binding.
const (
	// AttrPrefix prefixes every CloudEvents context attribute in binary mode.
	AttrPrefix = "ce-"
	// AttrContentType carries datacontenttype (binary mode) or the event
	// format (structured mode). The binding says attribute names are
	// case-insensitive; we always write it lower-case.
	AttrContentType = "content-type"

	// Media type of the JSON event format (structured mode).
	mediaTypeCloudEventsJSON = "application/cloudevents+json"
	// Every CloudEvents event format starts with this.
	mediaTypeCloudEventsPrefix = "application/cloudevents"
)

// Limits of the Pub/Sub service
// (https://cloud.google.com/pubsub/quotas#resource_limits). ToMessage checks
// them so a bad event fails as permanent before any network call.
const (
	maxAttributes        = 100
	maxAttributeKeyLen   = 256
	maxAttributeValueLen = 1024
)

// ToMessage maps a CloudEvent to a Pub/Sub message in binary content mode:
// every context attribute and extension becomes a lower-case "ce-<name>"
// attribute holding its canonical string form, datacontenttype becomes the
// "content-type" attribute and data is the body, byte for byte. Only
// CloudEvents 1.0 is supported. Errors are permanent (events.IsPermanent).
func ToMessage(e event.Event) (data []byte, attrs map[string]string, err error) {
	if e.Context == nil {
		return nil, nil, events.Permanentf("bus.ToMessage: event has no context")
	}
	if sv := e.SpecVersion(); sv != event.CloudEventsVersionV1 {
		return nil, nil, events.Permanentf("bus.ToMessage: unsupported specversion %q", sv)
	}
	if err := validateEvent(e); err != nil {
		return nil, nil, events.Permanent(fmt.Errorf("bus.ToMessage: %w", err))
	}
	ctx := e.Context.AsV1()
	attrs = map[string]string{
		AttrPrefix + "specversion": event.CloudEventsVersionV1,
		AttrPrefix + "id":          ctx.ID,
		AttrPrefix + "source":      ctx.Source.String(),
		AttrPrefix + "type":        ctx.Type,
	}
	if ctx.Subject != nil {
		attrs[AttrPrefix+"subject"] = *ctx.Subject
	}
	if ctx.Time != nil && !ctx.Time.IsZero() {
		// Canonical Timestamp form (RFC 3339): UTC, fractional seconds only
		// when present.
		attrs[AttrPrefix+"time"] = types.FormatTime(ctx.Time.Time)
	}
	if ctx.DataSchema != nil {
		attrs[AttrPrefix+"dataschema"] = ctx.DataSchema.String()
	}
	if ctx.DataContentType != nil {
		attrs[AttrContentType] = *ctx.DataContentType
	}
	for name, v := range ctx.Extensions {
		name = strings.ToLower(name)
		if err := checkExtensionName(name); err != nil {
			return nil, nil, events.Permanent(fmt.Errorf("bus.ToMessage: %w", err))
		}
		s, err := types.Format(v)
		if err != nil {
			return nil, nil, events.Permanent(fmt.Errorf("bus.ToMessage: extension %q: %w", name, err))
		}
		attrs[AttrPrefix+name] = s
	}
	if err := checkAttributes(attrs); err != nil {
		return nil, nil, events.Permanent(fmt.Errorf("bus.ToMessage: %w", err))
	}
	return e.Data(), attrs, nil
}

// checkAttributes enforces Pub/Sub's attribute limits and UTF-8 (attributes
// are protobuf strings: invalid UTF-8 would fail at marshal time).
func checkAttributes(attrs map[string]string) error {
	if len(attrs) > maxAttributes {
		return fmt.Errorf("%d attributes, Pub/Sub allows %d", len(attrs), maxAttributes)
	}
	for k, v := range attrs {
		if len(k) > maxAttributeKeyLen {
			return fmt.Errorf("attribute name %.32q... longer than %d bytes", k, maxAttributeKeyLen)
		}
		if len(v) > maxAttributeValueLen {
			return fmt.Errorf("attribute %q longer than %d bytes", k, maxAttributeValueLen)
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return fmt.Errorf("attribute %q is not valid UTF-8", k)
		}
	}
	return nil
}

// FromMessage maps a Pub/Sub message back to a CloudEvent. Structured content
// mode is used when the content-type attribute names the JSON event format
// (application/cloudevents+json, parameters allowed); otherwise the message
// is read in binary mode. Attribute names are matched case-insensitively, as
// the binding requires; attributes without the "ce-" prefix (other than
// content-type) are ignored. Any malformed input returns a permanent error.
func FromMessage(data []byte, attrs map[string]string) (e event.Event, err error) {
	lower := make(map[string]string, len(attrs))
	for k, v := range attrs {
		lk := strings.ToLower(k)
		if prev, dup := lower[lk]; dup && prev != v {
			return event.Event{}, events.Permanentf("bus.FromMessage: attribute %q given twice with different values", lk)
		}
		lower[lk] = v
	}
	ct, hasCT := lower[AttrContentType]
	if hasCT {
		mt := mediaType(ct)
		if strings.HasPrefix(mt, mediaTypeCloudEventsPrefix) {
			if mt != mediaTypeCloudEventsJSON {
				return event.Event{}, events.Permanentf("bus.FromMessage: unsupported event format %q", mt)
			}
			return fromStructured(data)
		}
	}
	return fromBinary(data, lower)
}

func fromStructured(data []byte) (e event.Event, err error) {
	// The JSON reader is third-party code fed with outside input: a panic in
	// it must become a poison message, not a crashed worker.
	defer func() {
		if r := recover(); r != nil {
			e, err = event.Event{}, events.Permanentf("bus.FromMessage: structured event: malformed JSON")
		}
	}()
	if err := e.UnmarshalJSON(data); err != nil {
		return event.Event{}, events.Permanent(fmt.Errorf("bus.FromMessage: structured event: %w", err))
	}
	if e.Context == nil {
		return event.Event{}, events.Permanentf("bus.FromMessage: structured event: missing specversion")
	}
	if sv := e.SpecVersion(); sv != event.CloudEventsVersionV1 {
		return event.Event{}, events.Permanentf("bus.FromMessage: unsupported specversion %q", sv)
	}
	if err := validateEvent(e); err != nil {
		return event.Event{}, events.Permanent(fmt.Errorf("bus.FromMessage: structured event: %w", err))
	}
	return e, nil
}

func fromBinary(data []byte, attrs map[string]string) (event.Event, error) {
	sv, ok := attrs[AttrPrefix+"specversion"]
	if !ok {
		return event.Event{}, events.Permanentf("bus.FromMessage: missing ce-specversion (not a CloudEvent)")
	}
	if sv != event.CloudEventsVersionV1 {
		return event.Event{}, events.Permanentf("bus.FromMessage: unsupported specversion %q", sv)
	}
	for _, req := range []string{"id", "source", "type"} {
		if strings.TrimSpace(attrs[AttrPrefix+req]) == "" {
			return event.Event{}, events.Permanentf("bus.FromMessage: missing required attribute ce-%s", req)
		}
	}
	e := event.New(event.CloudEventsVersionV1)
	ctx := e.Context.AsV1()
	ctx.ID = attrs[AttrPrefix+"id"]
	ctx.Type = attrs[AttrPrefix+"type"]
	ref := types.ParseURIRef(attrs[AttrPrefix+"source"])
	if ref == nil {
		return event.Event{}, events.Permanentf("bus.FromMessage: ce-source is not a URI-reference")
	}
	ctx.Source = *ref

	// The binding maps datacontenttype to content-type; a ce-datacontenttype
	// attribute (as in the binding's own example) is accepted when it agrees.
	ct, hasCT := attrs[AttrContentType]
	if alt, ok := attrs[AttrPrefix+"datacontenttype"]; ok {
		if hasCT && alt != ct {
			return event.Event{}, events.Permanentf("bus.FromMessage: content-type and ce-datacontenttype disagree")
		}
		ct, hasCT = alt, true
	}
	if hasCT {
		ctx.DataContentType = &ct
	}

	names := make([]string, 0, len(attrs))
	for k := range attrs {
		names = append(names, k)
	}
	slices.Sort(names) // deterministic error messages
	for _, k := range names {
		name, ok := strings.CutPrefix(k, AttrPrefix)
		if !ok {
			continue
		}
		v := attrs[k]
		switch name {
		case "specversion", "id", "source", "type", "datacontenttype":
			// handled above
		case "subject":
			s := v
			ctx.Subject = &s
		case "time":
			t, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return event.Event{}, events.Permanentf("bus.FromMessage: ce-time is not an RFC 3339 timestamp")
			}
			ctx.Time = &types.Timestamp{Time: t}
		case "dataschema":
			u := types.ParseURI(v)
			if u == nil {
				return event.Event{}, events.Permanentf("bus.FromMessage: ce-dataschema is not a URI")
			}
			ctx.DataSchema = u
		default:
			if err := checkExtensionName(name); err != nil {
				return event.Event{}, events.Permanent(fmt.Errorf("bus.FromMessage: %w", err))
			}
			if err := ctx.SetExtension(name, v); err != nil {
				return event.Event{}, events.Permanent(fmt.Errorf("bus.FromMessage: extension %q: %w", name, err))
			}
		}
	}
	e.Context = ctx
	if len(data) > 0 {
		e.DataEncoded = data
		// Matters only if the event is re-encoded in structured mode: JSON
		// data stays inline, anything else goes as data_base64.
		e.DataBase64 = !isJSONMediaType(ct)
	}
	if err := validateEvent(e); err != nil {
		return event.Event{}, events.Permanent(fmt.Errorf("bus.FromMessage: %w", err))
	}
	return e, nil
}

// checkExtensionName applies the CloudEvents naming rule for attributes
// (lower-case ASCII letters and digits) and refuses names the JSON format
// reserves.
func checkExtensionName(name string) error {
	if name == "" {
		return errors.New("empty extension name")
	}
	for _, c := range name {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return fmt.Errorf("extension name %q: only a-z and 0-9 allowed", truncateUTF8(name, 64))
		}
	}
	if name == "data" {
		return errors.New(`extension name "data" is reserved`)
	}
	return nil
}

// validateEvent runs the SDK's spec validation with a deterministic message
// (event.ValidationError is a map).
func validateEvent(e event.Event) error {
	err := e.Validate()
	if err == nil {
		return nil
	}
	var verr event.ValidationError
	if !errors.As(err, &verr) {
		return err
	}
	keys := make([]string, 0, len(verr))
	for k := range verr {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+": "+verr[k].Error())
	}
	return fmt.Errorf("invalid CloudEvent: %s", strings.Join(parts, "; "))
}

// mediaType returns the lower-case media type without parameters.
func mediaType(ct string) string {
	if mt, _, err := mime.ParseMediaType(ct); err == nil {
		return mt
	}
	mt, _, _ := strings.Cut(ct, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

func isJSONMediaType(ct string) bool {
	mt := mediaType(ct)
	return mt == "" || mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}

// truncateUTF8 cuts s to at most n bytes without splitting a rune, and
// replaces invalid UTF-8 so the result is a legal Pub/Sub attribute value.
func truncateUTF8(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
