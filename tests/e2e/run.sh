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
# Services: 127.0.0.1:2525 (an MX: rpol's profile mx, the shipped port-25
# chain), 127.0.0.1:2526 (the reference: the same chain as Postfix's own
# restrictions, no rpol), 127.0.0.1:2527 (an MX that greylists),
# 127.0.0.1:2529 (the MX chain as a dry run, mode = "warn"),
# 127.0.0.1:2587 (submission), 127.0.0.1:2588 (rate limits); and a second
# instance on 127.0.0.1:25, 465 and 587 configured from the lines
# `rpol --postfix-config` prints (postfix-config.sh). knotd serves
# tests/zones/ plus tests/e2e/zones/, with a SERVFAIL zone and a zone whose
# queries are never answered. tests/e2e/README.md explains where the replies
# through rpol differ from Postfix's own, and why.
#
# Environment:
#   RPOL          rpol binary (default: target/debug/rpol of this checkout)
#   E2E_KEEP=1    keep the temporary directory (logs, queue) for inspection
#   E2E_VERBOSE=1 print every swaks transcript
#
# Prints "N passed, M failed" and exits non-zero on any failure.

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"

# ---------------------------------------------------------------- outside --
if [ "${1:-}" != "--inside" ]; then
    absolute_rpol
    if [ "$(id -u)" != 0 ]; then
        echo "e2e: must run as root (network namespace, Postfix)" >&2
        exit 2
    fi
    missing=""
    for cmd in postfix postconf postcat postmap swaks knotd kdig unshare script ip ss mount \
        getent perl openssl saslpasswd2; do
        command -v "$cmd" >/dev/null 2>&1 || missing="$missing $cmd"
    done
    perl -MNet::SSLeay -e 1 >/dev/null 2>&1 || missing="$missing perl:Net::SSLeay"
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
    for f in "$T/rpol.pid" "$T/knot.pid" "$T/silent.pid" "$T/spool/pid/master.pid" \
        "$T/g/rpol.pid" "$T/g/spool/pid/master.pid"; do
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
# The second instance, configured from `rpol --postfix-config`
# (postfix-config.sh): the same layout under $G.
G=$T/g
START=$(date +%s)

PASSED=0
FAILED=0
FAILURES=()

log() { echo "e2e: $*"; }

