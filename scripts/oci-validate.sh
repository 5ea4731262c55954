#!/usr/bin/env bash
# oci-validate.sh runs the OCI runtime-tools v0.9.0 validation programs against
# one or more runc-compatible runtimes and compares their pass counts.
#
# Usage: scripts/oci-validate.sh [-j JOBS] [-t SECONDS] [-o RESULTS_DIR] [RUNTIME...]
#
# RUNTIME is one of:
#   runc        /usr/sbin/runc (or runc on PATH)
#   crun        crun; on a hybrid cgroup host it runs in a private mount namespace
#               with the cgroup2 mount hidden (crun refuses hybrid mode)
#   migrated    our runtime: $MIGRATED if set, else built from ./cmd/migrated
#   NAME=PATH   any other runc-compatible binary
# Default: runc migrated.
#
# A program passes when it exits 0, printed no "not ok" TAP line, and the
# container really ran runtimetest: runtime-tools reports "ok" when runtimetest
# printed nothing, so such runs are marked SILENT and count as failures. The script
# prints a program x runtime table and "runc: N/58  migrated: M/58", keeps one log
# per program in RESULTS_DIR/<runtime>/<program>.log and a machine-readable
# RESULTS_DIR/results.tsv (runtime, program, result, exit code, seconds, first
# failing line). It exits 1 when migrated passes fewer programs than runc, 2 on a
# setup error.
#
# Environment: MIGRATE_CACHE (default /var/cache/migrate) holds the built
# validation programs and rootfs; MIGRATED is a prebuilt migrated binary;
# OCI_VALIDATE_PROGRAMS is a space-separated subset of programs to run.
set -euo pipefail
umask 022

CACHE=${MIGRATE_CACHE:-/var/cache/migrate}
TOOLS=$CACHE/runtime-tools
RT_TOOLS_VERSION=v0.9.0
JOBS=${OCI_VALIDATE_JOBS:-4}
TIMEOUT=${OCI_VALIDATE_TIMEOUT:-180}
RESULTS=${OCI_VALIDATE_RESULTS:-}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PATH=$PATH:/usr/local/go/bin

log() { printf 'oci-validate: %s\n' "$*" >&2; }
die() { printf 'oci-validate: %s\n' "$*" >&2; exit 2; }

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

while getopts "j:t:o:h" opt; do
	case $opt in
	j) JOBS=$OPTARG ;;
	t) TIMEOUT=$OPTARG ;;
	o) RESULTS=$OPTARG ;;
	h) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
