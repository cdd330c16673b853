// Package sqlitedocs is the embedded documents adapter: one SQLite file
// (pure-Go driver modernc.org/sqlite) in WAL mode with secure_delete, so
// deleted documents do not stay readable in the file.
//
// Schema: docs(user, coll, id, data, fields) holds each document (fields
// as JSON, so Get and Query read one row), and fields(user, coll, id, name,
// v) holds one row per indexed value. v is a STRICT "ANY" column, so an
// int64 stays an INTEGER and a string a TEXT, and SQLite's ordering
// (integers before text) matches Firestore's. Two indexes on fields serve
// per-user queries (user, coll, name, v, id) and collection-group queries
// across all users (coll, name, v, user, id), e.g. retention sweeps by
// expires_at.
//
// Writes go through one connection (BEGIN IMMEDIATE), so Update is
// serialised with every other write in the process and never loses an
// update; busy_timeout covers other processes. Reads use a separate pool.
package sqlitedocs

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/lethe-dev/lethe/infra/docs"

	_ "modernc.org/sqlite" // driver "sqlite"
)

// Driver is a docs.Driver on a SQLite file.
type Driver struct {
	w   *sql.DB   // one connection: every write, serialised
	r   *sql.DB   // readers (query_only)
	get *sql.Stmt // on r: parsing costs as much as the lookup
	// Statements of the write path, prepared once on w: parsing them on
	// every write cost about a tenth of an upload's CPU.
	ws writeStmts
}

type writeStmts struct {
	get, exists, upsert, delFields, delField, putField, delDoc *sql.Stmt
}

const (
	existsSQL = "SELECT 1 FROM docs WHERE user = ? AND coll = ? AND id = ?"
	upsertSQL = `INSERT INTO docs (user, coll, id, data, fields) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (user, coll, id) DO UPDATE SET data = excluded.data, fields = excluded.fields`
	delFieldsSQL = "DELETE FROM fields WHERE user = ? AND coll = ? AND id = ?"
	delFieldSQL  = "DELETE FROM fields WHERE user = ? AND coll = ? AND id = ? AND name = ?"
	putFieldSQL  = `INSERT INTO fields (user, coll, id, name, v) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (user, coll, id, name) DO UPDATE SET v = excluded.v`
	delDocSQL = "DELETE FROM docs WHERE user = ? AND coll = ? AND id = ?"
)

func (w *writeStmts) prepare(ctx context.Context, db *sql.DB) error {
	for _, p := range []struct {
		dst **sql.Stmt
		sql string
	}{
		{&w.get, getSQL}, {&w.exists, existsSQL}, {&w.upsert, upsertSQL},
		{&w.delFields, delFieldsSQL}, {&w.delField, delFieldSQL},
		{&w.putField, putFieldSQL}, {&w.delDoc, delDocSQL},
	} {
		st, err := db.PrepareContext(ctx, p.sql)
		if err != nil {
			w.close()
			return fmt.Errorf("sqlite.Prepare: %w", err)
		}
		*p.dst = st
	}
	return nil
}

func (w *writeStmts) close() error {
	var errs []error
	for _, st := range []*sql.Stmt{w.get, w.exists, w.upsert, w.delFields, w.delField, w.putField, w.delDoc} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	return errors.Join(errs...)
}

var _ docs.Driver = (*Driver)(nil)

const getSQL = "SELECT data, fields FROM docs WHERE user = ? AND coll = ? AND id = ?"

const schema = `
CREATE TABLE IF NOT EXISTS docs (
	user   TEXT NOT NULL,
	coll   TEXT NOT NULL,
	id     TEXT NOT NULL,
	data   BLOB NOT NULL,
	fields TEXT NOT NULL,
	PRIMARY KEY (user, coll, id)
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS docs_coll ON docs (coll, user, id);
CREATE TABLE IF NOT EXISTS fields (
	user TEXT NOT NULL,
	coll TEXT NOT NULL,
	id   TEXT NOT NULL,
	name TEXT NOT NULL,
	v    ANY  NOT NULL,
	PRIMARY KEY (user, coll, id, name),
	FOREIGN KEY (user, coll, id) REFERENCES docs (user, coll, id) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS fields_user ON fields (user, coll, name, v, id);
CREATE INDEX IF NOT EXISTS fields_all  ON fields (coll, name, v, user, id);
`

// Open opens (creating if needed) the SQLite file at path.
func Open(ctx context.Context, path string) (docs.Store, error) {
	d, err := OpenDriver(ctx, path)
	if err != nil {
		return docs.Store{}, err
	}
	return docs.New(d), nil
}

