#!/usr/bin/env bash
# Installs everything the tests need from Debian and npm, non-interactively, with one
# `apt-get update`: the third-party peers of tests/prove, Chromium with playwright-core for
# the admin UI's browser test, what scripts/package-test.sh uses, and promtool for the example
# alerting rules. Makes sure no package daemon keeps running (the tests start their own
# instances). Used by .ci/run and scripts/interop.sh. Needs root for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v swaks >/dev/null || missing+=(swaks)
[ -x /usr/sbin/dovecot ] || missing+=(dovecot-core)
[ -e /usr/lib/dovecot/submission ] || missing+=(dovecot-submissiond)
[ -x /usr/sbin/smtp-sink ] || missing+=(postfix)
perl -MNet::SSLeay -e1 2>/dev/null || missing+=(libnet-ssleay-perl)
perl -MIO::Socket::SSL -e1 2>/dev/null || missing+=(libio-socket-ssl-perl)
perl -MAuthen::SASL -e1 2>/dev/null || missing+=(libauthen-sasl-perl)
command -v python3 >/dev/null || missing+=(python3)
command -v npm >/dev/null || missing+=(nodejs npm)
command -v chromium >/dev/null || missing+=(chromium)
# scripts/package-test.sh: systemd-analyze for the unit, adduser for the package's postinst,
# man-db (and groff) to read the installed man pages.
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v adduser >/dev/null || missing+=(adduser)
command -v man >/dev/null || missing+=(man-db)
command -v groff >/dev/null || missing+=(groff-base)
# scripts/container-test.sh: podman builds and runs the image; runc, as crun cannot run here.
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
# The PostgreSQL store's test runs start a private cluster (scripts/pg-cluster.sh).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
# promtool checks the example alerting rules (monitoring/alerts.yml).
command -v promtool >/dev/null || missing+=(prometheus)

if [ "${#missing[@]}" -gt 0 ]; then
    echo "== installing ${missing[*]}"
    # Postfix must not ask which mail configuration to use.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    echo "postfix postfix/mailname string localhost" | debconf-set-selections
    # Refresh the package lists once, unless something did so in the last hour.
    if [ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -60 2>/dev/null | head -1)" ]; then
        apt-get update -qq
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${missing[@]}"
fi
# Package scripts may start the system daemons; the tests run their own on other ports.
service dovecot stop >/dev/null 2>&1 || true
postfix stop >/dev/null 2>&1 || true
service prometheus stop >/dev/null 2>&1 || true
service postgresql stop >/dev/null 2>&1 || true

echo "== npm ci tests/interop (oauth2-mock-server) and browser (playwright-core, no browser download)"
npm ci --prefix tests/interop --no-audit --no-fund --silent
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix browser --no-audit --no-fund --silent
