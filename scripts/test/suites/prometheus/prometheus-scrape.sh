#!/usr/bin/env bash
# A real Prometheus scrapes the four release binaries running natively (with a
# real redis-server and 10 workers), and the numbers it collects find the rng
# bottleneck. Then each service is stopped with SIGTERM: exit 0 in under 1 s,
# and the workers leave `hashes` in Redis equal to the units they did.
#
# Checks: the repository's scrape configurations (docker/prometheus/*.yml) are
# valid; every target is UP in Prometheus' /api/v1/targets; the metrics show
# ~10 hashes/s, rng's line ~9 long and rng calls ~10x slower than hasher calls;
# SIGTERM exit code and time of every process; no unit lost.
#
# Usage: scripts/test/suites/prometheus/prometheus-scrape.sh
# Environment: BIN (target/release; built if missing), BASE_PORT (22700: uses
# BASE_PORT..BASE_PORT+9 and one port per worker after them; keep it below the
# kernel's ephemeral ports, 32768 and up), WORKERS (10), MEASURE_SECONDS (30),
# KEEP (set to keep the logs and the Prometheus data in the work directory).
set -euo pipefail
# Natively nothing balances connections by readiness: the services stop without
# the drain that follows SIGTERM (SHUTDOWN_DRAIN, docs/operations.md#stopping).
export SHUTDOWN_DRAIN="${SHUTDOWN_DRAIN:-0}"

root=$(cd "$(dirname "$0")/../../../.." && pwd)
TEST_NAME="prometheus-scrape"
# shellcheck source=scripts/test/lib/lib.sh
source "$root/scripts/test/lib/lib.sh"
BIN=${BIN:-$root/target/release}
BASE_PORT=${BASE_PORT:-22700}
WORKERS=${WORKERS:-10}
MEASURE_SECONDS=${MEASURE_SECONDS:-30}
KEEP=${KEEP:-}

redis_port=$((BASE_PORT + 0))
rng_port=$((BASE_PORT + 1))
hasher_port=$((BASE_PORT + 2))
webui_port=$((BASE_PORT + 3))
prometheus_port=$((BASE_PORT + 4))
first_worker_port=$((BASE_PORT + 10))
work=$(mktemp -d)
pids=()

finished=
cleanup() {
    if [ -z "$finished" ]; then
        echo "stopped early (see the message above)"
        echo "$PASSED passed, $((FAILED + 1)) failed"
    fi
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ -n "$KEEP" ]; then echo "logs and data kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT


# --- What this needs ---------------------------------------------------------
if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null \
    || ! command -v redis-server >/dev/null || ! command -v curl >/dev/null \
    || ! command -v python3 >/dev/null; then
    echo "installing prometheus, redis-server, curl, python3 (Debian packages)"
    apt-get update -qq && apt-get install -y -qq prometheus redis-server curl python3 >/dev/null
fi
for bin in rng hasher worker webui; do
    if [ ! -x "$BIN/$bin" ]; then
        echo "building the release binaries (cargo build --release)"
        (cd "$root" && cargo build --release --locked)
        break
    fi
