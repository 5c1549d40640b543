#!/bin/bash
# rpol side by side with postfwd2 and policyd-spf (benches/peers.rs), inside a
# private network + mount namespace: only `lo` exists, /etc/resolv.conf is
# replaced by one naming knotd on 127.0.0.53 (serving tests/zones/spftest.zone),
# so the peers, which resolve through libc, never reach the host's resolver.
#
#   benches/peers.sh          # as root; installs the peers with apt if missing
#
# Not part of `cargo test` or .ci/run. The bench bounds every run in requests
# and time; everything started here is stopped on exit.

set -u
export PATH=$PATH:/usr/sbin:/sbin

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)

# ---------------------------------------------------------------- outside --
if [ "${1:-}" != "--inside" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "peers: must run as root (network namespace, peers run as nobody)" >&2
        exit 2
    fi
    need=""
    for cmd in postfwd2:postfwd policyd-spf:postfix-policyd-spf-python socat:socat \
        knotd:knot kdig:knot-dnsutils; do
        command -v "${cmd%%:*}" >/dev/null 2>&1 || need="$need ${cmd#*:}"
    done
    if [ -n "$need" ]; then
        echo "peers: installing$need"
        # shellcheck disable=SC2086
        DEBIAN_FRONTEND=noninteractive apt-get install -y $need >/dev/null ||
            { apt-get update >/dev/null &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y $need >/dev/null; } ||
            echo "peers: could not install$need; the bench skips what is missing" >&2
    fi
    for cmd in knotd kdig unshare ip mount; do
        command -v "$cmd" >/dev/null 2>&1 || { echo "peers: missing $cmd" >&2; exit 2; }
    done
    # Build outside (cargo may need the registry); inside runs the binary
    # itself, so that a signal reaches it (and it stops what it started).
    BENCH=$(cd "$ROOT" && cargo bench --bench peers --no-run --message-format=json |
        sed -n 's/.*"executable":"\([^"]*\/deps\/peers-[^"]*\)".*/\1/p' | tail -n 1)
    if [ ! -x "$BENCH" ]; then
        echo "peers: building the bench failed" >&2
        exit 2
    fi
    T=$(mktemp -d /tmp/rpol-peers.XXXXXX) || exit 2
    chmod 0755 "$T"
    export T ROOT BENCH
    unshare -n -m --propagation private bash "$HERE/peers.sh" --inside &
    inside=$!
    trap 'kill -TERM $inside 2>/dev/null' INT TERM
    while :; do
        wait $inside
        rc=$?
        kill -0 $inside 2>/dev/null || break
    done
    trap - INT TERM
    # Safety net, should the inside have died before its own clean-up.
    if [ -s "$T/knot.pid" ]; then
        pid=$(tr -dc 0-9 <"$T/knot.pid")
        [ -n "$pid" ] && kill "$pid" 2>/dev/null
    fi
    if [ -s "$T/work/postfwd-run/postfwd.pid" ]; then
        postfwd2 --kill --pidfile "$T/work/postfwd-run/postfwd.pid" \
            --cache_port "$T/work/postfwd-run/cache.sock" >/dev/null 2>&1
    fi
    if [ -s "$T/work/socat.pid" ]; then
        pid=$(tr -dc 0-9 <"$T/work/socat.pid")
        [ -n "$pid" ] && kill -TERM -- "-$pid" 2>/dev/null
    fi
    rm -rf "$T"
    exit $rc
fi

# ----------------------------------------------------------------- inside --
# Variables from the outside: T, ROOT, BENCH.
cleanup() {
    if [ -s "$T/knot.pid" ]; then
        kill "$(cat "$T/knot.pid")" 2>/dev/null
        wait "$(cat "$T/knot.pid")" 2>/dev/null
        rm -f "$T/knot.pid"
    fi
}
trap cleanup EXIT
trap 'exit 143' TERM INT

ip link set lo up || exit 2
echo "nameserver 127.0.0.53" >"$T/resolv.conf"
mount --bind "$T/resolv.conf" /etc/resolv.conf || exit 2

K=$T/knot
mkdir -p "$K"
cp "$ROOT/tests/zones/spftest.zone" "$K/spftest.zone"
cat >"$K/knot.conf" <<KNOT
server:
    rundir: "$K"
    listen: 127.0.0.53@53
database:
    storage: "$K"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "$K"
    semantic-checks: off
zone:
  - domain: spftest
    file: "spftest.zone"
KNOT
knotd -c "$K/knot.conf" >"$T/knot.log" 2>&1 &
echo $! >"$T/knot.pid"
for ((i = 0; i < 50; i++)); do
    kdig @127.0.0.53 +short +timeout=1 +retry=0 pass.spftest TXT 2>/dev/null | grep -q spf1 && break
    sleep 0.1
done
if ! getent hosts mx.chain.spftest | grep -q 198.51.100.20; then
    echo "peers: libc does not resolve through knotd on 127.0.0.53" >&2
    cat "$T/knot.log" >&2
    exit 2
fi

cd "$ROOT" || exit 2
RPOL_PEERS_DNS=127.0.0.53:53 RPOL_PEERS_DIR=$T/work "$BENCH" --bench &
bench=$!
# On TERM/INT the bench stops its clients, then what it started, then exits.
trap 'kill -TERM $bench 2>/dev/null' TERM INT
while :; do
    wait $bench
    rc=$?
    kill -0 $bench 2>/dev/null || break
done
exit $rc
