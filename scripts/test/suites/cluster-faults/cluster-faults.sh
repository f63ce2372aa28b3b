#!/usr/bin/env bash
# Node failures on a multi-node Swarm made of containers on this machine
# (scripts/cluster.sh): DockerCoins keeps mining and loses no count when the
# cluster loses part of itself.
#
# One cluster serves the five faults: `MANAGERS=3 NODE_STORAGE=volume
# scripts/cluster.sh up 4` (three managers, a Raft quorum of 2 out of 3, and
# one worker node; each node's engine state on a volume, so that a node killed
# and started again is the same machine rebooted). The stack is deployed with
# the no-IPVS test override, global rng (one per node: about 4 x 10 hashes/s),
# $WORKERS workers, two hasher and two web UI tasks (scripts/test/fixtures/cluster-ha.yaml),
# and redis pinned to node 3 (REDIS_PLACEMENT), then:
#   1. drain the worker node, then activate it again (rng 4 -> 3 tasks -> 4);
#   2. kill the worker node's container (a power cut), then start it again;
#   3. kill the Raft leader's container (node 1 at first), then start it again;
#   4. cut a manager that is neither the leader nor redis's node off the other
#      nodes for PARTITION_SECONDS, then heal;
#   5. drain the node that holds redis for HOLD_SECONDS, then activate it.
# For each fault it measures, from redis itself:
#   - the rate (hashes/s) before (RATE_SECONDS before the fault), during (from
#     the fault to its undoing) and after (RATE_SECONDS once converged);
#   - the time until the cluster converged (tasks rescheduled, node Down or
#     Ready, a leader elected);
#   - the accounting: the units the workers say they did (each worker's report,
#     dockercoins:report:<instance>, "units": units done since it started,
#     written with each flush) against what `hashes` gained; for a killed node,
#     how long before the kill its workers had last flushed (at most about the
#     flush interval, 1 s: what they lose); for workers stopped while redis is
#     away, the units their last log line says redis did not count;
#   - whether `docker service ls` answers on every surviving manager;
#   - the web UI's availability: the share of GET /json (tried on every node's
#     port 8000, every second) answered with 200.
# A sampler runs inside the redis container (one script per second: TIME,
# hashes and every report, read atomically); each window's figures come from
# its samples. The cluster is taken down on exit whatever happens.
#
# Usage: scripts/test/suites/cluster-faults/cluster-faults.sh
# Env:   WORKERS            workers (default 30)
#        HASHER_REPLICAS    hasher tasks (default 2, scripts/test/fixtures/cluster-ha.yaml; with 1, the
#                           loss of its node stops the mining until Swarm restarts it elsewhere,
#                           and the "kept mining" checks are not made)
#        WEBUI_REPLICAS     web UI tasks (default 2)
#        RATE_SECONDS       length of the before/after windows (default 15)
#        SETTLE_SECONDS     wait after a convergence before the after window (default 5)
#        PARTITION_SECONDS  how long the cut lasts (default 30)
#        HOLD_SECONDS       how long a drained node stays drained (default 15)
#        RATE_MIN/MAX       accepted rate with the 4 rng, hashes/s (default 34 / 42.4)
#        RATE3_MIN/MAX      accepted rate with 3 rng, while a node is drained (default 25.5 / 31.8)
#        KEPT_MIN           lowest accepted rate from a node's kill to its start (default 15: the
#                           workers wait up to 10 s for an answer from a task that is gone)
#        ACCOUNT_TOLERANCE  accepted |units reported - hashes gained| per window (default 5)
#        STACK              stack name (default dockercoins)
#        TAG, BUILD         passed to scripts/cluster.sh (default latest, auto)
#        WAIT_SECONDS       longest wait for a convergence (default 120)
#        SKIP_SEED=1        do not run seed-images.sh / compose-plugin.sh
#        NODE_PREFIX, CLUSTER_NETWORK, CLUSTER_SUBNET: see scripts/cluster.sh
#                           (default dcfault, dcfault-net, 10.214.0.0/24: not cluster-e2e's)

# Most checks are functions run through check(); shellcheck cannot see those calls.
# shellcheck disable=SC2317
set -euo pipefail

usage() { echo "usage: $0   (starts a 4-node Swarm of containers, rehearses five node failures, measures each, takes it down; see the header for env)"; }
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
NODES=4
MANAGER_COUNT=3
WORKERS="${WORKERS:-30}"
HASHER_REPLICAS="${HASHER_REPLICAS:-2}"
WEBUI_REPLICAS="${WEBUI_REPLICAS:-2}"
RATE_SECONDS="${RATE_SECONDS:-15}"
SETTLE_SECONDS="${SETTLE_SECONDS:-5}"
PARTITION_SECONDS="${PARTITION_SECONDS:-30}"
HOLD_SECONDS="${HOLD_SECONDS:-15}"
RATE_MIN="${RATE_MIN:-34}"
RATE_MAX="${RATE_MAX:-42.4}"
RATE3_MIN="${RATE3_MIN:-25.5}"
RATE3_MAX="${RATE3_MAX:-31.8}"
KEPT_MIN="${KEPT_MIN:-15}"
ACCOUNT_TOLERANCE="${ACCOUNT_TOLERANCE:-5}"
FLUSH_SECONDS=1
STACK="${STACK:-dockercoins}"
export TAG="${TAG:-latest}"
export BUILD="${BUILD:-auto}"
WAIT_SECONDS="${WAIT_SECONDS:-120}"
SKIP_SEED="${SKIP_SEED:-0}"
export NODE_PREFIX="${NODE_PREFIX:-dcfault}"
export CLUSTER_NETWORK="${CLUSTER_NETWORK:-dcfault-net}"
export CLUSTER_SUBNET="${CLUSTER_SUBNET:-10.214.0.0/24}"
export MANAGERS="$MANAGER_COUNT"
export NODE_STORAGE=volume
CLUSTER="$ROOT/scripts/cluster.sh"
LABEL="org.dockercoins.cluster=$CLUSTER_NETWORK"
NET_PREFIX="${CLUSTER_SUBNET%.0/24}"
node() { echo "${NODE_PREFIX}$1"; }
WORKER_NODE="$(node 4)"
REDIS_NODE="$(node 3)"
WEBUI_PORT=8000
STACK_FILES=(-c stack.yaml -c docker/swarm/swarm-override.yaml -c scripts/test/fixtures/cluster-workers.yaml -c scripts/test/fixtures/cluster-ha.yaml)

