#!/usr/bin/env bash
# Runs each fuzz target (fuzz/, kiri::fuzzing) under libFuzzer for FUZZ_SECONDS, one after the
# other, and prints one line per target: executions, executions per second, coverage (cov:) and
# features (ft:) as libFuzzer reports them. Fails if any target finds a crash, a timeout or
# runs out of memory; the input is left in fuzz/regressions/<target>/, which the stable test
# (tests/fuzz, `make test`) replays from then on.
#   scripts/fuzz.sh [target...]      default: every target
# Knobs: FUZZ_SECONDS (60), FUZZ_SANITIZER (none; address for ASan), FUZZ_ARGS (more libFuzzer
# flags). The growing corpus is kept in fuzz/corpus/<target>/ (ignored by git); the committed
# seeds are in fuzz/seeds/<target>/. Needs nightly and cargo-fuzz: scripts/setup.sh fuzz.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
seconds="${FUZZ_SECONDS:-60}"
sanitizer="${FUZZ_SANITIZER:-none}"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
export KIRI_FUZZ_GUEST="$target_dir/wasm32-unknown-unknown/release/kiri_fuzz_guest.wasm"
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || targets=(codec deploy config topic outbox_record host_abi)

say() { printf 'fuzz: %s\n' "$*" >&2; }

if [ ! -f "$KIRI_FUZZ_GUEST" ]; then
    say "$KIRI_FUZZ_GUEST is missing: run \`make functions\` first"
    exit 1
fi
fuzz=(cargo +nightly fuzz)
# --release: assertions and overflow checks come from fuzz/Cargo.toml's profile (see there).
build=(--release --sanitizer "$sanitizer" --target-dir "$target_dir/fuzz")
say "building ${targets[*]} (nightly, sanitizer $sanitizer)"
if ! "${fuzz[@]}" build "${build[@]}" >&2; then
    say "the fuzz targets did not build"
    exit 1
fi

logs="$target_dir/fuzz/logs"
mkdir -p "$logs"
summary=()
failed=0
for t in "${targets[@]}"; do
    corpus="$root/fuzz/corpus/$t"
    regressions="$root/fuzz/regressions/$t"
    mkdir -p "$corpus" "$regressions"
    log="$logs/$t.log"
    say "$t: ${seconds}s (log: $log)"
    # shellcheck disable=SC2086 # FUZZ_ARGS is a list of flags
    # New inputs go to the first folder; the seeds and the regressions are read too.
    "${fuzz[@]}" run "${build[@]}" "$t" "$corpus" "$root/fuzz/seeds/$t" "$regressions" -- \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$regressions/" ${FUZZ_ARGS:-} >"$log" 2>&1
    status=$?
    execs=$(awk '/^stat::number_of_executed_units:/ { print $2 }' "$log")
    rate=$(awk '/^stat::average_exec_per_sec:/ { print $2 }' "$log")
    # The last status line (`#N ... cov: C ft: F ...`) has the final coverage and features.
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
    ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
    units=$(find "$corpus" -type f | wc -l)
    line=$(printf '%-14s %4ss  %10s execs  %7s exec/s  cov: %-6s ft: %-6s corpus: %s' \
        "$t" "$seconds" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$units")
    if [ "$status" -ne 0 ]; then
        failed=1
        artifact=$(grep -oE "$regressions/[^ ]+" "$log" | tail -1)
        line="$line  FAILED (exit $status)${artifact:+: $artifact}"
        say "$t failed; the end of its log:"
        tail -n 40 "$log" >&2
    fi
    summary+=("$line")
done

echo
echo "Fuzzing summary (${seconds}s per target, sanitizer $sanitizer):"
printf '  %s\n' "${summary[@]}"
if [ "$failed" -ne 0 ]; then
    echo "fuzz: a target failed: fix the bug; its input in fuzz/regressions/ is now a regression test"
    exit 1
fi
