#!/usr/bin/env bash
# The highly available Redis of stack.ha.yaml on a multi-node Swarm made of
# containers on this machine (scripts/cluster.sh): when the node of the Redis
# primary is drained, killed or cut off, the Sentinels promote a replica, the
# workers follow it, and not one unit they report is missing from `hashes`.
#
# One cluster serves the four faults: `MANAGERS=3 NODE_STORAGE=volume
# scripts/cluster.sh up 4`. The stack is deployed with the no-IPVS test
# overrides, global rng (one per node), two hasher and two web UI tasks
# (scripts/test/fixtures/cluster-ha.yaml), stack.ha.yaml (a primary, two replicas, three
# Sentinels: one Redis and one Sentinel on each of nodes 2, 3 and 4, the primary
# on node 2 at start), and the $WORKERS workers all on node 1
# (scripts/test/fixtures/cluster-redis-ha.yaml), which no fault touches. Then:
#   1. drain the primary's node for HOLD_SECONDS, then activate it;
#   2. kill the primary's node's container (a power cut), start it HOLD_SECONDS later;
#   3. cut the primary's node off the other nodes for PARTITION_SECONDS, then heal;
#   4. kill the node of a Sentinel (and a replica) that is not the primary's, start it again.
# The primary moves with each failover: each fault strikes the node the primary
# is on at that moment. A sampler on node 1, attached to the stack's overlay,
# asks the Sentinels for the primary every 0.5 s and reads hashes and the
# wallet there. For each fault it reports:
#   - the time from the fault to the first sample from a new primary;
#   - the longest time in which `hashes` did not grow;
#   - the rate (hashes/s) before (RATE_SECONDS), during (the fault to its
#     undoing) and after (RATE_SECONDS once the stopped Redis is a replica again);
#   - the exact accounting: the workers are scaled to 0 after each fault, and
#     the units all worker processes so far say they did (their last log line,
#     "N units of work done in all, M counted in redis") must equal `hashes`,
#     and the "Coin found" lines the wallet's entries; with the batches they
#     sent again, that Redis refused, that no replica confirmed and that they
#     restored to a primary that lacked them (their "batches: ..." line);
#   - for the cut: whether the cut-off primary refused writes (NOREPLICAS, after
#     min-replicas-max-lag, 10 s), whether its Sentinel saw a failover, and
#     whether it was a replica of the new primary after the heal.
# The cluster is taken down on exit whatever happens. About 12 minutes; not
# in a suite of scripts/test.sh (docs/node-failures.md explains what it shows).
#
# Usage: scripts/test/long/cluster-redis-ha.sh
# Env:   WORKERS            workers (default 30)
#        RATE_SECONDS       length of the before/after windows (default 15)
#        HOLD_SECONDS       how long a drained or killed node stays off (default 15)
#        PARTITION_SECONDS  how long the cut lasts (default 30)
#        FAILOVER_MAX       longest accepted time to a new primary, s (default 15)
#        STACK              stack name (default dockercoins)
#        TAG, BUILD         passed to scripts/cluster.sh (default latest, auto)
#        WAIT_SECONDS       longest wait for a convergence (default 120)
#        SKIP_SEED=1        do not run seed-images.sh / compose-plugin.sh
#        KEEP_WORK=1        keep the samples and the workers' logs
#        NODE_PREFIX, CLUSTER_NETWORK, CLUSTER_SUBNET: see scripts/cluster.sh
#                           (default dcha, dcha-net, 10.215.0.0/24: not the suites')

# Most checks are functions run through check(); shellcheck cannot see those calls.
# shellcheck disable=SC2317
set -euo pipefail

