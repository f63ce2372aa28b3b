#!/usr/bin/env bash
# Benchmark: DockerCoins with the teaching delays off (RNG_DELAY=0,
# RNG_CONCURRENCY=0, HASHER_DELAY=0, WORKER_SLEEP=0), every service a native
# release binary on loopback, measured with wrk. Prints one table with the
# targets beside the results, the ceiling (wrk on hasher's GET /, which does
# no work) and how close the pipeline comes to it.
#
# Not a test: timings depend on the machine and on what else runs on it.
#
# Usage: scripts/bench.sh
# Env:   PORT_BASE           first of 5 loopback ports used (default 24000:
#                            redis, rng, hasher, webui, worker; below Linux's
#                            ephemeral range, where the thousands of connections
#                            the run closes would hold ports for a minute)
#        DURATION            length of each wrk run (default 10s)
#        CONNECTIONS         wrk connections (default 64)
#        THREADS             wrk threads (default 2)
#        WORKER_CONCURRENCY  units of work at once in the one worker (default 64)
#        PIPELINE_SECONDS    at least this long to measure the pipeline (default 10)
#        SERVICE_LOG         RUST_LOG of the services (default info, their default:
#                            one access-log line per request, to a file)
#        BIN_DIR             where the binaries are (default target/release)
#        BUILD               1 to run `cargo build --release` first (default 1)
#        KEEP                1 to keep the logs and wrk outputs (default 0)
# Exit:  0 every target met, 1 some target not met, 2 the run could not be made.
set -euo pipefail

usage() { echo "usage: $0   (benchmark with the delays off; see the header for env knobs)"; }
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT_BASE="${PORT_BASE:-24000}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-2}"
WORKER_CONCURRENCY="${WORKER_CONCURRENCY:-64}"
PIPELINE_SECONDS="${PIPELINE_SECONDS:-10}"
SERVICE_LOG="${SERVICE_LOG:-info}"
BIN_DIR="${BIN_DIR:-$ROOT/target/release}"
BUILD="${BUILD:-1}"
KEEP="${KEEP:-0}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/dockercoins-bench.XXXXXX")"

declare -A PID=()
declare -A PORT=([redis]=$PORT_BASE [rng]=$((PORT_BASE + 1)) [hasher]=$((PORT_BASE + 2))
  [webui]=$((PORT_BASE + 3)) [worker]=$((PORT_BASE + 4)))
declare -a ROWS=()
MET=0
MISSED=0

log() { echo "bench: $*" >&2; }
die() { log "$*"; exit 2; }

cleanup() {
  local rc=$? name
  set +e
  for name in "${!PID[@]}"; do kill -TERM "${PID[$name]}" 2>/dev/null; done
  for name in "${!PID[@]}"; do wait "${PID[$name]}" 2>/dev/null; done
  if [[ "$KEEP" == 1 ]]; then log "logs and wrk outputs kept in $WORK"; else rm -rf "$WORK"; fi
  return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- what the run needs -----------------------------------------------------
missing=()
for tool in wrk redis-server redis-cli awk; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    log "installing ${missing[*]} (apt-get install -y wrk redis-server gawk)"
    apt-get install -y -q wrk redis-server gawk >/dev/null ||
      { apt-get update -q >/dev/null && apt-get install -y -q wrk redis-server gawk >/dev/null; } ||
      die "cannot install ${missing[*]}; install wrk, redis-server and gawk, then run again"
  else
    die "${missing[*]} missing; install them (apt-get install -y wrk redis-server gawk), then run again"
  fi
fi
if [[ "$BUILD" == 1 ]]; then
  log "building the release binaries (cargo build --release --bins)"
  (cd "$ROOT" && cargo build --release --bins -q) || die "the build failed; fix it or set BUILD=0 and BIN_DIR"
fi
for name in rng hasher webui worker; do
  [[ -x "$BIN_DIR/$name" ]] || die "$BIN_DIR/$name missing; run cargo build --release or set BIN_DIR"
done
ulimit -n 8192 2>/dev/null || true
for name in "${!PORT[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$name]}") 2>/dev/null; then
    die "port ${PORT[$name]} is in use; stop what uses it or set PORT_BASE"
  fi
done

# --- helpers ------------------------------------------------------------------
now_us() { echo "${EPOCHREALTIME/./}"; }

# Sets STATUS to the status code of GET PATH on 127.0.0.1:PORT, or to nothing
# if nothing answers; without forking, so that polling is fine-grained.
STATUS=""
http_status() { # http_status PORT PATH
  STATUS=""
  if exec 3<>"/dev/tcp/127.0.0.1/$1"; then
    if printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3; then
      IFS=' ' read -r -t 2 _ STATUS _ <&3 || true
    fi
    exec 3<&- 3>&-
  fi
} 2>/dev/null

# Sleeps 1 ms without forking (a busy loop would take a CPU from the service
# it waits for).
exec 4<> <(:)
nap() { read -r -t 0.001 -u 4 _ || true; }

