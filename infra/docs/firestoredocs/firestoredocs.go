// Package firestoredocs is the production documents adapter, on Cloud
// Firestore (cloud.google.com/go/firestore).
//
// Layout: a user's document is users/{user}/{collection}/{id}, where user
// is the keyed hash of the uid (docs.Key.User, never the raw uid); a global
// one (Key.User == "") is {collection}/{id}. The users/{user} documents
// themselves are never written, so a user's data is exactly the
// subcollections under that name. A global collection named "users" is
// refused (docs.ErrInvalid): its documents would be the users' parents.
//
// Each document has three fields: data (bytes, opaque, already sealed by
// the caller), fields (a map of the indexed values, string or int64, which
// queries filter and order on as fields.<name>) and updated (the server's
// commit time, for operators; never read back).
//
// Queries with AllUsers are collection-group queries: they match the
// collection of that name under every user and the global collection of
// that name too, as the port's embedded adapter does. The composite and
// collection-group indexes the pipeline's queries need are declared in
// terraform/firestore.tf. Two query shapes are sorted in memory after
// reading every match (see buildQuery): keep them to one user's data.
//
// Update is a read-write transaction; Updates of one key within one Store
// also queue in-process, so goroutines of one instance do not abort each
// other's transactions. Data is limited to MaxDataSize so that every valid
// document fits Firestore's 1 MiB document limit.
package firestoredocs

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/lethe-dev/lethe/infra/docs"
)

// Document field names.
const (
	fData    = "data"
	fFields  = "fields"
	fUpdated = "updated"
)

// txAttempts bounds the attempts of one Update. The client's default (5)
// is too few when many workers update one document: each conflict aborts
// all but one of them, and the client backs off between attempts.
const txAttempts = 30

// Config selects the Firestore database.
type Config struct {
	ProjectID string
	// DatabaseID defaults to "(default)".
	DatabaseID string
	// EmulatorHost (host:port) connects to the Firestore emulator, in
	// plain text and without credentials. Empty: the real service with
	// Application Default Credentials. The caller reads it from its
	// configuration; this package never reads the environment. (The
	// Firestore client library itself honours FIRESTORE_EMULATOR_HOST:
	// production wiring should refuse that variable.)
	EmulatorHost string
	// CallTimeout bounds each call to the server (one document operation,
	// query or transaction, an Update's wait for this process's other
	// Updates of the key included; one page or batch of a bulk delete): the
	// client retries an unreachable server until the context ends, so a
	// caller without a deadline would otherwise wait forever. Zero means
	// DefaultCallTimeout.
	CallTimeout time.Duration
}

// DefaultCallTimeout is the bound of Config.CallTimeout left zero.
const DefaultCallTimeout = 10 * time.Second

// Driver is a docs.Driver on one Firestore database.
type Driver struct {
	c *firestore.Client
	// owned: Close closes c (Open made it; New's caller owns its client).
	owned bool
	// timeout bounds each call (Config.CallTimeout).
	timeout time.Duration
	// updating serialises this process's Updates of one key (striped by
	// a hash of the key): transactions of one process on one document
	// would only abort each other, and the emulator resolves such
	// conflicts by lock timeouts of seconds. Other processes are still
	// kept out by the transaction.
	updating [updateStripes]chan struct{}
}

const updateStripes = 64

func newStore(c *firestore.Client, owned bool, timeout time.Duration) *Driver {
	if timeout <= 0 {
		timeout = DefaultCallTimeout
	}
	s := &Driver{c: c, owned: owned, timeout: timeout}
	for i := range s.updating {
		s.updating[i] = make(chan struct{}, 1)
	}
	return s
}

var _ docs.Driver = (*Driver)(nil)

// Open connects to the database of cfg. Nothing is sent until the first
// call.
func Open(ctx context.Context, cfg Config) (docs.Store, error) {
	d, err := OpenDriver(ctx, cfg)
	if err != nil {
		return docs.Store{}, err
	}
	return docs.New(d), nil
}