STARTED=$SECONDS
TEST_NAME=cluster-faults
# shellcheck source=scripts/test/lib/lib.sh
source "$ROOT/scripts/test/lib/lib.sh"
# shellcheck source=scripts/test/lib/cluster-lib.sh
source "$ROOT/scripts/test/lib/cluster-lib.sh"
WORK="$(mktemp -d /tmp/cluster-faults.XXXXXX)"
SAMPLES="$WORK/samples.jsonl"
PROBES="$WORK/probes.txt"
touch "$SAMPLES" "$PROBES"
CLUSTER_CREATED=0
PROBE_PID=""
SAMPLER_PIDS=()
declare -A ROW=()

cleanup() {
  local rc=$? pid
  set +e
  trap - EXIT INT TERM
  rm -f "$WORK/probing"
  [[ -z "$PROBE_PID" ]] || kill "$PROBE_PID" 2>/dev/null
  for pid in "${SAMPLER_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  if ((CLUSTER_CREATED)); then
    log "cleaning up: scripts/cluster.sh down"
    "$CLUSTER" down >/dev/null
  fi
  if [[ -n "${KEEP_WORK:-}" ]]; then log "samples kept in $WORK"; else rm -rf "$WORK"; fi
  return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the cluster, seen from a manager that answers ------------------------------------------

MGR="$(node 1)"
# Runs a command on a manager that answers, trying the current one first.
on_mgr() {
  local n
  for n in "$MGR" $(seq 1 "$MANAGER_COUNT" | while read -r i; do node "$i"; done); do
    if timeout 10 docker exec "$n" docker node ls -q >/dev/null 2>&1; then
      MGR="$n"
      docker exec -w /dockercoins "$MGR" "$@"
      return
    fi
  done
  return 1
}
# "node status availability manager-status" of every node.
nodes_view() {
  on_mgr docker node ls --format '{{.Hostname}} {{.Status}} {{.Availability}} {{.ManagerStatus}}' 2>/dev/null | sort -V
}
node_status() { nodes_view | awk -v n="$1" '$1 == n { print $2 }'; }
leader() { nodes_view | awk '$4 == "Leader" { print $1 }'; }
# Running tasks of a service on nodes other than $2.
count_running_off() { running_on "$1" | grep -vcx "$2" || true; }
replicas() {
  on_mgr docker service ls --filter "name=${STACK}_$1" --format '{{.Name}} {{.Replicas}}' 2>/dev/null |
    awk -v n="${STACK}_$1" '$1 == n { print $2 }'
}
all_converged() {
  local svc r
  for svc in redis hasher webui worker rng; do
    r="$(replicas "$svc")"
    [[ "$r" =~ ^([0-9]+)/([0-9]+)$ ]] && ((BASH_REMATCH[2] > 0 && BASH_REMATCH[1] == BASH_REMATCH[2])) || return 1
  done
}
all_ready() {
  [[ "$(nodes_view | awk '{ print $1, $2, $3 }' | xargs)" == "$(for i in $(seq 1 "$NODES"); do echo "$(node "$i") Ready Active"; done | xargs)" ]]
}
# The whole stack as deployed, every node Ready and Active: 4 rng, $WORKERS workers, one of the rest.
healthy() {
  all_ready && all_converged &&
    [[ "$(count_running rng)" -eq "$NODES" && "$(count_running worker)" -eq "$WORKERS" ]]
}
# Whether `docker service ls` answers on each running manager but $1: "node yes|no ...".
service_ls_on_managers() {
  local i n out=""
  for i in $(seq 1 "$MANAGER_COUNT"); do
    n="$(node "$i")"
    [[ "$n" != "${1:-}" ]] || continue
    [[ "$(docker container inspect -f '{{.State.Running}}' "$n" 2>/dev/null)" == true ]] || continue
    if timeout 15 docker exec "$n" docker service ls -q >/dev/null 2>&1; then out+="$n yes, "; else out+="$n no, "; fi
  done
  echo "${out%, }"
}

# node: rng on each other node, and the workers all elsewhere.
moved_off() {
  [[ "$(count_running_off rng "$1")" -eq "$((NODES - 1))" && "$(count_running_off worker "$1")" -eq "$WORKERS" ]]
}
workers_on() { running_on worker | grep -cx "$1" || true; }
# Swarm does not move running tasks back to a node that returns: scaling up puts
# the new tasks on the emptiest nodes, scaling down removes tasks from the
# fullest ones first. Done when $1 runs fewer than WORKERS / NODES - 2 workers.
rebalance() { # node
  local extra=$((WORKERS / NODES + 1)) t0
  (($(workers_on "$1") < WORKERS / NODES - 2)) || return 0
  t0="$(now)"
  on_mgr docker service scale --detach "${STACK}_worker=$((WORKERS + extra))" >/dev/null &&
    wait_for "$WAIT_SECONDS" bash -c "[[ \$(docker exec $MGR docker service ps ${STACK}_worker --filter desired-state=running --format '{{.CurrentState}}' | grep -c ^Running) -eq $((WORKERS + extra)) ]]" >/dev/null &&
    on_mgr docker service scale --detach "${STACK}_worker=$WORKERS" >/dev/null &&
    wait_for "$WAIT_SECONDS" healthy >/dev/null || return 1
  log "rebalanced: docker service scale ${STACK}_worker=$((WORKERS + extra)), then =$WORKERS ($(elapsed "$t0" "$(now)") s): $(workers_on "$1") workers on $1"
}

# --- the sampler (inside the redis container) and the web UI probe ------------------------------

# One sample: redis's clock, hashes, and each worker's report (units, time, the
# process that wrote it, its rng answers by instance), read at once. A worker's
# report key is per name (worker-<slot>-<node>), which a later task may reuse;
# the report names the process that wrote it.
# shellcheck disable=SC2016
SAMPLE_LUA='local t = redis.call("TIME")
local out = {t = tonumber(t[1]) + tonumber(t[2]) / 1000000, h = tonumber(redis.call("GET", "hashes") or "0"), w = {}}
for _, k in ipairs(redis.call("KEYS", "dockercoins:report:*")) do
  local v = redis.call("GET", k)
  if v then
    local ok, r = pcall(cjson.decode, v)
    if ok and r.instance then
      out.w[r.instance .. "/" .. (r.process or "?")] = {r.units, r.time, r.rng}
    end
  end
end
return cjson.encode(out)'
start_sampler() {
  local where
  where="$(task_of redis)" || return 1
  # shellcheck disable=SC2086
  set -- $where
  docker exec "$1" docker exec "$2" touch /tmp/sampling
  # shellcheck disable=SC2016
  docker exec "$1" docker exec "$2" timeout 1800 sh -c \
    'while [ -e /tmp/sampling ]; do redis-cli EVAL "$0" 0; sleep 1; done' "$SAMPLE_LUA" >>"$SAMPLES" 2>/dev/null &
  SAMPLER_PIDS+=($!)
}
last_sample_time() { samples | tail -n 1 | jq -r .t; }

probe_loop() {
  local ips=() i ip code last="" t
  for i in $(seq 1 "$NODES"); do ips+=("$NET_PREFIX.$((10 + i))"); done
  while [[ -e "$WORK/probing" ]]; do
    t="$(now)"
    code=000
    for ip in $last "${ips[@]}"; do
      code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://$ip:$WEBUI_PORT/json" 2>/dev/null || true)"
      if [[ "$code" == 200 ]]; then last="$ip"; break; fi
    done
    echo "$t $code" >>"$PROBES"
    sleep 1
  done
}
# Share of probes answered 200 between two times: "97% (29/30)".
availability() {
  awk -v a="$1" -v b="$2" '$1 >= a && $1 <= b { n++; if ($2 == 200) ok++ }
    END { if (n == 0) print "no probe"; else printf "%d%% (%d/%d)\n", 100 * ok / n, ok, n }' "$PROBES"
}

# Accounting between two times: {"counted": hashes gained, "reported": units the
# workers' reports gained, each worker process counted from its value at $1 (0 for
# a process started later), "samples": n}.
accounting() {
  samples | jq -cs --argjson a "$1" --argjson b "$2" '
    [.[] | select(.t <= $b)] as $s
    | ([$s[] | select(.t <= $a)] | last) as $first
    | ($s | last) as $fin
    | reduce $s[] as $x ({last: {}, gained: 0};
        reduce ($x.w | to_entries[]) as $e (.;
          ($e.value[0]) as $u | (.last[$e.key] // 0) as $p
          | (if $x.t > $a then .gained += (if $u >= $p then $u - $p else $u end) else . end)
          | .last[$e.key] = $u))
    | {counted: (if $first == null then null else $fin.h - $first.h end), reported: .gained,
       samples: ([$s[] | select(.t > $a)] | length)}'
}
accounting_line() { jq -r '"\(.reported) units reported, \(.counted) counted"' <<<"$1"; }
accounting_ok() {
  jq -e --argjson tol "$ACCOUNT_TOLERANCE" '.counted != null and .samples > 0 and ((.counted - .reported) | fabs) <= $tol' <<<"$1" >/dev/null
}
# For the workers of node $1 in the first sample after $2 (their reports outlive
# them by up to 10 s): how long before $2 each had last flushed, and its rate
# over the RATE_SECONDS before: {"workers": n, "max_gap": s, "bound": units}.
unflushed_at_kill() {
  samples | jq -cs --arg node "$1" --argjson k "$2" --argjson w "$RATE_SECONDS" '
    ([.[] | select(.t > $k)] | first) as $after
    | ([.[] | select(.t <= $k - $w)] | last) as $before
    | [($after.w // {}) | to_entries[] | select(.key | test("^worker-[0-9]+-" + $node + "/"))
       | {gap: ($k - .value[1]),
          rate: ((.value[0] - (($before.w // {})[.key][0] // .value[0])) / $w)}] as $ws
    | {workers: ($ws | length), max_gap: ([$ws[].gap] | max // 0 | . * 100 | round / 100),
       bound: ([$ws[] | .rate * ([.gap, 0] | max)] | add // 0 | . * 10 | round / 10)}'
}
# "done counted" summed over the exited worker containers of a node, from each
# one's last line: "<done> units of work done in all, <counted> counted in redis".
stopped_workers_summary() {
  local n="$1" cid line done=0 counted=0 count=0
  for cid in $(docker exec "$n" docker ps -aq --filter "label=com.docker.swarm.service.name=${STACK}_worker" --filter status=exited); do
    line="$(docker exec "$n" docker logs "$cid" 2>&1 | grep -o '[0-9]* units of work done in all, [0-9]* counted in redis' | tail -n 1)" || true
    if [[ "$line" =~ ^([0-9]+)\ units.*,\ ([0-9]+)\ counted ]]; then
      done=$((done + BASH_REMATCH[1]))
      counted=$((counted + BASH_REMATCH[2]))
      count=$((count + 1))
    fi
  done
  echo "$count $done $counted"
}

# The last flushes of the workers of node $1 that stopped after $2 (container ids
# exited before: $3) which no sample shows: counted in redis, but their reports
# (10 s) expired before the next sample, e.g. when redis stopped with them.
# Each one's last log line says how much redis counted in all; less the last
# report of its name that a sample saw.
unseen_final_flushes() { # node t ids-exited-before
  local n="$1" cid name counted seen sum=0
  for cid in $(docker exec "$n" docker ps -aq --filter "label=com.docker.swarm.service.name=${STACK}_worker" --filter status=exited); do
    [[ " $3 " != *" $cid "* ]] || continue
    counted="$(docker exec "$n" docker logs "$cid" 2>&1 | grep -o '[0-9]* counted in redis' | tail -n 1 | cut -d' ' -f1)" || true
    [[ -n "$counted" ]] || continue
    name="$(docker exec "$n" docker inspect -f '{{.Config.Hostname}}' "$cid")"
    seen="$(samples | jq -s --arg i "$name/" '[.[] | .w | to_entries[] | select(.key | startswith($i)) | .value[0]] | last // 0')"
    ((counted <= seen)) || sum=$((sum + counted - seen))
  done
  echo "$sum"
}

# The rng instances that answered the workers over the last 3 s of samples, sorted.
rng_serving() {
  tail -n 8 "$SAMPLES" | jq -cR 'fromjson? | select(type == "object" and .t != null)' 2>/dev/null | tail -n 4 | jq -rs '
    (.[0].w // {}) as $a | (.[-1].w // {}) as $b
    | [$b | to_entries[] | .key as $k | (.value[2] // {}) | to_entries[]
       | select(.value > (($a[$k][2] // {})[.key] // 0)) | .key] | unique | .[]' 2>/dev/null | sort -V | xargs
}
all_rng_serving() {
  [[ "$(rng_serving)" == "$(for i in $(seq 1 "$NODES"); do echo "rng-$(node "$i")"; done | xargs)" ]]
}
# Units done by the worker processes that ran on node $1 at $2 (a cut), as their
# reports in redis show them: "<while cut off, in their first reports after $3
# (the heal)> <until their last report, by $4>".
node_workers_counted() { # node t0 t1 t2
  samples | jq -rs --arg node "$1" --argjson a "$2" --argjson h "$3" --argjson b "$4" '
    ([.[] | select(.t <= $a)] | .[-1].w // {}) as $start
    | [.[] | select(.t > $h and .t <= $b)] as $later
    | [$start | to_entries[] | select(.key | test("^worker-[0-9]+-" + $node + "/"))
       | .key as $k | .value[0] as $u0 | [$later[] | .w[$k][0] // empty] as $us
       | {first: (($us | min // $u0) - $u0), last: (($us | max // $u0) - $u0)}]
    | "\([.[].first] | add // 0) \([.[].last] | add // 0)"'
}

# --- reporting -------------------------------------------------------------------------------------

FAULTS=(drain kill leader cut redis)
declare -A TITLE=(
  [drain]="1. drain $WORKER_NODE (worker), activate"
  [kill]="2. kill $WORKER_NODE (worker), start"
  [leader]="3. kill the leader, start it"
  [cut]="4. cut a manager off ${PARTITION_SECONDS} s, heal"
  [redis]="5. drain $REDIS_NODE (redis), activate"
)
summary() {
  local f
  echo
  echo "=== DockerCoins cluster faults summary ($NODES nodes as containers: $MANAGER_COUNT managers + 1 worker; global rng, $WORKERS workers) ==="
  printf '  %-44s %s\n' "cluster start (MANAGERS=3 NODE_STORAGE=volume scripts/cluster.sh up 4)" "${ROW[up]:-?} s" \
    "stack deploy -> every task running" "${ROW[deploy]:-?} s"
  for f in "${FAULTS[@]}"; do
    echo "  ${TITLE[$f]}"
    printf '    %-40s %s\n' \
      "rate before / during / after (hashes/s)" "${ROW[$f.before]:-?} / ${ROW[$f.during]:-?} / ${ROW[$f.after]:-?}" \
      "converged" "${ROW[$f.converge]:-?}" \
      "units reported vs counted" "${ROW[$f.account]:-?}" \
      "web UI answered (during)" "${ROW[$f.webui]:-?}" \
      "docker service ls on the other managers" "${ROW[$f.ls]:-?}"
    [[ -z "${ROW[$f.note]:-}" ]] || printf '    %-40s %s\n' "" "${ROW[$f.note]}"
  done
  printf '  %-44s %s\n' "whole run" "$((SECONDS - STARTED)) s"
  echo "$PASSED passed, $FAILED failed"
}
# Rates and accounting of a fault: before [b0, t0], during [t0, t1], after [a0, a1].
fault_figures() { # fault b0 t0 t1 a0 a1 [units counted that no sampled report shows]
  local f="$1" acc
  ROW[$f.before]="$(rate "$2" "$3")"
  ROW[$f.during]="$(rate "$3" "$4")"
  ROW[$f.after]="$(rate "$5" "$6")"
  ROW[$f.webui]="$(availability "$3" "$4")"
  acc="$(accounting "$3" "$6" | jq -c --argjson x "${7:-0}" '.reported += $x')"
  ROW[$f.account]="$(accounting_line "$acc") (from the fault to the end of the after window)"
  [[ -z "${7:-}" ]] || ROW[$f.account]+="; of the units reported, $7 are final flushes of stopped workers, from their logs"
  check "$f: rate before ${ROW[$f.before]} hashes/s ($RATE_MIN..$RATE_MAX)" between "${ROW[$f.before]}" "$RATE_MIN" "$RATE_MAX"
  check "$f: rate after ${ROW[$f.after]} hashes/s ($RATE_MIN..$RATE_MAX)" between "${ROW[$f.after]}" "$RATE_MIN" "$RATE_MAX"
  check "$f: every unit the workers reported was counted ($(accounting_line "$acc"), within $ACCOUNT_TOLERANCE)" accounting_ok "$acc"
}
# The after window: settle, then RATE_SECONDS of samples; prints "a0 a1".
after_window() {
  local a0
  sleep "$SETTLE_SECONDS"
  a0="$(now)"
  sleep "$RATE_SECONDS"
  echo "$a0 $(now)"
}
# Every rng answering the workers again (in their reports), timed from $1.
rng_back() {
  if wait_for "$WAIT_SECONDS" all_rng_serving >/dev/null; then
    conv+=", every rng answering $(since "$1") s after"
    pass "the workers get answers from the $NODES rng again, $(since "$1") s after"
  else
    fail "the workers get answers from the $NODES rng within $WAIT_SECONDS s (only: $(rng_serving))"
  fi
}
minus() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a - b }'; }
# converge SINCE PASS FAIL NOTE CONDITION...: waits up to WAIT_SECONDS for CONDITION;
# then passes PASS and adds NOTE to conv ("{}" in either: the seconds since SINCE),
# else fails FAIL. An empty PASS, FAIL or NOTE is left out. Returns whether it converged.
converge() {
  local since="$1" ok="$2" ko="$3" note="$4" took
  shift 4
  if wait_for "$WAIT_SECONDS" "$@" >/dev/null; then
    took="$(since "$since")"
    [[ -z "$ok" ]] || pass "${ok//"{}"/$took}"
    [[ -z "$note" ]] || conv+="${conv:+, }${note//"{}"/$took}"
    return 0
  fi
  [[ -z "$ko" ]] || fail "$ko"
  return 1
}
# undo ACTION NODE: `scripts/cluster.sh ACTION NODE`, the end of a fault, at t1.
undo() {
  log "scripts/cluster.sh $1 $2"
  t1="$(now)"
  "$CLUSTER" "$1" "$2" | sed 's/^/    /'
}

# --- prerequisites ---------------------------------------------------------------------------------

for tool in docker curl jq awk timeout; do
  command -v "$tool" >/dev/null || { echo "cluster-faults: $tool is missing; install it (apt-get install -y $tool)" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "cluster-faults: cannot talk to the Docker engine; is dockerd running?" >&2; exit 1; }
if [[ -n "$(docker ps -aq --filter "label=$LABEL")" ]] || docker network inspect "$CLUSTER_NETWORK" >/dev/null 2>&1; then
  echo "cluster-faults: a cluster is up already on $CLUSTER_NETWORK; take it down (scripts/cluster.sh down with the same env) or set CLUSTER_NETWORK/CLUSTER_SUBNET/NODE_PREFIX" >&2
  exit 1
fi
if [[ "$SKIP_SEED" != 1 ]]; then
  "$ROOT/scripts/test/lib/compose-plugin.sh"
  "$ROOT/scripts/test/lib/seed-images.sh"
fi

# --- the cluster and the stack ------------------------------------------------------------------------

log "MANAGERS=$MANAGER_COUNT NODE_STORAGE=volume scripts/cluster.sh up $NODES"
CLUSTER_CREATED=1
t0=$SECONDS
if "$CLUSTER" up "$NODES" > >(sed 's/^/    /'); then
  ROW[up]=$((SECONDS - t0))
  pass "scripts/cluster.sh up $NODES: the cluster started in ${ROW[up]} s"
else
  abort "scripts/cluster.sh up $NODES"
fi
roles_ok() {
  [[ "$(nodes_view | awk '{ print $1, $2, ($4 == "" ? "worker" : "manager") }' | xargs)" == \
    "$(node 1) Ready manager $(node 2) Ready manager $(node 3) Ready manager $(node 4) Ready worker" ]] &&
    [[ "$(leader)" == "$(node 1)" ]]
}
check "$MANAGER_COUNT managers ($(node 1) the leader) and 1 worker, all Ready" roles_ok

log "stack deploy: global rng, $WORKERS workers, redis pinned to $REDIS_NODE (REDIS_PLACEMENT)"
t0=$SECONDS
if ! out="$(docker exec -w /dockercoins -e WORKERS="$WORKERS" -e TAG="$TAG" -e HASHER_REPLICAS="$HASHER_REPLICAS" \
  -e WEBUI_REPLICAS="$WEBUI_REPLICAS" -e REDIS_PLACEMENT="node.hostname == $REDIS_NODE" \
  "$(node 1)" docker stack deploy "${STACK_FILES[@]}" "$STACK" 2>&1)"; then
  echo "$out" >&2
  abort "docker stack deploy"
fi
if took="$(wait_for "$WAIT_SECONDS" healthy)"; then
  ROW[deploy]=$((SECONDS - t0))
  pass "every task running after ${ROW[deploy]} s (rng on $(running_on rng | sort -V | xargs))"
else
  on_mgr docker service ls >&2 || true
  abort "the stack converged within $WAIT_SECONDS s"
fi
check "redis runs on $REDIS_NODE" test "$(running_on redis)" = "$REDIS_NODE"
start_sampler || abort "could not start the sampler in the redis container"
touch "$WORK/probing"
probe_loop &
PROBE_PID=$!
counting() { [[ "$(samples | tail -n 1 | jq -r .h)" -gt 0 ]] 2>/dev/null; }
wait_for 60 counting >/dev/null || abort "redis counts no hash within 60 s of the deploy"
sleep "$SETTLE_SECONDS"
b0="$(now)"
sleep "$RATE_SECONDS"

# --- 1. drain the worker node, activate it ----------------------------------------------------------

log "fault 1: scripts/cluster.sh drain $WORKER_NODE"
t0="$(now)"
"$CLUSTER" drain "$WORKER_NODE" | sed 's/^/    /'
conv=""
converge "$t0" "drain: rng on 3 nodes, the $WORKERS workers on the others, after {} s" \
  "drain: rng and workers moved off $WORKER_NODE within $WAIT_SECONDS s" "drained in {} s" \
  moved_off "$WORKER_NODE" || conv="drain: timeout"
ROW[drain.ls]="$(service_ls_on_managers "")"
sleep "$SETTLE_SECONDS"
d0="$(now)"
sleep "$RATE_SECONDS"
d1="$(now)"
drained_rate="$(rate "$d0" "$d1")"
check "drained: $drained_rate hashes/s with 3 rng ($RATE3_MIN..$RATE3_MAX)" between "$drained_rate" "$RATE3_MIN" "$RATE3_MAX"
read -r n_stopped done_stopped counted_stopped <<<"$(stopped_workers_summary "$WORKER_NODE")"
check "the $n_stopped workers stopped on $WORKER_NODE counted all they did ($done_stopped done, $counted_stopped counted)" \
  test "$n_stopped" -gt 0 -a "$done_stopped" -eq "$counted_stopped"
undo activate "$WORKER_NODE"
converge "$t1" "activate: rng on $NODES nodes again after {} s" \
  "activate: rng on $NODES nodes within $WAIT_SECONDS s" "rng back in {} s" healthy || true
rng_back "$t1"
ROW[drain.converge]="$conv"
rebalance "$WORKER_NODE" || fail "rebalancing the workers onto $WORKER_NODE"
read -r a0 a1 <<<"$(after_window)"
fault_figures drain "$b0" "$t0" "$t1" "$a0" "$a1"
ROW[drain.during]="${ROW[drain.during]} (drained, steady: $drained_rate)"
ROW[drain.note]="workers stopped by the drain: $n_stopped, $done_stopped units done, $counted_stopped counted"

# --- 2. kill the worker node, start it --------------------------------------------------------------

log "fault 2: scripts/cluster.sh kill $WORKER_NODE"
b0="$a0"
on_node="$(workers_on "$WORKER_NODE")"
check "$WORKER_NODE runs $on_node of the workers" test "$on_node" -gt 0
t0="$(now)"
"$CLUSTER" kill "$WORKER_NODE" | sed 's/^/    /'
is_down() { [[ "$(node_status "$1")" == Down ]]; }
conv=""
converge "$t0" "$WORKER_NODE is Down after {} s" "$WORKER_NODE is Down within $WAIT_SECONDS s" \
  "Down in {} s" is_down "$WORKER_NODE" || true
converge "$t0" "its $on_node workers started elsewhere: $WORKERS running, {} s after the kill" \
  "the workers of $WORKER_NODE started elsewhere within $WAIT_SECONDS s" "tasks moved in {} s" \
  moved_off "$WORKER_NODE" || true
ROW[kill.ls]="$(service_ls_on_managers "")"
unflushed="$(unflushed_at_kill "$WORKER_NODE" "$t0")"
sleep "$SETTLE_SECONDS"
undo start "$WORKER_NODE"
converge "$t1" "$WORKER_NODE Ready again and its rng running, {} s after the start" \
  "$WORKER_NODE Ready with its rng within $WAIT_SECONDS s" "Ready with rng {} s after the start" healthy || true
rng_back "$t1"
ROW[kill.converge]="$conv"
rebalance "$WORKER_NODE" || fail "rebalancing the workers onto $WORKER_NODE"
read -r a0 a1 <<<"$(after_window)"
fault_figures kill "$b0" "$t0" "$t1" "$a0" "$a1"
if ((HASHER_REPLICAS > 1)); then
  check "the stack kept mining while $WORKER_NODE was off (${ROW[kill.during]} hashes/s >= $KEPT_MIN)" between "${ROW[kill.during]}" "$KEPT_MIN" 1000
fi
ROW[kill.note]="lost with the node: $(jq -r '"\(.workers) workers, each had last flushed at most \(.max_gap) s before the kill: at most \(.bound) units"' <<<"$unflushed")"
flushed_recently() {
  jq -e --argjson n "$on_node" --argjson f "$FLUSH_SECONDS" '.workers == $n and .max_gap <= $f + 0.5' <<<"$unflushed" >/dev/null
}
check "the killed node's $on_node workers had flushed within the flush interval ($(jq -r .max_gap <<<"$unflushed") s <= $FLUSH_SECONDS s + 0.5)" \
  flushed_recently

# --- 3. kill the leader, start it ----------------------------------------------------------------------

old_leader="$(leader)"
log "fault 3: scripts/cluster.sh kill-leader ($old_leader)"
b0="$a0"
t0="$(now)"
"$CLUSTER" kill-leader | sed 's/^/    /'
survivor="$(node 2)"
[[ "$old_leader" != "$survivor" ]] || survivor="$(node 3)"
new_leader() { # a leader other than the old one, seen by a survivor
  local l
  l="$(timeout 10 docker exec "$survivor" docker node ls --format '{{.Hostname}} {{.ManagerStatus}}' 2>/dev/null | awk '$2 == "Leader" { print $1 }')"
  [[ -n "$l" && "$l" != "$old_leader" ]]
}
conv=""
if wait_for "$WAIT_SECONDS" new_leader >/dev/null; then
  took="$(since "$t0")"
  MGR="$survivor"
  pass "a new leader, $(leader), elected $took s after the kill"
  conv="new leader ($(leader)) in $took s"
else
  fail "a new leader within $WAIT_SECONDS s"
fi
ROW[leader.ls]="$(service_ls_on_managers "$old_leader")"
check "docker service ls answers on the surviving managers (${ROW[leader.ls]})" bash -c "[[ '${ROW[leader.ls]}' != *' no'* && -n '${ROW[leader.ls]}' ]]"
converge "$t0" "the old leader's tasks moved: $WORKERS workers running, {} s after the kill" \
  "the old leader's tasks moved within $WAIT_SECONDS s" "tasks moved in {} s" moved_off "$old_leader" || true
sleep "$SETTLE_SECONDS"
undo start "$old_leader"
if wait_for "$WAIT_SECONDS" healthy >/dev/null; then
  took="$(since "$t1")"
  pass "$old_leader Ready again (a follower: $(leader) leads), $took s after the start"
  conv+=", rejoined $took s after the start"
else
  fail "$old_leader Ready again within $WAIT_SECONDS s"
fi
rng_back "$t1"
ROW[leader.converge]="$conv"
rebalance "$old_leader" || fail "rebalancing the workers onto $old_leader"
read -r a0 a1 <<<"$(after_window)"
fault_figures leader "$b0" "$t0" "$t1" "$a0" "$a1"
if ((HASHER_REPLICAS > 1)); then
  check "the stack kept mining while the leader was gone (${ROW[leader.during]} hashes/s >= $KEPT_MIN)" between "${ROW[leader.during]}" "$KEPT_MIN" 1000
fi

# --- 4. cut a manager off, heal -----------------------------------------------------------------------------

lead="$(leader)"
cut_node=""
for i in $(seq 1 "$MANAGER_COUNT"); do
  n="$(node "$i")"
  if [[ "$n" != "$lead" && "$n" != "$REDIS_NODE" ]]; then cut_node="$n"; break; fi
done
cut_workers="$(workers_on "$cut_node")"
log "fault 4: scripts/cluster.sh cut $cut_node (leader: $lead, $cut_workers workers on it), heal after $PARTITION_SECONDS s"
MGR="$lead"
b0="$a0"
t0="$(now)"
"$CLUSTER" cut "$cut_node" | sed 's/^/    /'
conv=""
converge "$t0" "$cut_node is Down for the others after {} s" "$cut_node is Down for the others within $WAIT_SECONDS s" \
  "Down in {} s" is_down "$cut_node" || true
ROW[cut.ls]="$(service_ls_on_managers "$cut_node"); on $cut_node: $(timeout 15 docker exec "$cut_node" docker service ls -q >/dev/null 2>&1 && echo yes || echo no)"
check "docker service ls answers on the managers on the quorum's side ($(service_ls_on_managers "$cut_node"))" \
  bash -c "[[ '$(service_ls_on_managers "$cut_node")' != *' no'* ]]"
remaining=$(awk -v a="$(now)" -v b="$t0" -v p="$PARTITION_SECONDS" 'BEGIN { r = p - (a - b); print (r > 0 ? r : 0) }')
sleep "$remaining"
undo heal "$cut_node"
converge "$t1" "" "" "Ready {} s after the heal" all_ready || true
converge "$t1" "$cut_node Ready again, exactly $WORKERS workers and $NODES rng running, {} s after the heal" \
  "$cut_node Ready and the stack converged within $WAIT_SECONDS s" "converged {} s after it" healthy || true
rng_back "$t1"
ROW[cut.converge]="$conv"
read -r a0 a1 <<<"$(after_window)"
fault_figures cut "$b0" "$t0" "$t1" "$a0" "$a1"
read -r cut_buffered cut_total <<<"$(node_workers_counted "$cut_node" "$t0" "$t1" "$a1")"
ROW[cut.note]="the $cut_workers workers on $cut_node: $cut_buffered units done while cut off, counted after the heal; $cut_total until Swarm stopped them (replaced meanwhile)"
log "the workers cut off on $cut_node did $cut_buffered units while cut off (with what answers there), counted after the heal"

# --- 5. drain the redis node, activate it ----------------------------------------------------------------------

log "fault 5: scripts/cluster.sh drain $REDIS_NODE (redis), activate after $HOLD_SECONDS s"
b0="$a0"
before_stop="$(stopped_workers_summary "$REDIS_NODE")"
exited_before="$(docker exec "$REDIS_NODE" docker ps -aq --filter "label=com.docker.swarm.service.name=${STACK}_worker" --filter status=exited | xargs)"
t0="$(now)"
"$CLUSTER" drain "$REDIS_NODE" | sed 's/^/    /'
no_redis() { [[ "$(count_running redis)" -eq 0 ]]; }
conv=""
converge "$t0" "redis stopped, and waits for its node (pinned): {} s" "redis stopped within $WAIT_SECONDS s" \
  "redis stopped in {} s" no_redis || true
ROW[redis.ls]="$(service_ls_on_managers "")"
sleep "$HOLD_SECONDS"
check "redis did not start on another node (its data is on $REDIS_NODE)" no_redis
undo activate "$REDIS_NODE"
redis_back() { [[ "$(running_on redis)" == "$REDIS_NODE" ]]; }
if converge "$t1" "redis running on $REDIS_NODE again, {} s after the activate" \
  "redis back on $REDIS_NODE within $WAIT_SECONDS s" "back in {} s" redis_back; then
  start_sampler || fail "could not restart the sampler in the new redis container"
fi
converge "$t1" "" "the stack converged within $WAIT_SECONDS s of the activate" \
  "all converged {} s after the activate" healthy || true
rng_back "$t1"
ROW[redis.converge]="$conv"
read -r a0 a1 <<<"$(after_window)"
fault_figures redis "$b0" "$t0" "$t1" "$a0" "$a1" "$(unseen_final_flushes "$REDIS_NODE" "$t0" "$exited_before")"
# The outage as the samples see it: the last one before redis stopped, the first after it was back.
gap="$(samples | jq -cs --argjson a "$t1" '
  ([.[] | select(.t < $a)] | .[-1]) as $x | ([.[] | select(.t > $a)] | .[0]) as $y
  | {from: $x.t, to: $y.t, seconds: ($y.t - $x.t | . * 10 | round / 10), catch_up: ($y.h - $x.h)}')"
ROW[redis.during]="nothing counted for $(jq -r .seconds <<<"$gap") s (+$(jq -r .catch_up <<<"$gap") in the first sample after redis was back)"
read -r n0 done0 counted0 <<<"$before_stop"
read -r n_stopped done_stopped counted_stopped <<<"$(stopped_workers_summary "$REDIS_NODE")"
n_stopped=$((n_stopped - n0))
lost=$(((done_stopped - done0) - (counted_stopped - counted0)))
ROW[redis.note]="workers stopped on $REDIS_NODE with redis: $n_stopped; units they did that redis never counted: $lost"
check "the $n_stopped workers stopped with redis lost at most what they had not flushed ($lost units <= $n_stopped x 3)" \
  test "$lost" -le $((n_stopped * 3))
kept_count() { # hashes after the fault >= hashes before it: the volume kept the counter
  samples | jq -es --argjson a "$t0" '([.[] | select(.t <= $a)] | .[-1].h) as $h0 | .[-1].h >= $h0' >/dev/null
}
check "the counter survived (redis came back with its volume on $REDIS_NODE)" kept_count

# --- down ---------------------------------------------------------------------------------------------------------

rm -f "$WORK/probing"
log "scripts/cluster.sh down"
if "$CLUSTER" down > >(sed 's/^/    /'); then
  CLUSTER_CREATED=0
  pass "scripts/cluster.sh down"
else
  fail "scripts/cluster.sh down"
fi
check "nothing of the cluster is left (containers, network, volumes)" bash -c \
  "[[ -z \"\$(docker ps -aq --filter 'label=$LABEL')\" && -z \"\$(docker volume ls -q --filter 'label=$LABEL')\" ]] && ! docker network inspect '$CLUSTER_NETWORK' >/dev/null 2>&1"
finish
