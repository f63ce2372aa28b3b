#!/usr/bin/env bash
# Process-level faults and bad input against the real binaries, natively.
#
# Starts redis-server (append-only), rng, hasher, webui and three workers on
# loopback, then: SIGKILLs Redis and restarts it, stops rng (SIGTERM) and
# hasher (SIGKILL) and restarts them, checks webui's 503 while Redis is down,
# stops the workers with SIGTERM in the middle of a unit and checks that
# `hashes` in Redis is exactly the sum of the units they did; then SIGKILLs a
# worker and checks it lost at most its unflushed second. Finally it sends bad
# input (curl --path-as-is and raw TCP), hundreds of idle and slow
# connections, and checks every service still answers, exits 0 on SIGTERM,
# and never panicked. Everything it starts is stopped on exit.
#
# Usage: scripts/test/suites/faults/faults-e2e.sh
# Env:   BIN_DIR     where rng, hasher, worker, webui are (default target/release;
#                    built with `cargo build --release` when missing)
#        PORT_BASE   first of the 8 loopback ports used (default 23600, below the kernel's
#                    ephemeral ports, where a client's connection may hold one)
#        CONNECTIONS idle and slow connections opened per service (default 300 each)
#        KEEP_LOGS=1 keep the services' logs (their directory is printed)

# Checks are functions run through check(); shellcheck cannot see those calls.
# shellcheck disable=SC2317
set -euo pipefail

usage() { echo "usage: $0   (kills and restarts the DockerCoins services natively and checks nothing is lost; see the header for env knobs)"; }
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
# Natively nothing balances connections by readiness: the services stop without
# the drain that follows SIGTERM (SHUTDOWN_DRAIN, docs/operations.md#stopping).
export SHUTDOWN_DRAIN="${SHUTDOWN_DRAIN:-0}"
BIN_DIR="${BIN_DIR:-$ROOT/target/release}"
PORT_BASE="${PORT_BASE:-23600}"
CONNECTIONS="${CONNECTIONS:-300}"
KEEP_LOGS="${KEEP_LOGS:-0}"
REDIS_PORT=$PORT_BASE
RNG_PORT=$((PORT_BASE + 1))
HASHER_PORT=$((PORT_BASE + 2))
WEBUI_PORT=$((PORT_BASE + 3))
WORK="$(mktemp -d "${TMPDIR:-/tmp}/dockercoins-faults.XXXXXX")"
STARTED=$SECONDS
TEST_NAME=faults-e2e
ELAPSED_DECIMALS=2
# shellcheck source=scripts/test/lib/lib.sh
source "$ROOT/scripts/test/lib/lib.sh"
declare -a SUMMARY=()

note() { SUMMARY+=("$*"); }
less_than() { awk -v x="$1" -v y="$2" 'BEGIN { exit !(x < y) }'; }

# shellcheck source=scripts/test/lib/native-lib.sh
source "$ROOT/scripts/test/lib/native-lib.sh"

# --- prerequisites -------------------------------------------------------------

need_tools "redis-server curl jq gawk" redis-server redis-cli curl jq awk
need_binaries worker rng hasher webui
# Room for the idle and slow connections this shell holds open.
ulimit -n 8192 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
ports_free "$PORT_BASE" $((PORT_BASE + 7))

# --- the services ----------------------------------------------------------------

start_redis() {
  mkdir -p "$WORK/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --appendonly yes --save "" \
    --dir "$WORK/redis" >>"$WORK/redis.log" 2>&1 &
  PID[redis]=$!
  local deadline=$((SECONDS + 10))
  until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}

# The units take 300 ms (150 ms in rng, 150 ms in hasher): a stop nearly
# always lands in the middle of one.
start_rng() { start rng rng "$RNG_PORT" RNG_DELAY=150ms RNG_CONCURRENCY=0; }
start_hasher() { start hasher hasher "$HASHER_PORT" HASHER_DELAY=150ms HASHER_BODY_TIMEOUT=2s; }
start_webui() { start webui webui "$WEBUI_PORT" REDIS_URL="redis://127.0.0.1:$REDIS_PORT"; }
start_worker() { # start_worker NAME PORT
  start "$1" worker "$2" RNG_URL="http://127.0.0.1:$RNG_PORT" HASHER_URL="http://127.0.0.1:$HASHER_PORT" \
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT" WORKER_SLEEP=10ms WORKER_MAX_BACKOFF=2s
}

# signal NAME SIGNAL: sends it, waits for the exit; sets EXIT_CODE and EXIT_SECONDS.
signal() {
  local name="$1" sig="$2" t0
  t0="$(now)"
  kill -s "$sig" "${PID[$name]}"
  EXIT_CODE=0
  wait "${PID[$name]}" 2>/dev/null || EXIT_CODE=$?
  EXIT_SECONDS="$(elapsed "$t0" "$(now)")"
  unset "PID[$name]"
}

