package sqlitedocs_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/docs/docstest"
	"github.com/lethe-dev/lethe/infra/docs/sqlitedocs"
)

type harness struct{ path string }

func (h *harness) MakeStore(ctx context.Context) (docs.Store, error) {
	return sqlitedocs.Open(ctx, h.path)
}

func (h *harness) Reopen(ctx context.Context, s docs.Store) (docs.Store, error) {
	if err := s.Close(); err != nil {
		return docs.Store{}, err
	}
	return sqlitedocs.Open(ctx, h.path)
}

func (h *harness) Capabilities() docstest.Capabilities {
	return docstest.Capabilities{MaxDataSize: docs.MaxDataSize}
}

func (h *harness) Close() {}

func TestConformance(t *testing.T) {
	docstest.RunConformanceTests(t, func(_ context.Context, t *testing.T) (docstest.Harness, error) {
		return &harness{path: filepath.Join(t.TempDir(), "docs.db")}, nil
	})
}