// OpenDriver opens the driver alone, for decorators and tests of the
// adapter itself; callers use Open.
func OpenDriver(ctx context.Context, path string) (*Driver, error) {
	if path == "" {
		return nil, errors.New("sqlitedocs.Open: empty path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("filepath.Abs: %w", err)
	}
	// A file: URI so that any character in the path is escaped, not parsed
	// as DSN syntax.
	base := (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}).String()
	common := "_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=secure_delete(ON)" +
		"&_pragma=foreign_keys(ON)&_pragma=synchronous(FULL)"
	w, err := sql.Open("sqlite", base+"?"+common+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("sql.Open: %w", err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	if _, err := w.ExecContext(ctx, schema); err != nil {
		w.Close()
		return nil, fmt.Errorf("sqlite.Exec schema: %w", err)
	}
	r, err := sql.Open("sqlite", base+"?"+common+"&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("sql.Open: %w", err)
	}
	n := max(2, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	if err := r.PingContext(ctx); err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("sqlite.Ping: %w", err)
	}
	get, err := r.PrepareContext(ctx, getSQL)
	if err != nil {
		r.Close()
		w.Close()
		return nil, fmt.Errorf("sqlite.Prepare: %w", err)
	}
	d := &Driver{w: w, r: r, get: get}
	if err := d.ws.prepare(ctx, w); err != nil {
		get.Close()
		r.Close()
		w.Close()
		return nil, err
	}
	return d, nil
}

// Close checkpoints the WAL into the database file and truncates it, then
// closes every connection.
func (s *Driver) Close() error {
	cerr := s.checkpoint(context.Background())
	serr := s.get.Close()
	wserr := s.ws.close()
	rerr := s.r.Close()
	werr := s.w.Close()
	return errors.Join(cerr, serr, wserr, rerr, werr)
}

// checkpoint copies the WAL into the database and truncates it to zero
// bytes: with secure_delete the database pages of a deleted row are
// zeroed, but older frames in the WAL would still hold it.
func (s *Driver) checkpoint(ctx context.Context) error {
	var busy, logFrames, done int
	if err := s.w.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logFrames, &done); err != nil {
		return fmt.Errorf("sqlite wal_checkpoint: %w", err)
	}
	if busy != 0 {
		return errors.New("sqlite wal_checkpoint: busy, WAL not truncated")
	}
	return nil
}

// ErrorCode: the driver returns the port's errors itself.
func (s *Driver) ErrorCode(error) error { return nil }

// As sets a **Driver target to the driver.
func (s *Driver) As(target any) bool {
	if p, ok := target.(**Driver); ok {
		*p = s
		return true
	}
	return false
}

// getDoc reads key with stmt (the prepared getSQL, or its copy in a tx).
func getDoc(ctx context.Context, stmt *sql.Stmt, key docs.Key) (*docs.Doc, error) {
	var data []byte
	var fields string
	err := stmt.QueryRowContext(ctx, key.User, key.Collection, key.ID).Scan(&data, &fields)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, docs.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite.QueryRow docs: %w", err)
	}
	f, err := decodeFields(fields)
	if err != nil {
		return nil, err
	}
	if data == nil {
		data = []byte{}
	}
	return &docs.Doc{Key: key, Data: data, Fields: f}, nil
}

// Get returns docs.ErrNotFound when absent.
func (s *Driver) Get(ctx context.Context, key docs.Key) (docs.Doc, error) {
	d, err := getDoc(ctx, s.get, key)
	if err != nil {
		return docs.Doc{}, err
	}
	return *d, nil
}

// Put creates or replaces.
func (s *Driver) Put(ctx context.Context, doc docs.Doc) error {
	return s.inTx(ctx, func(tx *sql.Tx) error { return s.putTx(ctx, tx, doc, nil, false) })
}

// Create writes only if absent, else docs.ErrAlreadyExists.
func (s *Driver) Create(ctx context.Context, doc docs.Doc) error {
	return s.inTx(ctx, func(tx *sql.Tx) error { return s.createTx(ctx, tx, doc) })
}

func (s *Driver) createTx(ctx context.Context, tx *sql.Tx, doc docs.Doc) error {
	var one int
	err := tx.StmtContext(ctx, s.ws.exists).QueryRowContext(ctx, doc.Key.User, doc.Key.Collection, doc.Key.ID).Scan(&one)
	switch {
	case err == nil:
		return docs.ErrAlreadyExists
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("sqlite.QueryRow docs: %w", err)
	}
	// Absent, so it has no field rows to replace.
	return s.putTx(ctx, tx, doc, nil, true)
}

