#!/usr/bin/env bash
# Abuse and security checks against a real `postern serve`: open-relay probes, password
# guessing (also across connections), cleartext AUTH, SMTP smuggling, oversized input with
# the server's peak RSS, header injection through the HTTP API, and the secrets audit.
# HTTP floods at full size: 1,000 wrong API keys at once, 200 submissions of ~35 MB against the
# default 256 MiB message budget, 10,000 OAuth callbacks with made-up state.
# Relay floods at full size: 2,000 slowloris sessions against 1,500 slots, 200 STARTTLS
# handshakes at once, 200 messages of 35 MB at once against the default 256 MiB budget.
set -euo pipefail
cd "$(dirname "$0")/.."
log="$(mktemp)"
export HTTP_FLOOD_WRONG_KEYS="${HTTP_FLOOD_WRONG_KEYS:-1000}"
export HTTP_FLOOD_MESSAGES="${HTTP_FLOOD_MESSAGES:-200}"
export HTTP_FLOOD_MESSAGE_MIB="${HTTP_FLOOD_MESSAGE_MIB:-33}"
export HTTP_FLOOD_BUDGET_MIB="${HTTP_FLOOD_BUDGET_MIB:-256}"
export HTTP_FLOOD_CALLBACKS="${HTTP_FLOOD_CALLBACKS:-10000}"
export FLOOD_SLOWLORIS="${FLOOD_SLOWLORIS:-2000}" FLOOD_SLOWLORIS_SLOTS="${FLOOD_SLOWLORIS_SLOTS:-1500}"
export FLOOD_TLS="${FLOOD_TLS:-200}"
export FLOOD_MESSAGES="${FLOOD_MESSAGES:-200}" FLOOD_MESSAGE_MB="${FLOOD_MESSAGE_MB:-35}"
export FLOOD_BUDGET_MIB="${FLOOD_BUDGET_MIB:-256}"
trap 'rm -f "$log"' EXIT
# The whole output on failure; only the figures on success.
if cargo test --test prove -- --nocapture --test-threads 2 abuse:: secrets:: http_flood:: \
    flood::slowloris flood::many_starttls flood::big_messages >"$log" 2>&1; then
    grep -E '^(open-relay|password guessing|smuggling|oversized|API injection|secrets audit|http flood|flood|test |test result)' "$log"
else
    tail -150 "$log"
    exit 1
fi
