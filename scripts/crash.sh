#!/usr/bin/env bash
# kill -9 under load, at the issue's scale: 5,000 messages from 8 concurrent clients, the
# server killed (SIGKILL) at three random moments and restarted. Prints lost (must be 0) and
# duplicated counts. CI runs the same test with 500 messages.
#
#   scripts/crash.sh                    # 5000 messages, 3 kills
#   scripts/crash.sh 20000 5            # MESSAGES KILLS
set -euo pipefail
cd "$(dirname "$0")/.."
export PROVE_CRASH_MESSAGES="${1:-5000}" PROVE_CRASH_KILLS="${2:-3}"
export PROVE_CRASH_CLIENTS="${PROVE_CRASH_CLIENTS:-8}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# The whole output on failure; only the figures on success.
if cargo test --test prove crash:: -- --nocapture --test-threads 1 >"$log" 2>&1; then
    grep -E '^(kill -9|test |test result)' "$log"
else
    tail -150 "$log"
    exit 1
fi
