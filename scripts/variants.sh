#!/usr/bin/env bash
# The rollout lessons' image variants, built from our own images (same source,
# same binaries): each is `FROM localhost/dockercoins/<service>:$TAG` with other start-up
# arguments, which win over any environment the manifests set. The normal build
# (docker compose build, scripts/push.sh) is not changed.
#
#   worker:v0.2   --sleep=1s: a unit takes 1.2 s instead of 0.3 s (0.83 hashes/s per worker, not 3.33)
#   webui:v0.2    the chart drawn in green, axis labels and legend at 50px (as the classic's)
#   rng:v0.2      fails at start (a bad --delay): CrashLoopBackOff, then rollout undo
# and, only when named:
#   worker:v0.3   fails at start (a bad --sleep). The classic project publishes no
#                 worker:v0.3: the rollout lesson sets it to show an image that cannot
#                 be pulled (ErrImagePull), then `kubectl rollout undo`. Build it only
#                 to show a crash-looping rollout instead.
#
# Usage: scripts/variants.sh [service:tag ...]      (default: the classic three, not worker:v0.3)
#        scripts/variants.sh --assets DIR          webui:v0.2's page alone, written to DIR (no Docker)
# Env:   TAG           tag of the images to start from (default v0.1, the manifests' and the
#                      chart's; built with `TAG=v0.1 docker compose build` if missing)
#        IMAGE_PREFIX  local image names (default localhost/dockercoins, i.e. localhost/dockercoins/worker:v0.2 ...)
#        REGISTRY      if set, each variant is also tagged $REGISTRY/<service>:<tag> and pushed
#                      (e.g. 127.0.0.1:5000, the registry of scripts/push.sh)
#        PLATFORMS     e.g. linux/amd64,linux/arm64 (default: unset, the machine's platform only), as
#                      scripts/push.sh: needs REGISTRY. Each variant is built per platform FROM
#                      $IMAGE_PREFIX/<service>:$TAG-<arch> (what `PLATFORMS=... scripts/push.sh` builds;
#                      built the same way if missing), pushed as $REGISTRY/<service>:<tag>-<arch>, and a
#                      manifest list $REGISTRY/<service>:<tag> names them all: a worker:v0.2 built on an
#                      arm64 laptop then runs on amd64 nodes too (no `exec format error`).
set -euo pipefail

