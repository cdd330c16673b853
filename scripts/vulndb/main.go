// Command vulndb builds an offline Go vulnerability database, in the v1
// layout govulncheck reads with -db file://DIR, from the golang.org/x/vulndb
// module as the Go module proxy serves it. The machines that test lethe
// cannot reach vuln.go.dev, but they reach the module proxy, and the
// module carries every report in OSV form (data/osv/GO-YYYY-NNNN.json).
//
// The v1 layout (https://go.dev/security/vuln/database#api):
//
//	index/db.json       {"modified": T}: the database's date
//	index/modules.json  [{"path", "vulns": [{"id", "modified", "fixed"}]}]
//	index/vulns.json    [{"id", "modified", "aliases"}]
//	ID/GO-YYYY-NNNN.json  the OSV entries themselves
//
// The OSV files in the module have zero modified and published times:
// vuln.go.dev fills them from the git history when it deploys, and a module
// zip has none. The database's date is therefore the module version's
// commit time (the proxy's .info Time, also the pseudo-version's
// timestamp), and each entry whose modified time is zero gets that date.
//
//	go run ./scripts/vulndb -module golang.org/x/vulndb@VERSION -out DIR
//
// prints "vulndb: DIR: N entries, M modules, dated T".
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"golang.org/x/mod/semver"
)

func main() {
	module := flag.String("module", "", "golang.org/x/vulndb@VERSION to build from (downloaded through the module proxy)")
	src := flag.String("src", "", "a directory of OSV files instead of -module")
	date := flag.String("date", "", "with -src: the database date (RFC 3339)")
	out := flag.String("out", "", "directory to write the database to (replaced)")
	flag.Parse()
	if err := run(*module, *src, *date, *out); err != nil {
		fmt.Fprintln(os.Stderr, "vulndb:", err)
		os.Exit(1)
	}
}

func run(module, src, date, out string) error {
	if out == "" || (module == "") == (src == "") {
		return errors.New("want -out and one of -module or -src")
	}
	var when time.Time
	if module != "" {
		dir, t, err := download(module)
		if err != nil {
			return err
		}
		src, when = filepath.Join(dir, "data", "osv"), t
	} else {
		t, err := time.Parse(time.RFC3339, date)
		if err != nil {
			return fmt.Errorf("-date: %w", err)
		}
		when = t
	}
	st, err := build(src, out, when)
	if err != nil {
		return err
	}
	fmt.Printf("vulndb: %s: %d entries, %d modules, dated %s\n", out, st.Entries, st.Modules, st.Modified.Format(time.RFC3339))
	return nil
}

// download fetches module through the module proxy (go mod download, run
// outside any module so no go.mod changes) and returns its directory and
// its commit time.
func download(module string) (string, time.Time, error) {
	tmp, err := os.MkdirTemp("", "vulndb-download")
	if err != nil {
		return "", time.Time{}, fmt.Errorf("os.MkdirTemp: %w", err)
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("go", "mod", "download", "-json", module)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GO111MODULE=on", "GOFLAGS=-mod=mod")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		return "", time.Time{}, fmt.Errorf("go mod download %s: %w: %s%s", module, err, stderr.String(), b)
	}
	var d struct {
		Dir, Info, Error string
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return "", time.Time{}, fmt.Errorf("go mod download -json: %w", err)
	}
	if d.Error != "" {
		return "", time.Time{}, fmt.Errorf("go mod download %s: %s", module, d.Error)
	}
	ib, err := os.ReadFile(d.Info)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("os.ReadFile: %w", err)
	}
	var info struct{ Time time.Time }
	if err := json.Unmarshal(ib, &info); err != nil || info.Time.IsZero() {
		return "", time.Time{}, fmt.Errorf("%s: no commit time (%v)", d.Info, err)
	}
	return d.Dir, info.Time.UTC(), nil
}

// entry is what the index needs of an OSV entry; the entry itself is
// copied as it is, but for a zero modified time.
type entry struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Aliases  []string  `json:"aliases,omitempty"`
	Affected []struct {
		Package struct {
			Name      string `json:"name"`
			Ecosystem string `json:"ecosystem"`
		} `json:"package"`
		Ranges []struct {
			Type   string `json:"type"`
			Events []struct {
				Introduced string `json:"introduced,omitempty"`
				Fixed      string `json:"fixed,omitempty"`
			} `json:"events"`
		} `json:"ranges"`
	} `json:"affected"`
}

type moduleVuln struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Fixed    string    `json:"fixed,omitempty"`
}

type moduleMeta struct {
	Path  string       `json:"path"`
	Vulns []moduleVuln `json:"vulns"`
}

type vulnMeta struct {
	ID       string    `json:"id"`
	Modified time.Time `json:"modified"`
	Aliases  []string  `json:"aliases,omitempty"`
}

type stats struct {
	Entries, Modules int
	Modified         time.Time
}

var idPattern = regexp.MustCompile(`^GO-\d{4}-\d{4,}$`)

