// Package hooks runs OCI lifecycle hooks: each hook gets the container state as
// JSON on stdin and runs with its own args, env and timeout.
package hooks
