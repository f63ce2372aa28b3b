#!/usr/bin/env bash
# End-to-end test of the Swarm chapter: registry, scripts/push.sh, stack.yaml and
# the manual-flow scripts, on a single-node Swarm of this machine.
#
# The kernel here has no IPVS: virtual IPs and the ingress routing mesh do not
# work, DNS round-robin endpoints and host-mode ports do. So the stack is
# deployed with docker/swarm/swarm-override.yaml and the manual flow with
# ENDPOINT_MODE=dnsrr PUBLISH_MODE=host, and the registry is published in host mode.
#
# Steps: seed the base images and the debugging image; `docker swarm init` if
# no swarm is active; a registry service on $REGISTRY_PORT (one that answers
# there already is used and left alone); scripts/push.sh; the catalog lists the
# four repositories with the tag. Then `docker stack deploy -c stack.yaml -c
# <override>`: every service converges, rng runs exactly one task per node and
# names itself after the node, the web UI's /json counts hashes, 10 workers
# reach the 10 hashes/s plateau. Then the Swarm lessons that follow, as typed
# in them (docs/swarm.md says where ours differ):
# - netshoot: a debugging container on the stack's attachable overlay; drill
#   answers tasks.rng and tasks.hasher with their tasks' addresses; with the
#   workers at 0, `ab` from inside: one client waits ~0.1 s per request on rng
#   and hasher alike, 50 clients wait ~5 s on rng (one request at a time) and
#   under 1 s on hasher, at least AB_RATIO_MIN times less;
# - updating services and rolling updates: webui to webui:v0.2
#   (scripts/variants.sh, the page's 50px labels), hasher scaled to
#   HASHER_REPLICAS and updated to a new tag one task at a time, 5 s apart,
#   the update policy changed without replacing a task, `docker service
#   rollback` of webui (the page back to 15px);
# - health checks: hasher back to 1 replica, a hasher image listening on port
#   81 (the lesson's edit) pushed as a new tag and rolled back by Swarm itself;
#   meanwhile, the lesson's CLI example on rng, without --health-cmd (a shell
#   command, which our images cannot run: checked too), with --env-add PORT=81:
#   rolled back too, its task checked by the image's own command every 2 s,
#   the policies restored.
# Then the same with scripts/swarm/manual-flow.sh (step by step) and
# scripts/swarm/clean-up.sh. Everything the test created is removed on exit,
# whatever happens: stack, services, containers, networks, volumes, registry
# service, image tags, and the swarm if the test made it. It pushes
# $REGISTRY/webui:v0.2 (and its test tags) to a registry it did not start too.
#
# Usage: scripts/test/suites/swarm/swarm-e2e.sh
# Env:   WEBUI_PORT      host port of the web UI (default 9000; Compose tests use 8000-8002)
#        REGISTRY_PORT   registry port (default 5000)
#        TAG             tag pushed and deployed (default latest)
#        STACK           stack name (default dockercoins)
#        BUILD           passed to scripts/push.sh: auto | always | never (default auto)
#        RATE_SECONDS    length of the rate measurement (default 20, at least 15)
#        RATE10_MIN/MAX  accepted 10-worker rate, hashes/s (default 8.5 / 10.6)
#        WAIT_SECONDS    longest wait for a service to converge (default 150)
#        ROLLBACK_MAX_SECONDS  longest accepted automatic rollback (default 120)
#        PROBE_IMAGE     image with bash used to call rng inside the overlay (default redis:7)
#        DEBUG_IMAGE     the debugging image with drill, curl, ping and ab (default nicolaka/netshoot,
#                        seeded by scripts/test/lib/seed-images.sh netshoot where it cannot be pulled)
#        AB_SEQUENTIAL   requests of the one-client benchmarks (default 10; the lesson sends 50)
#        AB_SEQUENTIAL_MIN_MS/MAX_MS  accepted time per request with one client (default 95 / 250)
#        RNG50_MIN/MAX   accepted time per request on rng with 50 clients, s (default 4.9 / 6.5)
#        AB_RATIO_MIN    least ratio of rng's to hasher's time per request with 50 clients (default 10)
#        HASHER_REPLICAS hashers during the rolling update (default 2; the lesson scales to 7)
#        SKIP_SEED=1     do not run seed-images.sh / compose-plugin.sh

# Most checks are functions run through check(); shellcheck cannot see those calls.
# shellcheck disable=SC2317
set -euo pipefail

usage() { echo "usage: $0   (deploys DockerCoins on a single-node Swarm and checks the Swarm chapter; see the header for env knobs)"; }
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
export WEBUI_PORT="${WEBUI_PORT:-9000}"
export REGISTRY_PORT="${REGISTRY_PORT:-5000}"
export REGISTRY="127.0.0.1:$REGISTRY_PORT"
export TAG="${TAG:-latest}"
export BUILD="${BUILD:-auto}"
export WAIT_SECONDS="${WAIT_SECONDS:-150}"
STACK="${STACK:-dockercoins}"
RATE_SECONDS="${RATE_SECONDS:-20}"
RATE10_MIN="${RATE10_MIN:-8.5}"
RATE10_MAX="${RATE10_MAX:-10.6}"
ROLLBACK_MAX_SECONDS="${ROLLBACK_MAX_SECONDS:-120}"
PROBE_IMAGE="${PROBE_IMAGE:-redis:7}"
DEBUG_IMAGE="${DEBUG_IMAGE:-nicolaka/netshoot}"
AB_SEQUENTIAL="${AB_SEQUENTIAL:-10}"
AB_SEQUENTIAL_MIN_MS="${AB_SEQUENTIAL_MIN_MS:-95}"
AB_SEQUENTIAL_MAX_MS="${AB_SEQUENTIAL_MAX_MS:-250}"
RNG50_MIN="${RNG50_MIN:-4.9}"
RNG50_MAX="${RNG50_MAX:-6.5}"
AB_RATIO_MIN="${AB_RATIO_MIN:-10}"
HASHER_REPLICAS="${HASHER_REPLICAS:-2}"
SKIP_SEED="${SKIP_SEED:-0}"
OVERRIDE="$ROOT/docker/swarm/swarm-override.yaml"
SERVICES=(hasher rng webui worker)
MANUAL_SERVICES=(redis hasher rng webui worker)
MANUAL_NETWORK=dockercoins
# The rolling update goes to this tag (the same build, tagged and pushed again).
NEW_TAG="e2e-update-$$"
# The health-check lesson's broken hasher (listening on 81) is pushed under this tag.
BROKEN_TAG="e2e-port81-$$"
# webui:v0.2 (scripts/variants.sh) is built under this prefix, then pushed as $REGISTRY/webui:v0.2.
VARIANT_PREFIX="swarm-e2e-$$"
DEBUG_CONTAINER="${STACK}-debug-$$"
HEALTHCMD_CONTAINER="${STACK}-health-cmd-$$"

