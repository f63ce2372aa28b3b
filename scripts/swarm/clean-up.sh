#!/usr/bin/env bash
# Remove DockerCoins from a Swarm, and nothing else:
#   - the stack $STACK, if it is deployed (docker stack rm);
#   - the services of the manual flow (redis hasher rng webui worker), but only
#     those attached to the $NETWORK network, so that a service of the same name
#     that belongs to someone else stays;
#   - the $NETWORK network, once no container uses it.
# Never `docker service ls -q | xargs docker service rm`: the cluster may run
# other things. The registry and the data volumes stay unless asked for.
#
# Usage: scripts/swarm/clean-up.sh [--registry] [--volumes]
#   --registry   also remove the registry service ($REGISTRY_SERVICE)
#   --volumes    also remove the stack's redis volumes (${STACK}_redis-data, and
#                ${STACK}_redis-replica-1-data, -2-data of stack.ha.yaml)
# Env:   STACK (default dockercoins)  NETWORK (default dockercoins)
#        REGISTRY_SERVICE (default registry)  WAIT_SECONDS (default 120)
set -euo pipefail
SCRIPT=clean-up

usage() { echo "usage: $0 [--registry] [--volumes]   (env: STACK=dockercoins NETWORK=dockercoins REGISTRY_SERVICE=registry)"; }

# shellcheck source=scripts/swarm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
STACK="${STACK:-dockercoins}"
NETWORK="${NETWORK:-dockercoins}"
REGISTRY_SERVICE="${REGISTRY_SERVICE:-registry}"
remove_registry=0
remove_volumes=0
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --registry) remove_registry=1 ;;
    --volumes) remove_volumes=1 ;;
    *) usage >&2; exit 2 ;;
  esac
done
need_swarm_manager

# Retries a removal until it works or WAIT_SECONDS pass: networks and volumes
# stay in use until the containers of the removed tasks are gone.
retry_rm() {
  local deadline=$((SECONDS + WAIT_SECONDS))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "$SCRIPT: '$*' still fails after $WAIT_SECONDS s:" >&2
      "$@" >&2 || true
      return 1
    fi
    sleep 1
  done
  echo "+ $*"
}

# An overlay network stays visible to `docker network inspect` for a moment
# after its removal: "not found" from `docker network rm` means it is gone.
remove_network() {
  local deadline=$((SECONDS + WAIT_SECONDS)) out
  until out="$(docker network rm "$1" 2>&1)" || [[ "$out" == *"not found"* ]]; do
    if ((SECONDS >= deadline)); then
      echo "$SCRIPT: could not remove network $1 within $WAIT_SECONDS s: $out" >&2
      return 1
    fi
    sleep 1
  done
  echo "+ docker network rm $1"
}

status=0

if docker stack ls --format '{{.Name}}' | grep -qx -- "$STACK"; then
  run docker stack rm "$STACK"
fi

if network_exists "$NETWORK"; then
  network_id="$(docker network inspect -f '{{.Id}}' "$NETWORK")"
  for svc in webui worker rng hasher redis; do
    service_exists "$svc" || continue
    if docker service inspect -f '{{range .Spec.TaskTemplate.Networks}}{{.Target}} {{end}}' "$svc" | grep -qw -- "$network_id"; then
      run_quiet docker service rm "$svc"
    else
      echo "$SCRIPT: service $svc is not on network $NETWORK: not DockerCoins', left alone"
    fi
  done
  remove_network "$NETWORK" || status=1
fi

if ((remove_registry)) && service_exists "$REGISTRY_SERVICE"; then
  run_quiet docker service rm "$REGISTRY_SERVICE"
fi

# The stack's network goes with the stack, asynchronously: wait for it.
deadline=$((SECONDS + WAIT_SECONDS))
while network_exists "${STACK}_default" && ((SECONDS < deadline)); do sleep 1; done

if ((remove_volumes)); then
  for volume in redis-data redis-replica-1-data redis-replica-2-data; do
    if docker volume inspect "${STACK}_$volume" >/dev/null 2>&1; then
      retry_rm docker volume rm "${STACK}_$volume" || status=1
    fi
  done
fi

if ((status == 0)); then
  echo "$SCRIPT: DockerCoins removed"
fi
exit "$status"
