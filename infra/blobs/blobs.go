// Package blobs is the blob port: immutable objects (sealed audio, export
// archives). Production adapter: Cloud Storage; embedded: a directory.
//
// Bucket is the caller-facing type over a Driver, in the manner of
// gocloud.dev's blob.Bucket over driver.Bucket: the key rules, the
// error mapping and paging live here once; adapters (dirblobs, gcsblobs)
// only translate, and receive only keys and prefixes Bucket validated.
package blobs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

var (
	ErrNotFound = errors.New("blobs: not found")
	// ErrPrecondition: a create-only write found an existing object.
	ErrPrecondition = errors.New("blobs: precondition failed")
	// ErrInvalidKey: empty, absolute, "..", or otherwise escaping keys.
	ErrInvalidKey = errors.New("blobs: invalid key")
	// ErrUnsupported: the adapter lacks the capability (generations on a
	// directory, say).
	ErrUnsupported = errors.New("blobs: not supported by this adapter")
	// ErrTooMany: List found more than MaxList objects; page with ListPage.
	ErrTooMany = errors.New("blobs: too many objects for List")
)

// The key rules. Cloud Storage itself accepts any UTF-8 up to 1024 bytes;
// these are narrower so a key is also a safe relative path (dirblobs), and
// a key production accepts is one embedded mode accepts.
const (
	MaxKey     = 1024 // bytes, as Cloud Storage
	MaxSegment = 254  // bytes: NAME_MAX 255 less dirblobs' one-byte suffix
	// MaxPage bounds one ListPage.
	MaxPage = 1000
	// MaxList bounds List, which pages internally: a caller that may see
	// more uses ListPage.
	MaxList = 100_000
	// MaxMetadata bounds custom metadata (keys and values), as Cloud
	// Storage's 8 KiB; MaxContentType a content type.
	MaxMetadata    = 8 << 10
	MaxContentType = 256
	// DefaultContentType is stored when WriteOptions has none.
	DefaultContentType = "application/octet-stream"
)

// WriteOptions for Write.
type WriteOptions struct {
	ContentType string
	// CreateOnly fails with ErrPrecondition if the object exists.
	CreateOnly bool
	Metadata   map[string]string
}

// Attrs describes a stored object.
type Attrs struct {
	Key         string
	Size        int64
	ContentType string
	Metadata    map[string]string
	Created     time.Time
}

// Driver is what an adapter implements. Every key and prefix it receives
// has passed ValidateKey or ValidatePrefix; Bucket maps its errors with
// ErrorCode and wraps them with the operation's name.
type Driver interface {
	// Write stores r under key atomically: readers see the old object or
	// the whole new one, never a part.
	Write(ctx context.Context, key string, r io.Reader, opts WriteOptions) (Attrs, error)
	Read(ctx context.Context, key string) (io.ReadCloser, Attrs, error)
	Attrs(ctx context.Context, key string) (Attrs, error)
	Delete(ctx context.Context, key string) error
	// ListPage returns up to limit objects whose key starts with prefix
	// and sorts after after ("" for the first page), by key.
	ListPage(ctx context.Context, prefix, after string, limit int) ([]Attrs, error)
	// DeletePrefix deletes every object under prefix (never ""); returns
	// the count.
	DeletePrefix(ctx context.Context, prefix string) (int, error)
	// ErrorCode maps an error of the driver to ErrNotFound,
	// ErrPrecondition or ErrInvalidKey, or nil when none applies.
	ErrorCode(err error) error
	// As sets target to a driver-specific type or capability, as
	// Bucket.As documents.
	As(target any) bool
	Close() error
}

// Generations is the capability of a store that versions objects (Cloud
// Storage): notifications name one generation, and a plaintext upload is
// purged by generation so no noncurrent copy survives.
type Generations interface {
	// ReadGeneration reads one generation, live or noncurrent.
	ReadGeneration(ctx context.Context, key string, generation int64) (io.ReadCloser, Attrs, error)
	// PurgeGeneration deletes one generation for good.
	PurgeGeneration(ctx context.Context, key string, generation int64) error
}

// Bucket is the blob port. Keys are slash-separated relative paths
// ([A-Za-z0-9_.#:=-] segments, no "." or ".."). The zero Bucket is not
// usable: adapters' Open functions return one.
type Bucket struct {
	d Driver
}

// New returns the Bucket over d.
func New(d Driver) Bucket { return Bucket{d: d} }

// Driver returns the driver, for decorators (fault injection in tests):
// wrap it and pass the wrapper to New.
func (b Bucket) Driver() Driver { return b.d }

