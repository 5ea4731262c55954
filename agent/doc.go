// Package agent is migrated, the node service: it keeps the node's containers (one
// shim each, see package shim), serves the control API on a root-only unix socket and
// the peer API on a mutual-TLS port, and re-adopts running containers after a restart.
//
// The Service type is the local implementation of the control API; grpc.go is a thin
// layer that only forwards and maps the sentinel errors of errors.go to gRPC codes.
package agent
