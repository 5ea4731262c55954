// Package transfer streams a directory of checkpoint files from one agent to
// another over gRPC (api/transfer/v1), resumably.
//
// The sender (Send) announces the files with their sizes and SHA-256 digests,
// learns which byte ranges the receiver already holds, and streams the rest as
// fixed-size chunks, each zstd-compressed when that makes it smaller and carrying
// the CRC-32C of its raw bytes. The receiver (Receiver, served with
// RegisterServer) verifies every chunk, writes it with pwrite at its offset into a
// preallocated file under its own root directory, journals completed chunks, and
// on commit checks every file's SHA-256 before marking the transfer complete.
//
// The sender is untrusted input for the receiver: it names files only relative to
// a directory the receiver chooses, and names that are absolute, contain "." or
// ".." elements, or are not in the header are refused.
//
// Both sides pipeline their work over the machine's cores (read, compress, send;
// receive, decompress, write) with a bounded number of chunks in flight, and stop
// promptly when their context is cancelled, leaving a state the next Send with the
// same transfer id resumes from. See docs/transfer.md.
//
// The package moves bytes only: it knows nothing of containers, CRIU or the
// runtime. Subpackage layer handles root filesystem diffs.
package transfer
