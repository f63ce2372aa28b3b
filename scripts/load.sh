#!/usr/bin/env bash
# Load test: wrk against rng (GET /32), hasher (POST /) with their delays off,
# and webui (GET /json), each run natively on loopback with a redis-server.
# Checks zero socket errors and zero non-2xx answers, and reports the memory
# (RSS) of each service before and after its run, and its peak.
#
# Usage: scripts/load.sh [rng] [hasher] [webui]      (default: all three)
# Env:   CONNECTIONS   open connections (default 256)
#        DURATION      length of each run (default 30s)
#        THREADS       wrk threads (default 2)
#        WRK_TIMEOUT   wrk's per-request timeout (default 2s)
#        RSS_LIMIT_MB  highest accepted RSS after a run (default 64)
#        BIN_DIR       where the binaries are (default target/release; built if missing)
#        PORT_BASE     first of the 4 loopback ports used (default 23700, below
#                      the ephemeral range: see bench.sh)
#        RNG_CONCURRENCY  rng's line (default 1, as in the classic app)
set -euo pipefail

usage() { echo "usage: $0 [rng] [hasher] [webui]   (wrk load runs; see the header for env knobs)"; }
TARGETS=()
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    rng | hasher | webui) TARGETS+=("$arg") ;;
    *) usage >&2; exit 2 ;;
  esac