usage() { echo "usage: $0   (starts a 4-node Swarm of containers with the HA Redis of stack.ha.yaml, strikes the primary's node four ways, measures each, takes it down; see the header for env)"; }
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
NODES=4
WORKERS="${WORKERS:-30}"
RATE_SECONDS="${RATE_SECONDS:-15}"
HOLD_SECONDS="${HOLD_SECONDS:-15}"
PARTITION_SECONDS="${PARTITION_SECONDS:-30}"
FAILOVER_MAX="${FAILOVER_MAX:-15}"
STACK="${STACK:-dockercoins}"
export TAG="${TAG:-latest}"
export BUILD="${BUILD:-auto}"
WAIT_SECONDS="${WAIT_SECONDS:-120}"
SKIP_SEED="${SKIP_SEED:-0}"
export NODE_PREFIX="${NODE_PREFIX:-dcha}"
export CLUSTER_NETWORK="${CLUSTER_NETWORK:-dcha-net}"
export CLUSTER_SUBNET="${CLUSTER_SUBNET:-10.215.0.0/24}"
export MANAGERS=3
export NODE_STORAGE=volume
CLUSTER="$ROOT/scripts/cluster.sh"
LABEL="org.dockercoins.cluster=$CLUSTER_NETWORK"
node() { echo "${NODE_PREFIX}$1"; }
MGR="$(node 1)"
REDIS_SERVICES=(redis redis-replica-1 redis-replica-2)
STACK_FILES=(-c stack.yaml -c docker/swarm/swarm-override.yaml -c scripts/test/fixtures/cluster-workers.yaml
  -c scripts/test/fixtures/cluster-ha.yaml -c stack.ha.yaml -c scripts/test/fixtures/cluster-redis-ha.yaml)

STARTED=$SECONDS
TEST_NAME=cluster-redis-ha
# shellcheck source=scripts/test/lib/lib.sh
source "$ROOT/scripts/test/lib/lib.sh"
# shellcheck source=scripts/test/lib/cluster-lib.sh
source "$ROOT/scripts/test/lib/cluster-lib.sh"
WORK="$(mktemp -d /tmp/cluster-redis-ha.XXXXXX)"
SAMPLES="$WORK/samples.jsonl"
touch "$SAMPLES"
CLUSTER_CREATED=0
SAMPLER_PID=""
COLLECTOR_PID=""
declare -A ROW=()

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  rm -f "$WORK/collecting"
  [[ -z "$SAMPLER_PID" ]] || kill "$SAMPLER_PID" 2>/dev/null
  [[ -z "$COLLECTOR_PID" ]] || kill "$COLLECTOR_PID" 2>/dev/null
  if ((CLUSTER_CREATED)); then
    log "cleaning up: scripts/cluster.sh down"
    "$CLUSTER" down >/dev/null
  fi
  if [[ -n "${KEEP_WORK:-}" ]]; then log "samples and logs kept in $WORK"; else rm -rf "$WORK"; fi
  return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the cluster, seen from node 1 (never struck) -------------------------------------------

on_mgr() { timeout 30 docker exec -w /dockercoins "$MGR" "$@"; }
node_status() {
  on_mgr docker node ls --format '{{.Hostname}} {{.Status}} {{.Availability}}' 2>/dev/null | awk -v n="$1" '$1 == n { print $2, $3 }'
}
# A command in the running task of a service.
in_task() { # service command...
  local where
  where="$(task_of "$1")" || return 1
  shift
  # shellcheck disable=SC2086
  set -- $where "$@"
  timeout 10 docker exec "$1" docker exec "$2" "${@:3}"
}
everything_running() {
  local svc
  for svc in "${REDIS_SERVICES[@]}" sentinel-1 sentinel-2 sentinel-3 hasher webui; do
    [[ "$(count_running "$svc")" -ge 1 ]] || return 1
  done
  [[ "$(count_running rng)" -eq "$NODES" && "$(count_running worker)" -eq "$WORKERS" ]]
}

# --- the sampler (on node 1, on the stack's overlay) ------------------------------------------

# One sample, every 0.5 s: the primary the Sentinels name (as the services
# choose it: the answer with the highest config epoch, since a Sentinel that
# was cut off or restarted names the old primary until it hears the others),
# the time once all have answered (a struck node's Sentinel takes its whole
# timeout), and on that primary hashes, the wallet's entries and its replicas.
# shellcheck disable=SC2016
SAMPLE_LUA='local info = redis.call("INFO", "replication")
return cjson.encode({p = ARGV[1], t = tonumber(ARGV[2]), h = tonumber(redis.call("GET", "hashes") or "0"),
  w = redis.call("HLEN", "wallet"), r = tonumber(string.match(info, "connected_slaves:(%d+)") or "0"),
  role = string.match(info, "role:(%a+)")})'
