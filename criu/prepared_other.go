//go:build !linux

package criu

// Prepared is a CRIU process started ahead of a dump; Linux only.
type Prepared struct{}