usage() { echo "usage: $0 [worker:v0.2|webui:v0.2|rng:v0.2|worker:v0.3 ...] | --assets DIR   (default: the first three; env: TAG=v0.1 IMAGE_PREFIX=localhost/dockercoins REGISTRY= PLATFORMS=linux/amd64,linux/arm64)"; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TAG="${TAG:-v0.1}"
IMAGE_PREFIX="${IMAGE_PREFIX:-localhost/dockercoins}"
REGISTRY="${REGISTRY:-}"
PLATFORMS="${PLATFORMS:-}"
CLASSIC=(worker:v0.2 webui:v0.2 rng:v0.2)

variants=()
assets_only=""
while [[ $# -gt 0 ]]; do
  arg="$1"
  shift
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    --assets) [[ $# -gt 0 ]] || { usage >&2; exit 2; }; assets_only="$1"; shift ;;
    worker:v0.2 | worker:v0.3 | webui:v0.2 | rng:v0.2) variants+=("$arg") ;;
    *) usage >&2; exit 2 ;;
  esac
done
[[ ${#variants[@]} -gt 0 ]] || variants=("${CLASSIC[@]}")
platforms=()
if [[ -n "$PLATFORMS" && -z "$assets_only" ]]; then
  IFS=, read -r -a platforms <<<"$PLATFORMS"
  for platform in "${platforms[@]}"; do
    [[ "$platform" =~ ^[a-z0-9]+/[a-z0-9]+(/[a-z0-9]+)?$ ]] ||
      { echo "variants: PLATFORMS must be like linux/amd64,linux/arm64 (got '$PLATFORMS')" >&2; exit 2; }
  done
  [[ -n "$REGISTRY" ]] || {
    echo "variants: PLATFORMS needs REGISTRY: a local tag holds one platform, a registry holds a manifest list of them" >&2
    exit 2
  }
fi

log() { echo "variants: $*"; }

# webui:v0.2's page, in $1/assets: the chart's line and fill in green (the
# classic v0.2's colour) and the axes' font, read from .axis-labels, at 50px.
webui_v02_assets() {
  local assets="$1/assets"
  cp -R "$ROOT/crates/webui/assets" "$assets"
  sed -i 's/#1746c2/#2ca02c/g; s/rgba(23, 70, 194,/rgba(44, 160, 44,/g' "$assets/webui.js"
  sed -i 's/^\(\.axis-labels, \.u-legend { font-size: \)15px;/\150px;/' "$assets/webui.css"
  grep -q '#2ca02c' "$assets/webui.js" || { log "webui.js: the chart colour #1746c2 was not found"; return 1; }
  grep -q 'font-size: 50px' "$assets/webui.css" || { log "webui.css: the .axis-labels rule was not found"; return 1; }
}

if [[ -n "$assets_only" ]]; then
  mkdir -p "$assets_only"
  webui_v02_assets "$assets_only"
  log "webui:v0.2's page written to $assets_only/assets (serve it: webui --assets-dir=$assets_only/assets)"
  exit 0
fi

# The Dockerfile of one variant, in the build context $2 (which holds webui's edited page),
# FROM the image tagged $3 (default $TAG).
dockerfile() {
  local variant="$1" context="$2" service="${1%%:*}" from="${3:-$TAG}"
  echo "FROM $IMAGE_PREFIX/$service:$from"
  echo "LABEL org.dockercoins.variant=\"$variant\""
  case "$variant" in
    worker:v0.2) echo 'ENTRYPOINT ["/bind80", "/worker", "--sleep=1s"]' ;;
    worker:v0.3) echo 'ENTRYPOINT ["/bind80", "/worker", "--sleep=v0.3-is-broken"]' ;;
    rng:v0.2) echo 'ENTRYPOINT ["/bind80", "/rng", "--delay=v0.2-is-broken"]' ;;
    webui:v0.2)
      webui_v02_assets "$context" >&2 || return 1
      echo 'COPY assets /assets'
      echo 'ENTRYPOINT ["/bind80", "/webui", "--assets-dir=/assets"]'
      ;;
  esac
}

context=$(mktemp -d)
trap 'rm -rf "$context" "$context.log"' EXIT

# One variant for one platform: the local image $IMAGE_PREFIX/<service>:<tag>-<arch> FROM
# <service>:$TAG-<arch>, pushed; $1 the variant, $2 the platform.
build_for() {
  local variant="$1" platform="$2" service="${1%%:*}" tag="${1#*:}" suffix
  suffix="${platform#*/}"
  suffix="${suffix//\//}"
  if ! docker image inspect "$IMAGE_PREFIX/$service:$TAG-$suffix" >/dev/null 2>&1; then
    [[ "$IMAGE_PREFIX" == localhost/dockercoins ]] || { log "missing $IMAGE_PREFIX/$service:$TAG-$suffix"; return 1; }
    log "building localhost/dockercoins/$service:$TAG-$suffix for $platform with docker compose"
    (cd "$ROOT" && TAG="$TAG-$suffix" DOCKER_DEFAULT_PLATFORM="$platform" docker compose build "$service")
  fi
  rm -rf "${context:?}"/*
  dockerfile "$variant" "$context" "$TAG-$suffix" >"$context/Dockerfile"
  log "building $IMAGE_PREFIX/$service:$tag-$suffix ($platform)"
  if ! docker build -q --platform "$platform" -t "$IMAGE_PREFIX/$service:$tag-$suffix" "$context" >"$context.log" 2>&1; then
    cat "$context.log" >&2
    return 1
  fi
  docker tag "$IMAGE_PREFIX/$service:$tag-$suffix" "$REGISTRY/$service:$tag-$suffix"
  docker push -q "$REGISTRY/$service:$tag-$suffix" >/dev/null
  log "pushed $REGISTRY/$service:$tag-$suffix"
}

if [[ ${#platforms[@]} -gt 0 ]]; then
  insecure=()
  if curl -s -o /dev/null --max-time 5 "http://$REGISTRY/v2/" 2>/dev/null; then
    insecure=(--insecure)
  fi
  for variant in "${variants[@]}"; do
    service="${variant%%:*}" tag="${variant#*:}"
    members=()
    for platform in "${platforms[@]}"; do
      build_for "$variant" "$platform"
      suffix="${platform#*/}"
      members+=("$REGISTRY/$service:$tag-${suffix//\//}")
    done
    docker manifest rm "$REGISTRY/$service:$tag" >/dev/null 2>&1 || true
    docker manifest create "${insecure[@]}" "$REGISTRY/$service:$tag" "${members[@]}" >/dev/null
    docker manifest push "${insecure[@]}" --purge "$REGISTRY/$service:$tag" >/dev/null
    log "pushed the manifest list $REGISTRY/$service:$tag (${platforms[*]})"
  done
  log "built: ${variants[*]} for ${platforms[*]}"
  exit 0
fi

# The images to start from.
missing=0
for variant in "${variants[@]}"; do
  docker image inspect "$IMAGE_PREFIX/${variant%%:*}:$TAG" >/dev/null 2>&1 || missing=1
done
if [[ $missing -eq 1 ]]; then
  [[ "$IMAGE_PREFIX" == localhost/dockercoins ]] || { log "missing $IMAGE_PREFIX/<service>:$TAG images"; exit 1; }
  log "building localhost/dockercoins/<service>:$TAG with docker compose"
  (cd "$ROOT" && TAG="$TAG" docker compose build)
fi

for variant in "${variants[@]}"; do
  service="${variant%%:*}" tag="${variant#*:}"
  rm -rf "${context:?}"/*
  dockerfile "$variant" "$context" >"$context/Dockerfile"
  log "building $IMAGE_PREFIX/$service:$tag from $IMAGE_PREFIX/$service:$TAG"
  # Plain `docker build`: FROM, ENTRYPOINT and COPY need no BuildKit. Its output only on failure.
  if ! docker build -q -t "$IMAGE_PREFIX/$service:$tag" "$context" >"$context.log" 2>&1; then
    cat "$context.log" >&2
    exit 1
  fi
  if [[ -n "$REGISTRY" ]]; then
    docker tag "$IMAGE_PREFIX/$service:$tag" "$REGISTRY/$service:$tag"
    docker push -q "$REGISTRY/$service:$tag" >/dev/null
    log "pushed $REGISTRY/$service:$tag"
  fi
done
log "built: ${variants[*]}"