exited_0_fast() { [[ "$EXIT_CODE" == 0 ]] && less_than "$EXIT_SECONDS" 1; }
hashes() { local h; h="$(redis-cli -p "$REDIS_PORT" get hashes 2>/dev/null)" || return 1; echo "${h:-0}"; }
redis_up() { redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; }

# wait_hashes_above FLOOR SECONDS: prints how long it took, or fails.
wait_hashes_above() {
  local floor="$1" t0 h
  t0="$(now)"
  while less_than "$(elapsed "$t0" "$(now)")" "$2"; do
    h="$(hashes)"
    if [[ -n "$h" ]] && ((h > floor)); then
      elapsed "$t0" "$(now)"
      return 0
    fi
    sleep 0.05
  done
  return 1
}

# A metric's value from a service's /metrics.
metric() { curl -fs --max-time 2 "http://127.0.0.1:${PORT[$1]}/metrics" | awk -v m="$2" '$1 == m { print $2 }'; }

# The worker's last line: "N units of work done in all, M counted in redis".
units_line() { grep -o '[0-9]* units of work done in all, [0-9]* counted in redis' "$WORK/$1.log" | tail -n 1; }

# Watches the counter every 100 ms while Redis answers; a drop is a failure.
watch_counter() {
  local last=0 h
  while :; do
    if h="$(redis-cli -p "$REDIS_PORT" get hashes 2>/dev/null)" && [[ "$h" =~ ^[0-9]+$ ]]; then
      if ((h < last)); then echo "hashes went back from $last to $h" >>"$WORK/drops"; fi
      last=$h
    fi
    sleep 0.1
  done
}

log "starting redis, rng, hasher, webui and three workers on ports $PORT_BASE-$((PORT_BASE + 6))"
start_redis || { fail "redis-server did not start"; exit 1; }
if ! { start_rng && start_hasher && start_webui; }; then
  fail "a service did not start; see $WORK"
  KEEP_LOGS=1
  exit 1
fi
for n in 1 2 3; do
  start_worker "worker$n" $((PORT_BASE + 3 + n)) || { fail "worker$n did not start"; KEEP_LOGS=1; exit 1; }
done
if took="$(wait_hashes_above 0 10)"; then
  pass "mining: the first units counted ${took} s after start"
else
  fail "no unit counted within 10 s of start"
fi
watch_counter &
WATCH=$!
PID[watch]=$WATCH

# --- Redis SIGKILL and restart --------------------------------------------------------

log "redis: SIGKILL, 3 s down, restart on the same data"
sleep 2
before="$(hashes)"
signal redis KILL
sleep 1
json="$(curl -s --max-time 5 -w ' %{http_code}' "http://127.0.0.1:$WEBUI_PORT/json" || true)"
json_error_503() { [[ "$json" == *" 503" ]] && jq -e '.error | test("redis")' <<<"${json% *}" >/dev/null; }
check "webui /json with redis down: 503 with a JSON error ($json)" json_error_503
check "webui still serves the page with redis down" curl -fs --max-time 3 -o /dev/null "http://127.0.0.1:$WEBUI_PORT/index.html"
sleep 2
alive() { local n; for n in worker1 worker2 worker3 webui; do kill -0 "${PID[$n]}" || return 1; done; }
check "workers and webui still running with redis down" alive
start_redis
after="$(hashes)"
check "the counter did not go back over the restart ($before before the kill, $after after the restart)" test "$after" -ge "$before"
if took="$(wait_hashes_above "$after" 10)"; then
  pass "counting again ${took} s after redis came back"
  note "redis SIGKILL + restart: $before -> $after, counting again after ${took} s"
else
  fail "nothing counted within 10 s of redis coming back"
fi
json_ok() { curl -fs --max-time 3 "http://127.0.0.1:$WEBUI_PORT/json" | jq -e '.hashes >= 0' >/dev/null; }
wait_json_ok() { local i; for i in $(seq 50); do json_ok && return 0; sleep 0.1; done; return 1; }
check "webui /json is 200 again" wait_json_ok
logged_outage() { grep -q "cannot update the hash counter" "$1" && grep -q "redis is back" "$1"; }
check "the workers logged the outage and the recovery" logged_outage "$WORK/worker1.log"

# --- rng SIGTERM, hasher SIGKILL, and restarts -----------------------------------------

