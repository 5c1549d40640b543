#!/usr/bin/env bash
# The Debian package, for real (as root): build it (packaging/build-deb.sh),
# check it with lintian (no error, no warning), install it with dpkg, remove
# it and install it again (both units unmasked, the socket enabled), check
# the installed config and units, serve from the installed files as systemd
# would (socket activation, user rpol), run the real-Postfix end-to-end
# suite against /usr/sbin/rpol, then remove and purge it and check that
# nothing of it is left but a file the admin added. systemd is not PID 1 on these machines:
# the units are verified and scored, not started.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
# systemd-analyze security --offline=true: highest exposure accepted.
MAX_EXPOSURE=2.0
UNITS=(/lib/systemd/system/rpol.socket /lib/systemd/system/rpol.service)

step_start=$SECONDS
step() {
    echo "deb: $1 ($((SECONDS - step_start)) s)"
    step_start=$SECONDS
}
fail() {
    echo "deb: FAIL: $*" >&2
    exit 1
}

if [ "$(id -u)" != 0 ]; then
    fail "needs root (dpkg -i)"
fi
# strace: the system-call check below; lintian: the package's check.
# setpriv, systemd-socket-activate and systemd-analyze come with util-linux
# and systemd.
for tool in strace lintian; do
    command -v "$tool" >/dev/null && continue
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$tool" >/dev/null ||
        { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$tool" >/dev/null; }
done

if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
    # About 2 minutes on the 2-core machines.
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
    step "installed cargo-deb $CARGO_DEB_VERSION"
fi

# ---- build, lintian, install, remove and install again
deb=$(bash packaging/build-deb.sh | tail -n 1)
[ -f "$deb" ] || fail "packaging/build-deb.sh printed no package path: $deb"
step "built $deb"
dpkg-deb -c "$deb"
dpkg-deb -I "$deb" md5sums | grep -q '  usr/sbin/rpol$' || fail "no md5sums for usr/sbin/rpol"
# Every tag lintian prints is shown; an error or a warning fails.
lintian --fail-on error,warning --display-info "$deb" || fail "lintian"
step "lintian: no error, no warning"
# A package left by an earlier run would turn this into an upgrade.
if dpkg -s rpol >/dev/null 2>&1; then
    dpkg --purge rpol
fi
# The units as a reinstalled package must leave them: neither masked (a
# masked rpol.service makes every socket activation fail), the socket
# enabled.
units_ready() {
    local unit
    for unit in rpol.socket rpol.service; do
        [ ! -L "/etc/systemd/system/$unit" ] || fail "$1: $unit masked"
    done
    [ -L /etc/systemd/system/sockets.target.wants/rpol.socket ] || fail "$1: rpol.socket not enabled"
}
dpkg -i "$deb"
getent passwd rpol >/dev/null || fail "no user rpol after dpkg -i"
units_ready "dpkg -i"
[ "$(stat -c %U:%G:%a /var/lib/rpol)" = rpol:rpol:750 ] || fail "/var/lib/rpol: $(stat -c %U:%G:%a /var/lib/rpol)"
dpkg --verify rpol || fail "dpkg --verify rpol"
dpkg -r rpol
[ -L /etc/systemd/system/rpol.service ] || fail "dpkg -r did not mask rpol.service"
dpkg -i "$deb"
units_ready "dpkg -i after dpkg -r"
step "installed, removed, installed again"

# A Postfix host: the package's policy.toml reads the site facts from
# /etc/postfix (postconf). A machine whose Postfix was installed with "No
# configuration" has no main.cf; it gets the tests' one (example.com,
# example.net) for this run, removed again at the end.
made_postfix=()
if [ ! -e /etc/postfix/main.cf ]; then
    for f in main.cf vmailbox virtual; do
        [ -e "/etc/postfix/$f" ] && continue
        cp "tests/postfix/$f" "/etc/postfix/$f"
        made_postfix+=("/etc/postfix/$f")
    done
fi
unmake_postfix() { [ ${#made_postfix[@]} = 0 ] || rm -f "${made_postfix[@]}"; }
trap unmake_postfix EXIT

/usr/sbin/rpol --check-config --config /etc/rpol/policy.toml

# ---- the installed units
systemd-analyze verify "${UNITS[@]}"
security=$(systemd-analyze security --offline=true /lib/systemd/system/rpol.service)
score=$(awk '/Overall exposure level/ { print $(NF-2) }' <<<"$security")
echo "deb: rpol.service exposure $score (at most $MAX_EXPOSURE)"
awk -v s="$score" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(s != "" && s <= max) }' ||
    { echo "$security"; fail "rpol.service exposure $score is above $MAX_EXPOSURE"; }
step "units verified"

# ---- the service as systemd would run it: socket activation, user rpol,
# the installed config. In a private network namespace (only lo): the
# packaged config resolves through /etc/resolv.conf, and these two requests
# need no DNS. strace lists the system calls rpol makes, which must all pass
# the unit's SystemCallFilter.
work=$(mktemp -d /tmp/rpol-deb.XXXXXX)
chmod 0755 "$work"
trap 'rm -rf "$work"; unmake_postfix' EXIT
cat >"$work/ask.pl" <<'EOF'
# ask.pl SOCKET REQUEST: one policy request, prints the response's first line.
use strict;
use IO::Socket::UNIX;
my ($path, $req) = @ARGV;
$req =~ s/\\n/\n/g;
my $s;
for (1 .. 100) {
    $s = IO::Socket::UNIX->new(Type => SOCK_STREAM, Peer => $path) and last;
    select(undef, undef, undef, 0.1);
}
die "cannot connect to $path: $!\n" unless $s;
print $s $req;
my $line = <$s>;
print $line;
EOF
cat >"$work/serve.sh" <<'EOF'
set -eu
cd "$1"
ip link set lo up
strace -f -qq -o trace systemd-socket-activate -l "$1/rpol.sock" \
    setpriv --reuid=rpol --regid=rpol --clear-groups \
    /usr/sbin/rpol --config /etc/rpol/policy.toml 2>log &
activator=$!
trap 'kill "$activator" 2>/dev/null || true' EXIT
perl ask.pl rpol.sock 'request=smtpd_access_policy\nprotocol_state=RCPT\nserver_port=587\nclient_address=203.0.113.9\nrecipient=a@example.com\n\n' >answers
perl ask.pl rpol.sock 'request=smtpd_access_policy\nprotocol_state=RCPT\nserver_port=25\nclient_address=127.0.0.1\nhelo_name=localhost\nsender=a@example.com\nrecipient=b@example.com\n\n' >>answers
pid=$(pgrep -x -u rpol rpol)
kill -HUP "$pid"
for _ in $(seq 50); do grep -q 'SIGHUP: reloaded' log && break; sleep 0.1; done
kill -TERM "$pid"
wait "$activator"
EOF
unshare -n bash "$work/serve.sh" "$work" || { cat "$work/log"; fail "the socket-activated rpol failed"; }
cat "$work/log"
expected='action=554 5.7.1 <unknown[203.0.113.9]>: Client host rejected: Access denied
action=DUNNO'
[ "$(cat "$work/answers")" = "$expected" ] || fail "answers: $(cat "$work/answers")"
grep -q 'listening on systemd:' "$work/log" || fail "rpol did not take the passed socket"
grep -q 'SIGHUP: reloaded /etc/rpol/policy.toml' "$work/log" || fail "user rpol could not reload /etc/rpol"
if grep -q $'\x1b' "$work/log"; then fail "ANSI escape codes in the log"; fi
# The effective filter: @system-service without @privileged and @resources.
expand() {
    systemd-analyze syscall-filter "$1" | tail -n +2 | while read -r name _; do
        case $name in '' | '#'*) ;; @*) expand "$name" ;; *) echo "$name" ;; esac
    done
}
expand @system-service | sort -u >"$work/allowed"
{ expand @privileged; expand @resources; } | sort -u >"$work/denied"
comm -23 "$work/allowed" "$work/denied" >"$work/filter"
awk '/execve\("\/usr\/sbin\/rpol"/ { on = 1 } on && match($2, /^[a-z0-9_]+\(/) { print substr($2, 1, RLENGTH - 1) }' \
    "$work/trace" | sort -u >"$work/used"
