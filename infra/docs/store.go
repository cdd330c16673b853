package docs

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// Paging bounds.
const (
	// DefaultPage is QueryPage's page size when Query.Limit is 0.
	DefaultPage = 100
	// MaxPage bounds one QueryPage.
	MaxPage = 1000
	// MaxQuery bounds Query, which pages internally: a caller that may
	// see more uses QueryPage.
	MaxQuery = 10_000
	// maxCursor bounds an encoded cursor (a key and one string value).
	maxCursor = 4096
)

// Position is where a page ends: the last document's OrderBy value (nil
// without OrderBy) and key. A driver's Query resumes strictly after it, in
// the query's order.
type Position struct {
	Value any
	User  string
	ID    string
}

// Driver is what an adapter implements. Every key, document and query it
// receives has passed validation here: keys by ValidateKey, documents by
// ValidateDoc (Fields normalised, ints as int64), queries by
// ValidateQuery, with Limit in 1..MaxPage+1. Store maps its errors with
// ErrorCode and wraps them with the operation's name.
type Driver interface {
	Get(ctx context.Context, key Key) (Doc, error)
	Put(ctx context.Context, doc Doc) error
	Create(ctx context.Context, doc Doc) error
	// Update as Store.Update; fn returns only valid documents with key,
	// and fn's errors must come back as is.
	Update(ctx context.Context, key Key, fn func(cur *Doc) (*Doc, error)) error
	Delete(ctx context.Context, key Key) error
	// Transact as Store.Transact; fn returns only valid writes (keys
	// validated, fields normalised, no key twice), and fn's errors must
	// come back as is.
	Transact(ctx context.Context, read []Key, fn func(cur []*Doc) ([]Write, error)) error
	DeleteMany(ctx context.Context, keys []Key) (int, error)
	// Query returns up to q.Limit matches in the order Store.Query
	// documents, strictly after after when it is not nil.
	Query(ctx context.Context, q Query, after *Position) ([]Doc, error)
	// DeleteUser and CountUser receive a non-empty valid user.
	DeleteUser(ctx context.Context, user string) (int, error)
	CountUser(ctx context.Context, user string) (int, error)
	// ErrorCode maps an error of the driver to ErrNotFound,
	// ErrAlreadyExists or ErrInvalid, or nil when none applies.
	ErrorCode(err error) error
	// As sets target to a driver-specific type, as Store.As documents.
	As(target any) bool
	Close() error
}

// Store is the documents port. The zero Store is not usable: adapters'
// Open functions return one.
type Store struct {
	d Driver
}

// New returns the Store over d.
func New(d Driver) Store { return Store{d: d} }

// Driver returns the driver, for decorators (fault injection in tests):
// wrap it and pass the wrapper to New.
func (s Store) Driver() Driver { return s.d }

// Valid reports whether s has a driver (the zero Store has none).
func (s Store) Valid() bool { return s.d != nil }

func (s Store) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if code := s.d.ErrorCode(err); code != nil && !errors.Is(err, code) {
		return fmt.Errorf("docs.%s: %w: %w", op, code, err)
	}
	return fmt.Errorf("docs.%s: %w", op, err)
}

// Get returns ErrNotFound when absent.
func (s Store) Get(ctx context.Context, key Key) (Doc, error) {
	if err := ValidateKey(key); err != nil {
		return Doc{}, err
	}
	d, err := s.d.Get(ctx, key)
	if err != nil {
		return Doc{}, s.wrap("Get", err)
	}
	return d, nil
}

// normalised validates doc and returns a copy with its fields normalised
// (ints as int64) in a new map, so the caller's map is never shared.
func normalised(doc Doc) (Doc, error) {
	fields, err := ValidateDoc(doc)
	if err != nil {
		return Doc{}, err
	}
	doc.Fields = fields
	return doc, nil
}

// Put creates or replaces.
func (s Store) Put(ctx context.Context, doc Doc) error {
	doc, err := normalised(doc)
	if err != nil {
		return err
	}
	return s.wrap("Put", s.d.Put(ctx, doc))
}

// Create writes only if absent, else ErrAlreadyExists. Idempotency
// markers use it.
func (s Store) Create(ctx context.Context, doc Doc) error {
	doc, err := normalised(doc)
	if err != nil {
		return err
	}
	return s.wrap("Create", s.d.Create(ctx, doc))
}

