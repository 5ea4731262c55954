//go:build !linux

package criu

// Prepared is a CRIU process started ahead of a dump or restore; Linux only.
type Prepared struct{}
