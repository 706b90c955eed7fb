#!/usr/bin/env bash
# A private PostgreSQL cluster for the tests, from Debian's `postgresql` package: initdb in DIR,
# listening on a Unix socket in DIR only (no TCP), owned by an unprivileged user (as root, the
# `postgres` user the package creates; else the caller).
#
#   scripts/pg-cluster.sh start DIR   # prints the URL to export as POSTERN_TEST_STORE_URL
#   scripts/pg-cluster.sh stop DIR
#
# Example:
#   export POSTERN_TEST_STORE_URL=$(scripts/pg-cluster.sh start /tmp/postern-pg)
#   cargo test --lib store:: && cargo test --test it
#   scripts/pg-cluster.sh stop /tmp/postern-pg
set -euo pipefail

cmd=${1:-}
dir=${2:-}
if [[ -z "$cmd" || -z "$dir" ]]; then
    echo "usage: $0 start|stop DIR" >&2
    exit 2
fi

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
    echo "$0: PostgreSQL is not installed: apt-get install postgresql (Debian)" >&2
    exit 1
fi

# initdb refuses to run as root: run the server as an unprivileged user.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "$cmd" in
start)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [[ $(id -u) -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
        chown postgres "$dir"
        # The socket directory must be reachable by the tests (run as root) and the server.
        chmod 0755 "$dir"
    fi
    if [[ ! -f "$dir/data/PG_VERSION" ]]; then
        as_owner "$bin/initdb" -D "$dir/data" -U postern --auth=trust --no-sync \
            -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
            { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    # listen_addresses='': the Unix socket in DIR only. fsync stays on: the tests check what
    # a commit promises, and synchronous_commit=on is what Postern asks for.
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses='' -c unix_socket_directories='$dir' -c max_connections=400 \
            -c shared_buffers=64MB" start >/dev/null ||
        { cat "$dir/server.log" >&2; exit 1; }
    # sqlx reads a socket directory from `host=` as a query parameter.
    echo "postgres://postern@localhost/postgres?host=$dir"
    ;;
stop)
    dir=$(cd "$dir" && pwd)
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 300 stop >/dev/null
    fi
    ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