RUNTIMES=("$@")
[ ${#RUNTIMES[@]} -gt 0 ] || RUNTIMES=(runc migrated)

[ "$(id -u)" = 0 ] || die "must run as root: the validation programs create real containers"
command -v go >/dev/null || die "go not found"
for c in tar timeout flock busybox; do command -v $c >/dev/null || die "$c not found"; done

# ---------------------------------------------------------------------------
# Validation programs: runtime-tools has no go.mod, so it is built inside a
# throwaway module whose requirements pin versions it compiles with (the newest
# runtime-spec and selinux no longer do; satori/go.uuid v1.2.0 changed NewV4).

write_tools_module() {
	cat >"$TOOLS/go.mod" <<EOF
module migrate.local/runtimetools

go 1.23

require (
	github.com/blang/semver v3.5.1+incompatible
	github.com/hashicorp/errwrap v1.0.0
	github.com/hashicorp/go-multierror v1.1.1
	github.com/mndrix/tap-go v0.0.0-20171203230836-629fa407e90b
	github.com/mrunalp/fileutils v0.5.1
	github.com/opencontainers/runtime-spec v1.0.2
	github.com/opencontainers/runtime-tools $RT_TOOLS_VERSION
	github.com/opencontainers/selinux v1.8.0
	github.com/pkg/errors v0.9.1
	github.com/satori/go.uuid v1.1.0
	github.com/sirupsen/logrus v1.10.2
	github.com/syndtr/gocapability v0.0.0-20200815063812-42c35b437635
	github.com/urfave/cli v1.22.17
	github.com/willf/bitset v1.1.11
	github.com/xeipuuv/gojsonpointer v0.0.0-20180127040702-4e3ac2762d5f
	github.com/xeipuuv/gojsonreference v0.0.0-20180127040603-bd5ef7bd5415
	github.com/xeipuuv/gojsonschema v1.2.0
	golang.org/x/sys v0.13.0
)
EOF
}

build_tools() {
	local stamp=$TOOLS/bin/.stamp want
	want="runtime-tools $RT_TOOLS_VERSION; $(go env GOVERSION); 2"
	[ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && return 0
	log "building runtime-tools $RT_TOOLS_VERSION validation programs in $TOOLS (first run only)"
	mkdir -p "$TOOLS"
	write_tools_module
	local tmp
	tmp=$(mktemp -d "$TOOLS/build.XXXXXX")
	(
		cd "$TOOLS"
		export GOFLAGS=-mod=mod GOWORK=off
		go mod download github.com/opencontainers/runtime-tools
		local src pkgs=()
		src=$(go list -m -f '{{.Dir}}' github.com/opencontainers/runtime-tools)
		for d in "$src"/validation/*/; do
			d=$(basename "$d")
			[ "$d" = util ] || pkgs+=("github.com/opencontainers/runtime-tools/validation/$d")
		done
		go build -o "$tmp/" "${pkgs[@]}"
		# runtimetest runs inside the busybox rootfs: it must be static.
		CGO_ENABLED=0 go build -o "$tmp/runtimetest" github.com/opencontainers/runtime-tools/cmd/runtimetest
	) >"$tmp.log" 2>&1 || { cat "$tmp.log" >&2; rm -rf "$tmp" "$tmp.log"; die "building runtime-tools failed"; }
	rm -f "$tmp.log"
	rm -rf "$TOOLS/bin"
	mkdir -p "$TOOLS/bin"
	local f
	for f in "$tmp"/*; do
		case ${f##*/} in
		runtimetest) mv "$f" "$TOOLS/bin/runtimetest" ;;
		*) mv "$f" "$TOOLS/bin/${f##*/}.t" ;;
		esac
	done
	rm -rf "$tmp"
	echo "$want" >"$stamp"
}

# The rootfs the programs unpack into every bundle: Debian's static busybox with
# one symlink per applet, plus the few files runtimetest and the hooks expect.
build_rootfs() {
	local bb want stamp=$TOOLS/rootfs-amd64.stamp
	bb=$(command -v busybox)
	ldd "$bb" >/dev/null 2>&1 && die "$bb is dynamically linked: install busybox-static"
	want="$(sha256sum "$bb" | cut -d' ' -f1) 2"
	[ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$TOOLS/rootfs-amd64.tar.gz" ] && return 0
	log "building busybox rootfs tarball"
	local r
	r=$(mktemp -d "$TOOLS/rootfs.XXXXXX")
	# The tarball's "." entry sets the mode of the bundle directory it is
	# unpacked into: 0700 (mktemp's) would lock out user-namespaced and
	# non-root container processes.
	chmod 755 "$r"
	mkdir -p "$r"/{bin,dev,etc,proc,root,sys,tmp}
	chmod 1777 "$r/tmp"
	cp "$bb" "$r/bin/busybox"
	local a
	for a in $("$bb" --list); do
		[ "$a" = busybox ] || ln -s busybox "$r/bin/$a"
	done
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$r/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$r/etc/group"
	tar -C "$r" --numeric-owner --owner=0 --group=0 -czf "$TOOLS/rootfs-amd64.tar.gz.tmp" .
	mv "$TOOLS/rootfs-amd64.tar.gz.tmp" "$TOOLS/rootfs-amd64.tar.gz"
	rm -rf "$r"
	echo "$want" >"$stamp"
}

mkdir -p "$CACHE"
(
	flock 9
	build_tools
	build_rootfs
) 9>"$CACHE/.runtime-tools.lock"

mapfile -t ALL_PROGRAMS < <(cd "$TOOLS/bin" && ls -- *.t | sed 's/\.t$//' | sort)
TOTAL=${#ALL_PROGRAMS[@]}
if [ -n "${OCI_VALIDATE_PROGRAMS:-}" ]; then
	read -r -a PROGRAMS <<<"$OCI_VALIDATE_PROGRAMS"
	for p in "${PROGRAMS[@]}"; do [ -x "$TOOLS/bin/$p.t" ] || die "unknown program $p"; done
	TOTAL=${#PROGRAMS[@]}
else
	PROGRAMS=("${ALL_PROGRAMS[@]}")
fi

# ---------------------------------------------------------------------------
# Results directory and one wrapper per runtime. Every wrapper passes its own
# --root so the run neither sees nor disturbs containers outside it.

if [ -z "$RESULTS" ]; then
	mkdir -p "$CACHE/oci-validate"
	RESULTS=$(mktemp -d "$CACHE/oci-validate/run.$(date +%Y%m%d-%H%M%S).XXXX")
	ln -sfn "$RESULTS" "$CACHE/oci-validate/latest"
	# Keep the ten most recent default result directories.
	ls -1dt "$CACHE"/oci-validate/run.* 2>/dev/null | tail -n +11 | while read -r old; do rm -rf "$old"; done
fi
mkdir -p "$RESULTS"
# Bundles live below it: containers with a user namespace or a non-root user
# must be able to traverse it (mktemp makes 0700 directories).
chmod 755 "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
rm -rf "${RESULTS:?}"/{bin,state,work,tmp}
mkdir -p "$RESULTS"/{bin,state,work,tmp}
log "results in $RESULTS"

hybrid_cgroup2() {
	[ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" != cgroup2fs ] &&
		[ "$(stat -f -c %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ]
}

NAMES=()
make_wrapper() { # name, binary, kind (migrated, crun-hybrid or runc-like)
	local name=$1 bin=$2 kind=$3 w=$RESULTS/bin/$1-oci state=$RESULTS/state/$1
	mkdir -p "$state"
	case $kind in
	migrated)
		printf '#!/bin/sh\nexec %q oci --root %q "$@"\n' "$bin" "$state" >"$w" ;;
	crun-hybrid)
		# crun rejects hybrid hierarchies; hide cgroup2 in a private mount
		# namespace (the container inherits it: fine for a reference run).
		printf '#!/bin/sh\nexec unshare -m sh -c %q sh "$@"\n' \
			"umount -l /sys/fs/cgroup/unified && exec $(printf %q "$bin") --root $(printf %q "$state") \"\$@\"" >"$w" ;;
	*)
		printf '#!/bin/sh\nexec %q --root %q "$@"\n' "$bin" "$state" >"$w" ;;
	esac
	chmod 755 "$w"
	NAMES+=("$name")
}

for spec in "${RUNTIMES[@]}"; do
	case $spec in
	runc)
		make_wrapper runc "$(command -v runc || die "runc not found")" runc ;;
	crun)
		b=$(command -v crun) || die "crun not found"
		if hybrid_cgroup2; then make_wrapper crun "$b" crun-hybrid; else make_wrapper crun "$b" crun; fi ;;
	migrated)
		if [ -n "${MIGRATED:-}" ]; then
			b=$(realpath "$MIGRATED")
		else
			b=$RESULTS/bin/migrated
			log "building ./cmd/migrated"
			(cd "$REPO" && go build -o "$b" ./cmd/migrated) || die "building ./cmd/migrated failed"
		fi
		make_wrapper migrated "$b" migrated ;;
	*=*)
		make_wrapper "${spec%%=*}" "$(realpath "${spec#*=}")" other ;;
	*)
		die "unknown runtime $spec (runc, crun, migrated or NAME=PATH)" ;;
	esac
