#!/usr/bin/env bash
# fixtures.sh builds one test fixture into the cache directory; the Makefile calls it
# only when the fixture is missing. Each is built in DIR.tmp and renamed to DIR, so
# an interrupted build never leaves a half-made fixture that looks complete.
#
#   fixtures.sh busybox DIR   rootfs from Debian's busybox-static (seconds)
#   fixtures.sh debian DIR    bookworm minbase rootfs with python3 and redis-server
#                             (debootstrap, a few minutes)
set -euo pipefail

die() { printf 'fixtures: %s\n' "$*" >&2; exit 1; }
log() { printf 'fixtures: %s\n' "$*" >&2; }

[ $# = 2 ] || die "usage: $0 busybox|debian DIR"
kind=$1 dir=${2%/}
tmp=$dir.tmp

# clean_tmp removes a leftover DIR.tmp, first unmounting anything a failed
# debootstrap left mounted in it (proc, sys), so rm never walks a host filesystem.
clean_tmp() {
	[ -e "$tmp" ] || return 0
	findmnt -rn -o TARGET | grep -F "$tmp/" | sort -r | while read -r m; do
		umount -l "$m" || true
	done
	rm -rf --one-file-system "$tmp"
}

busybox_rootfs() {
	local bb=/bin/busybox a rel
	[ -x "$bb" ] || die "$bb missing: install busybox-static (scripts/setup.sh does)"
	mkdir -p "$tmp"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,proc,sys,dev,tmp,etc,root,run,var/tmp}
	chmod 1777 "$tmp/tmp" "$tmp/var/tmp"
	chmod 0700 "$tmp/root"
	install -m 0755 "$bb" "$tmp/bin/busybox"
	# Relative applet links, so they resolve the same inside the container and
	# when the rootfs is inspected from the host.
	for a in $("$bb" --list-full); do
		case $a in bin/busybox | linuxrc) continue ;; esac
		rel=$(dirname "$a" | sed -e 's|[^/]*|..|g')
		ln -sf "$rel/bin/busybox" "$tmp/$a"
	done
	cat >"$tmp/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
	cat >"$tmp/etc/group" <<'G'
root:x:0:
tty:x:5:
nogroup:x:65534:
G
	printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$tmp/etc/hosts"
	: >"$tmp/etc/resolv.conf"
	echo migrate >"$tmp/etc/hostname"
}

debian_rootfs() {
	command -v debootstrap >/dev/null || die "debootstrap missing: run scripts/setup.sh"
	log "debootstrap bookworm minbase into $dir (a few minutes; log: $dir.log)"
	if ! debootstrap --variant=minbase --include=python3,redis-server \
		bookworm "$tmp" http://deb.debian.org/debian >"$dir.log" 2>&1; then
		tail -n 20 "$dir.log" >&2
		clean_tmp
		die "debootstrap failed; full log in $dir.log"
	fi
	# Downloaded .debs are not needed once installed.
	rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*_Packages
	chroot "$tmp" python3 -c 'pass' || die "python3 does not run in the new rootfs"
	chroot "$tmp" redis-server --version >/dev/null || die "redis-server does not run in the new rootfs"
}

[ "$(id -u)" = 0 ] || die "must run as root (rootfs files must be owned by root)"
mkdir -p "$(dirname "$dir")"
clean_tmp
case $kind in
busybox) busybox_rootfs ;;
debian) debian_rootfs ;;
*) die "unknown fixture $kind" ;;
esac
rm -rf --one-file-system "$dir"
mv "$tmp" "$dir"
