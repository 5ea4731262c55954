// Package checkpoint checkpoints running containers with CRIU into
// self-describing directories and restores them into fresh cgroups and
// namespaces through the runtime.
//
// A checkpoint directory holds manifest.json (format version, container,
// spec, runtime state, CRIU version, kernel, and every file with its size and
// sha256), CRIU's images under images/, CRIU's logs, and the rootfs diff when
// the container's root is a layered (overlay) filesystem, and extra files the
// caller adds (the agent adds the container's log under logs/). Restore
// verifies the manifest and every checksum before it touches anything.
//
// Export and Import move a checkpoint as one zstd-compressed tar file; Import
// treats the archive as untrusted (only regular files and directories at
// relative paths). See docs/checkpoint.md.
package checkpoint
