#!/usr/bin/env bash
# Instructions per request, ours against the bare reference server
# (crates/dockercoins/examples/bare.rs), counted by valgrind's callgrind: a
# figure that does not move with the machine's load, unlike throughput.
#
# Each case runs its server under callgrind twice, with counting switched on
# once it is ready, and curl for SHORT then LONG requests against it (CONNECTIONS
# at a time, on kept-alive connections; wrk knows only durations): the
# difference of the two totals divided by the difference of the two request
# counts is the cost of one request, start, connections and stop left out.
# The functions that cost the most (self cost, LONG run) follow each of ours.
#
# worker_unit counts the worker's cost per unit of work instead (GET rng /32,
# POST the bytes to hasher /, count the unit): redis-server, rng and hasher
# run natively with their delays off, the worker under callgrind with
# WORKER_SLEEP=0. rng is paused (SIGSTOP) when counting starts and when it
# stops, until every unit in progress waits on it: each end then finds the
# worker in the same state, and the units done in between (its
# worker_units_total, read before and after) are exactly those counted.
# Connections are kept for WORKER_CONNECTION_MAX_AGE (default 1h here): their
# renewal happens per second, not per unit, and under callgrind a second
# holds a hundred times fewer units than natively. Its reference,
# bare_client (crates/worker/examples/bare_client.rs), makes the same two
# calls per unit on bare hyper connections, counted over its whole run.
#
# Not a test: a measurement for scripts/bench.sh's targets.
#
# Usage: scripts/profile.sh [CASE...]   (default: every case; cases: hasher_get
#        hasher_post rng_bytes webui_json worker_unit bare_get bare_post
#        bare_bytes bare_client)
# Env:   PORT_BASE    first of 4 loopback ports used (default 24100: redis,
#                     the server measured, then rng and hasher for
#                     worker_unit and bare_client)
#        SHORT, LONG  requests (units of work) in the two runs (default 2000
#                     and 6000)
#        CONNECTIONS  requests at a time (default 16)
#        WORKER_CONCURRENCY  units at once, worker_unit and bare_client
#                     (default 64, as in scripts/bench.sh)
#        WORKER_CONNECTION_MAX_AGE  the worker's, in worker_unit (default 1h)
#        SERVICE_LOG  RUST_LOG of our services (default info: the access log on)
#        TOP          functions listed per case of ours (default 20; 0: none)
#        BIN_DIR      binaries with their symbols (default
#                     target/profiling/release, built with strip off)
#        BUILD        1 to build BIN_DIR first (default 1)
#        KEEP         1 to keep the callgrind outputs (default 0)
# Exit:  0 measured, 2 the run could not be made.
set -euo pipefail

