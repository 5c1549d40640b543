#!/bin/sh
# Installs what tests/e2e/run.sh needs (perl, for smtp-raw.pl and the
# silent DNS responder, comes with swaks): Postfix 3.7 (never started as a
# system service: apt-get does not start services here), swaks, knot, and
# the small tools run.sh uses, and redis-server for the store tests. Idempotent: does nothing when all is there.
# Needs root (CI runs as root).
set -eu

need=""
{ command -v postfix && command -v postmap; } >/dev/null 2>&1 || need="$need postfix"
[ -e /usr/lib/postfix/postfix-pcre.so ] || need="$need postfix-pcre"
[ -e /usr/lib/postfix/postfix-cdb.so ]  || need="$need postfix-cdb"
command -v swaks    >/dev/null 2>&1 || need="$need swaks"
command -v knotd    >/dev/null 2>&1 || need="$need knot"
command -v kdig     >/dev/null 2>&1 || need="$need knot-dnsutils"
{ command -v ip && command -v ss; } >/dev/null 2>&1 || need="$need iproute2"
command -v script   >/dev/null 2>&1 || need="$need bsdutils"
command -v unshare  >/dev/null 2>&1 || need="$need util-linux"
# The greylisting store's Redis backend: tests start throw-away instances.
command -v redis-server >/dev/null 2>&1 || need="$need redis-server"
# rpol store import-postgrey reads Berkeley DB with db_dump; tests/store_cli.rs
# makes postgrey's files with db_load.
{ command -v db_dump && command -v db_load; } >/dev/null 2>&1 || need="$need db-util"
# Cyrus SASL mechanisms, so that smtpd can enable SASL on the submission port.
ls /usr/lib/*/sasl2/libplain.so >/dev/null 2>&1 || need="$need libsasl2-modules"
# The instance configured from --postfix-config: real AUTH over TLS on 587
# and 465 (a sasldb user, swaks' TLS), a self-signed certificate.
command -v saslpasswd2 >/dev/null 2>&1 || need="$need sasl2-bin"
perl -MNet::SSLeay -e 1 >/dev/null 2>&1 || need="$need libnet-ssleay-perl"
command -v openssl  >/dev/null 2>&1 || need="$need openssl"

if [ -z "$need" ]; then
    echo "e2e setup: everything is installed"
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "e2e setup: need root to install:$need" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Postfix asks which configuration to write to /etc/postfix: none.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections

# apt-get update only when the package lists do not know a package we need.
for pkg in $need; do
    if ! apt-cache policy "$pkg" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
        apt-get update -q
        break
    fi
done
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $need
echo "e2e setup: installed:$need"
