#!/usr/bin/env bash
# The workshop's "Metrics collection" chapter on the multi-node Swarm of
# scripts/cluster.sh (docs/metrics.md): stack.prometheus.yaml deployed for
# real, the node exporter as a global service, Prometheus finding every task
# by DNS (tasks.<service>), and every query of the Grafana dashboard and of the
# chapter answered with data.
#
# Steps: a cluster of $NODES nodes is started (scripts/cluster.sh up), or, with
# REUSE_CLUSTER=1, the one that is up is used (cluster-e2e.sh leaves its own up
# with KEEP_CLUSTER=1: the `cluster` suite runs both on one cluster). The
# images stack.prometheus.yaml names (prom/prometheus, prom/node-exporter:
# look-alikes from Debian's packages where they cannot be pulled,
# scripts/test/lib/seed-images.sh) are loaded into every node, the way
# scripts/cluster.sh loads redis:7. Then, on the manager:
#   docker stack deploy -c stack.yaml -c stack.prometheus.yaml \
#     -c docker/swarm/swarm-override.yaml -c docker/swarm/swarm-override.prometheus.yaml \
#     -c scripts/test/fixtures/cluster-workers.yaml dockercoins
# (no IPVS here: dnsrr endpoints, Prometheus' port in host mode; the worker
# count of a stack already up is kept). Checks: one node-exporter task per
# node; Prometheus (its /api/v1 on port $PROMETHEUS_PORT of its node) has every
# target UP: one per running task of rng, hasher, webui and worker, one
# node-exporter per node, and itself; node_uname_info names every node once;
# every query of docker/grafana/dockercoins-dashboard.json and every ```promql
# block of docs/metrics.md returns at least one series. Then it removes what it
# added (the two services and the config; the stack if it deployed it), or,
# when it made the cluster or was handed it, takes the cluster down and checks
# that nothing of it is left.
# The queries are run once every target was scraped twice (a rate needs two
# samples), each retried until it answers, for WAIT_SECONDS at most.
#
# Usage: scripts/test/suites/cluster/cluster-metrics.sh
# Env:   NODES            nodes of a cluster it starts (default 3)
#        REUSE_CLUSTER=1  use the cluster that is up (on CLUSTER_NETWORK) and take it
#                         down at the end; none up: start one
#        KEEP_CLUSTER=1   leave the cluster up at the end (only what this added is removed)
#        STACK            stack name (default dockercoins)
#        WORKERS          workers when this deploys the stack (default 10; a stack already
#                         up keeps its count)
#        PROMETHEUS_PORT  Prometheus' port on its node (default 9090)
#        WAIT_SECONDS     longest wait for services, targets and each query (default 120)
#        TAG, BUILD       passed to scripts/cluster.sh
#        SKIP_SEED=1      do not run seed-images.sh / compose-plugin.sh
#        CLUSTER_NETWORK, CLUSTER_SUBNET, NODE_PREFIX, NODE_IMAGE: see scripts/cluster.sh

# Most checks are functions run through check(); shellcheck cannot see those calls.
# shellcheck disable=SC2317
set -euo pipefail

usage() { echo "usage: $0   (Prometheus and the node exporter on the local multi-node Swarm; see the header for env)"; }
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
NODES="${NODES:-3}"
REUSE_CLUSTER="${REUSE_CLUSTER:-0}"
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"
STACK="${STACK:-dockercoins}"
WORKERS="${WORKERS:-10}"
PROMETHEUS_PORT="${PROMETHEUS_PORT:-9090}"
WAIT_SECONDS="${WAIT_SECONDS:-120}"
SKIP_SEED="${SKIP_SEED:-0}"
export TAG="${TAG:-latest}"
export BUILD="${BUILD:-auto}"
export CLUSTER_NETWORK="${CLUSTER_NETWORK:-dockercoins-cluster}"
export NODE_PREFIX="${NODE_PREFIX:-node}"
CLUSTER="$ROOT/scripts/cluster.sh"
MANAGER="${NODE_PREFIX}1"
LABEL="org.dockercoins.cluster=$CLUSTER_NETWORK"
DASHBOARD="$ROOT/docker/grafana/dockercoins-dashboard.json"
CHAPTER="$ROOT/docs/metrics.md"
# The stack files, as paths inside the nodes (the repository is at /dockercoins there).
FILES=(-c stack.yaml -c stack.prometheus.yaml -c docker/swarm/swarm-override.yaml
  -c docker/swarm/swarm-override.prometheus.yaml -c scripts/test/fixtures/cluster-workers.yaml)