done

# ---------------------------------------------------------------------------
# Running one program. Each gets its own working directory (the programs read
# rootfs-amd64.tar.gz and runtimetest from it; hard links keep this cheap) and
# its own TMPDIR, so bundles a killed program leaves behind are found and removed.

unmount_under() { # lazily unmount anything a runtime left mounted below $1
	local m
	awk -v d="$1/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done
}

run_one() { # runtime program
	local rt=$1 p=$2 dir=$RESULTS/work/$1/$2 tmp=$RESULTS/tmp/$1/$2 log=$RESULTS/$1/$2.log
	mkdir -p "$dir" "$tmp" "$RESULTS/$rt"
	ln -f "$TOOLS/rootfs-amd64.tar.gz" "$TOOLS/bin/runtimetest" "$dir/" 2>/dev/null ||
		cp "$TOOLS/rootfs-amd64.tar.gz" "$TOOLS/bin/runtimetest" "$dir/"
	local start rc=0 secs result first
	start=$(date +%s.%N)
	(cd "$dir" && exec env RUNTIME="$RESULTS/bin/$rt-oci" TMPDIR="$tmp" \
		timeout -k 10 "$TIMEOUT" "$TOOLS/bin/$p.t") >"$log" 2>&1 </dev/null || rc=$?
	secs=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
	first=$(grep -m1 '^not ok' "$log" || true)
	if [ $rc = 124 ] || [ $rc = 137 ]; then
		result=TIMEOUT
	elif [ $rc != 0 ] || [ -n "$first" ]; then
		result=FAIL
	elif grep -q '"stdout": ""' "$log"; then
		# runtime-tools reports "ok" when runtimetest printed nothing, i.e.
		# when the container process died before running it.
		result=SILENT first="runtimetest printed nothing: the container process never ran it"
	elif ! grep -q '^1\.\.[0-9]' "$log" && [[ $p != *_fail ]]; then
		# Programs that relay runtimetest's own TAP print nothing at all, and
		# exit 0, when it never ran. Only the *_fail programs (which expect
		# create to fail) may legitimately print no plan.
		result=SILENT first="no TAP output: the container process never ran runtimetest"
	else
		result=PASS
	fi
	# Without a "not ok" line the reason is the program's last output line.
	[ -n "$first" ] || [ $result = PASS ] || first=$(grep -v '^exit status' "$log" | grep -v '^[[:space:]]*$' | tail -n1 || true)
	unmount_under "$tmp"
	rm -rf "$tmp" "$dir"
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$rt" "$p" "$result" "$rc" "$secs" "$(printf %s "$first" | tr '\t' ' ' | cut -c1-300)" \
		>"$RESULTS/$rt/$p.result"
}
export -f run_one unmount_under
export RESULTS TOOLS TIMEOUT

