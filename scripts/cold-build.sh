#!/usr/bin/env bash
# How long an attendee's first `docker compose up` compiles: a cold
# `docker compose build` of the four images, timed for one or more commits,
# back to back, in a throwaway Docker engine of its own (a container running
# dockerd, the node image of scripts/cluster.sh). Its build cache starts empty
# for every build, and the machine's own engine and build cache are left alone.
# Only the base images are present, as on an attendee's machine after the pulls.
#
#   scripts/cold-build.sh                 the working tree's HEAD
#   scripts/cold-build.sh OLD NEW [...]   each commit in turn; ROUNDS=2 repeats the list
#
# Prints one line per build (seconds, crates compiled) and a table at the end;
# builds within one run share the machine's load, so compare them as a ratio.
#
# Usage: scripts/cold-build.sh [COMMIT...]
# Env:   ROUNDS        times the list of commits is built (default 1)
#        BUILDER_NAME  the engine's container (default dockercoins-cold-build)
#        NODE_IMAGE    image with dockerd (default dockercoins-node:bookworm-1, made by
#                      `scripts/cluster.sh image` when missing)
#        RUST_IMAGE    the build stage's base image, copied into the engine (default rust:1.95-slim-bookworm)
#        KEEP_LOGS     directory for each build's log (default: a temporary one, printed)
set -euo pipefail

usage() { echo "usage: $0 [COMMIT...]   (cold docker compose build per commit, in an engine of its own)"; }
case "${1:-}" in -h | --help) usage; exit 0 ;; esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ROUNDS="${ROUNDS:-1}"
BUILDER_NAME="${BUILDER_NAME:-dockercoins-cold-build}"
NODE_IMAGE="${NODE_IMAGE:-dockercoins-node:bookworm-1}"
RUST_IMAGE="${RUST_IMAGE:-rust:1.95-slim-bookworm}"
KEEP_LOGS="${KEEP_LOGS:-$(mktemp -d /tmp/dockercoins-cold-build.XXXXXX)}"
mkdir -p "$KEEP_LOGS"
DOCKER_CLIENT="$(command -v docker)"
PLUGIN="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins/docker-compose"

log() { echo "cold-build: $*"; }
die() { echo "cold-build: $*" >&2; exit 1; }

commits=("$@")
[[ ${#commits[@]} -gt 0 ]] || commits=(HEAD)
for commit in "${commits[@]}"; do
  git -C "$ROOT" rev-parse --verify -q "$commit^{commit}" >/dev/null || die "not a commit: $commit"
done
[[ -x "$PLUGIN" ]] || "$ROOT/scripts/test/lib/compose-plugin.sh" >/dev/null
docker image inspect "$RUST_IMAGE" >/dev/null 2>&1 ||
  die "$RUST_IMAGE is missing: docker pull $RUST_IMAGE (or scripts/test/lib/seed-images.sh rust)"
docker image inspect "$NODE_IMAGE" >/dev/null 2>&1 || NODE_IMAGE="$NODE_IMAGE" "$ROOT/scripts/cluster.sh" image

WORK="$(mktemp -d /tmp/dockercoins-cold-src.XXXXXX)"
cleanup() {
  docker rm -f "$BUILDER_NAME" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

log "engine: docker run $NODE_IMAGE as $BUILDER_NAME (its storage in memory)"
docker rm -f "$BUILDER_NAME" >/dev/null 2>&1 || true
docker run -d --name "$BUILDER_NAME" --init \
  --cap-add ALL --cap-drop SYS_RESOURCE \
  --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
  --tmpfs /var/lib/docker:exec -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
  -v "$DOCKER_CLIENT:/usr/local/bin/docker:ro" \
  -v "$PLUGIN:/root/.docker/cli-plugins/docker-compose:ro" \
  -v "$WORK:/work" "$NODE_IMAGE" >/dev/null
in_engine() { docker exec "$BUILDER_NAME" "$@"; }
deadline=$((SECONDS + 60))
until in_engine docker info >/dev/null 2>&1; do
  ((SECONDS < deadline)) || die "the engine in $BUILDER_NAME did not start: docker logs $BUILDER_NAME"
  sleep 0.5
done
log "copying $RUST_IMAGE into it"
docker save "$RUST_IMAGE" | docker exec -i "$BUILDER_NAME" docker load >/dev/null

results=()
for round in $(seq 1 "$ROUNDS"); do
  for commit in "${commits[@]}"; do
    sha="$(git -C "$ROOT" rev-parse --short "$commit")"
    src="/work/$sha"
    rm -rf "${WORK:?}/$sha" && mkdir -p "$WORK/$sha"
    git -C "$ROOT" archive "$sha" | tar -x -C "$WORK/$sha"
    in_engine docker builder prune -af >/dev/null
    in_engine sh -c 'docker images -q localhost/dockercoins/* | xargs -r docker rmi -f' >/dev/null
    logfile="$KEEP_LOGS/build-$round-$sha.log"
    log "round $round, $sha: docker compose build (log: $logfile)"
    start=$(date +%s.%N)
    if ! in_engine sh -c "cd $src && docker compose --progress plain build" >"$logfile" 2>&1; then
      die "build of $sha failed; see $logfile"
    fi
    seconds=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    compiled=$(grep -c ' Compiling ' "$logfile" || true)
    load=$(cut -d' ' -f1 /proc/loadavg)
    line=$(printf '%-3s %-10s %7.1f s  %4s crates compiled  load %s' "$round" "$sha" "$seconds" "$compiled" "$load")
    log "$line"
    results+=("$line")
  done
done

echo
echo "round commit     cold build     compiled           load after"
printf '%s\n' "${results[@]}"
echo "logs: $KEEP_LOGS"
