#!/usr/bin/env bash
# End-to-end test of the Swarm chapter's climax on a multi-node Swarm made of
# containers on this machine (scripts/cluster.sh): global rng really multiplies
# the speed.
#
# Steps: `scripts/cluster.sh up $NODES` (timed); every node joined, the
# registry's catalog lists our four images, every node's 127.0.0.1:5000 serves
# them. Then the stack is deployed with the no-IPVS test override
# (docker/swarm/swarm-override.yaml: dnsrr, host-mode ports) and ONE rng
# (scripts/test/fixtures/cluster-one-rng.yaml): 10 workers make about 10 hashes/s, and
# so do $WORKERS workers. Then the chapter's switch: `docker service rm` of rng
# and the stack deployed again, with its global rng: one rng task per node,
# each named after its node (rng-node1 answers "RNG running on rng-node1" with
# X-Instance: rng-node1), and the same $WORKERS workers make about
# $NODES x 10 hashes/s. Each rng instance's share of the requests comes from
# the workers' reports in Redis (dockercoins:report:<worker>, "rng": {instance:
# count}) over the measurement, and the web UI's cluster view (/history) lists
# the same instances. Then fewer workers ($SWEEP) with the global rng show how
# many are needed. Finally `scripts/cluster.sh down`, and nothing of the
# cluster is left: containers, network, the nodes' cgroups (unless KEEP_CLUSTER=1).
# The cluster is taken down on exit whatever happens (if this test made it),
# unless KEEP_CLUSTER=1 and the test got to its end.
#
# Rates are measured over RATE_SECONDS (>= 15) with the web UI's /json (hashes
# and its clock), after SETTLE_SECONDS.
#
# Usage: scripts/test/suites/cluster/cluster-e2e.sh
# Env:   NODES          nodes in the cluster (default 3)
#        WORKERS        workers for the 1-rng vs global-rng comparison (default 30)
#        SWEEP          further worker counts measured with the global rng (default "20 10")
#        RATE_SECONDS   length of each rate measurement (default 15)
#        SETTLE_SECONDS wait after a change before measuring (default 10)
#        RATE1_MIN/MAX  accepted rate with one rng, hashes/s (default 8.5 / 10.6)
#        RATE_N_MIN/MAX accepted rate with the global rng (default NODES x 8.5 / NODES x 10.6)
#        SHARE_MIN/MAX  accepted share of each rng instance (default 0.2 / 0.47 with 3 nodes)
#        STACK          stack name (default dockercoins)
#        TAG, BUILD     passed to scripts/cluster.sh (BUILD=auto|always|never, default auto)
#        WAIT_SECONDS   longest wait for a service to converge (default 150)
#        SKIP_SEED=1    do not run seed-images.sh / compose-plugin.sh
#        KEEP_CLUSTER=1 leave the cluster up at the end, the stack deployed ($SWEEP's
#                       last worker count), for REUSE_CLUSTER=1 scripts/test/suites/cluster/cluster-metrics.sh,
#                       which takes it down (the `cluster` suite); on an abort it is taken down
#        CLUSTER_NETWORK, CLUSTER_SUBNET, NODE_PREFIX, NODE_IMAGE: see scripts/cluster.sh

# Most checks are functions run through check(); shellcheck cannot see those calls.
# shellcheck disable=SC2317
set -euo pipefail