STARTED=$SECONDS
TEST_NAME=swarm-e2e
# shellcheck source=scripts/test/lib/lib.sh
source "$ROOT/scripts/test/lib/lib.sh"
declare -A FIGURE=()
# What this run created, so that the clean-up removes exactly that.
REGISTRY_CREATED=0
APP_OWNED=0
DEBUG_CREATED=0
HEALTHCMD_CREATED=0
CREATED_TAGS=()
CREATED_VOLUMES=()


service_exists() { docker service inspect "$1" >/dev/null 2>&1; }
network_exists() { docker network inspect "$1" >/dev/null 2>&1; }
volume_exists() { docker volume inspect "$1" >/dev/null 2>&1; }

# --- clean-up ------------------------------------------------------------------

# Waits until no container of the given swarm services is left on this engine.
wait_containers_gone() {
  local deadline=$((SECONDS + 60)) svc left
  while ((SECONDS < deadline)); do
    left=0
    for svc in "$@"; do
      if [[ -n "$(docker ps -aq --filter "label=com.docker.swarm.service.name=$svc")" ]]; then left=1; fi
    done
    ((left)) || return 0
    sleep 1
  done
  return 1
}

# A removed overlay network stays visible for a moment.
wait_network_gone() {
  local deadline=$((SECONDS + 30))
  while network_exists "$1"; do
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
}

# Remembers the named volumes the running tasks of a service use (e.g. the
# anonymous ones of the images' VOLUME lines), for removal at the end.
remember_volumes() {
  local id vol
  for id in $(docker ps -q --filter "label=com.docker.swarm.service.name=$1"); do
    for vol in $(docker inspect -f '{{range .Mounts}}{{if eq .Type "volume"}}{{.Name}} {{end}}{{end}}' "$id"); do
      CREATED_VOLUMES+=("$vol")
    done
  done
}

cleanup() {
  local rc=$? vol tag net
  set +e
  trap - EXIT INT TERM
  log "cleaning up"
  if ((DEBUG_CREATED)); then docker rm -f "$DEBUG_CONTAINER" >/dev/null 2>&1; fi
  if ((HEALTHCMD_CREATED)); then docker rm -f "$HEALTHCMD_CONTAINER" >/dev/null 2>&1; fi
  if ((APP_OWNED)); then
    STACK="$STACK" NETWORK="$MANUAL_NETWORK" WAIT_SECONDS=60 "$ROOT/scripts/swarm/clean-up.sh" --volumes >/dev/null
    # If the clean-up script failed, remove what is left directly: all of it is ours.
    if docker stack ls --format '{{.Name}}' | grep -qx -- "$STACK"; then docker stack rm "$STACK" >/dev/null; fi
    for svc in "${MANUAL_SERVICES[@]}"; do
      if service_exists "$svc"; then docker service rm "$svc" >/dev/null; fi
    done
    wait_containers_gone "${STACK}_redis" "${STACK}_rng" "${STACK}_hasher" "${STACK}_worker" "${STACK}_webui" "${MANUAL_SERVICES[@]}"
    for net in "$MANUAL_NETWORK" "${STACK}_default"; do
      if network_exists "$net"; then docker network rm "$net" >/dev/null 2>&1; fi
    done
  fi
  if ((REGISTRY_CREATED)); then
    remember_volumes registry
    docker service rm registry >/dev/null
    wait_containers_gone registry
  fi
  for vol in "${CREATED_VOLUMES[@]}"; do
    if volume_exists "$vol"; then docker volume rm "$vol" >/dev/null; fi
  done
  for tag in "${CREATED_TAGS[@]}"; do
    if docker image inspect "$tag" >/dev/null 2>&1; then docker image rm "$tag" >/dev/null; fi
  done
  swarm_leave_if_created
  return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- helpers -----------------------------------------------------------------------

# GET /json from the web UI; prints "<hashes> <now>" or fails.
read_counter() {
  curl -fsS --max-time 3 "http://127.0.0.1:$WEBUI_PORT/json" 2>/dev/null |
    jq -er '"\(.hashes | tonumber) \(.now)"' 2>/dev/null
}

# Waits until the counter exceeds $1 (at most $2 s); prints the counter.
wait_counter_above() {
  local floor="$1" deadline=$((SECONDS + ${2:-120})) reading
  while ((SECONDS < deadline)); do
    if reading="$(read_counter)" && awk -v r="$reading" -v f="$floor" 'BEGIN { split(r, x, " "); exit !(x[1] > f) }'; then
      echo "${reading%% *}"
      return 0
    fi
    sleep 0.2
  done
  return 1
}

counter_increases() {
  local a b
  a="$(read_counter | cut -d' ' -f1)" || return 1
  b="$(wait_counter_above "$a" 15)" || return 1
  echo "    hashes $a -> $b"
}

# Hashes per second over RATE_SECONDS, from the counter and the web UI's clock.
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

# "<running>/<desired>" of a service.
replicas() {
  docker service ls --filter "name=$1" --format '{{.Name}} {{.Replicas}}' | awk -v n="$1" '$1 == n { print $2 }'
}

# Waits (at most $2 s) until every task a service wants runs (and is healthy).
wait_converged() {
  local name="$1" deadline=$((SECONDS + ${2:-$WAIT_SECONDS})) r
  while ((SECONDS < deadline)); do
    r="$(replicas "$name")"
    if [[ "$r" =~ ^([0-9]+)/([0-9]+)$ ]] && ((BASH_REMATCH[2] > 0 && BASH_REMATCH[1] == BASH_REMATCH[2])); then
      return 0
    fi
    sleep 1
  done
  echo "    $name: replicas ${r:-?} after ${2:-$WAIT_SECONDS} s" >&2
  docker service ps --no-trunc "$name" 2>&1 | head -n 8 >&2
  return 1
}

# Waits until a service's update is over (at most $3 s); succeeds if it ended in state $2.
UPDATE_STATE=""
wait_update_state() {
  local name="$1" want="$2" deadline=$((SECONDS + ${3:-$WAIT_SECONDS}))
  while ((SECONDS < deadline)); do
    UPDATE_STATE="$(docker service inspect -f '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' "$name")"
    case "$UPDATE_STATE" in
      updating | rollback_started | "") sleep 0.5 ;;
      *) [[ "$UPDATE_STATE" == "$want" ]]; return ;;
    esac
  done
  return 1
}

# "node=count ..." of a service's running tasks, and whether every node has exactly one.
tasks_per_node() {
  docker service ps "$1" --filter desired-state=running --format '{{.Node}} {{.CurrentState}}' |
    awk '$2 == "Running" { n[$1]++ } END { for (k in n) printf "%s=%d ", k, n[k] }' | sed 's/ $//'
}
one_task_per_node() {
  local per_node node count nodes
  per_node="$(tasks_per_node "$1")"
  nodes="$(docker node ls --format '{{.Hostname}} {{.Status}} {{.Availability}}' | awk '$2 == "Ready" && $3 == "Active" { print $1 }')"
  [[ -n "$nodes" ]] || return 1
  for node in $nodes; do
    count="$(tr ' ' '\n' <<<"$per_node" | awk -F= -v n="$node" '$1 == n { print $2 }')"
    [[ "$count" == 1 ]] || return 1
  done
  [[ "$(wc -w <<<"$per_node")" -eq "$(wc -w <<<"$nodes")" ]]
}