# shellcheck disable=SC2016
SAMPLER_SH='while :; do
  p=""
  best=-1
  for s in sentinel-1 sentinel-2 sentinel-3; do
    e=$(timeout 1 redis-cli -h "$s" -p 26379 --raw SENTINEL master mymaster 2>/dev/null | awk "k == \"config-epoch\" { print; exit } { k = \$0 }")
    a=$(timeout 1 redis-cli -h "$s" -p 26379 --raw SENTINEL get-master-addr-by-name mymaster 2>/dev/null | head -n 1)
    if [ -n "$a" ] && [ -n "$e" ] && [ "$e" -gt "$best" ]; then best=$e; p=$a; fi
  done
  t=$(date +%s.%N)
  if [ -n "$p" ]; then timeout 1 redis-cli -h "$p" --raw EVAL "$0" 0 "$p" "$t" 2>/dev/null | grep "^{" || echo "{\"t\": $t, \"p\": \"$p\"}"
  else echo "{\"t\": $t}"; fi
  sleep 0.5
done'
start_sampler() {
  docker exec "$MGR" docker rm -f dockercoins-sampler >/dev/null 2>&1 || true
  docker exec "$MGR" docker run --rm --name dockercoins-sampler --network "${STACK}_default" --entrypoint sh redis:7 \
    -c "$SAMPLER_SH" "$SAMPLE_LUA" >>"$SAMPLES" 2>/dev/null &
  SAMPLER_PID=$!
}
last() { samples | jq -rs --arg k "$1" '[.[] | select(.h != null)] | .[-1][$k] // empty'; }
primary() { last p; }
# The node the primary's task runs on.
primary_node() { running_on "$(primary)" | head -n 1; }
# The primary is $1 and has $2 replicas, in the last sample.
primary_has() { [[ "$(last r)" -ge "$1" ]] 2>/dev/null; }
counting_since() { # t: hashes grew after t
  samples | jq -es --argjson a "$1" '([.[] | select(.h != null and .t <= $a)] | .[-1].h // 0) as $h0
    | [.[] | select(.h != null and .t > $a)] | length > 0 and .[-1].h > $h0' >/dev/null
}
new_primary_since() { # t old: prints seconds from t to the first sample naming another primary
  samples | jq -rs --argjson a "$1" --arg old "$2" '
    [.[] | select(.t > $a and .h != null and .p != $old)] | if length == 0 then "none" else (.[0].t - $a | . * 10 | round / 10 | tostring) end'
}
# Longest time between $1 and $2 in which hashes did not grow (from the samples that answered).
stalled() {
  samples | jq -rs --argjson a "$1" --argjson b "$2" '
    [.[] | select(.h != null and .t >= $a and .t <= $b)] as $s
    | reduce range(1; $s | length) as $i ({from: ($s[0].t), h: ($s[0].h), max: 0};
        if $s[$i].h > .h then .max = ([.max, $s[$i].t - .from] | max) | .from = $s[$i].t | .h = $s[$i].h else . end)
    | ([.max, ($s[-1].t - .from)] | max) | . * 10 | round / 10 | tostring'
}

# --- the exact accounting: every worker process so far, from its log on node 1 ----------------