# The public images stack.prometheus.yaml names.
mapfile -t IMAGES < <(awk '$1 == "image:" { print $2 }' "$ROOT/stack.prometheus.yaml")

STARTED=$SECONDS
TEST_NAME=cluster-metrics
# shellcheck source=scripts/test/lib/lib.sh
source "$ROOT/scripts/test/lib/lib.sh"
# shellcheck source=scripts/test/lib/cluster-lib.sh
source "$ROOT/scripts/test/lib/cluster-lib.sh"
declare -A FIGURE=()
OWN_CLUSTER=0      # this script takes the cluster down at the end
CLUSTER_DOWN=0
STACK_DEPLOYED=0   # this script deployed the whole stack (no stack was up)
ADDED=0            # this script added Prometheus and the node exporter to a stack
QUERIES=()         # "<series> | <query>" per query run
WORK="$(mktemp -d)"

on_manager() { docker exec -w /dockercoins "$MANAGER" "$@"; }
# within seconds command...: wait_for (cluster-lib.sh) without its figure.
within() { wait_for "$@" >/dev/null; }
# Removes what this script added to a cluster it leaves up.
remove_added() {
  if ((STACK_DEPLOYED)); then
    on_manager docker stack rm "$STACK" >/dev/null 2>&1
  elif ((ADDED)); then
    on_manager docker service rm "${STACK}_prometheus" "${STACK}_node-exporter" >/dev/null 2>&1
    local deadline=$((SECONDS + 30))
    until on_manager docker config rm "${STACK}_prometheus" >/dev/null 2>&1 || ((SECONDS > deadline)); do sleep 1; done
  fi
}
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if ((OWN_CLUSTER && !CLUSTER_DOWN)); then
    log "cleaning up: scripts/cluster.sh down"
    "$CLUSTER" down >/dev/null
  elif ((!OWN_CLUSTER)); then
    remove_added
  fi
  rm -rf "$WORK"
  return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

summary() {
  local line
  echo
  echo "=== DockerCoins cluster metrics summary (${FIGURE[nodes]:-?} nodes as containers, stack $STACK) ==="
  printf '  %-52s %s\n' \
    "cluster" "${FIGURE[cluster]:-?}" \
    "images into every node (${IMAGES[*]})" "${FIGURE[load]:-?} s" \
    "stack deploy -> every target UP" "${FIGURE[targets_s]:-?} s" \
    "targets UP (by job)" "${FIGURE[targets]:-?}" \
    "mining speed, sum(irate(worker_units_total[1m]))" "${FIGURE[speed]:-?} hashes/s" \
    "queries answered with data" "${FIGURE[answered]:-?}" \
    "  (run after the targets were UP)" "${FIGURE[queries_s]:-?} s" \
    "scripts/cluster.sh down" "${FIGURE[down]:-kept up (KEEP_CLUSTER=1)}" \
    "whole run" "$((SECONDS - STARTED)) s"
  echo "  series per query:"
  for line in "${QUERIES[@]}"; do echo "    $line"; done
  echo "$PASSED passed, $FAILED failed"
}

# --- prerequisites ---------------------------------------------------------------------------

for tool in docker curl jq awk; do
  command -v "$tool" >/dev/null || { echo "cluster-metrics: $tool is missing; install it (apt-get install -y $tool)" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "cluster-metrics: cannot talk to the Docker engine; is dockerd running?" >&2; exit 1; }
