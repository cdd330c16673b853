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
// update; busy_timeout covers other processes. Concurrent writes share a
// transaction (group commit, each in its own savepoint): one WAL fsync for
// all of them instead of one each. Reads use a separate pool.
package sqlitedocs

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/lethe-dev/lethe/infra/docs"

	_ "modernc.org/sqlite" // driver "sqlite"
)

// Store is a docs.Store on a SQLite file.
type Store struct {
	w   *sql.DB   // one connection: every write, serialised
	r   *sql.DB   // readers (query_only)
	get *sql.Stmt // on r: parsing costs as much as the lookup
	gc  groupCommit
}

var _ docs.Store = (*Store)(nil)

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
func Open(ctx context.Context, path string) (*Store, error) {
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
	return &Store{w: w, r: r, get: get}, nil
}

// Close checkpoints the WAL into the database file and truncates it, then
// closes every connection.
func (s *Store) Close() error {
	cerr := s.checkpoint(context.Background())
	serr := s.get.Close()
	rerr := s.r.Close()
	werr := s.w.Close()
	return errors.Join(cerr, serr, rerr, werr)
}

// checkpoint copies the WAL into the database and truncates it to zero
// bytes: with secure_delete the database pages of a deleted row are
// zeroed, but older frames in the WAL would still hold it.
func (s *Store) checkpoint(ctx context.Context) error {
	var busy, logFrames, done int
	if err := s.w.QueryRowContext(ctx, "PRAGMA wal_checkpoint(TRUNCATE)").Scan(&busy, &logFrames, &done); err != nil {
		return fmt.Errorf("sqlite wal_checkpoint: %w", err)
	}
	if busy != 0 {
		return errors.New("sqlite wal_checkpoint: busy, WAL not truncated")
	}
	return nil
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
func (s *Store) Get(ctx context.Context, key docs.Key) (docs.Doc, error) {
	if err := docs.ValidateKey(key); err != nil {
		return docs.Doc{}, err
	}
	d, err := getDoc(ctx, s.get, key)
	if err != nil {
		return docs.Doc{}, err
	}
	return *d, nil
}

// Put creates or replaces.
func (s *Store) Put(ctx context.Context, doc docs.Doc) error {
	fields, err := docs.ValidateDoc(doc)
	if err != nil {
		return err
	}
	return s.inTx(ctx, func(tx *sql.Tx) error { return putTx(ctx, tx, doc, fields) })
}

// Create writes only if absent, else docs.ErrAlreadyExists.
func (s *Store) Create(ctx context.Context, doc docs.Doc) error {
	fields, err := docs.ValidateDoc(doc)
	if err != nil {
		return err
	}
	return s.inTx(ctx, func(tx *sql.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, "SELECT 1 FROM docs WHERE user = ? AND coll = ? AND id = ?",
			doc.Key.User, doc.Key.Collection, doc.Key.ID).Scan(&one)
		switch {
		case err == nil:
			return docs.ErrAlreadyExists
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("sqlite.QueryRow docs: %w", err)
		}
		return putTx(ctx, tx, doc, fields)
	})
}