usage() { echo "usage: $0   (starts a $NODES-node Swarm of containers, checks that global rng multiplies the speed, takes it down; see the header for env)"; }
NODES="${NODES:-3}"
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
WORKERS="${WORKERS:-30}"
SWEEP="${SWEEP:-20 10}"
RATE_SECONDS="${RATE_SECONDS:-15}"
SETTLE_SECONDS="${SETTLE_SECONDS:-10}"
RATE1_MIN="${RATE1_MIN:-8.5}"
RATE1_MAX="${RATE1_MAX:-10.6}"
RATE_N_MIN="${RATE_N_MIN:-$(awk -v n="$NODES" 'BEGIN { print n * 8.5 }')}"
RATE_N_MAX="${RATE_N_MAX:-$(awk -v n="$NODES" 'BEGIN { print n * 10.6 }')}"
SHARE_MIN="${SHARE_MIN:-$(awk -v n="$NODES" 'BEGIN { print 0.6 / n }')}"
SHARE_MAX="${SHARE_MAX:-$(awk -v n="$NODES" 'BEGIN { print 1.4 / n }')}"
STACK="${STACK:-dockercoins}"
export TAG="${TAG:-latest}"
export BUILD="${BUILD:-auto}"
WAIT_SECONDS="${WAIT_SECONDS:-150}"
SKIP_SEED="${SKIP_SEED:-0}"
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"
export CLUSTER_NETWORK="${CLUSTER_NETWORK:-dockercoins-cluster}"
export NODE_PREFIX="${NODE_PREFIX:-node}"
CLUSTER="$ROOT/scripts/cluster.sh"
MANAGER="${NODE_PREFIX}1"
LABEL="org.dockercoins.cluster=$CLUSTER_NETWORK"
# The stack files, as paths inside the nodes (the repository is at /dockercoins there).
BASE_FILES=(-c stack.yaml -c docker/swarm/swarm-override.yaml -c scripts/test/fixtures/cluster-workers.yaml)

STARTED=$SECONDS
TEST_NAME=cluster-e2e
# shellcheck source=scripts/test/lib/lib.sh
source "$ROOT/scripts/test/lib/lib.sh"
# shellcheck source=scripts/test/lib/cluster-lib.sh
source "$ROOT/scripts/test/lib/cluster-lib.sh"
declare -A FIGURE=()
CLUSTER_CREATED=0
CLUSTER_DOWN=0
CLUSTER_KEPT=0


cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if ((CLUSTER_CREATED && !CLUSTER_DOWN && !CLUSTER_KEPT)); then
    log "cleaning up: scripts/cluster.sh down"
    "$CLUSTER" down >/dev/null
  fi
  return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- helpers ----------------------------------------------------------------------------

# A command on the manager, as an attendee logged into node1 would type it.
on_manager() { docker exec -w /dockercoins "$MANAGER" "$@"; }
node_ip() { docker inspect -f "{{(index .NetworkSettings.Networks \"$CLUSTER_NETWORK\").IPAddress}}" "$1"; }

# `docker stack deploy` on the manager; its output only if it fails.
deploy() { # workers [extra stack files...]
  local workers="$1" output
  shift
  if ! output="$(docker exec -w /dockercoins -e WORKERS="$workers" -e TAG="$TAG" "$MANAGER" \
    docker stack deploy "${BASE_FILES[@]}" "$@" "$STACK" 2>&1)"; then
    echo "$output" >&2
    return 1
  fi
}

replicas() {
  on_manager docker service ls --filter "name=$1" --format '{{.Name}} {{.Replicas}}' | awk -v n="$1" '$1 == n { print $2 }'
}
wait_converged() { # service [seconds]
  local name="$1" deadline=$((SECONDS + ${2:-$WAIT_SECONDS})) r=""
  while ((SECONDS < deadline)); do
    r="$(replicas "$name")"
    if [[ "$r" =~ ^([0-9]+)/([0-9]+)$ ]] && ((BASH_REMATCH[2] > 0 && BASH_REMATCH[1] == BASH_REMATCH[2])); then
      return 0
    fi
    sleep 1
  done
  echo "    $name: replicas ${r:-?} after ${2:-$WAIT_SECONDS} s" >&2
  on_manager docker service ps --no-trunc "$name" 2>&1 | head -n 8 >&2
  return 1
}
# Exactly $2 running tasks of a service (scaling down: the replicas column shows the goal at once).
wait_tasks() { # service count
  local deadline=$((SECONDS + WAIT_SECONDS))
  while ((SECONDS < deadline)); do
    wait_converged "$1" >/dev/null 2>&1 &&
      [[ "$(on_manager docker service ps "$1" --filter desired-state=running --format '{{.CurrentState}}' | grep -c '^Running')" -eq "$2" ]] &&
      return 0
    sleep 1
  done
  return 1
}

