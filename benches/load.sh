#!/bin/bash
# The load benchmark in one command (issue 11): builds rpol (release) and
# benches/load.rs, runs it, and plots its scaling figures.
#
#   benches/load.sh              # full run, about 20 minutes
#   benches/load.sh --quick      # about 4 minutes, fewer and shorter runs
#   benches/load.sh --update     # full run, then replace the figures in
#                                # BENCHMARKS.md (and its summary paragraph),
#                                # benches/scaling.png and
#                                # benches/results/*.csv with this run's
#
# Any other argument goes to the bench (see the top of benches/load.rs), e.g.
# `--only main,greylist`, `--tcp`, `--rust-log info`. Results (results.md, *.csv,
# scaling.png) go to $CARGO_TARGET_DIR/load-results (default target/).
# The plot needs python3 with matplotlib; without it one is installed from
# PyPI into $CARGO_TARGET_DIR/venv. Nothing is asserted: the figures are
# printed beside issue 11's and issue 28's targets. Needs no network; the
# greylist section needs root (the store is chowned to nobody, as rpol drops
# root) and greylist-redis a redis-server.

set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
OUT=$TARGET/load-results

update=0
args=()
for a in "$@"; do
    case $a in
    --update) update=1 ;;
    *) args+=("$a") ;;
    esac
done

cd "$ROOT"
# Recorded in results.md as the command that made the figures.
export RPOL_LOAD_COMMAND="benches/load.sh${*:+ $*}"
# The bench's build also builds the rpol binary it runs, in the same
# (release-based) profile.
cargo bench --bench load --no-run
rm -rf "$OUT"
cargo bench --bench load -- --out "$OUT" ${args[@]+"${args[@]}"}

# A run of the chains sections alone is plotted beside the recorded
# scaling figures (benches/results/).
if [ -s "$OUT/chains.csv" ]; then
    for f in clients.csv tables.csv; do
        if [ ! -s "$OUT/$f" ] && [ -s "$HERE/results/$f" ]; then
            echo "load.sh: plotting the recorded $f beside this run's chains"
            cp "$HERE/results/$f" "$OUT/$f"
        fi
    done
fi
if [ -s "$OUT/clients.csv" ] && [ -s "$OUT/tables.csv" ]; then
    PY=python3
    if ! python3 -c 'import matplotlib' 2>/dev/null; then
        VENV=$TARGET/venv
        if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
            echo "load.sh: installing matplotlib into $VENV"
            python3 -m venv "$VENV"
            "$VENV/bin/pip" install -q matplotlib
        fi
        PY=$VENV/bin/python
    fi
    "$PY" "$HERE/plot_scaling.py" "$OUT" "$OUT/scaling.png"
else
    echo "load.sh: no plot (the clients and tables sections did not both run)"
fi

if [ "$update" = 1 ]; then
    mkdir -p "$HERE/results"
    cp "$OUT"/*.csv "$HERE/results/"
    [ -s "$OUT/scaling.png" ] && cp "$OUT/scaling.png" "$HERE/scaling.png"
    # What lies between the markers becomes results.md, summary.md and
    # chains.md (all in BENCHMARKS.md: the figures, the paragraph "In
    # short", the greylisting and blocklist chains).
    splice() {
        python3 - "$1" "$2" "$3" <<'PY'
import sys
doc_path, new_path, name = sys.argv[1], sys.argv[2], sys.argv[3]
begin = f"<!-- benches/load.sh --update: {name} begin -->"
end = f"<!-- benches/load.sh --update: {name} end -->"
doc = open(doc_path).read()
new = open(new_path).read().strip()
if begin not in doc or end not in doc:
    sys.exit(f"load.sh: {doc_path} has no {begin} ... {end} markers")
head, rest = doc.split(begin, 1)
_, tail = rest.split(end, 1)
open(doc_path, "w").write(f"{head}{begin}\n{new}\n{end}{tail}")
print(f"load.sh: updated {doc_path} ({name})")
PY
    }
    # Each part only when its sections ran (--only main or --only greylist
    # leaves the other's figures as they are).
    [ -s "$OUT/results.md" ] && splice "$ROOT/BENCHMARKS.md" "$OUT/results.md" results
    [ -s "$OUT/summary.md" ] && splice "$ROOT/BENCHMARKS.md" "$OUT/summary.md" summary
    [ -s "$OUT/chains.md" ] && splice "$ROOT/BENCHMARKS.md" "$OUT/chains.md" chains
    echo "load.sh: updated benches/scaling.png, benches/results/"
fi
echo "load.sh: results in $OUT"
