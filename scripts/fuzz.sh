#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 30) from the seed corpus in
# fuzz/seeds/, then prints executions and crashes per target and in total.
#
#   scripts/fuzz.sh 30          # what CI runs
#   scripts/fuzz.sh 600         # a longer run (the README's figures)
#   FUZZ_TARGETS="relay_session" scripts/fuzz.sh 60
#
# cargo-fuzz needs nightly-only flags (-Zsanitizer=address); on this machine's stable
# toolchain RUSTC_BOOTSTRAP=1 allows them (there is no other toolchain to install here).
# Exit status: non-zero if any target crashed (the reproducer is in fuzz/artifacts/TARGET/).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
targets="${FUZZ_TARGETS:-relay_session relay_auth upstream_reply sasl_oauth}"
export RUSTC_BOOTSTRAP=1
export CARGO_TERM_COLOR=never

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2
fi

logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
echo "== building the fuzz targets"
for t in $targets; do
    if ! (cd fuzz && cargo fuzz build -O "$t") >"$logs/build.log" 2>&1; then
        tail -50 "$logs/build.log"
        exit 1
    fi
done

total_execs=0
total_crashes=0
for t in $targets; do
    corpus="fuzz/corpus/$t"
    mkdir -p "$corpus" "fuzz/artifacts/$t"
    cp -n fuzz/seeds/"$t"/* "$corpus"/ 2>/dev/null || true
    log="$logs/$t.log"
    echo "== fuzzing $t for ${seconds}s"
    set +e
    (cd fuzz && cargo fuzz run -O "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1)
    status=$?
    set -e
    execs=$(grep -E '^stat::number_of_executed_units:' "$log" | awk '{print $2}' | tail -1)
    execs=${execs:-0}
    crashes=0
    if [ "$status" -ne 0 ] || grep -qE '^(==[0-9]+==ERROR|SUMMARY: (Address|libFuzzer))|panicked at' "$log"; then
        crashes=1
        echo "!! $t crashed; last lines of its log:"
        tail -40 "$log"
    fi
    rate=$(( execs / (seconds > 0 ? seconds : 1) ))
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | awk '{print $2}')
    echo "fuzz $t: ${execs} executions in ${seconds}s (${rate}/s), coverage ${cov:-?} edges, crashes ${crashes}"
    total_execs=$(( total_execs + execs ))
    total_crashes=$(( total_crashes + crashes ))
done
echo "fuzz total: ${total_execs} executions, ${total_crashes} crashes"
[ "$total_crashes" -eq 0 ]