// Update runs fn atomically against the current document (nil when
// absent) and writes what it returns: a non-nil *Doc is put (its Key may be
// left zero), nil with a nil error deletes (or leaves absent). An error
// from fn aborts with no write and is returned as is. fn may run more than
// once. On SQLite fn must not call write methods of the same Store.
func (s Store) Update(ctx context.Context, key Key, fn func(cur *Doc) (*Doc, error)) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	var fnErr error
	err := s.d.Update(ctx, key, func(cur *Doc) (*Doc, error) {
		next, err := fn(cur)
		if err != nil {
			fnErr = err
			return nil, err
		}
		fnErr = nil
		if next == nil {
			return nil, nil
		}
		d := *next
		if d.Key == (Key{}) {
			d.Key = key
		} else if d.Key != key {
			return nil, fmt.Errorf("%w: Update returned a document with another key", ErrInvalid)
		}
		if d, err = normalised(d); err != nil {
			return nil, err
		}
		return &d, nil
	})
	if err != nil && fnErr != nil && errors.Is(err, fnErr) {
		return fnErr // as is, per the port
	}
	if err != nil && errors.Is(err, ErrInvalid) {
		return err // ours, from the callback
	}
	return s.wrap("Update", err)
}

// Transact reads the documents at read (nil where absent, in read's
// order) in one transaction, runs fn on them and commits the writes fn
// returns, all or none: a multi-document Update. The intake uses it to make
// a chunk's record, its expiry and its conversation durable in one commit
// (one SQLite transaction, one Firestore commit) instead of one each. An
// error from fn aborts with no write and is returned as is; a Create write
// that finds a document fails it with ErrAlreadyExists. fn may run more than
// once (Firestore retries contention). At most MaxTransactReads reads and
// MaxBatch writes, no key written twice. On SQLite fn must not call write
// methods of the same Store.
func (s Store) Transact(ctx context.Context, read []Key, fn func(cur []*Doc) ([]Write, error)) error {
	if len(read) > MaxTransactReads {
		return fmt.Errorf("%w: Transact reads %d documents (at most %d)", ErrInvalid, len(read), MaxTransactReads)
	}
	for _, k := range read {
		if err := ValidateKey(k); err != nil {
			return err
		}
	}
	var fnErr error
	err := s.d.Transact(ctx, read, func(cur []*Doc) ([]Write, error) {
		ws, err := fn(cur)
		if err != nil {
			fnErr = err
			return nil, err
		}
		fnErr = nil
		if ws, err = validWrites(ws); err != nil {
			return nil, err
		}
		return ws, nil
	})
	if err != nil && fnErr != nil && errors.Is(err, fnErr) {
		return fnErr // as is, per the port
	}
	if err != nil && errors.Is(err, ErrInvalid) {
		return err // ours, from the callback
	}
	return s.wrap("Transact", err)
}

// validWrites validates ws and returns a copy with documents normalised.
func validWrites(ws []Write) ([]Write, error) {
	if len(ws) > MaxBatch {
		return nil, fmt.Errorf("%w: Transact writes %d documents (at most %d)", ErrInvalid, len(ws), MaxBatch)
	}
	out := make([]Write, len(ws))
	seen := make(map[Key]bool, len(ws))
	for i, w := range ws {
		if w.Create && w.Delete {
			return nil, fmt.Errorf("%w: a Transact write both creates and deletes", ErrInvalid)
		}
		if err := ValidateKey(w.Doc.Key); err != nil {
			return nil, err
		}
		if seen[w.Doc.Key] {
			return nil, fmt.Errorf("%w: Transact writes %s/%s twice", ErrInvalid, w.Doc.Key.Collection, w.Doc.Key.ID)
		}
		seen[w.Doc.Key] = true
		if !w.Delete {
			d, err := normalised(w.Doc)
			if err != nil {
				return nil, err
			}
			w.Doc = d
		}
		out[i] = w
	}
	return out, nil
}

// Delete is idempotent: deleting an absent document is not an error.
func (s Store) Delete(ctx context.Context, key Key) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	return s.wrap("Delete", s.d.Delete(ctx, key))
}

// DeleteMany deletes keys (any users, any collections) and returns how
// many existed. Idempotent like Delete; absent keys are not counted.
// Retention sweeps use it: one write per page, not per document. Every key
// is validated before anything is deleted. It is atomic on SQLite (one
// transaction); on Firestore it is written in batches of at most MaxBatch,
// so an error may leave a prefix deleted: retry.
func (s Store) DeleteMany(ctx context.Context, keys []Key) (int, error) {
	for _, k := range keys {
		if err := ValidateKey(k); err != nil {
			return 0, err
		}
	}
	if len(keys) == 0 {
		return 0, nil
	}
	n, err := s.d.DeleteMany(ctx, keys)
	return n, s.wrap("DeleteMany", err)
}

