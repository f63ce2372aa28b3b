#!/usr/bin/env bash
# Push the four DockerCoins images to a registry, as the workshop's Swarm chapter does:
#
#   scripts/push.sh                         -> 127.0.0.1:5000/{hasher,rng,webui,worker}:latest
#   REGISTRY=reg.example:5000 TAG=v0.2 scripts/push.sh
#
# The images are the ones Compose builds, dockercoins/<service>:$TAG. With
# BUILD=auto (the default) they are reused when all four exist and built with
# `docker compose build` otherwise; BUILD=always rebuilds them (a no-op when
# nothing changed), BUILD=never only reuses. Each is then tagged
# $REGISTRY/<service>:$TAG and pushed. The registry is checked first: if it
# does not answer, the script stops and says how to start one.
#
# Usage: scripts/push.sh [service ...]      (default: hasher rng webui worker)
# Env:   REGISTRY  registry host:port (default 127.0.0.1:5000)
#        TAG       image tag (default latest)
#        BUILD     auto | always | never (default auto)
#        IMAGE_PREFIX  local image names (default dockercoins, i.e. dockercoins/<service>:$TAG)
set -euo pipefail

usage() { echo "usage: $0 [hasher|rng|webui|worker ...]   (env: REGISTRY=127.0.0.1:5000 TAG=latest BUILD=auto|always|never)"; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REGISTRY="${REGISTRY:-127.0.0.1:5000}"
TAG="${TAG:-latest}"
BUILD="${BUILD:-auto}"
IMAGE_PREFIX="${IMAGE_PREFIX:-dockercoins}"

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

# 2. The local images, built by Compose unless they are there already.
missing=()
for svc in "${services[@]}"; do
  if ! docker image inspect "$IMAGE_PREFIX/$svc:$TAG" >/dev/null 2>&1; then
    missing+=("$svc")
  fi
done
if [[ "$BUILD" == always || ("$BUILD" == auto && ${#missing[@]} -gt 0) ]]; then
  docker compose version >/dev/null 2>&1 ||
    die "'docker compose' (Compose v2) is needed to build the images; install it (scripts/test/compose-plugin.sh does) or build them and re-run with BUILD=never"
  log "building ${services[*]} with Compose (TAG=$TAG)"
  TAG="$TAG" docker compose -f "$ROOT/compose.yaml" build "${services[@]}"
elif [[ ${#missing[@]} -gt 0 ]]; then
  die "no local image for ${missing[*]} (looked for $IMAGE_PREFIX/<service>:$TAG); build them (docker compose build) or re-run with BUILD=auto"
else
  log "reusing the images Compose built ($IMAGE_PREFIX/<service>:$TAG); BUILD=always rebuilds them"
fi

# 3. Tag and push.
for svc in "${services[@]}"; do
  src="$IMAGE_PREFIX/$svc:$TAG"
  dst="$REGISTRY/$svc:$TAG"
  docker image inspect "$src" >/dev/null 2>&1 || die "$src was not built; see the build output above"
  docker tag "$src" "$dst"
  log "pushing $dst"
  docker push --quiet "$dst" >/dev/null || die "pushing $dst failed; see the error above"
done
log "done: ${services[*]} are at $REGISTRY/<service>:$TAG (curl $REGISTRY/v2/_catalog lists them)"
