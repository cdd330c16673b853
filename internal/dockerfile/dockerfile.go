// Package dockerfile parses a Dockerfile into its instructions and checks
// the rules lethe's image must keep (docker build cannot run on the
// machines that test this project, so the rules are checked on the text).
package dockerfile

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Instruction is one Dockerfile instruction, continuation lines joined.
type Instruction struct {
	Cmd   string // upper case: FROM, RUN, USER, ...
	Args  string // the rest of the instruction
	Line  int    // 1-based line where it starts
	Stage int    // index of the build stage it belongs to (-1 before the first FROM)
}

// Stage is one FROM and what follows it.
type Stage struct {
	Base         string // the image it starts from
	Name         string // the AS name, if any
	Instructions []Instruction
}

// File is a parsed Dockerfile.
type File struct {
	Stages []Stage
	// Global holds the instructions before the first FROM (ARG only).
	Global []Instruction
}

// MaxSize bounds what Parse reads.
const MaxSize = 1 << 20

// Parse reads a Dockerfile: comments and blank lines dropped, lines ending
// in a backslash joined with the next. Parser directives are comments here.
func Parse(r io.Reader) (*File, error) {
	sc := bufio.NewScanner(io.LimitReader(r, MaxSize))
	sc.Buffer(make([]byte, 64<<10), MaxSize)
	f := &File{}
	var cur strings.Builder
	start, n := 0, 0
	flush := func() error {
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		if text == "" {
			return nil
		}
		cmd, args, _ := strings.Cut(text, " ")
		in := Instruction{Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args), Line: start, Stage: len(f.Stages) - 1}
		if in.Cmd == "FROM" {
			fields := strings.Fields(in.Args)
			// FROM [--platform=...] image [AS name]
			for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
				fields = fields[1:]
			}
			if len(fields) == 0 {
				return fmt.Errorf("line %d: FROM without an image", start)
			}
			st := Stage{Base: fields[0]}
			if len(fields) == 3 && strings.EqualFold(fields[1], "AS") {
				st.Name = fields[2]
			} else if len(fields) != 1 {
				return fmt.Errorf("line %d: FROM %q: want image [AS name]", start, in.Args)
			}
			f.Stages = append(f.Stages, st)
			in.Stage = len(f.Stages) - 1
		}
		if in.Stage < 0 {
			if in.Cmd != "ARG" {
				return fmt.Errorf("line %d: %s before the first FROM", start, in.Cmd)
			}
			f.Global = append(f.Global, in)
			return nil
		}
		f.Stages[in.Stage].Instructions = append(f.Stages[in.Stage].Instructions, in)
		return nil
	}
	for sc.Scan() {
		n++
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") {
			continue // comments may sit between continuation lines too
		}
		if cur.Len() == 0 {
			if trimmed == "" {
				continue
			}
			start = n
		}
		if body, ok := strings.CutSuffix(strings.TrimRight(line, " \t"), "\\"); ok {
			cur.WriteString(body)
			cur.WriteByte(' ')
			continue
		}
		cur.WriteString(line)
		if err := flush(); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("bufio.Scanner: %w", err)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	if len(f.Stages) == 0 {
		return nil, errors.New("no FROM")
	}
	return f, nil
}

// Final is the stage the image is made of (the last one).
func (f *File) Final() Stage { return f.Stages[len(f.Stages)-1] }

// Check returns every rule of lethe's image that f breaks.
func Check(f *File) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if len(f.Stages) < 2 {
		bad("single stage: build in one stage, copy only the binary into the final one")
	}
	final := f.Final()
	// Only the static variant: base and cc carry libc, debug a busybox shell.
	if !strings.HasPrefix(final.Base, "gcr.io/distroless/static") || strings.Contains(final.Base, "debug") {
		bad("final base %q: want gcr.io/distroless/static (no shell, no libc)", final.Base)
	}
	user := ""
	builds := 0
	for i, st := range f.Stages {
		for _, in := range st.Instructions {
			switch in.Cmd {
			case "ADD":
				for _, src := range addSources(in.Args) {
					if isRemote(src) {
						bad("line %d: ADD %s: fetch nothing remote at build time (unpinned, unverified)", in.Line, src)
					}
				}
			case "RUN":
				if i == len(f.Stages)-1 {
					bad("line %d: RUN in the final stage: it has no shell", in.Line)
				}
				if strings.Contains(in.Args, "go build") {
					builds++
					if !strings.Contains(in.Args, "CGO_ENABLED=0") {
						bad("line %d: go build without CGO_ENABLED=0", in.Line)
					}
					if !strings.Contains(in.Args, "-trimpath") {
						bad("line %d: go build without -trimpath", in.Line)
					}
				}
			case "USER":
				if i == len(f.Stages)-1 {
					user = in.Args
				}
			case "ENTRYPOINT", "CMD":
				if i == len(f.Stages)-1 {
					var argv []string
					if err := json.Unmarshal([]byte(in.Args), &argv); err != nil {
						bad("line %d: %s in shell form: the image has no shell; use the exec (JSON) form", in.Line, in.Cmd)
					}
				}
			}
		}
	}
	if builds == 0 {
		bad("no go build")
	}
	if uid, _, _ := strings.Cut(user, ":"); uid != "65532" {
		bad("final USER %q: want 65532 (distroless nonroot)", user)
	}
	return errs
}

// addSources are the sources of ADD [--flags] src... dest.
func addSources(args string) []string {
	var fields []string
	if strings.HasPrefix(strings.TrimSpace(args), "[") {
		_ = json.Unmarshal([]byte(args), &fields)
	} else {
		fields = strings.Fields(args)
	}
	for len(fields) > 0 && strings.HasPrefix(fields[0], "--") {
		fields = fields[1:]
	}
	if len(fields) < 2 {
		return nil
	}
	return fields[:len(fields)-1]
}

func isRemote(src string) bool {
	s := strings.ToLower(src)
	for _, p := range []string{"http://", "https://", "git@", "git://", "ssh://", "ftp://"} {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}
