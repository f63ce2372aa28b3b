#!/usr/bin/env bash
# End-to-end test of the images and compose.yaml, on a machine without a registry.
#
# Seeds the public base images (scripts/test/lib/seed-images.sh), installs Compose v2
# if needed (scripts/test/lib/compose-plugin.sh), then, under a project name of its
# own: builds the four images (timing a no-change rebuild and a rebuild after a
# one-line change, the latter on a temporary copy of the sources), starts the
# app, checks every service, measures the mining rate with 1 and 10 workers and
# the time `docker compose stop` takes, checks that `down` then `up` keeps the
# counter, and removes its containers, networks and volumes on exit, whatever
# happens. It keeps the images localhost/dockercoins/<service>:${TAG} and the seeded bases.
#
# Usage: scripts/test/suites/compose/compose-e2e.sh
# Env:   WEBUI_PORT, RNG_PORT, HASHER_PORT  published ports (default 8000, 8001, 8002)
#        TAG               tag of the images built and tested (default latest)
#        E2E_PROJECT       Compose project name (default dockercoins-e2e-<pid>)
#        RATE_SECONDS      length of each rate measurement (default 20, at least 15)
#        RATE1_MIN/MAX     accepted 1-worker rate, hashes/s (default 2.8 / 3.8)
#        RATE10_MIN/MAX    accepted 10-worker rate, hashes/s (default 8.5 / 10.6)
#        MAX_IMAGE_BYTES   largest accepted image (default 15000000)
#        MAX_STOP_SECONDS  longest accepted `docker compose stop` (default 5)
#        COMPOSE_PARALLEL_LIMIT  containers Compose starts/stops at once (default 1, see below)
#        SKIP_SEED=1       do not run seed-images.sh / compose-plugin.sh

# Most checks are functions run through check(); shellcheck cannot see those calls.
# shellcheck disable=SC2317
set -euo pipefail

usage() { echo "usage: $0   (builds, runs and measures DockerCoins with Docker Compose; see the header for env knobs)"; }
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
export WEBUI_PORT="${WEBUI_PORT:-8000}"
export RNG_PORT="${RNG_PORT:-8001}"
export HASHER_PORT="${HASHER_PORT:-8002}"
export TAG="${TAG:-latest}"
PROJECT="${E2E_PROJECT:-dockercoins-e2e-$$}"
RATE_SECONDS="${RATE_SECONDS:-20}"
RATE1_MIN="${RATE1_MIN:-2.8}"
RATE1_MAX="${RATE1_MAX:-3.8}"
RATE10_MIN="${RATE10_MIN:-8.5}"
RATE10_MAX="${RATE10_MAX:-10.6}"
MAX_IMAGE_BYTES="${MAX_IMAGE_BYTES:-15000000}"
MAX_STOP_SECONDS="${MAX_STOP_SECONDS:-5}"
SKIP_SEED="${SKIP_SEED:-0}"
# Docker Engine 20.10 (the one here) sometimes miscounts a network's endpoints
# when many containers on it start or stop at the same moment; the network then
# cannot be removed ("has active endpoints") until the daemon restarts
# (moby/moby#42119). One container at a time keeps the test from leaking networks;
# the stop time measured is then the sum of the containers' stop times.
export COMPOSE_PARALLEL_LIMIT="${COMPOSE_PARALLEL_LIMIT:-1}"
SERVICES=(rng hasher worker webui)
if ! [[ "$RATE_SECONDS" =~ ^[0-9]+$ ]] || ((RATE_SECONDS < 15)); then
  echo "compose-e2e: RATE_SECONDS must be a whole number of seconds, at least 15 (got $RATE_SECONDS)" >&2
  exit 2