// Update runs fn inside a write transaction on the current document. fn
// runs exactly once here; it must not call write methods of the same Store
// (the single write connection is held while it runs).
func (s *Driver) Update(ctx context.Context, key docs.Key, fn func(cur *docs.Doc) (*docs.Doc, error)) error {
	deleted := false
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		cur, err := getDoc(ctx, tx.StmtContext(ctx, s.ws.get), key)
		if err != nil && !errors.Is(err, docs.ErrNotFound) {
			return err
		}
		next, err := fn(cur)
		if err != nil {
			return fnError{err}
		}
		if next == nil {
			if cur != nil {
				deleted, err = s.deleteTx(ctx, tx, key)
			}
			return err
		}
		if unchanged(cur, next) {
			return nil // nothing to write (callers return cur for "no change")
		}
		// docs.Store validated next and set its key.
		return s.putTx(ctx, tx, *next, fieldsOf(cur), true)
	})
	var fe fnError
	if errors.As(err, &fe) {
		return fe.err // as is, per the port
	}
	if err == nil && deleted {
		return s.checkpoint(ctx)
	}
	return err
}

// Transact reads, runs fn and writes in one write transaction; like
// Update, fn runs exactly once here.
func (s *Driver) Transact(ctx context.Context, read []docs.Key, fn func(cur []*docs.Doc) ([]docs.Write, error)) error {
	deleted := false
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		get := tx.StmtContext(ctx, s.ws.get)
		cur := make([]*docs.Doc, len(read))
		known := make(map[docs.Key]*docs.Doc, len(read))
		for i, k := range read {
			d, err := getDoc(ctx, get, k)
			if err != nil && !errors.Is(err, docs.ErrNotFound) {
				return err
			}
			cur[i], known[k] = d, d
		}
		ws, err := fn(cur)
		if err != nil {
			return fnError{err}
		}
		for _, w := range ws {
			k := w.Doc.Key
			old, wasRead := known[k]
			switch {
			case w.Delete:
				d, err := s.deleteTx(ctx, tx, k)
				if err != nil {
					return err
				}
				deleted = deleted || d
			case w.Create && wasRead && old != nil:
				return docs.ErrAlreadyExists
			case w.Create && !wasRead:
				if err := s.createTx(ctx, tx, w.Doc); err != nil {
					return err
				}
			default:
				if err := s.putTx(ctx, tx, w.Doc, fieldsOf(old), wasRead); err != nil {
					return err
				}
			}
		}
		return nil
	})
	var fe fnError
	if errors.As(err, &fe) {
		return fe.err // as is, per the port
	}
	if err == nil && deleted {
		return s.checkpoint(ctx)
	}
	return err
}

// unchanged reports whether next is what cur already holds.
func unchanged(cur, next *docs.Doc) bool {
	return cur != nil && bytes.Equal(cur.Data, next.Data) && maps.Equal(cur.Fields, next.Fields)
}

func fieldsOf(d *docs.Doc) map[string]any {
	if d == nil {
		return nil
	}
	return d.Fields
}

// fnError carries an error of the Update callback through inTx unwrapped.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

// Delete is idempotent. The WAL is checkpointed and truncated afterwards so
// the deleted bytes are gone from every file when it returns.
func (s *Driver) Delete(ctx context.Context, key docs.Key) error {
	var deleted bool
	err := s.inTx(ctx, func(tx *sql.Tx) (err error) {
		deleted, err = s.deleteTx(ctx, tx, key)
		return err
	})
	if err != nil || !deleted {
		return err
	}
	return s.checkpoint(ctx)
}

// deleteManyChunk keys per DELETE statement: 3 parameters each, well under
// SQLite's bound on parameters.
const deleteManyChunk = 250

// DeleteMany deletes keys in one transaction and checkpoints the WAL once
// (per-key Delete pays a checkpoint each, which a sweep cannot afford).
func (s *Driver) DeleteMany(ctx context.Context, keys []docs.Key) (int, error) {
	n := 0
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		n = 0
		// A statement per slice of keys, not per key: the per-statement
		// cost dominates a page of small deletes.
		for part := range slices.Chunk(keys, deleteManyChunk) {
			q := "DELETE FROM docs WHERE (user, coll, id) IN (VALUES " +
				strings.Repeat("(?, ?, ?), ", len(part)-1) + "(?, ?, ?))"
			args := make([]any, 0, 3*len(part))
			for _, k := range part {
				args = append(args, k.User, k.Collection, k.ID)
			}
			res, err := tx.ExecContext(ctx, q, args...)
			if err != nil {
				return fmt.Errorf("sqlite.Exec delete docs: %w", err)
			}
			c, err := res.RowsAffected()
			if err != nil {
				return fmt.Errorf("sqlite.RowsAffected: %w", err)
			}
			n += int(c)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if n == 0 {
		return 0, nil
	}
	return n, s.checkpoint(ctx)
}

// DeleteUser deletes every document of user (not "", the global
// collections) and checkpoints the WAL. On a checkpoint error the documents
// are deleted (the count is returned) but may linger in the WAL: retry.
func (s *Driver) DeleteUser(ctx context.Context, user string) (int, error) {
	var n int64
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, "DELETE FROM docs WHERE user = ?", user)
		if err != nil {
			return fmt.Errorf("sqlite.Exec delete user: %w", err)
		}
		n, err = res.RowsAffected()
		if err != nil {
			return fmt.Errorf("sqlite.RowsAffected: %w", err)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return int(n), s.checkpoint(ctx)
}

// CountUser counts user's documents in every collection.
func (s *Driver) CountUser(ctx context.Context, user string) (int, error) {
	var n int
	if err := s.r.QueryRowContext(ctx, "SELECT count(*) FROM docs WHERE user = ?", user).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite.QueryRow count: %w", err)
	}
	return n, nil
}