// OpenDriver connects the driver alone, for decorators and tests of the
// adapter itself; callers use Open.
func OpenDriver(ctx context.Context, cfg Config) (*Driver, error) {
	if cfg.ProjectID == "" {
		return nil, errors.New("firestoredocs.Open: empty project id")
	}
	var opts []option.ClientOption
	if cfg.EmulatorHost != "" {
		// As the client library does for FIRESTORE_EMULATOR_HOST, but from
		// configuration. The client's Close closes conn.
		conn, err := grpc.NewClient("passthrough:///"+cfg.EmulatorHost,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithPerRPCCredentials(emulatorOwner{}),
			grpc.WithDefaultCallOptions(
				grpc.MaxCallRecvMsgSize(math.MaxInt32),
				grpc.MaxCallSendMsgSize(math.MaxInt32),
			),
		)
		if err != nil {
			return nil, fmt.Errorf("grpc.NewClient: %w", err)
		}
		opts = append(opts, option.WithGRPCConn(conn))
	}
	var (
		c   *firestore.Client
		err error
	)
	if cfg.DatabaseID == "" || cfg.DatabaseID == firestore.DefaultDatabaseID {
		c, err = firestore.NewClient(ctx, cfg.ProjectID, opts...)
	} else {
		c, err = firestore.NewClientWithDatabase(ctx, cfg.ProjectID, cfg.DatabaseID, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("firestore.NewClient: %w", err)
	}
	return newStore(c, true, cfg.CallTimeout), nil
}

// New wraps a client the caller made. Close leaves the client open.
func New(client *firestore.Client) docs.Store { return docs.New(newStore(client, false, 0)) }

// ErrorCode maps Firestore's status codes to the port's errors.
func (s *Driver) ErrorCode(err error) error {
	switch status.Code(err) {
	case codes.NotFound:
		return docs.ErrNotFound
	case codes.AlreadyExists:
		return docs.ErrAlreadyExists
	case codes.InvalidArgument:
		return docs.ErrInvalid
	}
	return nil
}

// As sets a **Driver target to the driver, and a **firestore.Client one
// to its client.
func (s *Driver) As(target any) bool {
	switch p := target.(type) {
	case **Driver:
		*p = s
	case **firestore.Client:
		*p = s.c
	default:
		return false
	}
	return true
}

// bound is ctx limited to one call's timeout (Config.CallTimeout).
func (s *Driver) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

// emulatorOwner is the emulator's admin credential: it accepts
// "Bearer owner" and then ignores security rules, as server clients do.
type emulatorOwner struct{}

func (emulatorOwner) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer owner"}, nil
}

func (emulatorOwner) RequireTransportSecurity() bool { return false }

// Close closes the client if Open made it.
func (s *Driver) Close() error {
	if !s.owned {
		return nil
	}
	if err := s.c.Close(); err != nil {
		return fmt.Errorf("firestore.Client.Close: %w", err)
	}
	return nil
}

// ref is where key lives. key must be valid.
func (s *Driver) ref(key docs.Key) *firestore.DocumentRef {
	return s.coll(key.User, key.Collection).Doc(key.ID)
}

// coll is the collection of user (or the global one for "").
func (s *Driver) coll(user, coll string) *firestore.CollectionRef {
	if user == "" {
		return s.c.Collection(coll)
	}
	return s.userDoc(user).Collection(coll)
}

func (s *Driver) userDoc(user string) *firestore.DocumentRef {
	return s.c.Collection(docs.UsersCollection).Doc(user)
}

// keyFromRef inverts ref: ok is false for a document outside the layout.
func keyFromRef(r *firestore.DocumentRef) (docs.Key, bool) {
	coll := r.Parent
	if coll == nil {
		return docs.Key{}, false
	}
	if coll.Parent == nil {
		return docs.Key{Collection: coll.ID, ID: r.ID}, coll.ID != docs.UsersCollection
	}
	user := coll.Parent
	if user.Parent == nil || user.Parent.ID != docs.UsersCollection || user.Parent.Parent != nil {
		return docs.Key{}, false
	}
	return docs.Key{User: user.ID, Collection: coll.ID, ID: r.ID}, true
}