usage() { echo "usage: $0 [hasher_get|hasher_post|rng_bytes|webui_json|worker_unit|bare_get|bare_post|bare_bytes|bare_client...]"; }
ALL_CASES=(hasher_get bare_get hasher_post bare_post rng_bytes bare_bytes webui_json worker_unit bare_client)
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
esac
CASES=("$@")
((${#CASES[@]})) || CASES=("${ALL_CASES[@]}")
for case_name in "${CASES[@]}"; do
  [[ " ${ALL_CASES[*]} " == *" $case_name "* ]] || { usage >&2; exit 2; }
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Natively nothing balances connections by readiness: the services stop without
# the drain that follows SIGTERM (SHUTDOWN_DRAIN, docs/operations.md#stopping).
export SHUTDOWN_DRAIN="${SHUTDOWN_DRAIN:-0}"
PORT_BASE="${PORT_BASE:-24100}"
SHORT="${SHORT:-2000}"
LONG="${LONG:-6000}"
CONNECTIONS="${CONNECTIONS:-16}"
WORKER_CONCURRENCY="${WORKER_CONCURRENCY:-64}"
WORKER_CONNECTION_MAX_AGE="${WORKER_CONNECTION_MAX_AGE:-1h}"
SERVICE_LOG="${SERVICE_LOG:-info}"
TOP="${TOP:-20}"
BIN_DIR="${BIN_DIR:-$ROOT/target/profiling/release}"
BUILD="${BUILD:-1}"
KEEP="${KEEP:-0}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/dockercoins-profile.XXXXXX")"
REDIS_PORT="$PORT_BASE"
PORT=$((PORT_BASE + 1))
RNG_PORT=$((PORT_BASE + 2))
HASHER_PORT=$((PORT_BASE + 3))
SERVER=""
REDIS_PID=""
RNG_PID=""
HASHER_PID=""

log() { echo "profile: $*" >&2; }
die() { log "$*"; exit 2; }
cleanup() {
  local rc=$?
  set +e
  [[ -z "$SERVER" ]] || { kill -TERM "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null; }
  [[ -z "$REDIS_PID" ]] || { kill -TERM "$REDIS_PID" 2>/dev/null; wait "$REDIS_PID" 2>/dev/null; }
  local pid
  for pid in "$RNG_PID" "$HASHER_PID"; do
    # A paused rng must go on to stop.
    [[ -z "$pid" ]] || { kill -CONT "$pid" 2>/dev/null; kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; }
  done
  if [[ "$KEEP" == 1 ]]; then log "callgrind outputs kept in $WORK"; else rm -rf "$WORK"; fi
  return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

missing=()
for tool in valgrind callgrind_control callgrind_annotate curl redis-server redis-cli awk; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
    log "installing ${missing[*]} (apt-get install -y valgrind curl redis-server gawk)"
    { apt-get install -y -q valgrind curl redis-server gawk >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q valgrind curl redis-server gawk >/dev/null 2>&1; }; } ||
      die "cannot install ${missing[*]}; install valgrind, curl, redis-server and gawk, then run again"
  else
    die "${missing[*]} missing; install them (apt-get install -y valgrind curl redis-server gawk), then run again"
  fi
fi
if [[ "$BUILD" == 1 ]]; then
  log "building with symbols (CARGO_PROFILE_RELEASE_STRIP=false cargo build --release --target-dir target/profiling)"
  (cd "$ROOT" && CARGO_PROFILE_RELEASE_STRIP=false cargo build --release --bins --example bare \
    --example bare_client --target-dir "$ROOT/target/profiling" -q) || die "the build failed; fix it or set BUILD=0 and BIN_DIR"
fi
(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && die "port $PORT is in use; set PORT_BASE"
for port in "$REDIS_PORT" "$RNG_PORT" "$HASHER_PORT"; do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && die "port $port is in use; set PORT_BASE"
done

STATUS=""
http_status() { # http_status PATH: sets STATUS to the status code, or nothing
  STATUS=""
  if exec 3<>"/dev/tcp/127.0.0.1/$PORT"; then
    if printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$1" >&3; then
      IFS=' ' read -r -t 5 _ STATUS _ <&3 || true
    fi
    exec 3<&- 3>&-
  fi
} 2>/dev/null

printf 'x%.0s' $(seq 32) >"$WORK/body32"

# What each case runs: "binary ready-path url-path get|post" and its env.
declare -A RUN=(
  [hasher_get]="hasher /readyz / get" [hasher_post]="hasher /readyz / post"
  [rng_bytes]="rng /readyz /32 get" [webui_json]="webui /readyz /json get"
  [bare_get]="examples/bare / / get" [bare_post]="examples/bare / / post"
  [bare_bytes]="examples/bare / /32 get"
  [worker_unit]="worker /readyz - unit" [bare_client]="examples/bare_client - - unit"
)
declare -A ENVS=(
  [hasher_get]="HASHER_DELAY=0" [hasher_post]="HASHER_DELAY=0"
  [rng_bytes]="RNG_DELAY=0 RNG_CONCURRENCY=0" [webui_json]="REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
  [bare_get]="" [bare_post]="" [bare_bytes]="" [bare_client]=""
  [worker_unit]="REDIS_URL=redis://127.0.0.1:$REDIS_PORT RNG_URL=http://127.0.0.1:$RNG_PORT
    HASHER_URL=http://127.0.0.1:$HASHER_PORT WORKER_SLEEP=0 WORKER_CONCURRENCY=$WORKER_CONCURRENCY
    WORKER_CONNECTION_MAX_AGE=$WORKER_CONNECTION_MAX_AGE"
)

UNITS=0
[[ " ${CASES[*]} " == *" worker_unit "* || " ${CASES[*]} " == *" bare_client "* ]] && UNITS=1
for case_name in "${CASES[@]}"; do
  read -r binary _ <<<"${RUN[$case_name]}"
  [[ -x "$BIN_DIR/$binary" ]] || die "$BIN_DIR/$binary missing; set BIN_DIR or BUILD=1"
done
if ((UNITS)); then
  for binary in rng hasher; do
    [[ -x "$BIN_DIR/$binary" ]] || die "$BIN_DIR/$binary missing; set BIN_DIR or BUILD=1"
  done
fi
if [[ " ${CASES[*]} " == *" webui_json "* || " ${CASES[*]} " == *" worker_unit "* ]]; then
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
  redis-cli -p "$REDIS_PORT" set hashes 0 >/dev/null || die "redis-server not answering"
fi

# The value of a series in the /metrics of 127.0.0.1:PORT (nothing if none).
sample() { # sample PORT SERIES
  curl -sS -m 5 "http://127.0.0.1:$1/metrics" | awk -v series="$2" '$1 == series { value = $2 } END { print value }'
}
RNG_CALLS='http_requests_total{route="/{how_many_bytes}",method="GET",status="200"}'
HASHER_CALLS='http_requests_total{route="/",method="POST",status="200"}'
if ((UNITS)); then
  # rng and hasher, natively, for the worker and bare_client to call.
  env PORT="$RNG_PORT" INSTANCE=profile-rng RUST_LOG=info,access=warn RNG_DELAY=0 RNG_CONCURRENCY=0 \
    "$BIN_DIR/rng" >"$WORK/rng.log" 2>&1 &
  RNG_PID=$!
  env PORT="$HASHER_PORT" INSTANCE=profile-hasher RUST_LOG=info,access=warn HASHER_DELAY=0 \
    "$BIN_DIR/hasher" >"$WORK/hasher.log" 2>&1 &
  HASHER_PID=$!
  for _ in $(seq 100); do
    [[ -n "$(sample "$RNG_PORT" dockercoins_build_info 2>/dev/null)$(sample "$HASHER_PORT" \
      dockercoins_build_info 2>/dev/null)" ]] && break
    sleep 0.05
  done
  [[ -n "$(sample "$RNG_PORT" process_start_time_seconds)" && -n "$(sample "$HASHER_PORT" \
    process_start_time_seconds)" ]] || die "rng or hasher not answering; see $WORK/rng.log, hasher.log (KEEP=1)"
fi

# Waits until every unit of the worker in progress waits on a paused rng:
# hasher has answered nothing new for 0.3 s, and 0.3 s more for the worker to
# take the last answers.
settle() {
  local before after
  before="$(sample "$HASHER_PORT" "$HASHER_CALLS")"
  while sleep 0.3; after="$(sample "$HASHER_PORT" "$HASHER_CALLS")"; [[ "$after" != "$before" ]]; do
    before="$after"
  done
  sleep 0.3
}

# Starts CASE's binary under callgrind, not counting yet, into OUT, and waits
# until its ready path answers 200; sets SERVER.
start_counted() { # start_counted CASE OUT
  local case_name="$1" out="$2" binary ready
  read -r binary ready _ <<<"${RUN[$case_name]}"
  # shellcheck disable=SC2086 # ENVS holds words
  env PORT="$PORT" INSTANCE=profile RUST_LOG="$SERVICE_LOG" ${ENVS[$case_name]} \
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
    "$BIN_DIR/$binary" >>"$WORK/$case_name.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 600); do
    http_status "$ready"
    [[ "$STATUS" == 200 ]] && return 0
    kill -0 "$SERVER" 2>/dev/null || die "$case_name exited at start; see $WORK/$case_name.log (KEEP=1)"
    sleep 0.1
  done
  die "$case_name not ready after 60 s under valgrind"
}

# Runs CASE under callgrind with COUNT requests; sets INSTRUCTIONS and
# REQUESTS (the answers with status 200).
INSTRUCTIONS=0
REQUESTS=0
measure() { # measure CASE COUNT
  local case_name="$1" count="$2" path method out requests total
  local -a post=()
  read -r _ _ path method <<<"${RUN[$case_name]}"
  case "$case_name" in
    worker_unit) measure_worker "$count"; return ;;
    bare_client) measure_bare_client "$count"; return ;;
  esac
  [[ "$method" == get ]] ||
    post=(--data-binary "@$WORK/body32" -H "Content-Type: application/octet-stream")
  out="$WORK/$case_name.$count.callgrind"
  start_counted "$case_name" "$out"
  callgrind_control --instr=on "$SERVER" >/dev/null || die "callgrind_control cannot reach $case_name"
  # One URL per request (the query string is not part of any route); the
  # bodies go to /dev/null, the status codes to the .codes file.
  curl -sS --no-progress-meter --parallel --parallel-max "$CONNECTIONS" "${post[@]}" \
    -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:$PORT$path?[1-$count]" >"$out.codes" ||
    die "curl failed; see $out.codes (KEEP=1)"
  callgrind_control --instr=off "$SERVER" >/dev/null || true
  kill -TERM "$SERVER"
  wait "$SERVER" 2>/dev/null || true
  SERVER=""
  requests="$(grep -c '^200$' "$out.codes" || true)"
  total="$(awk '/^totals:/ { print $2; exit }' "$out")"
  [[ -n "$requests" && -n "$total" ]] || die "no count for $case_name; see $out (KEEP=1)"
  INSTRUCTIONS="$total"
  REQUESTS="$requests"
}

# The worker under callgrind, counting while it does COUNT units or a few
# more; sets INSTRUCTIONS and REQUESTS (the units counted).
measure_worker() { # measure_worker COUNT
  local count="$1" out units0 units1 calls0 total
  out="$WORK/worker_unit.$count.callgrind"
  start_counted worker_unit "$out"
  sleep 1 # its connections opened, its first units done
  kill -STOP "$RNG_PID"
  settle
  units0="$(sample "$PORT" worker_units_total)"
  callgrind_control --instr=on "$SERVER" >/dev/null 2>&1 || die "callgrind_control cannot reach the worker"
  kill -CONT "$RNG_PID"
  calls0="$(sample "$RNG_PORT" "$RNG_CALLS")"
  while (($(sample "$RNG_PORT" "$RNG_CALLS") < calls0 + count)); do
    kill -0 "$SERVER" 2>/dev/null || die "the worker exited; see $WORK/worker_unit.log (KEEP=1)"
    sleep 0.05
  done
  kill -STOP "$RNG_PID"
  settle
  callgrind_control --instr=off "$SERVER" >/dev/null 2>&1 || true
  units1="$(sample "$PORT" worker_units_total)"
  kill -CONT "$RNG_PID"
  kill -TERM "$SERVER"
  wait "$SERVER" 2>/dev/null || true
  SERVER=""
  total="$(awk '/^totals:/ { print $2; exit }' "$out")"
  [[ -n "$units0" && -n "$units1" && -n "$total" ]] || die "no count for worker_unit; see $out (KEEP=1)"
  if grep -q WARN "$WORK/worker_unit.log"; then
    log "worker_unit: the worker warned; see $WORK/worker_unit.log (KEEP=1)"
  fi
  INSTRUCTIONS="$total"
  REQUESTS=$((units1 - units0))
}

# bare_client under callgrind for its whole run of COUNT units; sets
# INSTRUCTIONS and REQUESTS (the units it did).
measure_bare_client() { # measure_bare_client COUNT
  local count="$1" out units total
  out="$WORK/bare_client.$count.callgrind"
  units="$(valgrind --tool=callgrind --callgrind-out-file="$out" "$BIN_DIR/examples/bare_client" \
    "127.0.0.1:$RNG_PORT" "127.0.0.1:$HASHER_PORT" "$count" "$WORKER_CONCURRENCY" \
    2>>"$WORK/bare_client.log")" || die "bare_client failed; see $WORK/bare_client.log (KEEP=1)"
  total="$(awk '/^totals:/ { print $2; exit }' "$out")"
  [[ -n "$units" && -n "$total" ]] || die "no count for bare_client; see $out (KEEP=1)"
  INSTRUCTIONS="$total"
  REQUESTS="$units"
}

declare -A PER=()
for case_name in "${CASES[@]}"; do
  case "$case_name" in
    worker_unit | bare_client) log "$case_name: $SHORT and $LONG units, $WORKER_CONCURRENCY at a time, under callgrind" ;;
    *) log "$case_name: $SHORT and $LONG requests, $CONNECTIONS at a time, under callgrind" ;;
  esac
  measure "$case_name" "$SHORT"
  i1="$INSTRUCTIONS" r1="$REQUESTS"
  measure "$case_name" "$LONG"
  i2="$INSTRUCTIONS" r2="$REQUESTS"
  ((r2 > r1)) || die "$case_name: the long run counted no more than the short one"
  PER[$case_name]=$(((i2 - i1) / (r2 - r1)))
  what=requests
  [[ "$case_name" == worker_unit || "$case_name" == bare_client ]] && what=units
  log "$case_name: $r1 $what, $i1 instructions; $r2 $what, $i2 instructions: ${PER[$case_name]} per ${what%s}"
