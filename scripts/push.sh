#!/usr/bin/env bash
# Push the four DockerCoins images to a registry, as the workshop's Swarm chapter does:
#
#   scripts/push.sh                         -> 127.0.0.1:5000/{hasher,rng,webui,worker}:latest
#   REGISTRY=reg.example:5000 TAG=v0.2 scripts/push.sh
#   PLATFORMS=linux/amd64,linux/arm64,linux/arm/v7 scripts/push.sh   -> one image per platform + a manifest list
#
# The images are the ones Compose builds, localhost/dockercoins/<service>:$TAG. With
# BUILD=auto (the default) they are reused when all four exist and built with
# `docker compose build` otherwise; BUILD=always rebuilds them (a no-op when
# nothing changed), BUILD=never only reuses. Each is then tagged
# $REGISTRY/<service>:$TAG and pushed. The registry is checked first: if it
# does not answer, the script stops and says how to start one.
#
# With PLATFORMS (a comma-separated list), each platform is built on its own,
# as localhost/dockercoins/<service>:$TAG-<arch> (linux/arm64 -> $TAG-arm64,
# linux/arm/v7 -> $TAG-armv7), by
# `docker compose build` with DOCKER_DEFAULT_PLATFORM set: for a platform
# other than the machine's, the Dockerfiles' build stage still runs on the
# machine's own and cross-compiles (no emulation; docs/platforms.md). Each is
# pushed as $REGISTRY/<service>:$TAG-<arch>, then `docker manifest create` +
# `docker manifest push` put a manifest list under $REGISTRY/<service>:$TAG
# that names them all: `docker pull`, `docker service create` and
# `docker stack deploy` then get the image of the node's own architecture.
# Only the engine's own builder is used (no buildx container driver).
#
# Usage: scripts/push.sh [service ...]      (default: hasher rng webui worker)
# Env:   REGISTRY  registry host:port (default 127.0.0.1:5000)
#        TAG       image tag (default latest)
#        BUILD     auto | always | never (default auto)
#        IMAGE_PREFIX  local image names (default localhost/dockercoins, i.e. localhost/dockercoins/<service>:$TAG)
#        PLATFORMS     e.g. linux/amd64,linux/arm64,linux/arm/v7 (default: unset, the machine's platform only)
set -euo pipefail

usage() { echo "usage: $0 [hasher|rng|webui|worker ...]   (env: REGISTRY=127.0.0.1:5000 TAG=latest BUILD=auto|always|never PLATFORMS=linux/amd64,linux/arm64,linux/arm/v7)"; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REGISTRY="${REGISTRY:-127.0.0.1:5000}"
TAG="${TAG:-latest}"
BUILD="${BUILD:-auto}"
IMAGE_PREFIX="${IMAGE_PREFIX:-localhost/dockercoins}"
PLATFORMS="${PLATFORMS:-}"

services=()
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    hasher | rng | webui | worker) services+=("$arg") ;;
    *) usage >&2; exit 2 ;;
  esac