func (b Bucket) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if code := b.d.ErrorCode(err); code != nil && !errors.Is(err, code) {
		return fmt.Errorf("blobs.%s: %w: %w", op, code, err)
	}
	return fmt.Errorf("blobs.%s: %w", op, err)
}

// Write stores r under key atomically: readers see the old object or the
// whole new one, never a part.
func (b Bucket) Write(ctx context.Context, key string, r io.Reader, opts WriteOptions) (Attrs, error) {
	if err := ValidateKey(key); err != nil {
		return Attrs{}, err
	}
	if err := validateWriteOptions(opts); err != nil {
		return Attrs{}, err
	}
	if opts.ContentType == "" {
		opts.ContentType = DefaultContentType
	}
	if err := ctx.Err(); err != nil {
		return Attrs{}, fmt.Errorf("blobs.Write: %w", err)
	}
	a, err := b.d.Write(ctx, key, r, opts)
	return a, b.wrap("Write", err)
}

// Read returns ErrNotFound when absent.
func (b Bucket) Read(ctx context.Context, key string) (io.ReadCloser, Attrs, error) {
	if err := ValidateKey(key); err != nil {
		return nil, Attrs{}, err
	}
	if err := ctx.Err(); err != nil {
		return nil, Attrs{}, fmt.Errorf("blobs.Read: %w", err)
	}
	r, a, err := b.d.Read(ctx, key)
	if err != nil {
		return nil, Attrs{}, b.wrap("Read", err)
	}
	return r, a, nil
}

// Attrs returns ErrNotFound when absent.
func (b Bucket) Attrs(ctx context.Context, key string) (Attrs, error) {
	if err := ValidateKey(key); err != nil {
		return Attrs{}, err
	}
	if err := ctx.Err(); err != nil {
		return Attrs{}, fmt.Errorf("blobs.Attrs: %w", err)
	}
	a, err := b.d.Attrs(ctx, key)
	return a, b.wrap("Attrs", err)
}

// Delete returns ErrNotFound when absent.
func (b Bucket) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("blobs.Delete: %w", err)
	}
	return b.wrap("Delete", b.d.Delete(ctx, key))
}

// ListPage returns up to limit (1..MaxPage) objects whose key starts with
// prefix, by key, from cursor ("" for the first page); next is "" after
// the last page. Prefixes are plain string prefixes, as in Cloud Storage.
func (b Bucket) ListPage(ctx context.Context, prefix, cursor string, limit int) ([]Attrs, string, error) {
	if err := ValidatePrefix(prefix); err != nil {
		return nil, "", err
	}
	if limit < 1 || limit > MaxPage {
		return nil, "", fmt.Errorf("blobs.ListPage: limit %d, want 1..%d", limit, MaxPage)
	}
	// The cursor is the last key of the previous page: a key under prefix.
	if cursor != "" && (ValidateKey(cursor) != nil || !strings.HasPrefix(cursor, prefix)) {
		return nil, "", fmt.Errorf("%w: cursor", ErrInvalidKey)
	}
	if err := ctx.Err(); err != nil {
		return nil, "", fmt.Errorf("blobs.ListPage: %w", err)
	}
	// One more than asked says whether another page follows.
	page, err := b.d.ListPage(ctx, prefix, cursor, limit+1)
	if err != nil {
		return nil, "", b.wrap("ListPage", err)
	}
	if len(page) <= limit {
		return page, "", nil
	}
	page = page[:limit]
	return page, page[limit-1].Key, nil
}

// List returns the objects whose key starts with prefix, by key, paging
// internally; more than MaxList is ErrTooMany (use ListPage).
func (b Bucket) List(ctx context.Context, prefix string) ([]Attrs, error) {
	var out []Attrs
	cursor := ""
	for {
		page, next, err := b.ListPage(ctx, prefix, cursor, MaxPage)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if len(out) > MaxList {
			return nil, fmt.Errorf("blobs.List(%d+ objects): %w", MaxList, ErrTooMany)
		}
		if next == "" {
			return out, nil
		}
		cursor = next
	}
}

// DeletePrefix deletes every object under prefix and returns the count.
// The empty prefix (the whole bucket) is refused with ErrInvalidKey: one
// missing variable must not wipe every user.
func (b Bucket) DeletePrefix(ctx context.Context, prefix string) (int, error) {
	if prefix == "" {
		return 0, fmt.Errorf("%w: empty prefix", ErrInvalidKey)
	}
	if err := ValidatePrefix(prefix); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("blobs.DeletePrefix: %w", err)
	}
	n, err := b.d.DeletePrefix(ctx, prefix)
	return n, b.wrap("DeletePrefix", err)
}

