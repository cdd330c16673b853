package dockerfile

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The repository's Dockerfile keeps every rule.
func TestRepositoryDockerfile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(strings.NewReader(string(b)))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	for _, err := range Check(f) {
		t.Error(err)
	}
	// One binary for every role: the entrypoint is lethe, the role its argument.
	var entry string
	for _, in := range f.Final().Instructions {
		if in.Cmd == "ENTRYPOINT" {
			entry = in.Args
		}
	}
	if entry != `["/usr/local/bin/lethe"]` {
		t.Errorf("ENTRYPOINT %s: want the lethe binary alone (the role comes from the command)", entry)
	}
}

// The build context leaves out what must never reach an image layer.
func TestDockerignore(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, want := range []string{".git", ".env", ".env.*", ".lethe", "**/*.tfstate", "**/*.tfvars"} {
		if !lines[want] {
			t.Errorf(".dockerignore lacks %q", want)
		}
	}
}

const good = `ARG GO=1.26
FROM golang:${GO} AS build
RUN CGO_ENABLED=0 go build \
    -trimpath -o /out/lethe ./cmd/lethe
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/lethe /lethe
USER 65532:65532
ENTRYPOINT ["/lethe"]
`

// Each rule fails on a Dockerfile that breaks it, and only that rule.
func TestCheckRejects(t *testing.T) {
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"good", "", "", ""},
		{"root user", "USER 65532:65532", "USER root", "want 65532"},
		{"no user", "USER 65532:65532\n", "", "want 65532"},
		{"user reset after", "ENTRYPOINT", "USER 0\nENTRYPOINT", "want 65532"},
		{"debian base", "gcr.io/distroless/static-debian12:nonroot", "debian:bookworm-slim", "distroless"},
		{"debug distroless has a shell", "static-debian12:nonroot", "static-debian12:debug-nonroot", "distroless"},
		{"ADD of a URL", "COPY --from", "ADD https://example.com/x.tgz /x\nCOPY --from", "ADD https://"},
		{"ADD of a git repo", "COPY --from", "ADD --keep-git-dir git@github.com:a/b.git /b\nCOPY --from", "ADD git@"},
		{"cgo on", "CGO_ENABLED=0 go build", "go build", "CGO_ENABLED=0"},
		{"no trimpath", "-trimpath ", "", "-trimpath"},
		{"RUN in the final stage", "USER 65532", "RUN echo hi\nUSER 65532", "no shell"},
		{"shell-form entrypoint", `ENTRYPOINT ["/lethe"]`, "ENTRYPOINT /lethe edge", "shell form"},
		{"single stage", "FROM gcr.io/distroless/static-debian12:nonroot\nCOPY --from=build /out/lethe /lethe\n", "", "single stage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := good
			if tc.old != "" {
				if !strings.Contains(src, tc.old) {
					t.Fatalf("fixture lacks %q", tc.old)
				}
				src = strings.Replace(src, tc.old, tc.new, 1)
			}
			f, err := Parse(strings.NewReader(src))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			errs := Check(f)
			if tc.want == "" {
				for _, err := range errs {
					t.Errorf("good Dockerfile rejected: %v", err)
				}
				return
			}
			found := false
			for _, err := range errs {
				found = found || strings.Contains(err.Error(), tc.want)
			}
			if !found {
				t.Errorf("want an error containing %q, got %v", tc.want, errs)
			}
		})
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		ok        bool
	}{
		{"empty", "", false},
		{"comment only", "# x\n", false},
		{"instruction before FROM", "RUN x\nFROM a\n", false},
		{"FROM without image", "FROM\n", false},
		{"FROM with junk", "FROM a b c d\n", false},
		{"platform flag", "FROM --platform=linux/amd64 a AS b\n", true},
		{"comment inside continuation", "FROM a\nRUN a \\\n# note\n  b\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse(strings.NewReader(tc.src))
			if (err == nil) != tc.ok {
				t.Fatalf("Parse(%q) err = %v, want ok=%v", tc.src, err, tc.ok)
			}
			if tc.name == "comment inside continuation" {
				if got := strings.Join(strings.Fields(f.Final().Instructions[1].Args), " "); got != "a b" {
					t.Errorf("continuation: %q", got)
				}
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add(good)
	f.Add("FROM a\nRUN \\\n")
	f.Fuzz(func(t *testing.T, src string) {
		df, err := Parse(strings.NewReader(src))
		if err != nil {
			return
		}
		if len(df.Stages) == 0 {
			t.Fatal("parsed a Dockerfile without stages")
		}
		_ = Check(df)
	})
}

// The image's build (CGO_ENABLED=0, linux) finds every package of the
// binary in pure Go: a dependency that needs cgo would leave its package
// with no files to build. PocketSphinx is a subprocess, not a cgo binding.
func TestBinaryBuildsWithoutCgo(t *testing.T) {
	if testing.Short() {
		t.Skip("loads every package of cmd/lethe")
	}
	cmd := exec.Command("go", "list", "-deps", "-e", "-f", "{{.ImportPath}}\t{{len .CgoFiles}}\t{{if .Error}}{{.Error}}{{end}}{{range .DepsErrors}}{{.}};{{end}}|", "./cmd/lethe")
	cmd.Dir = filepath.Join("..", "..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) < 100 {
		t.Fatalf("go list saw only %d packages", len(lines))
	}
	for _, l := range lines {
		f := strings.SplitN(strings.TrimSuffix(l, "|"), "\t", 3)
		if len(f) != 3 {
			t.Fatalf("go list line %q", l)
		}
		if f[1] != "0" || f[2] != "" || f[0] == "runtime/cgo" {
			t.Errorf("%s: cgo files %s, error %q", f[0], f[1], f[2])
		}
	}
}
