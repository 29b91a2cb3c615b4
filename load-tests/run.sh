#!/usr/bin/env bash
# The standard load test, one command: builds release binaries, starts a private redis-server,
# mock-push (h2c, APNs + FCM + OAuth), two relay replicas (A creates and watches, B takes the phones'
# answers) and the generator, then writes load-tests/reports/latest.{json,svg}. About 4 minutes on a
# 2-core machine. Extra arguments go to relay-load (e.g. --rate 2000 --watches 20000).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "redis-server not found: apt-get install redis-server" >&2; exit 1; }
command -v redis-benchmark >/dev/null || { echo "redis-benchmark not found: apt-get install redis-tools" >&2; exit 1; }

cargo build --release --locked --bins -p approval-relay -p relay-load
bin=target/release
work="$(mktemp -d)"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(free_port); probe_port=$(free_port); mock_port=$(free_port)
a_backend=$(free_port); a_device=$(free_port); a_admin=$(free_port)
b_backend=$(free_port); b_device=$(free_port); b_admin=$(free_port)

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
  --logfile "$work/redis.log" --daemonize no &
pids+=($!)
# The redis-benchmark probe gets a Redis of its own: its keys must not sit in the relays' Redis.
mkdir -p "$work/probe"
redis-server --port "$probe_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work/probe" \
  --logfile "$work/probe/redis.log" --daemonize no &
pids+=($!)

# FCM's OAuth exchange goes to the mock: a copy of the test service account pointing there.
python3 - "$mock_port" "$work/fcm.json" <<'PY'
import json, sys
sa = json.load(open("tests/fixtures/fcm-service-account.json"))
sa["token_uri"] = f"http://127.0.0.1:{sys.argv[1]}/token"
json.dump(sa, open(sys.argv[2], "w"))
PY
"$bin/approval-relay" mock-push --listen "127.0.0.1:$mock_port" --plaintext --out "$work/mock" \
  --fcm-service-account "$work/fcm.json" > "$work/mock.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do [ -f "$work/mock/apns-key.p8" ] && redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

relay() { # backend device admin
  env RUST_LOG=warn MIMALLOC_PURGE_DELAY=0 ${RELAY_ENV:-} "$bin/approval-relay" serve --redis-url "redis://127.0.0.1:$redis_port" \
    --backend-addr "127.0.0.1:$1" --device-addr "127.0.0.1:$2" --admin-addr "127.0.0.1:$3" \
    --apns-url "http://127.0.0.1:$mock_port" --apns-key-file "$work/mock/apns-key.p8" \
    --apns-key-id MOCKKEY001 --apns-team-id MOCKTEAM01 \
    --fcm-url "http://127.0.0.1:$mock_port" --fcm-service-account-file "$work/fcm.json" \
    --max-pending-per-account 100000 --cooldown-base-secs 0 --fraud-mute-secs 0 \
    --account-rate-per-minute 0 --source-rate-per-minute 0 \
    --max-push-in-flight 2048 > "$work/relay-$1.log" 2>&1 &
  pids+=($!)
}
relay "$a_backend" "$a_device" "$a_admin"; pid_a=${pids[-1]}
relay "$b_backend" "$b_device" "$b_admin"; pid_b=${pids[-1]}
for port in "$a_admin" "$b_admin"; do
  for _ in $(seq 100); do "$bin/approval-relay" health --ready --admin "127.0.0.1:$port" 2>/dev/null && break; sleep 0.1; done
done

mkdir -p load-tests/reports
# Redis, the mock, both replicas and the generator share the machine's cores, as in production's
# worst case; the limit probes run on the same machine first.
"$bin/relay-load" --backend "127.0.0.1:$a_backend" --device "127.0.0.1:$b_device" --device-a "127.0.0.1:$a_device" \
  --mock "http://127.0.0.1:$mock_port" --mock-dir "$work/mock" \
  --redis-url "redis://127.0.0.1:$redis_port" --probe-redis-url "redis://127.0.0.1:$probe_port" \
  --relay-pids "$pid_a,$pid_b" \
  --admins "127.0.0.1:$a_admin,127.0.0.1:$b_admin" \
  --out load-tests/reports/latest.json --plot load-tests/reports/latest.svg "$@"
