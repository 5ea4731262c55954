package validation

import (
	"strings"
	"testing"
)

func TestParseResults(t *testing.T) {
	in := "runc\tcreate\tPASS\t0\t1.2\t\n" +
		"migrated\tcreate\tFAIL\t0\t0.9\tnot ok 2 - create MUST generate an error\twith a tab\n" +
		"\n" +
		"migrated\tkill\tTIMEOUT\t124\t180.0\t\n" +
		"migrated\tdefault\tSILENT\t0\t2.0\tno TAP output\n"
	got, err := ParseResults(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("got %d results, want 4: %+v", len(got), got)
	}
	if !got[0].Passed() || got[1].Passed() || got[2].Passed() || got[3].Passed() {
		t.Errorf("Passed wrong: %+v", got)
	}
	if got[1].Reason != "not ok 2 - create MUST generate an error\twith a tab" {
		t.Errorf("reason = %q", got[1].Reason)
	}
	if got[2].Exit != "124" || got[2].Outcome != "TIMEOUT" {
		t.Errorf("timeout line parsed as %+v", got[2])
	}

	for _, bad := range []string{"runc\tcreate\n", "runc\tcreate\tMAYBE\t0\t1\t\n"} {
		if _, err := ParseResults(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseResults(%q) succeeded", bad)
		}
	}
}

func TestCompare(t *testing.T) {
	r := func(rt, p, outcome string) Result { return Result{Runtime: rt, Program: p, Outcome: outcome} }
	results := []Result{
		r("runc", "a", "PASS"), r("migrated", "a", "PASS"),
		r("runc", "b", "PASS"), r("migrated", "b", "FAIL"),
		r("runc", "c", "FAIL"), r("migrated", "c", "PASS"),
		r("runc", "d", "FAIL"), r("migrated", "d", "TIMEOUT"),
		r("runc", "e", "PASS"),     // migrated missing: counts as a failure
		r("migrated", "f", "PASS"), // runc did not run it: not counted
	}
	c := Compare(results, "migrated", "runc")
	if c.Programs != 5 || c.Ref != 3 || c.Ours != 2 {
		t.Fatalf("counts = %d programs, ours %d, ref %d; want 5, 2, 3", c.Programs, c.Ours, c.Ref)
	}
	if len(c.Regressions) != 2 || c.Regressions[0].Program != "b" || c.Regressions[1].Program != "e" {
		t.Errorf("regressions = %+v, want b and e", c.Regressions)
	}
	if c.Regressions[1].Reason != "not run" {
		t.Errorf("missing program reason = %q", c.Regressions[1].Reason)
	}
	if len(c.Gains) != 1 || c.Gains[0] != "c" {
		t.Errorf("gains = %v, want [c]", c.Gains)
	}
}
