#!/usr/bin/env bash
# The highly available Redis under Docker Compose: the primary killed 5 times.
#
# Under a Compose project of its own, starts compose.yaml with compose.ha.yaml
# (a primary, two replicas, three Sentinels) and two workers. Then, 5 times in
# a row: finds the primary through a Sentinel, SIGKILLs its container
# (`docker kill`, its restart policy off meanwhile, as a node lost), waits for the Sentinels to name another primary and for
# `hashes` to rise again, starts the killed container again (it comes back as
# a replica) and waits for the new primary to have both replicas. Finally it
# stops the workers (SIGTERM) and checks: the units the workers did == the
# units they say Redis took == `hashes` on the last primary, exactly; the
# coins they found == the wallet's entries; each worker and the web UI logged
# every change of primary. Prints the failover and resume times of each kill.
# Between the two, the restarts the topology must survive with its restart
# policies on:
#   - the primary (a promoted replica by then) crashes twice (its process
#     SIGKILLed from the host: Docker's restart policy starts it again at
#     once): counting resumes within the worst resume time of the kills, it
#     comes back as the primary or as the Sentinels' primary's replica (never
#     `redis`'s, unless `redis` is the primary), and `hashes` never goes back;
#   - the three Sentinels recreated at once after a failover (`up -d
#     --force-recreate`, as after an edit of their block): they name the same
#     primary as before, and a kill of that primary is still followed by a
#     failover and counting again, without a person.
# Everything the project created is removed on exit (images are kept).
#
# Usage: scripts/test/suites/compose-faults/compose-ha.sh
# Env:   WEBUI_PORT, RNG_PORT, HASHER_PORT  published ports (default 23890, 23891, 23892)
#        TAG          tag of the images used (default latest; built by `up` if missing)
#        HA_PROJECT   Compose project name (default dockercoins-ha-<pid>)
#        KILLS        how many times the primary is killed (default 5)
#        SKIP_SEED=1  do not run seed-images.sh / compose-plugin.sh
# Checks and the cleanup are functions called indirectly; shellcheck cannot see those calls.
# shellcheck disable=SC2317
set -euo pipefail

usage() { echo "usage: $0   (kills the Redis primary under Compose with compose.ha.yaml and checks nothing is lost; see the header for env knobs)"; }
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
export WEBUI_PORT="${WEBUI_PORT:-23890}"
export RNG_PORT="${RNG_PORT:-23891}"
export HASHER_PORT="${HASHER_PORT:-23892}"
export TAG="${TAG:-latest}"
PROJECT="${HA_PROJECT:-dockercoins-ha-$$}"
KILLS="${KILLS:-5}"
SKIP_SEED="${SKIP_SEED:-0}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/dockercoins-ha.XXXXXX")"
STARTED=$SECONDS
TEST_NAME=compose-ha
# shellcheck source=scripts/test/lib/lib.sh
source "$ROOT/scripts/test/lib/lib.sh"
declare -a SUMMARY=()

compose() { docker compose -p "$PROJECT" -f "$ROOT/compose.yaml" -f "$ROOT/compose.ha.yaml" "$@"; }