fi
# The one-line change is built under this tag, then the tag is removed.
EDIT_TAG="e2e-edit-$$"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/dockercoins-e2e.XXXXXX")"
STARTED=$SECONDS
TEST_NAME=compose-e2e
# shellcheck source=scripts/test/lib/lib.sh
source "$ROOT/scripts/test/lib/lib.sh"
# shellcheck source=scripts/test/lib/compose-lib.sh
source "$ROOT/scripts/test/lib/compose-lib.sh"
declare -A FIGURE=()

# contains TEXT PART...: every PART occurs in TEXT.
contains() {
  local text="$1" part
  shift
  for part in "$@"; do
    [[ "$text" == *"$part"* ]] || return 1
  done
}
# not_contains TEXT PART: PART does not occur in TEXT.
not_contains() { [[ "$1" != *"$2"* ]]; }
# url_has URL TEXT: the body fetched from URL contains TEXT.
url_has() { curl -fsSL --max-time 3 "$1" 2>/dev/null | grep -qi -- "$2"; }

compose() { docker compose -p "$PROJECT" -f "$ROOT/compose.yaml" "$@"; }
# `down`, tried again if it fails: under load the engine now and then fails to
# remove a container or a network on the first try.
compose_down() {
  local attempt
  for attempt in 1 2 3 4; do
    if compose down "$@"; then return 0; fi
    echo "compose-e2e: docker compose down failed (attempt $attempt), retrying" >&2
    sleep "$attempt"
  done
  return 1
}
edit_compose() { TAG="$EDIT_TAG" docker compose -p "$PROJECT-edit" -f "$WORK/src/compose.yaml" "$@"; }

cleanup() {
  local rc=$?
  set +e
  log "cleaning up project $PROJECT"
  compose_down -v --remove-orphans --timeout 5 >/dev/null 2>&1
  if [[ -f "$WORK/src/compose.yaml" ]]; then
    edit_compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1
  fi
  for svc in "${SERVICES[@]}"; do
    if docker image inspect "localhost/dockercoins/$svc:$EDIT_TAG" >/dev/null 2>&1; then
      docker image rm "localhost/dockercoins/$svc:$EDIT_TAG" >/dev/null 2>&1
    fi
  done
  rm -rf "$WORK"
  return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# GET /json from the web UI; prints "<hashes> <now>" or fails.
read_counter() {
  curl -fsS --max-time 3 "http://127.0.0.1:$WEBUI_PORT/json" 2>/dev/null |
    jq -er '"\(.hashes | tonumber) \(.now)"' 2>/dev/null
}

# The counter as soon as it next changes. The workers add to it about once a
# second, so a reading taken at a random moment misses up to a second of work;
# taken just after a change, both ends of a measurement line up with a flush.
read_counter_fresh() {
  local base reading deadline=$((SECONDS + 15))
  base="$(read_counter)" || return 1
  while ((SECONDS < deadline)); do
    reading="$(read_counter)" || return 1
    if [[ "${reading%% *}" != "${base%% *}" ]]; then
      echo "$reading"
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# Hashes per second over about RATE_SECONDS, from the counter and the web UI's clock.
measure_rate() {
  local first last
  first="$(read_counter_fresh)" || return 1
  sleep "$RATE_SECONDS"
  last="$(read_counter_fresh)" || return 1
  awk -v a="$first" -v b="$last" 'BEGIN {
    split(a, x, " "); split(b, y, " ");
    if (y[2] <= x[2]) exit 1;
    printf "%.2f", (y[1] - x[1]) / (y[2] - x[2]) }'
}

# Waits until every container of the project is healthy (or running, if it has no health check).
wait_healthy() {
  local deadline=$((SECONDS + ${1:-90})) ids id state all
  while ((SECONDS < deadline)); do
    ids="$(compose ps -q)"
    all=1
    if [[ -z "$ids" ]]; then all=0; fi
    for id in $ids; do
      state="$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")"
      if [[ "$state" != healthy && "$state" != running ]]; then all=0; fi
    done
    if ((all)); then return 0; fi
    sleep 0.5
  done
  compose ps >&2
  return 1
}

