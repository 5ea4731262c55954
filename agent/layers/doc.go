// Package layers gives each container a layered root filesystem: a read-only
// base, stored once per content digest under the agent's data directory, and
// the container's own writable overlayfs upper layer. A checkpoint then
// carries only the base's digest and the upper layer's diff
// (transfer/layer), and a restore mounts the same base under a fresh upper
// rebuilt from that diff.
//
// Layout:
//
//	<data>/bases/<hex>/             a base, as imported (never modified)
//	<container dir>/rootfs/upper    the container's changes
//	<container dir>/rootfs/work     overlayfs work directory
//	<container dir>/rootfs/merged   the mount the container runs on
//	<container dir>/bundle/         config.json pointing at merged
//	<container dir>/layer.json      what is mounted where
package layers
