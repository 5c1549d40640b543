#!/bin/bash
# End-to-end test: a real Postfix 3.7 asks rpol through check_policy_service,
# a real SMTP client (swaks) talks to Postfix, and the exact SMTP replies are
# checked.
#
#   tests/e2e/setup.sh                  # once: postfix, swaks, knot (root)
#   RPOL=target/debug/rpol tests/e2e/run.sh
#
# Everything runs inside a private network + mount namespace (unshare -n -m):
# only `lo` exists, /etc/resolv.conf is replaced by one naming knotd on
# 127.0.0.53, and nothing can leave the machine. The Postfix instance lives in
# a temporary directory (its own config, queue and data directories) and
# never touches /etc/postfix or the system's mail queue. Needs root.
#
# Environment:
#   RPOL          rpol binary (default: target/debug/rpol of this checkout)
#   E2E_KEEP=1    keep the temporary directory (logs, queue) for inspection
#   E2E_VERBOSE=1 print every swaks transcript
#
# Prints "N passed, M failed" and exits non-zero on any failure.

set -u
export PATH=$PATH:/usr/sbin:/sbin
unset MAIL_CONFIG

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

# ---------------------------------------------------------------- outside --
if [ "${1:-}" != "--inside" ]; then
    RPOL=${RPOL:-$ROOT/target/debug/rpol}
    case $RPOL in /*) ;; *) RPOL=$PWD/$RPOL ;; esac
    if [ "$(id -u)" != 0 ]; then
        echo "e2e: must run as root (network namespace, Postfix)" >&2
        exit 2
    fi
    missing=""
    for cmd in postfix postconf postcat swaks knotd kdig unshare script ip mount getent; do
        command -v "$cmd" >/dev/null 2>&1 || missing="$missing $cmd"
    done
    if [ -n "$missing" ]; then
        echo "e2e: missing:$missing (run tests/e2e/setup.sh)" >&2
        exit 2
    fi
    if [ ! -x "$RPOL" ]; then
        echo "e2e: rpol binary $RPOL not found (cargo build, or set RPOL)" >&2
        exit 2
    fi
    T=$(mktemp -d /tmp/rpol-e2e.XXXXXX) || exit 2
    # Postfix daemons (user postfix) need to traverse it.
    chmod 0755 "$T"
    export RPOL T
    # unshare execs the script: the namespace lives as long as it and the
    # daemons it starts. The inside part stops every daemon in its trap; a
    # SIGINT/SIGTERM sent to this script is passed on to it.
    unshare -n -m --propagation private bash "$HERE/run.sh" --inside &
    inside=$!
    trap 'kill -TERM $inside 2>/dev/null' INT TERM
    while :; do
        wait $inside
        rc=$?
        kill -0 $inside 2>/dev/null || break
    done
    trap - INT TERM
    # Safety net, in case the inside was killed before its trap ran: stop
    # what it started, by the pids it recorded.
    for f in "$T/rpol.pid" "$T/knot.pid" "$T/spool/pid/master.pid"; do
        [ -s "$f" ] || continue
        pid=$(tr -dc 0-9 <"$f")
        [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && kill "$pid" 2>/dev/null
    done
    if [ "${E2E_KEEP:-0}" = 1 ]; then
        echo "e2e: kept $T"
    else
        rm -rf "$T"
    fi
    exit $rc
fi

# ----------------------------------------------------------------- inside --
# Variables from the outside: RPOL, T.
ETC=$T/etc
SPOOL=$T/spool
DATA=$T/data
MAILLOG=$T/maillog
RPOL_LOG=$T/rpol.log
KNOT_DIR=$T/knot
SOCKET=$SPOOL/private/rpol
START=$(date +%s)

PASSED=0
FAILED=0
FAILURES=()

log() { echo "e2e: $*"; }

# rpol runs in the background; its pid is in $T/rpol.pid.
start_rpol() {
    rm -f "$SOCKET"
    NO_COLOR=1 RUST_LOG=info,rpol::server=debug \
        "$RPOL" --config "$HERE/policy.toml" --listen "unix:$SOCKET" >>"$RPOL_LOG" 2>&1 &
    local pid=$! i
    echo $pid >"$T/rpol.pid"
    for ((i = 0; i < 100; i++)); do
        [ -S "$SOCKET" ] && [ "$(stat -c %U "$SOCKET")" = postfix ] && return 0
        kill -0 $pid 2>/dev/null || { rm -f "$T/rpol.pid"; die "rpol exited at startup"; }
        sleep 0.1
    done
    die "rpol did not create $SOCKET owned by postfix within 10 s"
}
stop_rpol() {
    [ -s "$T/rpol.pid" ] || return 0
    local pid
    pid=$(cat "$T/rpol.pid")
    kill "$pid" 2>/dev/null
    # rpol waits for requests in flight; Postfix holds idle connections.
    wait_for "! kill -0 $pid" 100 || kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rm -f "$T/rpol.pid"
}

# Stops everything this script started; runs on every exit.
cleanup() {
    stop_rpol
    if [ -s "$SPOOL/pid/master.pid" ]; then
        postfix -c "$ETC" stop >/dev/null 2>&1
        # master.pid disappears when master has exited; bounded wait.
        for _ in $(seq 50); do
            pid=$(tr -dc 0-9 <"$SPOOL/pid/master.pid" 2>/dev/null)
            { [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; } && break
            sleep 0.1
        done
    fi
    if [ -s "$T/knot.pid" ]; then
        pid=$(cat "$T/knot.pid")
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
        rm -f "$T/knot.pid"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "e2e: FATAL: $*" >&2
    for f in "$MAILLOG" "$RPOL_LOG" "$T/knot.log"; do
        [ -s "$f" ] && { echo "---- $f (last 30 lines)"; tail -n 30 "$f"; }
    done >&2
    echo "$PASSED passed, $((FAILED + 1)) failed (the harness itself failed)"
    exit 1
}

# Waits up to $2 tenths of a second for command $1 to succeed.
wait_for() {
    local what=$1 tenths=$2 i
    for ((i = 0; i < tenths; i++)); do
        eval "$what" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---- network namespace: lo, private resolv.conf
ip link set lo up || die "ip link set lo up"
printf 'nameserver 127.0.0.53\noptions timeout:1 attempts:1\n' >"$T/resolv.conf"
mount --bind "$T/resolv.conf" /etc/resolv.conf || die "cannot bind-mount resolv.conf"
# The namespace has only lo: nothing can leave the machine from here.
[ "$(ip -o link show | wc -l)" = 1 ] || die "unexpected interfaces: $(ip -o link show)"

# ---- knot: a tiny authoritative zone on 127.0.0.53:53
mkdir -p "$KNOT_DIR"
cat >"$KNOT_DIR/e2e.example.zone" <<'EOF'
$ORIGIN e2e.example.
$TTL 300
@       SOA   ns.e2e.example. hostmaster.e2e.example. 1 3600 600 86400 300
@       NS    ns
ns      A     127.0.0.53
mx      A     203.0.113.10
EOF
cat >"$KNOT_DIR/knot.conf" <<EOF
server:
    rundir: "$KNOT_DIR"
    listen: 127.0.0.53@53
database:
    storage: "$KNOT_DIR"
log:
  - target: stderr
    any: info
template:
  - id: default
    storage: "$KNOT_DIR"
    semantic-checks: off
zone:
  - domain: e2e.example
    file: "e2e.example.zone"
EOF
knotd -c "$KNOT_DIR/knot.conf" >"$T/knot.log" 2>&1 &
echo $! >"$T/knot.pid"
wait_for 'kdig @127.0.0.53 +short +timeout=1 +retry=0 mx.e2e.example A | grep -qx 203.0.113.10' 50 \
    || die "knotd did not answer on 127.0.0.53"

# ---- Postfix: a throw-away instance in $T
mkdir -p "$ETC" "$SPOOL" "$DATA"
chown postfix "$DATA"
cat >"$ETC/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $SPOOL
data_directory = $DATA
mail_owner = postfix
setgid_group = postdrop
maillog_file = $MAILLOG
maillog_file_prefixes = /var, /dev/stdout, $T
myhostname = mx.e2e.example
mydomain = e2e.example
myorigin = \$myhostname
mydestination =
local_recipient_maps =
relay_domains = example.com
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
biff = no
smtpd_banner = \$myhostname ESMTP rpol-e2e
# swaks makes the loopback client look remote with XCLIENT.
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = check_policy_service unix:private/rpol, permit
# Nothing is ever delivered: accepted mail stays on hold in \$queue_directory,
# and were it released it would be discarded. (Not the error transport:
# smtpd refuses at RCPT a recipient that resolves to it.)
smtpd_end_of_data_restrictions = check_client_access static:HOLD
default_transport = discard:e2e instance delivers nothing
relay_transport = discard:e2e instance delivers nothing
local_transport = discard:e2e instance delivers nothing
# SASL (enabled on the submission service only): Cyrus with a private config
# directory. Nobody logs in for real; swaks sets the login with XCLIENT LOGIN.
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = $ETC/sasl
EOF
mkdir -p "$ETC/sasl"
cat >"$ETC/sasl/smtpd.conf" <<EOF
pwcheck_method: auxprop
auxprop_plugin: sasldb
sasldb_path: $T/sasldb2
mech_list: PLAIN LOGIN
EOF
# chroot "n" everywhere: the temporary queue directory has no /etc copies.
cat >"$ETC/master.cf" <<'EOF'
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:2525 inet n   -       n       -       -       smtpd
127.0.0.1:2587 inet n   -       n       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_policy_service_policy_context=submission
  -o smtpd_sasl_auth_enable=yes
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
# postfix prints its errors only to a tty (or syslog): give it one.
out=$(script -qec "postfix -c '$ETC' check" /dev/null 2>&1) || die "postfix check: $out"
out=$(script -qec "postfix -c '$ETC' start" /dev/null 2>&1) || die "postfix start: $out"
wait_for 'port_open 2525 && port_open 2587' 100 || die "Postfix does not listen on 2525/2587"

start_rpol

# ---- checks
pass() {
    PASSED=$((PASSED + 1))
    echo "ok   - $1"
}
fail() {
    FAILED=$((FAILED + 1))
    FAILURES+=("$1")
    echo "FAIL - $1"
    shift
    local line
    for line in "$@"; do echo "       $line"; done
}

# smtp PORT XCLIENT-ATTRS EHLO FROM TO [extra swaks args...]: runs one SMTP
# session, by default ending after RCPT (QUIT_AFTER= to send a message); the
# transcript goes to $T/swaks.out.
smtp() {
    local port=$1 xclient=$2 ehlo=$3 from=$4 to=$5
    shift 5
    local quit=()
    [ -n "${QUIT_AFTER-RCPT}" ] && quit=(--quit-after "${QUIT_AFTER-RCPT}")
    swaks --server 127.0.0.1 --port "$port" --xclient "$xclient" \
        --ehlo "$ehlo" --from "$from" --to "$to" --timeout 30 \
        "${quit[@]}" "$@" >"$T/swaks.out" 2>&1
    if [ "${E2E_VERBOSE:-0}" = 1 ]; then sed 's/^/       | /' "$T/swaks.out"; fi
}

# reply_to CMD-PREFIX: the server's reply line to the first client line that
# starts with CMD-PREFIX (e.g. "RCPT TO:<a@example.com>"), without swaks'
# direction marker.
reply_to() {
    awk -v cmd="$1" '
        found && /^<[-*~]/ { sub(/^<[-*~]+ */, ""); print; exit }
        /^ *-> / { line = $0; sub(/^ *-> */, "", line); if (index(line, cmd) == 1) found = 1 }
    ' "$T/swaks.out"
}

