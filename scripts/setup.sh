#!/usr/bin/env bash
# setup.sh installs everything migrate's build, tests and demo need on a Debian 12
# host: Debian packages, CRIU >= 4.1 (built from Debian's newer source package when
# the host's is too old or broken), and Go module downloads. Idempotent and quiet
# when everything is present.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CRIU=${CRIU:-/usr/local/sbin/criu}
CACHE=${MIGRATE_CACHE:-/var/cache/migrate}
CRIU_MIN=40100 # 4.1.0: first release with the vDSO fix for current kernels (CRIU #2532)

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (containers, cgroups and CRIU need it): try 'sudo make test'"
[ -r /etc/debian_version ] || die "this script supports Debian 12 (bookworm) hosts only; install the packages listed in scripts/setup.sh by hand"
command -v go >/dev/null || [ -x /usr/local/go/bin/go ] || die "Go is missing: install Go >= 1.26 to /usr/local/go (https://go.dev/dl)"

PKGS=(
	# runtime, networking and test hosts
	iptables nftables iproute2 procps psmisc util-linux kmod
	# fixtures
	busybox-static debootstrap
	# build: cgo for seccomp, protobuf generation
	gcc make pkgconf libseccomp-dev protobuf-compiler git ca-certificates
	# reference runtimes for comparison tests and benchmarks
	runc crun
	# metrics tests: a real Prometheus server and promtool (its service is kept off below)
	prometheus
	# CRIU build dependencies (bookworm's versions are fine for CRIU 4.x)
	dpkg-dev patch libprotobuf-c-dev protobuf-c-compiler libnl-3-dev libnet1-dev libcap-dev
	libbsd-dev libgnutls28-dev libnftables-dev uuid-dev libprotobuf-dev python3
)

apt_updated=
apt_update() {
	[ -n "$apt_updated" ] && return
	log "apt-get update"
	apt-get update -qq >/dev/null
	apt_updated=1
}