// Update runs fn inside a write transaction on the current document. fn
// runs exactly once here; it must not call write methods of the same Store
// (the single write connection is held while it runs).
func (s *Store) Update(ctx context.Context, key docs.Key, fn func(cur *docs.Doc) (*docs.Doc, error)) error {
	if err := docs.ValidateKey(key); err != nil {
		return err
	}
	deleted := false
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		stmt, err := tx.PrepareContext(ctx, getSQL)
		if err != nil {
			return fmt.Errorf("sqlite.Prepare: %w", err)
		}
		defer stmt.Close()
		cur, err := getDoc(ctx, stmt, key)
		if err != nil && !errors.Is(err, docs.ErrNotFound) {
			return err
		}
		next, err := fn(cur)
		if err != nil {
			return fnError{err}
		}
		if next == nil {
			if cur != nil {
				deleted, err = deleteTx(ctx, tx, key)
			}
			return err
		}
		d := *next
		if d.Key == (docs.Key{}) {
			d.Key = key
		} else if d.Key != key {
			return fmt.Errorf("%w: Update returned a document with another key", docs.ErrInvalid)
		}
		fields, err := docs.ValidateDoc(d)
		if err != nil {
			return err
		}
		return putTx(ctx, tx, d, fields)
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

// fnError carries an error of the Update callback through inTx unwrapped.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

// Delete is idempotent. The WAL is checkpointed and truncated afterwards so
// the deleted bytes are gone from every file when it returns.
func (s *Store) Delete(ctx context.Context, key docs.Key) error {
	if err := docs.ValidateKey(key); err != nil {
		return err
	}
	var deleted bool
	err := s.inTx(ctx, func(tx *sql.Tx) (err error) {
		deleted, err = deleteTx(ctx, tx, key)
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
func (s *Store) DeleteMany(ctx context.Context, keys []docs.Key) (int, error) {
	for _, k := range keys {
		if err := docs.ValidateKey(k); err != nil {
			return 0, err
		}
	}
	if len(keys) == 0 {
		return 0, nil
	}
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
func (s *Store) DeleteUser(ctx context.Context, user string) (int, error) {
	if user == "" || !docs.ValidUser(user) {
		return 0, fmt.Errorf("%w: user", docs.ErrInvalid)
	}
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
func (s *Store) CountUser(ctx context.Context, user string) (int, error) {
	if user == "" || !docs.ValidUser(user) {
		return 0, fmt.Errorf("%w: user", docs.ErrInvalid)
	}
	var n int
	if err := s.r.QueryRowContext(ctx, "SELECT count(*) FROM docs WHERE user = ?", user).Scan(&n); err != nil {
		return 0, fmt.Errorf("sqlite.QueryRow count: %w", err)
	}
	return n, nil
}

// inTx runs fn in a write transaction. Concurrent callers share one
// (group commit): the first becomes the leader and runs every queued fn in
// one BEGIN IMMEDIATE … COMMIT, each inside its own savepoint, so a failing
// fn is rolled back alone and the others commit with one WAL fsync between
// them. Each caller returns once its writes are durable (or not written).
func (s *Store) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	req := &txReq{ctx: ctx, fn: fn, done: make(chan struct{})}
	s.gc.mu.Lock()
	s.gc.queue = append(s.gc.queue, req)
	lead := !s.gc.leading
	s.gc.leading = true
	s.gc.mu.Unlock()
	if lead {
		s.lead()
	}
	<-req.done
	if req.panicked != nil {
		panic(req.panicked) // an Update callback's panic, in its own goroutine
	}
	return req.err
}

// txReq is one inTx call waiting for its group's commit.
type txReq struct {
	ctx      context.Context
	fn       func(tx *sql.Tx) error
	err      error
	panicked any
	done     chan struct{}
}

// groupCommit queues writes for the leader.
type groupCommit struct {
	mu      sync.Mutex
	queue   []*txReq
	leading bool
}

// maxGroup bounds one group's transaction.
const maxGroup = 64

// lead commits one group of queued writes, then hands leadership to a new
// goroutine while more are queued: no caller waits on others' writes for
// longer than its own group's.
func (s *Store) lead() {
	s.gc.mu.Lock()
	n := min(len(s.gc.queue), maxGroup)
	group := slices.Clone(s.gc.queue[:n])
	s.gc.queue = slices.Delete(s.gc.queue, 0, n)
	s.gc.mu.Unlock()
	s.commitGroup(group)
	for _, r := range group {
		close(r.done)
	}
	s.gc.mu.Lock()
	more := len(s.gc.queue) > 0
	s.gc.leading = more
	s.gc.mu.Unlock()
	if more {
		go s.lead()
	}
}

// commitGroup runs group in one transaction; every request's err (or
// panic) is set when it returns.
func (s *Store) commitGroup(group []*txReq) {
	// Not any one caller's context: a caller that gives up must not abort
	// the others' writes (each fn still runs with its own).
	ctx := context.WithoutCancel(group[0].ctx)
	tx, err := s.w.BeginTx(ctx, nil) // BEGIN IMMEDIATE (_txlock)
	if err != nil {
		for _, r := range group {
			r.err = fmt.Errorf("sqlite.BeginTx: %w", err)
		}
		return
	}
	// Roll back on error: an open transaction would hold the only write
	// connection forever.
	committed := false
	defer func() {
		if !committed {
			_ = tx.Rollback()
		}
	}()
	ok := 0
	for _, r := range group {
		if r.err = r.ctx.Err(); r.err != nil {
			continue
		}
		if _, err := tx.ExecContext(ctx, "SAVEPOINT w"); err != nil {
			r.err = fmt.Errorf("sqlite.Exec savepoint: %w", err)
			continue
		}
		r.panicked, r.err = runFn(r.fn, tx)
		if r.err != nil || r.panicked != nil {
			if _, err := tx.ExecContext(ctx, "ROLLBACK TO w"); err != nil {
				// The transaction's state is unknown: nothing commits.
				for _, o := range group {
					if o.err == nil && o.panicked == nil {
						o.err = fmt.Errorf("sqlite.Exec rollback to savepoint: %w", err)
					}
				}
				return
			}
		} else {
			ok++
		}
		if _, err := tx.ExecContext(ctx, "RELEASE w"); err != nil {
			for _, o := range group {
				if o.err == nil && o.panicked == nil {
					o.err = fmt.Errorf("sqlite.Exec release savepoint: %w", err)
				}
			}
			return
		}
	}
	if ok == 0 {
		return // rolled back: nothing to write
	}
	if err := tx.Commit(); err != nil {
		for _, r := range group {
			if r.err == nil && r.panicked == nil {
				r.err = fmt.Errorf("sqlite.Commit: %w", err)
			}
		}
		return
	}
	committed = true
}

// runFn runs fn, turning a panic into a value the caller re-panics with.
func runFn(fn func(tx *sql.Tx) error, tx *sql.Tx) (panicked any, err error) {
	defer func() {
		if p := recover(); p != nil {
			panicked = p
		}
	}()
	return nil, fn(tx)
}

func putTx(ctx context.Context, tx *sql.Tx, doc docs.Doc, fields map[string]any) error {
	enc, err := encodeFields(fields)
	if err != nil {
		return err
	}
	data := doc.Data
	if data == nil {
		data = []byte{}
	}
	k := doc.Key
	if _, err := tx.ExecContext(ctx, `INSERT INTO docs (user, coll, id, data, fields) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT (user, coll, id) DO UPDATE SET data = excluded.data, fields = excluded.fields`,
		k.User, k.Collection, k.ID, data, enc); err != nil {
		return fmt.Errorf("sqlite.Exec upsert doc: %w", err)
	}
	if _, err := tx.ExecContext(ctx, "DELETE FROM fields WHERE user = ? AND coll = ? AND id = ?",
		k.User, k.Collection, k.ID); err != nil {
		return fmt.Errorf("sqlite.Exec delete fields: %w", err)
	}
	for name, v := range fields {
		if _, err := tx.ExecContext(ctx, "INSERT INTO fields (user, coll, id, name, v) VALUES (?, ?, ?, ?, ?)",
			k.User, k.Collection, k.ID, name, v); err != nil {
			return fmt.Errorf("sqlite.Exec insert field: %w", err)
		}
	}
	return nil
}

// deleteTx deletes key and reports whether it existed.
func deleteTx(ctx context.Context, tx *sql.Tx, key docs.Key) (bool, error) {
	// fields rows go with it (ON DELETE CASCADE).
	res, err := tx.ExecContext(ctx, "DELETE FROM docs WHERE user = ? AND coll = ? AND id = ?",
		key.User, key.Collection, key.ID)
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