WORKER_NODE="$(node 1)"
# A manager that has just joined again can make the raft miss a request's
# deadline ("context deadline exceeded") and still apply it. The scale is asked
# again only if the service's spec does not have it a few seconds later: a
# second request while the tasks stop makes Swarm signal them twice, and a
# worker's second SIGTERM stops it at once, without its summary.
worker_replicas() { on_mgr docker service inspect --format '{{.Spec.Mode.Replicated.Replicas}}' "${STACK}_worker" 2>/dev/null; }
scale_workers() { # n: scales and waits
  local tries=0
  until [[ "$(worker_replicas)" == "$1" ]]; do
    if ((tries++ == 10)); then
      cat "$WORK/scale.err" >&2
      return 1
    fi
    on_mgr docker service scale --detach "${STACK}_worker=$1" >/dev/null 2>"$WORK/scale.err" || sleep 5
  done
  wait_for "$WAIT_SECONDS" bash -c "[[ \$(docker exec $MGR docker ps -q --filter label=com.docker.swarm.service.name=${STACK}_worker | wc -l) -eq $1 ]]" >/dev/null
}
# Every worker container of node 1 has its log followed into $WORK/worker-<id>.log
# from its start (Swarm may remove the containers of a service scaled down).
collect_logs() {
  local cid
  while [[ -e "$WORK/collecting" ]]; do
    # Not a container only created: `docker logs -f` would end at once, empty.
    for cid in $(docker exec "$WORKER_NODE" docker ps -aq --no-trunc --filter status=running --filter status=exited \
      --filter "label=com.docker.swarm.service.name=${STACK}_worker" 2>/dev/null); do
      [[ ! -e "$WORK/worker-$cid.log" ]] || continue
      docker exec "$WORKER_NODE" docker logs -f "$cid" >"$WORK/worker-$cid.log" 2>&1 &
    done
    sleep 1
  done
}
followers_done() { ! pgrep -f "docker exec $WORKER_NODE docker logs -f" >/dev/null; }
# "processes done counted resent refused unconfirmed restored coins missing lost" over every worker process so far
# (lost: the units their exit lines say were not confirmed by a replica or lost).
workers_accounting() {
  local f
  for f in "$WORK"/worker-*.log; do
    grep -o '[0-9]* units of work done in all, [0-9]* counted in redis, [0-9]* not confirmed by a replica, [0-9]* lost' "$f" |
      tail -n 1 | sed 's/^/summary /' || echo "summary none"
    grep -o 'batches: [0-9]* sent again, [0-9]* refused by redis, [0-9]* not confirmed by a replica, [0-9]* restored' "$f" | tail -n 1 || true
    echo "coins $(grep -c 'Coin found: ' "$f" || true)"
  done >"$WORK/workers.txt"
  awk '$1 == "summary" && $2 == "none" { missing++ }
       $1 == "summary" && $2 != "none" { n++; done += $2; counted += $9; lost += $13 + $(NF - 1) }
       $1 == "batches:" { resent += $2; refused += $5; unconfirmed += $9; restored += $15 }
       $1 == "coins" { coins += $2 }
       END { printf "%d %d %d %d %d %d %d %d %d %d\n", n, done, counted, resent, refused, unconfirmed, restored, coins, missing, lost }' "$WORK/workers.txt"
}
# Stops the workers, checks every unit and coin so far, starts them again.
account() { # fault
  local f="$1" n units counted resent refused unconfirmed restored coins missing lost hashes wallet
  log "$f: scaling the workers to 0 for the accounting"
  scale_workers 0 || fail "$f: the workers stopped within $WAIT_SECONDS s"
  wait_for 30 followers_done >/dev/null || fail "$f: the workers' logs read to their end"
  sleep 1.5
  hashes="$(last h)"
  wallet="$(last w)"
  read -r n units counted resent refused unconfirmed restored coins missing lost <<<"$(workers_accounting)"
  ROW[$f.account]="$n worker processes so far: $units units done, $counted counted by them, hashes = $hashes; coins found $coins, wallet $wallet"
  ROW[$f.batches]="sent again $resent, refused $refused, not confirmed $unconfirmed, restored $restored (all processes so far)"
  check "$f: every worker process logged its summary ($missing without)" test "$missing" -eq 0
  check "$f: units done == counted by redis, exactly ($units, $counted), none unconfirmed or lost ($lost)" test "$units" -eq "$counted" -a "$lost" -eq 0
  check "$f: units the workers counted == hashes, exactly ($counted, $hashes)" test "$counted" = "$hashes"
  check "$f: coins found == wallet entries ($coins, $wallet)" test "$coins" = "$wallet"
  scale_workers "$WORKERS" || fail "$f: $WORKERS workers running again within $WAIT_SECONDS s"
}

