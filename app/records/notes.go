package records

import (
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/keys"
)

// MaxNoteBytes bounds one note's client ciphertext (decoded bytes).
const MaxNoteBytes = 64 << 10

// FieldOrder is the notes' paging key: "<created_at ms, 13 digits>:<id>",
// unique and time-ordered, so a cursor is one value and ties never skip.
const FieldOrder = "order"

var noteIDRe = regexp.MustCompile(`^[0-9a-f]{32}$`)

// ValidNoteID reports whether id has the shape of a note id (32 hex).
func ValidNoteID(id string) bool { return noteIDRe.MatchString(id) }

// NewNoteID returns a random note id.
func NewNoteID() string { return randomID() }

// Note is an end-to-end encrypted note. Sealed is the client's ciphertext,
// sealed again with the user's key (NoteAD): the server never holds the
// client's key and never reads the note.
type Note struct {
	ID        string    `json:"id"`
	Sealed    []byte    `json:"sealed"`
	CreatedAt time.Time `json:"created_at"`
}

// NoteKey is the document key of a note.
func NoteKey(user, id string) docs.Key { return docs.Key{User: user, Collection: Notes, ID: id} }

// NoteAD is the associated data the note's ciphertext is sealed with.
func NoteAD(user, id string) []byte { return keys.AD(user, Notes, id, "ciphertext") }

// NoteOrder is the paging key of a note created at t.
func NoteOrder(t time.Time, id string) string { return fmt.Sprintf("%013d:%s", t.UnixMilli(), id) }

// Doc encodes n for the store.
func (n Note) Doc(user string) (docs.Doc, error) {
	data, err := json.Marshal(n)
	if err != nil {
		return docs.Doc{}, fmt.Errorf("json.Marshal note: %w", err)
	}
	return docs.Doc{
		Key:  NoteKey(user, n.ID),
		Data: data,
		Fields: map[string]any{
			FieldCreatedAt: n.CreatedAt.UnixMilli(),
			FieldOrder:     NoteOrder(n.CreatedAt, n.ID),
		},
	}, nil
}

// NoteFrom decodes a note document.
func NoteFrom(d docs.Doc) (Note, error) {
	var n Note
	if err := json.Unmarshal(d.Data, &n); err != nil {
		return n, fmt.Errorf("json.Unmarshal note %s: %w", d.Key.ID, err)
	}
	return n, nil
}