# GET http://rng/ from a throwaway container on the overlay network $1 (bash's
# /dev/tcp: the probe image needs no curl). Prints the response.
rng_banner() {
  timeout 60 docker run --rm --network "$1" --entrypoint bash "$PROBE_IMAGE" -c \
    'exec 3<>/dev/tcp/rng/80 && printf "GET / HTTP/1.0\r\nHost: rng\r\n\r\n" >&3 && cat <&3' 2>/dev/null | tr -d '\r'
}
banner_names_node() {
  local banner node
  banner="$(rng_banner "$1")" || return 1
  node="$(docker node inspect self -f '{{.Description.Hostname}}')"
  echo "    $(grep -i '^x-instance:' <<<"$banner")  /  $(tail -n 1 <<<"$banner")"
  grep -qi "^x-instance: rng-$node\$" <<<"$banner" && grep -q "RNG running on rng-$node" <<<"$banner"
}

summary() {
  echo
  echo "=== DockerCoins Swarm e2e summary (stack $STACK, registry $REGISTRY, web UI :$WEBUI_PORT) ==="
  printf '  %-44s %s\n' \
    "push.sh (BUILD=$BUILD)" "${FIGURE[push]:-?} s" \
    "stack deploy -> first counted hash" "${FIGURE[first_hash]:-?} s" \
    "stack deploy -> all services converged" "${FIGURE[converged]:-?} s" \
    "rng tasks per node (stack)" "${FIGURE[rng_nodes]:-?}" \
    "rate, 10 workers (stack)" "${FIGURE[rate10]:-?} hashes/s" \
    "ab, 1 client: rng / hasher, per request" "${FIGURE[ab1]:-?} ms" \
    "ab, 50 clients: rng / hasher, per request" "${FIGURE[ab50]:-?} s" \
    "ab, 50 clients: rng / hasher" "${FIGURE[ab_ratio]:-?} times" \
    "rolling update of $HASHER_REPLICAS hashers to a new tag" "${FIGURE[update]:-?} s" \
    "its new tasks created apart by" "${FIGURE[update_gap]:-?} s" \
    "automatic rollback: hasher image on port 81" "${FIGURE[rollback]:-?} s" \
    "automatic rollback: CLI example, rng PORT=81" "${FIGURE[rollback_cli]:-?} s" \
    "manual flow: services -> first counted hash" "${FIGURE[manual_first_hash]:-?} s" \
    "rng tasks per node (manual, global)" "${FIGURE[manual_rng_nodes]:-?}" \
    "rate, 10 workers (manual)" "${FIGURE[manual_rate10]:-?} hashes/s" \
    "manual rolling update of hasher" "${FIGURE[manual_update]:-?} s" \
    "whole e2e run" "$((SECONDS - STARTED)) s"
  echo "$PASSED passed, $FAILED failed"
}

# --- prerequisites -------------------------------------------------------------------

for tool in docker curl jq awk timeout; do
  command -v "$tool" >/dev/null || { echo "swarm-e2e: $tool is missing; install it (apt-get install -y $tool)" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "swarm-e2e: cannot talk to the Docker engine; is dockerd running?" >&2; exit 1; }
if [[ "$SKIP_SEED" != 1 ]]; then
  "$ROOT/scripts/test/lib/compose-plugin.sh"
  "$ROOT/scripts/test/lib/seed-images.sh"
  if [[ "$DEBUG_IMAGE" == nicolaka/netshoot ]]; then "$ROOT/scripts/test/lib/seed-images.sh" netshoot; fi
fi
if curl -s --max-time 1 -o /dev/null "http://127.0.0.1:$WEBUI_PORT/"; then
  echo "swarm-e2e: port $WEBUI_PORT is already in use; free it or set WEBUI_PORT" >&2
  exit 1
fi

# --- static checks ----------------------------------------------------------------------

log "static checks"
stack_config() { docker stack config "$@" 2>/dev/null; }
no_version_key() { ! grep -Eq '^version:' "$ROOT/stack.yaml"; }
check "stack.yaml has no version: key" no_version_key
defaults="$(env -u WEBUI_PORT -u REGISTRY -u TAG docker stack config -c "$ROOT/stack.yaml" 2>/dev/null || true)"
check "stack.yaml is valid (docker stack config)" test -n "$defaults"
defaults_ok() {
  grep -q 'image: 127.0.0.1:5000/rng:latest' <<<"$defaults" &&
    grep -q 'mode: ingress' <<<"$defaults" && grep -q 'published: 8000' <<<"$defaults" &&
    ! grep -q 'endpoint_mode' <<<"$defaults" && grep -q 'mode: global' <<<"$defaults" &&
    grep -q 'attachable: true' <<<"$defaults" && grep -q 'failure_action: rollback' <<<"$defaults"
}
check "stack.yaml keeps Swarm's defaults (VIP, ingress :8000) with 127.0.0.1:5000/<svc>:latest images" defaults_ok
merged="$(stack_config -c "$ROOT/stack.yaml" -c "$OVERRIDE" || true)"
override_ok() {
  [[ "$(grep -c 'endpoint_mode: dnsrr' <<<"$merged")" -eq 5 ]] &&
    grep -q 'mode: host' <<<"$merged" && grep -q "published: $WEBUI_PORT" <<<"$merged" &&
    ! grep -q 'mode: ingress' <<<"$merged"
}
check "stack.yaml + test override: dnsrr everywhere, web UI host-mode on :$WEBUI_PORT only" override_ok
unused_port=$((REGISTRY_PORT + 1))
while curl -s --max-time 1 -o /dev/null "http://127.0.0.1:$unused_port/"; do unused_port=$((unused_port + 1)); done
no_registry_msg="$(REGISTRY="127.0.0.1:$unused_port" BUILD=never "$ROOT/scripts/push.sh" 2>&1)" && no_registry_rc=0 || no_registry_rc=$?
one_line_hint() { ((no_registry_rc != 0)) && [[ "$(wc -l <<<"$no_registry_msg")" -eq 1 ]] && grep -q 'docker service create --name registry' <<<"$no_registry_msg"; }
check "push.sh without a registry stops with one line saying how to start one" one_line_hint
echo "    $no_registry_msg"

# --- swarm and registry ---------------------------------------------------------------------

swarm_join

# Refuse to touch what is not ours.
conflicts=()
for svc in "${MANUAL_SERVICES[@]}"; do
  if service_exists "$svc"; then conflicts+=("service $svc"); fi
