#!/usr/bin/env bash
# Faults with Docker Compose, and the containers' security basics.
#
# Under a Compose project of its own (published ports moved out of the way),
# starts the app with two workers and checks: our four containers run as
# non-root, with a read-only root, no capabilities (as the kernel sees them)
# and no-new-privileges; Redis is not published. Then it kills Redis
# (`docker compose kill redis`) and starts it again: the counter never goes
# back, webui answers 503 with a JSON error meanwhile, and mining resumes; it
# stops rng and starts it again; finally it stops the workers (SIGTERM) and
# checks that `hashes` in Redis is exactly the sum of the units they did.
# Everything the project created is removed on exit (images are kept).
#
# Usage: scripts/test/suites/compose-faults/compose-faults.sh
# Env:   WEBUI_PORT, RNG_PORT, HASHER_PORT  published ports (default 23880, 23881, 23882; below the kernel's ephemeral ports, 32768 and up)
#        TAG            tag of the images used (default latest; built by `up` if missing)
#        FAULTS_PROJECT Compose project name (default dockercoins-faults-<pid>)
#        RESUME_SECONDS longest accepted wait for mining to resume (default 20)
#        SKIP_SEED=1    do not run seed-images.sh / compose-plugin.sh

# Checks are functions run through check(); shellcheck cannot see those calls.
# shellcheck disable=SC2317
set -euo pipefail

usage() { echo "usage: $0   (kills Redis and rng under Docker Compose and checks nothing is lost; see the header for env knobs)"; }
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
export WEBUI_PORT="${WEBUI_PORT:-23880}"
export RNG_PORT="${RNG_PORT:-23881}"
export HASHER_PORT="${HASHER_PORT:-23882}"
export TAG="${TAG:-latest}"
PROJECT="${FAULTS_PROJECT:-dockercoins-faults-$$}"
RESUME_SECONDS="${RESUME_SECONDS:-20}"
SKIP_SEED="${SKIP_SEED:-0}"
SERVICES=(rng hasher worker webui)
WORK="$(mktemp -d "${TMPDIR:-/tmp}/dockercoins-faults.XXXXXX")"
STARTED=$SECONDS
TEST_NAME=compose-faults
# shellcheck source=scripts/test/lib/lib.sh
source "$ROOT/scripts/test/lib/lib.sh"
declare -a SUMMARY=()


compose() { docker compose -p "$PROJECT" -f "$ROOT/compose.yaml" "$@"; }