for dependency in rng hasher; do
  sig=TERM
  [[ "$dependency" == hasher ]] && sig=KILL
  log "$dependency: SIG$sig, 3 s down, restart"
  signal "$dependency" "$sig"
  if [[ "$sig" == TERM ]]; then
    check "$dependency exited 0 on SIGTERM in ${EXIT_SECONDS} s (< 1 s)" exited_0_fast
  fi
  sleep 3
  stalled="$(hashes)"
  "start_$dependency"
  if took="$(wait_hashes_above "$stalled" 10)"; then
    pass "counting again ${took} s after $dependency came back"
    note "$dependency SIG$sig + restart: counting again after ${took} s"
  else
    fail "nothing counted within 10 s of $dependency coming back"
  fi
  check "the workers logged the $dependency outage" grep -q "$dependency at http" "$WORK/worker2.log"
done

# --- workers: SIGTERM in the middle of a unit -------------------------------------------

log "workers: SIGTERM in the middle of a unit"
sleep 2
sum=0
for n in 1 2 3; do
  # A unit is 300 ms of calls after a 10 ms pause: stop 0.1, 0.2, 0.3 s into one.
  sleep "0.$n"
  signal "worker$n" TERM
  line="$(units_line "worker$n")"
  done_units="${line%% units*}"
  counted="$(awk '{ print $(NF - 3) }' <<<"$line")"
  all_counted() { [[ -n "$done_units" && "$done_units" == "$counted" ]]; }
  check "worker$n exited 0 on SIGTERM in ${EXIT_SECONDS} s (< 1 s)" exited_0_fast
  check "worker$n counted every unit: ${line:-no summary line}" all_counted
  sum=$((sum + ${done_units:-0}))
done
total="$(hashes)"
check "invariant: units the workers did ($sum) == hashes in redis ($total)" test "$sum" -eq "$total"
note "3 workers, through every fault above, stopped with SIGTERM: $sum units done, $total in redis"

# --- a worker SIGKILLed ----------------------------------------------------------------

log "worker: SIGKILL (at most its unflushed second may be lost)"
base="$(hashes)"
start_worker worker4 $((PORT_BASE + 7))
sleep 3
u1="$(metric worker4 worker_units_total)"
sleep 2
u2="$(metric worker4 worker_units_total)"
signal worker4 KILL
sleep 1.5
counted=$(($(hashes) - base))
lost=$((${u2:-0} - counted))
# Units one second of work holds (WORKER_FLUSH_INTERVAL=1s), plus the one in
# flight at the kill.
bound="$(awk -v a="${u1:-0}" -v b="${u2:-0}" 'BEGIN { printf "%d", (b - a) / 2 + 1.999 }')"
check "SIGKILLed worker: $u2 units done, $counted counted, $lost lost (at most $bound: one second's worth)" \
  test "$lost" -ge -1 -a "$lost" -le "$bound"
note "worker SIGKILL: $u2 units done (last scrape), $counted counted, $lost lost (bound $bound)"

# --- bad input against the real binaries --------------------------------------------------

log "bad input"
# status URL [curl options...]: the status code curl got (000 if none).
status() { local url="$1"; shift; curl -s -o /dev/null --max-time 10 -w '%{http_code}' "$@" "$url" || true; }
# raw PORT REQUEST: sends REQUEST as is over TCP; prints the answer.
raw() {
  local fd answer
  exec {fd}<>"/dev/tcp/127.0.0.1/$1"
  printf '%b' "$2" >&"$fd"
  answer="$(timeout 5 cat <&"$fd" || true)"
  exec {fd}>&-
  printf '%s' "$answer"
}
raw_status() { raw "$1" "$2" | awk 'NR == 1 { print $2 }'; }
expect() { # expect CODE DESCRIPTION GOT
  check "$2: $3 (expected $1)" test "$3" = "$1"
  BAD_INPUT+=("| $2 | $3 |")
}
declare -a BAD_INPUT=()
R="http://127.0.0.1:$RNG_PORT" H="http://127.0.0.1:$HASHER_PORT" W="http://127.0.0.1:$WEBUI_PORT"
expect 404 "rng GET /abc (not an integer)" "$(status "$R/abc")"
expect 404 "rng GET /1.5 (not an integer)" "$(status "$R/1.5")"
expect 404 "rng GET /-1 (negative)" "$(status "$R/-1")"
expect 400 "rng GET /99999999999999999999999 (huge)" "$(status "$R/99999999999999999999999")"
expect 400 "rng GET /1048577 (over RNG_MAX_BYTES)" "$(status "$R/1048577")"
expect 200 "rng GET /1048576 (at RNG_MAX_BYTES)" "$(status "$R/1048576")"
expect 405 "rng POST /32" "$(status "$R/32" -X POST)"
expect 405 "hasher PUT /" "$(status "$H/" -X PUT --data-binary abc)"
expect 405 "hasher DELETE /" "$(status "$H/" -X DELETE)"
expect 404 "hasher POST /hash (wrong path)" "$(status "$H/hash" --data-binary abc)"
head -c 1048577 /dev/zero >"$WORK/big.bin"
expect 413 "hasher POST / with 1 MiB + 1 byte" "$(status "$H/" --data-binary "@$WORK/big.bin")"
t0="$(now)"
got="$(raw_status "$HASHER_PORT" 'POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n0123456789')"
took="$(elapsed "$t0" "$(now)")"
expect 408 "hasher POST / whose body never ends (HASHER_BODY_TIMEOUT=2s; answered after ${took} s)" "$got"
for path in '/../../../../etc/passwd' '/%2e%2e/%2e%2e/%2e%2e/etc/passwd' '/..%2f..%2fetc/passwd' '/../Cargo.toml'; do
  expect 404 "webui GET $path (curl --path-as-is)" "$(status "$W$path" --path-as-is)"
  answer="$(raw "$WEBUI_PORT" "GET $path HTTP/1.1\\r\\nHost: w\\r\\nConnection: close\\r\\n\\r\\n")"
  expect 404 "webui GET $path (raw TCP)" "$(awk 'NR == 1 { print $2 }' <<<"$answer")"
  shows_no_file() { ! grep -qE 'root:|\[package\]' <<<"$answer"; }
  check "webui GET $path shows no file" shows_no_file