done
for port in $(seq "$BASE_PORT" $((first_worker_port + WORKERS - 1))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port $port is taken: stop what uses it, or set BASE_PORT" >&2
        exit 2
    fi
done

# --- The repository's configurations -------------------------------------------
for config in "$root"/docker/prometheus/*.yml; do
    if promtool check config --syntax-only "$config" >"$work/promtool.log" 2>&1; then
        pass "promtool accepts ${config#"$root"/}"
    else
        fail "promtool rejects ${config#"$root"/}: $(cat "$work/promtool.log")"
    fi
done

# The overrides that add Prometheus merge with the files they extend.
if command -v docker >/dev/null && docker compose version >/dev/null 2>&1; then
    if (cd "$root" && docker compose -f compose.yaml -f compose.prometheus.yaml config -q) >"$work/config.log" 2>&1; then
        pass "docker compose accepts compose.yaml + compose.prometheus.yaml"
    else
        fail "docker compose rejects compose.yaml + compose.prometheus.yaml: $(cat "$work/config.log")"
    fi
    if (cd "$root" && docker stack config -c stack.yaml -c stack.prometheus.yaml) >"$work/config.log" 2>&1; then
        pass "docker stack config accepts stack.yaml + stack.prometheus.yaml"
    else
        fail "docker stack config rejects stack.yaml + stack.prometheus.yaml: $(cat "$work/config.log")"
    fi
else
    echo "SKIP the Compose and stack overrides: no docker compose here"
fi

# --- Start everything ---------------------------------------------------------
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
PORT=$rng_port INSTANCE=rng-1 "$BIN/rng" >"$work/rng.log" 2>&1 &
rng_pid=$!
pids+=("$rng_pid")
PORT=$hasher_port INSTANCE=hasher-1 "$BIN/hasher" >"$work/hasher.log" 2>&1 &
hasher_pid=$!
pids+=("$hasher_pid")
PORT=$webui_port INSTANCE=webui-1 REDIS_URL=redis://127.0.0.1:$redis_port \
    "$BIN/webui" >"$work/webui.log" 2>&1 &
webui_pid=$!
pids+=("$webui_pid")

wait_for() { # wait_for URL
    for _ in $(seq 200); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done
    echo "no answer from $1 within 20 s; see the logs (KEEP=1 keeps them)" >&2
    return 1
}
wait_for "http://127.0.0.1:$rng_port/healthz"
wait_for "http://127.0.0.1:$hasher_port/healthz"
wait_for "http://127.0.0.1:$webui_port/readyz"

worker_pids=()
worker_targets=""
for i in $(seq "$WORKERS"); do
    port=$((first_worker_port + i - 1))
    PORT=$port INSTANCE=worker-$i RNG_URL=http://127.0.0.1:$rng_port \
        HASHER_URL=http://127.0.0.1:$hasher_port REDIS_URL=redis://127.0.0.1:$redis_port \
        "$BIN/worker" >"$work/worker-$i.log" 2>&1 &
    worker_pids+=($!)
    pids+=($!)
    worker_targets+="\"127.0.0.1:$port\", "
done
for i in $(seq "$WORKERS"); do wait_for "http://127.0.0.1:$((first_worker_port + i - 1))/readyz"; done

# The Compose configuration, with 127.0.0.1 ports for the service names.
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 2s
  scrape_timeout: 1s
  evaluation_interval: 2s
scrape_configs:
  - job_name: rng
    static_configs: [{targets: ["127.0.0.1:$rng_port"]}]
  - job_name: hasher
    static_configs: [{targets: ["127.0.0.1:$hasher_port"]}]
  - job_name: webui
    static_configs: [{targets: ["127.0.0.1:$webui_port"]}]
  - job_name: worker
    static_configs: [{targets: [${worker_targets%, }]}]
EOF
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
    --web.listen-address="127.0.0.1:$prometheus_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)
api=http://127.0.0.1:$prometheus_port/api/v1
wait_for "http://127.0.0.1:$prometheus_port/-/ready"

# --- Every target UP ------------------------------------------------------------
expected=$((3 + WORKERS))
targets_up() {
    curl -fs "$api/targets" | python3 -c '
import json, sys
targets = json.load(sys.stdin)["data"]["activeTargets"]
up = [t for t in targets if t["health"] == "up"]
print(len(up), len(targets))
for t in targets:
    if t["health"] != "up":
        print("  not up:", t["labels"]["job"], t["scrapeUrl"], t["health"], t["lastError"], file=sys.stderr)
'
}
up="0 0"
for _ in $(seq 30); do
    up=$(targets_up 2>/dev/null) || up="0 0"
    [ "$up" = "$expected $expected" ] && break
    sleep 1
done
if [ "$up" = "$expected $expected" ]; then
    pass "Prometheus: all $expected targets up (rng, hasher, webui, $WORKERS workers)"
else
    fail "Prometheus: targets up/total = $up, expected $expected"
    targets_up || true
fi

# --- The bottleneck, from the metrics -------------------------------------------
echo "measuring for $MEASURE_SECONDS s with $WORKERS workers..."
waiting_samples=()
end=$((SECONDS + MEASURE_SECONDS))
while [ "$SECONDS" -lt "$end" ]; do
    # What an operator would type: curl | grep.
    waiting_samples+=("$({ curl -fs "http://127.0.0.1:$rng_port/metrics" || true; } | awk '/^rng_requests_waiting / { print $2 }')")
    sleep 1
done
echo "rng_requests_waiting, one curl a second: ${waiting_samples[*]}"

query() { # query PROMQL -> one number (the first sample's value)
    curl -fs "$api/query" --data-urlencode "query=$1" | python3 -c '
import json, sys
result = json.load(sys.stdin)["data"]["result"]
print(float(result[0]["value"][1]) if result else "nan")
'
}
window="$((MEASURE_SECONDS - 4))s"
speed=$(query "sum(rate(worker_units_total[$window]))")
waiting=$(query "avg_over_time(rng_requests_waiting[$window])")
rng_call=$(query "sum(rate(worker_call_duration_seconds_sum{dependency=\"rng\"}[$window])) / sum(rate(worker_call_duration_seconds_count{dependency=\"rng\"}[$window]))")
hasher_call=$(query "sum(rate(worker_call_duration_seconds_sum{dependency=\"hasher\"}[$window])) / sum(rate(worker_call_duration_seconds_count{dependency=\"hasher\"}[$window]))")
redis_call=$(query "sum(rate(worker_call_duration_seconds_sum{dependency=\"redis\"}[$window])) / sum(rate(worker_call_duration_seconds_count{dependency=\"redis\"}[$window]))")
rng_wait=$(query "sum(rate(rng_wait_seconds_sum[$window])) / sum(rate(rng_wait_seconds_count[$window]))")
rng_answer=$(query "sum(rate(http_request_duration_seconds_sum{job=\"rng\",route=\"/{how_many_bytes}\"}[$window])) / sum(rate(http_request_duration_seconds_count{job=\"rng\",route=\"/{how_many_bytes}\"}[$window]))")
rng_p90=$(query "histogram_quantile(0.9, sum by (le) (rate(worker_call_duration_seconds_bucket{dependency=\"rng\"}[$window])))")
hasher_p90=$(query "histogram_quantile(0.9, sum by (le) (rate(worker_call_duration_seconds_bucket{dependency=\"hasher\"}[$window])))")
echo "PromQL over the last $window:"
echo "  hashes/s                        sum(rate(worker_units_total))                 = $speed"
echo "  requests waiting in rng's line  avg_over_time(rng_requests_waiting)           = $waiting"
echo "  mean wait in rng's line (s)     rng_wait_seconds sum/count                    = $rng_wait"
echo "  mean rng answer, rng's side (s) http_request_duration_seconds{job=rng}        = $rng_answer"
echo "  mean worker call to rng (s)     worker_call_duration_seconds{dependency=rng}  = $rng_call (p90, interpolated: $rng_p90)"
echo "  mean worker call to hasher (s)  ...{dependency=hasher}                        = $hasher_call (p90, interpolated: $hasher_p90)"
echo "  mean flush to redis (s)         ...{dependency=redis}                         = $redis_call"
# The workshop's numbers hold for its settings: 10 workers, one rng, RNG_CONCURRENCY=1.
defaults=$([ "${RNG_CONCURRENCY:-1}" = 1 ] && [ "${RNG_DELAY:-100ms}" = 100ms ] && echo yes || echo no)
if [ "$WORKERS" -eq 10 ] && [ "$defaults" = yes ]; then
    check_range "hashes/s with 10 workers (the plateau)" "$speed" 8 10.5
    check_range "requests waiting in rng's line" "$waiting" 5 9.5
    check_range "mean worker call to rng, s" "$rng_call" 0.6 1.2
    check_range "mean worker call to hasher, s" "$hasher_call" 0.09 0.2
fi
if [ "$WORKERS" -ge 5 ] && [ "$defaults" = yes ]; then
    check_range "rng calls are slower than hasher calls, ratio" \
        "$(awk -v r="$rng_call" -v h="$hasher_call" 'BEGIN { printf "%.1f", r / h }')" 3 100
fi

# --- SIGTERM: exit 0, in under a second, nothing lost ------------------------
stop() { # stop NAME PID: SIGTERM, then check the exit code and time
    local name=$1 pid=$2 start end code=0
    start=$(date +%s%N)
    kill -TERM "$pid"
    wait "$pid" || code=$?
    end=$(date +%s%N)
    local ms=$(((end - start) / 1000000))
    if [ "$code" -eq 0 ] && [ "$ms" -lt 1000 ]; then
        pass "$name: SIGTERM -> exit $code in $ms ms"
    else
        fail "$name: SIGTERM -> exit $code in $ms ms (expected exit 0 in < 1000 ms)"
    fi
}
# Workers first, while rng and hasher still answer (a unit may be in progress).
for i in $(seq "$WORKERS"); do stop "worker-$i" "${worker_pids[$((i - 1))]}"; done
stop rng "$rng_pid"
stop hasher "$hasher_pid"
stop webui "$webui_pid"

done_total=0
for i in $(seq "$WORKERS"); do
    summary=$(grep -o '[0-9]* units of work done in all, [0-9]* counted in redis' "$work/worker-$i.log" || true)
    read -r units _ _ _ _ _ _ counted _ <<<"${summary:-x x x x x x x x}"
    if [ -n "$summary" ] && [ "$units" = "$counted" ]; then
        done_total=$((done_total + units))
    else
        fail "worker-$i: last line '${summary:-missing}' (expected N units done, N counted)"
    fi
done
hashes=$(redis-cli -p "$redis_port" get hashes)
if [ "$hashes" = "$done_total" ]; then
    pass "hashes in redis ($hashes) = the units the $WORKERS stopped workers did ($done_total)"
else
    fail "hashes in redis ($hashes) != the units the $WORKERS stopped workers did ($done_total)"
fi

finished=yes
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
