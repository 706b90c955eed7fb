#!/usr/bin/env bash
# Postern against mail software no one here wrote: Python's smtplib and swaks submitting to
# the relay, Dovecot submission (token introspection) relaying to Postfix's smtp-sink as the
# provider, oauth2-mock-server as a second identity provider. Installs them first (root).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-peers.sh
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# The whole output on failure; only the figures on success.
if CI="${CI:-true}" cargo test --test prove interop:: -- --nocapture --test-threads 2 >"$log" 2>&1; then
    grep -E '^(smtplib|swaks|dovecot|oauth2-mock-server|connection:|expires:|SKIPPED|test |test result)' "$log"
else
    tail -150 "$log"
    exit 1
fi