# --- reporting -----------------------------------------------------------------------------------

FAULTS=(drain kill cut sentinel)
declare -A TITLE=(
  [drain]="1. drain the primary's node for $HOLD_SECONDS s, activate"
  [kill]="2. kill the primary's node, start it $HOLD_SECONDS s later"
  [cut]="3. cut the primary's node off for $PARTITION_SECONDS s, heal"
  [sentinel]="4. kill a Sentinel's (and replica's) node, start it $HOLD_SECONDS s later"
)
summary() {
  local f
  echo
  echo "=== DockerCoins HA Redis on Swarm ($NODES nodes as containers; primary, 2 replicas, 3 Sentinels on nodes 2-4; $WORKERS workers on node 1) ==="
  printf '  %-44s %s\n' "cluster start (MANAGERS=3 NODE_STORAGE=volume scripts/cluster.sh up 4)" "${ROW[up]:-?} s" \
    "stack deploy -> every task running" "${ROW[deploy]:-?} s"
  for f in "${FAULTS[@]}"; do
    echo "  ${TITLE[$f]}: ${ROW[$f.node]:-?}"
    printf '    %-40s %s\n' \
      "new primary after" "${ROW[$f.failover]:-?}" \
      "longest time nothing counted" "${ROW[$f.stalled]:-?} s" \
      "rate before / during / after (hashes/s)" "${ROW[$f.before]:-?} / ${ROW[$f.during]:-?} / ${ROW[$f.after]:-?}" \
      "back as a replica" "${ROW[$f.back]:-?}" \
      "accounting" "${ROW[$f.account]:-?}" \
      "batches" "${ROW[$f.batches]:-?}"
    [[ -z "${ROW[$f.note]:-}" ]] || printf '    %-40s %s\n' "the cut-off side" "${ROW[$f.note]}"
  done
  printf '  %-44s %s\n' "whole run" "$((SECONDS - STARTED)) s"
  echo "$PASSED passed, $FAILED failed"
}
# Rates and the stall of a fault: before [b0, t0], during [t0, t1], after [a0, a1].
fault_figures() { # fault b0 t0 t1 a0 a1
  ROW[$1.before]="$(rate "$2" "$3")"
  ROW[$1.during]="$(rate "$3" "$4")"
  ROW[$1.after]="$(rate "$5" "$6")"
  ROW[$1.stalled]="$(stalled "$2" "$6")"
}
after_window() { # prints "a0 a1"
  local a0
  sleep 3
  a0="$(now)"
  sleep "$RATE_SECONDS"
  echo "$a0 $(now)"
}
before_window() { # prints b0 after RATE_SECONDS of counting
  local b0
  sleep 3
  b0="$(now)"
  sleep "$RATE_SECONDS"
  echo "$b0"
}
# The stopped Redis is back, as a replica: the primary has 2 replicas again.
wait_replicas_back() { # fault t1
  local took
  if took="$(wait_for "$WAIT_SECONDS" primary_has 2)"; then
    ROW[$1.back]="the primary has its 2 replicas again $(since "$2") s after"
    pass "$1: the primary ($(primary)) has 2 replicas again, $(since "$2") s after"
  else
    ROW[$1.back]="timeout"
    fail "$1: the primary has 2 replicas within $WAIT_SECONDS s"
  fi
  : "$took"
}
failover_check() { # fault t0 old
  local took
  if took="$(wait_for "$WAIT_SECONDS" bash -c "[[ \"\$(jq -cR 'fromjson? | select(.h != null) | .p' '$SAMPLES' | tail -n 1)\" != '\"$3\"' ]]")"; then
    ROW[$1.failover]="$(new_primary_since "$2" "$3") s ($3 -> $(primary))"
    check "$1: a new primary ($(primary)) within $FAILOVER_MAX s ($(new_primary_since "$2" "$3") s)" \
      between "$(new_primary_since "$2" "$3")" 0 "$FAILOVER_MAX"
  else
    ROW[$1.failover]="none within $WAIT_SECONDS s"
    fail "$1: a new primary within $WAIT_SECONDS s"
  fi
  : "$took"
  wait_for 30 counting_since "$(now)" >/dev/null || fail "$1: counting again after the failover"
}

# --- prerequisites ---------------------------------------------------------------------------------

for tool in docker jq awk timeout; do
  command -v "$tool" >/dev/null || { echo "cluster-redis-ha: $tool is missing; install it (apt-get install -y $tool)" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "cluster-redis-ha: cannot talk to the Docker engine; is dockerd running?" >&2; exit 1; }
if [[ -n "$(docker ps -aq --filter "label=$LABEL")" ]] || docker network inspect "$CLUSTER_NETWORK" >/dev/null 2>&1; then
  echo "cluster-redis-ha: a cluster is up already on $CLUSTER_NETWORK; take it down (scripts/cluster.sh down with the same env) or set CLUSTER_NETWORK/CLUSTER_SUBNET/NODE_PREFIX" >&2
  exit 1
fi
if [[ "$SKIP_SEED" != 1 ]]; then
  "$ROOT/scripts/test/lib/compose-plugin.sh"
  "$ROOT/scripts/test/lib/seed-images.sh"
fi

# --- the cluster and the stack ------------------------------------------------------------------------

log "MANAGERS=3 NODE_STORAGE=volume scripts/cluster.sh up $NODES"
CLUSTER_CREATED=1
t0=$SECONDS
if "$CLUSTER" up "$NODES" > >(sed 's/^/    /'); then
  ROW[up]=$((SECONDS - t0))
  pass "scripts/cluster.sh up $NODES: the cluster started in ${ROW[up]} s"
else
  abort "scripts/cluster.sh up $NODES"
fi

log "stack deploy with stack.ha.yaml: redis on $(node 2), redis-replica-1 on $(node 3), redis-replica-2 on $(node 4), $WORKERS workers on $(node 1)"
t0=$SECONDS
if ! out="$(docker exec -w /dockercoins -e WORKERS="$WORKERS" -e TAG="$TAG" \
  -e REDIS_PLACEMENT="node.hostname == $(node 2)" \
  -e REDIS_REPLICA_1_PLACEMENT="node.hostname == $(node 3)" \
  -e REDIS_REPLICA_2_PLACEMENT="node.hostname == $(node 4)" \
  -e WORKER_PLACEMENT="node.hostname == $(node 1)" \
  "$MGR" docker stack deploy "${STACK_FILES[@]}" "$STACK" 2>&1)"; then
  echo "$out" >&2
  abort "docker stack deploy"
fi
if wait_for "$WAIT_SECONDS" everything_running >/dev/null; then
  ROW[deploy]=$((SECONDS - t0))
  pass "every task running after ${ROW[deploy]} s"
else
  on_mgr docker service ls >&2 || true
  abort "the stack converged within $WAIT_SECONDS s"
fi
start_sampler
touch "$WORK/collecting"
collect_logs &
COLLECTOR_PID=$!
if wait_for 90 primary_has 2 >/dev/null && [[ "$(primary)" == redis ]]; then
  pass "the Sentinels name redis the primary, with its 2 replicas"
else
  tail -n 3 "$SAMPLES" >&2
  abort "the Sentinels name redis the primary, with 2 replicas, within 90 s"
fi
wait_for 60 counting_since "$(now)" >/dev/null || abort "redis counts no hash within 60 s"
# A failover the Sentinels tried while the stack was starting (no replica in
# sync yet) delays their next one by twice failover-timeout: let that pass.
sleep 25

# --- 1. drain the primary's node ----------------------------------------------------------------------------

b0="$(before_window)"
old="$(primary)"
target="$(primary_node)"
ROW[drain.node]="$target ($old)"
log "fault 1: scripts/cluster.sh drain $target (the primary, $old)"
t0="$(now)"
"$CLUSTER" drain "$target" | sed 's/^/    /'
failover_check drain "$t0" "$old"
sleep "$(awk -v a="$(now)" -v b="$t0" -v h="$HOLD_SECONDS" 'BEGIN { r = h - (a - b); print (r > 0 ? r : 0) }')"
log "scripts/cluster.sh activate $target"
t1="$(now)"
"$CLUSTER" activate "$target" | sed 's/^/    /'
wait_replicas_back drain "$t1"
read -r a0 a1 <<<"$(after_window)"
fault_figures drain "$b0" "$t0" "$t1" "$a0" "$a1"
account drain

# --- 2. kill the primary's node --------------------------------------------------------------------------------

b0="$(before_window)"
old="$(primary)"
target="$(primary_node)"
ROW[kill.node]="$target ($old)"
log "fault 2: scripts/cluster.sh kill $target (the primary, $old)"
t0="$(now)"
"$CLUSTER" kill "$target" | sed 's/^/    /'
failover_check kill "$t0" "$old"
sleep "$(awk -v a="$(now)" -v b="$t0" -v h="$HOLD_SECONDS" 'BEGIN { r = h - (a - b); print (r > 0 ? r : 0) }')"
log "scripts/cluster.sh start $target"
t1="$(now)"
"$CLUSTER" start "$target" | sed 's/^/    /'
wait_replicas_back kill "$t1"
wait_for "$WAIT_SECONDS" everything_running >/dev/null || fail "kill: every task running again"
read -r a0 a1 <<<"$(after_window)"
fault_figures kill "$b0" "$t0" "$t1" "$a0" "$a1"
account kill

# --- 3. cut the primary's node off -------------------------------------------------------------------------------

b0="$(before_window)"
old="$(primary)"
target="$(primary_node)"
cut_task="$(task_of "$old")" || abort "the primary's container on $target"
read -r _ cut_cid <<<"$cut_task"
on_cut() { timeout 10 docker exec "$target" docker exec "$cut_cid" "$@"; }
cut_sentinel=""
for s in sentinel-1 sentinel-2 sentinel-3; do
  if [[ "$(running_on "$s")" == "$target" ]]; then
    cut_sentinel="$(docker exec "$target" docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_$s" | head -n 1)"
  fi