// ReadGeneration reads one generation of key (Generations);
// ErrUnsupported if the adapter does not version objects.
func (b Bucket) ReadGeneration(ctx context.Context, key string, generation int64) (io.ReadCloser, Attrs, error) {
	var g Generations
	if !b.d.As(&g) {
		return nil, Attrs{}, fmt.Errorf("blobs.ReadGeneration: %w", ErrUnsupported)
	}
	if err := ValidateKey(key); err != nil {
		return nil, Attrs{}, err
	}
	if generation <= 0 {
		return nil, Attrs{}, errors.New("blobs.ReadGeneration: generation must be positive")
	}
	r, a, err := g.ReadGeneration(ctx, key, generation)
	if err != nil {
		return nil, Attrs{}, b.wrap("ReadGeneration", err)
	}
	return r, a, nil
}

// PurgeGeneration deletes one generation of key for good (Generations);
// ErrNotFound if it is gone, ErrUnsupported without versioning.
func (b Bucket) PurgeGeneration(ctx context.Context, key string, generation int64) error {
	var g Generations
	if !b.d.As(&g) {
		return fmt.Errorf("blobs.PurgeGeneration: %w", ErrUnsupported)
	}
	if err := ValidateKey(key); err != nil {
		return err
	}
	if generation <= 0 {
		return errors.New("blobs.PurgeGeneration: generation must be positive")
	}
	return b.wrap("PurgeGeneration", g.PurgeGeneration(ctx, key, generation))
}

// As sets target, a pointer to a driver-specific type or to a capability
// interface (Generations, say), and reports whether the driver has it.
func (b Bucket) As(target any) bool { return b.d.As(target) }

// Close releases the driver.
func (b Bucket) Close() error { return b.d.Close() }

// validateWriteOptions bounds what Cloud Storage would refuse anyway, so
// the error is early and the same on every adapter.
func validateWriteOptions(o WriteOptions) error {
	if len(o.ContentType) > MaxContentType || !utf8.ValidString(o.ContentType) || strings.ContainsAny(o.ContentType, "\r\n") {
		return errors.New("blobs.Write: invalid content type")
	}
	total := 0
	for k, v := range o.Metadata {
		if k == "" || !utf8.ValidString(k) || !utf8.ValidString(v) || strings.ContainsAny(k, "\r\n") {
			return errors.New("blobs.Write: invalid metadata")
		}
		total += len(k) + len(v)
	}
	if total > MaxMetadata {
		return fmt.Errorf("blobs.Write: metadata larger than %d bytes", MaxMetadata)
	}
	return nil
}

// SegmentChar reports whether c may appear in a key segment.
func SegmentChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	case c == '_', c == '.', c == '#', c == ':', c == '=', c == '-':
		return true
	}
	return false
}

// ValidSegment reports whether s is one whole key segment.
func ValidSegment(s string) bool {
	if s == "" || len(s) > MaxSegment || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !SegmentChar(s[i]) {
			return false
		}
	}
	return true
}

// ValidateKey accepts slash-separated segments of [A-Za-z0-9_.#:=-], none
// empty, "." or "..": nothing absolute, nothing that climbs, no backslash
// or NUL. So a valid key names a path under a root by construction.
func ValidateKey(key string) error {
	if key == "" || len(key) > MaxKey {
		return fmt.Errorf("%w: length", ErrInvalidKey)
	}
	for seg := range strings.SplitSeq(key, "/") {
		if !ValidSegment(seg) {
			return fmt.Errorf("%w: segment", ErrInvalidKey)
		}
	}
	return nil
}

// ValidatePrefix accepts "" or complete valid segments followed by a
// partial segment (possibly empty) of key characters: every prefix of a
// valid key, and nothing that could not start one.
func ValidatePrefix(prefix string) error {
	if len(prefix) > MaxKey {
		return fmt.Errorf("%w: prefix length", ErrInvalidKey)
	}
	segs := strings.Split(prefix, "/")
	for _, s := range segs[:len(segs)-1] {
		if !ValidSegment(s) {
			return fmt.Errorf("%w: prefix segment", ErrInvalidKey)
		}
	}
	partial := segs[len(segs)-1]
	if len(partial) > MaxSegment {
		return fmt.Errorf("%w: prefix segment", ErrInvalidKey)
	}
	for i := 0; i < len(partial); i++ {
		if !SegmentChar(partial[i]) {
			return fmt.Errorf("%w: prefix segment", ErrInvalidKey)
		}
	}
	return nil
}