// encode is the stored form of a validated document; fields is the
// normalised copy from docs.ValidateDoc, and Data is copied by the client when
// the write is built, so no caller memory is kept.
func encode(data []byte, fields map[string]any) map[string]any {
	if data == nil {
		data = []byte{} // bytes, not null
	}
	return map[string]any{fData: data, fFields: fields, fUpdated: firestore.ServerTimestamp}
}

// decode reads a stored document back.
func decode(key docs.Key, snap *firestore.DocumentSnapshot) (docs.Doc, error) {
	m := snap.Data()
	data, ok := m[fData].([]byte)
	if !ok && m[fData] != nil {
		return docs.Doc{}, fmt.Errorf("firestoredocs: %s document: data is %T, want bytes", key.Collection, m[fData])
	}
	if data == nil {
		data = []byte{}
	}
	raw, ok := m[fFields].(map[string]any)
	if !ok && m[fFields] != nil {
		return docs.Doc{}, fmt.Errorf("firestoredocs: %s document: fields is %T, want a map", key.Collection, m[fFields])
	}
	fields := make(map[string]any, len(raw))
	for name, v := range raw {
		switch v.(type) {
		case string, int64:
			fields[name] = v
		default:
			return docs.Doc{}, fmt.Errorf("firestoredocs: %s document: field %q is %T, want string or int64", key.Collection, name, v)
		}
	}
	return docs.Doc{Key: key, Data: data, Fields: fields}, nil
}

// wrap names the failing call; docs.Store maps the status code to the
// port's errors (ErrorCode), keeping this error for the log.
func wrap(call string, err error) error {
	return fmt.Errorf("%s: %w", call, err)
}

// Get returns docs.ErrNotFound when absent.
func (s *Driver) Get(ctx context.Context, key docs.Key) (docs.Doc, error) {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	snap, err := s.ref(key).Get(ctx)
	if err != nil {
		return docs.Doc{}, wrap("firestore.DocumentRef.Get", err)
	}
	return decode(key, snap)
}

// Put creates or replaces (a whole-document Set: fields absent from doc
// are gone afterwards).
func (s *Driver) Put(ctx context.Context, doc docs.Doc) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if _, err := s.ref(doc.Key).Set(ctx, encode(doc.Data, doc.Fields)); err != nil {
		return wrap("firestore.DocumentRef.Set", err)
	}
	return nil
}

// Create writes only if absent (the server checks), else
// docs.ErrAlreadyExists.
func (s *Driver) Create(ctx context.Context, doc docs.Doc) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if _, err := s.ref(doc.Key).Create(ctx, encode(doc.Data, doc.Fields)); err != nil {
		return wrap("firestore.DocumentRef.Create", err)
	}
	return nil
}

// fnError carries an error of the Update callback out of RunTransaction
// unchanged. It has no Unwrap, so the client never takes it for an
// aborted transaction and never retries it.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }

// Update reads the document in a read-write transaction (which locks it),
// runs fn and writes the result. A conflicting transaction makes the client
// run the whole attempt again, fn included. fn must not call Update of the
// same Store.
func (s *Driver) Update(ctx context.Context, key docs.Key, fn func(cur *docs.Doc) (*docs.Doc, error)) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	ref := s.ref(key)
	unlock, err := s.lockStripes(ctx, ref.Path)
	if err != nil {
		return fmt.Errorf("firestoredocs.Update: %w", err)
	}
	defer unlock()
	err = s.c.RunTransaction(ctx, func(_ context.Context, tx *firestore.Transaction) error {
		var cur *docs.Doc
		snap, err := tx.Get(ref)
		switch {
		case status.Code(err) == codes.NotFound:
		case err != nil:
			return err // as is: an Aborted code makes the client retry
		default:
			d, err := decode(key, snap)
			if err != nil {
				return err
			}
			cur = &d
		}
		next, err := fn(cur)
		if err != nil {
			return fnError{err}
		}
		if next == nil {
			if cur == nil {
				return nil
			}
			return tx.Delete(ref)
		}
		// docs.Store validated next and set its key.
		return tx.Set(ref, encode(next.Data, next.Fields))
	}, firestore.MaxAttempts(txAttempts))
	return txResult(err)
}

