#!/usr/bin/env bash
# Start a registry as a Swarm service, as the workshop does, and wait until it answers:
#
#   docker service create --name registry --publish 5000:5000 registry:2
#
# Then scripts/push.sh pushes to 127.0.0.1:5000. Loopback registries need no TLS.
# The default publishes through the routing mesh (port 5000 of every node). Where
# the mesh does not work (no IPVS in the kernel), use PUBLISH_MODE=host: the port
# is then bound on the node that runs the registry only.
#
# Usage: scripts/swarm/start-registry.sh
# Env:   REGISTRY_SERVICE  service name (default registry)
#        REGISTRY_IMAGE    image (default registry:2)
#        REGISTRY_PORT     published port (default 5000)
#        PUBLISH_MODE      ingress | host (default ingress)
#        WAIT_SECONDS      how long to wait for it to answer (default 120)
set -euo pipefail
SCRIPT=start-registry

usage() { echo "usage: $0   (env: REGISTRY_SERVICE=registry REGISTRY_IMAGE=registry:2 REGISTRY_PORT=5000 PUBLISH_MODE=ingress|host)"; }
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

# shellcheck source=scripts/swarm/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
REGISTRY_SERVICE="${REGISTRY_SERVICE:-registry}"
REGISTRY_IMAGE="${REGISTRY_IMAGE:-registry:2}"
REGISTRY_PORT="${REGISTRY_PORT:-5000}"
PUBLISH_MODE="${PUBLISH_MODE:-ingress}"

case "$PUBLISH_MODE" in
  ingress) publish="$REGISTRY_PORT:5000" ;;
  host) publish="published=$REGISTRY_PORT,target=5000,mode=host" ;;
  *) echo "$SCRIPT: PUBLISH_MODE must be ingress or host (got '$PUBLISH_MODE')" >&2; exit 2 ;;
esac
need_swarm_manager

if service_exists "$REGISTRY_SERVICE"; then
  echo "$SCRIPT: service $REGISTRY_SERVICE exists already; waiting for it to answer"
else
  run_quiet docker service create --detach --quiet --name "$REGISTRY_SERVICE" --publish "$publish" "$REGISTRY_IMAGE"
fi
wait_converged "$REGISTRY_SERVICE"
deadline=$((SECONDS + WAIT_SECONDS))
until curl -fs -o /dev/null --max-time 3 "http://127.0.0.1:$REGISTRY_PORT/v2/"; do
  if ((SECONDS >= deadline)); then
    echo "$SCRIPT: nothing answers at http://127.0.0.1:$REGISTRY_PORT/v2/ after $WAIT_SECONDS s; if the routing mesh does not work here, remove the service (docker service rm $REGISTRY_SERVICE) and re-run with PUBLISH_MODE=host" >&2
    exit 1
  fi
  sleep 1
done
echo "$SCRIPT: registry answers at 127.0.0.1:$REGISTRY_PORT; next: scripts/push.sh"
