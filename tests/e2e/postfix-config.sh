# Sourced by run.sh (inside its namespace, after the first instance's
# checks): a second Postfix instance in $G whose rpol lines are exactly what
# `rpol --config shipped.toml --postfix-config` prints (the same lines as
# the package's packaging/postfix-config.txt), and the checks that those
# lines do what the issue promises: authenticated relay to an outside domain
# on 587 (STARTTLS) and 465 (TLS on connect) accepted, unauthenticated relay
# refused, port 25 still the MX; and a greylisted one-recipient message
# retried after the delay carries Received-SPF and X-Greylist, each once
# (the second header goes out at DATA: smtpd_data_restrictions).
#
# The instance: run.sh's plumbing (instance_plumbing, master_plumbing:
# paths, e2e domains, XCLIENT on port 25, nothing delivered, Cyrus SASL
# with a sasldb user), a self-signed certificate, the `smtp inet` service of
# Postfix's stock master.cf, then the printed main.cf and master.cf sections
# appended, with only these mechanical changes for a throw-away instance:
# - chroot `y` -> `n` in the printed services: the temporary queue
#   directory has no /etc copies;
# - /etc/postfix/ -> $G/etc/ in the printed map paths, and the two map
#   sections written there and postmap'ed.
# Nothing else: inet_interfaces = 127.0.0.1 in the namespace makes smtp,
# submission and submissions listen on 127.0.0.1:25, 587 and 465 (the ports
# shipped.toml's profiles match), and `unix:private/rpol` is relative to the
# instance's queue directory, where rpol is told to listen.

GETC=$G/etc
G_LOG=$G/rpol.log
G_PASSWORD=e2e-secret
G_OUTSIDE=friend@example.org

mkdir -p "$G"
"$RPOL" --config "$HERE/shipped.toml" --postfix-config >"$G/postfix-config.txt" 2>"$G/postfix-config.err" ||
    die "rpol --postfix-config: $(cat "$G/postfix-config.err")"

# printed SECTION: the lines of the printed section whose title starts with
# SECTION ("main.cf", "master.cf", "/etc/postfix/rpol_sender_relay", ...).
printed() {
    awk -v title="# ---- $1 " '
        /^# ---- / { on = index($0, title) == 1; next }
        on && NF
    ' "$G/postfix-config.txt"
}

: >"$T/swaks.out"
if diff <(tail -n +2 "$ROOT/packaging/postfix-config.txt") <(tail -n +2 "$G/postfix-config.txt") >"$T/rules.diff"; then
    pass "instance 2: rpol --postfix-config prints the package's lines for shipped.toml"
else
    fail "instance 2: rpol --postfix-config prints the package's lines for shipped.toml" "$(cat "$T/rules.diff")"
fi
# shipped.toml's profiles are the package's (smtp plus check_greylist).
if diff <(profile_of "$ROOT/packaging/policy.toml" smtp; profile_of "$ROOT/packaging/policy.toml" submission) \
    <(profile_of "$HERE/shipped.toml" smtp | grep -vx ' *"check_greylist",'; profile_of "$HERE/shipped.toml" submission) \
    >"$T/rules.diff"; then
    pass "instance 2: shipped.toml's profiles smtp and submission are the package's (smtp + check_greylist)"
else
    fail "instance 2: shipped.toml's profiles smtp and submission are the package's" "$(cat "$T/rules.diff")"
fi

mkdir -p "$GETC"
{
    instance_plumbing "$G"
    cat <<EOF
# The instance's certificate (self-signed, made by run.sh).
smtpd_tls_cert_file = $GETC/cert.pem
smtpd_tls_key_file = $GETC/key.pem

# ---- from rpol --postfix-config (map paths under $GETC)
EOF
    printed main.cf | sed "s|/etc/postfix/|$GETC/|g"
} >"$GETC/main.cf"
{
    echo "# Port 25, as Postfix's stock master.cf has it (chroot n)."
    echo "smtp      inet  n       -       n       -       -       smtpd"
    echo "# ---- from rpol --postfix-config (chroot y -> n)"
    printed master.cf | awk '/^[a-z]/ && $2 == "inet" && $5 == "y" { $5 = "n" } { print }'
    master_plumbing
} >"$GETC/master.cf"
for map in rpol_sender_relay rpol_sasl_passwd; do
    printed "/etc/postfix/$map" >"$GETC/$map"
    postmap -c "$GETC" "hash:$GETC/$map" || die "postmap $GETC/$map"