[ -s "$work/used" ] || fail "strace saw no system call of rpol"
outside=$(comm -23 "$work/used" "$work/filter")
[ -z "$outside" ] || fail "system calls outside rpol.service's SystemCallFilter: $outside"
echo "deb: $(wc -l <"$work/used") distinct system calls, all within SystemCallFilter"
step "served as systemd would start it (socket activation, user rpol)"

# ---- the real-Postfix end-to-end suite against the installed binary
if ! RPOL=/usr/sbin/rpol bash tests/e2e/run.sh >"$work/e2e" 2>&1; then
    cat "$work/e2e"
    fail "the end-to-end suite failed against /usr/sbin/rpol"
fi
grep -E '^e2e: Postfix|passed, ' "$work/e2e"
step "end-to-end suite against /usr/sbin/rpol"

# ---- remove, purge: nothing of rpol is left but what the admin added
# A table the admin added, and a store rpol wrote (as the user rpol).
admin_table=/etc/rpol/tables/admin-added
echo "203.0.113.7 REJECT" >"$admin_table"
setpriv --reuid=rpol --regid=rpol --clear-groups touch /var/lib/rpol/rpol.redb
dpkg -r rpol
[ -e /var/lib/rpol/rpol.redb ] || fail "dpkg -r removed the store"
dpkg --purge rpol 2>"$work/purge"
cat "$work/purge"
[ -f "$admin_table" ] || fail "purge removed $admin_table, which the admin added"
grep -qxF "  $admin_table" "$work/purge" || fail "purge did not name $admin_table"
rm "$admin_table"
rmdir /etc/rpol/tables /etc/rpol
if dpkg -L rpol >/dev/null 2>&1; then fail "dpkg -L rpol still lists files"; fi
left=()
for path in /etc/rpol /var/lib/rpol /usr/sbin/rpol "${UNITS[@]}" /usr/share/doc/rpol \
    /usr/share/man/man8/rpol.8.gz /usr/share/man/man5/rpol-policy.toml.5.gz \
    /var/spool/postfix/private/rpol; do
    if [ -e "$path" ] || [ -L "$path" ]; then left+=("$path"); fi
done
while IFS= read -r path; do left+=("$path"); done < <(
    find /etc/systemd /var/lib/systemd -name '*rpol*' 2>/dev/null
)
[ ${#left[@]} = 0 ] || fail "left after purge: ${left[*]}"
# Debian keeps system accounts on purge (postrm says why).
echo "deb: purged; kept, as Debian does: $(getent passwd rpol)"
step "removed and purged (the admin's file kept and named)"
