package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeOSV(t *testing.T, dir, id, body string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, id+".json"), []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

const osvA = `{"schema_version":"1.3.1","id":"GO-2024-0001","modified":"0001-01-01T00:00:00Z","published":"0001-01-01T00:00:00Z",
"aliases":["CVE-2024-1"],"summary":"s","affected":[{"package":{"name":"example.com/a","ecosystem":"Go"},
"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.2.0"},{"introduced":"1.3.0"},{"fixed":"1.10.1"}]}],
"ecosystem_specific":{"imports":[{"path":"example.com/a/x","symbols":["F"]}]}}]}`

// Re-introduced after its last fix: no version is safe by the index alone.
const osvB = `{"schema_version":"1.3.1","id":"GO-2024-0002","modified":"2024-05-01T00:00:00Z","published":"2024-04-01T00:00:00Z",
"affected":[{"package":{"name":"example.com/a","ecosystem":"Go"},
"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.0.0"},{"introduced":"2.0.0"}]}]},
{"package":{"name":"stdlib","ecosystem":"Go"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.22.3"}]}]}]}`

func TestBuild(t *testing.T) {
	src, out := t.TempDir(), filepath.Join(t.TempDir(), "db")
	writeOSV(t, src, "GO-2024-0001", osvA)
	writeOSV(t, src, "GO-2024-0002", osvB)
	date := time.Date(2026, 11, 5, 23, 49, 57, 0, time.UTC)
	st, err := build(src, out, date)
	if err != nil {
		t.Fatal(err)
	}
	if st.Entries != 2 || st.Modules != 2 || !st.Modified.Equal(date) {
		t.Errorf("stats %+v", st)
	}
	read := func(name string, v any) {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	var db struct{ Modified time.Time }
	read("index/db.json", &db)
	if !db.Modified.Equal(date) {
		t.Errorf("db.json modified %s, want %s", db.Modified, date)
	}
	var mods []moduleMeta
	read("index/modules.json", &mods)
	got := map[string]string{}
	for _, m := range mods {
		for _, v := range m.Vulns {
			got[m.Path+" "+v.ID] = v.Fixed
		}
	}
	want := map[string]string{
		// semver order: 1.10.1 is after 1.2.0 (a string compare says otherwise).
		"example.com/a GO-2024-0001": "1.10.1",
		"example.com/a GO-2024-0002": "",
		"stdlib GO-2024-0002":        "1.22.3",
	}
	if len(got) != len(want) {
		t.Errorf("modules.json: %v, want %v", got, want)
	}
	for k, v := range want {
		if f, ok := got[k]; !ok || f != v {
			t.Errorf("modules.json %s fixed %q (present %v), want %q", k, f, ok, v)
		}
	}
	var vulns []vulnMeta
	read("index/vulns.json", &vulns)
	if len(vulns) != 2 || vulns[0].ID != "GO-2024-0001" || vulns[0].Aliases[0] != "CVE-2024-1" ||
		!vulns[0].Modified.Equal(date) || !vulns[1].Modified.Equal(time.Date(2024, 5, 1, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("vulns.json: %+v", vulns)
	}
	// The entry is copied whole (symbols are what makes findings
	// reachable-only), with the zero dates filled in.
	var e map[string]any
	read("ID/GO-2024-0001.json", &e)
	if e["modified"] != "2026-11-05T23:49:57Z" || e["published"] != "2026-11-05T23:49:57Z" {
		t.Errorf("entry dates: %v %v", e["modified"], e["published"])
	}
	if !strings.Contains(mustJSON(t, e["affected"]), `"symbols":["F"]`) {
		t.Errorf("entry lost its symbols: %v", e["affected"])
	}
}

func mustJSON(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestBuildRejects(t *testing.T) {
	for _, tc := range []struct{ name, file, body, want string }{
		{"not json", "GO-2024-0001", `{`, "unexpected end"},
		{"id differs from file", "GO-2024-0009", osvA, "does not name the file"},
		{"bad id", "x", strings.Replace(osvA, "GO-2024-0001", "x", 1), "does not name the file"},
		{"no affected", "GO-2024-0001", `{"id":"GO-2024-0001","affected":[]}`, "no affected"},
		{"other ecosystem", "GO-2024-0001", strings.Replace(osvA, `"ecosystem":"Go"`, `"ecosystem":"npm"`, 1), "ecosystem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := t.TempDir()
			writeOSV(t, src, tc.file, tc.body)
			_, err := build(src, filepath.Join(t.TempDir(), "db"), time.Now())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := build(t.TempDir(), filepath.Join(t.TempDir(), "db"), time.Now()); err == nil {
		t.Error("an empty source built a database")
	}
}

func TestBefore(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{"", "0.0.1", true}, {"0.0.1", "", false}, {"", "", false},
		{"1.2.0", "1.10.0", true}, {"1.10.0", "1.2.0", false},
		{"0.0.0-20200101000000-abcdefabcdef", "0.0.0-20210101000000-abcdefabcdef", true},
		{"1.0.0-rc.1", "1.0.0", true},
	} {
		if got := before(tc.a, tc.b); got != tc.want {
			t.Errorf("before(%q, %q) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
}

// Whatever a report file holds, build fails cleanly or writes a database.
func FuzzBuild(f *testing.F) {
	f.Add(osvA)
	f.Add(osvB)
	f.Add(`{"id":"GO-2024-0001","affected":[{"package":{"name":"m","ecosystem":"Go"},"ranges":[{"type":"SEMVER","events":[{"fixed":"x.y"}]}]}]}`)
	f.Fuzz(func(t *testing.T, body string) {
		src := t.TempDir()
		writeOSV(t, src, "GO-2024-0001", body)
		st, err := build(src, filepath.Join(t.TempDir(), "db"), time.Unix(0, 0))
		if err == nil && st.Entries != 1 {
			t.Fatalf("built %d entries from one file", st.Entries)
		}
	})
}
