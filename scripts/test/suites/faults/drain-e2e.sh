#!/usr/bin/env bash
# A rolling stop that drops no request, natively: the worker's call errors
# while one of two rng instances is stopped with SIGTERM.
#
# Two rng binaries sit behind scripts/test/fixtures/readiness_proxy.py, a load balancer
# that, like kube-proxy, stops sending new connections to an instance about
# LAG seconds after its /readyz stops answering 200. One worker mines through
# it (WORKER_CONCURRENCY loops, no pause), with hasher and redis-server beside
# it. After WARMUP seconds rng-a gets SIGTERM; the run counts the worker's
# `worker_call_errors_total{dependency="rng"}` from then until 2 s after
# rng-a has exited. Each mode is one such run:
#   drain     rng-a with SHUTDOWN_DRAIN=DRAIN (default 3s, the services' default):
#             /readyz says 503 at once, the listener serves on until the
#             balancer has moved on. Expected: 0 errors.
#   no-drain  rng-a with SHUTDOWN_DRAIN=0: the listener closes at SIGTERM,
#             the stop the services had before SHUTDOWN_DRAIN. Expected: errors.
#
# Usage: scripts/test/suites/faults/drain-e2e.sh
# Env:   MODES       which runs, in order (default "no-drain drain")
#        DRAIN       rng-a's SHUTDOWN_DRAIN in the drain run (default 3s)
#        LAG         seconds the balancer takes to drop an unready instance (default 1)
#        WARMUP      seconds of mining before the SIGTERM (default 2)
#        WORKER_CONCURRENCY  the worker's loops (default 8)
#        BIN_DIR     where rng, hasher, worker are (default target/release;
#                    built with `cargo build --release` when missing)
#        PORT_BASE   first of 6 loopback ports used (default 23700)
#        KEEP_LOGS=1 keep the logs (their directory is printed)
# cleanup and summary are called by trap and by finish; shellcheck cannot see those calls.
# shellcheck disable=SC2317
set -euo pipefail

usage() { echo "usage: $0   (worker call errors while one of two rng instances stops, with and without the drain; see the header for env knobs)"; }
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
MODES="${MODES:-no-drain drain}"
DRAIN="${DRAIN:-3s}"
LAG="${LAG:-1}"
WARMUP="${WARMUP:-2}"
WORKER_CONCURRENCY="${WORKER_CONCURRENCY:-8}"
BIN_DIR="${BIN_DIR:-$ROOT/target/release}"
PORT_BASE="${PORT_BASE:-23700}"
KEEP_LOGS="${KEEP_LOGS:-0}"
REDIS_PORT=$PORT_BASE
HASHER_PORT=$((PORT_BASE + 1))
RNG_A_PORT=$((PORT_BASE + 2))
RNG_B_PORT=$((PORT_BASE + 3))
PROXY_PORT=$((PORT_BASE + 4))
WORKER_PORT=$((PORT_BASE + 5))
WORK="$(mktemp -d "${TMPDIR:-/tmp}/dockercoins-drain.XXXXXX")"
STARTED=$SECONDS
TEST_NAME="drain-e2e"
# shellcheck source=scripts/test/lib/lib.sh
source "$ROOT/scripts/test/lib/lib.sh"
# shellcheck source=scripts/test/lib/native-lib.sh
source "$ROOT/scripts/test/lib/native-lib.sh"
declare -a SUMMARY=()

need_tools "redis-server curl python3 gawk" redis-server redis-cli curl python3 awk
need_binaries worker rng hasher
ports_free "$PORT_BASE" $((PORT_BASE + 5))

rng_errors() {
  curl -fs --max-time 2 "http://127.0.0.1:$WORKER_PORT/metrics" |
    awk '$1 == "worker_call_errors_total{dependency=\"rng\"}" { n = $2 } END { print n + 0 }'
}

stop_all() {
  local name
  for name in "${!PID[@]}"; do
    kill -KILL "${PID[$name]}" 2>/dev/null || true
    wait "${PID[$name]}" 2>/dev/null || true
    unset "PID[$name]"
  done
}

# run MODE: one run; prints the errors and sets ERRORS, UNITS.
run() {
  local mode="$1" drain t0 code=0
  case "$mode" in
    drain) drain="$DRAIN" ;;
    no-drain) drain=0 ;;
    *) echo "drain-e2e: unknown mode $mode (drain, no-drain)" >&2; exit 2 ;;
  esac
  mkdir -p "$WORK/$mode/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$WORK/$mode/redis" >>"$WORK/redis.log" 2>&1 &
  PID[redis]=$!
  local deadline=$((SECONDS + 10))
  until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
  start hasher hasher "$HASHER_PORT" HASHER_DELAY=0
  # Each rng answers in 5 ms, one at a time: two of them carry the worker.
  start rng-a rng "$RNG_A_PORT" RNG_DELAY=5ms SHUTDOWN_DRAIN="$drain" RUST_LOG=info,access=warn
  start rng-b rng "$RNG_B_PORT" RNG_DELAY=5ms RUST_LOG=info,access=warn
  python3 "$ROOT/scripts/test/fixtures/readiness_proxy.py" "$PROXY_PORT" "$RNG_A_PORT" "$RNG_B_PORT" \
    --lag "$LAG" >>"$WORK/proxy.log" 2>&1 &
  PID[proxy]=$!
  wait_up "$PROXY_PORT" /healthz
  start worker worker "$WORKER_PORT" RNG_URL="http://127.0.0.1:$PROXY_PORT" \
    HASHER_URL="http://127.0.0.1:$HASHER_PORT" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
    WORKER_SLEEP=0 WORKER_CONCURRENCY="$WORKER_CONCURRENCY" WORKER_MAX_BACKOFF=2s
  sleep "$WARMUP"
  local before units_before
  before="$(rng_errors)"
  units_before="$(redis-cli -p "$REDIS_PORT" get hashes)"
  t0="$(now)"
  kill -TERM "${PID[rng-a]}"
  wait "${PID[rng-a]}" 2>/dev/null || code=$?
  unset "PID[rng-a]"
  local exit_seconds
  exit_seconds="$(elapsed "$t0" "$(now)")"
  sleep 2
  ERRORS=$(($(rng_errors) - before))
  UNITS=$(($(redis-cli -p "$REDIS_PORT" get hashes) - ${units_before:-0}))
  log "$mode: rng-a (SHUTDOWN_DRAIN=$drain) exited $code ${exit_seconds} s after SIGTERM; worker: $ERRORS rng call errors, $UNITS units counted meanwhile"
  stop_all
}

for mode in $MODES; do
  run "$mode"
  case "$mode" in
    drain)
      check "drain: no worker call error while rng-a stopped ($ERRORS)" test "$ERRORS" -eq 0
      ;;
    no-drain)
      check "no drain: the worker's calls are refused while rng-a stops ($ERRORS errors)" test "$ERRORS" -gt 0
      ;;
  esac
  SUMMARY+=("$mode: $ERRORS worker call errors to rng, $UNITS units, while one of two rng stopped")
done

summary() {
  echo
  echo "=== DockerCoins drain summary (LAG=$LAG s, WORKER_CONCURRENCY=$WORKER_CONCURRENCY) ==="
  for line in "${SUMMARY[@]}"; do echo "  $line"; done
  echo "  whole run: $((SECONDS - STARTED)) s"
  echo "$PASSED passed, $FAILED failed"
}
finish