cleanup() {
  local rc=$?
  set +e
  log "removing project $PROJECT (containers, networks, volumes)"
  compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1
  rm -rf "$WORK"
  return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

summary() {
  echo
  echo "=== DockerCoins Compose HA summary (project $PROJECT) ==="
  local line
  for line in "${SUMMARY[@]}"; do echo "  $line"; done
  echo "  whole run: $((SECONDS - STARTED)) s"
  echo "$PASSED passed, $FAILED failed"
}
abort() { fail "$*"; compose logs --tail 20 >&2 || true; finish; }

# shellcheck source=scripts/test/lib/compose-lib.sh
source "$ROOT/scripts/test/lib/compose-lib.sh"
compose_prerequisites

# The primary's Compose service as the Sentinels name it (empty if none answers).
primary() {
  local sentinel
  for sentinel in sentinel-1 sentinel-2 sentinel-3; do
    if compose exec -T "$sentinel" redis-cli -p 26379 sentinel get-master-addr-by-name mymaster 2>/dev/null | head -n 1; then
      return 0
    fi
  done
}
# `redis-cli ARGS` on the Redis service $1.
on() { local service="$1"; shift; compose exec -T "$service" redis-cli "$@" 2>/dev/null | tr -d '\r'; }
# `hashes` as the web UI reads it (empty if it answers no 200).
webui_hashes() { curl -fs --max-time 2 "http://127.0.0.1:$WEBUI_PORT/json" | jq -er '.hashes' 2>/dev/null; }
# Waits up to $2 s until `hashes`, read by the web UI, exceeds $1.
wait_hashes_above() {
  local floor="$1" deadline=$((SECONDS + $2)) h
  while ((SECONDS < deadline)); do
    h="$(webui_hashes)" || h=""
    [[ "$h" =~ ^[0-9]+$ ]] && ((h > floor)) && return 0
    sleep 0.2
  done
  return 1
}
# Waits up to $2 s until the Sentinels name a primary other than $1; prints it.
wait_new_primary() {
  local old="$1" deadline=$((SECONDS + $2)) new=""
  while ((SECONDS < deadline)); do
    new="$(primary)"
    [[ -n "$new" && "$new" != "$old" ]] && { echo "$new"; return 0; }
    sleep 0.2
  done
  return 1
}
# Waits up to $2 s until the primary $1 has both replicas online.
wait_replicas() {
  local deadline=$((SECONDS + $2))
  while ((SECONDS < deadline)); do
    [[ "$(on "$1" info replication | grep -c '^slave[0-9]*:.*state=online')" -eq 2 ]] && return 0
    sleep 0.5
  done
  return 1
}

# --- up ------------------------------------------------------------------------------

log "docker compose -f compose.yaml -f compose.ha.yaml up -d --scale worker=2 (project $PROJECT)"
compose up -d --scale worker=2 >"$WORK/up.log" 2>&1 || { tail -n 30 "$WORK/up.log" >&2; abort "docker compose up"; }
wait_healthy 120 || abort "the containers did not become healthy within 120 s"
wait_hashes_above 0 60 || abort "no hash counted within 60 s"
first="$(primary)"
check "the Sentinels name the primary: ${first:-none}" test "$first" = redis
wait_replicas "$first" 60 || abort "the primary has not both replicas online within 60 s"
pass "mining through the Sentinels' primary, with 2 replicas online"

# --- the primary killed, KILLS times ----------------------------------------------------------

worst_resume=0

for round in $(seq 1 "$KILLS"); do
  old="$(primary)"
  [[ -n "$old" ]] || abort "kill $round: no Sentinel names a primary"
  id="$(compose ps -q "$old")"
  before="$(webui_hashes || echo 0)"
  # Killed and kept down, as a lost node: its restart policy would bring it
  # back within a second, before the Sentinels call it down.
  docker update --restart no "$id" >/dev/null
  t0="$(now)"
  docker kill "$id" >/dev/null
  new="$(wait_new_primary "$old" 60)" || abort "kill $round: no new primary within 60 s of killing $old"
  promoted="$(elapsed "$t0" "$(now)")"
  wait_hashes_above "$before" 60 || abort "kill $round: nothing counted within 60 s of killing $old"
  resumed="$(elapsed "$t0" "$(now)")"
  awk -v r="$resumed" -v w="$worst_resume" 'BEGIN { exit !(r > w) }' && worst_resume="$resumed"
  pass "kill $round: $old killed, $new promoted after $promoted s, counting again after $resumed s"
  SUMMARY+=("kill $round: $old -> $new: new primary after $promoted s, hashes rising again after $resumed s")
  # The killed container comes back, as a replica of the new primary.
  docker update --restart unless-stopped "$id" >/dev/null
  [[ "$(docker inspect -f '{{.State.Running}}' "$id")" == true ]] || docker start "$id" >/dev/null
  wait_replicas "$new" 90 || abort "kill $round: $new has not both replicas online within 90 s"
done

# --- the primary crashes, restart policy on, twice -------------------------------------------

# The Redis service $1 is the primary, or a replica of the primary the Sentinels name.
in_topology() {
  local role master named
  role="$(on "$1" role | head -n 1)"
  named="$(primary)"
  [[ "$role" == master ]] && [[ "$named" == "$1" ]] && return 0
  master="$(on "$1" role | sed -n 2p)"
  [[ "$role" == slave && "$master" == "$named" ]]
}

for round in 1 2; do
  crashed="$(primary)"
  [[ -n "$crashed" ]] || abort "crash $round: no Sentinel names a primary"
  id="$(compose ps -q "$crashed")"
  restarts_before="$(docker inspect -f '{{.RestartCount}}' "$id")"
  before="$(webui_hashes || echo 0)"
  t0="$(now)"
  # A crash, not a stop: the process killed from the host, so the restart
  # policy applies (`docker kill` counts as a stop by hand).
  kill -KILL "$(docker inspect -f '{{.State.Pid}}' "$id")"
  deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)) && [[ "$(docker inspect -f '{{.RestartCount}}' "$id")" == "$restarts_before" ]]; do sleep 0.1; done
  check "crash $round: Docker's restart policy started $crashed again" \
    test "$(docker inspect -f '{{.RestartCount}}' "$id")" -gt "$restarts_before"
  wait_hashes_above "$before" 60 || abort "crash $round: nothing counted within 60 s of the crash of $crashed"
  resumed="$(elapsed "$t0" "$(now)")"
  check "crash $round: counting again after $resumed s (the kills' worst: $worst_resume s)" \
    awk -v r="$resumed" -v w="$worst_resume" 'BEGIN { exit !(r <= w + 1) }'
  after="$(webui_hashes || echo 0)"
  check "crash $round: hashes did not go back ($before -> $after)" test "$after" -ge "$before"
  wait_replicas "$(primary)" 90 || abort "crash $round: the primary has not both replicas online within 90 s"
  check "crash $round: $crashed came back as the primary or the primary's replica ($(on "$crashed" role | head -n 2 | paste -sd ' ' -); primary $(primary))" \
    in_topology "$crashed"
  SUMMARY+=("crash $round of the primary $crashed (restart policy on): counting again after $resumed s; now $(on "$crashed" role | head -n 1), primary $(primary)")