done
((${#TARGETS[@]})) || TARGETS=(rng hasher webui)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Natively nothing balances connections by readiness: the services stop without
# the drain that follows SIGTERM (SHUTDOWN_DRAIN, docs/operations.md#stopping).
export SHUTDOWN_DRAIN="${SHUTDOWN_DRAIN:-0}"
CONNECTIONS="${CONNECTIONS:-256}"
DURATION="${DURATION:-30s}"
THREADS="${THREADS:-2}"
WRK_TIMEOUT="${WRK_TIMEOUT:-2s}"
RSS_LIMIT_MB="${RSS_LIMIT_MB:-64}"
BIN_DIR="${BIN_DIR:-$ROOT/target/release}"
PORT_BASE="${PORT_BASE:-23700}"
RNG_CONCURRENCY="${RNG_CONCURRENCY:-1}"
REDIS_PORT=$PORT_BASE
WORK="$(mktemp -d "${TMPDIR:-/tmp}/dockercoins-load.XXXXXX")"
PASSED=0
FAILED=0
declare -A PID=() PORT=([rng]=$((PORT_BASE + 1)) [hasher]=$((PORT_BASE + 2)) [webui]=$((PORT_BASE + 3)))
declare -a TABLE=()

log() { echo "load: $*"; }
pass() { PASSED=$((PASSED + 1)); echo "  ok    $*"; }
fail() { FAILED=$((FAILED + 1)); echo "  FAIL  $*"; }

cleanup() {
  local rc=$? name
  set +e
  for name in "${!PID[@]}"; do kill -KILL "${PID[$name]}" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$WORK"
  return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for tool in wrk redis-server redis-cli curl awk; do
  if ! command -v "$tool" >/dev/null; then
    echo "load: $tool is missing; install it (apt-get install -y wrk redis-server curl gawk)" >&2
    exit 1
  fi
done
if [[ ! -x "$BIN_DIR/rng" || ! -x "$BIN_DIR/hasher" || ! -x "$BIN_DIR/webui" ]]; then
  log "building the release binaries (cargo build --release)"
  (cd "$ROOT" && cargo build --release --bins -q)
fi
ulimit -n 8192 2>/dev/null || true
for port in $(seq "$PORT_BASE" $((PORT_BASE + 3))); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "load: port $port is in use; stop what uses it or set PORT_BASE" >&2
    exit 1
  fi
done

wait_for() { # wait_for URL
  local deadline=$((SECONDS + 10))
  until curl -fs --max-time 1 -o /dev/null "$1"; do
    ((SECONDS < deadline)) || { echo "load: $1 did not answer; see $WORK" >&2; return 1; }
    sleep 0.05
  done
}

start() { # start NAME [VAR=VALUE...]
  local name="$1"
  shift
  env PORT="${PORT[$name]}" INSTANCE="$name-load" RUST_LOG=warn "$@" "$BIN_DIR/$name" >>"$WORK/$name.log" 2>&1 &
  PID[$name]=$!
  wait_for "http://127.0.0.1:${PORT[$name]}/healthz"
}

rss_mb() { awk -v k="${2:-VmRSS}:" '$1 == k { printf "%.1f", $2 / 1024 }' "/proc/${PID[$1]}/status"; }

# The value after LABEL on wrk's output, or 0.
wrk_field() { awk -v label="$2" 'index($0, label) { sub(".*" label "[ ]*", ""); print $1; found = 1 } END { if (!found) print 0 }' "$1"; }

run() { # run NAME REQUEST URL [wrk options]
  local name="$1" request="$2" url="$3" out="$WORK/$1.wrk" before after peak requests rate non2xx connect read write timeout errors
  shift 3
  before="$(rss_mb "$name")"
  log "$name: wrk -t$THREADS -c$CONNECTIONS -d$DURATION $url $*"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout "$WRK_TIMEOUT" --latency "$@" "$url" >"$out" 2>&1 || true
  sed 's/^/    /' "$out"
  after="$(rss_mb "$name")"
  peak="$(rss_mb "$name" VmHWM)"
  requests="$(awk '/requests in/ { print $1 }' "$out")"
  rate="$(wrk_field "$out" "Requests/sec:")"
  non2xx="$(wrk_field "$out" "Non-2xx or 3xx responses:")"
  read -r connect read write timeout < <(awk '/Socket errors/ { gsub(",", ""); print $4, $6, $8, $10; found = 1 } END { if (!found) print 0, 0, 0, 0 }' "$out")
  errors=$((connect + read + write + timeout))
  if [[ -n "$requests" && "$errors" == 0 && "$non2xx" == 0 ]]; then
    pass "$name: $requests requests ($rate/s), 0 socket errors, 0 non-2xx"
  else
    fail "$name: ${requests:-no} requests, $errors socket errors (connect $connect, read $read, write $write, timeout $timeout), $non2xx non-2xx"
  fi
  if awk -v a="$after" -v l="$RSS_LIMIT_MB" 'BEGIN { exit !(a <= l) }'; then
    pass "$name: RSS $before MB before, $after MB after (peak $peak MB; limit $RSS_LIMIT_MB MB)"
  else
    fail "$name: RSS $after MB after the run, over $RSS_LIMIT_MB MB (before: $before MB, peak $peak MB)"
  fi
  if curl -fs --max-time 2 -o /dev/null "http://127.0.0.1:${PORT[$name]}/healthz"; then
    pass "$name: still healthy after the run"
  else
    fail "$name: /healthz does not answer after the run"
  fi
  TABLE+=("$(printf '| %-6s | %-22s | %9s | %8s | %6s | %7s | %8s MB | %8s MB | %8s MB |' \
    "$name" "$request" "${requests:-0}" "$rate" "$errors" "$non2xx" "$before" "$after" "$peak")")
}

for target in "${TARGETS[@]}"; do
  case "$target" in
    rng)
      start rng RNG_DELAY=0 RNG_CONCURRENCY="$RNG_CONCURRENCY"
      run rng "GET /32" "http://127.0.0.1:${PORT[rng]}/32"
      ;;
    hasher)
      start hasher HASHER_DELAY=0
      printf '%s\n' 'wrk.method = "POST"' 'wrk.body = string.rep("x", 32)' \
        'wrk.headers["Content-Type"] = "application/octet-stream"' >"$WORK/post.lua"
      run hasher "POST / (32 bytes)" "http://127.0.0.1:${PORT[hasher]}/" -s "$WORK/post.lua"
      ;;
    webui)
      if [[ -z "${PID[redis]:-}" ]]; then
        redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
        PID[redis]=$!
        until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.05; done
        redis-cli -p "$REDIS_PORT" set hashes 123456 >/dev/null
      fi
      start webui REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
      run webui "GET /json" "http://127.0.0.1:${PORT[webui]}/json"
      ;;
  esac
  kill -TERM "${PID[$target]}" 2>/dev/null || true
  wait "${PID[$target]}" 2>/dev/null || true
  unset "PID[$target]"
done

echo
echo "=== load: $CONNECTIONS connections, $DURATION per service, $THREADS wrk threads ==="
echo "| service | request | requests | req/s | socket errors | non-2xx | RSS before | RSS after | RSS peak |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|"
for line in "${TABLE[@]}"; do echo "$line"; done
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
