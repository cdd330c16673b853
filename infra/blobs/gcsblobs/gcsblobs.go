// Package gcsblobs is the Cloud Storage adapter of the blob port.
//
// Writes carry a CRC32C computed here, so Cloud Storage refuses bytes
// corrupted in transit instead of storing them; create-only writes are a
// generation precondition (ifGenerationMatch=0). DeletePrefix also removes
// noncurrent versions, so an erased user's audio does not survive in object
// versioning. The bucket itself (versioning, lifecycle, soft delete off,
// notifications) is terraform/storage.tf.
package gcsblobs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"

	"cloud.google.com/go/storage"
	"golang.org/x/sync/errgroup"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"
	"google.golang.org/api/option"

	"github.com/lethe-dev/lethe/infra/blobs"
)

const (
	defaultSingleShotMax = 16 << 20
	defaultChunkSize     = 16 << 20
	chunkQuantum         = 256 << 10 // Cloud Storage's resumable chunk unit
	deleteParallelism    = 16
	// readRetries bounds Read's retries when the object is replaced between
	// its attributes and its bytes (see Read).
	readRetries = 5
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Config opens a Bucket. Nothing here is read from the environment: the
// binary's main does that.
type Config struct {
	// Bucket is the bucket name.
	Bucket string
	// Endpoint is the base URL of a fake or emulator (e.g.
	// "http://127.0.0.1:4443"); empty means Google. With an endpoint the
	// client sends no credentials.
	Endpoint string
	// SingleShotMax is the largest object sent in one request with its
	// CRC32C declared up front (the object is held in memory to compute
	// it). Larger objects stream as a resumable upload whose final chunk
	// carries the CRC32C the client library computed. Default 16 MiB.
	SingleShotMax int64
	// ChunkSize of resumable uploads, rounded up to 256 KiB. Default 16 MiB.
	ChunkSize int
	// ClientOptions are added to the client's options (credentials,
	// HTTP client); ignored by New.
	ClientOptions []option.ClientOption
}

// Bucket is the blobs.Driver on one Cloud Storage bucket; callers reach it
// through blobs.Bucket.As.
type Bucket struct {
	client        *storage.Client
	ownsClient    bool
	name          string
	bkt           *storage.BucketHandle
	singleShotMax int64
	chunkSize     int
	closeOnce     sync.Once
	closeErr      error
}

var (
	_ blobs.Driver      = (*Bucket)(nil)
	_ blobs.Generations = (*Bucket)(nil)
)

// Open makes a client for cfg and returns the bucket; Close closes the
// client. It does not check that the bucket exists: that needs
// storage.buckets.get, which the object-only service accounts lack.
func Open(ctx context.Context, cfg Config) (blobs.Bucket, error) {
	d, err := OpenDriver(ctx, cfg)
	if err != nil {
		return blobs.Bucket{}, err
	}
	return blobs.New(d), nil
}

// OpenDriver is Open's driver, for decorators.
func OpenDriver(ctx context.Context, cfg Config) (*Bucket, error) {
	if !validBucketName(cfg.Bucket) {
		return nil, errors.New("gcsblobs.Open: invalid bucket name")
	}
	// JSON reads everywhere: fakes serve the JSON API faithfully but not the
	// XML read host, and one read path for tests and production is the
	// path the tests prove.
	opts := append(slices.Clone(cfg.ClientOptions), storage.WithJSONReads())
	if cfg.Endpoint != "" {
		ep := strings.TrimSuffix(cfg.Endpoint, "/")
		if !strings.HasSuffix(ep, "/storage/v1") {
			ep += "/storage/v1"
		}
		opts = append(opts, option.WithEndpoint(ep+"/"), option.WithoutAuthentication())
	}
	client, err := storage.NewClient(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("storage.NewClient: %w", err)
	}
	b := New(client, cfg.Bucket)
	b.ownsClient = true
	if cfg.SingleShotMax > 0 {
		b.singleShotMax = cfg.SingleShotMax
	}
	if cfg.ChunkSize > 0 {
		b.chunkSize = roundUp(cfg.ChunkSize, chunkQuantum)
	}
	return b, nil
}

// New wraps an existing client in a driver (blobs.New makes the port of
// it); Close leaves the client open.
func New(client *storage.Client, bucket string) *Bucket {
	return &Bucket{
		client:        client,
		name:          bucket,
		bkt:           client.Bucket(bucket),
		singleShotMax: defaultSingleShotMax,
		chunkSize:     defaultChunkSize,
	}
}

// Name is the bucket's name.
func (b *Bucket) Name() string { return b.name }

func roundUp(n, q int) int { return (n + q - 1) / q * q }

// Write stores r under key. Objects up to SingleShotMax go in one request
// with their CRC32C declared, so a mismatch is refused before anything is
// stored; larger ones stream. Either way the CRC32C Cloud Storage reports
// must equal ours, or the new generation is deleted and Write fails.
func (b *Bucket) Write(ctx context.Context, key string, r io.Reader, opts blobs.WriteOptions) (blobs.Attrs, error) {
	ctype := opts.ContentType
	if err := ctx.Err(); err != nil {
		return blobs.Attrs{}, fmt.Errorf("gcsblobs.Write: %w", err)
	}
	var head bytes.Buffer
	if _, err := head.ReadFrom(io.LimitReader(r, b.singleShotMax+1)); err != nil {
		return blobs.Attrs{}, fmt.Errorf("gcsblobs.Write: read source: %w", err)
	}
	crc := crc32.New(castagnoli)
	crc.Write(head.Bytes())

	// Canceling wctx before Close abandons the upload: nothing is stored.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Retry writes on transient errors (429 on a hot name, 503) even
	// without a precondition: repeating the same bytes to the same name
	// yields the object the caller asked for. Create-only writes are
	// idempotent anyway; one whose first attempt had landed comes back as
	// ErrPrecondition, which the edge already reads as "stored before".
	obj := b.bkt.Object(key).Retryer(storage.WithPolicy(storage.RetryAlways))
	if opts.CreateOnly {
		obj = obj.If(storage.Conditions{DoesNotExist: true})
	}
	w := obj.NewWriter(wctx)
	w.ContentType = ctype
	w.Metadata = maps.Clone(opts.Metadata)
	var err error
	if int64(head.Len()) <= b.singleShotMax {
		w.CRC32C = crc.Sum32()
		w.SendCRC32C = true
		// One chunk larger than the object: a single multipart request
		// the library can still retry from its buffer.
		w.ChunkSize = roundUp(head.Len()+1, chunkQuantum)
		_, err = w.Write(head.Bytes())
	} else {
		w.ChunkSize = b.chunkSize
		if _, err = w.Write(head.Bytes()); err == nil {
			_, err = io.Copy(w, io.TeeReader(r, crc))
		}
	}
	if err != nil {
		cancel()
		_ = w.Close()
		return blobs.Attrs{}, mapErr("gcsblobs.Write", err)
	}
	if err := w.Close(); err != nil {
		return blobs.Attrs{}, mapErr("storage.Writer.Close", err)
	}
	a := w.Attrs()
	if a == nil {
		return blobs.Attrs{}, errors.New("gcsblobs.Write: no attributes after close")
	}
	if a.CRC32C != crc.Sum32() {
		// Stored bytes are not the caller's: remove exactly that
		// generation, never a newer writer's.
		derr := b.bkt.Object(key).Generation(a.Generation).Delete(context.WithoutCancel(ctx))
		return blobs.Attrs{}, errors.Join(errors.New("gcsblobs.Write: stored CRC32C differs from the data sent"), derr)
	}
	return toAttrs(a), nil
}

// Read returns the live object's bytes and the attributes of that same
// generation. The attributes are fetched first and the read pinned to
// their generation, so metadata and bytes always belong together; if the
// object is replaced in between, Read starts over.
func (b *Bucket) Read(ctx context.Context, key string) (io.ReadCloser, blobs.Attrs, error) {
	var lastErr error
	for range readRetries {
		a, err := b.bkt.Object(key).Attrs(ctx)
		if err != nil {
			return nil, blobs.Attrs{}, mapErr("storage.ObjectHandle.Attrs", err)
		}
		r, err := b.bkt.Object(key).Generation(a.Generation).NewReader(ctx)
		if errors.Is(err, storage.ErrObjectNotExist) {
			lastErr = err
			continue
		}
		if err != nil {
			return nil, blobs.Attrs{}, mapErr("storage.ObjectHandle.NewReader", err)
		}
		return r, toAttrs(a), nil
	}
	return nil, blobs.Attrs{}, fmt.Errorf("gcsblobs.Read: object kept changing: %w", lastErr)
}

// ReadGeneration reads one generation (live or noncurrent), as named by a
// finalize notification: a later upload to the same name is another event.
func (b *Bucket) ReadGeneration(ctx context.Context, key string, generation int64) (io.ReadCloser, blobs.Attrs, error) {
	o := b.bkt.Object(key).Generation(generation)
	a, err := o.Attrs(ctx)
	if err != nil {
		return nil, blobs.Attrs{}, mapErr("storage.ObjectHandle.Attrs", err)
	}
	r, err := o.NewReader(ctx)
	if err != nil {
		return nil, blobs.Attrs{}, mapErr("storage.ObjectHandle.NewReader", err)
	}
	return r, toAttrs(a), nil
}

// Attrs returns ErrNotFound when absent.
func (b *Bucket) Attrs(ctx context.Context, key string) (blobs.Attrs, error) {
	a, err := b.bkt.Object(key).Attrs(ctx)
	if err != nil {
		return blobs.Attrs{}, mapErr("storage.ObjectHandle.Attrs", err)
	}
	return toAttrs(a), nil
}

// Generation returns the live generation of key, for DeleteIfGeneration.
func (b *Bucket) Generation(ctx context.Context, key string) (int64, error) {
	if err := blobs.ValidateKey(key); err != nil {
		return 0, err
	}
	a, err := b.bkt.Object(key).Attrs(ctx)
	if err != nil {
		return 0, mapErr("storage.ObjectHandle.Attrs", err)
	}
	return a.Generation, nil
}

// Delete removes the live object; on a versioned bucket it becomes
// noncurrent until the lifecycle rule deletes it (Purge removes it now).
func (b *Bucket) Delete(ctx context.Context, key string) error {
	if err := b.bkt.Object(key).Delete(ctx); err != nil {
		return mapErr("storage.ObjectHandle.Delete", err)
	}
	return nil
}

// DeleteIfGeneration deletes the live object only if its generation is
// generation: ErrPrecondition if it was replaced, ErrNotFound if absent.
func (b *Bucket) DeleteIfGeneration(ctx context.Context, key string, generation int64) error {
	if err := blobs.ValidateKey(key); err != nil {
		return err
	}
	err := b.bkt.Object(key).If(storage.Conditions{GenerationMatch: generation}).Delete(ctx)
	if err != nil {
		return mapErr("storage.ObjectHandle.Delete", err)
	}
	return nil
}

// PurgeGeneration permanently deletes one generation, live or noncurrent
// (a plaintext upload once it is sealed elsewhere): deleting by generation
// leaves no noncurrent copy. ErrNotFound if that generation is gone.
func (b *Bucket) PurgeGeneration(ctx context.Context, key string, generation int64) error {
	if err := b.bkt.Object(key).Generation(generation).Delete(ctx); err != nil {
		return mapErr("storage.ObjectHandle.Delete", err)
	}
	return nil
}

// Purge permanently deletes key with all its noncurrent versions and
// returns how many generations went; ErrNotFound if there were none.
func (b *Bucket) Purge(ctx context.Context, key string) (int, error) {
	if err := blobs.ValidateKey(key); err != nil {
		return 0, err
	}
	gens, err := b.listGenerations(ctx, key, func(name string) bool { return name == key })
	if err != nil {
		return 0, err
	}
	if len(gens) == 0 {
		return 0, fmt.Errorf("gcsblobs.Purge: %w", blobs.ErrNotFound)
	}
	n, _, err := b.deleteGenerations(ctx, gens)
	if err == nil && n == 0 {
		return 0, fmt.Errorf("gcsblobs.Purge: %w", blobs.ErrNotFound)
	}
	return n, err
}

// ListPage returns up to limit live objects under prefix after after, by
// key. Cloud Storage lists in byte order and StartOffset is inclusive.
func (b *Bucket) ListPage(ctx context.Context, prefix, after string, limit int) ([]blobs.Attrs, error) {
	q := &storage.Query{Prefix: prefix, StartOffset: after, Projection: storage.ProjectionNoACL}
	if err := q.SetAttrSelection([]string{"Name", "Size", "ContentType", "Metadata", "Created"}); err != nil {
		return nil, fmt.Errorf("storage.Query.SetAttrSelection: %w", err)
	}
	var out []blobs.Attrs
	it := b.bkt.Objects(ctx, q)
	it.PageInfo().MaxSize = limit
	for len(out) < limit {
		a, err := it.Next()
		if errors.Is(err, iterator.Done) {
			break
		}
		if err != nil {
			return nil, mapErr("storage.ObjectIterator.Next", err)
		}
		// Keys we never write (another tool's) are not objects of ours.
		if blobs.ValidateKey(a.Name) != nil || !strings.HasPrefix(a.Name, prefix) || a.Name <= after {
			continue
		}
		out = append(out, toAttrs(a))
	}
	// Sorting states the contract rather than trusting every fake to
	// keep Cloud Storage's order.
	slices.SortFunc(out, func(x, y blobs.Attrs) int { return strings.Compare(x.Key, y.Key) })
	return out, nil
}

// ErrorCode maps Cloud Storage's answers to the port's sentinels.
func (b *Bucket) ErrorCode(err error) error { return errorCode(err) }

func errorCode(err error) error {
	if errors.Is(err, storage.ErrObjectNotExist) {
		return blobs.ErrNotFound
	}
	var ge *googleapi.Error
	if errors.As(err, &ge) && ge.Code == http.StatusPreconditionFailed {
		return blobs.ErrPrecondition
	}
	return nil
}

// As sets a **Bucket target (signed URLs, Purge, generations) or a
// *blobs.Generations one.
func (b *Bucket) As(target any) bool {
	switch p := target.(type) {
	case **Bucket:
		*p = b
	case *blobs.Generations:
		*p = b
	default:
		return false
	}
	return true
}

// DeletePrefix permanently deletes every generation, live and noncurrent,
// of every object under prefix, and returns how many live objects went.
// The empty prefix is refused: the whole bucket is never one call away.
func (b *Bucket) DeletePrefix(ctx context.Context, prefix string) (int, error) {
	gens, err := b.listGenerations(ctx, prefix, func(name string) bool { return strings.HasPrefix(name, prefix) })
	if err != nil {
		return 0, err
	}
	_, live, err := b.deleteGenerations(ctx, gens)
	return live, err
}

type generation struct {
	name string
	gen  int64
	live bool
}

func (b *Bucket) listGenerations(ctx context.Context, prefix string, keep func(string) bool) ([]generation, error) {
	q := &storage.Query{Prefix: prefix, Versions: true, Projection: storage.ProjectionNoACL}
	if err := q.SetAttrSelection([]string{"Name", "Generation", "Deleted"}); err != nil {
		return nil, fmt.Errorf("storage.Query.SetAttrSelection: %w", err)
	}
	var out []generation
	it := b.bkt.Objects(ctx, q)
	for {
		a, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return out, nil
		}
		if err != nil {
			return nil, mapErr("storage.ObjectIterator.Next", err)
		}
		if keep(a.Name) {
			// A noncurrent version carries the time it stopped being live.
			out = append(out, generation{name: a.Name, gen: a.Generation, live: a.Deleted.IsZero()})
		}
	}
}