# spawn_rpol CONFIG SOCKET PIDFILE LOG: rpol in the background, its pid in
# PIDFILE. Started as root, it creates the socket as postfix (socket_owner)
# and then runs as nobody.
spawn_rpol() {
    local config=$1 socket=$2 pidfile=$3 logfile=$4
    rm -f "$socket"
    NO_COLOR=1 RUST_LOG=info,rpol::server=debug \
        "$RPOL" --config "$config" --listen "unix:$socket" --user nobody >>"$logfile" 2>&1 &
    local pid=$! i
    echo $pid >"$pidfile"
    for ((i = 0; i < 100; i++)); do
        [ -S "$socket" ] && [ "$(stat -c %U "$socket")" = postfix ] && return 0
        kill -0 $pid 2>/dev/null || { rm -f "$pidfile"; die "rpol ($config) exited at startup"; }
        sleep 0.1
    done
    die "rpol did not create $socket owned by postfix within 10 s"
}
start_rpol() { spawn_rpol "$T/conf/policy.toml" "$SOCKET" "$T/rpol.pid" "$RPOL_LOG"; }
# stop_rpol [PIDFILE]: the first instance's rpol by default.
stop_rpol() {
    local pidfile=${1:-$T/rpol.pid} pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null
    # rpol waits for requests in flight; Postfix holds idle connections.
    wait_for "! kill -0 $pid" 100 || kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    rm -f "$pidfile"
}
# stop_postfix DIR: the instance whose config is DIR/etc, queue DIR/spool.
stop_postfix() {
    [ -s "$1/spool/pid/master.pid" ] || return 0
    postfix -c "$1/etc" stop >/dev/null 2>&1
    # master.pid disappears when master has exited; bounded wait.
    local pid
    for _ in $(seq 50); do
        pid=$(tr -dc 0-9 <"$1/spool/pid/master.pid" 2>/dev/null)
        { [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; } && break
        sleep 0.1
    done
}

# Stops everything this script started; runs on every exit.
cleanup() {
    stop_rpol
    stop_rpol "$G/rpol.pid"
    stop_postfix "$T"
    stop_postfix "$G"
    local f pid
    for f in "$T/knot.pid" "$T/silent.pid"; do
        [ -s "$f" ] || continue
        pid=$(cat "$f")
        kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
        rm -f "$f"
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() {
    echo "e2e: FATAL: $*" >&2
    for f in "$MAILLOG" "$RPOL_LOG" "$T/knot.log" "$G/maillog" "$G/rpol.log"; do
        [ -s "$f" ] && { echo "---- $f (last 30 lines)"; tail -n 30 "$f"; }
    done >&2
    echo "$PASSED passed, $((FAILED + 1)) failed (the harness itself failed)"
    exit 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---- network namespace: lo, private resolv.conf
isolate_network

# ---- knot: the test zones on 127.0.0.53:53
# Each zone of tests/zones/ (example. and the reverse zones), with the e2e
# additions of tests/e2e/zones/ of the same name appended. Two fault zones:
# - servfail.example has no zone file: knotd answers SERVFAIL for it;
# - timeout.example is forwarded (mod-dnsproxy, fallback off) to
#   127.0.0.54:53, where a UDP socket is bound but never answers, and
#   knotd's proxy timeout (1.5 s) exceeds rpol's [dns] timeout and
#   Postfix's resolver timeout (1 s each): both see a real timeout.
#   A proxied query holds a knotd UDP worker for 1.5 s, and the kernel
#   hands each client socket's queries to one worker (SO_REUSEPORT: a hash
#   of the client's address and port): a query that lands on a blocked
#   worker times out too. Hence the extra workers, and after each timeout
#   session a pause (knotd_proxy_drain) before other queries.
mkdir -p "$KNOT_DIR"
zones=""
for z in "$ROOT"/tests/zones/*.zone; do
    name=$(basename "$z" .zone)
    cat "$z" >"$KNOT_DIR/$name.zone"
    [ -f "$HERE/zones/$name.zone" ] && cat "$HERE/zones/$name.zone" >>"$KNOT_DIR/$name.zone"
    zones="$zones  - domain: $name
    file: \"$name.zone\"
"
done
cp "$HERE/zones/timeout.example.zone" "$KNOT_DIR/"
cat >"$KNOT_DIR/knot.conf" <<EOF
server:
    rundir: "$KNOT_DIR"
    listen: 127.0.0.53@53
    udp-workers: 8
database:
    storage: "$KNOT_DIR"
log:
  - target: stderr
    any: info
remote:
  - id: silent
    address: 127.0.0.54@53
mod-dnsproxy:
  - id: silent
    remote: silent
    timeout: 1500
    fallback: off
template:
  - id: default
    storage: "$KNOT_DIR"
    semantic-checks: off
zone:
$zones  - domain: servfail.example
    file: "servfail.example.zone-does-not-exist"
  - domain: timeout.example
    file: "timeout.example.zone"
    module: mod-dnsproxy/silent
EOF
# The silent responder: reads nothing, answers nothing.
perl -MIO::Socket::INET -e '
    my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.54", LocalPort => 53, Proto => "udp")
        or die "silent responder: bind 127.0.0.54:53: $!\n";
    sleep 600;' >"$T/silent.log" 2>&1 &
echo $! >"$T/silent.pid"
knotd -c "$KNOT_DIR/knot.conf" >"$T/knot.log" 2>&1 &
echo $! >"$T/knot.pid"
wait_for 'kdig @127.0.0.53 +short +timeout=1 +retry=0 mx.e2e.example A | grep -qx 203.0.113.10' 50 \
    || die "knotd did not answer on 127.0.0.53"
wait_for 'kdig @127.0.0.53 +short +timeout=1 +retry=0 -x 198.51.100.7 | grep -qx client.e2e.example.' 50 \
    || die "knotd does not serve the reverse zones"
kdig @127.0.0.53 +timeout=1 +retry=0 servfail.example MX | grep -q 'status: SERVFAIL' \
    || die "knotd does not answer SERVFAIL for servfail.example"
wait_for 'ss -Hlun src 127.0.0.54:53 | grep -q .' 50 || die "the silent responder is not bound"

# ---- Postfix: a throw-away instance in $T
# instance_plumbing DIR: a throw-away instance's directories (DIR/etc,
# DIR/spool, DIR/data, log DIR/maillog), its tables and SASL config; prints
# the main.cf lines both instances share: paths, the e2e domains, XCLIENT,
# nothing delivered, Cyrus SASL.
instance_plumbing() {
    local dir=$1
    mkdir -p "$dir/etc/sasl" "$dir/spool" "$dir/data"
    chown postfix "$dir/data"
    cp "$HERE/tables/vmail_mailbox" "$HERE/tables/vmail_aliases" "$dir/etc/"
    cat >"$dir/etc/sasl/smtpd.conf" <<EOF
pwcheck_method: auxprop
auxprop_plugin: sasldb
sasldb_path: $dir/sasldb2
mech_list: PLAIN LOGIN
EOF
    cat <<EOF
compatibility_level = 3.6
queue_directory = $dir/spool
data_directory = $dir/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = $dir/maillog
maillog_file_prefixes = /var, /dev/stdout, $T
myhostname = mx.e2e.example
mydomain = e2e.example
myorigin = \$myhostname
mydestination =
local_recipient_maps =
# The same domains and mailboxes as rpol's [site] (for the reference service
# on port 2526, and Postfix's implicit reject_unlisted_recipient after rpol).
relay_domains =
virtual_mailbox_domains = example.com, example.net
virtual_mailbox_maps = texthash:$dir/etc/vmail_mailbox
virtual_alias_maps = texthash:$dir/etc/vmail_aliases
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
biff = no
smtpd_banner = \$myhostname ESMTP rpol-e2e
# swaks makes the loopback client look remote with XCLIENT.
smtpd_authorized_xclient_hosts = 127.0.0.0/8
# Nothing is ever delivered: accepted mail stays on hold in \$queue_directory,
# and were it released it would be discarded. (Not the error transport:
# smtpd refuses at RCPT a recipient that resolves to it.)
smtpd_end_of_data_restrictions = check_client_access static:HOLD
default_transport = discard:e2e instance delivers nothing
relay_transport = discard:e2e instance delivers nothing
local_transport = discard:e2e instance delivers nothing
virtual_transport = discard:e2e instance delivers nothing
# SASL (enabled on the submission services only): Cyrus with a private
# config directory and sasldb.
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = $dir/etc/sasl
EOF
}

# master_plumbing: the master.cf services both instances share (Postfix's
# own, none of rpol's business), chroot "n": the temporary queue directory
# has no /etc copies.
master_plumbing() {
    cat <<'EOF'
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
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
}

mkdir -p "$ETC"
{
    instance_plumbing "$T"
    cat <<'EOF'
# rpol first, so that its own reject_unauth_destination answers (Postfix's
# relay restrictions would otherwise run first); Postfix's check stays
# after it as the safety net.
smtpd_relay_restrictions =
smtpd_recipient_restrictions = check_policy_service unix:private/rpol,
    permit_mynetworks, reject_unauth_destination
EOF
} >"$ETC/main.cf"
# chroot "n" everywhere: the temporary queue directory has no /etc copies.
{
    cat <<'EOF'
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:2525 inet n   -       n       -       -       smtpd
127.0.0.1:2587 inet n   -       n       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_policy_service_policy_context=submission
  -o smtpd_sasl_auth_enable=yes
# Greylisting: rpol's profile greylist ends in check_greylist.
127.0.0.1:2527 inet n   -       n       -       -       smtpd
  -o syslog_name=postfix/greylist
  -o smtpd_policy_service_policy_context=greylist
# Dry run: rpol's profile trial is profile mx in mode = "warn".
127.0.0.1:2529 inet n   -       n       -       -       smtpd
  -o syslog_name=postfix/trial
  -o smtpd_policy_service_policy_context=trial
# Rate limits: rpol counts each accepted message at END-OF-MESSAGE.
127.0.0.1:2588 inet n   -       n       -       -       smtpd
  -o syslog_name=postfix/ratelimit
  -o smtpd_policy_service_policy_context=ratelimit
  -o smtpd_sasl_auth_enable=yes
  -o { smtpd_end_of_data_restrictions = check_policy_service unix:private/rpol, check_client_access static:HOLD }
# The reference: Postfix's own restrictions, the seed's port-25 chain as
# main.cf would write it (without the whitelist tables), no rpol.
127.0.0.1:2526 inet n   -       n       -       -       smtpd
  -o syslog_name=postfix/reference
  -o smtpd_helo_required=yes
  -o { smtpd_client_restrictions = permit_mynetworks, reject_unknown_reverse_client_hostname }
  -o { smtpd_helo_restrictions = permit_mynetworks, reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname, reject_unknown_helo_hostname }
  -o { smtpd_sender_restrictions = permit_mynetworks, reject_non_fqdn_sender, reject_unknown_sender_domain }
  -o { smtpd_recipient_restrictions = permit_mynetworks, reject_non_fqdn_recipient, reject_unknown_recipient_domain, reject_unlisted_recipient, reject_unauth_destination }
EOF
    master_plumbing
} >"$ETC/master.cf"
# postfix prints its errors only to a tty (or syslog): give it one.
out=$(script -qec "postfix -c '$ETC' check" /dev/null 2>&1) || die "postfix check: $out"
out=$(script -qec "postfix -c '$ETC' start" /dev/null 2>&1) || die "postfix start: $out"
wait_for 'port_open 2525 && port_open 2526 && port_open 2527 && port_open 2529 && port_open 2587 && port_open 2588' 100 \
    || die "Postfix does not listen on 2525/2526/2527/2529/2587/2588"

# rpol's config and tables, copied so that its store (state/) lives here.
mkdir -p "$T/conf/state"
cp -r "$HERE/policy.toml" "$HERE/tables" "$T/conf/"
chown nobody "$T/conf/state"
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

# queued_reply RCPT: the replies to RCPT TO:<RCPT> and to the end of data,
# without the queue id.
queued_reply() { echo "$(reply_to "RCPT TO:<$1>") | $(reply_to "." | sed 's/queued as .*/queued/')"; }
# queue_id: the id the last session's message was queued as.
queue_id() { reply_to "." | sed -n 's/^250 2\.0\.0 Ok: queued as \([0-9A-Za-z]*\)$/\1/p'; }
# held_headers CONFIG-DIR ID ERE: the header lines of held message ID that
# match ERE.
held_headers() { [ -n "$2" ] && postcat -c "$1" -hq "$2" 2>/dev/null | grep -E "$3"; }

# send_held NAME CONFIG-DIR ERE PORT XCLIENT-ATTRS EHLO FROM RCPT: a whole
# message to RCPT, which must be accepted and queued; sets $queued and
# $held (the held message's header lines that match ERE).
send_held() {
    local name=$1 config=$2 ere=$3 rcpt=$8
    shift 3
    QUIT_AFTER= smtp "$@" --header "Subject: rpol e2e $name" --body "e2e body"
    expect "$name" "$(queued_reply "$rcpt")" "250 2.1.5 Ok | 250 2.0.0 Ok: queued"
    queued=$(queue_id)
    held=$(held_headers "$config" "$queued" "$ere")
    : >"$T/swaks.out"
}

# expect_none NAME LINES: passes when LINES is empty, else shows them.
expect_none() {
    if [ -z "$2" ]; then pass "$1"; else fail "$1" "$2"; fi
}

# smtp PORT XCLIENT-ATTRS EHLO FROM TO [extra swaks args...]: runs one SMTP
# session (no XCLIENT when XCLIENT-ATTRS is empty), by default ending after
# RCPT (QUIT_AFTER= to send a message); the transcript goes to $T/swaks.out.
smtp() {
    local port=$1 xclient=$2 ehlo=$3 from=$4 to=$5
    shift 5
    local quit=()
    [ -n "${QUIT_AFTER-RCPT}" ] && quit=(--quit-after "${QUIT_AFTER-RCPT}")
    local xc=()
    [ -n "$xclient" ] && xc=(--xclient "$xclient")
    swaks --server 127.0.0.1 --port "$port" "${xc[@]}" \
        --ehlo "$ehlo" --from "$from" --to "$to" --timeout 30 \
        "${quit[@]}" "$@" >"$T/swaks.out" 2>&1
    if [ "${E2E_VERBOSE:-0}" = 1 ]; then sed 's/^/       | /' "$T/swaks.out"; fi
}

# reply_to CMD-PREFIX: the server's reply line to the first client line that
# starts with CMD-PREFIX (e.g. "RCPT TO:<a@example.com>"), without swaks'
# direction marker (-> plain, ~> over TLS).
reply_to() {
    awk -v cmd="$1" '
        found && /^<[-*~]/ { sub(/^<[-*~]+ */, ""); print; exit }
        /^ *[-~]> / { line = $0; sub(/^ *[-~]> */, "", line); if (index(line, cmd) == 1) found = 1 }
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
# XCLIENT NAME= sets client_name only: without REVERSE_NAME= Postfix 3.7
# keeps the reverse name of the real connection (reverse_client_name=
# localhost), and reject_unknown_reverse_client_hostname would pass.
NOBODY="NAME=[UNAVAILABLE] REVERSE_NAME=[UNAVAILABLE]"

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

# 4. A client not in any table, with a forward-confirmed PTR, a resolvable
#    HELO and sender domain, and a listed recipient: rpol answers DUNNO,
#    Postfix accepts.
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
#      The login is a mailbox address (XCLIENT takes the "@" as it is):
#      with login_from_aliases a mailbox is owned by its own login.
smtp 2587 "ADDR=198.51.100.7 $NOBODY LOGIN=alice@example.com" client.e2e.example alice@example.com "$RCPT"
expect "port 2587: authenticated submission (XCLIENT LOGIN=alice@example.com) as her own mailbox accepted" \
    "$(reply_to "RCPT TO:<$RCPT>")" "250 2.1.5 Ok"

# profile_of FILE PROFILE: the lines of [profile.PROFILE], comments and
# blank lines left out.
profile_of() {
    awk -v sec="[profile.$2]" '
        $0 == sec { on = 1; next }
        /^\[/ { on = 0 }
        on && NF && !/^ *#/ { sub(/ *#.*/, ""); print }
    ' "$1"
}
# rules_of FILE PROFILE: the rule lines of [profile.PROFILE] (no match).
rules_of() { profile_of "$1" "$2" | grep -v '^match *='; }

# ---- Submission: who may send as whom (profile submission, the sender
# rules of the shipped [profile.submission]: reject_unlisted_sender,
# reject_known_sender_login_mismatch, check_outbound_spf). rpol is called
# from smtpd_recipient_restrictions, so its sender-stage text follows
# "<rcpt>: Recipient address rejected: ".
# submit LOGIN FROM: the reply to RCPT TO:<$RCPT> on 2587 for that login.
submit() { smtp 2587 "ADDR=198.51.100.7 $NOBODY LOGIN=$1" client.e2e.example "$2" "$RCPT"; }

# 11c. The submission profile's sender rules are the shipped ones.
: >"$T/swaks.out"
if diff <(rules_of "$ROOT/policy.toml" submission) \
    <(rules_of "$HERE/policy.toml" submission | grep -v '^called_from') >"$T/rules.diff"; then
    pass "profile submission runs the rules of policy.toml's [profile.submission]"
else
    fail "profile submission runs the rules of policy.toml's [profile.submission]" "$(cat "$T/rules.diff")"
fi

# 11d. An alias the login owns (postmaster@example.com -> alice@example.com).
submit alice@example.com postmaster@example.com
expect "port 2587: alice@example.com sends as her alias postmaster@example.com" \
    "$(reply_to "RCPT TO:<$RCPT>")" "250 2.1.5 Ok"

# 11e. An address of ours that another login owns.
submit first@example.com postmaster@example.com
expect "port 2587: first@example.com sends as alice's alias: reject_known_sender_login_mismatch" \
    "$(reply_to "RCPT TO:<$RCPT>")" \
    "553 5.7.1 <$RCPT>: Recipient address rejected: <postmaster@example.com>: Sender address rejected: not owned by user first@example.com"

# 11f. A registered foreign address, by its owner: no SPF check.
submit alice@example.com alice.private@mail.example.org
expect "port 2587: alice@example.com sends as her registered alice.private@mail.example.org" \
    "$(reply_to "RCPT TO:<$RCPT>")" "250 2.1.5 Ok"

# 11g. The same registered address, by another login: it has an owner.
submit first@example.com alice.private@mail.example.org
expect "port 2587: first@example.com sends as alice's registered foreign address" \
    "$(reply_to "RCPT TO:<$RCPT>")" \
    "553 5.7.1 <$RCPT>: Recipient address rejected: <alice.private@mail.example.org>: Sender address rejected: not owned by user first@example.com"

# 11h. An unregistered foreign sender whose SPF authorizes the egress.
submit alice@example.com sender@spf-pass.e2e.example
expect "port 2587: unregistered sender@spf-pass.e2e.example, SPF pass for the egress: check_outbound_spf" \
    "$(reply_to "RCPT TO:<$RCPT>")" "250 2.1.5 Ok"

# 11i. An unregistered foreign sender whose SPF fails for the egress.
submit alice@example.com sender@spf-fail.e2e.example
expect "port 2587: unregistered sender@spf-fail.e2e.example, SPF fail for the egress: check_outbound_spf" \
    "$(reply_to "RCPT TO:<$RCPT>")" \
    "550 5.7.23 <$RCPT>: Recipient address rejected: <sender@spf-fail.e2e.example>: Sender address rejected: SPF of spf-fail.e2e.example gives fail for our outgoing address 198.51.100.7: receivers would reject or junk this mail. Send it through spf-fail.e2e.example's own mail server, or ask the postmaster to register the address"

# ---- SPF on the MX (profile mx ends in check_spf). HELO client.e2e.example
# has no SPF record (none); the sender domains' records are in
# tests/e2e/zones/example.zone.
# 11j. SPF pass, a whole message to two recipients: one Received-SPF header
#      per message (the second RCPT of the transaction gets DUNNO).
QUIT_AFTER= smtp 2525 "ADDR=198.51.100.7 $NOBODY" client.e2e.example sender@spf-pass.e2e.example \
    "$RCPT,first@example.com" --header "Subject: rpol e2e spf" --body "e2e spf body"
got="$(reply_to "RCPT TO:<$RCPT>") | $(reply_to "RCPT TO:<first@example.com>")"
expect "port 2525: sender@spf-pass.e2e.example from 198.51.100.7 (SPF pass), two RCPTs accepted" \
    "$got" "250 2.1.5 Ok | 250 2.1.5 Ok"
queued=$(reply_to "." | sed -n 's/^250 2\.0\.0 Ok: queued as \([0-9A-Za-z]*\)$/\1/p')
spf_headers=""
[ -n "$queued" ] && spf_headers=$(postcat -c "$ETC" -hq "$queued" 2>/dev/null | grep '^Received-SPF:')
: >"$T/swaks.out"
expect "port 2525: the held message ($queued) has exactly one Received-SPF header" \
    "$spf_headers" \
    'Received-SPF: pass (mx.e2e.example: domain of sender@spf-pass.e2e.example designates 198.51.100.7 as permitted sender) client-ip=198.51.100.7; envelope-from="sender@spf-pass.e2e.example"; helo=client.e2e.example; receiver=mx.e2e.example; identity=mailfrom; mechanism="ip4:198.51.100.7";'

# 11k. SPF fail (-all): rejected at the first RCPT, and the same at a second
#      RCPT of the transaction.
smtp 2525 "ADDR=198.51.100.7 $NOBODY" client.e2e.example sender@spf-fail.e2e.example \
    "$RCPT,first@example.com"
got="$(reply_to "RCPT TO:<$RCPT>") | $(reply_to "RCPT TO:<first@example.com>")"
expect "port 2525: sender@spf-fail.e2e.example from 198.51.100.7 (SPF fail), both RCPTs rejected" \
    "$got" \
    "550 5.7.23 <$RCPT>: Recipient address rejected: SPF fail: domain of sender@spf-fail.e2e.example does not designate 198.51.100.7 as permitted sender | 550 5.7.23 <first@example.com>: Recipient address rejected: SPF fail: domain of sender@spf-fail.e2e.example does not designate 198.51.100.7 as permitted sender"

# 11l. The null sender: the HELO identity decides (RFC 7208 2.4).
smtp 2525 "ADDR=198.51.100.7 $NOBODY" helo-fail.e2e.example "<>" "$RCPT"
expect "port 2525: null sender, HELO helo-fail.e2e.example (SPF -all): HELO identity fails" \
    "$(reply_to "RCPT TO:<$RCPT>")" \
    "550 5.7.23 <$RCPT>: Recipient address rejected: SPF fail: HELO helo-fail.e2e.example does not designate 198.51.100.7 as permitted sender"

# ---- DNS-based restrictions of the seed's port-25 chain (profile mx).
# Each session runs twice: on port 2525, where rpol decides (called from
# smtpd_recipient_restrictions, so Postfix writes "<rcpt>: Recipient address
# rejected: " before rpol's text, and its smtpd_dsn_fix rewrites
# address-type enhanced codes), and on port 2526, where Postfix's own
# restrictions of the same chain decide. Both replies are checked;
# tests/e2e/README.md lists the differences and why they are there.
GOOD="ADDR=198.51.100.7 $NOBODY" # PTR client.e2e.example, forward-confirmed
# Postfix takes the client's names from XCLIENT as they are (it looks
# nothing up), where rpol looks the PTR up: the same client for port 2526.
GOOD_REF="ADDR=198.51.100.7 NAME=client.e2e.example REVERSE_NAME=client.e2e.example"
HELO=client.e2e.example          # A 198.51.100.7
FROM=sender@partner.example      # MX

# pair NAME XCLIENT EHLO FROM TO RPOL-REPLY POSTFIX-REPLY: the reply to RCPT
# through rpol (2525) and from Postfix itself (2526). On 2526, $GOOD becomes
# $GOOD_REF, and REF_XCLIENT= replaces any other XCLIENT.
pair() {
    local name=$1 xclient=$2 ehlo=$3 from=$4 to=$5 ref
    smtp 2525 "$xclient" "$ehlo" "$from" "$to"
    expect "$name: through rpol" "$(reply_to "RCPT TO:<$to>")" "$6"
    ref=${REF_XCLIENT:-$xclient}
    [ "$ref" = "$GOOD" ] && ref=$GOOD_REF
    smtp 2526 "$ref" "$ehlo" "$from" "$to"
    expect "$name: Postfix itself" "$(reply_to "RCPT TO:<$to>")" "$7"
}

# 12. The e2e profile runs the shipped port-25 chain, rule for rule.
: >"$T/swaks.out"
if diff <(rules_of "$ROOT/policy.toml" smtp) <(rules_of "$HERE/policy.toml" mx) >"$T/rules.diff"; then
    pass "profile mx runs the rules of policy.toml's [profile.smtp] ($(grep -c '"' <(rules_of "$HERE/policy.toml" mx)) rules)"
else
    fail "profile mx runs the rules of policy.toml's [profile.smtp]" "$(cat "$T/rules.diff")"
fi

# -- client
# 13. No PTR for the client (REVERSE_NAME=[UNAVAILABLE]: rpol looks the PTR
#     up itself, NXDOMAIN). Permanent: unknown_client_reject_code, 450.
pair "client 198.51.100.12 without PTR: reject_unknown_reverse_client_hostname" \
    "ADDR=198.51.100.12 $NOBODY" "$HELO" "$FROM" "$RCPT" \
    "450 4.7.1 <$RCPT>: Recipient address rejected: Client host rejected: cannot find your reverse hostname, [198.51.100.12]" \
    "450 4.7.1 Client host rejected: cannot find your reverse hostname, [198.51.100.12]"

# 14. A PTR whose name does not resolve back still passes it.
REF_XCLIENT="ADDR=198.51.100.20 NAME=[UNAVAILABLE] REVERSE_NAME=mismatch.example" \
    pair "client 198.51.100.20, PTR mismatch.example not confirmed: passes" \
    "ADDR=198.51.100.20 $NOBODY" "$HELO" "$FROM" "$RCPT" "250 2.1.5 Ok" "250 2.1.5 Ok"

# -- HELO
# 15. Not a valid host name.
pair "HELO ex..ample: reject_invalid_helo_hostname" "$GOOD" "ex..ample" "$FROM" "$RCPT" \
    "501 5.5.2 <$RCPT>: Recipient address rejected: <ex..ample>: Helo command rejected: Invalid name" \
    "501 5.5.2 <ex..ample>: Helo command rejected: Invalid name"

# 16. Not fully qualified.
pair "HELO myhost: reject_non_fqdn_helo_hostname" "$GOOD" "myhost" "$FROM" "$RCPT" \
    "504 5.5.2 <$RCPT>: Recipient address rejected: <myhost>: Helo command rejected: need fully-qualified hostname" \
    "504 5.5.2 <myhost>: Helo command rejected: need fully-qualified hostname"

# 17. Does not resolve (NXDOMAIN).
pair "HELO nohost.example (NXDOMAIN): reject_unknown_helo_hostname" "$GOOD" "nohost.example" "$FROM" "$RCPT" \
    "450 4.7.1 <$RCPT>: Recipient address rejected: <nohost.example>: Helo command rejected: Host not found" \
    "450 4.7.1 <nohost.example>: Helo command rejected: Host not found"

# 18. A bare IP address passes reject_invalid_helo_hostname ("for
#     compatibility"), then fails reject_non_fqdn_helo_hostname.
pair "HELO 203.0.113.5 (bare IP): reject_non_fqdn_helo_hostname" "$GOOD" "203.0.113.5" "$FROM" "$RCPT" \
    "504 5.5.2 <$RCPT>: Recipient address rejected: <203.0.113.5>: Helo command rejected: need fully-qualified hostname" \
    "504 5.5.2 <203.0.113.5>: Helo command rejected: need fully-qualified hostname"

# 19. An address literal passes all three HELO checks, without DNS.
pair "HELO [198.51.100.7] (address literal): passes" "$GOOD" "[198.51.100.7]" "$FROM" "$RCPT" \
    "250 2.1.5 Ok" "250 2.1.5 Ok"

# 20. An MX record alone satisfies reject_unknown_helo_hostname.
pair "HELO mx-only.example (MX, no A/AAAA): passes" "$GOOD" "mx-only.example" "$FROM" "$RCPT" \
    "250 2.1.5 Ok" "250 2.1.5 Ok"

# -- sender
# 21. Not fully qualified.
pair "sender sender@localhost: reject_non_fqdn_sender" "$GOOD" "$HELO" "sender@localhost" "$RCPT" \
    "504 5.5.2 <$RCPT>: Recipient address rejected: <sender@localhost>: Sender address rejected: need fully-qualified address" \
    "504 5.5.2 <sender@localhost>: Sender address rejected: need fully-qualified address"

# 22. NXDOMAIN. rpol answers 450 4.1.8; Postfix's smtpd_dsn_fix turns a
#     sender DSN in a recipient-restriction reply into 4.1.2.
pair "sender domain nx.example (NXDOMAIN): reject_unknown_sender_domain" "$GOOD" "$HELO" "sender@nx.example" "$RCPT" \
    "450 4.1.2 <$RCPT>: Recipient address rejected: <sender@nx.example>: Sender address rejected: Domain not found" \
    "450 4.1.8 <sender@nx.example>: Sender address rejected: Domain not found"

# 23. Null MX.
pair "sender domain nullmx.example (null MX): reject_unknown_sender_domain" "$GOOD" "$HELO" "sender@nullmx.example" "$RCPT" \
    "550 5.7.27 <$RCPT>: Recipient address rejected: <sender@nullmx.example>: Sender address rejected: Domain nullmx.example does not accept mail (nullMX)" \
    "550 5.7.27 <sender@nullmx.example>: Sender address rejected: Domain nullmx.example does not accept mail (nullMX)"

# 24. An MX and no A/AAAA is enough.
pair "sender domain mx-only.example (MX only): passes" "$GOOD" "$HELO" "sender@mx-only.example" "$RCPT" \
    "250 2.1.5 Ok" "250 2.1.5 Ok"

# 25. SERVFAIL: rpol answers DEFER_IF_PERMIT, nothing later rejects, so
#     Postfix defers (4.1.8 -> 4.1.2 again).
# Through rpol, check_spf (last in the chain) cannot evaluate SPF either:
# its temperror action defaults to defer_if_permit, so the earlier, more
# precise deferral of reject_unknown_sender_domain is the one the client
# sees, as with Postfix and policyd-spf.
pair "sender domain servfail.example (SERVFAIL): defer_if_permit, then check_spf temperror" "$GOOD" "$HELO" "sender@servfail.example" "$RCPT" \
    "450 4.1.2 <$RCPT>: Recipient address rejected: <sender@servfail.example>: Sender address rejected: Domain not found" \
    "450 4.1.8 <sender@servfail.example>: Sender address rejected: Domain not found"

# -- recipient
# 26. Unknown mailbox in one of our domains.
pair "recipient nobody@example.com: reject_unlisted_recipient" "$GOOD" "$HELO" "$FROM" "nobody@example.com" \
    "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in virtual mailbox table" \
    "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in virtual mailbox table"

# 27. A foreign domain that exists: rpol's reject_unauth_destination
#     answers before Postfix's own.
pair "recipient rcpt@good.example (foreign): reject_unauth_destination" "$GOOD" "$HELO" "$FROM" "rcpt@good.example" \
    "554 5.7.1 <rcpt@good.example>: Recipient address rejected: Relay access denied" \
    "554 5.7.1 <rcpt@good.example>: Relay access denied"

# 28. A foreign domain that does not exist.
pair "recipient domain nx.example (NXDOMAIN): reject_unknown_recipient_domain" "$GOOD" "$HELO" "$FROM" "rcpt@nx.example" \
    "450 4.1.2 <rcpt@nx.example>: Recipient address rejected: Domain not found" \
    "450 4.1.2 <rcpt@nx.example>: Recipient address rejected: Domain not found"

# 29. A foreign domain with a null MX: rpol answers 556 5.1.10, which
#     smtpd_dsn_fix makes 5.1.0 (it has no entry for detail "10").
pair "recipient domain nullmx.example (null MX): reject_unknown_recipient_domain" "$GOOD" "$HELO" "$FROM" "rcpt@nullmx.example" \
    "556 5.1.0 <rcpt@nullmx.example>: Recipient address rejected: Domain nullmx.example does not accept mail (nullMX)" \
    "556 5.1.10 <rcpt@nullmx.example>: Recipient address rejected: Domain nullmx.example does not accept mail (nullMX)"

# -- defer_if_permit loses to a later reject
# 30. SERVFAIL on the sender domain, then an unknown recipient.
pair "sender SERVFAIL, then an unknown recipient: the reject wins" "$GOOD" "$HELO" "sender@servfail.example" "nobody@example.com" \
    "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in virtual mailbox table" \
    "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown in virtual mailbox table"

# 31. SERVFAIL on the sender domain, then a relay attempt.
pair "sender SERVFAIL, then a relay attempt: the reject wins" "$GOOD" "$HELO" "sender@servfail.example" "rcpt@good.example" \
    "554 5.7.1 <rcpt@good.example>: Recipient address rejected: Relay access denied" \
    "554 5.7.1 <rcpt@good.example>: Relay access denied"

# -- last of the DNS scenarios: a query timeout
# After a session that queried timeout.example, knotd workers stay blocked
# for up to its 1.5 s proxy timeout (see the knot section), so that the
# next session's queries (e.g. Postfix's uncached HELO lookup) could time
# out too. The last proxied query left at least 1 s before the session
# ended (the resolver waited that long for it): wait out the rest, with a
# margin. Then make sure: proxied queries that landed on the same worker
# queue up behind each other and can hold it longer (one run in ten, the
# reference's HELO lookup right after rpol's session timed out). 48 probes
# from 48 source ports reach every one of the 8 workers with high
# probability; a round is repeated until all answer within 1 s.
knotd_proxy_drain() {
    sleep 1
    local round answers
    for ((round = 0; round < 10; round++)); do
        answers=$(for _ in $(seq 48); do
            kdig @127.0.0.53 +short +timeout=1 +retry=0 mx.e2e.example A &
        done; wait)
        if [ "$(grep -cx 203.0.113.10 <<<"$answers")" = 48 ]; then
            [ "$round" = 0 ] || log "note: knotd answered every probe after $((round + 1)) rounds"
            return 0
        fi
    done
    log "note: knotd workers still blocked after 10 rounds of probes"
}
# 32. No answer at all: each query waits for rpol's 1 s [dns] timeout (MX,
#     A, AAAA), Postfix's resolver for resolv.conf's timeout:1.
t0=$(date +%s%N)
smtp 2525 "$GOOD" "$HELO" "sender@timeout.example" "$RCPT"
ms=$((($(date +%s%N) - t0) / 1000000))
expect "sender domain timeout.example (no answer): defer_if_permit, then check_spf temperror: through rpol ($ms ms)" \
    "$(reply_to "RCPT TO:<$RCPT>")" \
    "450 4.1.2 <$RCPT>: Recipient address rejected: <sender@timeout.example>: Sender address rejected: Domain not found"
if [ "$ms" -ge 3500 ] && [ "$ms" -lt 12000 ]; then
    pass "rpol's timeout answer took $ms ms (MX, A, AAAA and SPF's TXT: 4 queries x 1 s, attempts = 1)"
else
    fail "rpol's timeout answer took 4 x its 1 s [dns] timeout" "took $ms ms (want 3500..12000)"
fi
knotd_proxy_drain
t0=$(date +%s%N)
smtp 2526 "$GOOD_REF" "$HELO" "sender@timeout.example" "$RCPT"
ms=$((($(date +%s%N) - t0) / 1000000))
expect "sender domain timeout.example (no answer): defer_if_permit: Postfix itself ($ms ms)" \
    "$(reply_to "RCPT TO:<$RCPT>")" \
    "450 4.1.8 <sender@timeout.example>: Sender address rejected: Domain not found"
knotd_proxy_drain

# -- helo_required
# 33. No HELO/EHLO at all (swaks always sends one: smtp-raw.pl). Port 2525
#     leaves Postfix's own smtpd_helo_required off, so MAIL is accepted and
#     rpol's helo_required answers at RCPT; on 2526 Postfix refuses MAIL.
perl "$HERE/smtp-raw.pl" 2525 "XCLIENT $GOOD" "MAIL FROM:<$FROM>" "RCPT TO:<$RCPT>" \
    >"$T/swaks.out" 2>&1
if [ "${E2E_VERBOSE:-0}" = 1 ]; then sed 's/^/       | /' "$T/swaks.out"; fi
expect "no HELO/EHLO: helo_required: through rpol" \
    "$(reply_to "MAIL FROM:<$FROM>") | $(reply_to "RCPT TO:<$RCPT>")" \
    "250 2.1.0 Ok | 503 5.5.1 <$RCPT>: Recipient address rejected: Helo command rejected: Error: send HELO/EHLO first"
perl "$HERE/smtp-raw.pl" 2526 "XCLIENT $GOOD" "MAIL FROM:<$FROM>" "RCPT TO:<$RCPT>" \
    >"$T/swaks.out" 2>&1
if [ "${E2E_VERBOSE:-0}" = 1 ]; then sed 's/^/       | /' "$T/swaks.out"; fi
expect "no HELO/EHLO: smtpd_helo_required: Postfix itself" \
    "$(reply_to "MAIL FROM:<$FROM>") | $(reply_to "RCPT TO:<$RCPT>")" \
    "503 5.5.1 Error: send HELO/EHLO first | 503 5.5.1 Error: need MAIL command"

# 33b. Rate limit (port 2588, profile ratelimit: 2 messages an hour per
#      login, counted at END-OF-MESSAGE): bob's first two messages are
#      queued, the third is deferred at RCPT; another login goes on.
rate_login() { echo "ADDR=198.51.100.7 $NOBODY LOGIN=$1"; }
for n in 1 2; do
    QUIT_AFTER= smtp 2588 "$(rate_login bob@example.com)" client.e2e.example bob@example.com "$RCPT" \
        --header "Subject: rate $n" --body "e2e rate-limit body"
    expect "port 2588: bob's message $n of 2 an hour is queued" \
        "$(reply_to "." | sed 's/queued as .*/queued/')" "250 2.0.0 Ok: queued"
done
RATE_REFUSED="450 4.7.1 <$RCPT>: Recipient address rejected: <bob@example.com>: Sender address rejected: Rate limit \"e2e_login\" reached: 2 messages per 1h; try again later"
smtp 2588 "$(rate_login bob@example.com)" client.e2e.example bob@example.com "$RCPT"
expect "port 2588: bob's third message gets 450 4.7.1 at RCPT" \
    "$(reply_to "RCPT TO:<$RCPT>")" "$RATE_REFUSED"
smtp 2588 "$(rate_login alice@example.com)" client.e2e.example alice@example.com "$RCPT"
expect "port 2588: alice's budget is her own" "$(reply_to "RCPT TO:<$RCPT>")" "250 2.1.5 Ok"
sleep 0.2
if grep -q 'WARN .*rate limit "e2e_login": sasl_username=bob@example.com reached its budget' "$RPOL_LOG"; then
    pass "rpol warned about bob's login crossing its limit"
else
    fail "rpol warned about bob's login crossing its limit" "$(tail -n 5 "$RPOL_LOG")"
fi

# 33c. Greylisting (port 2527, profile greylist, [greylist] delay = "2s"):
#      the first attempt of a triplet gets 450 4.7.1 at RCPT, an immediate
#      retry too (the store counts whole seconds: 2 or 1 left), and a retry
#      after the delay is queued with the X-Greylist header.
GREY_FROM=grey@partner.example
GREY_CLIENT="ADDR=198.51.100.7 $NOBODY"
grey_reply() { echo "450 4.7.1 <$RCPT>: Recipient address rejected: Greylisted, see RFC 6647: try again in $1 seconds"; }
smtp 2527 "$GREY_CLIENT" client.e2e.example "$GREY_FROM" "$RCPT"
expect "port 2527: a new triplet is greylisted at RCPT" \
    "$(reply_to "RCPT TO:<$RCPT>")" "$(grey_reply 2)"
smtp 2527 "$GREY_CLIENT" client.e2e.example "$GREY_FROM" "$RCPT"
got=$(reply_to "RCPT TO:<$RCPT>")
want=$(grey_reply 2)
[ "$got" = "$(grey_reply 1)" ] && want=$got
expect "port 2527: an immediate retry is greylisted still" "$got" "$want"
sleep 2
send_held "port 2527: the retry after the delay is accepted and queued" "$ETC" '^X-Greylist:' \
    2527 "$GREY_CLIENT" client.e2e.example "$GREY_FROM" "$RCPT"
grey_headers=$held
# delayed 2 s, or 3 when the second turned over during the session; the
# host name is this machine's (gethostname), the date an HTTP date.
grey_re="^X-Greylist: delayed [23] seconds by rpol-$("$RPOL" --version | awk '{print $NF}') at $(uname -n); [A-Z][a-z]{2}, [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT$"
if [ "$(grep -c . <<<"$grey_headers")" = 1 ] && grep -Eq "$grey_re" <<<"$grey_headers"; then
    pass "port 2527: the held message ($queued) has one X-Greylist header"
    echo "       $grey_headers"
else
    fail "port 2527: the held message has one X-Greylist header" \
        "want: $grey_re" "got:  ${grey_headers:-(nothing; queued as ${queued:-nothing})}"
fi

# 33d. Dry run (port 2529, profile trial: profile mx taken with `like`, in
#      mode = "warn"): mail that the enforced chain refuses on 2525 is
#      queued, and rpol's log names the rule and the reply it would have
#      given, as Postfix's own warn_if_reject does ("reject_warning").
dry_run() {
    local name=$1 xclient=$2 from=$3 refused=$4 warned=$5
    smtp 2525 "$xclient" "$HELO" "$from" "$RCPT"
    expect "port 2525: $name: refused by the chain enforced" "$(reply_to "RCPT TO:<$RCPT>")" "$refused"
    QUIT_AFTER= smtp 2529 "$xclient" "$HELO" "$from" "$RCPT" \
        --header "Subject: rpol e2e dry run" --body "e2e dry run body"
    expect "port 2529: $name: the same chain in mode warn lets the message through" \
        "$(reply_to "RCPT TO:<$RCPT>") | $(reply_to "." | sed 's/queued as .*/queued/')" \
        "250 2.1.5 Ok | 250 2.0.0 Ok: queued"
    : >"$T/swaks.out"
    expect "port 2529: $name: rpol logged the refusal it did not answer" \
        "$(grep -F "NOQUEUE: reject_warning: " "$RPOL_LOG" | grep -F "profile=trial" | grep -F "from=<$from>" | sed -e 's/.*NOQUEUE: /NOQUEUE: /' -e 's/ instance=[^ ][^ ]* / instance=INSTANCE /' | tail -n 1)" \
        "$warned"
}
dry_run "client without PTR" "ADDR=198.51.100.12 $NOBODY" "$FROM" \
    "450 4.7.1 <$RCPT>: Recipient address rejected: Client host rejected: cannot find your reverse hostname, [198.51.100.12]" \
    "NOQUEUE: reject_warning: action=\"450 4.7.1 Client host rejected: cannot find your reverse hostname, [198.51.100.12]\" client=unknown[198.51.100.12] from=<$FROM> to=<$RCPT> helo=<$HELO> sasl_username=<> protocol_state=RCPT instance=INSTANCE profile=trial rule=\"client: reject_unknown_reverse_client_hostname\""
dry_run "SPF fail" "ADDR=198.51.100.7 $NOBODY" sender@spf-fail.e2e.example \
    "550 5.7.23 <$RCPT>: Recipient address rejected: SPF fail: domain of sender@spf-fail.e2e.example does not designate 198.51.100.7 as permitted sender" \
    "NOQUEUE: reject_warning: action=\"550 5.7.23 SPF fail: domain of sender@spf-fail.e2e.example does not designate 198.51.100.7 as permitted sender\" client=unknown[198.51.100.7] from=<sender@spf-fail.e2e.example> to=<$RCPT> helo=<$HELO> sasl_username=<> protocol_state=RCPT instance=INSTANCE profile=trial rule=\"recipient: check_spf\""

# 33e. The second instance, configured from `rpol --postfix-config`.
# shellcheck source=postfix-config.sh
. "$HERE/postfix-config.sh"

# 34. rpol stopped: Postfix retries, then applies its default_action.
stop_rpol
[ ! -e "$SOCKET" ] || log "note: rpol left its socket behind after SIGTERM"
t0=$(date +%s%N)
smtp 2525 "ADDR=203.0.113.9 $NOBODY" client.e2e.example sender@partner.example "$RCPT"
t1=$(date +%s%N)
expect "rpol stopped: Postfix answers its default_action ($(((t1 - t0) / 1000000)) ms)" \
    "$(reply_to "RCPT TO:<$RCPT>")" \
    "451 4.3.5 <$RCPT>: Recipient address rejected: Server configuration problem"

# 35. rpol back: Postfix reconnects by itself.
start_rpol
smtp 2525 "ADDR=203.0.113.9 $NOBODY" client.e2e.example sender@partner.example "$RCPT"
expect "rpol restarted: Postfix reconnects and rpol rejects again" \
    "$(reply_to "RCPT TO:<$RCPT>")" \
    "554 5.7.1 <$RCPT>: Recipient address rejected: <unknown[203.0.113.9]>: Client host rejected: Access denied"
smtp 2588 "$(rate_login bob@example.com)" client.e2e.example bob@example.com "$RCPT"
expect "rpol restarted: bob's count survived (embedded store)" \
    "$(reply_to "RCPT TO:<$RCPT>")" "$RATE_REFUSED"

# 36. Nothing went wrong on either side (but the expected rate-limit warning).
expect_none "rpol logged no warnings or errors" \
    "$(grep -E ' (ERROR|WARN) ' "$RPOL_LOG" | grep -v 'rate limit "e2e_login": sasl_username=bob@example.com')"
expect_none "Postfix logged no fatal/panic/error lines" "$(grep -E '(fatal|panic|error):' "$MAILLOG")"

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
