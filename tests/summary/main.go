// Command summary reads `go test -json` on standard input and writes what
// `go test` prints without -json: the "ok" and "FAIL" line of each
// package and the output of each failed test. It ends with a list of the
// tests that were skipped and why, so that a missing tool or corpus is
// seen, not silently passed over. test.sh pipes the whole suite into it.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
)

type event struct {
	Action  string
	Package string
	Test    string
	Output  string
}

type skip struct{ pkg, test, reason string }

func main() {
	os.Exit(run(os.Stdin, os.Stdout))
}

func run(in io.Reader, out io.Writer) int {
	w := bufio.NewWriter(out)
	defer w.Flush()
	buf := map[string][]string{} // a test's output until it ends
	var skips []skip
	passed, failed := 0, 0
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		var ev event
		if len(line) == 0 || line[0] != '{' || json.Unmarshal(line, &ev) != nil {
			fmt.Fprintf(w, "%s\n", line) // not an event: go's own words
			w.Flush()
			continue
		}
		key := ev.Package + " " + ev.Test
		switch {
		case ev.Action == "build-output":
			fmt.Fprint(w, ev.Output)
		case ev.Test == "" && ev.Action == "output":
			if !progress(ev.Output) && ev.Output != "PASS\n" {
				fmt.Fprint(w, ev.Output)
				w.Flush()
			}
		case ev.Test == "":
		case ev.Action == "output":
			if !progress(ev.Output) {
				buf[key] = append(buf[key], ev.Output)
			}
		case ev.Action == "fail":
			failed++
			for _, l := range buf[key] {
				fmt.Fprint(w, l)
			}
			delete(buf, key)
		case ev.Action == "skip":
			var reason []string
			for _, l := range buf[key] {
				if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "--- SKIP") {
					reason = append(reason, l)
				}
			}
			skips = append(skips, skip{ev.Package, ev.Test, strings.Join(reason, " ")})
			delete(buf, key)
		case ev.Action == "pass":
			passed++
			delete(buf, key)
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(w, "summary: reading go test -json: %v\n", err)
	}
	sort.Slice(skips, func(i, j int) bool {
		if skips[i].pkg != skips[j].pkg {
			return skips[i].pkg < skips[j].pkg
		}
		return skips[i].test < skips[j].test
	})
	fmt.Fprintf(w, "\n%d tests passed, %d failed, %d skipped\n", passed, failed, len(skips))
	for _, s := range skips {
		fmt.Fprintf(w, "SKIP %s %s: %s\n", s.pkg, s.test, s.reason)
	}
	return 0
}

// progress reports whether a line is one of -v's progress lines, which
// go test without -json does not print.
func progress(l string) bool {
	for _, p := range []string{"=== RUN", "=== PAUSE", "=== CONT", "=== NAME", "--- PASS"} {
		if strings.HasPrefix(strings.TrimLeft(l, " "), p) {
			return true
		}
	}
	return false
}
