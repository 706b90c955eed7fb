#!/usr/bin/env bash
# Abuse and security checks against a real `postern serve`: open-relay probes, password
# guessing (also across connections), cleartext AUTH, SMTP smuggling, oversized input with
# the server's peak RSS, header injection through the HTTP API, and the secrets audit.
# HTTP floods at full size: 1,000 wrong API keys at once, 200 submissions of ~35 MB against the
# default 256 MiB message budget, 10,000 OAuth callbacks with made-up state.
# Relay floods at full size: 2,000 slowloris sessions against 1,500 slots, 200 STARTTLS
# handshakes at once, 200 messages of 35 MB at once against the default 256 MiB budget.
# Password storms at full size: 1,000 wrong passwords at once against an argon2id relay user
# and against the admin login form, run on the release binary (what users run) with the
# issue's absolute bound: peak RSS <= 64 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
log="$(mktemp)"
cargo build --release --bin postern
export POSTERN_STORM_ATTEMPTS="${POSTERN_STORM_ATTEMPTS:-1000}" POSTERN_STORM_PEAK_MIB="${POSTERN_STORM_PEAK_MIB:-64}"
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
    flood::slowloris flood::many_starttls flood::big_messages >"$log" 2>&1 &&
    POSTERN_PROVE_BIN="$PWD/target/release/postern" \
        cargo test --test prove -- --nocapture --test-threads 1 storm:: >>"$log" 2>&1; then
    grep -E '^(open-relay|password guessing|smuggling|oversized|API injection|secrets audit|http flood|flood|storm|test |test result)' "$log"
else
    tail -150 "$log"
    exit 1
fi
