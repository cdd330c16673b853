package audit_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lethe-dev/lethe/app/audit"
	"github.com/lethe-dev/lethe/infra/docs/sqlitedocs"
)

func newLog(t *testing.T) *audit.Log {
	t.Helper()
	s, err := sqlitedocs.Open(t.Context(), filepath.Join(t.TempDir(), "docs.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return &audit.Log{Docs: s, Now: func() time.Time { at = at.Add(time.Millisecond); return at }}
}

func TestAppendListPagesBySubject(t *testing.T) {
	l := newLog(t)
	for i := range 25 {
		subject := "u1"
		if i%5 == 0 {
			subject = "u2"
		}
		if _, err := l.Append(t.Context(), audit.Entry{Actor: audit.UserActor(subject), Action: audit.ActionRetentionSweep, Subject: subject, Counts: map[string]int{"n": i}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		subject string
		want    int
	}{{"", 25}, {"u1", 20}, {"u2", 5}, {"nobody", 0}} {
		var all []audit.Entry
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 30 {
				t.Fatal("paging does not end")
			}
			got, next, err := l.List(t.Context(), audit.Filter{Subject: tc.subject, After: cursor, Limit: 7})
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, got...)
			if next == "" {
				break
			}
			cursor = next
		}
		if len(all) != tc.want {
			t.Fatalf("subject %q: %d entries, want %d", tc.subject, len(all), tc.want)
		}
		for i := 1; i < len(all); i++ {
			if all[i].ID <= all[i-1].ID || all[i].At.Before(all[i-1].At) {
				t.Fatalf("not oldest first: %s after %s", all[i].ID, all[i-1].ID)
			}
			if tc.subject != "" && all[i].Subject != tc.subject {
				t.Fatalf("entry of %q in %q's list", all[i].Subject, tc.subject)
			}
		}
	}
}

func TestAppendRefusesFreeText(t *testing.T) {
	l := newLog(t)
	for name, e := range map[string]audit.Entry{
		"spaces in ref":   {Actor: "system", Action: "x", Ref: "call me at 555"},
		"empty actor":     {Action: "x"},
		"newline subject": {Actor: "system", Action: "x", Subject: "a\nb"},
		"long ref":        {Actor: "system", Action: "x", Ref: strings.Repeat("a", 201)},
	} {
		if _, err := l.Append(t.Context(), e); !errors.Is(err, audit.ErrInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	if _, _, err := l.List(t.Context(), audit.Filter{After: "bad cursor"}); !errors.Is(err, audit.ErrInvalid) {
		t.Errorf("bad cursor: %v", err)
	}
}