# The node running a service's (first) running task.
task_node() {
  on_manager docker service ps "$1" --filter desired-state=running --format '{{.Node}} {{.CurrentState}}' |
    awk '$2 == "Running" { print $1; exit }'
}
# "node=count ..." of a service's running tasks, and whether every node has exactly one.
tasks_per_node() {
  on_manager docker service ps "$1" --filter desired-state=running --format '{{.Node}} {{.CurrentState}}' |
    awk '$2 == "Running" { n[$1]++ } END { for (k in n) printf "%s=%d ", k, n[k] }' | tr ' ' '\n' | sort -V | xargs
}
one_task_per_node() {
  local want="" i
  for i in $(seq 1 "$NODES"); do want+="${NODE_PREFIX}$i=1 "; done
  [[ "$(tasks_per_node "$1")" == "${want% }" ]]
}

WEBUI=""
read_counter() { # "<hashes> <now>" from the web UI
  curl -fsS --max-time 3 "http://$WEBUI/json" 2>/dev/null | jq -er '"\(.hashes | tonumber) \(.now)"' 2>/dev/null
}
wait_counter_above() { # floor seconds
  local deadline=$((SECONDS + $2)) reading
  while ((SECONDS < deadline)); do
    if reading="$(read_counter)" && awk -v r="$reading" -v f="$1" 'BEGIN { split(r, x, " "); exit !(x[1] > f) }'; then
      echo "${reading%% *}"
      return 0
    fi
    sleep 0.5
  done
  return 1
}
# Hashes per second over RATE_SECONDS, by the web UI's counter and clock.
measure_rate() {
  local first last
  first="$(read_counter)" || return 1
  sleep "$RATE_SECONDS"
  last="$(read_counter)" || return 1
  awk -v a="$first" -v b="$last" 'BEGIN {
    split(a, x, " "); split(b, y, " ");
    if (y[2] <= x[2]) exit 1;
    printf "%.2f", (y[1] - x[1]) / (y[2] - x[2]) }'
}

