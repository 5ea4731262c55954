// Package layer moves a container's root filesystem changes between nodes.
//
// A rootfs in migrate is a read-only BASE directory, named by its content
// digest, plus the upper directory of an overlayfs mount holding the
// container's writable changes. This package computes the base digest
// (Digest), serialises an upper directory as a tar stream with OCI-style
// whiteouts (WriteDiff), and extracts such a stream into a fresh upper
// directory on the receiving node (ApplyDiff).
//
// The stream is untrusted input on the receiver: ApplyDiff resolves every
// entry through file descriptors with openat2(RESOLVE_BENEATH|
// RESOLVE_NO_SYMLINKS) so no entry, hard-link target or whiteout can reach
// outside the upper directory, and it refuses device nodes unless asked.
//
// The package has no knowledge of containers, mounts or the runtime; it
// works on directories and byte streams. See docs/rootfs-layers.md.
package layer
