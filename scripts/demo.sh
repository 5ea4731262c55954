#!/usr/bin/env bash
# demo.sh shows migrate's runtime at work: it runs a busybox container with
# bin/migrated's runc-compatible CLI, prints what the container sees (hostname,
# user, the cgroup memory limit it was given, its processes), checks those values
# and removes everything again, also on Ctrl-C. `make demo` builds what it needs
# first. Until live migration lands this is the whole demo.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${MIGRATE_CACHE:-/var/cache/migrate}
BIN=${MIGRATED:-bin/migrated}
HOSTNAME_WANT=migrate-demo
LIMIT=$((64 << 20))
# DEMO_HOLD=N keeps the container running N more seconds, to look at it from
# another shell (bin/migrated oci --root /tmp/migrate-demo.*/state list).
HOLD=${DEMO_HOLD:-0}
[[ $HOLD =~ ^[0-9]+$ ]] || { echo "demo: DEMO_HOLD must be a number of seconds" >&2; exit 1; }

die() { printf 'demo: %s\n' "$*" >&2; exit 1; }
say() { printf '\n== %s\n' "$*"; }

[ "$(id -u)" = 0 ] || die "must run as root: try 'sudo make demo'"
[ -x "$BIN" ] || die "$BIN missing: run 'make demo' (or 'make build')"
[ -x "$CACHE/busybox/rootfs/bin/busybox" ] || die "busybox rootfs missing in $CACHE: run 'make fixtures'"

work=$(mktemp -d /tmp/migrate-demo.XXXXXX)
id=demo-$$
state=$work/state
runpid=
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -n "$runpid" ] && kill -0 "$runpid" 2>/dev/null; then
		"$BIN" oci --root "$state" kill "$id" KILL >/dev/null 2>&1 || true
	fi
	"$BIN" oci --root "$state" delete --force "$id" >/dev/null 2>&1 || true
	[ -n "$runpid" ] && wait "$runpid" 2>/dev/null || true
	rm -rf --one-file-system "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted, cleaning up" >&2; exit 130' INT TERM

say "bundle: busybox rootfs and the runtime's default spec"
mkdir -p "$work/bundle"
cp -a "$CACHE/busybox/rootfs" "$work/bundle/rootfs"
"$BIN" oci spec --bundle "$work/bundle"
# What the container runs: a script in its rootfs, plus a hostname and a memory
# limit in the spec to read back.
cat >"$work/bundle/rootfs/demo.sh" <<'SH'
echo "hostname: $(hostname)"
echo "uid: $(id -u)"
cg=$(sed -n 's/^[0-9]*:[^:]*memory[^:]*://p' /proc/self/cgroup | head -n1)
for f in /sys/fs/cgroup/memory.max "/sys/fs/cgroup/memory$cg/memory.limit_in_bytes" \
	/sys/fs/cgroup/memory/memory.limit_in_bytes; do
	if [ -r "$f" ]; then echo "memory limit: $(cat "$f") ($f)"; break; fi
done
echo "processes:"
ps -o pid,user,args
sleep "$1"
SH
python3 - "$work/bundle/config.json" "$HOSTNAME_WANT" "$LIMIT" "$HOLD" <<'PY'
import json, sys
path, hostname, limit, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with open(path) as f:
    spec = json.load(f)
spec["process"]["terminal"] = False
spec["process"]["args"] = ["sh", "/demo.sh", hold]
spec["hostname"] = hostname
spec.setdefault("linux", {}).setdefault("resources", {})["memory"] = {"limit": limit}
with open(path, "w") as f:
    json.dump(spec, f, indent="\t")
PY
echo "$work/bundle"

say "$BIN oci run $id"
"$BIN" oci --root "$state" run --bundle "$work/bundle" "$id" >"$work/out" 2>&1 &
runpid=$!
# Poll rather than wait in the foreground so Ctrl-C reaches the trap at once.
for _ in $(seq $(((60 + HOLD) * 10))); do
	kill -0 "$runpid" 2>/dev/null || break
	sleep 0.1
done
kill -0 "$runpid" 2>/dev/null && die "container still running after $((60 + HOLD))s"
rc=0
wait "$runpid" || rc=$?
runpid=
sed 's/^/  | /' "$work/out"
[ "$rc" = 0 ] || die "container exited with status $rc"

say "checks"
fail=0
check() {
	if grep -qE "$2" "$work/out"; then echo "ok    $1"; else echo "FAIL  $1"; fail=1; fi
}
check "hostname is $HOSTNAME_WANT" "^hostname: $HOSTNAME_WANT\$"
check "runs as uid 0 in the container" '^uid: 0$'
check "memory limit is $LIMIT bytes" "^memory limit: $LIMIT "
check "the shell is pid 1 in its pid namespace" '^ +1 +root +sh /demo.sh'
[ "$fail" = 0 ] || die "some checks failed"
say "demo passed; cleaning up"