# The workers' reports in Redis, summed: {"rng-node1": answers, ...} since each worker started.
rng_answers() {
  local node cid
  node="$(task_node "${STACK}_redis")" || return 1
  cid="$(docker exec "$node" docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_redis" | head -n 1)"
  [[ -n "$cid" ]] || return 1
  docker exec "$node" docker exec "$cid" sh -c \
    'redis-cli --scan --pattern "dockercoins:report:*" | xargs -r redis-cli mget' |
    jq -sc '[.[] | select(type == "object") | .rng // {} | to_entries[]]
            | group_by(.key) | map({key: .[0].key, value: (map(.value) | add)}) | from_entries'
}
# Each instance's share of the answers between two rng_answers: {"rng-node1": {"answers": n, "share": s}, ...}
SHARES="{}"
shares_between() {
  SHARES="$(jq -nc --argjson a "$1" --argjson b "$2" '
    ($b | to_entries | map({key, value: ([.value - ($a[.key] // 0), 0] | max)}) | map(select(.value > 0))) as $d
    | ($d | map(.value) | add // 0) as $total
    | $d | map({key, value: {answers: .value, share: (if $total > 0 then .value / $total else 0 end)}}) | from_entries')"
}
shares_line() { jq -r 'to_entries | map("\(.key) \(.value.share * 1000 | round / 10)% (\(.value.answers))") | join(", ")' <<<"$1"; }
expected_instances() {
  local i
  for i in $(seq 1 "$NODES"); do echo "rng-${NODE_PREFIX}$i"; done
}
shares_ok() { # shares json
  [[ "$(jq -r 'keys[]' <<<"$1" | sort -V)" == "$(expected_instances)" ]] &&
    jq -e --argjson lo "$SHARE_MIN" --argjson hi "$SHARE_MAX" 'all(.[]; .share >= $lo and .share <= $hi)' <<<"$1" >/dev/null
}

# GET / from every rng task, from a throwaway container on the stack's
# attachable overlay (tasks.rng resolves to each task's address with dnsrr).
# Prints "<x-instance> | <body>" per task.
rng_banners() {
  # shellcheck disable=SC2016
  on_manager timeout 60 docker run --rm --network "${STACK}_default" --entrypoint bash redis:7 -c '
    for ip in $(getent ahostsv4 tasks.rng | awk "{ print \$1 }" | sort -u); do
      exec 3<>"/dev/tcp/$ip/80"
      printf "GET / HTTP/1.0\r\nHost: rng\r\n\r\n" >&3
      response="$(tr -d "\r" <&3)"
      exec 3<&-
      echo "$(grep -i "^x-instance:" <<<"$response" | cut -d" " -f2) | $(tail -n 1 <<<"$response")"
    done' 2>/dev/null
}
banners_ok() {
  local banners="$1" name
  [[ "$(wc -l <<<"$banners")" -eq "$NODES" ]] || return 1
  for name in $(expected_instances); do
    grep -qx "$name | RNG running on $name" <<<"$banners" || return 1
  done
}

rate_check() { # figure-key description min max
  local rate
  sleep "$SETTLE_SECONDS"
  if rate="$(measure_rate)"; then
    FIGURE[$1]="$rate"
    check "$2: $rate hashes/s (expected $3..$4)" between "$rate" "$3" "$4"
  else
    fail "$2: could not read the web UI's counter at $WEBUI"
  fi
}

summary() {
  local w
  echo
  echo "=== DockerCoins cluster e2e summary ($NODES nodes as containers, stack $STACK) ==="
  printf '  %-52s %s\n' \
    "cluster start (scripts/cluster.sh up $NODES)" "${FIGURE[up]:-?} s${FIGURE[image_note]:-}" \
    "stack deploy -> first counted hash" "${FIGURE[first_hash]:-?} s" \
    "1 rng, 10 workers" "${FIGURE[one_10]:-?} hashes/s" \
    "1 rng, $WORKERS workers" "${FIGURE[one_w]:-?} hashes/s" \
    "rng rm + stack deploy -> global rng converged" "${FIGURE[switch]:-?} s" \
    "rng tasks per node (global)" "${FIGURE[rng_nodes]:-?}" \
    "$NODES global rng, $WORKERS workers" "${FIGURE[global_w]:-?} hashes/s (${FIGURE[speedup]:-?})" \
    "  each rng's share of requests (Redis reports)" "${FIGURE[shares]:-?}" \
    "  each rng's share (web UI cluster view)" "${FIGURE[webui_shares]:-?}"
  for w in $SWEEP; do
    printf '  %-52s %s\n' "$NODES global rng, $w workers" "${FIGURE[global_$w]:-?} hashes/s"
  done
  printf '  %-52s %s\n' \
    "fewest workers measured reaching $RATE_N_MIN hashes/s" "${FIGURE[needed]:-?}" \
    "scripts/cluster.sh down" "$(if ((CLUSTER_KEPT)); then echo "kept up (KEEP_CLUSTER=1)"; else echo "${FIGURE[down]:-?} s"; fi)" \
    "whole e2e run" "$((SECONDS - STARTED)) s"
  echo "$PASSED passed, $FAILED failed"
}

# --- prerequisites ---------------------------------------------------------------------------

for tool in docker curl jq awk timeout; do
  command -v "$tool" >/dev/null || { echo "cluster-e2e: $tool is missing; install it (apt-get install -y $tool)" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "cluster-e2e: cannot talk to the Docker engine; is dockerd running?" >&2; exit 1; }
((RATE_SECONDS >= 15)) || { echo "cluster-e2e: RATE_SECONDS must be at least 15" >&2; exit 2; }
if [[ -n "$(docker ps -aq --filter "label=$LABEL")" ]] || docker network inspect "$CLUSTER_NETWORK" >/dev/null 2>&1; then
  echo "cluster-e2e: a cluster is up already on $CLUSTER_NETWORK; take it down (scripts/cluster.sh down) or set CLUSTER_NETWORK/CLUSTER_SUBNET/NODE_PREFIX, then re-run" >&2
  exit 1
fi
if [[ "$SKIP_SEED" != 1 ]]; then
  "$ROOT/scripts/test/lib/compose-plugin.sh"
  "$ROOT/scripts/test/lib/seed-images.sh"
fi

# --- the cluster -------------------------------------------------------------------------------

if ! docker image inspect "${NODE_IMAGE:-dockercoins-node:bookworm-1}" >/dev/null 2>&1; then
  log "building the node image first (debootstrap, cached afterwards)"
  t0=$SECONDS
  "$CLUSTER" image || abort "scripts/cluster.sh image"
  FIGURE[image_note]=" (after building the node image: $((SECONDS - t0)) s)"
fi
log "scripts/cluster.sh up $NODES"
CLUSTER_CREATED=1
t0=$SECONDS
if "$CLUSTER" up "$NODES" > >(sed 's/^/    /'); then
  FIGURE[up]=$((SECONDS - t0))
  pass "scripts/cluster.sh up $NODES: the cluster started in ${FIGURE[up]} s"
else
  abort "scripts/cluster.sh up $NODES"
fi

nodes_ready() {
  local want="" i
  for i in $(seq 1 "$NODES"); do want+="${NODE_PREFIX}$i Ready Active "; done
  [[ "$(on_manager docker node ls --format '{{.Hostname}} {{.Status}} {{.Availability}}' | sort -V | xargs)" == "${want% }" ]] &&
    [[ "$(on_manager docker node ls --filter role=manager --format '{{.Hostname}}')" == "$MANAGER" ]]
}
check "$NODES nodes Ready and Active, $MANAGER the only manager" nodes_ready
pulls_everywhere() {
  local i svc
  for i in $(seq 1 "$NODES"); do
    for svc in hasher rng webui worker; do
      docker exec "${NODE_PREFIX}$i" curl -fsS --max-time 5 "http://127.0.0.1:5000/v2/$svc/tags/list" |
        jq -e --arg t "$TAG" '.tags | index($t)' >/dev/null || return 1
    done
  done
}
check "every node's 127.0.0.1:5000 serves 127.0.0.1:5000/{hasher,rng,webui,worker}:$TAG" pulls_everywhere

# --- one rng ----------------------------------------------------------------------------------

log "stack deploy with ONE rng (swarm-override.yaml, cluster-one-rng.yaml), 10 workers"
t0=$SECONDS
deploy 10 -c scripts/test/fixtures/cluster-one-rng.yaml || abort "docker stack deploy (one rng)"
converged_all() {
  local svc
  for svc in redis hasher rng webui worker; do wait_converged "${STACK}_$svc" || return 1; done
}
if converged_all; then
  pass "every service converged (rng $(replicas "${STACK}_rng"), worker $(replicas "${STACK}_worker"))"
else
  fail "every service converged"
fi
webui_node="$(task_node "${STACK}_webui")" || true
[[ -n "$webui_node" ]] || abort "the web UI runs on no node"
WEBUI="$(node_ip "$webui_node"):8000"
log "web UI on $webui_node: http://$WEBUI/"
if first="$(wait_counter_above 0 "$WAIT_SECONDS")"; then
  FIGURE[first_hash]=$((SECONDS - t0))
  pass "first hash counted ${FIGURE[first_hash]} s after 'stack deploy' (hashes=$first)"
else
  abort "no hash counted within $WAIT_SECONDS s of 'stack deploy'"
fi
check "one rng task ($(tasks_per_node "${STACK}_rng"))" test "$(replicas "${STACK}_rng")" = 1/1
rate_check one_10 "1 rng, 10 workers" "$RATE1_MIN" "$RATE1_MAX"

log "docker service scale ${STACK}_worker=$WORKERS (still one rng)"
on_manager docker service scale --detach "${STACK}_worker=$WORKERS" >/dev/null
check "$WORKERS workers running" wait_tasks "${STACK}_worker" "$WORKERS"
rate_check one_w "1 rng, $WORKERS workers" "$RATE1_MIN" "$RATE1_MAX"

# --- global rng --------------------------------------------------------------------------------

log "docker service rm ${STACK}_rng; stack deploy again: the stack's global rng"
t0=$SECONDS
on_manager docker service rm "${STACK}_rng" >/dev/null
deadline=$((SECONDS + WAIT_SECONDS))
while on_manager docker service inspect "${STACK}_rng" >/dev/null 2>&1 && ((SECONDS < deadline)); do sleep 1; done
deploy "$WORKERS" || abort "docker stack deploy (global rng)"
if wait_converged "${STACK}_rng" && one_task_per_node "${STACK}_rng"; then
  FIGURE[switch]=$((SECONDS - t0))
  pass "rng is global after ${FIGURE[switch]} s"
else
  fail "rng is global"
fi
FIGURE[rng_nodes]="$(tasks_per_node "${STACK}_rng")"
check "one rng task per node (${FIGURE[rng_nodes]})" one_task_per_node "${STACK}_rng"
check "still $WORKERS workers after the deploy" wait_tasks "${STACK}_worker" "$WORKERS"
banners="$(rng_banners || true)"
while IFS= read -r line; do echo "    X-Instance: $line"; done <<<"$banners"
check "each rng task answers GET / with its node in its name (rng-${NODE_PREFIX}N)" banners_ok "$banners"

sleep "$SETTLE_SECONDS"
before="$(rng_answers || echo '{}')"
if rate="$(measure_rate)"; then
  FIGURE[global_w]="$rate"
  check "$NODES global rng, $WORKERS workers: $rate hashes/s (expected $RATE_N_MIN..$RATE_N_MAX)" between "$rate" "$RATE_N_MIN" "$RATE_N_MAX"
else
  fail "$NODES global rng, $WORKERS workers: could not read the web UI's counter"
fi
after="$(rng_answers || echo '{}')"
shares_between "$before" "$after"
FIGURE[shares]="$(shares_line "$SHARES")"
check "the workers' reports: $NODES rng instances share the requests (${FIGURE[shares]}; each $SHARE_MIN..$SHARE_MAX)" shares_ok "$SHARES"
FIGURE[speedup]="$(awk -v a="${FIGURE[one_w]:-0}" -v b="${FIGURE[global_w]:-0}" 'BEGIN { if (a > 0) printf "x%.1f", b / a; else print "?" }')"
log "speed-up with $WORKERS workers, global rng vs one rng: ${FIGURE[speedup]}"

webui_view="$(curl -fsS --max-time 5 "http://$WEBUI/history" | jq -c '.status.rng // empty | map({key: .name, value: {answers: .rate, share: .share}}) | from_entries' 2>/dev/null || true)"
if [[ -n "$webui_view" ]]; then
  FIGURE[webui_shares]="$(jq -r 'to_entries | map("\(.key) \(.value.share * 1000 | round / 10)% (\(.value.answers * 10 | round / 10)/s)") | join(", ")' <<<"$webui_view")"
  check "the web UI's cluster view lists $NODES rng instances sharing the load (${FIGURE[webui_shares]})" shares_ok "$webui_view"
else
  fail "the web UI's cluster view (GET /history .status.rng) answers; if the webui image predates it, rebuild: BUILD=always"
fi

for w in $SWEEP; do
  log "docker service scale ${STACK}_worker=$w (global rng)"
  on_manager docker service scale --detach "${STACK}_worker=$w" >/dev/null
  if wait_tasks "${STACK}_worker" "$w"; then
    sleep "$SETTLE_SECONDS"
    if rate="$(measure_rate)"; then
      FIGURE[global_$w]="$rate"
      echo "    $NODES global rng, $w workers: $rate hashes/s"
    fi
  else
    fail "$w workers running"
  fi
done
for w in $(tr ' ' '\n' <<<"$WORKERS $SWEEP" | sort -n); do
  if [[ -n "${FIGURE[global_$w]:-}" ]] && between "${FIGURE[global_$w]}" "$RATE_N_MIN" 1000000; then
    FIGURE[needed]="$w (measured: $WORKERS $SWEEP)"
    break
  fi
done
[[ -n "${FIGURE[global_$WORKERS]:-}" ]] || FIGURE[global_$WORKERS]="${FIGURE[global_w]:-}"

# --- down ----------------------------------------------------------------------------------------

if [[ "$KEEP_CLUSTER" == 1 ]]; then
  CLUSTER_KEPT=1
  log "KEEP_CLUSTER=1: the cluster and the stack stay up; REUSE_CLUSTER=1 scripts/test/suites/cluster/cluster-metrics.sh uses them and takes them down (or: scripts/cluster.sh down)"
else
  log "scripts/cluster.sh down"
  cluster_down_checked
  FIGURE[down]="$DOWN_SECONDS"
fi

finish