done
ROW[cut.node]="$target ($old)"
log "fault 3: scripts/cluster.sh cut $target (the primary, $old), heal after $PARTITION_SECONDS s"
t0="$(now)"
"$CLUSTER" cut "$target" | sed 's/^/    /'
# On the cut-off side, every second: does the old primary take a write?
refused_after=""
took_writes=0
cut_hashes0="$(on_cut redis-cli --raw GET hashes || echo '?')"
while awk -v a="$(now)" -v b="$t0" -v p="$PARTITION_SECONDS" 'BEGIN { exit !(a - b < p) }'; do
  if answer="$(on_cut redis-cli --raw SET dockercoins:cut-probe "$(now)" 2>&1)"; then
    if [[ "$answer" == OK ]]; then
      took_writes=$((took_writes + 1))
    elif [[ "$answer" == NOREPLICAS* && -z "$refused_after" ]]; then
      refused_after="$(since "$t0")"
    fi
  fi
  if [[ -z "${ROW[cut.failover]:-}" && "$(new_primary_since "$t0" "$old")" != none ]]; then
    ROW[cut.failover]="$(new_primary_since "$t0" "$old") s ($old -> $(primary))"
  fi
  sleep 1
done
cut_hashes1="$(on_cut redis-cli --raw GET hashes || echo '?')"
cut_view="$(timeout 10 docker exec "$target" docker exec "$cut_sentinel" redis-cli -p 26379 --raw SENTINEL get-master-addr-by-name mymaster 2>/dev/null | head -n 1 || echo '?')"
log "scripts/cluster.sh heal $target"
t1="$(now)"
"$CLUSTER" heal "$target" | sed 's/^/    /'
if [[ -z "${ROW[cut.failover]:-}" ]]; then
  failover_check cut "$t0" "$old"