# Waits until the counter exceeds $1; prints the counter.
wait_counter_above() {
  local floor="$1" deadline=$((SECONDS + ${2:-60})) reading
  while ((SECONDS < deadline)); do
    if reading="$(read_counter)" && awk -v r="$reading" -v f="$floor" 'BEGIN { split(r, x, " "); exit !(x[1] > f) }'; then
      echo "${reading%% *}"
      return 0
    fi
    sleep 0.2
  done
  return 1
}

not_in_log() { ! grep -q -- "$1" "$2"; }

# Runs a command, tees its output to $WORK/<name>.log, prints nothing on success
# and the log's tail on failure; sets LAST_SECONDS to its duration.
LAST_SECONDS=0
timed() {
  local name="$1" t0 rc=0
  shift
  t0="$(now)"
  "$@" >"$WORK/$name.log" 2>&1 || rc=$?
  LAST_SECONDS="$(elapsed "$t0" "$(now)")"
  if ((rc != 0)); then
    echo "--- last lines of $name ---" >&2
    tail -n 40 "$WORK/$name.log" >&2
  fi
  return "$rc"
}

summary() {
  local svc
  echo
  echo "=== DockerCoins Compose e2e summary (project $PROJECT) ==="
  for svc in "${SERVICES[@]}"; do
    printf '  image localhost/dockercoins/%-7s %s\n' "$svc:$TAG" "${FIGURE[size_$svc]:-?}"
  done
  printf '  %-34s %s\n' \
    "first build (${FIGURE[build_kind]:-?})" "${FIGURE[build]:-?} s" \
    "no-change rebuild" "${FIGURE[rebuild]:-?} s" \
    "rebuild after a one-line change" "${FIGURE[edit_build]:-?} s (hasher)" \
    "up -> first counted hash" "${FIGURE[first_hash]:-?} s" \
    "compose stop (${FIGURE[stop_count]:-?} containers)" "${FIGURE[stop]:-?} s (at most $COMPOSE_PARALLEL_LIMIT at once)" \
    "rate, 1 worker" "${FIGURE[rate1]:-?} hashes/s" \
    "rate, 10 workers" "${FIGURE[rate10]:-?} hashes/s" \
    "whole e2e run" "$((SECONDS - STARTED)) s"
  echo "$PASSED passed, $FAILED failed"
}


# --- prerequisites -----------------------------------------------------------

compose_prerequisites

# --- static checks -------------------------------------------------------------

