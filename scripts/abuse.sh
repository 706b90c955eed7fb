#!/usr/bin/env bash
# Abuse and security checks against a real `postern serve`: open-relay probes, password
# guessing (also across connections), cleartext AUTH, SMTP smuggling, oversized input with
# the server's peak RSS, header injection through the HTTP API, and the secrets audit.
set -euo pipefail
cd "$(dirname "$0")/.."
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# The whole output on failure; only the figures on success.
if cargo test --test prove -- --nocapture --test-threads 2 abuse:: secrets:: >"$log" 2>&1; then
    grep -E '^(open-relay|password guessing|smuggling|oversized|API injection|secrets audit|test |test result)' "$log"
else
    tail -150 "$log"
    exit 1
fi
