#!/usr/bin/env bash
# Replaces the snapshot with the current advisory-db (needs github.com).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git clone -q --depth 1 https://github.com/rustsec/advisory-db "$tmp/db"
rm -rf "$here/crates" "$here/rust"
cp -r "$tmp/db/crates" "$tmp/db/rust" "$tmp/db/LICENSE.txt" "$here/"
git -C "$tmp/db" log -1 --format='snapshot: %H %cI'