# expect NAME ACTUAL EXPECTED
expect() {
    if [ "$2" = "$3" ]; then
        pass "$1"
        echo "       $2"
    else
        fail "$1" "expected: $3" "got:      ${2:-(nothing)}" "transcript:" \
            "$(sed 's/^/         | /' "$T/swaks.out")"
    fi
}

# rpol log lines (decisions) so far.
decisions() { grep -c 'action=' "$RPOL_LOG"; }
connections() { grep -c 'connection opened' "$RPOL_LOG"; }

RCPT=rcpt@example.com
NOBODY="NAME=[UNAVAILABLE]"

log "Postfix $(postconf -d -h mail_version), $("$RPOL" --version), knot $(knotd --version | awk '{print $NF}')"

# 1. The namespace resolves through knotd only.
# (getent hosts, not ahosts: getaddrinfo's AI_ADDRCONFIG ignores lo, and
# only lo exists here.)
: >"$T/swaks.out"
got=$(getent hosts mx.e2e.example | awk 'NR == 1 { print $1 }')
expect "libc resolves through knotd on 127.0.0.53 (getent hosts)" "$got" "203.0.113.10"

# 2. Client in the blocked /24: rejected through rpol's client access table.
smtp 2525 "ADDR=203.0.113.9 $NOBODY" client.e2e.example sender@partner.example "$RCPT"
expect "port 2525: client 203.0.113.9 rejected by check_client_access" \
    "$(reply_to "RCPT TO:<$RCPT>")" \
    "554 5.7.1 <$RCPT>: Recipient address rejected: <unknown[203.0.113.9]>: Client host rejected: Access denied"

