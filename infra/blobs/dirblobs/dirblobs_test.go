package dirblobs_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/lethe-dev/lethe/infra/blobs"
	"github.com/lethe-dev/lethe/infra/blobs/blobtest"
	"github.com/lethe-dev/lethe/infra/blobs/dirblobs"
)

type harness struct{ dir string }

func (h *harness) MakeBucket(context.Context) (blobs.Bucket, error) { return dirblobs.Open(h.dir) }

func (h *harness) Reopen(_ context.Context, b blobs.Bucket) (blobs.Bucket, error) {
	if err := b.Close(); err != nil {
		return blobs.Bucket{}, err
	}
	return dirblobs.Open(h.dir)
}

func (h *harness) Capabilities() blobtest.Capabilities { return blobtest.Capabilities{} }

func (h *harness) Close() {}

func TestConformance(t *testing.T) {
	blobtest.RunConformanceTests(t, func(_ context.Context, t *testing.T) (blobtest.Harness, error) {
		return &harness{dir: filepath.Join(t.TempDir(), "blobs")}, nil
	})
}

// TestAs: a directory has no generations; As reaches the driver itself
// and nothing else.
func TestAs(t *testing.T) {
	b, err := dirblobs.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	var d *dirblobs.Driver
	if !b.As(&d) || d == nil {
		t.Error("As(**dirblobs.Driver) = false")
	}
	var g blobs.Generations
	if b.As(&g) {
		t.Error("a directory claims generations")
	}
	var other *int
	if b.As(&other) {
		t.Error("As of a foreign type = true")
	}
	if _, _, err := b.ReadGeneration(t.Context(), "users/u1/a", 1); !errors.Is(err, blobs.ErrUnsupported) {
		t.Errorf("ReadGeneration = %v, want ErrUnsupported", err)
	}
	if err := b.PurgeGeneration(t.Context(), "users/u1/a", 1); !errors.Is(err, blobs.ErrUnsupported) {
		t.Errorf("PurgeGeneration = %v, want ErrUnsupported", err)
	}
}
