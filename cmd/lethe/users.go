package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
)

// cmdUsers is the operator's per-user lifecycle: `lethe users erase UID`
// and `lethe users export UID`. They run the same code as the HTTP API,
// in this process, and print progress as they go.
func cmdUsers(ctx context.Context, cfg Config, logger *slog.Logger, args []string, stdout, stderr io.Writer) error {
	if len(args) < 1 {
		return usageError{errors.New("want: users erase UID | users export UID")}
	}
	switch args[0] {
	case "export":
		return cmdUsersExport(ctx, cfg, logger, args[1:], stdout, stderr)
	default:
		return usageError{errors.New("want: users erase UID | users export UID")}
	}
}