# 3. Same /24, whitelisted host (more specific key first): accepted.
smtp 2525 "ADDR=203.0.113.7 $NOBODY" client.e2e.example sender@partner.example "$RCPT"
expect "port 2525: client 203.0.113.7 whitelisted (OK) and accepted" \
    "$(reply_to "RCPT TO:<$RCPT>")" "250 2.1.5 Ok"

# 4. A client not in any table: rpol answers DUNNO, Postfix accepts.
smtp 2525 "ADDR=198.51.100.7 $NOBODY" client.e2e.example sender@partner.example "$RCPT"
expect "port 2525: unlisted client 198.51.100.7 accepted (DUNNO)" \
    "$(reply_to "RCPT TO:<$RCPT>")" "250 2.1.5 Ok"

# 5. A hostname key matches a subdomain; the reply text comes from the table.
smtp 2525 "ADDR=198.51.100.20 NAME=mx1.spam.example" client.e2e.example sender@partner.example "$RCPT"
expect "port 2525: client mx1.spam.example rejected by its parent domain's key" \
    "$(reply_to "RCPT TO:<$RCPT>")" \
    "554 5.7.1 <$RCPT>: Recipient address rejected: <mx1.spam.example[198.51.100.20]>: Client host rejected: Spam source"

# 6. A 4xx access action keeps its code and DSN.
smtp 2525 "ADDR=198.51.100.44 $NOBODY" client.e2e.example sender@partner.example "$RCPT"
expect "port 2525: client 198.51.100.44 deferred with the table's 450 4.7.1" \
    "$(reply_to "RCPT TO:<$RCPT>")" \
    "450 4.7.1 <$RCPT>: Recipient address rejected: <unknown[198.51.100.44]>: Client host rejected: Come back later"

