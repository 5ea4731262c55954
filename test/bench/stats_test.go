package bench

import (
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		in   []time.Duration
		want time.Duration
	}{
		{nil, 0},
		{[]time.Duration{5 * ms}, 5 * ms},
		{[]time.Duration{9 * ms, 1 * ms, 5 * ms}, 5 * ms},
		{[]time.Duration{4 * ms, 1 * ms, 2 * ms, 100 * ms}, 3 * ms},
	}
	for _, c := range cases {
		in := append([]time.Duration(nil), c.in...)
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
		for i := range in {
			if in[i] != c.in[i] {
				t.Fatalf("median reordered its input: %v", c.in)
			}
		}
	}
}

func TestPairRatios(t *testing.T) {
	ours := []time.Duration{20, 30, 10, 7}
	ref := []time.Duration{10, 10, 0}
	got := pairRatios(ours, ref)
	// The third pair has a zero reference and is dropped; the fourth has none.
	want := []float64{2, 3}
	if len(got) != len(want) {
		t.Fatalf("pairRatios = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("pairRatios = %v, want %v", got, want)
		}
	}
	if m := medianFloat([]float64{3, 1, 2, 10}); m != 2.5 {
		t.Errorf("medianFloat = %v, want 2.5", m)
	}
	if m := medianFloat(nil); m != 0 {
		t.Errorf("medianFloat(nil) = %v, want 0", m)
	}
}
