#!/usr/bin/env bash
# Fault injection, one command: builds the release binaries and runs relay-faults, which starts its own
# redis-server (a node, and a 3-master Cluster with replicas), mock-push and relay replicas for each
# scenario, kills what the scenario kills, and writes load-tests/reports/faults.json. About 3 minutes
# on 2 cores (--short: about one). Extra arguments go to relay-faults (--short, --only outage,...).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "redis-server not found: apt-get install redis-server" >&2; exit 1; }
profile="${FAULTS_PROFILE:-release}"
if [ "$profile" = release ]; then
  cargo build --release --locked -p approval-relay -p relay-load --bins
else
  cargo build --locked -p approval-relay -p relay-load --bins
fi
exec "target/$profile/relay-faults" --relay "target/$profile/approval-relay" "$@"
