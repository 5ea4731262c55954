// Package shimv1 is the generated Go code of the API a per-container shim serves to its
// agent. Edit shim.proto, then `go generate ./api`.
package shimv1