[[ ${#IMAGES[@]} -eq 2 ]] || { echo "cluster-metrics: expected two images in stack.prometheus.yaml, found: ${IMAGES[*]}" >&2; exit 1; }
up_nodes="$(docker ps -q --filter "label=$LABEL" | wc -l)"
if ((up_nodes > 0 || $(docker ps -aq --filter "label=$LABEL" | wc -l) > 0)); then
  if [[ "$REUSE_CLUSTER" != 1 ]]; then
    echo "cluster-metrics: a cluster is up already on $CLUSTER_NETWORK; REUSE_CLUSTER=1 uses it, or take it down (scripts/cluster.sh down), then re-run" >&2
    exit 1
  fi
fi
if [[ "$SKIP_SEED" != 1 ]]; then
  if ((up_nodes == 0)); then
    "$ROOT/scripts/test/lib/compose-plugin.sh"
    "$ROOT/scripts/test/lib/seed-images.sh"
  fi
  "$ROOT/scripts/test/lib/seed-images.sh" prometheus node-exporter
fi
for image in "${IMAGES[@]}"; do
  docker image inspect "$image" >/dev/null 2>&1 || { echo "cluster-metrics: no local $image; seed it (scripts/test/lib/seed-images.sh prometheus node-exporter)" >&2; exit 1; }
done

# --- the cluster ----------------------------------------------------------------------------------

if ((up_nodes > 0)); then
  NODES="$up_nodes"
  ((KEEP_CLUSTER == 1)) || OWN_CLUSTER=1
  FIGURE[cluster]="reused: $NODES nodes up on $CLUSTER_NETWORK"
  log "using the cluster that is up: $(docker ps --filter "label=$LABEL" --format '{{.Names}}' | sort -V | xargs)"
else
  log "scripts/cluster.sh up $NODES"
  ((KEEP_CLUSTER == 1)) || OWN_CLUSTER=1
  t0=$SECONDS
  "$CLUSTER" up "$NODES" > >(sed 's/^/    /') || { OWN_CLUSTER=1; abort "scripts/cluster.sh up $NODES"; }
  FIGURE[cluster]="started: scripts/cluster.sh up $NODES in $((SECONDS - t0)) s"
  pass "scripts/cluster.sh up $NODES in $((SECONDS - t0)) s"
fi
FIGURE[nodes]="$NODES"
node_names() { docker ps --filter "label=$LABEL" --format '{{.Names}}' | sort -V; }
node_ip() { docker inspect -f "{{(index .NetworkSettings.Networks \"$CLUSTER_NETWORK\").IPAddress}}" "$1"; }

log "docker save ${IMAGES[*]} | docker load, into every node"
t0=$SECONDS
docker save "${IMAGES[@]}" >"$WORK/images.tar"
pids=()
for node in $(node_names); do
  docker exec -i "$node" docker load -q <"$WORK/images.tar" >/dev/null &
  pids+=($!)
done
loaded=1
for pid in "${pids[@]}"; do wait "$pid" || loaded=0; done
rm -f "$WORK/images.tar"
FIGURE[load]=$((SECONDS - t0))
((loaded)) || abort "loading ${IMAGES[*]} into the nodes"

# --- the stack with Prometheus ------------------------------------------------------------------

running_tasks() { # service: its running tasks
  on_manager docker service ps "${STACK}_$1" --filter desired-state=running --format '{{.CurrentState}}' 2>/dev/null | grep -c '^Running' || true
}
if on_manager docker service inspect "${STACK}_worker" >/dev/null 2>&1; then
  WORKERS="$(on_manager docker service inspect -f '{{.Spec.Mode.Replicated.Replicas}}' "${STACK}_worker")"
  ADDED=1
  log "stack $STACK is up ($WORKERS workers): stack deploy again, with stack.prometheus.yaml"
else
  STACK_DEPLOYED=1
  log "stack deploy of $STACK with stack.prometheus.yaml, $WORKERS workers"
fi
t0=$SECONDS
if ! output="$(docker exec -w /dockercoins -e WORKERS="$WORKERS" -e TAG="$TAG" -e PROMETHEUS_PORT="$PROMETHEUS_PORT" "$MANAGER" \
  docker stack deploy "${FILES[@]}" "$STACK" 2>&1)"; then
  echo "$output" >&2
  abort "docker stack deploy ${FILES[*]} $STACK"
fi

converged() { # service replicas-column-wanted
  [[ "$(on_manager docker service ls --filter "name=${STACK}_$1" --format '{{.Name}} {{.Replicas}}' | awk -v n="${STACK}_$1" '$1 == n { print $2 }')" == "$2" ]]
}
one_exporter_per_node() {
  local want
  want="$(node_names | sed 's/$/=1/' | xargs)"
  [[ "$(on_manager docker service ps "${STACK}_node-exporter" --filter desired-state=running --format '{{.Node}} {{.CurrentState}}' |
    awk '$2 == "Running" { n[$1]++ } END { for (k in n) print k "=" n[k] }' | sort -V | xargs)" == "$want" ]]
}
check "node-exporter: one task running on each of the $NODES nodes (global)" within "$WAIT_SECONDS" one_exporter_per_node
check "prometheus: 1/1" within "$WAIT_SECONDS" converged prometheus 1/1
prom_node="$(on_manager docker service ps "${STACK}_prometheus" --filter desired-state=running --format '{{.Node}}' | head -n 1)"
[[ -n "$prom_node" ]] || abort "Prometheus runs on no node"
API="http://$(node_ip "$prom_node"):$PROMETHEUS_PORT/api/v1"
log "Prometheus on $prom_node: ${API%/api/v1}/"

# "<job> <up> <total>" per job, sorted, from Prometheus' targets.
targets_by_job() {
  curl -fsS --max-time 5 "$API/targets?state=active" 2>/dev/null |
    jq -r '.data.activeTargets | group_by(.labels.job)[] | "\(.[0].labels.job) \(map(select(.health == "up")) | length) \(length)"'
}
# What it should be: every running task of each service, UP.
expected_targets() {
  local svc n
  {
    echo "node-exporter $NODES $NODES"
    echo "prometheus 1 1"
    for svc in hasher rng webui worker; do
      n="$(running_tasks "$svc")"
      echo "$svc $n $n"
    done
  } | sort
}
TARGETS_GOT=""
targets_ok() {
  local want
  want="$(expected_targets)"
  TARGETS_GOT="$(targets_by_job || true)"
  [[ -n "$TARGETS_GOT" && "$TARGETS_GOT" == "$want" ]]
}
if within "$WAIT_SECONDS" targets_ok; then
  FIGURE[targets_s]=$((SECONDS - t0))
  FIGURE[targets]="$(awk '{ printf "%s%s %s", sep, $1, $2; sep = ", " } END { print "" }' <<<"$TARGETS_GOT")"
  total="$(awk '{ s += $2 } END { print s }' <<<"$TARGETS_GOT")"
  FIGURE[targets]="$total: ${FIGURE[targets]}"
  pass "every target UP ${FIGURE[targets_s]} s after 'stack deploy' (${FIGURE[targets]})"
else
  fail "every target UP within $WAIT_SECONDS s: got '$(tr '\n' ',' <<<"$TARGETS_GOT")' (job up total), wanted '$(expected_targets | tr '\n' ',')'"
  curl -fsS --max-time 5 "$API/targets?state=active" | jq -r '.data.activeTargets[] | select(.health != "up") | "    \(.scrapeUrl) \(.health) \(.lastError)"' || true
fi

# node_uname_info: one per node, named after it (the exporter's hostname is its node's).
query() { # PromQL -> the API's JSON
  curl -fsS --max-time 10 "$API/query" --data-urlencode "query=$1" 2>/dev/null
}
nodenames() {
  query 'count by (nodename) (node_uname_info)' | jq -r '.data.result[] | "\(.metric.nodename)=\(.value[1])"' | sort -V | xargs
}
check "node_uname_info: each node once ($(nodenames))" test "$(nodenames)" == "$(node_names | sed 's/$/=1/' | xargs)"

# Rates need two samples in their window: every target scraped twice at least.
two_samples() {
  [[ "$(query 'count(count_over_time(up[1m]) >= 2)' | jq -r '.data.result[0].value[1] // 0')" == "$(query 'count(up)' | jq -r '.data.result[0].value[1] // -1')" ]]
}
check "every target scraped twice at least" within "$WAIT_SECONDS" two_samples
# irate: the last two samples (rate over [1m] reads low until Prometheus has a minute of them).
speed="$(query 'sum(irate(worker_units_total[1m]))' | jq -r '.data.result[0].value[1] // 0')"
FIGURE[speed]="$(awk -v s="$speed" 'BEGIN { printf "%.1f", s }')"
check "the mining speed in Prometheus: ${FIGURE[speed]} hashes/s ($WORKERS workers, $NODES rng)" between "$speed" 1 1000

# --- the dashboard's queries and the chapter's -----------------------------------------------------

# The ```promql blocks of the chapter, one query a line (a block's lines joined).
chapter_queries() {
  awk '/^ *```promql *$/ { inside = 1; q = ""; next }
       inside && /^ *```/ { inside = 0; gsub(/^ +| +$/, "", q); print q; next }
       inside { line = $0; gsub(/^ +/, "", line); q = q (q == "" ? "" : " ") line }' "$CHAPTER"
}
mapfile -t DASHBOARD_QUERIES < <(jq -r '[.panels[] | .targets[]? | .expr] | unique[]' "$DASHBOARD")
mapfile -t CHAPTER_QUERIES < <(chapter_queries)
check "the dashboard has queries (${#DASHBOARD_QUERIES[@]} distinct)" test "${#DASHBOARD_QUERIES[@]}" -ge 10
check "the chapter has \`\`\`promql blocks (${#CHAPTER_QUERIES[@]})" test "${#CHAPTER_QUERIES[@]}" -ge 5
dashboard_well_formed() {
  jq -e '(.panels | length) > 0
    and ([.panels[].id] | length == (unique | length))
    and all(.panels[]; .type and .title and .gridPos)
    and all(.panels[] | select(.type != "row"); .datasource.uid == "${DS_PROMETHEUS}" and (.targets | length) > 0)
    and all(.panels[] | .targets[]?; .refId and .expr)
    and (.__inputs[0].pluginId == "prometheus")' "$DASHBOARD" >/dev/null
}
check "the dashboard: unique panel ids, each panel titled and placed, every target with refId and expr, one Prometheus input" dashboard_well_formed

SERIES=0
has_data() { # query: at least one series
  SERIES="$(query "$1" | jq -r 'if .status == "success" then (.data.result | length) else 0 end' 2>/dev/null || echo 0)"
  ((SERIES > 0))
}
t0=$SECONDS
answered=0
asked=0
run_queries() { # where queries...
  local where="$1" q
  shift
  for q in "$@"; do
    asked=$((asked + 1))
    if within "$WAIT_SECONDS" has_data "$q"; then
      answered=$((answered + 1))
      pass "$where: $SERIES series: $q"
    else
      fail "$where: no data within $WAIT_SECONDS s: $q"
    fi
    QUERIES+=("$(printf '%-9s %3s  %s' "$where" "$SERIES" "$q")")
  done
}
run_queries dashboard "${DASHBOARD_QUERIES[@]}"
run_queries chapter "${CHAPTER_QUERIES[@]}"
FIGURE[answered]="$answered of $asked (dashboard ${#DASHBOARD_QUERIES[@]}, chapter ${#CHAPTER_QUERIES[@]})"
FIGURE[queries_s]=$((SECONDS - t0))

# --- clean up --------------------------------------------------------------------------------------

if ((OWN_CLUSTER)); then
  log "scripts/cluster.sh down"
  cluster_down_checked
  FIGURE[down]="$DOWN_SECONDS s"
else
  log "removing what this test added (KEEP_CLUSTER=1: the cluster stays up)"
  remove_added
  STACK_DEPLOYED=0
  ADDED=0
  gone() { ! on_manager docker service inspect "${STACK}_prometheus" "${STACK}_node-exporter" >/dev/null 2>&1; }
  check "Prometheus and the node exporter are gone from the cluster" within 30 gone
fi

finish
