#!/usr/bin/env bash
# The standard load test, one command: builds release binaries, starts a private redis-server,
# mock-push (h2c, APNs + FCM + OAuth), measures the limit (two relay-reference replicas, the same flow
# with no checks, on a Redis of their own), then two relay replicas (A creates and watches, B takes the
# phones' answers) and the generator, then writes load-tests/reports/latest.{json,svg}. About 10 minutes
# on a 2-core machine. Extra arguments go to the relay's run of relay-load (e.g. --rate 2000).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v redis-server >/dev/null || { echo "redis-server not found: apt-get install redis-server" >&2; exit 1; }

cargo build --release --locked --bins -p approval-relay -p relay-load
bin=target/release
work="$(mktemp -d)"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(free_port); ref_port=$(free_port); mock_port=$(free_port)
a_backend=$(free_port); a_device=$(free_port); a_admin=$(free_port)
b_backend=$(free_port); b_device=$(free_port); b_admin=$(free_port)

redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
  --logfile "$work/redis.log" --daemonize no &
pids+=($!)
# The reference gets a Redis of its own: its keys must not sit in the relays' Redis.
mkdir -p "$work/ref"
redis-server --port "$ref_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work/ref" \
  --logfile "$work/ref/redis.log" --daemonize no &
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

mkdir -p load-tests/reports
# The limit: the same generator and ramp (from 500/s in 250/s steps, to save minutes) against two
# relay-reference replicas (load-tests/src/reference), stopped before the relays start. SKIP_REFERENCE=1
# skips it (the report's limit is then null).
pushes=(--apns-url "http://127.0.0.1:$mock_port" --apns-key-file "$work/mock/apns-key.p8" \
  --apns-key-id MOCKKEY001 --apns-team-id MOCKTEAM01 \
  --fcm-url "http://127.0.0.1:$mock_port" --fcm-service-account-file "$work/fcm.json")
reference() { # backend device
  env MIMALLOC_PURGE_DELAY=0 "$bin/relay-reference" --redis-url "redis://127.0.0.1:$ref_port" \
    --backend-addr "127.0.0.1:$1" --device-addr "127.0.0.1:$2" "${pushes[@]}" > "$work/reference-$1.log" 2>&1 &
  pids+=($!)
}
limit=()
if [ -z "${SKIP_REFERENCE:-}" ]; then
  r_backend=$(free_port); r_device=$(free_port); s_backend=$(free_port); s_device=$(free_port)
  reference "$r_backend" "$r_device"; pid_r=${pids[-1]}
  reference "$s_backend" "$s_device"; pid_s=${pids[-1]}
  for port in "$r_backend" "$s_device"; do
    for _ in $(seq 100); do python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null && break; sleep 0.1; done
  done
  echo "limit: the same ramp against relay-reference" >&2
  "$bin/relay-load" --backend "127.0.0.1:$r_backend" --device "127.0.0.1:$s_device" \
    --mock "http://127.0.0.1:$mock_port" --mock-dir "$work/mock" \
    --redis-url "redis://127.0.0.1:$ref_port" --relay-pids "$pid_r,$pid_s" \
    --duration 5 --burst 0 --watches 0 --ramp-start 500 --ramp-step 250 --out "$work/reference.json" > "$work/reference-run.log" 2>&1 \
    || { cat "$work/reference-run.log" >&2; exit 1; }
  grep -E "^sustained|^  errors" "$work/reference-run.log" | sed 's/^/  reference: /' >&2
  kill "$pid_r" "$pid_s"; wait "$pid_r" "$pid_s" 2>/dev/null || true
  # Its keys (30 s TTL) must not expire on the relays' cores during their run.
  redis-cli -p "$ref_port" flushall sync >/dev/null
  limit=(--reference-report "$work/reference.json")
fi

store=(--redis-url "redis://127.0.0.1:$redis_port")
relay() { # backend device admin (the store from $store)
  env RUST_LOG=warn MIMALLOC_PURGE_DELAY=0 ${RELAY_ENV:-} "$bin/approval-relay" serve "${store[@]}" \
    --backend-addr "127.0.0.1:$1" --device-addr "127.0.0.1:$2" --admin-addr "127.0.0.1:$3" \
    "${pushes[@]}" --max-pending-per-account 100000 --cooldown-base-secs 0 --fraud-mute-secs 0 \
    --account-rate-per-minute 0 --source-rate-per-minute 0 \
    --max-push-in-flight 2048 > "$work/relay-$1.log" 2>&1 &
  pids+=($!)
}
ready() { for port in "$@"; do
  for _ in $(seq 100); do "$bin/approval-relay" health --ready --admin "127.0.0.1:$port" 2>/dev/null && break; sleep 0.1; done
done; }
relay "$a_backend" "$a_device" "$a_admin"; pid_a=${pids[-1]}
relay "$b_backend" "$b_device" "$b_admin"; pid_b=${pids[-1]}
ready "$a_admin" "$b_admin"