# Starts a service and records the time from spawn to its first 200 on /readyz.
start() { # start NAME [VAR=VALUE...]
  local name="$1" t0 t1
  shift
  t0="${EPOCHREALTIME/./}"
  env PORT="${PORT[$name]}" INSTANCE="$name-bench" RUST_LOG="$SERVICE_LOG" "$@" \
    "$BIN_DIR/$name" >>"$WORK/$name.log" 2>&1 &
  PID[$name]=$!
  until http_status "${PORT[$name]}" /readyz; [[ "$STATUS" == 200 ]]; do
    nap
    kill -0 "${PID[$name]}" 2>/dev/null || die "$name exited at start; see $WORK/$name.log (KEEP=1 keeps it)"
    ((${EPOCHREALTIME/./} < t0 + 10000000)) || die "$name not ready after 10 s; see $WORK/$name.log (KEEP=1 keeps it)"
  done
  t1="${EPOCHREALTIME/./}"
  READY_MS[$name]="$(awk -v us=$((t1 - t0)) 'BEGIN { printf "%.1f", us / 1000 }')"
  log "$name ready in ${READY_MS[$name]} ms (pid ${PID[$name]})"
}
declare -A READY_MS=()

# CPU seconds (user + system) a process has used so far.
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }

# Peak resident memory of a process, in MB.
peak_mb() { awk '$1 == "VmHWM:" { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# Adds a row: figure, target text, result text, met (1/0/-).
row() {
  local met="$4"
  case "$met" in
    1) MET=$((MET + 1)); met=yes ;;
    0) MISSED=$((MISSED + 1)); met=NO ;;
  esac
  ROWS+=("| $(pad "$1" 48) | $(pad "$2" 11) | $(pad "$3" 22) | $(pad "$met" 4) |")
}
# TEXT padded with spaces to WIDTH characters (printf would count bytes, not ≥).
pad() { local LC_ALL=C.UTF-8 text="$1"; while ((${#text} < $2)); do text+=" "; done; printf '%s' "$text"; }
at_least() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }' && echo 1 || echo 0; }
at_most() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }' && echo 1 || echo 0; }
thousands() { LC_ALL=C awk -v n="$1" 'BEGIN { s = sprintf("%.0f", n); while (s ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]([,]|$)/, ",&", s); print s }'; }

# Runs wrk against URL; prints requests per second. Socket errors or non-2xx
# answers make the figure suspect: they are logged and the result marked.
WRK_NOTE=""
wrk_rate() { # wrk_rate NAME URL [wrk options...]
  local name="$1" url="$2" out rate non2xx errors
  shift 2
  out="$WORK/$name.wrk"
  log "$name: wrk -t$THREADS -c$CONNECTIONS -d$DURATION $* $url"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url" >"$out" 2>&1 ||
    die "wrk failed on $url; see $out (KEEP=1 keeps it)"
  rate="$(awk '/^Requests\/sec:/ { print $2 }' "$out")"
  non2xx="$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")"
  errors="$(awk '/Socket errors/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' "$out")"
  WRK_NOTE=""
  if [[ -n "$non2xx$errors" && "${non2xx:-0}${errors:-0}" != 00 ]]; then
    WRK_NOTE=" (${non2xx:-0} non-2xx, ${errors:-0} socket errors)"
    log "$name: ${non2xx:-0} non-2xx answers, ${errors:-0} socket errors"
  fi
  echo "${rate:-0}"
}

# --- start everything -----------------------------------------------------------
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
log "load before the run: $LOAD_BEFORE on $(nproc) CPUs; writing to $WORK"
t0="$(now_us)"
redis-server --port "${PORT[redis]}" --bind 127.0.0.1 --save "" --appendonly no \
  >"$WORK/redis.log" 2>&1 &
PID[redis]=$!
until redis-cli -p "${PORT[redis]}" ping >/dev/null 2>&1; do
  kill -0 "${PID[redis]}" 2>/dev/null || die "redis-server exited; see $WORK/redis.log (KEEP=1 keeps it)"
  (($(now_us) < t0 + 10000000)) || die "redis-server not answering after 10 s"
  sleep 0.02
done
REDIS="redis://127.0.0.1:${PORT[redis]}"
redis-cli -p "${PORT[redis]}" set hashes 0 >/dev/null

start rng RNG_DELAY=0 RNG_CONCURRENCY=0
start hasher HASHER_DELAY=0
start webui REDIS_URL="$REDIS"

# --- wrk runs -------------------------------------------------------------------
printf '%s\n' 'wrk.method = "POST"' 'wrk.body = string.rep("x", 32)' \
  'wrk.headers["Content-Type"] = "application/octet-stream"' >"$WORK/post32.lua"

ceiling="$(wrk_rate ceiling "http://127.0.0.1:${PORT[hasher]}/")"
ceiling_note="$WRK_NOTE"
hasher="$(wrk_rate hasher "http://127.0.0.1:${PORT[hasher]}/" -s "$WORK/post32.lua")"
row "hasher POST / 32 bytes, wrk $CONNECTIONS connections" "≥ 50,000/s" "$(thousands "$hasher")/s$WRK_NOTE" \
  "$([[ -z "$WRK_NOTE" ]] && at_least "$hasher" 50000 || echo 0)"
rng="$(wrk_rate rng "http://127.0.0.1:${PORT[rng]}/32")"
row "rng GET /32, wrk $CONNECTIONS connections" "≥ 50,000/s" "$(thousands "$rng")/s$WRK_NOTE" \
  "$([[ -z "$WRK_NOTE" ]] && at_least "$rng" 50000 || echo 0)"
webui="$(wrk_rate webui "http://127.0.0.1:${PORT[webui]}/json")"
row "webui GET /json, wrk $CONNECTIONS connections" "≥ 30,000/s" "$(thousands "$webui")/s$WRK_NOTE" \
  "$([[ -z "$WRK_NOTE" ]] && at_least "$webui" 30000 || echo 0)"

# --- the pipeline -------------------------------------------------------------
# The worker adds to `hashes` once a second; the rate is measured from one
# change of the counter to another, PIPELINE_SECONDS or more later, so that
# no partial second is counted.
hashes() { redis-cli -p "${PORT[redis]}" get hashes; }
next_flush() { # waits for `hashes` to change from $1; prints "value time_us"
  local value
  while value="$(hashes)"; [[ "$value" == "$1" ]]; do sleep 0.01; done
  echo "$value $(now_us)"
}
start worker REDIS_URL="$REDIS" RNG_URL="http://127.0.0.1:${PORT[rng]}" \
  HASHER_URL="http://127.0.0.1:${PORT[hasher]}" WORKER_SLEEP=0 \
  WORKER_CONCURRENCY="$WORKER_CONCURRENCY"
log "pipeline: one worker, WORKER_CONCURRENCY=$WORKER_CONCURRENCY, for ${PIPELINE_SECONDS}s or more"
read -r h1 t1 < <(next_flush "$(hashes)") # the first flush may hold a partial second
read -r h1 t1 < <(next_flush "$h1")
declare -A CPU1=()
for name in redis rng hasher worker; do CPU1[$name]="$(cpu_seconds "${PID[$name]}")"; done
sleep "$PIPELINE_SECONDS"
read -r h2 t2 < <(next_flush "$(hashes)")
cpu_line=""
for name in redis rng hasher worker; do
  cpu_line+=" $name $(awk -v a="${CPU1[$name]}" -v b="$(cpu_seconds "${PID[$name]}")" -v s=$((t2 - t1)) \
    'BEGIN { printf "%.0f%%", (b - a) / (s / 1e6) * 100 }'),"
done
pipeline="$(awk -v h=$((h2 - h1)) -v us=$((t2 - t1)) 'BEGIN { printf "%.0f", h / (us / 1e6) }')"
log "pipeline: $((h2 - h1)) hashes in $(awk -v us=$((t2 - t1)) 'BEGIN { printf "%.2f", us / 1e6 }') s"
row "pipeline, one worker, WORKER_CONCURRENCY=$WORKER_CONCURRENCY" "≥ 20,000/s" \
  "$(thousands "$pipeline") hashes/s" "$(at_least "$pipeline" 20000)"

# --- memory and start times ---------------------------------------------------
for name in rng hasher webui worker; do
  mb="$(peak_mb "${PID[$name]}")"
  row "$name peak resident memory (VmHWM)" "≤ 15 MB" "$mb MB" "$(at_most "$mb" 15)"
done
for name in rng hasher webui worker; do
  row "$name start to ready (spawn to 200 on /readyz)" "≤ 50 ms" "${READY_MS[$name]} ms" \
    "$(at_most "${READY_MS[$name]}" 50)"
done
ratio="$(awk -v p="$pipeline" -v c="$ceiling" 'BEGIN { if (c > 0) printf "%.2f", p / (c / 2); else print "n/a" }')"
row "ceiling: hasher GET /, wrk $CONNECTIONS connections" "-" "$(thousands "$ceiling")/s$ceiling_note" -
row "pipeline ÷ (ceiling ÷ 2)" "-" "$ratio" -

echo
echo "DockerCoins with the delays off: $(nproc) CPUs, loopback, native release binaries,"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION; services at RUST_LOG=$SERVICE_LOG; load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| $(pad figure 48) | $(pad target 11) | $(pad result 22) | met? |"
echo "|$(pad "" 50 | tr ' ' -)|$(pad "" 13 | tr ' ' -)|$(pad "" 24 | tr ' ' -)|------|"
printf '%s\n' "${ROWS[@]}"
echo
echo "CPU used during the pipeline (100% = one core):${cpu_line%,}"
echo "$MET of $((MET + MISSED)) targets met"
((MISSED == 0)) || exit 1
