package bench

import (
	"slices"
	"time"
)

// median returns the median of ds (the mean of the middle two for an even
// count), or 0 for none.
func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// pairRatios returns ours[i]/ref[i] for each pair measured back to back. The
// median of these cancels slow drift in host load better than the ratio of the
// two medians, since both members of a pair saw nearly the same load.
func pairRatios(ours, ref []time.Duration) []float64 {
	n := min(len(ours), len(ref))
	r := make([]float64, 0, n)
	for i := range n {
		if ref[i] > 0 {
			r = append(r, float64(ours[i])/float64(ref[i]))
		}
	}
	return r
}

// medianFloat is median for ratios.
func medianFloat(fs []float64) float64 {
	if len(fs) == 0 {
		return 0
	}
	s := slices.Clone(fs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
