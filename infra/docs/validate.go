package docs

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Limits every adapter enforces. They follow Firestore's, so that what
// the embedded store accepts the production one accepts too.
const (
	MaxSegment     = 256  // collection, id, user: [A-Za-z0-9_.:#-]{1,256}
	maxFieldName   = 64   // [A-Za-z_][A-Za-z0-9_]{0,63}
	maxFields      = 64   // indexed fields per document
	maxStringField = 1500 // bytes; Firestore's indexed-value limit
	// maxData keeps every valid document under Firestore's 1 MiB document
	// limit whatever its key and fields: 1,048,576 minus the largest name
	// (users/ + 3×256 + 16 ≈ 800), the largest fields map (64 × (65 + 1501)
	// ≈ 100,300), the other field names, the timestamp and 32 bytes of
	// overhead leaves ≈ 947,000; 900,000 is a round figure below it.
	maxData = MaxDataSize
)

// MaxDataSize is the largest Doc.Data this adapter accepts (bytes).
// Larger data is ErrInvalid.
const MaxDataSize = 900_000

// UsersCollection is the root collection of per-user documents. A global
// collection of that name would put its documents where users' parents
// are (users/{id}), so it is refused.
const UsersCollection = "users"

// ValidSegment reports whether s may be a collection, id or user: the
// charset of Key, and none of the names Firestore reserves ("." and
// "..", and __anything__).
func ValidSegment(s string) bool {
	if len(s) == 0 || len(s) > MaxSegment || s == "." || s == ".." {
		return false
	}
	if len(s) >= 4 && strings.HasPrefix(s, "__") && strings.HasSuffix(s, "__") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '_', c == '.', c == ':', c == '#', c == '-':
		default:
			return false
		}
	}
	return true
}

// ValidUser: "" (global collections) or a segment.
func ValidUser(u string) bool { return u == "" || ValidSegment(u) }

// ValidCollection: a segment, and not the users root for global keys.
func ValidCollection(user, coll string) bool {
	return ValidSegment(coll) && (user != "" || coll != UsersCollection)
}

func ValidateKey(k Key) error {
	if !ValidUser(k.User) {
		return fmt.Errorf("%w: user", ErrInvalid)
	}
	if !ValidCollection(k.User, k.Collection) {
		return fmt.Errorf("%w: collection", ErrInvalid)
	}
	if !ValidSegment(k.ID) {
		return fmt.Errorf("%w: id", ErrInvalid)
	}
	return nil
}

func ValidFieldName(n string) bool {
	if len(n) == 0 || len(n) > maxFieldName {
		return false
	}
	if len(n) >= 4 && strings.HasPrefix(n, "__") && strings.HasSuffix(n, "__") {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// FieldValue normalises an indexed value to string or int64.
func FieldValue(v any) (any, error) {
	switch x := v.(type) {
	case string:
		if len(x) > maxStringField || !utf8.ValidString(x) {
			return nil, fmt.Errorf("%w: string field value", ErrInvalid)
		}
		return x, nil
	case int64:
		return x, nil
	case int:
		return int64(x), nil
	default:
		return nil, fmt.Errorf("%w: field value of type %T (want string or int64)", ErrInvalid, v)
	}
}

// ValidateDoc checks key, data size and fields, and returns the fields
// normalised (ints as int64) in a new map, so the caller's map is never
// shared.
func ValidateDoc(d Doc) (map[string]any, error) {
	if err := ValidateKey(d.Key); err != nil {
		return nil, err
	}
	if len(d.Data) > maxData {
		return nil, fmt.Errorf("%w: data larger than %d bytes", ErrInvalid, maxData)
	}
	if len(d.Fields) > maxFields {
		return nil, fmt.Errorf("%w: more than %d fields", ErrInvalid, maxFields)
	}
	out := make(map[string]any, len(d.Fields))
	for name, v := range d.Fields {
		if !ValidFieldName(name) {
			return nil, fmt.Errorf("%w: field name", ErrInvalid)
		}
		nv, err := FieldValue(v)
		if err != nil {
			return nil, err
		}
		out[name] = nv
	}
	return out, nil
}

// ValidateQuery checks q and returns it with its filter values normalised
// (ints as int64) in a new slice, so the caller's is never shared.
func ValidateQuery(q Query) (Query, error) {
	if q.AllUsers && q.User != "" {
		return q, fmt.Errorf("%w: query with both User and AllUsers", ErrInvalid)
	}
	if !ValidUser(q.User) {
		return q, fmt.Errorf("%w: user", ErrInvalid)
	}
	if !ValidSegment(q.Collection) || (!q.AllUsers && !ValidCollection(q.User, q.Collection)) {
		return q, fmt.Errorf("%w: collection", ErrInvalid)
	}
	if q.Limit < 0 {
		return q, fmt.Errorf("%w: negative limit", ErrInvalid)
	}
	if q.OrderBy != "" && !ValidFieldName(q.OrderBy) {
		return q, fmt.Errorf("%w: order by field name", ErrInvalid)
	}
	filters := make([]Filter, len(q.Filters))
	for i, f := range q.Filters {
		if !ValidFieldName(f.Field) {
			return q, fmt.Errorf("%w: filter field name", ErrInvalid)
		}
		v, err := FieldValue(f.Value)
		if err != nil {
			return q, err
		}
		switch f.Op {
		case Eq, Lt, Lte, Gt, Gte:
		default:
			return q, fmt.Errorf("%w: filter operator", ErrInvalid)
		}
		filters[i] = Filter{Field: f.Field, Op: f.Op, Value: v}
	}
	q.Filters = filters
	return q, nil
}
