package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/lethe-dev/lethe/infra/keys"
	"github.com/lethe-dev/lethe/infra/keys/filekek"
	"github.com/lethe-dev/lethe/infra/keys/secrets"
)

const keysUsage = "want: keys rewrap [--to gcpkms://...|new-file]"

// cmdKeys rotates the KEK: `lethe keys rewrap` wraps every user's keys
// and the identity secrets again. With Cloud KMS and no --to, the key's
// current primary version wraps them (after `gcloud kms keys versions
// create --primary`), so older versions can be disabled; --to moves to
// another KMS key. With a key file, --to new-file makes a new key file,
// re-wraps under it and puts it in place (stop lethe first: a running
// process holds the old key). Data keys do not change, so nothing sealed
// is rewritten; a run that stops half way is resumed by running again.
func cmdKeys(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	if len(args) < 1 || args[0] != "rewrap" {
		return usageError{errors.New(keysUsage)}
	}
	fs := newFlagSet("keys rewrap", stderr)
	to := fs.String("to", "", "the KEK to wrap under: gcpkms://... (another key), or new-file (a key file install); default the current KEK's primary version")
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 {
		return usageError{errors.New(keysUsage)}
	}
	switch {
	case cfg.KEK == "file" && *to != "new-file":
		return usageError{errors.New("LETHE_KEK=file: a key file has no versions; rotate it with --to new-file (stop lethe first)")}
	case cfg.KEK != "file" && *to == "new-file":
		return usageError{errors.New("--to new-file rotates a key file (LETHE_KEK=file)")}
	case *to != "" && *to != "new-file" && !strings.HasPrefix(*to, "gcpkms://") && !strings.HasPrefix(*to, "gcp-kms://"):
		return usageError{errors.New(keysUsage)}
	}
	paths := dataPaths{cfg.DataDir}
	store, err := openDocs(ctx, cfg, paths)
	if err != nil {
		return err
	}
	defer store.Close()
	from, err := openKEK(ctx, cfg, paths)
	if err != nil {
		return err
	}
	if c, ok := from.(io.Closer); ok {
		defer c.Close()
	}
	next := from
	nextFile := filepath.Join(filepath.Dir(paths.kek()), "kek-next.json")
	switch {
	case *to == "new-file":
		// Made once and reused by a resumed run.
		if next, err = filekek.Open(nextFile); err != nil {
			return fmt.Errorf("filekek.Open: %w", err)
		}
	case *to != "":
		nc := cfg
		nc.KEK = *to
		if next, err = openKEK(ctx, nc, paths); err != nil {
			return err
		}
		if c, ok := next.(io.Closer); ok {
			defer c.Close()
		}
	}
	n, err := keys.RewrapKeysets(ctx, store, from, next, func(done int) {
		if done%1000 == 0 {
			fmt.Fprintf(stdout, "keys rewrap: %d user keysets\n", done)
		}
	})
	if err != nil {
		return fmt.Errorf("keys.RewrapKeysets (after %d; run again to resume): %w", n, err)
	}
	ns, err := secrets.Rewrap(ctx, store, from, next)
	if err != nil {
		return fmt.Errorf("secrets.Rewrap (run again to resume): %w", err)
	}
	fmt.Fprintf(stdout, "keys rewrap: %d user keysets and %d identity secrets wrapped again\n", n, ns)
	switch {
	case *to == "new-file":
		if err := os.Rename(nextFile, paths.kek()); err != nil {
			return fmt.Errorf("os.Rename: %w", err)
		}
		fmt.Fprintf(stdout, "keys rewrap: %s replaced by the new key; the old one is gone\n", paths.kek())
	case *to != "":
		fmt.Fprintf(stdout, "keys rewrap: now set LETHE_KEK=%s on every service, then disable the old key\n", *to)
	default:
		fmt.Fprintln(stdout, "keys rewrap: every key is wrapped by the primary version; older versions can be disabled")
	}
	return nil
}