done
expect 405 "webui POST /json" "$(status "$W/json" -X POST --data '{}')"
expect 405 "webui DELETE /json" "$(status "$W/json" -X DELETE)"
printf 'X-Big: %s\r\n' "$(head -c 600000 /dev/zero | tr '\0' a)" >"$WORK/big-header"
for target in "rng GET /32 $R/32" "hasher GET / $H/" "webui GET /json $W/json"; do
  read -r name method path url <<<"$target"
  expect 431 "$name $method $path with a 600 kB header" "$(status "$url" -H "@$WORK/big-header")"
done

# --- hundreds of idle and slow connections ------------------------------------------------

# hold PORT: opens CONNECTIONS idle ones and CONNECTIONS that send half a
# request head; their descriptors go to HELD.
declare -a HELD=()
hold() {
  local i fd
  for ((i = 0; i < CONNECTIONS; i++)); do
    exec {fd}<>"/dev/tcp/127.0.0.1/$1" && HELD+=("$fd")
    exec {fd}<>"/dev/tcp/127.0.0.1/$1" && HELD+=("$fd") && printf 'GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a' >&"$fd"
  done
}
drip() { local fd; for fd in "${HELD[@]}"; do { printf 'a' >&"$fd"; } 2>/dev/null || true; done; }
release() { local fd; for fd in "${HELD[@]}"; do exec {fd}>&-; done; HELD=(); }
# served_fast URL [curl options]: 2xx in under a second.
served_fast() {
  local t
  t="$(curl -fs -o /dev/null --max-time 5 -w '%{time_total}' "$@")" && less_than "$t" 1
}
for target in "rng $RNG_PORT $R/32" "hasher $HASHER_PORT $H/" "webui $WEBUI_PORT $W/json"; do
  read -r name port url <<<"$target"
  log "$name: $CONNECTIONS idle and $CONNECTIONS slow connections"
  hold "$port"
  opened=${#HELD[@]}
  extra=()
  [[ "$name" == hasher ]] && extra=(--data-binary abc)
  drip
  t="$(curl -s -o /dev/null --max-time 5 -w '%{time_total}' "${extra[@]}" "$url" || echo 5)"
  check "$name: a normal request with $opened connections held open served in $t s (< 1 s)" served_fast "${extra[@]}" "$url"
  drip
  release
  BAD_INPUT+=("| $name: $opened idle and slow connections, then a normal request | 200 in $t s |")
done

# --- the end: everything still answers, exits 0 on SIGTERM, never panicked ------------------

log "stopping everything"
for name in rng hasher webui; do
  check "$name still healthy" curl -fs --max-time 2 -o /dev/null "http://127.0.0.1:${PORT[$name]}/healthz"
  signal "$name" TERM
  check "$name exited 0 on SIGTERM in $EXIT_SECONDS s (< 1 s)" \
    exited_0_fast
done
kill "$WATCH" 2>/dev/null || true
wait "$WATCH" 2>/dev/null || true
unset "PID[watch]"
check "the counter never went back ($(cat "$WORK/drops" 2>/dev/null || echo 'watched every 100 ms'))" test ! -s "$WORK/drops"
no_panic() { ! grep -l "panicked" "$WORK"/*.log; }
check "no service panicked" no_panic

echo
echo "=== DockerCoins native faults summary ==="
for line in "${SUMMARY[@]}"; do echo "  $line"; done
echo "  bad input (status codes from the real binaries):"
for line in "${BAD_INPUT[@]}"; do echo "    $line"; done
echo "  whole run: $((SECONDS - STARTED)) s"
echo "$PASSED passed, $FAILED failed"
((FAILED == 0))