else
  check "cut: a new primary on the other side within $FAILOVER_MAX s (${ROW[cut.failover]})" \
    between "$(new_primary_since "$t0" "$old")" 0 "$FAILOVER_MAX"
fi
# min-replicas-max-lag (10 s) after the replicas' last acknowledgement (each
# second) before the cut took effect (cluster.sh cut applies its rules node by
# node after t0: 1-2 s), read by a probe that goes through two `docker exec`s
# about every 1.5 s: measured 12.3-13.5 s here.
check "cut: the cut-off primary refused writes (NOREPLICAS) within 16 s (after ${refused_after:-never} s)" \
  between "${refused_after:-999}" 0 16
check "cut: the cut-off primary's hashes did not grow ($cut_hashes0 -> $cut_hashes1: no worker reached it)" test "$cut_hashes0" = "$cut_hashes1"
wait_replicas_back cut "$t1"
# After the heal Swarm may replace the cut-off node's task (the old container
# stops, a new one starts, which asks the Sentinels for the primary): the
# Redis that counts is the service's running task, whichever it is.
cut_now=""
cut_role=""
cut_is_replica() {
  local node cid
  read -r node cid <<<"$(task_of "$old")" || return 1
  cut_now="$cid"
  cut_role="$(timeout 10 docker exec "$node" docker exec "$cid" redis-cli --raw ROLE 2>/dev/null | head -n 2 | xargs)" || return 1
  [[ "$cut_role" == "slave $(primary)" ]]
}
took="$(wait_for "$WAIT_SECONDS" cut_is_replica)" || true
cut_ok=0
cut_is_replica && cut_ok=1
replaced="the same task"
[[ -z "$cut_now" || "$cut_now" == "$cut_cid" ]] || replaced="a new task (Swarm replaced the cut-off one)"
check "cut: after the heal, $old ($replaced) is a replica of the new primary (ROLE $cut_role, $took s after the replicas were back)" \
  test "$cut_ok" -eq 1
