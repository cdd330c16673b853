// Command testsummary reads `go test -json` on stdin and prints a short
// report: every top-level test with its outcome (so a CI log shows which
// emulator suites ran and that none was skipped), the whole output of every
// failed test, and a closing "N passed, N failed, N skipped" line. It exits
// 1 if anything failed.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

type testEvent struct {
	Action  string
	Package string
	Test    string
	Output  string
	Elapsed float64
}

func main() {
	output := map[string]*strings.Builder{} // by package/test
	var passed, failed, skipped int
	var failedPkgs []string
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		var e testEvent
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			fmt.Println(sc.Text()) // build errors and the like arrive as plain text
			continue
		}
		key := e.Package + "/" + e.Test
		switch e.Action {
		case "output":
			b := output[key]
			if b == nil {
				b = &strings.Builder{}
				output[key] = b
			}
			b.WriteString(e.Output)
		case "pass", "fail", "skip":
			top := e.Test != "" && !strings.Contains(e.Test, "/")
			if e.Test == "" { // a package
				if e.Action == "fail" {
					failedPkgs = append(failedPkgs, e.Package)
					if b := output[key]; b != nil {
						fmt.Print(b.String())
					}
				}
				fmt.Printf("%s\t%s\t%.1fs\n", map[string]string{"pass": "ok", "fail": "FAIL", "skip": "?"}[e.Action], e.Package, e.Elapsed)
				continue
			}
			if !top {
				continue
			}
			switch e.Action {
			case "pass":
				passed++
				fmt.Printf("--- PASS: %s (%s)\n", e.Test, e.Package)
			case "skip":
				skipped++
				fmt.Printf("--- SKIP: %s (%s)\n%s", e.Test, e.Package, lastLines(output[key], 3))
			case "fail":
				failed++
				fmt.Printf("--- FAIL: %s (%s)\n", e.Test, e.Package)
				if b := output[key]; b != nil {
					fmt.Print(b.String())
				}
			}
			delete(output, key)
		}
	}
	if len(failedPkgs) > 0 && failed == 0 {
		failed = len(failedPkgs) // a package that failed outside any test
	}
	fmt.Printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped)
	if failed > 0 || len(failedPkgs) > 0 {
		os.Exit(1)
	}
}

func lastLines(b *strings.Builder, n int) string {
	if b == nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ") + "\n"
}