# 7. HELO stage.
smtp 2525 "ADDR=198.51.100.7 $NOBODY" bad-helo.example sender@partner.example "$RCPT"
expect "port 2525: HELO bad-helo.example rejected by check_helo_access" \
    "$(reply_to "RCPT TO:<$RCPT>")" \
    "554 5.7.1 <$RCPT>: Recipient address rejected: <bad-helo.example>: Helo command rejected: Bad HELO"

# 8. Sender stage.
smtp 2525 "ADDR=198.51.100.7 $NOBODY" client.e2e.example spammer@bad.example "$RCPT"
expect "port 2525: sender spammer@bad.example rejected by check_sender_access" \
    "$(reply_to "RCPT TO:<$RCPT>")" \
    "554 5.7.1 <$RCPT>: Recipient address rejected: <spammer@bad.example>: Sender address rejected: Access denied"

# 9. Several RCPTs in one session: one decision per RCPT, on one policy
#    connection (Postfix keeps it; rpol must not close it in between).
before_dec=$(decisions)
before_conn=$(connections)
before_warn=$(grep -c 'warning: .*private/rpol' "$MAILLOG")
t0=$(date +%s%N)
smtp 2525 "ADDR=198.51.100.7 $NOBODY" client.e2e.example sender@partner.example \
    "first@example.com,blocked@example.com,third@example.com"
t1=$(date +%s%N)
got="$(reply_to 'RCPT TO:<first@example.com>') | $(reply_to 'RCPT TO:<blocked@example.com>') | $(reply_to 'RCPT TO:<third@example.com>')"
expect "port 2525: three RCPTs in one session, the middle one refused by check_recipient_access" \
    "$got" \
    "250 2.1.5 Ok | 550 5.1.1 <blocked@example.com>: Recipient address rejected: Mailbox disabled | 250 2.1.5 Ok"
sleep 0.2 # let rpol flush its log
dec=$(($(decisions) - before_dec))
conn=$(($(connections) - before_conn))
warn=$(($(grep -c 'warning: .*private/rpol' "$MAILLOG") - before_warn))
ms=$(((t1 - t0) / 1000000))
# (The time is a hint only: each reconnect would cost Postfix a 1 s sleep.)
if [ "$dec" = 3 ] && [ "$conn" -le 1 ] && [ "$warn" = 0 ]; then
    pass "rpol answered the 3 RCPTs on one connection ($conn new connection(s), $ms ms, no Postfix warnings)"