missing=()
for p in "${PKGS[@]}"; do
	[ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	apt_update
	log "installing ${missing[*]}"
	# Packages must not start services here (Debian's prometheus starts one): a
	# policy-rc.d answering 101 tells invoke-rc.d and deb-systemd-invoke not to.
	# An existing policy is left as it is.
	policy=
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 0755 /usr/sbin/policy-rc.d
		policy=/usr/sbin/policy-rc.d
		trap 'rm -f /usr/sbin/policy-rc.d' EXIT
	fi
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	if [ -n "$policy" ]; then
		rm -f "$policy"
		trap - EXIT
	fi
fi

# The tests run their own Prometheus; the system's service stays stopped and off
# at boot (the package enables it under systemd even when it was not started).
if [ -d /run/systemd/system ] && systemctl is-enabled -q prometheus.service 2>/dev/null; then
	log "disabling the system prometheus service (the tests run their own)"
	systemctl disable --now -q prometheus.service
elif [ ! -d /run/systemd/system ] && ls /etc/rc[2-5].d/S*prometheus >/dev/null 2>&1; then
	# Just installed (the start links are removed below): stop it in case a
	# permissive policy-rc.d let the package start it.
	/etc/init.d/prometheus stop >/dev/null 2>&1 || true
	update-rc.d prometheus disable >/dev/null 2>&1
fi

# criu_version prints the version of $1 as an integer (4.1.1 -> 40101), or 0.
criu_version() {
	local v
	v=$("$1" --version 2>/dev/null | sed -n 's/^Version: *//p' | head -n1)
	[ -n "$v" ] || { echo 0; return; }
	IFS=. read -r a b c <<<"$v"
	echo $((a * 10000 + ${b:-0} * 100 + ${c:-0}))
}

criu_ok() {
	[ -x "$CRIU" ] && [ "$(criu_version "$CRIU")" -ge "$CRIU_MIN" ] && "$CRIU" check >/dev/null 2>&1
}

# The CRIU this script builds carries the patches in scripts/criu-patches
# (docs/criu.md, "Patches"); the stamp beside it names the set it was built
# with, so a changed set rebuilds it. A CRIU this script did not build (no
# stamp, no build cache) is left as it is: it works, only slower.
CRIU_PATCHES="$ROOT/scripts/criu-patches"
CRIU_STAMP=/usr/local/share/migrate/criu-build
criu_patch_set() {
	cat "$CRIU_PATCHES"/*.patch 2>/dev/null | sha256sum | cut -d' ' -f1
}
criu_stale() {
	[ -f "$CRIU_STAMP" ] || [ -d "$CACHE/criu-src" ] || return 1
	[ "$(cat "$CRIU_STAMP" 2>/dev/null)" != "patches $(criu_patch_set)" ]
}

if ! criu_ok || criu_stale; then
	log "building CRIU >= 4.1 for $CRIU from Debian's criu source package, with our patches"
	# Source entries only: they add no binary packages, and the pin keeps it that way
	# should anyone add binary entries for these suites later.
	cat >/etc/apt/sources.list.d/migrate-criu-src.sources <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: trixie sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
	cat >/etc/apt/preferences.d/migrate-criu-src <<'PIN'
Package: *
Pin: release n=trixie
Pin-Priority: -10

Package: *
Pin: release n=sid
Pin-Priority: -10
PIN
	src="$CACHE/criu-src"
	mkdir -p "$src"
	find "$src" -mindepth 1 -maxdepth 1 ! -name 'criu_*.orig.tar.*' -exec rm -rf {} +
	# Only the upstream tarball is needed for 'make criu'; apt verifies its hash against
	# the signed Sources index. Mirrors sometimes miss a suite's Debian delta, so a
	# failed fetch of the other pieces is not fatal and the next suite is tried.
	if ! ls "$src"/criu_*.orig.tar.* >/dev/null 2>&1; then
		apt_updated=
		apt_update
		for suite in sid trixie; do
			(cd "$src" && apt-get source --download-only -qq "criu/$suite" >/dev/null 2>&1) || true
			ls "$src"/criu_*.orig.tar.* >/dev/null 2>&1 && break
		done
	fi
	orig=$(ls "$src"/criu_*.orig.tar.* 2>/dev/null | sort -V | tail -n1)
	[ -n "$orig" ] || die "could not download Debian's criu source (is deb.debian.org reachable?)"
	tar -C "$src" -xf "$orig"
	dir=$(find "$src" -maxdepth 1 -mindepth 1 -type d -name 'criu-*' | head -n1)
	[ -n "$dir" ] || die "criu source package unpacked nothing under $src"
	# A patch a newer CRIU no longer needs (or no longer takes) is skipped, not fatal.
	for p in "$CRIU_PATCHES"/*.patch; do
		[ -f "$p" ] || continue
		if patch -d "$dir" -p1 --forward --batch --dry-run <"$p" >/dev/null 2>&1; then
			patch -d "$dir" -p1 --forward --batch <"$p" >/dev/null || die "CRIU patch $(basename "$p") failed"
			log "applied $(basename "$p")"
		else
			log "skipped $(basename "$p"): it does not apply to $(basename "$dir")"
		fi
	done
	log "building $(basename "$dir") (about a minute)"
	make -C "$dir" -j"$(nproc)" criu >"$src/build.log" 2>&1 || die "CRIU build failed; see $src/build.log"
	install -D -m 0755 "$dir/criu/criu" "$CRIU"
	rm -f /run/criu.kdat # its cache of kernel features is per binary
	criu_ok || die "$CRIU built but 'criu check' fails: run '$CRIU check' to see why"
	mkdir -p "$(dirname "$CRIU_STAMP")"
	echo "patches $(criu_patch_set)" >"$CRIU_STAMP"
	log "installed $("$CRIU" --version | head -n1) to $CRIU"
fi

# Go modules, so later builds and tests need no network. Quick and silent when cached;
# stderr is kept so a failure says which module could not be fetched.
GO=$(command -v go || echo /usr/local/go/bin/go)
(cd "$(dirname "$0")/.." && "$GO" mod download) || die "go mod download failed: is the Go module proxy reachable?"
