# postscreen's DNSBL score beside rpol's check_dnsbl_score, sourced by
# dnsbl.sh inside its namespace (its knotd, its Postfix, its case_ counts).
#
# Three sets of sites, each served twice: by a postscreen service
# (postscreen_dnsbl_action = enforce) on 127.0.0.1:26NN and by an smtpd on
# 127.0.0.1:27NN whose client restrictions ask an rpol of its own (the
# sites are [dnsbl]'s, one set per rpol) with profile
# `client = ["check_dnsbl_score", "reject"]`: the `reject` after it shows
# that the stage went on (DUNNO), a 250 that the score permitted it.
# postscreen has no XCLIENT, so each client connects from its own 127.0.0.N
# (tests/zones/dnsbl.test.zone lists them), to both ports alike.
#
#   20: sc2 (1), sc1 filtered (2), swl an allowlist (-3); threshold 3,
#       allowlist_threshold -2: the scores themselves.
#   21: sc2, sc1 and broken.test (SERVFAIL) as an allowlist (-3).
#   22: timeout.test (no answer, a blocklist of weight 3) alone.
#
# The sessions of sets 20 and 21 run at once, beside dnsbl.sh's own cases
# (each postscreen session waits postscreen_greet_wait, 3 s, but for an
# allowlisted client); set 22's alone, at the end. tests/e2e/README.md
# has what postscreen was seen to do.

PS_SITES_20='"sc2.test", "sc1.test=127.0.0.[2..11]*2", "swl.test=127.0.10.[0..255]*-3"'
PS_SITES_21='"sc2.test", "sc1.test=127.0.0.[2..11]*2", "broken.test*-3"'
PS_SITES_22='"timeout.test*3"'

# main.cf: what the three postscreen services share.
postscreen_main_cf() {
    cat <<EOF
postscreen_dnsbl_action = enforce
postscreen_greet_action = ignore
postscreen_greet_wait = 3s
postscreen_dnsbl_threshold = 3
postscreen_dnsbl_allowlist_threshold = -2
EOF
}

# master.cf: per set, the postscreen service (-v: it logs "skip pregreet
# test" when the score allowlists) with its own cache, and the smtpd
# asking its rpol; then the services postscreen needs.
postscreen_master_cf() {
    local n v sites
    for n in 20 21 22; do
        v=PS_SITES_$n
        sites=$(printf '%s' "${!v}" | tr -d '"')
        cat <<EOF
127.0.0.1:26$n inet n - n - 1 postscreen -v
  -o { postscreen_dnsbl_sites = $sites }
  -o postscreen_cache_map=btree:\$data_directory/postscreen_cache_$n
127.0.0.1:27$n inet n - n - - smtpd
  -o smtpd_policy_service_policy_context=ps$n
  -o { smtpd_client_restrictions = check_policy_service unix:private/rpol-ps$n }
EOF
    done
    cat <<'EOF'
smtpd     pass  -       -       n       -       -       smtpd
dnsblog   unix  -       -       n       -       0       dnsblog
tlsproxy  unix  -       -       n       -       0       tlsproxy
EOF
}

# One rpol per set of sites, on private/rpol-psNN.
postscreen_start_rpol() {
    local n v
    for n in 20 21 22; do
        v=PS_SITES_$n
        {
            printf '[server]\nsocket_owner = "postfix"\n[dns]\nnameservers = ["127.0.0.53:53"]\ntimeout = "1s"\nattempts = 1\n'
            printf '[site]\ndomains = ["example.com"]\n'
            printf '[dnsbl]\nsites = [%s]\nthreshold = 3\nallowlist_threshold = -2\nprobe = false\n' "${!v}"
            profile "ps$n" client '"check_dnsbl_score", "reject"'
        } >"$T/policy-ps$n.toml"
        NO_COLOR=1 RUST_LOG=info "$RPOL" --config "$T/policy-ps$n.toml" \
            --listen "unix:$T/spool/private/rpol-ps$n" --user nobody >"$T/rpol-ps$n.log" 2>&1 &
        echo $! >"$T/rpol-ps$n.pid"
    done
    for n in 20 21 22; do
        wait_for "[ -S '$T/spool/private/rpol-ps$n' ]" 100 || die "rpol (sites $n) did not start"
    done
}

# ps_session PORT ADDR: a session from ADDR, to RCPT TO, in the background;
# its transcript in $T/ps-PORT-ADDR.out.
ps_session() {
    swaks --server 127.0.0.1 --port "$1" --local-interface "$2" --ehlo client.example \
        --from a@good.example --to alice@example.com --quit-after RCPT --timeout 30 \
        >"$T/ps-$1-$2.out" 2>&1 &
    PS_PIDS+=($!)
}

# ps_reply PORT ADDR: the reply to RCPT TO of that session.
ps_reply() {
    awk 'found && /^<[-*~]/ { sub(/^<[-*~]+ */, ""); print; exit }
         /^ *[-~]> RCPT TO/ { found = 1 }' "$T/ps-$1-$2.out"
}

# ps_check OK WHAT POSTSCREEN RPOL: counts and prints one comparison.
ps_check() {
    if [ "$1" = 1 ]; then
        PASSED=$((PASSED + 1)); echo "ok   $2"
    else
        FAILED=$((FAILED + 1)); echo "FAIL $2"
    fi
    echo "       postscreen: $3"
    echo "       rpol:       $4"
}

