// Package rootfs builds a container's filesystem view from inside its init
// process: it performs the OCI spec's mounts into the rootfs, creates device
// nodes and /dev symlinks, switches the root (pivot_root or MS_MOVE+chroot),
// and then applies read-only and masked paths, sysctls and the console bind.
//
// The init calls, in this order, inside its new mount namespace:
//
//	Prepare(spec, opts)   // mounts and devices into opts.Rootfs (host view)
//	Pivot(rootfs, noPivot)
//	BindConsole(slave)    // optional, when the container has a terminal
//	WriteSysctls(spec)    // before Finalize: it makes /proc/sys read-only
//	Finalize(spec)        // readonlyPaths, maskedPaths, root.readonly, propagation
//
// Validate and ValidateSysctls are pure checks meant for the parent, before
// any process or namespace exists, so that a bad spec fails with a one-line
// error instead of a half-built container.
//
// Every path inside the rootfs is resolved with filepath-securejoin's
// pathrs-lite (openat2 or an emulation of it) and mounts land on
// /proc/self/fd/N of an O_PATH handle, so a symlink planted in the image can
// never redirect a mount, mknod or chown onto the host. See docs/rootfs.md.
package rootfs
