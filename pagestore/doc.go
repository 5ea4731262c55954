// Package pagestore is a content-addressed, deduplicating, crash-safe store
// for checkpoint directories (a manifest, CRIU images and an optional rootfs
// diff).
//
// A snapshot is the list of files of one checkpoint directory, each file a
// list of chunk keys (SHA-256 of the raw bytes). Chunks are stored once,
// zstd-compressed, under chunks/<aa>/<key>; snapshots/<name>.json holds the
// manifest. CRIU page images (pages-*.img) are cut at 4 KiB page boundaries
// into small fixed chunks so that successive snapshots of a container whose
// memory barely changed store only the changed pages' chunks; other files
// are cut by content-defined chunking.
//
// Crash safety: chunks are written to tmp/, fsync'd and renamed into place;
// the manifest is written last (temp, fsync, rename, fsync dir), so a
// snapshot is visible only when all it references is durable. A Put or Get
// in progress records the keys it relies on in a lease file in tmp/ named
// after its process (boot id, pid, start time); GC never deletes a leased
// chunk and removes the leases and partial files of dead processes.
//
// What belongs here: the on-disk format, chunking, locking and leases, and
// the operations Put, Get, List, Inspect, Delete, GC and Verify. The package
// knows nothing about containers, CRIU or the network.
package pagestore
