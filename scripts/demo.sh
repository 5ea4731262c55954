#!/usr/bin/env bash
# demo.sh moves a live HTTP service between two nodes and back while a client keeps
# requesting it. The nodes are network namespaces on one machine, joined by a
# "switch" namespace, each running its own migrated with certificates from
# `migratectl cluster init`; a third namespace is the client. The service is
# httpcounter, which answers every request with the number of requests it has
# served, counted in memory: after each move the client's count must go on, not
# start again at 1. For each move the demo prints the downtime the agent measured,
# the gap the client saw, the bytes sent, and the client's count before and after.
# Everything it made (namespaces, agents, the container, its temporary directory) is
# removed when it ends, also on Ctrl-C. `make demo` sets up and builds what it needs
# first; docs/demo.md explains the choices.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE=${MIGRATE_CACHE:-/var/cache/migrate}
BIN=${MIGRATE_BIN:-bin}
MIGRATED=$BIN/migrated
CTL=$BIN/migratectl
NET=${DEMO_NET:-10.88.0}  # the /24 the demo's namespaces share (inside them only)
PORT=8080
PEER_PORT=7443
ID=web-$$                 # container ids name cgroups, which all agents of a kernel share
PREFIX=mdemo$$            # network namespace names
REQUESTS_MAX=6000         # the client stops by itself after this many (10 min)
MODE=${DEMO_MODE:-auto}   # move mode: auto lets the agents choose
MOVE_TIMEOUT=120          # seconds; a move that takes longer fails the demo

declare -A IP=([node1]=$NET.1 [node2]=$NET.2 [client]=$NET.100)
CIP=$NET.10               # the container's own address, when agents can give it one

say() { printf '\n== %s\n' "$*"; }
info() { printf '   %s\n' "$*"; }
die() {
	printf 'demo: %s\n' "$*" >&2
	exit 1
}

[ "$(id -u)" = 0 ] || die "must run as root: try 'sudo make demo'"
for c in ip nsenter setsid timeout busybox python3; do
	command -v "$c" >/dev/null || die "$c missing: run scripts/setup.sh (make demo does)"
done
[ -x "$MIGRATED" ] && [ -x "$CTL" ] || die "$MIGRATED or $CTL missing: run 'make demo' (or 'make build')"
[ -x "$CACHE/busybox/rootfs/usr/local/bin/httpcounter" ] || die "busybox rootfs with httpcounter missing in $CACHE: run 'make demo'"
[ -r "$CACHE/busybox/config.json" ] || die "$CACHE/busybox/config.json missing: run 'make demo'"

work=$(mktemp -d /tmp/migrate-demo.XXXXXX)
# The script's own stdout and stderr, for cleanup: a signal can arrive while a
# function runs with its output redirected to a file.
exec 3>&1 4>&2
netns=()
declare -A agent_pid=()
client_pid=

declare -A NS=() SOCK=()
for h in node1 node2 client; do
	NS[$h]=/run/netns/$PREFIX-$h
	SOCK[$h]=$work/$h/ctl.sock
done
ctl() { # ctl NODE ARGS...
	local n=$1
	shift
	"$CTL" --socket "${SOCK[$n]}" "$@"
}

