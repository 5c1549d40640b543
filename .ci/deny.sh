#!/usr/bin/env bash
# cargo-deny over the dependency tree: RustSec advisories (from the
# committed snapshot in .ci/advisory-db), licences compatible with
# GPL-3.0-or-later, crates.io as the only source (deny.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

DENY_VERSION=0.20.2
# The date of the snapshot: the database's age is what cargo-deny judges.
SNAPSHOT_DATE=2026-08-21T08:28:40+02:00

if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $DENY_VERSION" ]; then
    cargo install cargo-deny --locked --version "$DENY_VERSION"
fi
# cargo-deny looks for the database of db-urls under db-path, as a git
# repository, in a folder named after the URL.
db=target/advisory-dbs/advisory-db-3157b0e258782691
rm -rf "$db"
mkdir -p "$db"
cp -r .ci/advisory-db/crates .ci/advisory-db/rust "$db/"
git -C "$db" init -q
git -C "$db" add -A
GIT_AUTHOR_DATE=$SNAPSHOT_DATE GIT_COMMITTER_DATE=$SNAPSHOT_DATE \
    git -C "$db" -c user.name=ci -c user.email=ci@localhost -c commit.gpgsign=false \
    commit -q -m "advisory-db snapshot"
# --offline: every crate of the lock file must be in cargo's cache.
cargo fetch --locked -q
cargo deny --offline check