done
if [[ ${#services[@]} -eq 0 ]]; then
  services=(hasher rng webui worker)
fi
platforms=()
if [[ -n "$PLATFORMS" ]]; then
  IFS=, read -r -a platforms <<<"$PLATFORMS"
  for platform in "${platforms[@]}"; do
    [[ "$platform" =~ ^[a-z0-9]+/[a-z0-9]+(/[a-z0-9]+)?$ ]] ||
      { echo "push: PLATFORMS must be like linux/amd64,linux/arm64,linux/arm/v7 (got '$PLATFORMS')" >&2; exit 2; }
  done
fi
case "$BUILD" in
  auto | always | never) ;;
  *) echo "push: BUILD must be auto, always or never (got '$BUILD')" >&2; exit 2 ;;
esac

log() { echo "push: $*"; }
die() { echo "push: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
command -v curl >/dev/null || die "curl is missing; install it (apt-get install -y curl)"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine; is dockerd running?"

# 1. The registry answers (any HTTP status from /v2/: 200, or 401 when it wants a login).
registry_answers() {
  local scheme code
  for scheme in http https; do
    code="$(curl -sk -o /dev/null --max-time 5 -w '%{http_code}' "$scheme://$REGISTRY/v2/" 2>/dev/null || true)"
    if [[ "$code" =~ ^[1-5][0-9][0-9]$ && "$code" != 000 ]]; then
      return 0
    fi
  done
  return 1
}
if ! registry_answers; then
  port="${REGISTRY##*:}"
  [[ "$port" =~ ^[0-9]+$ ]] || port=5000
  die "no registry answers at $REGISTRY; start one: docker service create --name registry --publish $port:5000 registry:2 (or REGISTRY_PORT=$port scripts/swarm/start-registry.sh), then re-run"
fi

# The local images of one platform (its tag: $TAG, or $TAG-<arch> for a
# multi-platform push), built by Compose unless they are there already.
# $1: the tag, $2: the platform to build for ("" = the engine's own).
local_images() {
  local tag="$1" platform="$2" svc missing=()
  for svc in "${services[@]}"; do
    if ! docker image inspect "$IMAGE_PREFIX/$svc:$tag" >/dev/null 2>&1; then
      missing+=("$svc")
    fi
  done
  if [[ "$BUILD" == always || ("$BUILD" == auto && ${#missing[@]} -gt 0) ]]; then
    docker compose version >/dev/null 2>&1 ||
      die "'docker compose' (Compose v2) is needed to build the images; install it (scripts/test/lib/compose-plugin.sh does) or build them and re-run with BUILD=never"
    log "building ${services[*]} with Compose (TAG=$tag${platform:+, platform $platform})"
    if [[ -n "$platform" ]]; then
      TAG="$tag" DOCKER_DEFAULT_PLATFORM="$platform" docker compose -f "$ROOT/compose.yaml" build "${services[@]}"
    else
      TAG="$tag" docker compose -f "$ROOT/compose.yaml" build "${services[@]}"
    fi
  elif [[ ${#missing[@]} -gt 0 ]]; then
    die "no local image for ${missing[*]} (looked for $IMAGE_PREFIX/<service>:$tag); build them (docker compose build) or re-run with BUILD=auto"
  else
    log "reusing the images Compose built ($IMAGE_PREFIX/<service>:$tag); BUILD=always rebuilds them"
  fi
  for svc in "${services[@]}"; do
    docker image inspect "$IMAGE_PREFIX/$svc:$tag" >/dev/null 2>&1 || die "$IMAGE_PREFIX/$svc:$tag was not built; see the build output above"
    if [[ -n "$platform" ]]; then
      local got
      got="$(docker image inspect -f '{{.Os}}/{{.Architecture}}{{with .Variant}}/{{.}}{{end}}' "$IMAGE_PREFIX/$svc:$tag")"
      [[ "$got" == "$platform" ]] || die "$IMAGE_PREFIX/$svc:$tag is $got, not $platform; rebuild it (BUILD=always)"
    fi
  done
}

# Tag and push one platform's images.
push_images() {
  local tag="$1" svc src dst
  for svc in "${services[@]}"; do
    src="$IMAGE_PREFIX/$svc:$tag"
    dst="$REGISTRY/$svc:$tag"
    docker tag "$src" "$dst"
    log "pushing $dst"
    docker push --quiet "$dst" >/dev/null || die "pushing $dst failed; see the error above"
  done
}

if [[ ${#platforms[@]} -eq 0 ]]; then
  # 2. The local images, 3. tag and push.
  local_images "$TAG" ""
  push_images "$TAG"
  log "done: ${services[*]} are at $REGISTRY/<service>:$TAG (curl $REGISTRY/v2/_catalog lists them)"
  exit 0
fi

# 2. Each platform: build (or reuse), tag $TAG-<arch> (the platform without
# its OS and slashes: amd64, arm64, armv7), push.
suffixes=()
for platform in "${platforms[@]}"; do
  suffix="${platform#*/}"
  suffix="${suffix//\//}"
  suffixes+=("$suffix")
  local_images "$TAG-$suffix" "$platform"
  push_images "$TAG-$suffix"
done

# 3. The manifest list under $TAG, naming every platform's image. A registry
# that answers plain HTTP (a local one) needs --insecure.
insecure=()
if curl -s -o /dev/null --max-time 5 "http://$REGISTRY/v2/" 2>/dev/null; then
  insecure=(--insecure)
fi
for svc in "${services[@]}"; do
  list="$REGISTRY/$svc:$TAG"
  members=()
  for suffix in "${suffixes[@]}"; do
    members+=("$REGISTRY/$svc:$TAG-$suffix")
  done
  # A list left from an earlier run would be amended, not replaced.
  docker manifest rm "$list" >/dev/null 2>&1 || true
  docker manifest create "${insecure[@]}" "$list" "${members[@]}" >/dev/null ||
    die "docker manifest create $list failed; see the error above"
  log "pushing the manifest list $list (${platforms[*]})"
  docker manifest push "${insecure[@]}" --purge "$list" >/dev/null ||
    die "docker manifest push $list failed; see the error above"
done
log "done: ${services[*]} are at $REGISTRY/<service>:$TAG for ${platforms[*]} (docker manifest inspect $REGISTRY/${services[0]}:$TAG lists them)"