cleanup() {
	local rc=$?
	# A second Ctrl-C must not stop the cleanup half way.
	trap - EXIT
	trap '' INT TERM
	set +e
	exec 1>&3 2>&4
	# Said here, not in the INT trap: the signal may be taken by a subshell (a
	# command substitution), whose exit status is then what the script exits with.
	case $rc in 130 | 143) printf '\ndemo: interrupted, cleaning up\n' >&2 ;; esac
	if [ -n "$client_pid" ]; then
		kill "$client_pid" 2>/dev/null
		wait "$client_pid" 2>/dev/null
	fi
	# Containers outlive their agent (an agent restart must not kill them), so
	# they are removed through the agents first, once no move is under way: a
	# target still restoring does not list the container yet. 60 s at most.
	local busy waited=
	for _ in $(seq 120); do
		busy=
		for n in "${!agent_pid[@]}"; do
			ctl "$n" operations ls 2>/dev/null | awk 'NR > 1 && $4 == "running" { f = 1 } END { exit !f }' && busy=1
		done
		[ -n "$busy" ] || break
		[ -n "$waited" ] || echo "demo: waiting for the move under way to end" >&2
		waited=1
		sleep 0.5
	done
	for n in "${!agent_pid[@]}"; do
		for _ in 1 2 3 4 5; do
			ctl "$n" ps -q 2>/dev/null | grep -qx "$ID" || break
			ctl "$n" rm -f "$ID" >/dev/null 2>&1 && break
			sleep 1
		done
	done
	for n in "${!agent_pid[@]}"; do kill -TERM "${agent_pid[$n]}" 2>/dev/null; done
	for n in "${!agent_pid[@]}"; do
		for _ in $(seq 100); do
			kill -0 "${agent_pid[$n]}" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "${agent_pid[$n]}" 2>/dev/null
		wait "${agent_pid[$n]}" 2>/dev/null
	done
	for n in "${netns[@]}"; do ip netns del "$n" 2>/dev/null; done
	# Whatever an agent left mounted under the work directory, innermost first.
	awk -v w="$work/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do
		umount -l "$m" 2>/dev/null
	done
	rm -rf --one-file-system "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# fail shows the end of both agents' logs, then exits.
fail() {
	local n
	for n in node1 node2; do
		[ -s "$work/$n/agent.log" ] || continue
		printf '\n-- last lines of the %s agent log:\n' "$n" >&2
		tail -n 15 "$work/$n/agent.log" >&2
	done
	die "$@"
}

# --- network ----------------------------------------------------------------
say "network: a switch and three namespaces on $NET.0/24"
sw=$PREFIX-sw
ip netns add "$sw"
netns+=("$sw")
ip -n "$sw" link set lo up
ip -n "$sw" link add br0 type bridge
ip -n "$sw" link set br0 up
# Each host: a veth to the switch, enslaved on its side to the host's bridge br0,
# which holds the host's address (containers' veths join br0 too).
for h in node1 node2 client; do
	n=$PREFIX-$h
	ip netns add "$n"
	netns+=("$n")
	ip -n "$n" link set lo up
	ip -n "$sw" link add "p-$h" type veth peer name uplink netns "$n"
	ip -n "$sw" link set "p-$h" master br0 up
	ip -n "$n" link add br0 type bridge
	ip -n "$n" link set uplink master br0 up
	ip -n "$n" link set br0 up
	ip -n "$n" addr add "${IP[$h]}/24" dev br0
	info "$(printf '%-7s %s' "$h" "${IP[$h]}")"
done

# --- certificates -----------------------------------------------------------
say "certificates: migratectl cluster init (a CA, node1, node2)"
"$CTL" cluster init --dir "$work/pki" --nodes node1,node2 >/dev/null
info "$work/pki"

# --- agents -----------------------------------------------------------------
# Containers get their own address only when this migrated supports it.
network=
touch "$work/empty.yaml"
if "$MIGRATED" daemon --config "$work/empty.yaml" --print-config 2>/dev/null | grep -q '^network:' &&
	"$CTL" run --help 2>/dev/null | grep -q -- '--ip'; then
	network=$'network:\n  bridge: br0\n'
fi
say "agents: migrated in node1 and node2"
for h in node1 node2; do
	peer=node2
	[ "$h" = node1 ] || peer=node1
	mkdir -p "$work/$h"
	cat >"$work/$h/migrated.yaml" <<EOF
node: $h
dataDir: $work/$h/data
controlSocket: ${SOCK[$h]}
stopTimeout: 2s
tls:
  dir: $work/pki
peer:
  listen: ${IP[$h]}:$PEER_PORT
peers:
  $peer: ${IP[$peer]}:$PEER_PORT
$network
EOF
	# nsenter, not `ip netns exec`, which would hide the host's cgroup file system;
	# setsid keeps Ctrl-C from the agents, which must outlive the script's own
	# processes to remove the container in cleanup.
	setsid nsenter --net="${NS[$h]}" -- "$MIGRATED" daemon --config "$work/$h/migrated.yaml" >"$work/$h/agent.log" 2>&1 3>&- 4>&- &
	agent_pid[$h]=$!
