# What the scripts that use the local Swarm share: the tasks of a service and
# where they run, polling with a deadline, the samples of `hashes` and rates
# read from them, and taking the cluster down with its checks. Source it after
# lib.sh; the tasks and samples need a script that defines `on_mgr` (runs a
# command on a manager that answers) and sets STACK (the stack's name) and
# SAMPLES (a file of JSON samples, one a line, each with its time `t` and,
# when Redis answered, `hashes` as `h`).
# shellcheck shell=bash disable=SC2034

# Nodes of the running tasks of a service, one a line (desired running, state Running).
running_on() {
  on_mgr docker service ps "${STACK}_$1" --filter desired-state=running --format '{{.Node}} {{.CurrentState}}' 2>/dev/null |
    awk '$2 == "Running" { print $1 }'
}
count_running() { running_on "$1" | grep -c . || true; }
# "node container-id" of the running task of a service.
task_of() {
  local n cid
  n="$(running_on "$1" | head -n 1)"
  [[ -n "$n" ]] || return 1
  cid="$(docker exec "$n" docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_$1" | head -n 1)"
  [[ -n "$cid" ]] || return 1
  echo "$n $cid"
}

# wait_for seconds command...: polls every 0.5 s; prints the seconds it took, or "timeout".
wait_for() {
  local limit="$1" t0
  shift
  t0="$(now)"
  while ! "$@"; do
    if awk -v a="$t0" -v b="$(now)" -v l="$limit" 'BEGIN { exit !(b - a > l) }'; then
      echo "timeout"
      return 1
    fi
    sleep 0.5
  done
  elapsed "$t0" "$(now)"
}
since() { elapsed "$1" "$(now)"; }

# The samples that parse, one JSON object a line.
samples() { jq -cR 'fromjson? | select(type == "object" and .t != null)' "$SAMPLES" 2>/dev/null; }
# Rate between two times, from the first sample at or after $1 and the last at or before $2.
rate() {
  samples | jq -rs --argjson a "$1" --argjson b "$2" '
    [.[] | select(.h != null and .t >= $a and .t <= $b)] as $s
    | if ($s | length) < 2 or ($s[-1].t - $s[0].t) < 1 then "n/a"
      else (($s[-1].h - $s[0].h) / ($s[-1].t - $s[0].t) * 10 | round / 10 | tostring) end'
}

# `scripts/cluster.sh down`, and nothing of the cluster left: no node
# container, no network, no cgroup of a container the nodes ran. Needs CLUSTER
# (the path of scripts/cluster.sh), LABEL (the nodes' label), NODES,
# NODE_PREFIX and CLUSTER_NETWORK; counts its checks with check/pass/fail;
# sets CLUSTER_DOWN=1 and DOWN_SECONDS when `down` worked. (Used by the
# scripts that take the cluster down: cluster-e2e.sh, cluster-metrics.sh.)
DOWN_INNER_IDS=()
DOWN_SECONDS=""
nodes_gone() {
  local i
  [[ -z "$(docker ps -aq --filter "label=$LABEL")" ]] || return 1
  for i in $(seq 1 "$NODES"); do
    if docker container inspect "${NODE_PREFIX}$i" >/dev/null 2>&1; then return 1; fi
  done
}
cgroups_gone() {
  local id dir
  for id in "${DOWN_INNER_IDS[@]}"; do
    for dir in /sys/fs/cgroup/*/docker/"$id" /sys/fs/cgroup/docker/"$id"; do
      if [[ -d "$dir" ]]; then echo "    left: $dir"; return 1; fi
    done
  done
}
cluster_down_checked() {
  local i id node_volumes t0
  DOWN_INNER_IDS=()
  for i in $(seq 1 "$NODES"); do
    for id in $(docker exec "${NODE_PREFIX}$i" docker ps -aq --no-trunc 2>/dev/null); do DOWN_INNER_IDS+=("$id"); done
  done
  node_volumes="$(docker ps -aq --filter "label=$LABEL" | xargs -r docker inspect -f '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}' | xargs)"
  check "the nodes use no Docker volume (their engines' data is on tmpfs)" test -z "$node_volumes"
  t0=$SECONDS
  if "$CLUSTER" down > >(sed 's/^/    /'); then
    CLUSTER_DOWN=1
    DOWN_SECONDS=$((SECONDS - t0))
    pass "scripts/cluster.sh down in $DOWN_SECONDS s"
  else
    fail "scripts/cluster.sh down"
  fi
  check "no node container is left" nodes_gone
  check "the network $CLUSTER_NETWORK is gone" bash -c "! docker network inspect '$CLUSTER_NETWORK' >/dev/null 2>&1"
  check "none of the ${#DOWN_INNER_IDS[@]} containers the nodes ran left a cgroup behind" cgroups_gone
}