WATCH=""
cleanup() {
  local rc=$?
  set +e
  [[ -n "$WATCH" ]] && kill "$WATCH" 2>/dev/null && wait "$WATCH" 2>/dev/null
  log "removing project $PROJECT (containers, networks, volumes)"
  compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1
  rm -rf "$WORK"
  return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

finish() {
  echo
  echo "=== DockerCoins Compose faults summary (project $PROJECT) ==="
  local line
  for line in "${SUMMARY[@]}"; do echo "  $line"; done
  echo "  whole run: $((SECONDS - STARTED)) s"
  echo "$PASSED passed, $FAILED failed"
  ((FAILED == 0))
  exit
}
abort() { fail "$*"; compose logs --tail 20 >&2 || true; finish; }

# shellcheck source=scripts/test/lib/compose-lib.sh
source "$ROOT/scripts/test/lib/compose-lib.sh"
compose_prerequisites

# `hashes` as Redis holds it (empty if Redis does not answer).
hashes() { compose exec -T redis redis-cli get hashes 2>/dev/null | tr -d '[:space:]'; }

# Waits until `hashes` exceeds $1; prints the seconds it took.
wait_hashes_above() {
  local floor="$1" t0 h
  t0="$(now)"
  while awk -v t="$(elapsed "$t0" "$(now)")" -v max="$2" 'BEGIN { exit !(t < max) }'; do
    h="$(hashes)" || h=""
    if [[ "$h" =~ ^[0-9]+$ ]] && ((h > floor)); then
      elapsed "$t0" "$(now)"
      return 0
    fi
    sleep 0.2
  done
  return 1
}


# --- up ------------------------------------------------------------------------------

log "docker compose up -d --scale worker=2 (project $PROJECT, ports $WEBUI_PORT/$RNG_PORT/$HASHER_PORT)"
compose up -d --scale worker=2 >"$WORK/up.log" 2>&1 || { tail -n 30 "$WORK/up.log" >&2; abort "docker compose up"; }
wait_healthy 120 || abort "the containers did not become healthy within 120 s"
wait_hashes_above 0 60 >/dev/null || abort "no hash counted within 60 s"
pass "mining: first hashes counted"

# --- security basics -------------------------------------------------------------------

log "security basics (docker inspect, and the kernel's view of each process)"
for svc in "${SERVICES[@]}"; do
  for id in $(compose ps -q "$svc"); do
    name="$(docker inspect -f '{{.Name}}' "$id")"
    user="$(docker inspect -f '{{.Config.User}}' "$id")"
    pid="$(docker inspect -f '{{.State.Pid}}' "$id")"
    uids="$(awk '$1 == "Uid:" { print $2, $3, $4, $5 }' "/proc/$pid/status")"
    caps="$(awk '$1 ~ /^Cap(Inh|Prm|Eff|Bnd|Amb):$/ { printf "%s%s ", $1, $2 }' "/proc/$pid/status")"
    non_root() { [[ -n "$user" && "${user%%:*}" != 0 && "${user%%:*}" != root ]] && ! grep -qw 0 <<<"$uids"; }
    check "$name runs as non-root (User $user; uids $uids)" non_root
    no_caps() { [[ "$caps" =~ CapEff:0000000000000000 && "$caps" =~ CapPrm:0000000000000000 && "$caps" =~ CapBnd:0000000000000000 ]]; }
    check "$name has no capabilities ($caps)" no_caps
    hardened() {
      [[ "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}} {{json .HostConfig.CapDrop}} {{json .HostConfig.CapAdd}} {{.HostConfig.Privileged}} {{json .HostConfig.SecurityOpt}}' "$id")" \
        == 'true ["ALL"] null false ["no-new-privileges:true"]' ]]
    }
    check "$name: read-only root, cap_drop ALL, none added, not privileged, no-new-privileges" hardened
  done
done
redis_id="$(compose ps -q redis)"
check "redis publishes no port (docker port is empty)" test -z "$(docker port "$redis_id")"
no_redis_ports() { [[ "$(compose config --format json | jq -c '.services.redis.ports // []')" == "[]" ]]; }
check "compose.yaml gives redis no ports:" no_redis_ports

# --- the counter watch ------------------------------------------------------------------

# Reads /json every 0.2 s; any drop of `hashes` is written to $WORK/drops.
(
  last=0
  while :; do
    if h="$(curl -fs --max-time 2 "http://127.0.0.1:$WEBUI_PORT/json" | jq -er '.hashes')" && ((h < last)); then
      echo "hashes went back from $last to $h" >>"$WORK/drops"
    fi
    [[ "${h:-}" =~ ^[0-9]+$ ]] && ((h > last)) && last=$h
    sleep 0.2
  done
) 2>/dev/null &
WATCH=$!

# --- Redis: docker compose kill + start ------------------------------------------------------

log "redis: docker compose kill, 3 s down, docker compose start"
sleep 3
before="$(hashes)"
compose kill redis >/dev/null 2>&1
sleep 1
json="$(curl -s --max-time 5 -w ' %{http_code}' "http://127.0.0.1:$WEBUI_PORT/json" || true)"
json_503() { [[ "$json" == *" 503" ]] && jq -e '.error | test("redis")' <<<"${json% *}" >/dev/null; }
check "webui /json with redis killed: 503 with a JSON error (${json:0:100})" json_503
sleep 2
running() { [[ "$(compose ps --status running -q "${SERVICES[@]}" | wc -l)" -eq 5 ]]; }
check "rng, hasher, webui and both workers still running with redis down" running
t0="$(now)"
compose start redis >/dev/null 2>&1
# The first answer of the restarted Redis: what its append-only file kept.
after=""
while [[ ! "$after" =~ ^[0-9]+$ ]] && awk -v t="$(elapsed "$t0" "$(now)")" 'BEGIN { exit !(t < 60) }'; do
  after="$(hashes)" || after=""
  sleep 0.1
done
check "the counter did not go back: $before before the kill, ${after:-none} when redis answered again (append-only file)" \
  test "${after:-0}" -ge "${before:-1}"
if wait_hashes_above "${after:-0}" "$RESUME_SECONDS" >/dev/null; then
  resumed="$(elapsed "$t0" "$(now)")"
  pass "mining resumed: hashes rose $resumed s after 'docker compose start redis'"
  SUMMARY+=("redis killed + started: $before -> $after, counting again $resumed s after start")
else
  fail "nothing counted within $RESUME_SECONDS s of redis coming back"
fi
wait_healthy 60 redis || fail "redis not healthy within 60 s of start"
json_ok() { curl -fs --max-time 3 "http://127.0.0.1:$WEBUI_PORT/json" | jq -e '.hashes >= 0' >/dev/null; }
check "webui /json is 200 again" json_ok

# --- rng: stop + start -------------------------------------------------------------------

log "rng: docker compose stop, 3 s down, docker compose start"
compose stop rng >/dev/null 2>&1
sleep 3
stalled="$(hashes)"
t0="$(now)"
compose start rng >/dev/null 2>&1
if wait_hashes_above "${stalled:-0}" "$RESUME_SECONDS" >/dev/null; then
  resumed="$(elapsed "$t0" "$(now)")"
  pass "mining resumed $resumed s after 'docker compose start rng'"
  SUMMARY+=("rng stopped + started: counting again $resumed s after start")
else
  fail "nothing counted within $RESUME_SECONDS s of rng coming back"
fi
sleep 2

# --- the invariant ------------------------------------------------------------------------

log "workers: docker compose stop (SIGTERM), then units done vs hashes"
compose stop worker >/dev/null 2>&1
total="$(hashes)"
compose logs --no-color --no-log-prefix worker >"$WORK/worker.log" 2>&1
lines="$(grep -o '[0-9]* units of work done in all, [0-9]* counted in redis' "$WORK/worker.log" || true)"
units="$(awk '{ s += $1 } END { print s + 0 }' <<<"$lines")"
counted="$(awk '{ s += $(NF - 3) } END { print s + 0 }' <<<"$lines")"
restarts="$(for id in $(compose ps -aq worker); do docker inspect -f '{{.RestartCount}}' "$id"; done | awk '{ s += $1 } END { print s + 0 }')"
check "both workers said how much they did ($(wc -l <<<"$lines") summary lines, $restarts restarts)" \
  test "$(grep -c . <<<"$lines")" -eq 2 -a "$restarts" -eq 0
check "invariant: units the workers did ($units) == counted by them ($counted) == hashes in redis ($total)" \
  test "$units" -eq "$counted" -a "$units" -eq "${total:-0}"
SUMMARY+=("2 workers through both faults, stopped with SIGTERM: $units units done, ${total:-?} in redis")
kill "$WATCH" 2>/dev/null || true
wait "$WATCH" 2>/dev/null || true
WATCH=""
check "the counter never went back ($(cat "$WORK/drops" 2>/dev/null || echo 'read every 0.2 s'))" test ! -s "$WORK/drops"
no_panic() { ! compose logs --no-color 2>&1 | grep -q panicked; }
check "no container panicked" no_panic

finish
