package firestoredocs_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"testing"

	"github.com/lethe-dev/lethe/infra/docs"
	"github.com/lethe-dev/lethe/infra/docs/docstest"
	"github.com/lethe-dev/lethe/infra/docs/firestoredocs"
	"github.com/lethe-dev/lethe/internal/emulators"
)

// emulatorHost returns the Firestore emulator's address (see
// emulators.Require).
func emulatorHost(tb testing.TB) string {
	tb.Helper()
	return emulators.Require(tb, emulators.Firestore)
}

// projectFor names a test's own emulator project (the emulator keeps each
// project's data apart): a valid project id derived from the test's name.
func projectFor(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "lethe-test-" + hex.EncodeToString(sum[:8])
}

// resetProject deletes every document of project through the emulator's
// reset endpoint.
func resetProject(ctx context.Context, host, project string) error {
	url := fmt.Sprintf("http://%s/emulator/v1/projects/%s/databases/(default)/documents", host, project)
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, url, nil)
	if err != nil {
		return fmt.Errorf("http.NewRequest: %w", err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("emulator reset: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("emulator reset: %s", resp.Status)
	}
	return nil
}

type harness struct {
	cfg firestoredocs.Config
}

func newHarness(ctx context.Context, t *testing.T, host string) (*harness, error) {
	cfg := firestoredocs.Config{ProjectID: projectFor(t.Name()), EmulatorHost: host}
	// Empty at first, whatever an earlier run left.
	if err := resetProject(ctx, host, cfg.ProjectID); err != nil {
		return nil, err
	}
	return &harness{cfg: cfg}, nil
}

func (h *harness) MakeStore(ctx context.Context) (docs.Store, error) {
	return firestoredocs.Open(ctx, h.cfg)
}

// Reopen closes the client and connects a new one to the same project: the
// data lives in the emulator.
func (h *harness) Reopen(ctx context.Context, s docs.Store) (docs.Store, error) {
	if err := s.Close(); err != nil {
		return docs.Store{}, err
	}
	return firestoredocs.Open(ctx, h.cfg)
}

func (h *harness) Capabilities() docstest.Capabilities {
	return docstest.Capabilities{MaxDataSize: docs.MaxDataSize}
}

func (h *harness) Close() {
	_ = resetProject(context.Background(), h.cfg.EmulatorHost, h.cfg.ProjectID)
}

func TestConformance(t *testing.T) {
	host := emulatorHost(t)
	docstest.RunConformanceTests(t, func(ctx context.Context, t *testing.T) (docstest.Harness, error) {
		return newHarness(ctx, t, host)
	})
}
