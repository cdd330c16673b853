// Package blobs is the blob port: immutable objects (sealed audio, export
// archives). Production adapter: Cloud Storage; embedded: a directory.
package blobs

import (
	"context"
	"errors"
	"io"
	"time"
)

var (
	ErrNotFound = errors.New("blobs: not found")
	// ErrPrecondition: a create-only write found an existing object.
	ErrPrecondition = errors.New("blobs: precondition failed")
	// ErrInvalidKey: empty, absolute, "..", or otherwise escaping keys.
	ErrInvalidKey = errors.New("blobs: invalid key")
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

// Bucket is the blob port. Keys are slash-separated relative paths
// ([A-Za-z0-9_.#:=-] segments, no "..").
type Bucket interface {
	// Write stores r under key atomically: readers see the old object or
	// the whole new one, never a part.
	Write(ctx context.Context, key string, r io.Reader, opts WriteOptions) (Attrs, error)
	// Read returns ErrNotFound when absent.
	Read(ctx context.Context, key string) (io.ReadCloser, Attrs, error)
	Attrs(ctx context.Context, key string) (Attrs, error)
	// Delete returns ErrNotFound when absent.
	Delete(ctx context.Context, key string) error
	// List returns the objects whose key starts with prefix, by key.
	List(ctx context.Context, prefix string) ([]Attrs, error)
	// DeletePrefix deletes every object under prefix; returns the count.
	DeletePrefix(ctx context.Context, prefix string) (int, error)
	Close() error
}
