package criu

import "testing"

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Version
		bad  bool
	}{
		{in: "4.2.1", want: Version{4, 2, 1, "4.2.1"}},
		{in: "4.1", want: Version{4, 1, 0, "4.1"}},
		{in: "Version: 4.2.1\n", want: Version{4, 2, 1, "4.2.1"}},
		{in: "Version: 4.2\nGitID: v4.2-17-g1234abcd\n", want: Version{4, 2, 0, "4.2"}},
		{in: "3.19-rc1", want: Version{3, 19, 0, "3.19-rc1"}},
		{in: "", bad: true},
		{in: "4", bad: true},
		{in: "4.x", bad: true},
		{in: "1.2.3.4", bad: true},
		{in: "Version: garbage", bad: true},
	} {
		got, err := ParseVersion(tc.in)
		if tc.bad {
			if err == nil {
				t.Errorf("ParseVersion(%q) = %+v, want error", tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseVersion(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestVersionCompare(t *testing.T) {
	for _, tc := range []struct {
		a, b Version
		want int
	}{
		{Version{4, 1, 0, ""}, Version{4, 1, 0, "x"}, 0},
		{Version{4, 0, 9, ""}, Version{4, 1, 0, ""}, -1},
		{Version{4, 2, 1, ""}, Version{4, 2, 0, ""}, 1},
		{Version{3, 99, 99, ""}, Version{4, 0, 0, ""}, -1},
		{Version{5, 0, 0, ""}, Version{4, 9, 9, ""}, 1},
	} {
		if got := tc.a.Compare(tc.b); got != tc.want {
			t.Errorf("%v.Compare(%v) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
		if got := tc.a.AtLeast(tc.b); got != (tc.want >= 0) {
			t.Errorf("%v.AtLeast(%v) = %v", tc.a, tc.b, got)
		}
	}
	if !(Version{4, 2, 1, ""}).AtLeast(MinVersion) || (Version{4, 0, 0, ""}).AtLeast(MinVersion) {
		t.Errorf("MinVersion %v misplaced", MinVersion)
	}
	if s := (Version{4, 2, 1, "4.2.1"}).String(); s != "4.2.1" {
		t.Errorf("String() = %q", s)
	}
}
