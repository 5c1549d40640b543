#!/bin/bash
# DNS lists through a real Postfix: Postfix's own reject_rbl_client,
# reject_rhsbl_sender and permit_dnswl_client beside rpol's answers to the
# same clients through check_policy_service, against the same zones
# (tests/zones/dnsbl.test.zone served by knotd; broken.test answers
# SERVFAIL). A throw-away Postfix in a private network + mount namespace,
# as tests/e2e/run.sh (whose setup this follows).
#
#   RPOL=target/debug/rpol tests/e2e/dnsbl.sh
#
# For each case it prints Postfix's reply and rpol's. rpol's reply passes
# through Postfix's policy client, which puts `<name>: <Class> rejected: `
# before any text a policy server answers; a case passes when rpol's reply
# is Postfix's with that one prefix added (or the same when it accepts).
# Then postscreen's DNSBL score beside rpol's check_dnsbl_score
# (postscreen.sh, sourced: see there).
# Prints "N passed, M failed"; needs root, postfix, swaks, knotd, kdig.

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
. "$HERE/postscreen.sh"

if [ "${1:-}" != "--inside" ]; then
    absolute_rpol
    [ "$(id -u)" = 0 ] || { echo "dnsbl e2e: must run as root" >&2; exit 2; }
    T=$(mktemp -d /tmp/rpol-dnsbl.XXXXXX) || exit 2
    chmod 0755 "$T"
    export RPOL T
    unshare -n -m --propagation private bash "$HERE/dnsbl.sh" --inside
    rc=$?
    if [ "${E2E_KEEP:-0}" = 1 ]; then echo "kept $T"; else rm -rf "$T"; fi
    exit $rc
fi

ETC=$T/etc
KNOT=$T/knot
PASSED=0
FAILED=0
cleanup() {
    postfix -c "$ETC" stop >/dev/null 2>&1
    for f in "$T"/rpol*.pid "$T/knot.pid" "$T/silent.pid"; do
        [ -s "$f" ] && kill "$(cat "$f")" 2>/dev/null
    done
    sleep 0.5
}
trap cleanup EXIT
die() { echo "dnsbl e2e: FATAL: $*" >&2; tail -n 20 "$T/maillog" "$T/rpol.log" "$T/knot.log" 2>/dev/null >&2; exit 1; }

isolate_network

mkdir -p "$KNOT"
# knotd wants RFC 1035 escapes for bytes outside ASCII (hickory's zone
# parser reads them as characters, hence UTF-8 in the file).
sed 's/café/caf\\195\\169/' "$ROOT/tests/zones/dnsbl.test.zone" >"$KNOT/test.zone"
cat >"$KNOT/knot.conf" <<EOF
server:
    rundir: "$KNOT"
    listen: 127.0.0.53@53
database:
    storage: "$KNOT"
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
    storage: "$KNOT"
    semantic-checks: off
zone:
  - domain: test
    file: "test.zone"
  - domain: broken.test
    file: "broken.test.zone-does-not-exist"
  - domain: timeout.test
    file: "timeout.test.zone"
    module: mod-dnsproxy/silent
EOF
# timeout.test, as run.sh's timeout.example: every query is forwarded to
# 127.0.0.54:53, where a socket is bound that never answers.
printf '$ORIGIN timeout.test.\n@ 300 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60\n@ 300 IN NS ns.test.\n' \
    >"$KNOT/timeout.test.zone"
perl -MIO::Socket::INET -e '
    my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.54", LocalPort => 53, Proto => "udp")
        or die "silent responder: bind 127.0.0.54:53: $!\n";
    sleep 600;' >"$T/silent.log" 2>&1 &
echo $! >"$T/silent.pid"
knotd -c "$KNOT/knot.conf" >"$T/knot.log" 2>&1 &
echo $! >"$T/knot.pid"
wait_for 'kdig @127.0.0.53 +short +timeout=1 +retry=0 5.113.0.203.bl.test A | grep -q 127.0.0.2' 50 \
    || die "knotd does not answer"
wait_for 'ss -Hlun src 127.0.0.54:53 | grep -q .' 50 || die "the silent responder is not bound"

