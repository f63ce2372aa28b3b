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
# Not a test: a measurement for scripts/bench.sh's targets.
#
# Usage: scripts/profile.sh [CASE...]   (default: every case; cases: hasher_get
#        hasher_post rng_bytes webui_json bare_get bare_post bare_bytes)
# Env:   PORT_BASE    first of 3 loopback ports used (default 24100: redis,
#                     the server measured, spare)
#        SHORT, LONG  requests in the two runs (default 2000 and 6000)
#        CONNECTIONS  requests at a time (default 16)
#        SERVICE_LOG  RUST_LOG of our services (default info: the access log on)
#        TOP          functions listed per case of ours (default 20; 0: none)
#        BIN_DIR      binaries with their symbols (default
#                     target/profiling/release, built with strip off)
#        BUILD        1 to build BIN_DIR first (default 1)
#        KEEP         1 to keep the callgrind outputs (default 0)
# Exit:  0 measured, 2 the run could not be made.
set -euo pipefail

usage() { echo "usage: $0 [hasher_get|hasher_post|rng_bytes|webui_json|bare_get|bare_post|bare_bytes...]"; }
ALL_CASES=(hasher_get bare_get hasher_post bare_post rng_bytes bare_bytes webui_json)
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
esac
CASES=("$@")
((${#CASES[@]})) || CASES=("${ALL_CASES[@]}")
for case_name in "${CASES[@]}"; do
  [[ " ${ALL_CASES[*]} " == *" $case_name "* ]] || { usage >&2; exit 2; }
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT_BASE="${PORT_BASE:-24100}"
SHORT="${SHORT:-2000}"
LONG="${LONG:-6000}"
CONNECTIONS="${CONNECTIONS:-16}"
SERVICE_LOG="${SERVICE_LOG:-info}"
TOP="${TOP:-20}"
BIN_DIR="${BIN_DIR:-$ROOT/target/profiling/release}"
BUILD="${BUILD:-1}"
KEEP="${KEEP:-0}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/dockercoins-profile.XXXXXX")"
REDIS_PORT="$PORT_BASE"
PORT=$((PORT_BASE + 1))
SERVER=""
REDIS_PID=""

log() { echo "profile: $*" >&2; }
die() { log "$*"; exit 2; }
cleanup() {
  local rc=$?
  set +e
  [[ -z "$SERVER" ]] || { kill -TERM "$SERVER" 2>/dev/null; wait "$SERVER" 2>/dev/null; }
  [[ -z "$REDIS_PID" ]] || { kill -TERM "$REDIS_PID" 2>/dev/null; wait "$REDIS_PID" 2>/dev/null; }
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
    --target-dir "$ROOT/target/profiling" -q) || die "the build failed; fix it or set BUILD=0 and BIN_DIR"
fi
(exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && die "port $PORT is in use; set PORT_BASE"
(exec 3<>"/dev/tcp/127.0.0.1/$REDIS_PORT") 2>/dev/null && die "port $REDIS_PORT is in use; set PORT_BASE"

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
)
declare -A ENVS=(
  [hasher_get]="HASHER_DELAY=0" [hasher_post]="HASHER_DELAY=0"
  [rng_bytes]="RNG_DELAY=0 RNG_CONCURRENCY=0" [webui_json]="REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
  [bare_get]="" [bare_post]="" [bare_bytes]=""
)

for case_name in "${CASES[@]}"; do
  read -r binary _ <<<"${RUN[$case_name]}"
  [[ -x "$BIN_DIR/$binary" ]] || die "$BIN_DIR/$binary missing; set BIN_DIR or BUILD=1"
done
if [[ " ${CASES[*]} " == *" webui_json "* ]]; then
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
  redis-cli -p "$REDIS_PORT" set hashes 0 >/dev/null || die "redis-server not answering"
fi

# Runs CASE under callgrind with COUNT requests; sets INSTRUCTIONS and
# REQUESTS (the answers with status 200).
INSTRUCTIONS=0
REQUESTS=0
measure() { # measure CASE COUNT
  local case_name="$1" count="$2" binary ready path method out requests total
  local -a post=()
  read -r binary ready path method <<<"${RUN[$case_name]}"
  [[ "$method" == get ]] ||
    post=(--data-binary "@$WORK/body32" -H "Content-Type: application/octet-stream")
  out="$WORK/$case_name.$count.callgrind"
  # shellcheck disable=SC2086 # ENVS holds words
  env PORT="$PORT" INSTANCE=profile RUST_LOG="$SERVICE_LOG" ${ENVS[$case_name]} \
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
    "$BIN_DIR/$binary" >>"$WORK/$case_name.log" 2>&1 &
  SERVER=$!
  for _ in $(seq 600); do
    http_status "$ready"
    [[ "$STATUS" == 200 ]] && break
    kill -0 "$SERVER" 2>/dev/null || die "$case_name exited at start; see $WORK/$case_name.log (KEEP=1)"
    sleep 0.1
  done
  [[ "$STATUS" == 200 ]] || die "$case_name not ready after 60 s under valgrind"
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

declare -A PER=()
for case_name in "${CASES[@]}"; do
  log "$case_name: $SHORT and $LONG requests, $CONNECTIONS at a time, under callgrind"
  measure "$case_name" "$SHORT"
  i1="$INSTRUCTIONS" r1="$REQUESTS"
  measure "$case_name" "$LONG"
  i2="$INSTRUCTIONS" r2="$REQUESTS"
  ((r2 > r1)) || die "$case_name: the long run answered no more requests than the short one"
  PER[$case_name]=$(((i2 - i1) / (r2 - r1)))
  log "$case_name: $r1 requests, $i1 instructions; $r2 requests, $i2 instructions: ${PER[$case_name]} per request"
done

echo
echo "Instructions per request (callgrind; $LONG requests minus $SHORT, $CONNECTIONS at a time; our services at RUST_LOG=$SERVICE_LOG)"
echo
echo "| case        | ours   | bare   | ours - bare | ours ÷ bare |"
echo "|-------------|-------:|-------:|------------:|------------:|"
for pair in "hasher_get bare_get" "hasher_post bare_post" "rng_bytes bare_bytes" "webui_json bare_get"; do
  read -r ours bare <<<"$pair"
  [[ -n "${PER[$ours]:-}" ]] || continue
  if [[ -n "${PER[$bare]:-}" ]]; then
    printf '| %-11s | %6d | %6d | %11d | %11.2f |\n' "$ours" "${PER[$ours]}" "${PER[$bare]}" \
      $((PER[$ours] - PER[$bare])) "$(awk -v a="${PER[$ours]}" -v b="${PER[$bare]}" 'BEGIN { print a / b }')"
  else
    printf '| %-11s | %6d | %6s | %11s | %11s |\n' "$ours" "${PER[$ours]}" - - -
  fi
done
for case_name in bare_get bare_post bare_bytes; do
  if [[ -n "${PER[$case_name]:-}" && " ${CASES[*]} " != *" ${case_name/bare/hasher} "* ]]; then
    printf '| %-11s | %6s | %6d | %11s | %11s |\n' "$case_name" - "${PER[$case_name]}" - -
  fi
done
if ((TOP > 0)); then
  for case_name in "${CASES[@]}"; do
    [[ "$case_name" == bare_* ]] && continue
    echo
    echo "$case_name: the $TOP functions that cost the most (self, $LONG-request run)"
    callgrind_annotate --inclusive=no --threshold=100 "$WORK/$case_name.$LONG.callgrind" 2>/dev/null |
      awk -v top="$TOP" '/^-+$/ { section++ } section >= 3 && /[0-9]/ && /\(/ && shown++ < top { print }'
  done
fi