log "static checks"
check "compose.yaml is valid (docker compose config)" compose config -q
check "compose.yaml + compose.dev.yaml is valid" compose -f "$ROOT/compose.dev.yaml" config -q
no_version_key() { ! grep -Eq '^version:' "$ROOT/compose.yaml" "$ROOT/compose.dev.yaml"; }
check "compose files have no version: key" no_version_key
build_stage() { sed -n '/^FROM .* AS build$/,/^FROM scratch/p' "$ROOT/docker/$1.Dockerfile"; }
same_build_stages() {
  local svc
  [[ -n "$(build_stage rng)" ]] || return 1
  for svc in hasher worker webui; do
    diff -q <(build_stage rng) <(build_stage "$svc") >/dev/null || return 1
  done
}
check "the four Dockerfiles share a byte-identical build stage" same_build_stages
no_syntax_no_ca() { ! grep -Eiq '^#[[:space:]]*syntax=|BEGIN CERTIFICATE|ca-certificates\.crt' "$ROOT"/docker/*.Dockerfile; }
check "no Dockerfile has a '# syntax=' line or a CA certificate" no_syntax_no_ca

# --- builds ----------------------------------------------------------------------

log "docker compose build (all four images)"
# The images this build replaces, removed afterwards if nothing uses them any more.
declare -A PREVIOUS_IMAGE=()
for svc in "${SERVICES[@]}"; do
  PREVIOUS_IMAGE[$svc]="$(docker image inspect -f '{{.Id}}' "localhost/dockercoins/$svc:$TAG" 2>/dev/null || true)"
done
remove_replaced_images() {
  local svc old
  for svc in "${SERVICES[@]}"; do
    old="${PREVIOUS_IMAGE[$svc]}"
    if [[ -n "$old" && "$(docker image inspect -f '{{len .RepoTags}}' "$old" 2>/dev/null)" == 0 ]]; then
      docker image rm "$old" >/dev/null 2>&1 || true
    fi
  done
}
if ! timed build compose --progress plain build; then
  abort "docker compose build"
fi
FIGURE[build]="$LAST_SECONDS"
# "Compiling" lines mean cargo ran (a cold cache compiles some 200 crates).
compiled="$(grep -c ' Compiling ' "$WORK/build.log" || true)"
if ((compiled > 50)); then
  FIGURE[build_kind]="cold, $compiled crates compiled"
elif ((compiled > 0)); then
  FIGURE[build_kind]="warm cache, $compiled crates compiled"
else
  FIGURE[build_kind]="all layers cached"
fi
pass "docker compose build (${FIGURE[build]} s, ${FIGURE[build_kind]})"
remove_replaced_images

log "no-change rebuild"
if timed rebuild compose --progress plain build; then
  FIGURE[rebuild]="$LAST_SECONDS"
  check "no-change rebuild compiles nothing (${FIGURE[rebuild]} s)" not_in_log ' Compiling ' "$WORK/rebuild.log"
else
  fail "no-change rebuild"
fi

log "rebuild after a one-line change in hasher (on a copy of the sources)"
mkdir -p "$WORK/src"
tar -C "$ROOT" --exclude=./target --exclude=./.git -c . | tar -C "$WORK/src" -x
# Unique each run, or BuildKit would find the edited copy already built. A comment
# at the end: the binary built from it is the same, so whatever cargo leaves in
# the shared target cache for hasher stays correct for the real sources too.
echo "// one-line change made by compose-e2e.sh at $(date -u +%Y-%m-%dT%H:%M:%S.%NZ)" >>"$WORK/src/crates/hasher/src/main.rs"
# `up` on a tag that does not exist yet must build it, not try to pull it.
if timed edit_build edit_compose --progress plain up --no-start --no-deps hasher; then
  FIGURE[edit_build]="$LAST_SECONDS"
  pass "'docker compose up' builds a missing image instead of pulling it"
  check "the one-line change recompiled hasher (${FIGURE[edit_build]} s)" grep -q ' Compiling hasher ' "$WORK/edit_build.log"
else
  fail "'docker compose up' of a missing image (one-line change)"
fi
edit_compose down -v --remove-orphans >/dev/null 2>&1 || true
for svc in "${SERVICES[@]}"; do
  if docker image inspect "localhost/dockercoins/$svc:$EDIT_TAG" >/dev/null 2>&1; then
    docker image rm "localhost/dockercoins/$svc:$EDIT_TAG" >/dev/null 2>&1 || true
  fi
done

# --- images ----------------------------------------------------------------------

log "images"
non_root() { [[ -n "$1" && "$1" != 0 && "$1" != root && "$1" != 0:* && "$1" != root:* ]]; }
for svc in "${SERVICES[@]}"; do
  image="localhost/dockercoins/$svc:$TAG"
  size="$(docker image inspect -f '{{.Size}}' "$image")"
  FIGURE[size_$svc]="$(awk -v s="$size" 'BEGIN { printf "%.1f MB (%d bytes)", s / 1e6, s }')"
  check "$image is at most $MAX_IMAGE_BYTES bytes (${FIGURE[size_$svc]})" test "$size" -le "$MAX_IMAGE_BYTES"
  user="$(docker image inspect -f '{{.Config.User}}' "$image")"
  check "$image runs as a non-root user ($user)" non_root "$user"
  check "$image exposes port 80" \
    contains "$(docker image inspect -f '{{json .Config.ExposedPorts}}' "$image")" '"80/tcp"'
  check "$image health check is the binary itself on port 80" \
    contains "$(docker image inspect -f '{{join .Config.Healthcheck.Test " "}}' "$image")" "/$svc healthcheck --port 80"
  labels="$(docker image inspect -f '{{json .Config.Labels}}' "$image")"
  check "$image has OCI labels" \
    contains "$labels" org.opencontainers.image.title org.opencontainers.image.description org.opencontainers.image.licenses
  # A local build claims no repository: the release workflow labels its images
  # with the repository that built them.
  check "$image names no source repository" not_contains "$labels" org.opencontainers.image.source
done

# --- up ----------------------------------------------------------------------------

log "docker compose up -d"
t_up="$(now)"
if ! timed up compose up -d; then
  abort "docker compose up -d"
fi
if first="$(wait_counter_above 0 90)"; then
  FIGURE[first_hash]="$(elapsed "$t_up" "$(now)")"
  pass "first hash counted ${FIGURE[first_hash]} s after 'up' (hashes=$first)"
else
  compose logs --tail 20 >&2 || true
  abort "no hash counted within 90 s of 'up'"
fi
check "all containers healthy" wait_healthy 90

# Our four containers: read-only root, no capabilities, no-new-privileges, a restart policy.
hardened() {
  local id
  id="$(compose ps -q "$1" | head -n 1)"
  [[ -n "$id" ]] || return 1
  [[ "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}} {{json .HostConfig.CapDrop}} {{json .HostConfig.SecurityOpt}} {{.HostConfig.RestartPolicy.Name}}' "$id")" \
    == 'true ["ALL"] ["no-new-privileges:true"] unless-stopped' ]]
}
for svc in "${SERVICES[@]}"; do
  check "$svc container: read-only, cap_drop ALL, no-new-privileges, restart unless-stopped" hardened "$svc"
done
not_published() { [[ -z "$(docker port "$(compose ps -q "$1")")" ]]; }
check "redis is not published" not_published redis

# --- endpoints -----------------------------------------------------------------------

log "endpoints"
h1="$(read_counter | cut -d' ' -f1)" || h1=0
sleep 2.5
h2="$(read_counter | cut -d' ' -f1)" || h2=0
check ":$WEBUI_PORT/json hashes increase ($h1 -> $h2)" test "${h2:-0}" -gt "${h1:-0}"
json_fields() {
  curl -fsS --max-time 3 "http://127.0.0.1:$WEBUI_PORT/json" | jq -e 'has("coins") and has("hashes") and has("now")' >/dev/null
}
check ":$WEBUI_PORT/json has coins, hashes and now" json_fields
check ":$WEBUI_PORT/ serves the web page" url_has "http://127.0.0.1:$WEBUI_PORT/" "<html"
rng_bytes="$(curl -fsS --max-time 10 "http://127.0.0.1:$RNG_PORT/32" | wc -c)" || rng_bytes=0
check ":$RNG_PORT/32 returns exactly 32 bytes (got $rng_bytes)" test "$rng_bytes" -eq 32
abc_hash="$(curl -fsS --max-time 10 -X POST --data-binary abc -H 'Content-Type: application/octet-stream' "http://127.0.0.1:$HASHER_PORT/" || true)"
check "POST :$HASHER_PORT/ returns the SHA-256 of the body" \
  test "$abc_hash" = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad

# --- rates -----------------------------------------------------------------------------

log "rate with 1 worker (${RATE_SECONDS} s)"
if rate="$(measure_rate)"; then
  FIGURE[rate1]="$rate"
  check "1 worker: $rate hashes/s (expected $RATE1_MIN..$RATE1_MAX)" between "$rate" "$RATE1_MIN" "$RATE1_MAX"
else
  fail "1 worker: could not read the counter"
fi

log "rate with 10 workers (${RATE_SECONDS} s)"
if timed scale compose up -d --no-recreate --scale worker=10; then
  # Let the new workers start and the rng queue fill before measuring.
  sleep 5
  if rate="$(measure_rate)"; then
    FIGURE[rate10]="$rate"
    check "10 workers: $rate hashes/s (expected $RATE10_MIN..$RATE10_MAX)" between "$rate" "$RATE10_MIN" "$RATE10_MAX"
  else
    fail "10 workers: could not read the counter"
  fi
else
  fail "docker compose up --scale worker=10"
fi

# --- stop ------------------------------------------------------------------------------

log "docker compose stop"
before_stop="$(read_counter | cut -d' ' -f1)" || before_stop=0
FIGURE[stop_count]="$(compose ps -q | wc -l)"
if timed stop compose stop; then
  FIGURE[stop]="$LAST_SECONDS"
  check "docker compose stop of ${FIGURE[stop_count]} containers took ${FIGURE[stop]} s (< $MAX_STOP_SECONDS s)" \
    between "${FIGURE[stop]}" 0 "$MAX_STOP_SECONDS"
  codes="$(compose ps -a --format '{{.Service}}={{.ExitCode}}' | sort | uniq -c | tr -s ' ' | tr '\n' ' ')"
  all_exited_0() {
    local codes
    codes="$(compose ps -a --format '{{.ExitCode}}')" || return 1
    [[ -n "$codes" ]] && ! grep -qv '^0$' <<<"$codes"
  }
  check "every container exited 0 on SIGTERM ($codes)" all_exited_0
else
  fail "docker compose stop"
fi

# --- down, then up: the counter survives -------------------------------------------------

log "docker compose down, then up"
# Only redis comes back first: with no worker running, the counter it holds
# is exactly what survived the down.
if timed down compose_down && timed up_redis compose up -d redis && wait_healthy 60; then
  after="$(compose exec -T redis redis-cli get hashes | tr -d '[:space:]')" || after=""
  check "down then up keeps the counter ($before_stop before, ${after:-none} after)" \
    test "${after:-0}" -ge "$before_stop" -a "${after:-0}" -gt 0
  if ! { timed up2 compose up -d && wait_healthy 90; }; then
    fail "docker compose up after down"
  fi
else
  fail "docker compose down, then up redis"
fi

# --- development override: the page is served from the mounted assets ---------------------

log "compose.dev.yaml (live-edited assets)"
dev_assets="$WORK/src/crates/webui/assets"
if [[ -f "$dev_assets/index.html" ]]; then
  marker="live-edit-$$-$RANDOM"
  if timed dev docker compose -p "$PROJECT" -f "$WORK/src/compose.yaml" -f "$WORK/src/compose.dev.yaml" up -d --no-build --no-deps webui &&
    wait_healthy 60; then
    echo "<!-- $marker -->" >>"$dev_assets/index.html"
    check "with compose.dev.yaml an edit of index.html shows without a rebuild" \
      url_has "http://127.0.0.1:$WEBUI_PORT/index.html" "$marker"
  else
    fail "docker compose -f compose.yaml -f compose.dev.yaml up webui"
  fi
else
  fail "crates/webui/assets/index.html not found"
fi

# --- clean up ------------------------------------------------------------------------------

log "docker compose down -v --remove-orphans"
check "docker compose down -v --remove-orphans" timed down_v compose_down -v --remove-orphans
leftovers() {
  local filter="label=com.docker.compose.project=$PROJECT" left line
  left="$(docker ps -a --filter "$filter" --format 'container {{.Names}} ({{.Status}})'
    docker network ls --filter "$filter" --format 'network {{.Name}}'
    docker volume ls --filter "$filter" --format 'volume {{.Name}}')"
  if [[ -n "$left" ]]; then
    while IFS= read -r line; do echo "        left: $line"; done <<<"$left"
    return 1
  fi
}
check "no container, network or volume of project $PROJECT is left" leftovers

finish
