#!/usr/bin/env bash
# The long run of the three-instance kill test: 5,000 messages (CI runs 600) through three
# `postern serve` processes on a private PostgreSQL cluster, the owner SIGKILLed under load.
# Prints the takeover time and the duplicates.
#
#   scripts/cluster-kill.sh [MESSAGES]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=$(mktemp -d /tmp/postern-cluster-XXXXXX)
url=$(scripts/pg-cluster.sh start "$dir")
trap 'scripts/pg-cluster.sh stop "$dir"; rm -rf "$dir"' EXIT
POSTERN_TEST_STORE_URL=$url POSTERN_TEST_CLUSTER_MESSAGES=${1:-5000} \
    cargo test --test it relay::cluster::a_sigkilled_instance -- --nocapture