done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=mx.e2e.example -keyout "$GETC/key.pem" -out "$GETC/cert.pem" >"$G/openssl.log" 2>&1 ||
    die "openssl: $(cat "$G/openssl.log")"
# Two logins: Cyrus keeps user@realm; smtpd reports sasl_username=alice@example.com.
for user in alice bob; do
    echo "$G_PASSWORD" | saslpasswd2 -p -c -f "$G/sasldb2" -u example.com "$user" ||
        die "saslpasswd2 $user"
done
chown postfix "$G/sasldb2"
out=$(script -qec "postfix -c '$GETC' check" /dev/null 2>&1) || die "postfix check (instance 2): $out"
out=$(script -qec "postfix -c '$GETC' start" /dev/null 2>&1) || die "postfix start (instance 2): $out"
wait_for 'port_open 25 && port_open 465 && port_open 587' 100 ||
    die "instance 2 does not listen on 25/465/587"
mkdir -p "$G/conf/state"
cp "$HERE/shipped.toml" "$G/conf/"
cp -r "$HERE/tables" "$G/conf/"
chown nobody "$G/conf/state"
spawn_rpol "$G/conf/shipped.toml" "$G/spool/private/rpol" "$G/rpol.pid" "$G_LOG"

# Port 25: the MX (main.cf's smtpd), a remote client by XCLIENT.
G_CLIENT="ADDR=198.51.100.7 $NOBODY"
# The greylisting triplet's first attempt, here, so that the delay passes
# during the checks below.
G_GREY_FROM=sender@spf-pass.e2e.example
smtp 25 "$G_CLIENT" client.e2e.example "$G_GREY_FROM" "$RCPT"
grey_t0=$(date +%s)
expect "instance 2, port 25: a new triplet (SPF pass) is greylisted at RCPT" \
    "$(reply_to "RCPT TO:<$RCPT>")" "$(grey_reply 2)"

smtp 25 "$G_CLIENT" client.e2e.example sender@partner.example "$G_OUTSIDE"
expect "instance 2, port 25: relay to an outside domain refused (Postfix's relay guard)" \
    "$(reply_to "RCPT TO:<$G_OUTSIDE>")" "454 4.7.1 <$G_OUTSIDE>: Relay access denied"
smtp 25 "$G_CLIENT" client.e2e.example sender@spf-fail.e2e.example "$RCPT"
expect "instance 2, port 25: rpol's chain still answers (SPF fail)" \
    "$(reply_to "RCPT TO:<$RCPT>")" \
    "550 5.7.23 <$RCPT>: Recipient address rejected: SPF fail: domain of sender@spf-fail.e2e.example does not designate 198.51.100.7 as permitted sender"

# g_submit PORT TLS-OPTION [AUTH-USER] [FROM]: a whole message to the
# outside address over TLS, with AUTH when AUTH-USER is given.
g_submit() {
    local port=$1 tls=$2 user=${3:-} from=${4:-${3:-alice@example.com}}
    local auth=()
    [ -n "$user" ] && auth=(--auth PLAIN --auth-user "$user" --auth-password "$G_PASSWORD")
    QUIT_AFTER= smtp "$port" "" client.e2e.example "$from" "$G_OUTSIDE" "$tls" "${auth[@]}" \
        --header "Subject: rpol e2e submission" --body "e2e submission body"
}
g_submit 587 --tls alice@example.com
expect "instance 2, port 587: STARTTLS, AUTH alice@example.com, relay to $G_OUTSIDE accepted and queued" \
    "$(queued_reply "$G_OUTSIDE")" "250 2.1.5 Ok | 250 2.0.0 Ok: queued"
