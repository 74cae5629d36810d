# Shared by the coverage-guided fuzz runs: build a target with libFuzzer instrumentation,
# run it for a number of inputs from its committed corpus, merge what it found back into
# the corpus (minimised), and print the figures. Not part of CI (minutes of CPU per run).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SCRATCH=$ROOT/.build-fuzz
RUNTIME=$(dirname "$(command -v swiftc)")/../lib/swift/clang/lib/linux/libclang_rt.fuzzer_no_main-x86_64.a

# Swift's -sanitize=fuzzer links libFuzzer's main, which clashes with a Swift executable's; so
# instrument for coverage (inline 8-bit counters, comparisons) under AddressSanitizer and link
# the no-main runtime, whose driver the target enters itself.
build_fuzz_target() {  # build_fuzz_target PRODUCT
    (cd "$ROOT" && swift build -c release --scratch-path "$SCRATCH" --product "$1" \
        -Xswiftc -sanitize=address -Xswiftc -sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp \
        -Xswiftc -DFUZZING -Xlinker "$RUNTIME" -Xlinker -lstdc++ >&2)
}

# run_fuzz_target PRODUCT CORPUS RUNS
run_fuzz_target() {
    local product=$1 corpus=$2 runs=$3 work log
    work=$(mktemp -d)
    log=$work/log
    mkdir -p "$corpus" "$work/new" "$work/crashes"
    local start=$SECONDS
    # -jobs/-workers would spread over the 2 cores but split the count; one process keeps the
    # run count exact. Crashes land in $work/crashes and are reported below.
    set +e
    "$SCRATCH/release/$product" -runs="$runs" -max_len=2048 -timeout=10 -rss_limit_mb=4096 \
        -artifact_prefix="$work/crashes/" -print_final_stats=1 "$work/new" "$corpus" >"$log" 2>&1
    local status=$?
    set -e
    local executed crashes
    executed=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$log" | tail -1)
    crashes=$(find "$work/crashes" -type f | wc -l)
    # Keep the corpus small and useful: merge the new inputs in, keeping only those adding coverage.
    "$SCRATCH/release/$product" -merge=1 "$corpus" "$work/new" >>"$log" 2>&1 || true
    printf '%s: %s inputs in %s s, exit %s, %s crash file(s), corpus %s files\n' \
        "$product" "${executed:-?}" "$((SECONDS - start))" "$status" "$crashes" "$(find "$corpus" -type f | wc -l)"
    if [[ $crashes -gt 0 || $status -ne 0 ]]; then
        tail -40 "$log"
        mkdir -p "$ROOT/tools/fuzz/crashes"
        cp "$work"/crashes/* "$ROOT/tools/fuzz/crashes/" 2>/dev/null || true
        echo "crash inputs copied to tools/fuzz/crashes/ (replay: .build/debug/$product FILE)"
    fi
    rm -rf "$work"
    return "$status"
}
