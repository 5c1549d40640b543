#!/bin/sh
# Builds the Debian package: `cargo deb` (cargo-deb from crates.io, the
# release build: minutes), then adds the md5sums control file cargo-deb
# does not write (debsums and `dpkg --verify` check the installed files
# against it; conffiles are left out, as dh_md5sums does: dpkg keeps
# their sums itself). Prints the package's path, as `cargo deb` does.
# Arguments go to `cargo deb` (e.g. --no-build).
set -eu
cd "$(dirname "$0")/.."

deb=$(cargo deb "$@" | tail -n 1)
[ -f "$deb" ] || { echo "build-deb: cargo deb printed no package path: $deb" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
dpkg-deb --raw-extract "$deb" "$root"
(
    cd "$root"
    touch DEBIAN/conffiles
    find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | LC_ALL=C sort |
        while IFS= read -r path; do
            grep -qxF "/$path" DEBIAN/conffiles || printf '%s\n' "$path"
        done | xargs -r -d '\n' md5sum >DEBIAN/md5sums
    [ -s DEBIAN/conffiles ] || rm DEBIAN/conffiles
    chmod 0644 DEBIAN/md5sums
)
# cargo-deb's own compression (xz), owner root for every file.
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