g_submit 465 --tlsc alice@example.com
expect "instance 2, port 465: TLS on connect, AUTH alice@example.com, relay to $G_OUTSIDE accepted and queued" \
    "$(queued_reply "$G_OUTSIDE")" "250 2.1.5 Ok | 250 2.0.0 Ok: queued"
g_submit 587 --tls "" alice@example.com
expect "instance 2, port 587: STARTTLS, no AUTH: relay refused (smtpd_relay_restrictions, before rpol)" \
    "$(reply_to "RCPT TO:<$G_OUTSIDE>")" "554 5.7.1 <$G_OUTSIDE>: Recipient address rejected: Access denied"
g_submit 465 --tlsc "" alice@example.com
expect "instance 2, port 465: TLS, no AUTH: relay refused (smtpd_relay_restrictions, before rpol)" \
    "$(reply_to "RCPT TO:<$G_OUTSIDE>")" "554 5.7.1 <$G_OUTSIDE>: Recipient address rejected: Access denied"
smtp 587 "" client.e2e.example alice@example.com "$G_OUTSIDE"
expect "instance 2, port 587: no STARTTLS, no mail (smtpd_tls_security_level=encrypt)" \
    "$(reply_to "MAIL FROM:<alice@example.com>")" "530 5.7.0 Must issue a STARTTLS command first"
# rpol's submission profile answers on both ports (server_port = [465, 587]).
for port in 587 465; do
    tls=--tls
    [ "$port" = 465 ] && tls=--tlsc
    g_submit "$port" "$tls" bob@example.com alice@example.com
    expect "instance 2, port $port: bob@example.com sends as alice@example.com: rpol's profile submission refuses" \
        "$(reply_to "RCPT TO:<$G_OUTSIDE>")" \
        "553 5.7.1 <$G_OUTSIDE>: Recipient address rejected: <alice@example.com>: Sender address rejected: not owned by user bob@example.com"
done

# Issue 25 item 5: the greylisted triplet's retry after the delay, a
# whole message to one recipient: the RCPT answer carries one header, the
# other goes out at DATA; each is in the held message exactly once.
while [ $(($(date +%s) - grey_t0)) -lt 3 ]; do sleep 0.2; done
send_held "instance 2, port 25: the retry after the delay is accepted and queued" \
    "$GETC" '^(Received-SPF|X-Greylist):' 25 "$G_CLIENT" client.e2e.example "$G_GREY_FROM" "$RCPT"
g_headers=$held
g_spf='Received-SPF: pass (mx.e2e.example: domain of sender@spf-pass.e2e.example designates 198.51.100.7 as permitted sender) client-ip=198.51.100.7; envelope-from="sender@spf-pass.e2e.example"; helo=client.e2e.example; receiver=mx.e2e.example; identity=mailfrom; mechanism="ip4:198.51.100.7";'
if [ "$(grep -c '^Received-SPF:' <<<"$g_headers")" = 1 ] && grep -qxF "$g_spf" <<<"$g_headers" &&
    [ "$(grep -c '^X-Greylist:' <<<"$g_headers")" = 1 ] &&
    grep -Eq "^X-Greylist: delayed [0-9]+ seconds by rpol-" <<<"$g_headers"; then
    pass "instance 2, port 25: the held message ($queued) has one Received-SPF and one X-Greylist"
    sed 's/^/       /' <<<"$g_headers"
else
    fail "instance 2, port 25: the held message has one Received-SPF and one X-Greylist" \
        "want: $g_spf" "want: X-Greylist: delayed N seconds by rpol-..." \
        "got:  ${g_headers:-(nothing; queued as ${queued:-nothing})}"
fi

expect_none "instance 2: rpol logged no warnings or errors" "$(grep -E ' (ERROR|WARN) ' "$G_LOG")"
expect_none "instance 2: Postfix logged no fatal/panic/error lines" \
    "$(grep -E '(fatal|panic|error):' "$G/maillog")"