// build writes the v1 database for the OSV files in src to out.
func build(src, out string, date time.Time) (stats, error) {
	files, err := filepath.Glob(filepath.Join(src, "*.json"))
	if err != nil {
		return stats{}, fmt.Errorf("filepath.Glob: %w", err)
	}
	if len(files) == 0 {
		return stats{}, fmt.Errorf("%s: no OSV files", src)
	}
	if err := os.RemoveAll(out); err != nil {
		return stats{}, fmt.Errorf("os.RemoveAll: %w", err)
	}
	for _, d := range []string{"index", "ID"} {
		if err := os.MkdirAll(filepath.Join(out, d), 0o755); err != nil {
			return stats{}, fmt.Errorf("os.MkdirAll: %w", err)
		}
	}
	modules := map[string]*moduleMeta{}
	var vulns []vulnMeta
	dbModified := date.UTC()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return stats{}, fmt.Errorf("os.ReadFile: %w", err)
		}
		var e entry
		if err := json.Unmarshal(b, &e); err != nil {
			return stats{}, fmt.Errorf("%s: %w", f, err)
		}
		if !idPattern.MatchString(e.ID) || filepath.Base(f) != e.ID+".json" {
			return stats{}, fmt.Errorf("%s: id %q does not name the file", f, e.ID)
		}
		if len(e.Affected) == 0 {
			return stats{}, fmt.Errorf("%s: no affected modules", f)
		}
		if e.Modified.IsZero() {
			e.Modified = dbModified
			if b, err = setModified(b, dbModified); err != nil {
				return stats{}, fmt.Errorf("%s: %w", f, err)
			}
		}
		if e.Modified.After(dbModified) {
			dbModified = e.Modified.UTC()
		}
		for _, a := range e.Affected {
			if a.Package.Ecosystem != "Go" || a.Package.Name == "" {
				return stats{}, fmt.Errorf("%s: affected package %q in ecosystem %q", f, a.Package.Name, a.Package.Ecosystem)
			}
			m := modules[a.Package.Name]
			if m == nil {
				m = &moduleMeta{Path: a.Package.Name}
				modules[a.Package.Name] = m
			}
			fixed := ""
			for _, r := range a.Ranges {
				if r.Type != "SEMVER" {
					continue
				}
				fixed = latestFixed(fixed, r.Events)
			}
			m.Vulns = append(m.Vulns, moduleVuln{ID: e.ID, Modified: e.Modified, Fixed: fixed})
		}
		vulns = append(vulns, vulnMeta{ID: e.ID, Modified: e.Modified, Aliases: e.Aliases})
		if err := os.WriteFile(filepath.Join(out, "ID", e.ID+".json"), b, 0o644); err != nil {
			return stats{}, fmt.Errorf("os.WriteFile: %w", err)
		}
	}
	mods := make([]*moduleMeta, 0, len(modules))
	for _, m := range modules {
		sort.Slice(m.Vulns, func(i, j int) bool { return m.Vulns[i].ID < m.Vulns[j].ID })
		mods = append(mods, m)
	}
	sort.Slice(mods, func(i, j int) bool { return mods[i].Path < mods[j].Path })
	sort.Slice(vulns, func(i, j int) bool { return vulns[i].ID < vulns[j].ID })
	for name, v := range map[string]any{
		"db.json":      map[string]time.Time{"modified": dbModified},
		"modules.json": mods,
		"vulns.json":   vulns,
	} {
		b, err := json.Marshal(v)
		if err != nil {
			return stats{}, fmt.Errorf("json.Marshal: %w", err)
		}
		if err := os.WriteFile(filepath.Join(out, "index", name), b, 0o644); err != nil {
			return stats{}, fmt.Errorf("os.WriteFile: %w", err)
		}
	}
	return stats{Entries: len(vulns), Modules: len(mods), Modified: dbModified}, nil
}

// latestFixed is the newest fixed version over the ranges seen so far
// (prev) and events, or "" when the vulnerability is introduced again
// after it: modules.json's "fixed" lets govulncheck skip a module at or
// past it without reading the entry, so it must never be too low.
func latestFixed(prev string, events []struct {
	Introduced string `json:"introduced,omitempty"`
	Fixed      string `json:"fixed,omitempty"`
}) string {
	latest := prev
	for _, e := range events {
		if e.Fixed != "" && before(latest, e.Fixed) {
			latest = e.Fixed
		}
	}
	for _, e := range events {
		if e.Introduced != "" && e.Introduced != "0" && before(latest, e.Introduced) {
			return ""
		}
	}
	return latest
}

// before reports a < b for OSV versions (SemVer without "v"; "" is lowest).
func before(a, b string) bool {
	if a == "" {
		return b != ""
	}
	if b == "" {
		return false
	}
	return semver.Compare("v"+a, "v"+b) < 0
}

// setModified rewrites the "modified" field of an OSV entry, keeping every
// other field as it is.
func setModified(b []byte, t time.Time) ([]byte, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("json.Unmarshal: %w", err)
	}
	ts, _ := json.Marshal(t.UTC().Format(time.RFC3339))
	m["modified"] = ts
	if p, ok := m["published"]; !ok || strings.HasPrefix(string(p), `"0001-`) {
		m["published"] = ts
	}
	return json.Marshal(m)
}