done

echo
echo "Instructions per request (callgrind; $LONG requests minus $SHORT, $CONNECTIONS at a time; our services at RUST_LOG=$SERVICE_LOG)"
echo
echo "| case        | ours   | bare   | ours - bare | ours ÷ bare |"
echo "|-------------|-------:|-------:|------------:|------------:|"
for pair in "hasher_get bare_get" "hasher_post bare_post" "rng_bytes bare_bytes" "webui_json bare_get" \
  "worker_unit bare_client"; do
  read -r ours bare <<<"$pair"
  [[ -n "${PER[$ours]:-}" ]] || continue
  if [[ -n "${PER[$bare]:-}" ]]; then
    printf '| %-11s | %6d | %6d | %11d | %11.2f |\n' "$ours" "${PER[$ours]}" "${PER[$bare]}" \
      $((PER[$ours] - PER[$bare])) "$(awk -v a="${PER[$ours]}" -v b="${PER[$bare]}" 'BEGIN { print a / b }')"
  else
    printf '| %-11s | %6d | %6s | %11s | %11s |\n' "$ours" "${PER[$ours]}" - - -
  fi
done
declare -A UNIT_OF=([worker_unit]=unit)
declare -A OURS=([bare_get]=hasher_get [bare_post]=hasher_post [bare_bytes]=rng_bytes [bare_client]=worker_unit)
for case_name in bare_get bare_post bare_bytes bare_client; do
  if [[ -n "${PER[$case_name]:-}" && " ${CASES[*]} " != *" ${OURS[$case_name]} "* ]]; then
    printf '| %-11s | %6s | %6d | %11s | %11s |\n' "$case_name" - "${PER[$case_name]}" - -
  fi
done
if [[ -n "${PER[worker_unit]:-}${PER[bare_client]:-}" ]]; then
  echo
  echo "worker_unit and bare_client: per unit of work (GET rng /32, POST hasher /), $WORKER_CONCURRENCY at a time;"
  echo "the worker with WORKER_CONNECTION_MAX_AGE=$WORKER_CONNECTION_MAX_AGE; bare_client: the two calls on bare hyper connections"
fi
if ((TOP > 0)); then
  for case_name in "${CASES[@]}"; do
    [[ "$case_name" == bare_* ]] && continue
    echo
    echo "$case_name: the $TOP functions that cost the most (self, $LONG-${UNIT_OF[$case_name]:-request} run)"
    callgrind_annotate --inclusive=no --threshold=100 "$WORK/$case_name.$LONG.callgrind" 2>/dev/null |
      awk -v top="$TOP" '/^-+$/ { section++ } section >= 3 && /[0-9]/ && /\(/ && shown++ < top { print }'
  done
fi