mkdir -p "$ETC" "$T/spool" "$T/data"
chown postfix "$T/data"
cat >"$ETC/main.cf" <<EOF
compatibility_level = 3.6
queue_directory = $T/spool
data_directory = $T/data
mail_owner = postfix
setgid_group = postdrop
maillog_file = $T/maillog
maillog_file_prefixes = /var, /dev/stdout, $T
myhostname = mx.e2e.example
mydestination =
local_recipient_maps =
virtual_mailbox_domains = example.com
virtual_mailbox_maps = static:ok
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.1/32
smtpd_authorized_xclient_hosts = 127.0.0.0/8
smtpd_relay_restrictions = reject_unauth_destination
default_transport = discard:nothing
virtual_transport = discard:nothing
smtpd_end_of_data_restrictions = check_client_access static:HOLD
EOF
postscreen_main_cf >>"$ETC/main.cf"
# Port 26NN: Postfix's own restriction; 27NN: the same through rpol
# (profile cNN, called from the same list).
{
    cat <<'EOF'
127.0.0.1:2601 inet n - n - - smtpd
  -o { smtpd_client_restrictions = reject_rbl_client bl.test }
127.0.0.1:2701 inet n - n - - smtpd
  -o smtpd_policy_service_policy_context=c01
  -o { smtpd_client_restrictions = check_policy_service unix:private/rpol }
127.0.0.1:2602 inet n - n - - smtpd
  -o { smtpd_client_restrictions = reject_rbl_client bl.test=127.0.0.[2;3] }
127.0.0.1:2702 inet n - n - - smtpd
  -o smtpd_policy_service_policy_context=c02
  -o { smtpd_client_restrictions = check_policy_service unix:private/rpol }
127.0.0.1:2603 inet n - n - - smtpd
  -o { smtpd_client_restrictions = reject_rbl_client broken.test }
127.0.0.1:2703 inet n - n - - smtpd
  -o smtpd_policy_service_policy_context=c03
  -o { smtpd_client_restrictions = check_policy_service unix:private/rpol }
127.0.0.1:2604 inet n - n - - smtpd
  -o { smtpd_sender_restrictions = reject_rhsbl_sender dbl.test }
127.0.0.1:2704 inet n - n - - smtpd
  -o smtpd_policy_service_policy_context=c04
  -o { smtpd_sender_restrictions = check_policy_service unix:private/rpol }
127.0.0.1:2605 inet n - n - - smtpd
  -o { smtpd_client_restrictions = permit_dnswl_client wl.test, reject }
127.0.0.1:2705 inet n - n - - smtpd
  -o smtpd_policy_service_policy_context=c05
  -o { smtpd_client_restrictions = check_policy_service unix:private/rpol }
127.0.0.1:2606 inet n - n - - smtpd
  -o { smtpd_client_restrictions = permit_dnswl_client broken.test, reject }
127.0.0.1:2706 inet n - n - - smtpd
  -o smtpd_policy_service_policy_context=c06
  -o { smtpd_client_restrictions = check_policy_service unix:private/rpol }
EOF
    postscreen_master_cf
    cat <<'EOF'
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
proxymap  unix  -       -       n       -       -       proxymap
error     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
EOF
} >"$ETC/master.cf"
out=$(script -qec "postfix -c '$ETC' check" /dev/null 2>&1) || die "postfix check: $out"
out=$(script -qec "postfix -c '$ETC' start" /dev/null 2>&1) || die "postfix start: $out"
wait_for '(exec 3<>/dev/tcp/127.0.0.1/2706)' 100 || die "Postfix does not listen"