// txResult maps RunTransaction's result: the callback's own error as is
// (per the port), anything else wrapped.
func txResult(err error) error {
	var fe fnError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &fe):
		return fe.err
	}
	return wrap("firestore.RunTransaction", err)
}

// lockStripes takes this process's stripes of paths, in stripe order so
// two callers never wait on each other, and returns their release.
func (s *Driver) lockStripes(ctx context.Context, paths ...string) (func(), error) {
	idx := make([]int, 0, len(paths))
	for _, p := range paths {
		h := fnv.New32a()
		h.Write([]byte(p))
		idx = append(idx, int(h.Sum32()%updateStripes))
	}
	slices.Sort(idx)
	idx = slices.Compact(idx)
	held := 0
	unlock := func() {
		for _, i := range idx[:held] {
			<-s.updating[i]
		}
	}
	for _, i := range idx {
		select {
		case s.updating[i] <- struct{}{}:
			held++
		case <-ctx.Done():
			unlock()
			return nil, context.Cause(ctx)
		}
	}
	return unlock, nil
}

// Transact reads the documents in a read-write transaction (which locks
// them), runs fn and commits its writes in the same commit. A conflicting
// transaction makes the client run the whole attempt again, fn included.
func (s *Driver) Transact(ctx context.Context, read []docs.Key, fn func(cur []*docs.Doc) ([]docs.Write, error)) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	refs := make([]*firestore.DocumentRef, len(read))
	paths := make([]string, len(read))
	for i, k := range read {
		refs[i] = s.ref(k)
		paths[i] = refs[i].Path
	}
	unlock, err := s.lockStripes(ctx, paths...)
	if err != nil {
		return fmt.Errorf("firestoredocs.Transact: %w", err)
	}
	defer unlock()
	err = s.c.RunTransaction(ctx, func(_ context.Context, tx *firestore.Transaction) error {
		cur := make([]*docs.Doc, len(read))
		exists := make(map[docs.Key]bool, len(read))
		if len(refs) > 0 {
			snaps, err := tx.GetAll(refs)
			if err != nil {
				return err // as is: an Aborted code makes the client retry
			}
			for i, snap := range snaps {
				if !snap.Exists() {
					continue
				}
				d, err := decode(read[i], snap)
				if err != nil {
					return err
				}
				cur[i] = &d
				exists[read[i]] = true
			}
		}
		ws, err := fn(cur)
		if err != nil {
			return fnError{err}
		}
		for _, w := range ws {
			ref := s.ref(w.Doc.Key)
			switch {
			case w.Delete:
				err = tx.Delete(ref)
			case w.Create && exists[w.Doc.Key]:
				return fnError{docs.ErrAlreadyExists}
			case w.Create:
				// Unread: the commit's precondition refuses an existing one.
				err = tx.Create(ref, encode(w.Doc.Data, w.Doc.Fields))
			default:
				err = tx.Set(ref, encode(w.Doc.Data, w.Doc.Fields))
			}
			if err != nil {
				return err
			}
		}
		return nil
	}, firestore.MaxAttempts(txAttempts))
	return txResult(err)
}

// Delete is idempotent (no precondition).
func (s *Driver) Delete(ctx context.Context, key docs.Key) error {
	ctx, cancel := s.bound(ctx)
	defer cancel()
	if _, err := s.ref(key).Delete(ctx); err != nil {
		return wrap("firestore.DocumentRef.Delete", err)
	}
	return nil
}