// deleteGenerations deletes each generation by number (which is permanent
// even on a versioned bucket). A generation already gone was deleted by
// someone else and is not counted.
func (b *Bucket) deleteGenerations(ctx context.Context, gens []generation) (total, live int, err error) {
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(deleteParallelism)
	for _, x := range gens {
		g.Go(func() error {
			err := b.bkt.Object(x.name).Generation(x.gen).Delete(gctx)
			if errors.Is(err, storage.ErrObjectNotExist) {
				return nil
			}
			if err != nil {
				return mapErr("storage.ObjectHandle.Delete", err)
			}
			mu.Lock()
			total++
			if x.live {
				live++
			}
			mu.Unlock()
			return nil
		})
	}
	err = g.Wait()
	return total, live, err
}

// Close closes the client if Open made it.
func (b *Bucket) Close() error {
	b.closeOnce.Do(func() {
		if b.ownsClient {
			if err := b.client.Close(); err != nil {
				b.closeErr = fmt.Errorf("storage.Client.Close: %w", err)
			}
		}
	})
	return b.closeErr
}

func toAttrs(a *storage.ObjectAttrs) blobs.Attrs {
	var md map[string]string
	if len(a.Metadata) > 0 {
		md = maps.Clone(a.Metadata)
	}
	return blobs.Attrs{Key: a.Name, Size: a.Size, ContentType: a.ContentType, Metadata: md, Created: a.Created}
}

// mapErr names the failing call and, for the methods reached through As
// (Purge, DeleteIfGeneration, ...), puts the port's sentinel in the chain.
func mapErr(op string, err error) error {
	if code := errorCode(err); code != nil {
		return fmt.Errorf("%s: %w: %w", op, code, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}