done
for h in node1 node2; do
	for i in $(seq 150); do
		ctl "$h" version >/dev/null 2>&1 && break
		kill -0 "${agent_pid[$h]}" 2>/dev/null || fail "the $h agent exited"
		[ "$i" -lt 150 ] || fail "the $h agent did not come up in 15s"
		sleep 0.1
	done
done
# reachable NODE PEER: does NODE's agent reach PEER?
reachable() {
	ctl "$1" nodes -o json | python3 -c '
import json, sys
peer = sys.argv[1]
nodes = json.load(sys.stdin).get("nodes", [])
sys.exit(0 if any(n.get("name") == peer and n.get("reachable") for n in nodes) else 1)' "$2"
}
reachable node1 node2 || fail "node1 does not reach node2 at ${IP[node2]}:$PEER_PORT"
reachable node2 node1 || fail "node2 does not reach node1 at ${IP[node1]}:$PEER_PORT"
info "node1 and node2 up, each reaching the other over mTLS (peer port $PEER_PORT)"

# --- the service ------------------------------------------------------------
bundle=$work/bundle
mkdir -p "$bundle"
# The cached busybox root, read-only: the agent puts each container on its own
# overlay over it, and the first move sends it to node2 as a base.
python3 - "$CACHE/busybox/config.json" "$CACHE/busybox/rootfs" "$bundle/config.json" "$PORT" <<'PY'
import json, sys
src, rootfs, dst, port = sys.argv[1:]
with open(src) as f:
    spec = json.load(f)
spec["root"] = {"path": rootfs, "readonly": True}
spec["process"]["terminal"] = False
spec["process"]["args"] = ["/usr/local/bin/httpcounter", "-port", port]
spec["hostname"] = "web"
with open(dst, "w") as f:
    json.dump(spec, f, indent="\t")
PY
if [ -n "$network" ]; then
	say "container $ID: httpcounter on node1"
	ctl node1 run -b "$bundle" --ip "$CIP/24" "$ID" >/dev/null || fail "run $ID on node1"
	url=http://$CIP:$PORT/
	# One request from the client namespace. timeout, not wget -T: Debian 12's
	# busybox wget crashes with -T.
	fetch() { nsenter --net="${NS[client]}" -- timeout 1 busybox wget -q -O - "$url" 2>/dev/null; }
	info "at $CIP:$PORT, its own address on the shared network, kept across moves"
	client_desc="GET $url every 100 ms from ${IP[client]}"
else
	say "container $ID: httpcounter on node1, port $PORT"
	ctl node1 run -b "$bundle" "$ID" >/dev/null || fail "run $ID on node1"
	url=http://127.0.0.1:$PORT/
	# Without container addresses the client asks through the node holding the
	# container: wget inside it, by `migratectl exec`.
	fetch() {
		local h
		for h in node1 node2; do
			timeout 3 "$CTL" --socket "${SOCK[$h]}" exec "$ID" -- wget -q -O - "$url" 2>/dev/null && return 0
		done
		return 1
	}
	info "this migrated gives containers no address of their own: the client asks"
	info "through the agent holding it (migratectl exec $ID -- wget $url)"
	client_desc="GET $url every 100 ms, through the agent holding the container"
fi

# --- the client -------------------------------------------------------------
# One line per request: "<unix time> <count>", or "<unix time> -" when it got no
# answer. Bounded: it stops by itself after REQUESTS_MAX requests.
client() {
	local i n
	for ((i = 0; i < REQUESTS_MAX; i++)); do
		if n=$(fetch) && [[ $n =~ ^[0-9]+$ ]]; then
			echo "$EPOCHREALTIME $n"
		else
			echo "$EPOCHREALTIME -"
		fi
		sleep 0.1
	done >>"$work/client.log"
}
: >"$work/client.log"
client 3>&- 4>&- &
client_pid=$!

