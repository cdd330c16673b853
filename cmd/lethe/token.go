package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/lethe-dev/lethe/infra/auth"
	"github.com/lethe-dev/lethe/infra/auth/localissuer"
)

// cmdToken prints a token of the local issuer, and only the token, so that
// scripts can use $(lethe token --uid NAME).
func cmdToken(ctx context.Context, cfg Config, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("token", stderr)
	uid := fs.String("uid", "", "the user id (the token's sub)")
	ttl := fs.Duration("ttl", time.Hour, "lifetime of the token (at most 24h)")
	admin := fs.Bool("admin", false, "give the token the admin role (development only)")
	factor := fs.String("second-factor", "", `claim a sign-in with this second factor ("totp", "phone"), as Firebase does; admin routes need one with LETHE_AUTH=firebase`)
	if err := fs.Parse(args); err != nil {
		return usageError{err}
	}
	if *uid == "" || len(*uid) > 128 {
		return usageError{errors.New("--uid is required (1 to 128 characters)")}
	}
	if *ttl <= 0 || *ttl > 24*time.Hour {
		return usageError{errors.New("--ttl must be between 1s and 24h")}
	}
	if len(*factor) > 64 || strings.Trim(*factor, "abcdefghijklmnopqrstuvwxyz_") != "" {
		return usageError{errors.New("--second-factor must be a factor name such as totp or phone")}
	}
	if cfg.Env == envProduction {
		return usageError{errors.New("the local issuer is refused when LETHE_ENV=production; users sign in with Firebase")}
	}
	iss, err := localissuer.Open(dataPaths{cfg.DataDir}.issuer())
	if err != nil {
		return fmt.Errorf("localissuer.Open: %w", err)
	}
	var roles []string
	if *admin {
		roles = []string{auth.RoleAdmin}
	}
	tok, err := iss.MintWith(*uid, localissuer.MintOptions{Roles: roles, SecondFactor: *factor}, *ttl)
	if err != nil {
		return fmt.Errorf("localissuer.Mint: %w", err)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