done

# --- the three Sentinels recreated after a failover ---------------------------------------------

current="$(primary)"
if [[ "$current" == redis ]]; then
  compose exec -T sentinel-1 redis-cli -p 26379 sentinel failover mymaster >/dev/null 2>&1 || true
  current="$(wait_new_primary redis 60)" || abort "no failover away from redis within 60 s"
  wait_replicas "$current" 90 || abort "$current has not both replicas online within 90 s"
fi
log "the three Sentinels recreated (up -d --force-recreate) while $current is the primary"
compose up -d --force-recreate --no-deps sentinel-1 sentinel-2 sentinel-3 >"$WORK/recreate.log" 2>&1 ||
  { tail -n 20 "$WORK/recreate.log" >&2; abort "recreating the Sentinels"; }
wait_healthy 60 || abort "the Sentinels did not become healthy within 60 s"
views="$(for s in sentinel-1 sentinel-2 sentinel-3; do compose exec -T "$s" redis-cli -p 26379 sentinel get-master-addr-by-name mymaster 2>/dev/null | head -n 1; done | paste -sd ' ' -)"
check "the recreated Sentinels name the same primary ($views; before: $current)" test "$views" = "$current $current $current"
before="$(webui_hashes || echo 0)"
wait_hashes_above "$before" 30 || abort "nothing counted within 30 s of recreating the Sentinels"
pass "counting goes on after the Sentinels were recreated"
# They can still fail over: the primary killed and kept down, as in the kills above.
id="$(compose ps -q "$current")"
docker update --restart no "$id" >/dev/null
t0="$(now)"
docker kill "$id" >/dev/null
new="$(wait_new_primary "$current" 60)" || abort "the recreated Sentinels promoted no replica within 60 s"
before="$(webui_hashes || echo 0)"
wait_hashes_above "$before" 60 || abort "nothing counted within 60 s of the failover by the recreated Sentinels"
check "the recreated Sentinels fail over: $current -> $new, counting again after $(elapsed "$t0" "$(now)") s" true
SUMMARY+=("Sentinels recreated with $current the primary: they named it; then $current killed -> $new, counting again after $(elapsed "$t0" "$(now)") s")
docker update --restart unless-stopped "$id" >/dev/null
docker start "$id" >/dev/null
wait_replicas "$new" 90 || abort "$new has not both replicas online within 90 s"

