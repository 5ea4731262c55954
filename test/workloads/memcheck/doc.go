// Package memcheck is the memory pattern and status protocol of the memwriter
// workload, shared by the program and by the tests that check it.
//
// A Region is a buffer of whole pages. Every page holds pseudo-random bytes that are
// a pure function of (seed, page index, generation), produced by SplitMix64, so the
// content can be regenerated and checked at any time without a second copy. Touch
// rewrites an exact share of the pages with the next generation, which is what an
// incremental (pre-dump) snapshot has to pick up. ExpectedSum computes the checksum a
// region must have after a given number of touches, streaming, without the region.
package memcheck