profile() { # NAME STAGE RULES
    printf '[profile.%s]\nmatch = { policy_context = "%s" }\ncalled_from = "%s"\n%s = [%s]\n' \
        "$1" "$1" "$2" "$2" "$3"
}
{
    printf '[server]\nsocket_owner = "postfix"\n[dns]\nnameservers = ["127.0.0.53:53"]\ntimeout = "1s"\nattempts = 1\n'
    printf '[site]\ndomains = ["example.com"]\n'
    profile c01 client '"reject_rbl_client bl.test"'
    profile c02 client '"reject_rbl_client bl.test=127.0.0.[2;3]"'
    profile c03 client '"reject_rbl_client broken.test"'
    profile c04 sender '"reject_rhsbl_sender dbl.test"'
    profile c05 client '"permit_dnswl_client wl.test", "reject"'
    profile c06 client '"permit_dnswl_client broken.test", "reject"'
} >"$T/policy.toml"
mkdir -p "$T/spool/private"
NO_COLOR=1 RUST_LOG=info "$RPOL" --config "$T/policy.toml" --listen "unix:$T/spool/private/rpol" \
    --user nobody >"$T/rpol.log" 2>&1 &
echo $! >"$T/rpol.pid"
wait_for '[ -S "$T/spool/private/rpol" ]' 100 || die "rpol did not start"
postscreen_start_rpol
postscreen_begin

# reply PORT ADDR FROM: Postfix's reply to RCPT TO (or the first refusal).
reply() {
    swaks --server 127.0.0.1 --port "$1" --xclient "ADDR=$2 NAME=[UNAVAILABLE] REVERSE_NAME=[UNAVAILABLE]" \
        --ehlo client.example --from "$3" --to alice@example.com --quit-after RCPT --timeout 30 \
        >"$T/swaks.out" 2>&1
    awk 'found && /^<[-*~]/ { sub(/^<[-*~]+ */, ""); print; exit }
         /^ *[-~]> RCPT TO/ { found = 1 }' "$T/swaks.out"
}

# case N ADDR FROM WHAT [DEVIATION]: passes when rpol's reply is Postfix's
# (or Postfix's with the policy-answer prefix), or with DEVIATION when
# Postfix refuses and rpol accepts (the error codes rpol reads as errors).
case_() {
    local n=$1 addr=$2 from=$3 what=$4 deviation=${5:-} ref got strip ok=0
    ref=$(reply "26$n" "$addr" "$from")
    got=$(reply "27$n" "$addr" "$from")
    # rpol's text with Postfix's policy-answer prefix taken out.
    strip=$(printf '%s' "$got" | sed -E 's/^([45][0-9][0-9] [45]\.[0-9]+\.[0-9]+) <[^>]*>: [A-Za-z -]+ rejected: /\1 /')
    if [ -n "$deviation" ]; then
        case $ref in 5*) [ "$got" = "250 2.1.5 Ok" ] && ok=1 ;; esac
    elif [ "$got" = "$ref" ] || [ "$strip" = "$ref" ]; then
        ok=1
    fi
    if [ $ok = 1 ]; then
        PASSED=$((PASSED + 1)); echo "ok   $what"
    else
        FAILED=$((FAILED + 1)); echo "FAIL $what"
    fi
    echo "       postfix: $ref"
    echo "       rpol:    $got"
}

case_ 01 203.0.113.5 a@good.example "reject_rbl_client: listed, TXT"
case_ 01 203.0.113.6 a@good.example "reject_rbl_client: listed, no TXT"
case_ 01 203.0.113.50 a@good.example "reject_rbl_client: not listed"
case_ 01 203.0.113.11 a@good.example "reject_rbl_client: two TXT, one not ASCII"
case_ 01 203.0.113.7 a@good.example "reject_rbl_client: error code 127.255.255.254 (rpol accepts on purpose)" deviation
case_ 02 203.0.113.5 a@good.example "reject_rbl_client with filter: one record matches"
case_ 02 203.0.113.6 a@good.example "reject_rbl_client with filter: filtered out"
case_ 03 203.0.113.5 a@good.example "reject_rbl_client: SERVFAIL"
case_ 04 203.0.113.50 bob@spam.example "reject_rhsbl_sender: listed"
case_ 04 203.0.113.50 bob@good.example "reject_rhsbl_sender: error code 127.255.255.252 (rpol accepts on purpose)" deviation
case_ 05 203.0.113.20 a@good.example "permit_dnswl_client: listed"
case_ 05 203.0.113.21 a@good.example "permit_dnswl_client: not listed"
case_ 06 203.0.113.21 a@good.example "permit_dnswl_client: SERVFAIL"
postscreen_cases
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