// QueryPage returns one page of the documents q selects, ordered by
// q.OrderBy (documents lacking it are not returned; integers before
// strings; ties broken by key in the direction of the order) or by key,
// from cursor ("" for the first page); next is "" after the last page. The
// page holds q.Limit documents (DefaultPage when 0, at most MaxPage). The
// cursor is opaque; it is valid only for the same query.
func (s Store) QueryPage(ctx context.Context, q Query, cursor string) ([]Doc, string, error) {
	q, err := ValidateQuery(q)
	if err != nil {
		return nil, "", err
	}
	limit := q.Limit
	if limit == 0 {
		limit = DefaultPage
	}
	limit = min(limit, MaxPage)
	var after *Position
	if cursor != "" {
		p, err := decodeCursor(cursor, q.OrderBy != "")
		if err != nil {
			return nil, "", err
		}
		after = &p
	}
	// One more than asked says whether another page follows.
	q.Limit = limit + 1
	page, err := s.d.Query(ctx, q, after)
	if err != nil {
		return nil, "", s.wrap("Query", err)
	}
	if len(page) <= limit {
		return page, "", nil
	}
	page = page[:limit]
	last := page[limit-1]
	p := Position{User: last.Key.User, ID: last.Key.ID}
	if q.OrderBy != "" {
		p.Value = last.Fields[q.OrderBy]
	}
	next, err := encodeCursor(p)
	if err != nil {
		return nil, "", err
	}
	return page, next, nil
}

// Query returns the documents q selects, in QueryPage's order, paging
// internally: at most q.Limit of them when it is set; without a limit,
// more than MaxQuery is ErrTooMany (use QueryPage).
func (s Store) Query(ctx context.Context, q Query) ([]Doc, error) {
	if _, err := ValidateQuery(q); err != nil {
		return nil, err
	}
	want := q.Limit
	var out []Doc
	cursor := ""
	for {
		pq := q
		pq.Limit = MaxPage
		if want > 0 {
			pq.Limit = min(MaxPage, want-len(out))
		}
		page, next, err := s.QueryPage(ctx, pq, cursor)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if want == 0 && len(out) > MaxQuery {
			return nil, fmt.Errorf("docs.Query(%d+ documents): %w", MaxQuery, ErrTooMany)
		}
		if next == "" || (want > 0 && len(out) >= want) {
			return out, nil
		}
		cursor = next
	}
}

// DeleteUser deletes every document of the user (not "", the global
// collections) in every collection and returns how many it deleted.
func (s Store) DeleteUser(ctx context.Context, user string) (int, error) {
	if user == "" || !ValidUser(user) {
		return 0, fmt.Errorf("%w: user", ErrInvalid)
	}
	n, err := s.d.DeleteUser(ctx, user)
	return n, s.wrap("DeleteUser", err)
}

// CountUser counts the user's documents in every collection (erasure
// receipts verify zero with it).
func (s Store) CountUser(ctx context.Context, user string) (int, error) {
	if user == "" || !ValidUser(user) {
		return 0, fmt.Errorf("%w: user", ErrInvalid)
	}
	n, err := s.d.CountUser(ctx, user)
	return n, s.wrap("CountUser", err)
}

// As sets target, a pointer to a driver-specific type, and reports
// whether the driver has it.
func (s Store) As(target any) bool { return s.d.As(target) }

// Close releases the driver.
func (s Store) Close() error { return s.d.Close() }

// cursorJSON is the encoded Position: V is the order value (an int64 as a
// JSON number, a string as a string), absent without OrderBy.
type cursorJSON struct {
	I *int64  `json:"i,omitempty"`
	S *string `json:"s,omitempty"`
	U string  `json:"u"`
	D string  `json:"d"`
}

func encodeCursor(p Position) (string, error) {
	c := cursorJSON{U: p.User, D: p.ID}
	switch v := p.Value.(type) {
	case nil:
	case int64:
		c.I = &v
	case string:
		c.S = &v
	default:
		return "", fmt.Errorf("docs.QueryPage: order value of type %T", p.Value)
	}
	b, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("json.Marshal cursor: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// decodeCursor parses a cursor from outside: anything malformed, or a
// value present or absent against the query's OrderBy, is ErrInvalid.
func decodeCursor(s string, ordered bool) (Position, error) {
	bad := fmt.Errorf("%w: cursor", ErrInvalid)
	if len(s) > maxCursor {
		return Position{}, bad
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Position{}, bad
	}
	var c cursorJSON
	if err := json.Unmarshal(b, &c); err != nil {
		return Position{}, bad
	}
	p := Position{User: c.U, ID: c.D}
	switch {
	case c.I != nil && c.S == nil:
		p.Value = *c.I
	case c.S != nil && c.I == nil:
		if _, err := FieldValue(*c.S); err != nil {
			return Position{}, bad
		}
		p.Value = *c.S
	case c.I != nil || c.S != nil:
		return Position{}, bad
	}
	if ordered != (p.Value != nil) || !ValidUser(p.User) || !ValidSegment(p.ID) {
		return Position{}, bad
	}
	return p, nil
}