# Programs that use the fixed cgroup paths /cgrouptest and
# testdir/cgrouptest/container (runtime-tools' cgroups package) cannot overlap,
# neither with each other nor across runtimes or concurrent runs of this script.
is_serial() {
	case $1 in
	linux_cgroups_* | delete_resources | delete_only_create_resources) return 0 ;;
	*) return 1 ;;
	esac
}

parallel_jobs=() serial_jobs=()
for p in "${PROGRAMS[@]}"; do
	for rt in "${NAMES[@]}"; do
		if is_serial "$p"; then serial_jobs+=("$rt" "$p"); else parallel_jobs+=("$rt" "$p"); fi
	done
done

cleanup_cgroups() {
	local c
	for c in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
		[ -d "$c/cgrouptest" ] && find "$c/cgrouptest" -depth -type d -exec rmdir {} \; 2>/dev/null
		[ -d "$c/testdir" ] && find "$c/testdir" -depth -type d -exec rmdir {} \; 2>/dev/null
	done
	return 0
}

cleanup_containers() {
	local rt id
	for rt in "${NAMES[@]}"; do
		for id in $("$RESULTS/bin/$rt-oci" list -q 2>/dev/null); do
			"$RESULTS/bin/$rt-oci" delete --force "$id" >/dev/null 2>&1 || true
		done
	done
	unmount_under "$RESULTS/tmp"
	rm -rf "${RESULTS:?}"/{work,tmp}
}
trap 'cleanup_containers; exit 130' INT TERM

started=$(date +%s)
log "running $TOTAL programs x ${#NAMES[@]} runtimes (${#parallel_jobs[@]}/2 jobs $JOBS at a time, then ${#serial_jobs[@]}/2 cgroup jobs one at a time)"
if [ ${#parallel_jobs[@]} -gt 0 ]; then
	printf '%s\0' "${parallel_jobs[@]}" | xargs -0 -n 2 -P "$JOBS" bash -c 'run_one "$1" "$2"' _
fi
if [ ${#serial_jobs[@]} -gt 0 ]; then
	(
		flock 9
		cleanup_cgroups
		printf '%s\0' "${serial_jobs[@]}" | xargs -0 -n 2 -P 1 bash -c 'run_one "$1" "$2"' _
		cleanup_cgroups
	) 9>"$CACHE/.oci-validate-cgroups.lock"
fi
cleanup_containers
trap - INT TERM

# ---------------------------------------------------------------------------
# Report.

: >"$RESULTS/results.tsv"
for p in "${PROGRAMS[@]}"; do
	for rt in "${NAMES[@]}"; do
		cat "$RESULTS/$rt/$p.result" >>"$RESULTS/results.tsv"
	done
done

{
	printf '%-32s' program
	for rt in "${NAMES[@]}"; do printf ' %-9s' "$rt"; done
	printf '\n'
	for p in "${PROGRAMS[@]}"; do
		printf '%-32s' "$p"
		for rt in "${NAMES[@]}"; do
			printf ' %-9s' "$(awk -F'\t' -v r="$rt" -v p="$p" '$1 == r && $2 == p { print $3 }' "$RESULTS/results.tsv")"
		done
		printf '\n'
	done
} | tee "$RESULTS/table.txt"

declare -A pass
line= lenient=
for rt in "${NAMES[@]}"; do
	pass[$rt]=$(awk -F'\t' -v r="$rt" '$1 == r && $3 == "PASS"' "$RESULTS/results.tsv" | wc -l)
	line+="$rt: ${pass[$rt]}/$TOTAL  "
	lenient+="$rt: $(awk -F'\t' -v r="$rt" '$1 == r && ($3 == "PASS" || $3 == "SILENT")' "$RESULTS/results.tsv" | wc -l)/$TOTAL  "
done
printf '%s\n' "${line%  }" | tee "$RESULTS/summary.txt"
printf '(counting SILENT as passed: %s)\n' "${lenient%  }"
log "done in $(($(date +%s) - started))s; logs in $RESULTS"

if [ -n "${pass[runc]:-}" ] && [ -n "${pass[migrated]:-}" ] && [ "${pass[migrated]}" -lt "${pass[runc]}" ]; then
	log "migrated passes fewer programs than runc"
	exit 1
fi
exit 0
