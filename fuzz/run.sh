#!/usr/bin/env bash
# Runs each fuzz target for a bounded time on its committed corpus and
# prints, per target, the executions and the coverage libFuzzer reached.
#
#   fuzz/run.sh [SECONDS] [TARGET...]     (default: 60 s each, every target)
#
# New inputs that reach new code are added to fuzz/corpus/<target>/ (commit
# them; minimise with `cargo fuzz cmin TARGET` when a corpus grows past a
# few hundred files). A crash, timeout or OOM stops that target, leaves the
# input in fuzz/artifacts/<target>/, and makes the script exit 1 after the
# other targets have run.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). On the stable
# toolchain RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly flags; set
# FUZZ_SANITIZER=none to build without AddressSanitizer (faster, less
# checked). CARGO_TARGET_DIR is honoured.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(decoder access_table address_tables config chain)
fi
sanitizer=${FUZZ_SANITIZER:-address}
export RUSTC_BOOTSTRAP=1

# Longest input per target: the decoder must reach the 8 KiB line and
# 64 KiB request limits; the others stay at sizes a mutation can explore.
max_len() {
    case $1 in
        decoder) echo 70000 ;;
        config) echo 16384 ;;
        *) echo 4096 ;;
    esac
}

dict() {
    case $1 in
        access_table | address_tables) echo fuzz/dict/tables.dict ;;
        *) echo "fuzz/dict/$1.dict" ;;
    esac
}

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
summary=()
failed=0
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
    before=$(find "fuzz/corpus/$target" -type f | wc -l)
    echo "== $target: ${seconds}s, corpus $before files" >&2
    status=ok
    # stdin from /dev/null: nothing a target reads may wait on a terminal.
    if ! cargo fuzz run -s "$sanitizer" "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=256 \
        -max_len="$(max_len "$target")" -dict="$(dict "$target")" \
        -print_final_stats=1 </dev/null >"$logs/$target" 2>&1; then
        status=FAILED
        failed=1
        grep -E "^(SUMMARY|==[0-9]+== ERROR|thread .* panicked)|artifact_prefix|Test unit written" \
            "$logs/$target" >&2 || tail -20 "$logs/$target" >&2
    fi
    execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$logs/$target" | grep -oE '[0-9]+$' || echo "?")
    last=$(grep -E '^#[0-9]+[[:space:]].*cov:' "$logs/$target" | tail -1 || true)
    cov=$(grep -oE 'cov: [0-9]+' <<<"$last" || echo "cov: ?")
    ft=$(grep -oE 'ft: [0-9]+' <<<"$last" || echo "ft: ?")
    after=$(find "fuzz/corpus/$target" -type f | wc -l)
    summary+=("$(printf '%-15s %-7s execs: %-10s %-11s %-11s corpus: %s -> %s' \
        "$target" "$status" "$execs" "$cov" "$ft" "$before" "$after")")
done

echo
printf '%s\n' "${summary[@]}"
exit $failed
