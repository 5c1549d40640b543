# What the end-to-end scripts (run.sh, dnsbl.sh) share; each sources it
# first thing, after setting HERE to its own directory, and defines its
# own die() (called from here) before it calls these functions.

set -u
export PATH=$PATH:/usr/sbin:/sbin
unset MAIL_CONFIG
ROOT=$(cd "$HERE/../.." && pwd)

# The rpol binary under test as an absolute path (the scripts run again
# inside the namespace, from where relative paths may not lead).
absolute_rpol() {
    RPOL=${RPOL:-$ROOT/target/debug/rpol}
    case $RPOL in /*) ;; *) RPOL=$PWD/$RPOL ;; esac
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

# Inside the private network + mount namespace: only lo, up, and an
# /etc/resolv.conf naming knotd on 127.0.0.53 bind-mounted over the
# host's. Nothing can leave the machine from here.
isolate_network() {
    ip link set lo up || die "ip link set lo up"
    printf 'nameserver 127.0.0.53\noptions timeout:1 attempts:1\n' >"$T/resolv.conf"
    mount --bind "$T/resolv.conf" /etc/resolv.conf || die "cannot bind-mount resolv.conf"
    [ "$(ip -o link show | wc -l)" = 1 ] || die "unexpected interfaces: $(ip -o link show)"
}
