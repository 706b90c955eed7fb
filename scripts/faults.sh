#!/usr/bin/env bash
# Outages and resource faults at the issue's scale: the provider down for 60 s (connection
# refused, then 421s), the token endpoint down for 60 s (refused, 503s, then 429 +
# Retry-After), the data directory's disk full (a tmpfs; needs root). Prints the figures.
#
#   scripts/faults.sh            # 60 s outages
#   scripts/faults.sh 120 100    # OUTAGE_SECONDS MESSAGES
set -euo pipefail
cd "$(dirname "$0")/.."
export PROVE_OUTAGE_SECS="${1:-60}" PROVE_OUTAGE_MESSAGES="${2:-50}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# The whole output on failure; only the figures on success.
if cargo test --test prove -- --nocapture --test-threads 2 outage:: disk:: >"$log" 2>&1; then
    grep -E '^(provider down|token endpoint|disk full|SKIPPED|test |test result)' "$log"
else
    tail -150 "$log"
    exit 1
fi