# --- the invariants -------------------------------------------------------------------------

log "workers: docker compose stop (SIGTERM), then units done vs hashes"
compose stop worker >/dev/null 2>&1
last="$(primary)"
total="$(on "$last" get hashes)"
wallet="$(on "$last" hlen wallet)"
compose logs --no-color --no-log-prefix worker >"$WORK/worker.log" 2>&1
compose logs --no-color --no-log-prefix webui >"$WORK/webui.log" 2>&1
lines="$(grep -o '[0-9]* units of work done in all, [0-9]* counted in redis, [0-9]* not confirmed by a replica, [0-9]* lost' "$WORK/worker.log" || true)"
units="$(awk '{ s += $1 } END { print s + 0 }' <<<"$lines")"
counted="$(awk '{ s += $8 } END { print s + 0 }' <<<"$lines")"
lost="$(awk 'NF { s += $12 + $(NF - 1) } END { print s + 0 }' <<<"$lines")"
coins="$(grep -c 'Coin found: ' "$WORK/worker.log" || true)"
batches="$(grep -o 'batches: .*' "$WORK/worker.log" | paste -sd ';' - || true)"
restarts="$(for id in $(compose ps -aq worker); do docker inspect -f '{{.RestartCount}}' "$id"; done | awk '{ s += $1 } END { print s + 0 }')"
[[ -n "$lines" ]] || { echo "the workers' last lines:" >&2; tail -n 5 "$WORK/worker.log" >&2; }
check "both workers said how much they did ($(grep -c . <<<"$lines") summary lines, $restarts restarts)" \
  test "$(grep -c . <<<"$lines")" -eq 2 -a "$restarts" -eq 0
check "invariant: units the workers did ($units) == counted by them ($counted) == hashes on the primary ($total), none unconfirmed or lost ($lost)" \
  test "$units" -eq "$counted" -a "$units" -eq "${total:-0}" -a "$lost" -eq 0
check "invariant: coins the workers found ($coins) == wallet entries ($wallet)" test "$coins" -eq "${wallet:--1}"
changes="$(grep -c 'redis primary changed: ' "$WORK/worker.log" || true)"
check "the workers logged each change of primary ($changes lines for 2 workers, $KILLS kills)" test "$changes" -ge $((2 * KILLS))
webui_changes="$(grep -c 'redis primary changed: ' "$WORK/webui.log" || true)"
check "the web UI logged each change of primary ($webui_changes lines)" test "$webui_changes" -ge "$KILLS"
SUMMARY+=("2 workers through $KILLS kills of the primary: $units units done, ${total:-?} in hashes; $coins coins, ${wallet:-?} in the wallet")
SUMMARY+=("${batches:-no batches line}")
no_panic() { ! compose logs --no-color 2>&1 | grep -q panicked; }
check "no container panicked" no_panic

finish