# last_count prints the client's latest count (empty if none yet).
last_count() { awk '$2 != "-" { n = $2 } END { print n }' "$work/client.log"; }
# wait_count N: wait until the client has seen a count above N.
wait_count() {
	local i c
	for i in $(seq 300); do
		c=$(last_count)
		[ -n "$c" ] && [ "$c" -gt "$1" ] && return 0
		sleep 0.1
	done
	fail "the client saw no count above $1 in 30s (last: ${c:-none})"
}
say "client: $client_desc"
wait_count 10
info "the client sees count $(last_count)"

# --- moves ------------------------------------------------------------------
summary=()
# move FROM TO: move the container, wait for the client to get answers again,
# and report the move and what the client saw.
move() {
	local from=$1 to=$2 t0 t1 out
	say "move $ID: $from -> $to"
	t0=$EPOCHREALTIME
	if ! timeout "$MOVE_TIMEOUT" "$CTL" --socket "${SOCK[$from]}" move "$ID" --to "$to" --mode "$MODE" -o json \
		>"$work/move.json" 2>"$work/move.err"; then
		sed 's/^/   | /' "$work/move.err" >&2
		fail "move $from -> $to failed"
	fi
	t1=$EPOCHREALTIME
	wait_count "$(last_count)"
	sleep 0.5
	out=$(python3 - "$work/move.json" "$work/client.log" "$t0" "$t1" "$from" "$to" <<'PY'
import json, sys
path, log, t0, t1, src, dst = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5], sys.argv[6]
move = None
dec, text = json.JSONDecoder(), open(path).read()
i = 0
while i < len(text):
    while i < len(text) and text[i].isspace():
        i += 1
    if i == len(text):
        break
    ev, i = dec.raw_decode(text, i)
    move = ev.get("move") or move
if move is None:
    sys.exit("no move result in the agent's events")

def mib(n):
    return "%.1f MiB" % (int(n) / 2**20)

down = float(move.get("downtime", "0s").rstrip("s"))
# The client's answers around the move: the longest silence between two answers
# that begins before the move ended, and the counts on each side of it.
answers = []
for line in open(log):
    t, n = line.split()
    if n != "-":
        answers.append((float(t), int(n)))
best = None
for (ta, na), (tb, nb) in zip(answers, answers[1:]):
    if tb < t0 or ta > t1:
        continue
    if best is None or tb - ta > best[0]:
        best = (tb - ta, na, nb)
if best is None:
    sys.exit("the client got no answers around the move")
gap, before, after = best
base = "base sent (%s)" % mib(move.get("baseBytes", 0)) if move.get("baseSent") else "base already there"
mode = move.get("mode", "?")
reason = move.get("modeReason", "")
print("   mode %s%s" % (mode, " (%s)" % reason if reason and reason != "requested" else ""))
print("   downtime %.2fs (agent); the client had no answer for %.2fs" % (down, gap))
print("   sent %s (%s on the wire), %s" % (mib(move.get("rawBytes", 0)), mib(move.get("wireBytes", 0)), base))
verdict = "goes on" if after > before else "RESTARTED"
print("   client count: %d before, %d after: %s" % (before, after, verdict))
print("@%s -> %s|%s|%.2fs|%.2fs|%s|%s|%d -> %d|%s" % (src, dst, mode, down, gap, mib(move.get("rawBytes", 0)),
      "sent" if move.get("baseSent") else "kept", before, after, verdict))
PY
	) || fail "could not read the move's result"
	grep -v '^@' <<<"$out"
	summary+=("$(grep '^@' <<<"$out" | cut -c2-)")
	grep -q '|goes on$' <<<"${summary[-1]}" || fail "the count did not go on across the move: the service restarted"
	ctl "$from" ps -q | grep -qx "$ID" && fail "$from still has $ID after the move"
	return 0
}

move node1 node2
sleep 2
move node2 node1

say "summary"
row() { printf '   %-16s %-9s %-9s %-11s %-11s %-6s %s\n' "$@"; }
row MOVE MODE DOWNTIME "CLIENT GAP" SENT BASE "CLIENT COUNT"
for s in "${summary[@]}"; do
	IFS='|' read -r m o d g b k c _ <<<"$s"
	row "$m" "$o" "$d" "$g" "$b" "$k" "$c"
done
info "$ID runs on node1 again, its count at $(last_count): one process's memory, never restarted"
say "demo passed; cleaning up"
