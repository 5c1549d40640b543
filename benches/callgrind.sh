#!/bin/bash
# Instructions per request of the release rpol (BENCHMARKS.md, "Instructions
# per request"): rpol under valgrind's callgrind behind
# examples/callgrind_client.rs, once with 250 and once with 750 requests on
# each of 4 connections; (Ir at 750 - Ir at 250) / 2,000 cancels start-up
# and warm-up. Counts do not move with the machine's load, so two builds
# compare exactly. Needs valgrind; about a minute. Keeps the callgrind
# files in $CARGO_TARGET_DIR/callgrind/ for callgrind_annotate.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TARGET/callgrind
cd "$ROOT"
command -v valgrind >/dev/null || { echo "callgrind.sh: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
cargo build --release --bin rpol --example callgrind_client
mkdir -p "$OUT"
# Started as root, rpol must be told whom to run as; root keeps callgrind
# able to write its file after the drop.
user=""
[ "$(id -u)" = 0 ] && user="--user root"
cat > "$OUT/wrap.sh" <<WRAP
#!/bin/sh
exec valgrind --tool=callgrind --callgrind-out-file=$OUT/rpol.\$EXP_REQUESTS.out $TARGET/release/rpol "\$@" $user
WRAP
chmod +x "$OUT/wrap.sh"
for n in 250 750; do
    EXP_REQUESTS=$n EXP_RPOL=$OUT/wrap.sh "$TARGET/release/examples/callgrind_client" >/dev/null
done
total() { awk '/^(summary|totals):/ { print $2; exit }' "$1"; }
a=$(total "$OUT/rpol.250.out")
b=$(total "$OUT/rpol.750.out")
echo "instructions per request: $(( (b - a) / 2000 ))  (rpol at $(git rev-parse --short HEAD))"
echo "profiles: $OUT/rpol.{250,750}.out (callgrind_annotate --inclusive=yes ...)"
