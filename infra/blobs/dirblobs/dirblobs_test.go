package dirblobs_test

import (
	"context"
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
