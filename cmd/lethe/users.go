package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"sort"
	"time"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/app/forget"
)

// uidRE is what the CLI accepts as a uid (Firebase uids are at most 128
// characters).
var uidRE = regexp.MustCompile(`^[A-Za-z0-9_.@:+-]{1,128}$`)

const usersUsage = "want: users erase UID | users export UID [--out FILE] | users revoke UID"

// cmdUsers is the operator's per-user lifecycle: `lethe users erase UID`
// and `lethe users export UID`. They run the same code as the HTTP API,
// in this process, and print progress as they go.
func cmdUsers(ctx context.Context, cfg Config, logger *slog.Logger, args []string, stdout, stderr io.Writer) error {
	if len(args) < 1 {
		return usageError{errors.New(usersUsage)}
	}
	switch args[0] {
	case "export":
		return cmdUsersExport(ctx, cfg, logger, args[1:], stdout, stderr)
	case "erase":
		return cmdUsersErase(ctx, cfg, logger, args[1:], stdout)
	case "revoke":
		if len(args) != 2 || !uidRE.MatchString(args[1]) {
			return usageError{errors.New("want: users revoke UID (1-128 of [A-Za-z0-9_.@:+-])")}
		}
		a, err := openApp(ctx, cfg, logger, overrides{})
		if err != nil {
			return err
		}
		defer a.close()
		return revokeSessions(ctx, a, args[1], stdout)
	default:
		return usageError{errors.New(usersUsage)}
	}
}

// cmdUsersErase erases one user everywhere, step by step, and prints the
// receipt. The erasure is also announced on the lifecycle topic, so a
// worker finishes it should this command be stopped.
func cmdUsersErase(ctx context.Context, cfg Config, logger *slog.Logger, args []string, stdout io.Writer) error {
	if len(args) != 1 || !uidRE.MatchString(args[0]) {
		return usageError{errors.New("want: users erase UID (1-128 of [A-Za-z0-9_.@:+-])")}
	}
	uid := args[0]
	a, err := openApp(ctx, cfg, logger, overrides{})
	if err != nil {
		return err
	}
	defer a.close()
	saga := a.erasures(a.bus, nil)
	saga.Progress = func(e forget.Erasure, step string) {
		fmt.Fprintf(stdout, "erasure %s: %-9s done%s\n", e.ID, step, stepCounts(e, step))
	}
	user := a.pseudo.User(uid)
	e, err := saga.Request(ctx, user, audit.ActorOperator)
	if err != nil {
		return fmt.Errorf("forget.Request: %w", err)
	}
	fmt.Fprintf(stdout, "erasure %s: requested (tombstone written; the user's tokens now get 410)\n", e.ID)
	if a.sessions != nil {
		if err := a.sessions.RevokeSessions(ctx, uid); err != nil {
			fmt.Fprintf(stdout, "erasure %s: could not revoke sessions (%v); the tombstone refuses their tokens\n", e.ID, err)
		}
	}
	for round := 0; ; round++ {
		e, err = saga.Run(ctx, e.ID)
		if err == nil || round > forget.MaxVerifyRounds {
			break
		}
		fmt.Fprintf(stdout, "erasure %s: %v; again in 1s\n", e.ID, err)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
	if err != nil {
		return fmt.Errorf("erasure %s: %w", e.ID, err)
	}
	printReceipt(stdout, e)
	if e.State != forget.StateDone {
		return fmt.Errorf("erasure %s ended %s: %s", e.ID, e.State, e.Error)
	}
	return nil
}

// stepCounts shows what the inventory found and the verifier left.
func stepCounts(e forget.Erasure, step string) string {
	if step != forget.StepInventory && step != forget.StepVerify {
		return ""
	}
	var out string
	for _, store := range sortedStores(e) {
		c := e.Receipt.Stores[store]
		n := c.Found
		if step == forget.StepVerify {
			n = c.Remaining
		}
		out += fmt.Sprintf(" %s=%d", store, n)
	}
	return ":" + out
}

func sortedStores(e forget.Erasure) []string {
	var stores []string
	for s := range e.Receipt.Stores {
		stores = append(stores, s)
	}
	sort.Strings(stores)
	return stores
}

func printReceipt(w io.Writer, e forget.Erasure) {
	fmt.Fprintf(w, "\nreceipt %s (%s): started %s, finished %s\n", e.ID, e.State,
		e.Receipt.StartedAt.Format(time.RFC3339), e.Receipt.FinishedAt.Format(time.RFC3339))
	fmt.Fprintf(w, "  %-10s %8s %8s %10s\n", "store", "found", "deleted", "remaining")
	for _, store := range sortedStores(e) {
		c := e.Receipt.Stores[store]
		fmt.Fprintf(w, "  %-10s %8d %8d %10d\n", store, c.Found, c.Deleted, c.Remaining)
	}
}

// revokeSessions ends a user's sessions at the identity provider (Firebase
// refresh tokens: the app must sign in again once its ID token, at most
// an hour old, expires) and records it in the audit trail.
func revokeSessions(ctx context.Context, a *app, uid string, stdout io.Writer) error {
	if a.sessions == nil {
		return usageError{errors.New("LETHE_AUTH=local has no sessions to revoke: its tokens live until they expire (lethe token --ttl); to cut every one at once, move LETHE_DATA_DIR/auth/issuer.pem away and restart")}
	}
	if err := a.sessions.RevokeSessions(ctx, uid); err != nil {
		return fmt.Errorf("sessions.RevokeSessions: %w", err)
	}
	user := a.pseudo.User(uid)
	if _, err := a.audit.Append(ctx, audit.Entry{Actor: audit.ActorOperator, Action: audit.ActionSessionsRevoked, Subject: user}); err != nil {
		return fmt.Errorf("audit.Append: %w", err)
	}
	fmt.Fprintf(stdout, "sessions of user %s revoked: refresh tokens refused from now; ID tokens already issued expire within the hour\n", user)
	return nil
}