done
if network_exists "$MANUAL_NETWORK"; then conflicts+=("network $MANUAL_NETWORK"); fi
if docker stack ls --format '{{.Name}}' | grep -qx -- "$STACK"; then conflicts+=("stack $STACK"); fi
if volume_exists "${STACK}_redis-data"; then conflicts+=("volume ${STACK}_redis-data"); fi
if ((${#conflicts[@]})); then
  echo "swarm-e2e: ${conflicts[*]} exist already; remove them (scripts/swarm/clean-up.sh --volumes) or set STACK, then re-run" >&2
  exit 1
fi
APP_OWNED=1

for svc in "${SERVICES[@]}"; do
  for tag in "$REGISTRY/$svc:$TAG" "$REGISTRY/$svc:$NEW_TAG" "localhost/dockercoins/$svc:$NEW_TAG"; do
    if ! docker image inspect "$tag" >/dev/null 2>&1; then CREATED_TAGS+=("$tag"); fi
  done
done
for tag in "$REGISTRY/webui:v0.2" "$VARIANT_PREFIX/webui:v0.2" "$VARIANT_PREFIX/webui:$TAG" "$REGISTRY/hasher:$BROKEN_TAG"; do
  if ! docker image inspect "$tag" >/dev/null 2>&1; then CREATED_TAGS+=("$tag"); fi
done

if curl -fs -o /dev/null --max-time 3 "http://$REGISTRY/v2/"; then
  log "a registry answers at $REGISTRY already: using it (it stays)"
else
  log "registry service on $REGISTRY_PORT (host mode)"
  REGISTRY_CREATED=1
  if ! PUBLISH_MODE=host REGISTRY_SERVICE=registry "$ROOT/scripts/swarm/start-registry.sh" >/dev/null; then
    abort "registry service answering on $REGISTRY_PORT"
  fi
  pass "registry service answers on $REGISTRY_PORT"
  remember_volumes registry
fi

# --- push -------------------------------------------------------------------------------------

log "scripts/push.sh (REGISTRY=$REGISTRY TAG=$TAG BUILD=$BUILD)"
t0="$(now)"
if "$ROOT/scripts/push.sh"; then
  FIGURE[push]="$(elapsed "$t0" "$(now)")"
  pass "push.sh pushed the four images (${FIGURE[push]} s)"
else
  abort "scripts/push.sh"
fi
catalog="$(curl -fsS --max-time 5 "http://$REGISTRY/v2/_catalog" || true)"
echo "    catalog: $catalog"
in_catalog() { jq -e --arg s "$1" '.repositories | index($s)' <<<"$catalog" >/dev/null; }
has_tag() { curl -fsS --max-time 5 "http://$REGISTRY/v2/$1/tags/list" | jq -e --arg t "$2" '.tags | index($t)' >/dev/null; }
in_catalog_with_tag() { in_catalog "$1" && has_tag "$1" "$2"; }
for svc in "${SERVICES[@]}"; do
  check "the catalog lists $svc; its tags include $TAG" in_catalog_with_tag "$svc" "$TAG"
done

# --- the stack ----------------------------------------------------------------------------------

log "docker stack deploy -c stack.yaml -c docker/swarm/swarm-override.yaml $STACK"
t_deploy="$(now)"
if ! docker stack deploy --detach=true -c "$ROOT/stack.yaml" -c "$OVERRIDE" "$STACK" >/dev/null; then
  abort "docker stack deploy"
fi
if first="$(wait_counter_above 0 "$WAIT_SECONDS")"; then
  FIGURE[first_hash]="$(elapsed "$t_deploy" "$(now)")"
  pass "first hash counted ${FIGURE[first_hash]} s after 'stack deploy' (hashes=$first)"
else
  docker service ls >&2
  docker service logs --tail 10 "${STACK}_worker" >&2 2>&1 || true
  abort "no hash counted within $WAIT_SECONDS s of 'stack deploy'"
fi
converged_all() {
  local svc
  for svc in redis "${SERVICES[@]}"; do
    wait_converged "${STACK}_$svc" || return 1
  done
}
if converged_all; then
  FIGURE[converged]="$(elapsed "$t_deploy" "$(now)")"
  pass "every service converged ($(for s in redis "${SERVICES[@]}"; do printf '%s %s  ' "$s" "$(replicas "${STACK}_$s")"; done))"
else
  fail "every service converged"
fi
remember_volumes "${STACK}_redis"

FIGURE[rng_nodes]="$(tasks_per_node "${STACK}_rng")"
check "rng is global: exactly one task per node (${FIGURE[rng_nodes]})" one_task_per_node "${STACK}_rng"
check "rng names itself after its node (hostname template), seen from the attachable overlay ${STACK}_default" \
  banner_names_node "${STACK}_default"
check ":$WEBUI_PORT/json counts hashes" counter_increases
worker_replicas="$(replicas "${STACK}_worker")"
check "the stack runs 10 workers ($worker_replicas)" test "$worker_replicas" = 10/10

log "rate with the stack's 10 workers (${RATE_SECONDS} s)"
sleep 5
if rate="$(measure_rate)"; then
  FIGURE[rate10]="$rate"
  check "10 workers on Swarm: $rate hashes/s (expected $RATE10_MIN..$RATE10_MAX)" between "$rate" "$RATE10_MIN" "$RATE10_MAX"
else
  fail "10 workers on Swarm: could not read the counter"
fi

# --- the overlay network from inside: netshoot, and the bottleneck ---------------------------

log "docker run --net ${STACK}_default $DEBUG_IMAGE (a debugging container on the stack's overlay)"
if docker run -d --name "$DEBUG_CONTAINER" --net "${STACK}_default" "$DEBUG_IMAGE" sleep 1000000000 >/dev/null; then
  DEBUG_CREATED=1
  pass "a plain container joins the attachable overlay ${STACK}_default ($DEBUG_IMAGE)"
else
  fail "docker run --net ${STACK}_default $DEBUG_IMAGE"
fi
dbg() { timeout 60 docker exec "$DEBUG_CONTAINER" "$@"; }
# The A records drill gets for a name, sorted, on one line.
drill_a() { dbg drill "$1" 2>/dev/null | awk '!/^;/ && $3 == "IN" && $4 == "A" { print $5 }' | sort | paste -sd' ' -; }
# The overlay addresses of a service's containers on this engine, sorted, on one line.
task_ips() {
  local id
  for id in $(docker ps -q --filter "label=com.docker.swarm.service.name=$1"); do
    docker inspect -f "{{with index .NetworkSettings.Networks \"${STACK}_default\"}}{{.IPAddress}}{{end}}" "$id"
  done | sort | paste -sd' ' -
}
# drill NAME answers exactly the addresses of SERVICE's tasks.
dns_answers_tasks() {
  local got want
  got="$(drill_a "$1")"
  want="$(task_ips "$2")"
  echo "    drill $1: ${got:-no answer}   (${2}'s tasks: ${want:-none})"
  [[ -n "$got" && "$got" == "$want" ]]
}
check "drill tasks.rng answers rng's task addresses" dns_answers_tasks tasks.rng "${STACK}_rng"
check "drill tasks.hasher answers hasher's task addresses" dns_answers_tasks tasks.hasher "${STACK}_hasher"
check "drill rng answers the same addresses (dnsrr here: no virtual IP)" dns_answers_tasks rng "${STACK}_rng"
curl_rng() {
  local out
  out="$(dbg curl -sS --max-time 10 rng)" || return 1
  echo "    curl rng: $out"
  grep -q '^RNG running on rng-' <<<"$out"
}
check "curl rng (from the debugging container): RNG running on rng-<node>" curl_rng
ping_rng() { dbg ping -q -c 1 -W 5 rng >/dev/null; }
check "ping -c 1 rng" ping_rng

log "docker service update ${STACK}_worker --replicas 0 (the benchmarks run without the workers)"
stop_workers() {
  docker service update --detach --quiet "${STACK}_worker" --replicas 0 >/dev/null &&
    wait_containers_gone "${STACK}_worker" && [[ "$(replicas "${STACK}_worker")" == 0/0 ]]
}
check "the workers are stopped (${STACK}_worker 0/0, no container left)" stop_workers

# ab's report of one benchmark from the debugging container; sets AB_MS[$1] to its
# "Time per request (mean)" in ms: the time taken by the whole run times the
# concurrency over the requests, which is how long each client waited per request.
declare -A AB_MS=()
bench() {
  local key="$1" n="$2" c="$3" out mean
  shift 3
  out="$(dbg ab -q -c "$c" -n "$n" "$@" 2>&1)" || { tail -n 3 <<<"$out" | sed 's/^/    /'; return 1; }
  mean="$(awk '/^Time per request:/ && /\(mean\)$/ { print $4; exit }' <<<"$out")"
  echo "    ab -c $c -n $n $*: $(grep -E '^(Time taken for tests|Time per request):' <<<"$out" | head -n 2 | tr -s ' ' | paste -sd';' -)"
  grep -Eq "^Complete requests: +$n\$" <<<"$out" && grep -Eq '^Failed requests: +0$' <<<"$out" &&
    ! grep -q '^Non-2xx' <<<"$out" && [[ -n "$mean" ]] || return 1
  AB_MS[$key]="$mean"
}
log "ab from $DEBUG_IMAGE: rng, then hasher, with 1 and with 50 concurrent clients"
check "ab -c 1 -n $AB_SEQUENTIAL http://rng/10" bench rng1 "$AB_SEQUENTIAL" 1 http://rng/10
check "ab -c 50 -n 50 http://rng/10" bench rng50 50 50 http://rng/10
# shellcheck disable=SC2016 # expanded by the debugging container's bash
random_10() { dbg bash -c 'curl -sS http://rng/10 >/tmp/random && test "$(wc -c </tmp/random)" -eq 10'; }
check "curl http://rng/10 >/tmp/random (10 bytes, the body hasher's benchmark POSTs)" random_10
check "ab -c 1 -n $AB_SEQUENTIAL -T application/octet-stream -p /tmp/random http://hasher/" \
  bench hasher1 "$AB_SEQUENTIAL" 1 -T application/octet-stream -p /tmp/random http://hasher/
check "ab -c 50 -n 50 -T application/octet-stream -p /tmp/random http://hasher/" \
  bench hasher50 50 50 -T application/octet-stream -p /tmp/random http://hasher/
ms_to_s() { awk -v m="$1" 'BEGIN { printf "%.2f", m / 1000 }'; }
if [[ -n "${AB_MS[rng1]:-}" && -n "${AB_MS[hasher1]:-}" ]]; then
  FIGURE[ab1]="$(printf '%.0f / %.0f' "${AB_MS[rng1]}" "${AB_MS[hasher1]}")"
  sequential_ok() {
    between "${AB_MS[rng1]}" "$AB_SEQUENTIAL_MIN_MS" "$AB_SEQUENTIAL_MAX_MS" &&
      between "${AB_MS[hasher1]}" "$AB_SEQUENTIAL_MIN_MS" "$AB_SEQUENTIAL_MAX_MS"
  }
  check "one client: each request takes about 0.1 s, rng and hasher alike (${FIGURE[ab1]} ms; expected $AB_SEQUENTIAL_MIN_MS..$AB_SEQUENTIAL_MAX_MS)" \
    sequential_ok
fi
if [[ -n "${AB_MS[rng50]:-}" && -n "${AB_MS[hasher50]:-}" ]]; then
  FIGURE[ab50]="$(ms_to_s "${AB_MS[rng50]}") / $(ms_to_s "${AB_MS[hasher50]}")"
  FIGURE[ab_ratio]="$(awk -v r="${AB_MS[rng50]}" -v h="${AB_MS[hasher50]}" 'BEGIN { printf "%.0f", r / h }')"
  check "50 clients: rng $(ms_to_s "${AB_MS[rng50]}") s per request, about 50 x 0.1 s (expected $RNG50_MIN..$RNG50_MAX s): one request at a time" \
    between "$(ms_to_s "${AB_MS[rng50]}")" "$RNG50_MIN" "$RNG50_MAX"
  check "50 clients: hasher $(ms_to_s "${AB_MS[hasher50]}") s per request, under 1 s: its requests wait together" \
    between "${AB_MS[hasher50]}" 0 999
  check "50 clients: rng is ${FIGURE[ab_ratio]} times slower than hasher (at least $AB_RATIO_MIN)" \
    between "${FIGURE[ab_ratio]}" "$AB_RATIO_MIN" 1000000
fi
docker rm -f "$DEBUG_CONTAINER" >/dev/null 2>&1 && DEBUG_CREATED=0

# --- updating services, rolling updates, rolling back ------------------------------------------

log "docker service update ${STACK}_worker --replicas 10 (the workers back)"
workers_back() { docker service update --detach --quiet "${STACK}_worker" --replicas 10 >/dev/null; }
check "docker service update ${STACK}_worker --replicas 10 (detached)" workers_back

log "updating webui: scripts/variants.sh webui:v0.2 (the lesson's 15px -> 50px), docker service update --image"
build_webui_v02() {
  docker tag "localhost/dockercoins/webui:$TAG" "$VARIANT_PREFIX/webui:$TAG" &&
    IMAGE_PREFIX="$VARIANT_PREFIX" TAG="$TAG" REGISTRY="$REGISTRY" "$ROOT/scripts/variants.sh" webui:v0.2 | sed 's/^/    /'
}
check "variants.sh built and pushed $REGISTRY/webui:v0.2" build_webui_v02
update_webui() { docker service update --detach --quiet "${STACK}_webui" --image "$REGISTRY/webui:v0.2" >/dev/null; }
check "docker service update ${STACK}_webui --image $REGISTRY/webui:v0.2 (detached)" update_webui

log "docker service scale ${STACK}_hasher=$HASHER_REPLICAS, then docker service update --image $REGISTRY/hasher:$NEW_TAG"
push_new_tag() {
  local svc
  for svc in "${SERVICES[@]}"; do
    docker tag "localhost/dockercoins/$svc:$TAG" "localhost/dockercoins/$svc:$NEW_TAG" || return 1
  done
  TAG="$NEW_TAG" BUILD=never "$ROOT/scripts/push.sh" >/dev/null
}
check "push.sh TAG=$NEW_TAG (the same build under a new tag)" push_new_tag
scale_hasher() {
  docker service scale --detach "${STACK}_hasher=$HASHER_REPLICAS" >/dev/null && wait_converged "${STACK}_hasher" &&
    echo "    ${STACK}_hasher $(replicas "${STACK}_hasher")"
}
check "docker service scale ${STACK}_hasher=$HASHER_REPLICAS" scale_hasher
t0="$(now)"
if docker service update --detach --quiet --image "$REGISTRY/hasher:$NEW_TAG" "${STACK}_hasher" >/dev/null &&
  wait_update_state "${STACK}_hasher" completed && wait_converged "${STACK}_hasher"; then
  FIGURE[update]="$(elapsed "$t0" "$(now)")"
  pass "rolling update of $HASHER_REPLICAS hashers to $NEW_TAG completed in ${FIGURE[update]} s"
else
  fail "rolling update to $NEW_TAG (state: ${UPDATE_STATE:-?})"
fi
image_now="$(docker service inspect -f '{{.Spec.TaskTemplate.ContainerSpec.Image}}' "${STACK}_hasher")"
check "docker service inspect: hasher's image is now ${image_now%@*}" grep -q ":$NEW_TAG@" <<<"$image_now"
# docker service ps: every slot runs the new tag, each old task is shut down.
ps_after_update() {
  local running shut
  running="$(docker service ps --filter desired-state=running --format '{{.Image}} {{.CurrentState}}' "${STACK}_hasher")"
  shut="$(docker service ps --filter desired-state=shutdown --format '{{.Image}} {{.CurrentState}}' "${STACK}_hasher")"
  echo "    running: $(awk '{ print $1, $2 }' <<<"$running" | sort | uniq -c | paste -sd, -)   shut down: $(awk '{ print $1, $2 }' <<<"$shut" | sort | uniq -c | paste -sd, -)"
  [[ "$(grep -c ":$NEW_TAG Running" <<<"$running")" -eq "$HASHER_REPLICAS" && "$(grep -c . <<<"$running")" -eq "$HASHER_REPLICAS" ]] &&
    [[ "$(grep -c ":$TAG Shutdown" <<<"$shut")" -ge "$HASHER_REPLICAS" ]]
}
check "docker service ps: $HASHER_REPLICAS tasks run $NEW_TAG, the $HASHER_REPLICAS old ones are shut down" ps_after_update
# One task at a time, the update delay between them: the new tasks were created at least 5 s apart.
one_at_a_time() {
  local id times
  times="$(for id in $(docker service ps -q --filter desired-state=running "${STACK}_hasher"); do
    date -d "$(docker inspect -f '{{json .CreatedAt}}' "$id" | tr -d '"')" +%s.%N
  done | sort -n)"
  FIGURE[update_gap]="$(awk 'NR > 1 { g = $1 - p; if (min == "" || g < min) min = g } { p = $1 } END { printf "%.1f", min }' <<<"$times")"
  echo "    the new tasks were created ${FIGURE[update_gap]} s apart (at least)"
  ((HASHER_REPLICAS > 1)) && between "${FIGURE[update_gap]}" 5 1000
}
check "one task at a time (parallelism 1), 5 s apart (delay 5s)" one_at_a_time
check "hashes still counted after the update" counter_increases

if wait_update_state "${STACK}_webui" completed && wait_converged "${STACK}_webui"; then
  pass "webui updated to v0.2"
else
  fail "webui updated to v0.2 (state: ${UPDATE_STATE:-?})"
fi
# Whether the page's file $1 has $2 (read whole first: grep -q would cut curl's pipe).
page_has() {
  local body
  body="$(curl -fsS --max-time 3 "http://127.0.0.1:$WEBUI_PORT/$1" 2>/dev/null)" && grep -q -- "$2" <<<"$body"
}
# Waits (at most WAIT_SECONDS) until the page's file $1 has $2.
wait_page_has() {
  local deadline=$((SECONDS + WAIT_SECONDS))
  until page_has "$1" "$2"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}
page_v02() { wait_page_has webui.css "font-size: 50px" && page_has webui.js "#2ca02c"; }
check "the page on :$WEBUI_PORT is v0.2's: axis labels at 50px, the chart green" page_v02

log "the update policy: docker service update --update-parallelism 2 --update-max-failure-ratio .25 ${STACK}_hasher"
running_ids() { docker service ps -q --filter desired-state=running "$1" | sort | paste -sd' ' -; }
no_op_update() {
  local svc="$1" before after
  shift
  before="$(running_ids "$svc")"
  docker service update --detach --quiet "$@" "$svc" >/dev/null || return 1
  sleep 1
  after="$(running_ids "$svc")"
  [[ -n "$before" && "$before" == "$after" ]]
}
check "no task replaced (a metadata-only change)" no_op_update "${STACK}_hasher" --update-parallelism 2 --update-max-failure-ratio .25
policy="$(docker service inspect -f '{{.Spec.UpdateConfig.Parallelism}} {{.Spec.UpdateConfig.MaxFailureRatio}}' "${STACK}_hasher")"
check "docker service inspect: parallelism 2, max failure ratio 0.25 ($policy)" test "$policy" = "2 0.25"
check "docker service update ${STACK}_worker --update-parallelism 2 --update-delay 5s: no task replaced" \
  no_op_update "${STACK}_worker" --update-parallelism 2 --update-delay 5s
policy="$(docker service inspect -f '{{.Spec.UpdateConfig.Parallelism}} {{.Spec.UpdateConfig.Delay}}' "${STACK}_worker")"
check "docker service inspect: worker's parallelism 2, delay 5s ($policy)" test "$policy" = "2 5s"

log "docker service rollback ${STACK}_webui (runs while the health-check steps go on)"
rollback_webui() { docker service rollback --detach --quiet "${STACK}_webui" >/dev/null; }
check "docker service rollback ${STACK}_webui (detached)" rollback_webui

# --- health checks and the automatic rollback ---------------------------------------------------

log "health checks: the lesson's --health-cmd cannot run in our images (no /bin/sh)"
# --health-cmd is always run by /bin/sh -c (CMD-SHELL); our images have no shell.
if docker run -d --name "$HEALTHCMD_CONTAINER" --health-cmd "/hasher healthcheck --port 80" \
  --health-interval 1s --health-retries 1 "$REGISTRY/hasher:$TAG" >/dev/null; then
  HEALTHCMD_CREATED=1
fi

# The lesson redeploys its stack file, which sets its hasher count; ours has 1 hasher.
log "docker service scale ${STACK}_hasher=1 (stack.yaml's count)"
scale_hasher_1() { docker service scale --detach "${STACK}_hasher=1" >/dev/null && wait_converged "${STACK}_hasher"; }
check "hasher back to 1 replica" scale_hasher_1

# The lesson's CLI example, on rng (its "yourservice"), while hasher's update runs: both
# break the same way and roll back by themselves, each on its own service.
log "the lesson's CLI example, our way, on ${STACK}_rng: no --health-cmd (the image's own check), --env-add PORT=81"
t_cli="$(now)"
cli_update() {
  docker service update --detach --quiet \
    --update-delay 5s --update-failure-action rollback --update-max-failure-ratio .25 \
    --update-monitor 5s --update-parallelism 1 \
    --rollback-delay 5s --rollback-failure-action pause --rollback-max-failure-ratio .5 \
    --rollback-monitor 5s --rollback-parallelism 0 \
    --health-interval 2s --health-retries 1 \
    --env-add PORT=81 "${STACK}_rng" >/dev/null
}
check "docker service update --update-... --rollback-... --health-interval 2s --health-retries 1 --env-add PORT=81 ${STACK}_rng" cli_update

log "hasher listening on 81, as the lesson's sed -i s/80/81/: tag $BROKEN_TAG, docker service update --image"
build_broken() {
  printf 'FROM %s\nCMD ["--port=81"]\n' "$REGISTRY/hasher:$TAG" |
    docker build -q -t "$REGISTRY/hasher:$BROKEN_TAG" - >/dev/null 2>&1 &&
    docker push -q "$REGISTRY/hasher:$BROKEN_TAG" >/dev/null
}
check "built and pushed $REGISTRY/hasher:$BROKEN_TAG (CMD [\"--port=81\"])" build_broken
t0="$(now)"
if docker service update --detach --quiet --image="$REGISTRY/hasher:$BROKEN_TAG" "${STACK}_hasher" >/dev/null &&
  wait_update_state "${STACK}_hasher" rollback_completed "$ROLLBACK_MAX_SECONDS"; then
  FIGURE[rollback]="$(elapsed "$t0" "$(now)")"
  pass "Swarm rolled the update to $BROKEN_TAG back by itself in ${FIGURE[rollback]} s"
else
  fail "automatic rollback of $BROKEN_TAG within $ROLLBACK_MAX_SECONDS s (state: ${UPDATE_STATE:-?})"
fi
docker service inspect -f '{{.UpdateStatus.Message}}' "${STACK}_hasher" | sed 's/^/    /'
# The failed probes of a service's containers that match $2 (image or env), highest first.
failing_streaks() {
  local id
  for id in $(docker ps -aq --filter "label=com.docker.swarm.service.name=$1"); do
    docker inspect -f '{{.Config.Image}} {{range .Config.Env}}{{.}} {{end}}{{if .State.Health}}streak={{.State.Health.FailingStreak}}{{end}}' "$id"
  done | grep -- "$2" | sed -n 's/.*streak=\([0-9]*\).*/\1/p' | sort -rn | paste -sd' ' -
}
# docker service ps: no task of the tag runs (hasher stops cleanly once its check failed: its task
# is Complete, with no error); its containers' health checks had failed 3 times in a row.
broken_was_unhealthy() {
  local ps streaks
  ps="$(docker service ps --format '{{.Image}} {{.DesiredState}} {{.CurrentState}} {{.Error}}' "${STACK}_hasher" | grep ":$BROKEN_TAG" | sed 's/@sha256:[0-9a-f]*//')"
  streaks="$(failing_streaks "${STACK}_hasher" ":$BROKEN_TAG")"
  awk '{ print "    " $0 }' <<<"$ps"
  echo "    failed probes in a row, per $BROKEN_TAG container: ${streaks:-none}"
  [[ -n "$ps" ]] && ! grep -q ' Running Running' <<<"$ps" && ((${streaks%% *} >= 3))
}
check "docker service ps: the $BROKEN_TAG task stopped; docker inspect: 3 failed probes" broken_was_unhealthy
image_now="$(docker service inspect -f '{{.Spec.TaskTemplate.ContainerSpec.Image}}' "${STACK}_hasher")"
check "hasher's spec is back on $NEW_TAG (${image_now%@*})" grep -q ":$NEW_TAG@" <<<"$image_now"
check "hasher converged again after the rollback" wait_converged "${STACK}_hasher"

if wait_update_state "${STACK}_rng" rollback_completed "$ROLLBACK_MAX_SECONDS"; then
  FIGURE[rollback_cli]="$(elapsed "$t_cli" "$(now)")"
  pass "Swarm rolled rng's PORT=81 update back by itself in ${FIGURE[rollback_cli]} s"
else
  fail "automatic rollback of rng's PORT=81 within $ROLLBACK_MAX_SECONDS s (state: ${UPDATE_STATE:-?})"
fi
# The updated tasks' containers: the image's exec-form check, run every 2 s, 1 retry; the
# one that ran it failed it (a task whose container never started has no health state).
port81_health() {
  local id health ok=1
  for id in $(docker ps -aq --filter "label=com.docker.swarm.service.name=${STACK}_rng"); do
    if docker inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$id" | grep -qx PORT=81; then
      health="$(docker inspect -f '{{json .Config.Healthcheck.Test}} {{.Config.Healthcheck.Interval}} {{.Config.Healthcheck.Retries}} {{if .State.Health}}{{.State.Health.FailingStreak}}{{else}}-{{end}}' "$id")"
      echo "    a PORT=81 container's health check, and its failed probes in a row: $health"
      [[ "$health" == '["CMD","/rng","healthcheck","--port","80"] 2s 1 '* ]] || return 1
      if [[ "${health##* }" =~ ^[1-9] ]]; then ok=0; fi
    fi
  done
  return "$ok"
}
check "the PORT=81 task ran the image's own check, every 2 s, and failed it" port81_health
spec_back() {
  local spec
  spec="$(docker service inspect -f '{{json .Spec.TaskTemplate.ContainerSpec.Env}} {{json .Spec.TaskTemplate.ContainerSpec.Healthcheck}} {{.Spec.UpdateConfig.MaxFailureRatio}} {{.Spec.RollbackConfig.Parallelism}}' "${STACK}_rng")"
  echo "    env, health check override, update max failure ratio, rollback parallelism: $spec"
  [[ "$spec" == "null null 0.5 1" ]]
}
check "rng's spec is back: no PORT=81, no health override, stack.yaml's policies (0.5, 1)" spec_back
check "rng converged again after the rollback" wait_converged "${STACK}_rng"

if wait_update_state "${STACK}_webui" rollback_completed; then
  pass "webui rolled back (rollback_completed)"
else
  fail "webui rolled back (state: ${UPDATE_STATE:-?})"
fi
webui_images="$(docker service inspect -f '{{.Spec.TaskTemplate.ContainerSpec.Image}} {{.PreviousSpec.TaskTemplate.ContainerSpec.Image}}' "${STACK}_webui")"
webui_back() { [[ "${webui_images%% *}" == "$REGISTRY/webui:$TAG"* && "${webui_images#* }" == "$REGISTRY/webui:v0.2"* ]]; }
check "docker service inspect: webui runs $TAG again; its PreviousSpec is v0.2 (a second rollback goes back to it)" webui_back
check "the page on :$WEBUI_PORT is back to 15px" wait_page_has webui.css "font-size: 15px"

healthcmd_unhealthy() {
  local deadline=$((SECONDS + 20)) state
  while ((SECONDS < deadline)); do
    state="$(docker inspect -f '{{.State.Health.Status}}' "$HEALTHCMD_CONTAINER" 2>/dev/null)"
    [[ "$state" == unhealthy ]] && break
    sleep 0.5
  done
  echo "    $(docker inspect -f '{{with index .State.Health.Log 0}}{{.Output}}{{end}}' "$HEALTHCMD_CONTAINER" 2>/dev/null | head -n 1 | cut -c1-160)"
  [[ "$state" == unhealthy ]] && docker inspect -f '{{range .State.Health.Log}}{{.Output}}{{end}}' "$HEALTHCMD_CONTAINER" | grep -q '"/bin/sh": stat /bin/sh: no such file'
}
check "docker run --health-cmd \"/hasher healthcheck --port 80\": unhealthy, /bin/sh not found" healthcmd_unhealthy
docker rm -f "$HEALTHCMD_CONTAINER" >/dev/null 2>&1 && HEALTHCMD_CREATED=0
check "hashes still counted after the rollbacks" counter_increases

log "docker stack rm $STACK"
stack_gone() {
  STACK="$STACK" NETWORK="$MANUAL_NETWORK" "$ROOT/scripts/swarm/clean-up.sh" --volumes | sed 's/^/    /' &&
    wait_containers_gone "${STACK}_redis" "${STACK}_rng" "${STACK}_hasher" "${STACK}_worker" "${STACK}_webui" &&
    [[ -z "$(docker service ls -q --filter "label=com.docker.stack.namespace=$STACK")" ]] &&
    wait_network_gone "${STACK}_default" && ! volume_exists "${STACK}_redis-data"
}
check "clean-up.sh removed the stack, its network and its volume" stack_gone

# --- the manual flow ---------------------------------------------------------------------------------

export ENDPOINT_MODE=dnsrr PUBLISH_MODE=host NETWORK="$MANUAL_NETWORK" WORKERS=10
manual() {
  local rc=0
  "$ROOT/scripts/swarm/manual-flow.sh" "$@" >"/tmp/swarm-e2e-$$.log" 2>&1 || rc=$?
  sed 's/^/    /' "/tmp/swarm-e2e-$$.log"
  rm -f "/tmp/swarm-e2e-$$.log"
  return "$rc"
}

log "manual flow: network, services (ENDPOINT_MODE=dnsrr)"
t0="$(now)"
check "manual-flow.sh network services" manual network services
overlay_ok() { [[ "$(docker network inspect -f '{{.Driver}} {{.Attachable}}' "$MANUAL_NETWORK")" == "overlay true" ]]; }
check "network $MANUAL_NETWORK is an attachable overlay" overlay_ok
for svc in "${MANUAL_SERVICES[@]}"; do
  check "service $svc converged ($(replicas "$svc"))" wait_converged "$svc"
done
remember_volumes redis

log "manual flow: publish (PUBLISH_MODE=host WEBUI_PORT=$WEBUI_PORT)"
check "manual-flow.sh publish" manual publish
if first="$(wait_counter_above 0 "$WAIT_SECONDS")"; then
  FIGURE[manual_first_hash]="$(elapsed "$t0" "$(now)")"
  pass ":$WEBUI_PORT/json counts hashes (first one ${FIGURE[manual_first_hash]} s after the services step started)"
else
  fail ":$WEBUI_PORT/json counts hashes after the publish step"
fi
old_task_shut_down() { docker service ps webui --format '{{.DesiredState}} {{.CurrentState}}' | grep -q '^Shutdown Shutdown'; }
check "docker service ps webui shows the old task shut down" old_task_shut_down

log "manual flow: scale (worker --replicas 10)"
check "manual-flow.sh scale" manual scale
check "worker runs 10 replicas ($(replicas worker))" test "$(replicas worker)" = 10/10
sleep 5
if rate="$(measure_rate)"; then
  FIGURE[manual_rate10]="$rate"
  check "10 workers (manual flow): $rate hashes/s (expected $RATE10_MIN..$RATE10_MAX)" between "$rate" "$RATE10_MIN" "$RATE10_MAX"
else
  fail "10 workers (manual flow): could not read the counter"
fi

log "manual flow: global (rng re-created with --mode global)"
check "manual-flow.sh global" manual global
FIGURE[manual_rng_nodes]="$(tasks_per_node rng)"
check "rng is global: exactly one task per node (${FIGURE[manual_rng_nodes]})" one_task_per_node rng
check "rng names itself after its node, seen from the attachable overlay $MANUAL_NETWORK" banner_names_node "$MANUAL_NETWORK"
check "hashes still counted with the global rng" counter_increases

log "manual rolling update: docker service update --image $REGISTRY/hasher:$NEW_TAG hasher"
t0="$(now)"
if docker service update --detach --quiet --image "$REGISTRY/hasher:$NEW_TAG" hasher >/dev/null &&
  wait_update_state hasher completed && wait_converged hasher; then
  FIGURE[manual_update]="$(elapsed "$t0" "$(now)")"
  pass "rolling update of hasher to $NEW_TAG completed in ${FIGURE[manual_update]} s"
else
  fail "rolling update of hasher to $NEW_TAG (state: ${UPDATE_STATE:-?})"
fi
check "hashes still counted after the update" counter_increases

log "scripts/swarm/clean-up.sh"
manual_gone() {
  local svc
  STACK="$STACK" NETWORK="$MANUAL_NETWORK" "$ROOT/scripts/swarm/clean-up.sh" | sed 's/^/    /' || return 1
  for svc in "${MANUAL_SERVICES[@]}"; do
    if service_exists "$svc"; then return 1; fi
  done
  wait_network_gone "$MANUAL_NETWORK" && wait_containers_gone "${MANUAL_SERVICES[@]}"
}
check "clean-up.sh removed the five services and the network" manual_gone
if ((REGISTRY_CREATED)); then
  check "clean-up.sh left the registry service alone" service_exists registry
fi

finish
