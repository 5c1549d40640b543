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
# other targets have run. libFuzzer's whole output is kept in
# fuzz/logs/<target>.log.
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
    targets=(decoder access_table address_tables config chain store)
fi
sanitizer=${FUZZ_SANITIZER:-address}
export RUSTC_BOOTSTRAP=1
# AddressSanitizer keeps freed memory in a 256 MB quarantine by default,
# which alone takes the chain target past -rss_limit_mb=256 after about a
# thousand inputs (its live heap stays near 30 MB). A smaller quarantine
# still catches use-after-free of recent allocations.
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=16}

# Longest input per target: the decoder must reach the 8 KiB line and
# 64 KiB request limits; the others stay at sizes a mutation can explore.
max_len() {
    case $1 in
        decoder) echo 70000 ;;
        config) echo 16384 ;;
        *) echo 4096 ;;
    esac
}

# The libFuzzer flag naming a target's dictionary; none for store, whose
# input is binary (4 bytes a call) with no words to find.
dict() {
    case $1 in
        access_table | address_tables) echo -dict=fuzz/dict/tables.dict ;;
        store) echo -max_len=4096 ;;
        *) echo "-dict=fuzz/dict/$1.dict" ;;
    esac
}

# One of libFuzzer's -print_final_stats numbers from the target's log.
final_stat() {
    grep -oE "stat::$1: *[0-9]+" "$log" | grep -oE '[0-9]+$' || echo "?"
}

summary=()
failed=0
for target in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target" fuzz/logs
    before=$(find "fuzz/corpus/$target" -type f | wc -l)
    echo "== $target: ${seconds}s, corpus $before files" >&2
    status=ok
    log=fuzz/logs/$target.log
    # stdin from /dev/null: nothing a target reads may wait on a terminal.
    if ! cargo fuzz run -s "$sanitizer" "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=256 \
        -max_len="$(max_len "$target")" "$(dict "$target")" \
        -print_final_stats=1 </dev/null >"$log" 2>&1; then
        status=FAILED
        failed=1
        grep -E "^(SUMMARY|==[0-9]+== ERROR|thread .* panicked)|artifact_prefix|Test unit written" \
            "$log" >&2 || tail -20 "$log" >&2
    fi

    execs=$(final_stat number_of_executed_units)
    last=$(grep -E '^#[0-9]+[[:space:]].*cov:' "$log" | tail -1 || true)
    cov=$(grep -oE 'cov: [0-9]+' <<<"$last" || echo "cov: ?")
    ft=$(grep -oE 'ft: [0-9]+' <<<"$last" || echo "ft: ?")
    after=$(find "fuzz/corpus/$target" -type f | wc -l)
    summary+=("$(printf '%-15s %-7s execs: %-9s %-10s %-10s corpus: %5s -> %-5s slowest: %ss  peak RSS: %s MB' \
        "$target" "$status" "$execs" "$cov" "$ft" "$before" "$after" \
        "$(final_stat slowest_unit_time_sec)" "$(final_stat peak_rss_mb)")")
done

echo
printf '%s\n' "${summary[@]}"
exit $failed