# Redis, the mock, both replicas and the generator share the machine's cores, as in production's
# worst case; the reference ran under the same conditions.
"$bin/relay-load" --backend "127.0.0.1:$a_backend" --device "127.0.0.1:$b_device" --device-a "127.0.0.1:$a_device" \
  --mock "http://127.0.0.1:$mock_port" --mock-dir "$work/mock" \
  --redis-url "redis://127.0.0.1:$redis_port" "${limit[@]}" \
  --relay-pids "$pid_a,$pid_b" \
  --admins "127.0.0.1:$a_admin,127.0.0.1:$b_admin" \
  --out load-tests/reports/latest.json --plot load-tests/reports/latest.svg "$@"

# Scale-out, second half: the same two replicas on a 3-master Redis Cluster instead of one node, the
# ramp only (default options: the extra arguments above are not passed again), merged into the report as
# results.scale_out.cluster_vs_single_node. SKIP_CLUSTER=1 skips it.
[ -n "${SKIP_CLUSTER:-}" ] && exit 0
kill "$pid_a" "$pid_b"; wait "$pid_a" "$pid_b" 2>/dev/null || true
cluster_port() { python3 -c 'import socket, random
while True:
    p = random.randint(20000, 55000); ok = True
    for q in (p, p + 10000):
        s = socket.socket()
        try: s.bind(("127.0.0.1", q))
        except OSError: ok = False
        s.close()
    if ok: print(p); break'; }
seeds=()
for i in 1 2 3; do
  port=$(cluster_port); mkdir -p "$work/cluster-$i"
  redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work/cluster-$i" \
    --cluster-enabled yes --cluster-config-file nodes.conf --logfile "$work/cluster-$i/redis.log" &
  pids+=($!); seeds+=("127.0.0.1:$port")
done
for s in "${seeds[@]}"; do for _ in $(seq 50); do redis-cli -p "${s##*:}" ping >/dev/null 2>&1 && break; sleep 0.1; done; done
redis-cli --cluster create "${seeds[@]}" --cluster-replicas 0 --cluster-yes > "$work/cluster.log"
for _ in $(seq 100); do redis-cli -p "${seeds[0]##*:}" cluster info | grep -q cluster_state:ok && break; sleep 0.1; done
store=(--redis-cluster-nodes "$(printf 'redis://%s,' "${seeds[@]}" | sed 's/,$//')")
c_backend=$(free_port); c_device=$(free_port); c_admin=$(free_port)
d_backend=$(free_port); d_device=$(free_port); d_admin=$(free_port)
relay "$c_backend" "$c_device" "$c_admin"; pid_c=${pids[-1]}
relay "$d_backend" "$d_device" "$d_admin"; pid_d=${pids[-1]}
ready "$c_admin" "$d_admin"
# INFO commandstats of one node is a third of the Cluster's: only the rates and CPU are read here.
"$bin/relay-load" --backend "127.0.0.1:$c_backend" --device "127.0.0.1:$d_device" \
  --mock "http://127.0.0.1:$mock_port" --mock-dir "$work/mock" \
  --redis-url "redis://${seeds[0]}" --relay-pids "$pid_c,$pid_d" \
  --admins "127.0.0.1:$c_admin,127.0.0.1:$d_admin" --duration 5 --burst 0 --watches 0 \
  --out "$work/cluster.json" > "$work/cluster-run.log" 2>&1 || { cat "$work/cluster-run.log" >&2; exit 1; }
python3 - "$work/cluster.json" load-tests/reports/latest.json <<'PY2'
import json, sys
cluster = json.load(open(sys.argv[1]))["results"]
path = sys.argv[2]
report = json.load(open(path))
scale = report["results"].get("scale_out") or {}
scale["cluster_vs_single_node"] = {
    "single_node_sustained_per_s": report["results"]["sustained_rate_per_s"],
    "cluster_sustained_per_s": cluster["sustained_rate_per_s"],
    "cluster_ramp": cluster["ramp"],
    "cluster_relay_cpu_seconds_per_1000_challenges": cluster["relay_cpu_seconds_per_1000_challenges"],
    "cluster_redis_round_trips_per_challenge": cluster["redis_round_trips_per_challenge"],
    "cluster": "3 masters, no replicas, on the same 2 cores",
}
report["results"]["scale_out"] = scale
json.dump(report, open(path, "w"), indent=2)
open(path, "a").write("\n")
print(f"scale-out: two replicas sustained {scale['cluster_vs_single_node']['single_node_sustained_per_s']}/s on one Redis node, "
      f"{cluster['sustained_rate_per_s']}/s on a 3-master Cluster")
PY2
