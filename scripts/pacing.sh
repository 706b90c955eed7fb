#!/usr/bin/env bash
# Pacing at full length (issue 12): a connection limited to PER_MINUTE messages a minute sends
# MESSAGES messages through `postern serve` (release build) to the fake provider; prints how
# long they took against the limit's time (target ±2 %) and the most that arrived in any 60 s
# (never above the limit). The defaults take 10 minutes of wall time and little CPU.
#
#   scripts/pacing.sh            # 30 a minute, 300 messages (10 minutes)
#   scripts/pacing.sh 600 60     # PER_MINUTE MESSAGES (6 seconds)
set -euo pipefail
cd "$(dirname "$0")/.."
per_minute="${1:-30}" messages="${2:-300}"
cargo bench --bench connections -- --only pacing --per-minute "$per_minute" --messages "$messages"
