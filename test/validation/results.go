package validation

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strings"
)

// Result is one validation program's outcome for one runtime: a line of the
// results.tsv that scripts/oci-validate.sh writes.
type Result struct {
	Runtime string
	Program string
	Outcome string // PASS, FAIL, SILENT (exit 0 but runtimetest never ran) or TIMEOUT
	Exit    string // the program's exit code
	Seconds string
	Reason  string // first "not ok" TAP line, else the last line of output
}

// Passed reports whether the program passed.
func (r Result) Passed() bool { return r.Outcome == "PASS" }

// ParseResults reads results.tsv.
func ParseResults(r io.Reader) ([]Result, error) {
	var out []Result
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" {
			continue
		}
		f := strings.SplitN(line, "\t", 6)
		if len(f) < 5 {
			return nil, fmt.Errorf("results line %d: %d fields, want 6: %q", n, len(f), line)
		}
		res := Result{Runtime: f[0], Program: f[1], Outcome: f[2], Exit: f[3], Seconds: f[4]}
		if len(f) == 6 {
			res.Reason = f[5]
		}
		switch res.Outcome {
		case "PASS", "FAIL", "SILENT", "TIMEOUT":
		default:
			return nil, fmt.Errorf("results line %d: unknown outcome %q", n, res.Outcome)
		}
		out = append(out, res)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read results: %w", err)
	}
	return out, nil
}

// Comparison sums up one runtime against a reference.
type Comparison struct {
	Programs    int      // programs the reference ran
	Ours, Ref   int      // programs passed
	Regressions []Result // our results for programs the reference passes and we do not
	Gains       []string // programs we pass and the reference does not
}

// Compare counts the programs ours and ref pass. A program missing from ours
// counts as failed by us.
func Compare(results []Result, ours, ref string) Comparison {
	byProg := map[string]map[string]Result{}
	for _, r := range results {
		if byProg[r.Program] == nil {
			byProg[r.Program] = map[string]Result{}
		}
		byProg[r.Program][r.Runtime] = r
	}
	progs := make([]string, 0, len(byProg))
	for p := range byProg {
		progs = append(progs, p)
	}
	sort.Strings(progs)

	var c Comparison
	for _, p := range progs {
		rr, refRan := byProg[p][ref]
		if !refRan {
			continue
		}
		c.Programs++
		or, oursRan := byProg[p][ours]
		if !oursRan {
			or = Result{Runtime: ours, Program: p, Outcome: "FAIL", Reason: "not run"}
		}
		if rr.Passed() {
			c.Ref++
		}
		if or.Passed() {
			c.Ours++
		}
		switch {
		case rr.Passed() && !or.Passed():
			c.Regressions = append(c.Regressions, or)
		case or.Passed() && !rr.Passed():
			c.Gains = append(c.Gains, p)
		}
	}
	return c
}