# How its tasks started (docker/redis-ha/start.sh says what the Sentinels named).
on_mgr docker service logs --raw "${STACK}_$old" >"$WORK/$old.log" 2>&1 || true
cut_starts="$(grep -o 'start.sh: .*' "$WORK/$old.log" | paste -sd ';' - || true)"
ROW[cut.note]="$old took $took_writes probe writes, refused them (NOREPLICAS) from ${refused_after:-never} s; its hashes stayed $cut_hashes0 -> $cut_hashes1; its Sentinel still named $cut_view; after the heal, $replaced: ROLE $cut_role; its starts: ${cut_starts:-none logged}"
read -r a0 a1 <<<"$(after_window)"
fault_figures cut "$b0" "$t0" "$t1" "$a0" "$a1"
account cut

# --- 4. kill a Sentinel's node (not the primary's) ------------------------------------------------------------------

b0="$(before_window)"
old="$(primary)"
pnode="$(primary_node)"
target=""
for i in 2 3 4; do [[ "$(node "$i")" == "$pnode" ]] || { target="$(node "$i")"; break; }; done
ROW[sentinel.node]="$target (the primary, $old, is on $pnode)"
log "fault 4: scripts/cluster.sh kill $target (a Sentinel and a replica; the primary $old is on $pnode)"
t0="$(now)"
"$CLUSTER" kill "$target" | sed 's/^/    /'
sleep "$HOLD_SECONDS"
log "scripts/cluster.sh start $target"
t1="$(now)"
"$CLUSTER" start "$target" | sed 's/^/    /'
ROW[sentinel.failover]="$(new_primary_since "$t0" "$old") (the primary stays $old)"
check "sentinel: no failover (the primary stays $old)" test "$(new_primary_since "$t0" "$old")" = none
wait_replicas_back sentinel "$t1"
wait_for "$WAIT_SECONDS" everything_running >/dev/null || fail "sentinel: every task running again"
read -r a0 a1 <<<"$(after_window)"
fault_figures sentinel "$b0" "$t0" "$t1" "$a0" "$a1"
check "sentinel: counting never stopped more than 5 s (${ROW[sentinel.stalled]} s)" between "${ROW[sentinel.stalled]}" 0 5
account sentinel

# --- down ---------------------------------------------------------------------------------------------------------

kill "$SAMPLER_PID" 2>/dev/null || true
SAMPLER_PID=""
rm -f "$WORK/collecting"
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
