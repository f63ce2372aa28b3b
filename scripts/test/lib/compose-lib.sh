# What the Compose test scripts share (compose-e2e, compose-faults, compose-ha).
# Source it after lib.sh, once ROOT, SKIP_SEED, WEBUI_PORT, RNG_PORT and
# HASHER_PORT are set and `compose` is defined.
# shellcheck shell=bash

# The tools, the Compose plugin and the seeded base images, and free published ports.
compose_prerequisites() {
  local tool port
  for tool in docker curl jq awk; do
    command -v "$tool" >/dev/null || { echo "$TEST_NAME: $tool is missing; install it (apt-get install -y $tool)" >&2; exit 1; }
  done
  if [[ "$SKIP_SEED" != 1 ]]; then
    "$ROOT/scripts/test/lib/compose-plugin.sh"
    "$ROOT/scripts/test/lib/seed-images.sh"
  fi
  for port in "$WEBUI_PORT" "$RNG_PORT" "$HASHER_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$TEST_NAME: port $port is in use; free it or set WEBUI_PORT/RNG_PORT/HASHER_PORT" >&2
      exit 1
    fi
  done
}

# wait_healthy SECONDS [SERVICE...]: every container of the project (or of
# these services) is healthy (a container without a health check: its status).
wait_healthy() {
  local deadline=$((SECONDS + $1)) ids id state all
  shift
  while ((SECONDS < deadline)); do
    ids="$(compose ps -q "$@")"
    all=1
    [[ -n "$ids" ]] || all=0
    for id in $ids; do
      state="$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")"
      [[ "$state" == healthy ]] || all=0
    done
    ((all)) && return 0
    sleep 0.5
  done
  return 1
}
