#!/usr/bin/env bash
# Proves the container image: builds it (scripts/container.sh), then runs the prove test
# `container_image_delivers` with every `postern` command of the test run in the image (a
# wrapper as POSTERN_PROVE_BIN): the CLI makes the connection and relay user, `serve` in the
# container relays one message to the fake provider. Runs as root with CI=true only.
#
# This machine's sandbox needs three podman settings (not needed on an ordinary host):
# runc instead of crun ("crun: cgroups in hybrid mode not supported"), cgroupfs (no systemd),
# and explicit ulimits within the sandbox's hard limits (podman's default nofile of 1048576
# fails: "setrlimit `RLIMIT_NOFILE`: Operation not permitted").
set -euo pipefail
cd "$(dirname "$0")/.."

ci=false
case "${CI:-}" in true|1) ci=true ;; esac
if [ "$(id -u)" != 0 ] || [ "$ci" != true ]; then
    echo "SKIPPED: container-test.sh runs podman as root; it runs with CI=true only (as .ci/run)."
    [ "$ci" = true ] && exit 1
    exit 0
fi
started=$SECONDS
image=$(scripts/container.sh | tail -1)
echo "== $image: $(podman image inspect --format '{{.Size}}' "$image") bytes"

tmp=$(mktemp -d)
trap 'podman ps -aq --filter label=postern-test | xargs -r podman rm -f >/dev/null; rm -rf "$tmp"' EXIT
nofile=$(ulimit -Hn)
# Postern is one process; the sandbox refuses an RLIMIT_NPROC near its own limit.
nproc=4096
cat >"$tmp/postern" <<WRAPPER
#!/bin/sh
# postern ARGS, run in $image: the test's home mounted at the same path and made the
# container user's, the test's POSTERN_* settings passed on, the host's network (the fake
# provider listens on the host's loopback).
chown 10001:10001 "\$PWD"
exec podman --runtime runc --cgroup-manager=cgroupfs run --rm -i --label postern-test \\
    --network host --ulimit nofile=$nofile:$nofile --ulimit nproc=$nproc:$nproc \\
    -v "\$PWD:\$PWD" -w "\$PWD" --env 'POSTERN_*' $image "\$@"
WRAPPER
chmod +x "$tmp/postern"

echo "== the image's serve delivers one message (tests/prove/package.rs)"
POSTERN_PROVE_BIN="$tmp/postern" POSTERN_PROVE_CONTAINER=1 \
    cargo test --test prove container_image_delivers -- --ignored
echo "== container test passed in $((SECONDS - started)) s"