else
    fail "rpol keeps the policy connection across RCPTs" \
        "decisions=$dec (want 3) new connections=$conn (want <= 1) postfix warnings=$warn (want 0) session=${ms}ms"
fi

# 10. A whole message: rpol's PREPEND reaches the queued message.
QUIT_AFTER= smtp 2525 "ADDR=198.51.100.7 $NOBODY" client.e2e.example prepend@partner.example "$RCPT" \
    --header "Subject: rpol e2e" --body "e2e test body"
queued=$(reply_to "." | sed -n 's/^250 2\.0\.0 Ok: queued as \([0-9A-Za-z]*\)$/\1/p')
if [ -n "$queued" ] && postcat -c "$ETC" -hq "$queued" 2>/dev/null \
    | grep -qx 'X-Rpol-E2E: prepended by rpol'; then
    pass "port 2525: PREPEND from check_sender_access lands in the held message ($queued)"
else
    fail "port 2525: PREPEND from check_sender_access lands in the held message" \
        "end-of-data reply: $(reply_to ".")" "$(sed 's/^/         | /' "$T/swaks.out")"
fi

# 11. Submission (port 2587, policy_context=submission): no SASL login, so
#     rpol's submission profile rejects, whatever the client address.
smtp 2587 "ADDR=198.51.100.7 $NOBODY" client.e2e.example sender@partner.example "$RCPT"
expect "port 2587: unauthenticated submission rejected (permit_sasl_authenticated, reject)" \
    "$(reply_to "RCPT TO:<$RCPT>")" \
    "554 5.7.1 <$RCPT>: Recipient address rejected: <unknown[198.51.100.7]>: Client host rejected: Access denied"
sleep 0.2
if tail -n 1 "$RPOL_LOG" | grep -q 'profile=submission'; then
    pass "port 2587: rpol chose the submission profile by policy_context"
else
    fail "port 2587: rpol chose the submission profile by policy_context" \
        "last rpol log line: $(tail -n 1 "$RPOL_LOG")"
fi

# 11b. Submission with a SASL login (set by XCLIENT LOGIN=): Postfix sends
#      sasl_username, rpol's permit_sasl_authenticated lets it through.
smtp 2587 "ADDR=198.51.100.7 $NOBODY LOGIN=alice" client.e2e.example alice@example.com "$RCPT"
expect "port 2587: authenticated submission (XCLIENT LOGIN=alice) accepted" \
    "$(reply_to "RCPT TO:<$RCPT>")" "250 2.1.5 Ok"

# 12. rpol stopped: Postfix retries, then applies its default_action.
stop_rpol
[ ! -e "$SOCKET" ] || log "note: rpol left its socket behind after SIGTERM"
t0=$(date +%s%N)
smtp 2525 "ADDR=203.0.113.9 $NOBODY" client.e2e.example sender@partner.example "$RCPT"
t1=$(date +%s%N)
expect "rpol stopped: Postfix answers its default_action ($(((t1 - t0) / 1000000)) ms)" \
    "$(reply_to "RCPT TO:<$RCPT>")" \
    "451 4.3.5 <$RCPT>: Recipient address rejected: Server configuration problem"

# 13. rpol back: Postfix reconnects by itself.
start_rpol
smtp 2525 "ADDR=203.0.113.9 $NOBODY" client.e2e.example sender@partner.example "$RCPT"
expect "rpol restarted: Postfix reconnects and rpol rejects again" \
    "$(reply_to "RCPT TO:<$RCPT>")" \
    "554 5.7.1 <$RCPT>: Recipient address rejected: <unknown[203.0.113.9]>: Client host rejected: Access denied"

# 14. Nothing went wrong on either side.
errors=$(grep -E ' (ERROR|WARN) ' "$RPOL_LOG")
if [ -z "$errors" ]; then
    pass "rpol logged no warnings or errors"
else
    fail "rpol logged no warnings or errors" "$errors"
fi
perrors=$(grep -E '(fatal|panic|error):' "$MAILLOG")
if [ -z "$perrors" ]; then
    pass "Postfix logged no fatal/panic/error lines"
else
    fail "Postfix logged no fatal/panic/error lines" "$perrors"
fi

echo
if [ "$FAILED" != 0 ]; then
    echo "Failed:"
    printf '  %s\n' "${FAILURES[@]}"
    for f in "$MAILLOG" "$RPOL_LOG"; do
        echo "---- $f (last 40 lines)"
        tail -n 40 "$f"
    done
fi
echo "e2e: $(($(date +%s) - START)) s"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
