#!/usr/bin/env bash
# The workshop's Swarm chapter, step by step, with our images (pushed by scripts/push.sh).
# Each step prints the commands it runs and waits (at most WAIT_SECONDS) until
# the services it touched run.
#
#   network   docker network create --driver overlay --attachable dockercoins
#   services  docker service create --network dockercoins --name redis redis:7
#             docker service create --network dockercoins --name <svc> $REGISTRY/<svc>:$TAG
#                                                             (hasher, rng, webui, worker)
#   publish   docker service update webui --publish-add 8000:80
#             (the web UI is then on port 8000 of every node; `docker service ps webui`
#             shows the old task shut down)
#   scale     docker service update worker --replicas 10      (the 10 hashes/s plateau)
#   global    docker service rm rng, then docker service create ... --mode global rng
#             (a scaled service cannot become global in place; one rng per node)
#
# scripts/swarm/clean-up.sh removes what this made.
#
# Usage: scripts/swarm/manual-flow.sh [network|services|publish|scale|global ...]
#        (default: all five, in that order)
# Env:   REGISTRY       default 127.0.0.1:5000      TAG  default latest
#        NETWORK        overlay network (default dockercoins)
#        REDIS_IMAGE    default redis:7
#        WORKERS        replicas in the scale step (default 10)
#        WEBUI_PORT     published port of the web UI (default 8000)
#        PUBLISH_MODE   ingress | host (default ingress, the routing mesh)
#        ENDPOINT_MODE  vip | dnsrr (default vip)
#        WAIT_SECONDS   longest wait for a step to converge (default 120)
set -euo pipefail
SCRIPT=manual-flow

usage() { echo "usage: $0 [network|services|publish|scale|global ...]   (default: all, in order; see the header for env)"; }

# shellcheck source=scripts/swarm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
REGISTRY="${REGISTRY:-127.0.0.1:5000}"
TAG="${TAG:-latest}"
NETWORK="${NETWORK:-dockercoins}"
REDIS_IMAGE="${REDIS_IMAGE:-redis:7}"
WORKERS="${WORKERS:-10}"
WEBUI_PORT="${WEBUI_PORT:-8000}"
PUBLISH_MODE="${PUBLISH_MODE:-ingress}"
ENDPOINT_MODE="${ENDPOINT_MODE:-vip}"

steps=()
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    network | services | publish | scale | global) steps+=("$arg") ;;
    *) usage >&2; exit 2 ;;
  esac
done
if [[ ${#steps[@]} -eq 0 ]]; then
  steps=(network services publish scale global)
fi
case "$PUBLISH_MODE" in
  ingress) publish="$WEBUI_PORT:80" ;;
  host) publish="published=$WEBUI_PORT,target=80,mode=host" ;;
  *) echo "$SCRIPT: PUBLISH_MODE must be ingress or host (got '$PUBLISH_MODE')" >&2; exit 2 ;;
esac
case "$ENDPOINT_MODE" in
  vip) endpoint=() ;;
  dnsrr) endpoint=(--endpoint-mode dnsrr) ;;
  *) echo "$SCRIPT: ENDPOINT_MODE must be vip or dnsrr (got '$ENDPOINT_MODE')" >&2; exit 2 ;;
esac
need_swarm_manager

# docker service create, detached (we wait ourselves, with a time limit), printing the command.
create() {
  run_quiet docker service create --detach --quiet --network "$NETWORK" "${endpoint[@]}" "$@"
}

step_network() {
  if network_exists "$NETWORK"; then
    echo "$SCRIPT: network $NETWORK exists already"
  else
    run_quiet docker network create --driver overlay --attachable "$NETWORK"
  fi
}

step_services() {
  local svc
  network_exists "$NETWORK" || { echo "$SCRIPT: no network $NETWORK; run the network step first" >&2; exit 1; }
  if service_exists redis; then
    echo "$SCRIPT: service redis exists already"
  else
    create --name redis "$REDIS_IMAGE"
  fi
  for svc in hasher rng webui worker; do
    if service_exists "$svc"; then
      echo "$SCRIPT: service $svc exists already"
    else
      create --name "$svc" "$REGISTRY/$svc:$TAG"
    fi
  done
  for svc in redis hasher rng webui worker; do
    wait_converged "$svc"
  done
  echo "$SCRIPT: five services running; the worker logs its progress: docker service logs --tail 5 worker"
}

step_publish() {
  run_quiet docker service update --detach --quiet webui --publish-add "$publish"
  wait_update webui
  echo "$SCRIPT: the web UI is on port $WEBUI_PORT$([[ "$PUBLISH_MODE" == ingress ]] && echo ' of every node'); docker service ps webui shows the old task shut down"
}

step_scale() {
  run_quiet docker service update --detach --quiet worker --replicas "$WORKERS"
  wait_converged worker
  echo "$SCRIPT: $WORKERS workers; the web UI shows about 10 hashes/s, the limit of one rng"
}

step_global() {
  if [[ "$(docker service inspect -f '{{if .Spec.Mode.Global}}global{{end}}' rng 2>/dev/null)" == global ]]; then
    echo "$SCRIPT: rng is global already"
  else
    if service_exists rng; then
      run_quiet docker service rm rng
    fi
    # Removal is asynchronous: the name is free again once the old service is gone.
    local deadline=$((SECONDS + WAIT_SECONDS))
    while service_exists rng && ((SECONDS < deadline)); do sleep 1; done
    create --name rng --mode global --hostname "rng-{{.Node.Hostname}}" "$REGISTRY/rng:$TAG"
  fi
  wait_converged rng
  echo "$SCRIPT: one rng per node ($(service_replicas rng)); with enough workers, N nodes give about N x 10 hashes/s"
}

# Waits until an update (or the rollback it triggered) is over; fails unless it completed.
# Right after `docker service update` the status is empty until the updater starts
# replacing tasks; it stays empty if no task needs replacing.
wait_update() {
  local name="$1" deadline=$((SECONDS + WAIT_SECONDS)) blank_until=$((SECONDS + 10)) state=""
  while ((SECONDS < deadline)); do
    state="$(docker service inspect -f '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' "$name")"
    case "$state" in
      completed) wait_converged "$name"; return ;;
      "") if ((SECONDS >= blank_until)); then wait_converged "$name"; return; fi; sleep 1 ;;
      updating | rollback_started) sleep 1 ;;
      *) break ;;
    esac
  done
  echo "$SCRIPT: the update of $name did not complete (state: ${state:-?}); see: docker service ps --no-trunc $name" >&2
  return 1
}

for step in "${steps[@]}"; do
  echo "== $step"
  "step_$step"
done
