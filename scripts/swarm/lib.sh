# Helpers shared by the scripts in scripts/swarm/ (sourced, not run).
# shellcheck shell=bash

WAIT_SECONDS="${WAIT_SECONDS:-120}"

# Prints a command (what an attendee would type), then runs it.
run() {
  echo "+ $*"
  "$@"
}
# The same, with the command's own output (IDs) dropped.
run_quiet() {
  echo "+ $*"
  "$@" >/dev/null
}

need_swarm_manager() {
  command -v docker >/dev/null || { echo "$SCRIPT: docker is not installed" >&2; exit 1; }
  if [[ "$(docker info --format '{{.Swarm.ControlAvailable}}' 2>/dev/null)" != true ]]; then
    echo "$SCRIPT: this Docker engine is not a Swarm manager; run 'docker swarm init' (or run this on a manager node)" >&2
    exit 1
  fi
}

service_exists() { docker service inspect "$1" >/dev/null 2>&1; }
network_exists() { docker network inspect "$1" >/dev/null 2>&1; }

# "<running>/<desired>" for a service, as `docker service ls` shows it.
service_replicas() {
  docker service ls --filter "name=$1" --format '{{.Name}} {{.Replicas}}' |
    awk -v n="$1" '$1 == n { print $2; found = 1 } END { exit !found }'
}

# Waits (at most $2 s, default WAIT_SECONDS) until every task the service wants runs:
# with the images' health checks, a task counts as running once it is healthy.
wait_converged() {
  local name="$1" deadline=$((SECONDS + ${2:-$WAIT_SECONDS})) replicas=""
  while ((SECONDS < deadline)); do
    replicas="$(service_replicas "$name" || true)"
    if [[ "$replicas" =~ ^([0-9]+)/([0-9]+)$ ]] && ((BASH_REMATCH[2] > 0 && BASH_REMATCH[1] == BASH_REMATCH[2])); then
      return 0
    fi
    sleep 1
  done
  echo "$SCRIPT: $name did not converge within ${2:-$WAIT_SECONDS} s (replicas ${replicas:-?}); see: docker service ps --no-trunc $name" >&2
  return 1
}
