package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/lethe-dev/lethe/app/audit"
)

// usageCommands parses `lethe help` into its command lines: "users erase
// UID", "dlq replay TOPIC --id ID|--all", ...
func usageCommands(t *testing.T) []string {
	t.Helper()
	var out bytes.Buffer
	if code := realMain([]string{"help"}, &out, &out); code != 0 {
		t.Fatalf("lethe help: %d", code)
	}
	var cmds []string
	for _, line := range strings.Split(out.String(), "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "lethe "); ok {
			// The description follows after two spaces or more.
			cmds = append(cmds, regexp.MustCompile(`\s{2,}`).Split(rest, 2)[0])
		}
	}
	if len(cmds) < 10 {
		t.Fatalf("lethe help lists %d commands", len(cmds))
	}
	return cmds
}

var (
	// codeRE finds fenced blocks and code spans: commands live there,
	// prose names lethe freely.
	codeRE       = regexp.MustCompile("(?s)```[a-z]*\n(.*?)```|`([^`\n]+)`")
	runbookCmdRE = regexp.MustCompile(`(?m)(?:^|[\s$(])(?:bin/)?lethe ([a-z][a-z-]*)((?: [^\s|;&)]+)*)`)
	flagRE       = regexp.MustCompile(`--[a-z][a-z-]*`)
	envRE        = regexp.MustCompile(`\b(?:LETHE|INF)_[A-Z0-9_]+\b`)
)

// TestRunbookCommandsExist: every `lethe ...` command in docs/runbook.md
// (and the SECURITY.md it points to) is one `lethe help` lists, with
// flags it lists, and every LETHE_* variable is one the binary reads.
func TestRunbookCommandsExist(t *testing.T) {
	usage := usageCommands(t)
	var help bytes.Buffer
	realMain([]string{"help"}, &help, &help)
	for _, doc := range []string{"../../docs/runbook.md", "../../docs/SECURITY.md"} {
		b, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		var code strings.Builder
		for _, c := range codeRE.FindAllStringSubmatch(string(b), -1) {
			code.WriteString(c[1] + c[2] + "\n")
		}
		found := 0
		for _, m := range runbookCmdRE.FindAllStringSubmatch(code.String(), -1) {
			cmd, args := m[1], strings.Fields(m[2])
			// The usage lines of this command; a subcommand must match
			// the usage line's second word when that is a literal word.
			var lines []string
			for _, u := range usage {
				f := strings.Fields(u)
				if f[0] != cmd {
					continue
				}
				if len(f) > 1 && regexp.MustCompile(`^[a-z][a-z-]*$`).MatchString(f[1]) {
					if len(args) == 0 || args[0] != f[1] {
						continue
					}
				}
				lines = append(lines, u)
			}
			if len(lines) == 0 {
				t.Errorf("%s: `lethe %s %s` is not a command of lethe help", doc, cmd, strings.Join(args, " "))
				continue
			}
			for _, fl := range flagRE.FindAllString(strings.Join(args, " "), -1) {
				if !strings.Contains(strings.Join(lines, " "), fl) {
					t.Errorf("%s: `lethe %s %s`: lethe help lists no flag %s for it", doc, cmd, strings.Join(args, " "), fl)
				}
			}
			found++
		}
		if doc == "../../docs/runbook.md" && found < 10 {
			t.Fatalf("%s: found only %d lethe commands; the pattern no longer matches the runbook?", doc, found)
		}
		for _, v := range envRE.FindAllString(string(b), -1) {
			if !strings.Contains(help.String(), v) {
				t.Errorf("%s names %s, which lethe does not read", doc, v)
			}
		}
	}
}

type recordingRevoker struct{ uids []string }

func (r *recordingRevoker) RevokeSessions(_ context.Context, uid string) error {
	r.uids = append(r.uids, uid)
	return nil
}

// TestUsersRevokeSessions: the runbook's revocation reaches the identity
// provider and the audit trail (pseudonym, never the uid); with local
// tokens it says there is nothing to revoke.
func TestUsersRevokeSessions(t *testing.T) {
	ctx := context.Background()
	a, err := openApp(ctx, testConfig(t), testLogger(t), overrides{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.close()
	var out bytes.Buffer
	var ue usageError
	if err := revokeSessions(ctx, a, "carol-uid", &out); !errors.As(err, &ue) {
		t.Fatalf("local tokens: %v, want a usage error", err)
	}
	rev := &recordingRevoker{}
	a.sessions = rev
	if err := revokeSessions(ctx, a, "carol-uid", &out); err != nil {
		t.Fatal(err)
	}
	if len(rev.uids) != 1 || rev.uids[0] != "carol-uid" {
		t.Fatalf("revoked %v", rev.uids)
	}
	entries, _, err := a.audit.List(ctx, audit.Filter{Subject: a.pseudo.User("carol-uid")})
	if err != nil || len(entries) != 1 || entries[0].Action != audit.ActionSessionsRevoked {
		t.Fatalf("audit: %+v %v", entries, err)
	}
	if strings.Contains(out.String(), "carol-uid") {
		t.Fatal("the output names the raw uid")
	}
}