# ps_case N ADDR WHAT POSTSCREEN RPOL [LOGGED RPOL_LOGGED]: postscreen's
# reply (port 26N) must be POSTSCREEN and rpol's (27N) RPOL, both exact;
# "allowlisted" as POSTSCREEN is a 250 that postscreen's log shows it
# reached by the allowlist threshold (it skipped the pregreet test),
# "passed" a 250 without that. LOGGED: a text the maillog must come to
# hold (within 3 s: dnsblog may log after the session), RPOL_LOGGED one
# rpol's log must hold.
ps_case() {
    local n=$1 addr=$2 what=$3 want_ps=$4 want_rpol=$5 logged=${6:-} rpol_logged=${7:-}
    local ps rpol ok=1 skipped=0
    ps=$(ps_reply "26$n" "$addr")
    rpol=$(ps_reply "27$n" "$addr")
    grep -q "postscreen\[[0-9]*\]: skip pregreet test for \[$addr\]" "$T/maillog" && skipped=1
    case $want_ps in
        allowlisted) [ "$ps" = "250 2.1.5 Ok" ] && [ $skipped = 1 ] || ok=0 ;;
        passed) [ "$ps" = "250 2.1.5 Ok" ] && [ $skipped = 0 ] || ok=0 ;;
        *)
            [ "$ps" = "$want_ps" ] || ok=0
            # postscreen logs its refusal as smtpd would.
            grep -F "NOQUEUE: reject: RCPT from [$addr]:" "$T/maillog" | grep -F "postscreen[" |
                grep -qF ": $want_ps; from=<a@good.example>, to=<alice@example.com>, proto=ESMTP, helo=<client.example>" || ok=0
            ;;
    esac
    [ "$rpol" = "$want_rpol" ] || ok=0
    [ -z "$logged" ] || wait_for "grep -qF '$logged' '$T/maillog'" 30 || ok=0
    [ -z "$rpol_logged" ] || grep -qF "$rpol_logged" "$T/rpol-ps$n.log" || ok=0
    [ $skipped = 1 ] && ps="$ps (allowlisted: skipped the pregreet test)"
    ps_check $ok "$what" "$ps" "$rpol"
}

# Starts the sessions of sets 20 and 21, which dnsbl.sh's own cases may
# run beside.
postscreen_begin() {
    local a
    PS_PIDS=()
    for a in 127.0.0.30 127.0.0.31 127.0.0.32 127.0.0.33 127.0.0.34 127.0.0.35; do
        ps_session 2620 $a
        ps_session 2720 $a
    done
    ps_session 2621 127.0.0.36
    ps_session 2721 127.0.0.36
}

# Checks them, then runs set 22's, alone: a query to timeout.test holds a
# knotd worker for 1.5 s, and another query on that worker would time out.
postscreen_cases() {
    # What rpol answers when check_dnsbl_score's stage went on to `reject`.
    went_on() { echo "554 5.7.1 <unknown[$1]>: Client host rejected: Access denied"; }
    wait "${PS_PIDS[@]}"
    ps_case 20 127.0.0.30 "score 3 (sc1 2, sc2 1) >= 3: the site of the highest weight named" \
        "550 5.7.1 Service unavailable; client [127.0.0.30] blocked using sc1.test" \
        "550 5.7.1 <unknown[127.0.0.30]>: Client host rejected: Service unavailable; client [127.0.0.30] blocked using sc1.test"
    ps_case 20 127.0.0.31 "two sc1 records, one pattern: 2, counted once (< 3)" \
        passed "$(went_on 127.0.0.31)"
    ps_case 20 127.0.0.32 "swl only: -3 <= -2: allowlisted" allowlisted "250 2.1.5 Ok"
    ps_case 20 127.0.0.33 "sc1 and swl: -1: neither" passed "$(went_on 127.0.0.33)"
    ps_case 20 127.0.0.34 "sc1, and sc2 answers 127.255.255.254: postscreen 3, rpol 2 (on purpose)" \
        "550 5.7.1 Service unavailable; client [127.0.0.34] blocked using sc1.test" "$(went_on 127.0.0.34)"
    ps_case 20 127.0.0.35 "listed nowhere: 0" passed "$(went_on 127.0.0.35)"
    ps_case 21 127.0.0.36 "score 3, the allowlist (-3) SERVFAILs: rpol 450 (on purpose)" \
        "550 5.7.1 Service unavailable; client [127.0.0.36] blocked using sc1.test" \
        "450 4.7.1 <unknown[127.0.0.36]>: Client host rejected: Service unavailable; client [127.0.0.36] blocked using sc1.test" \
        "dnsblog_query: lookup error for DNS query 36.0.0.127.broken.test" \
        "36.0.0.127.broken.test: RBL lookup error"
    PS_PIDS=()
    ps_session 2622 127.0.0.37
    ps_session 2722 127.0.0.37
    wait "${PS_PIDS[@]}"
    ps_case 22 127.0.0.37 "the only list (weight 3) times out: adds nothing" passed "$(went_on 127.0.0.37)" \
        "dnsblog_query: lookup error for DNS query 37.0.0.127.timeout.test" \
        "37.0.0.127.timeout.test: RBL lookup error: timeout"
}