func (s *Driver) inTx(ctx context.Context, fn func(tx *sql.Tx) error) (err error) {
	tx, err := s.w.BeginTx(ctx, nil) // BEGIN IMMEDIATE (_txlock)
	if err != nil {
		return fmt.Errorf("sqlite.BeginTx: %w", err)
	}
	// Roll back on error and on panic (an Update callback may panic): an
	// open transaction would hold the only write connection forever.
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback()
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlite.Commit: %w", err)
	}
	committed = true
	return nil
}

// putTx writes doc. With known, old holds the fields of the document
// being replaced (nil when there is none), so only changed field rows are
// written, each an index entry twice over; without, every field row is
// replaced.
func (s *Driver) putTx(ctx context.Context, tx *sql.Tx, doc docs.Doc, old map[string]any, known bool) error {
	fields := doc.Fields
	enc, err := encodeFields(fields)
	if err != nil {
		return err
	}
	data := doc.Data
	if data == nil {
		data = []byte{}
	}
	k := doc.Key
	if _, err := tx.StmtContext(ctx, s.ws.upsert).ExecContext(ctx, k.User, k.Collection, k.ID, data, enc); err != nil {
		return fmt.Errorf("sqlite.Exec upsert doc: %w", err)
	}
	if !known {
		if _, err := tx.StmtContext(ctx, s.ws.delFields).ExecContext(ctx, k.User, k.Collection, k.ID); err != nil {
			return fmt.Errorf("sqlite.Exec delete fields: %w", err)
		}
		old = nil
	}
	for name := range old {
		if _, ok := fields[name]; ok {
			continue
		}
		if _, err := tx.StmtContext(ctx, s.ws.delField).ExecContext(ctx, k.User, k.Collection, k.ID, name); err != nil {
			return fmt.Errorf("sqlite.Exec delete field: %w", err)
		}
	}
	for name, v := range fields {
		if ov, ok := old[name]; ok && ov == v {
			continue
		}
		if _, err := tx.StmtContext(ctx, s.ws.putField).ExecContext(ctx, k.User, k.Collection, k.ID, name, v); err != nil {
			return fmt.Errorf("sqlite.Exec put field: %w", err)
		}
	}
	return nil
}

// deleteTx deletes key and reports whether it existed.
func (s *Driver) deleteTx(ctx context.Context, tx *sql.Tx, key docs.Key) (bool, error) {
	// fields rows go with it (ON DELETE CASCADE).
	res, err := tx.StmtContext(ctx, s.ws.delDoc).ExecContext(ctx, key.User, key.Collection, key.ID)
	if err != nil {
		return false, fmt.Errorf("sqlite.Exec delete doc: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("sqlite.RowsAffected: %w", err)
	}
	return n > 0, nil
}

// Fields are stored as a JSON object: strings as JSON strings, int64 as
// JSON numbers (decoded with UseNumber, so no float rounding).
func encodeFields(f map[string]any) (string, error) {
	b, err := json.Marshal(f)
	if err != nil {
		return "", fmt.Errorf("json.Marshal fields: %w", err)
	}
	return string(b), nil
}

func decodeFields(s string) (map[string]any, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var raw map[string]any
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("json.Decode fields: %w", err)
	}
	out := make(map[string]any, len(raw))
	for k, v := range raw {
		switch x := v.(type) {
		case string:
			out[k] = x
		case json.Number:
			i, err := x.Int64()
			if err != nil {
				return nil, fmt.Errorf("decode field: %w", err)
			}
			out[k] = i
		default:
			return nil, fmt.Errorf("decode field: unexpected %T", v)
		}
	}
	return out, nil
}
