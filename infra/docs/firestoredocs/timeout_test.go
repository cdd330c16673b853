package firestoredocs

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/infra/docs"
)

// TestUnreachableBackendFailsWithinTheCallTimeout: the client retries an
// unreachable server until its context ends, so a caller without a
// deadline (an HTTP request, a handler) would wait forever; every call
// must instead fail once CallTimeout has passed, as a retryable error.
func TestUnreachableBackendFailsWithinTheCallTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close() // nothing listens: every connection is refused
	s, err := Open(context.Background(), Config{ProjectID: "unreachable", EmulatorHost: dead, CallTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	user := "0123456789abcdef0123456789abcdef"
	key := docs.Key{User: user, Collection: "chunks", ID: "c1"}
	doc := docs.Doc{Key: key, Data: []byte(`{}`)}
	for _, tc := range []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"Get", func(ctx context.Context) error { _, err := s.Get(ctx, key); return err }},
		{"Put", func(ctx context.Context) error { return s.Put(ctx, doc) }},
		{"Create", func(ctx context.Context) error { return s.Create(ctx, doc) }},
		{"Update", func(ctx context.Context) error {
			return s.Update(ctx, key, func(*docs.Doc) (*docs.Doc, error) { return &doc, nil })
		}},
		{"Delete", func(ctx context.Context) error { return s.Delete(ctx, key) }},
		{"DeleteMany", func(ctx context.Context) error { _, err := s.DeleteMany(ctx, []docs.Key{key}); return err }},
		{"Query", func(ctx context.Context) error {
			_, err := s.Query(ctx, docs.Query{User: user, Collection: "chunks"})
			return err
		}},
		{"DeleteUser", func(ctx context.Context) error { _, err := s.DeleteUser(ctx, user); return err }},
		{"CountUser", func(ctx context.Context) error { _, err := s.CountUser(ctx, user); return err }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			done := make(chan error, 1)
			go func() { done <- tc.call(context.Background()) }()
			select {
			case err := <-done:
				if err == nil {
					t.Fatal("a call to an unreachable server succeeded")
				}
				if errors.Is(err, docs.ErrNotFound) || errors.Is(err, docs.ErrInvalid) || errors.Is(err, docs.ErrAlreadyExists) {
					t.Fatalf("unreachable server reported as %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the call is still waiting on an unreachable server: no bound")
			}
		})
	}
}
