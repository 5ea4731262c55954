// Package checkpoint checkpoints running containers with CRIU into
// self-describing directories and restores them into fresh cgroups and
// namespaces through the runtime.
//
// A checkpoint directory holds manifest.json (format version, container,
// spec, runtime state, CRIU version, kernel, and every file with its size and
// sha256), CRIU's images under images/, CRIU's logs, and the rootfs diff when
// the container's root is a layered (overlay) filesystem. Restore verifies
// the manifest and every checksum before it touches anything.
package checkpoint
