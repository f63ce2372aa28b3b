#!/usr/bin/env bash
# Seed local look-alikes of the public images the project's files name.
#
# The test machines reach no container registry, so `rust:1.95-slim-bookworm`,
# `redis:7` and `registry:2` cannot be pulled. Once an image with the right tag
# exists locally, `docker build`, `docker compose` and `docker run` use it
# without pulling, so the project's Dockerfiles and Compose files can keep
# naming the real images. This script makes those images from Debian packages
# (debootstrap + `docker import`):
#
#   rust:1.95-slim-bookworm  gcc, libc6-dev, this machine's Rust toolchain laid
#                            out like the official image (/usr/local/rustup,
#                            /usr/local/cargo/bin on PATH) and this machine's CA
#                            bundle, so cargo and rustup reach their servers
#                            through the intercepting proxy
#   redis:7                  Debian's redis-server + redis-cli, with an
#                            entrypoint that behaves like the official one
#   registry:2               Debian's docker-registry (Distribution 2.8) on
#                            :5000, no auth
#
# More, only when asked for:
#
#   rust-arm64  $RUST_ARM64_IMAGE, a linux/arm64 Rust builder for the emulated
#               arm64 build (scripts/test/suites/multiarch/multiarch.sh emulated): Debian trixie
#               arm64 with gcc, libc6-dev and rustc/cargo from trixie-backports
#               (trixie's own 1.85 is older than the workspace's rust-version),
#               the official image's CARGO_HOME and this machine's CA bundle.
#               Its own tag: the engine keeps one image per tag, and the amd64
#               rust:1.95-slim-bookworm must stay. Runs under QEMU (binfmt).
#               For the emulated arm64 build (scripts/test/suites/multiarch/multiarch.sh emulated).
#   prometheus     $PROMETHEUS_IMAGE: Debian's prometheus (2.42) laid out like
#                  the official image: /bin/prometheus FROM scratch with the
#                  libraries it links, /prometheus owned by nobody, run as
#                  nobody, the official entrypoint and command.
#   node-exporter  $NODE_EXPORTER_IMAGE: Debian's prometheus-node-exporter
#                  (1.5.0) as /bin/node_exporter, likewise, on :9100.
#               These two come from the packages' .deb files (apt-get download,
#               kept under $SEED_CACHE_DIR): nothing is installed on this
#               machine and no service is started. For the Prometheus suites
#               (compose-prometheus, cluster: scripts/test/suites/cluster/cluster-metrics.sh).
#   netshoot    $NETSHOOT_IMAGE, the debugging image the Swarm lessons run on the
#               app's overlay network (scripts/test/suites/swarm/swarm-e2e.sh): Debian's drill
#               (ldnsutils), dig (bind9-dnsutils), ab (apache2-utils), curl and
#               ping, the tools of the lessons' commands; bash, not zsh, as its shell.
#
# An image that already exists is left alone: a seeded one (label
# org.dockercoins.seeded) of the current seed version, or a real one (no label).
# Root filesystems are cached under $SEED_CACHE_DIR, so a re-run after
# `docker rmi` only re-imports. Needs root (debootstrap).
#
# Usage: scripts/test/lib/seed-images.sh [rust|redis|registry|rust-arm64|prometheus|node-exporter|netshoot ...]   (default: the first three)
# Env:   SEED_CACHE_DIR  (default /var/cache/dockercoins-seed)
#        DEBIAN_MIRROR   (default: debootstrap's own mirror)
#        DEBIAN_SUITE    (default bookworm)
#        RUST_IMAGE      (default rust:1.95-slim-bookworm)
#        REDIS_IMAGE     (default redis:7)
#        REGISTRY_IMAGE  (default registry:2)
#        RUST_ARM64_IMAGE (default dockercoins-seed/rust:1.95-slim-bookworm-arm64)
#        PROMETHEUS_IMAGE (default prom/prometheus:v3.5.0)
#        NODE_EXPORTER_IMAGE (default prom/node-exporter:v1.9.1)
#        NETSHOOT_IMAGE  (default nicolaka/netshoot:latest)
#        SEED_FORCE=1    re-import seeded images even if present (never replaces real ones)
set -euo pipefail

usage() { echo "usage: $0 [rust|redis|registry|rust-arm64|prometheus|node-exporter|netshoot ...]   (seeds local look-alikes of the public images; default: rust redis registry)"; }

SEED_CACHE_DIR="${SEED_CACHE_DIR:-/var/cache/dockercoins-seed}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-}"
DEBIAN_SUITE="${DEBIAN_SUITE:-bookworm}"
RUST_IMAGE="${RUST_IMAGE:-rust:1.95-slim-bookworm}"
REDIS_IMAGE="${REDIS_IMAGE:-redis:7}"
REGISTRY_IMAGE="${REGISTRY_IMAGE:-registry:2}"
RUST_ARM64_IMAGE="${RUST_ARM64_IMAGE:-dockercoins-seed/rust:1.95-slim-bookworm-arm64}"
PROMETHEUS_IMAGE="${PROMETHEUS_IMAGE:-prom/prometheus:v3.5.0}"
NODE_EXPORTER_IMAGE="${NODE_EXPORTER_IMAGE:-prom/node-exporter:v1.9.1}"
NETSHOOT_IMAGE="${NETSHOOT_IMAGE:-nicolaka/netshoot:latest}"
SEED_FORCE="${SEED_FORCE:-0}"
# Bump a look-alike's number when what it contains changes: an older seeded
# image is then re-imported. (Each has its own: a new rust image would make
# every project build start cold.)
seed_version() {
  case "$1" in
    rust) echo 1 ;;
    redis) echo 2 ;;
    registry) echo 1 ;;
    rust-arm64) echo 1 ;;
    prometheus) echo 1 ;;
    node-exporter) echo 1 ;;
    netshoot) echo 1 ;;
  esac
}
SEED_LABEL=org.dockercoins.seeded

log() { echo "seed-images: $*"; }
die() { echo "seed-images: $*" >&2; exit 1; }

targets=()
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    rust | redis | registry | rust-arm64 | prometheus | node-exporter | netshoot) targets+=("$arg") ;;
    *) usage >&2; exit 2 ;;
  esac
done
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=(rust redis registry)
fi

[[ "$(id -u)" -eq 0 ]] || die "must run as root (debootstrap needs it); try: sudo $0 $*"
command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine; is dockerd running?"

# apt-get that waits for another apt/dpkg process instead of failing on the lock.
apt_install() {
  local attempt
  export DEBIAN_FRONTEND=noninteractive
  for attempt in 1 2 3; do
    if apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "$@"; then
      return 0
    fi
    log "apt-get install $* failed (attempt $attempt); refreshing package lists"
    apt-get -o DPkg::Lock::Timeout=600 update || true
    sleep 5
  done
  die "could not install $*"
}

ensure_tools() {
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    apt_install debootstrap
  fi
  if [[ ! -f /usr/share/keyrings/debian-archive-keyring.gpg ]]; then
    apt_install debian-archive-keyring
  fi
}

# Prints "seeded", "stale", "real" or "absent" for an image tag ($1) of a look-alike ($2).
image_state() {
  local image="$1" wanted seeded version
  wanted="$(seed_version "$2")"
  if ! docker image inspect "$image" >/dev/null 2>&1; then
    echo absent
    return
  fi
  seeded="$(docker image inspect -f "{{ index .Config.Labels \"$SEED_LABEL\" }}" "$image")"
  version="$(docker image inspect -f '{{ index .Config.Labels "org.dockercoins.seed-version" }}' "$image")"
  if [[ "$seeded" != 1 ]]; then
    echo real
  elif [[ "$version" != "$wanted" || "$SEED_FORCE" == 1 ]]; then
    echo stale
  else
    echo seeded
  fi
}

# debootstrap a minbase root with extra packages into $SEED_CACHE_DIR/<name>/rootfs,
# unless a complete one is cached. $2 is a function that customises the root.
make_root() {
  local name="$1" customise="$2" include="$3" arch="${4:-}" suite="${5:-$DEBIAN_SUITE}"
  local dir="$SEED_CACHE_DIR/$name" stamp
  stamp="v$(seed_version "$name") $suite $include${arch:+ $arch}"
  if [[ -f "$dir/complete" && "$(cat "$dir/complete")" == "$stamp" ]]; then
    log "$name: using cached root filesystem $dir/rootfs"
    return 0
  fi
  rm -rf "$dir"
  mkdir -p "$dir" "$SEED_CACHE_DIR/debs"
  log "$name: debootstrap $suite${arch:+ $arch} (minbase + $include)"
  # One package cache per suite and architecture: debootstrap runs may overlap.
  local debs="$SEED_CACHE_DIR/debs"
  [[ -z "$arch" ]] || debs="$SEED_CACHE_DIR/debs-$suite-$arch"
  mkdir -p "$debs"
  debootstrap --variant=minbase ${arch:+--arch="$arch"} --include="$include" --cache-dir="$debs" \
    "$suite" "$dir/rootfs" ${DEBIAN_MIRROR:+"$DEBIAN_MIRROR"} >"$dir/debootstrap.log" 2>&1 ||
    die "$name: debootstrap failed; see $dir/debootstrap.log"
  "$customise" "$dir/rootfs" >>"$dir/debootstrap.log" 2>&1 ||
    die "$name: setting up the root failed; see $dir/debootstrap.log"
  # Trim what an image does not need (the official slim images do the same).
  rm -rf "$dir/rootfs"/var/cache/apt/archives/*.deb "$dir/rootfs"/var/lib/apt/lists/* \
    "$dir/rootfs"/usr/share/doc/* "$dir/rootfs"/usr/share/man/* "$dir/rootfs"/usr/share/info/*
  echo "$stamp" >"$dir/complete"
}

import_root() {
  local name="$1" image="$2"
  shift 2
  log "$name: importing $SEED_CACHE_DIR/$name/rootfs as $image"
  tar --numeric-owner -C "$SEED_CACHE_DIR/$name/rootfs" -c . |
    docker import \
      -c "LABEL $SEED_LABEL=1" \
      -c "LABEL org.dockercoins.seed-version=$(seed_version "$name")" \
      -c "LABEL org.opencontainers.image.description=\"Local look-alike of $image made by scripts/test/lib/seed-images.sh\"" \
      "$@" - "$image" >/dev/null
}

# --- rust ------------------------------------------------------------------

RUST_SYSROOT=""
RUST_TOOLCHAIN=""

customise_rust() {
  local root="$1"
  mkdir -p "$root/usr/local/rustup/toolchains" "$root/usr/local/cargo/bin"
  log "rust: copying toolchain $RUST_SYSROOT (without share/doc)"
  mkdir -p "$root/usr/local/rustup/toolchains/$RUST_TOOLCHAIN"
  tar -C "$RUST_SYSROOT" --exclude=./share/doc -c . |
    tar -C "$root/usr/local/rustup/toolchains/$RUST_TOOLCHAIN" -x
  local rustup_bin proxy
  rustup_bin="$(command -v rustup || true)"
  if [[ -n "$rustup_bin" ]]; then
    # The official image's layout: rustup in $CARGO_HOME/bin, the tools as links to it.
    install -m 0755 "$(readlink -f "$rustup_bin")" "$root/usr/local/cargo/bin/rustup"
    for proxy in cargo cargo-clippy cargo-fmt clippy-driver rustc rustdoc rustfmt rust-gdb rust-gdbgui rust-lldb; do
      ln -sf rustup "$root/usr/local/cargo/bin/$proxy"
    done
    cat >"$root/usr/local/rustup/settings.toml" <<SETTINGS
version = "12"
default_toolchain = "$RUST_TOOLCHAIN"
profile = "minimal"
auto_self_update = "disable"

[overrides]
SETTINGS
  else
    for proxy in "$root/usr/local/rustup/toolchains/$RUST_TOOLCHAIN"/bin/*; do
      ln -sf "/usr/local/rustup/toolchains/$RUST_TOOLCHAIN/bin/$(basename "$proxy")" \
        "$root/usr/local/cargo/bin/$(basename "$proxy")"
    done
  fi
  chmod -R a+w "$root/usr/local/rustup" "$root/usr/local/cargo"
  # HTTPS to the crate registry is intercepted here with a private CA: the builder
  # look-alike (never the project's images) carries this machine's bundle.
  mkdir -p "$root/etc/ssl/certs"
  install -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
}

seed_rust() {
  RUST_SYSROOT="$(rustc --print sysroot 2>/dev/null)" ||
    die "rust: no Rust toolchain on this machine (rustc --print sysroot failed); install one with rustup"
  local version
  version="$(rustc --version | awk '{print $2}')"
  RUST_TOOLCHAIN="$version-x86_64-unknown-linux-gnu"
  [[ -f /etc/ssl/certs/ca-certificates.crt ]] || die "rust: /etc/ssl/certs/ca-certificates.crt is missing"
  make_root rust customise_rust gcc,libc6-dev,ca-certificates
  import_root rust "$RUST_IMAGE" \
    -c "ENV RUSTUP_HOME=/usr/local/rustup" \
    -c "ENV CARGO_HOME=/usr/local/cargo" \
    -c "ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    -c "ENV RUST_VERSION=$version" \
    -c 'CMD ["bash"]'
}

# --- redis -----------------------------------------------------------------

customise_redis() {
  local root="$1"
  mkdir -p "$root/data"
  chroot "$root" chown redis:redis /data
  # Like the official image's docker-entrypoint.sh: options alone (`--appendonly yes`)
  # mean redis-server; as root, /data is handed to the redis user and privileges dropped.
  # Unlike Debian's packaged config, the official image listens on every interface with
  # protected mode off and keeps its data in /data: the same defaults here.
  cat >"$root/usr/local/bin/docker-entrypoint.sh" <<'ENTRYPOINT'
#!/bin/sh
set -e
case "$1" in
  -* | *.conf) set -- redis-server "$@" ;;
esac
case "${2:-}" in
  -v | --version | -h | --help | --test-memory | --check-system) exec "$@" ;;
esac
if [ "$1" = redis-server ]; then
  shift
  conf=""
  case "${1:-}" in
    *.conf) conf="$1"; shift ;;
  esac
  set -- redis-server $conf --bind '*' '-::*' --protected-mode no --dir /data "$@"
  if [ "$(id -u)" = 0 ]; then
    find /data \! -user redis -exec chown redis:redis '{}' + 2>/dev/null || true
    exec setpriv --reuid=redis --regid=redis --init-groups "$@"
  fi
fi
exec "$@"
ENTRYPOINT
  chmod 0755 "$root/usr/local/bin/docker-entrypoint.sh"
}

seed_redis() {
  make_root redis customise_redis redis-server,redis-tools
  import_root redis "$REDIS_IMAGE" \
    -c 'WORKDIR /data' \
    -c 'VOLUME /data' \
    -c 'EXPOSE 6379' \
    -c 'ENTRYPOINT ["docker-entrypoint.sh"]' \
    -c 'CMD ["redis-server"]'
}

# --- registry --------------------------------------------------------------

customise_registry() {
  local root="$1"
  mkdir -p "$root/etc/docker/registry" "$root/var/lib/registry"
  # The official image's config: filesystem storage, :5000, no auth section.
  cat >"$root/etc/docker/registry/config.yml" <<'CONFIG'
version: 0.1
log:
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: /var/lib/registry
http:
  addr: :5000
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
CONFIG
  ln -sf docker-registry "$root/usr/bin/registry"
  cat >"$root/entrypoint.sh" <<'ENTRYPOINT'
#!/bin/sh
set -e
case "$1" in
  *.yaml | *.yml) set -- registry serve "$@" ;;
  serve | garbage-collect | help | -*) set -- registry "$@" ;;
esac
exec "$@"
ENTRYPOINT
  chmod 0755 "$root/entrypoint.sh"
}

seed_registry() {
  make_root registry customise_registry docker-registry
  import_root registry "$REGISTRY_IMAGE" \
    -c 'VOLUME /var/lib/registry' \
    -c 'EXPOSE 5000' \
    -c 'ENTRYPOINT ["/entrypoint.sh"]' \
    -c 'CMD ["/etc/docker/registry/config.yml"]'
}

# --- netshoot ----------------------------------------------------------------

# Nothing to add: the packages are the image.
customise_netshoot() { :; }

seed_netshoot() {
  make_root netshoot customise_netshoot ldnsutils,bind9-dnsutils,apache2-utils,curl,iputils-ping,ca-certificates
  import_root netshoot "$NETSHOOT_IMAGE" -c 'CMD ["bash"]'
}

# --- rust-arm64 (trixie + trixie-backports) -----------------------------------

# Adds trixie-backports to a trixie root, from the mirror debootstrap used,
# then installs packages ($2...) from it inside the root ($1).
backports_install() {
  local root="$1"
  shift
  sed -n 's/^deb \([^ ]*\) trixie main$/deb \1 trixie-backports main/p' "$root/etc/apt/sources.list" \
    >"$root/etc/apt/sources.list.d/backports.list"
  [[ -s "$root/etc/apt/sources.list.d/backports.list" ]] || { echo "no trixie line in $root/etc/apt/sources.list"; return 1; }
  mount -t proc proc "$root/proc"
  local rc=0
  chroot "$root" apt-get update -q || rc=$?
  [[ $rc -ne 0 ]] || DEBIAN_FRONTEND=noninteractive chroot "$root" \
    apt-get install -y -q --no-install-recommends -t trixie-backports "$@" || rc=$?
  umount "$root/proc"
  return "$rc"
}

# The official image's CARGO_HOME, writable, and this machine's CA bundle.
cargo_home_and_ca() {
  local root="$1"
  mkdir -p "$root/usr/local/cargo/bin" "$root/etc/ssl/certs"
  chmod -R a+w "$root/usr/local/cargo"
  install -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
}

customise_rust_arm64() {
  backports_install "$1" rustc cargo
  cargo_home_and_ca "$1"
}

# The emulated arm64 tools need binfmt_misc with qemu-aarch64 (flag F: also in containers).
ensure_qemu() {
  if [[ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]]; then
    if ! command -v update-binfmts >/dev/null || [[ ! -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P ]]; then
      apt_install qemu-user-static binfmt-support
    fi
    [[ -e /proc/sys/fs/binfmt_misc/register ]] ||
      mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    update-binfmts --enable qemu-aarch64 || true
  fi
  [[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]] || die "rust-arm64: qemu-aarch64 is not registered with binfmt_misc"
}

seed_rust-arm64() {
  ensure_qemu
  make_root rust-arm64 customise_rust_arm64 ca-certificates,gcc,libc6-dev arm64 trixie
  local version ctx
  version="$(chroot "$SEED_CACHE_DIR/rust-arm64/rootfs" rustc --version | awk '{print $2}')"
  # `docker import --platform` is ignored by the 20.10 engine; a BuildKit build
  # of FROM scratch for linux/arm64 gives a real arm64 image.
  ctx="$(mktemp -d "$SEED_CACHE_DIR/rust-arm64/ctx.XXXXXX")"
  tar --numeric-owner -C "$SEED_CACHE_DIR/rust-arm64/rootfs" -cf "$ctx/rootfs.tar" .
  cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM scratch
ADD rootfs.tar /
LABEL $SEED_LABEL=1 org.dockercoins.seed-version=$(seed_version rust-arm64) \\
      org.opencontainers.image.description="Local arm64 look-alike of rust:1.95-slim-bookworm made by scripts/test/lib/seed-images.sh (Debian's Rust $version)"
ENV CARGO_HOME=/usr/local/cargo \\
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    RUST_VERSION=$version
CMD ["bash"]
DOCKERFILE
  local rc=0
  DOCKER_BUILDKIT=1 "$(legacy_docker)" build --platform linux/arm64 -q -t "$RUST_ARM64_IMAGE" "$ctx" >/dev/null || rc=$?
  rm -rf "$ctx"
  [[ $rc -eq 0 ]] || die "rust-arm64: docker build --platform linux/arm64 failed"
}

# A docker client that builds with BuildKit and --platform: Debian's 20.10
# client (/usr/bin/docker) when the first one on PATH has no buildx.
legacy_docker() {
  if docker buildx version >/dev/null 2>&1; then
    echo docker
  elif [[ -x /usr/bin/docker ]]; then
    echo /usr/bin/docker
  else
    die "no docker client that can build with BuildKit (docker buildx, or Debian's docker.io client in /usr/bin)"
  fi
}

# --- prometheus, node-exporter (FROM scratch, from Debian's .deb) -------------

# A binary of a Debian package ($2, path $3 inside it) FROM scratch, with the
# libraries it links, as image $4, named like the official one's (/bin/$5);
# the rest of the Dockerfile ($6) follows the official image's.
scratch_image() {
  local name="$1" package="$2" path="$3" image="$4" as="$5" tail="$6"
  local dir="$SEED_CACHE_DIR/$name" deb ctx lib rc=0
  mkdir -p "$dir"
  if ! compgen -G "$dir/${package}_*.deb" >/dev/null; then
    log "$name: apt-get download $package"
    (cd "$dir" && apt-get download -q "$package" >/dev/null 2>&1) ||
      { apt-get -o DPkg::Lock::Timeout=600 update -qq || true; (cd "$dir" && apt-get download "$package"); } ||
      die "$name: apt-get download $package failed"
  fi
  deb="$(compgen -G "$dir/${package}_*.deb" | sort -V | tail -n 1)"
  rm -rf "$dir/root"
  dpkg-deb -x "$deb" "$dir/root"
  ctx="$(mktemp -d "$dir/ctx.XXXXXX")"
  mkdir -p "$ctx/bin" "$ctx/lib" "$ctx/data"
  cp "$dir/root$path" "$ctx/bin/$as"
  for lib in $(ldd "$dir/root$path" | awk '/=>/ { print $3 } /^\t\/lib/ { print $1 }'); do
    mkdir -p "$ctx/lib$(dirname "$lib")"
    cp -L "$lib" "$ctx/lib$lib"
  done
  {
    echo "FROM scratch"
    echo "COPY lib/ /"
    echo "COPY bin/$as /bin/$as"
    echo "LABEL $SEED_LABEL=1 org.dockercoins.seed-version=$(seed_version "$name") \\"
    echo "      org.opencontainers.image.description=\"Local look-alike of $image made by scripts/test/lib/seed-images.sh (Debian's $package $(dpkg-deb -f "$deb" Version))\""
    echo "$tail"
  } >"$ctx/Dockerfile"
  # The legacy builder: the docker client may have no buildx.
  DOCKER_BUILDKIT=0 docker build -q -t "$image" "$ctx" >"$dir/build.log" 2>&1 || rc=$?
  rm -rf "$ctx"
  [[ $rc -eq 0 ]] || die "$name: docker build of $image failed; see $dir/build.log"
}

seed_prometheus() {
  scratch_image prometheus prometheus /usr/bin/prometheus "$PROMETHEUS_IMAGE" prometheus '
COPY --chown=65534:65534 data/ /prometheus/
USER 65534:65534
EXPOSE 9090
VOLUME ["/prometheus"]
WORKDIR /prometheus
ENTRYPOINT ["/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]'
}

seed_node-exporter() {
  scratch_image node-exporter prometheus-node-exporter /usr/bin/prometheus-node-exporter "$NODE_EXPORTER_IMAGE" node_exporter '
USER 65534:65534
EXPOSE 9100
ENTRYPOINT ["/bin/node_exporter"]'
}

# --- main ------------------------------------------------------------------

started=$SECONDS
for target in "${targets[@]}"; do
  case "$target" in
    rust) image="$RUST_IMAGE" ;;
    redis) image="$REDIS_IMAGE" ;;
    registry) image="$REGISTRY_IMAGE" ;;
    rust-arm64) image="$RUST_ARM64_IMAGE" ;;
    prometheus) image="$PROMETHEUS_IMAGE" ;;
    node-exporter) image="$NODE_EXPORTER_IMAGE" ;;
    netshoot) image="$NETSHOOT_IMAGE" ;;
  esac
  t0=$SECONDS
  state="$(image_state "$image" "$target")"
  case "$state" in
    seeded) log "$image: already seeded, skipped" ;;
    real) log "$image: a real image is present, left alone" ;;
    absent | stale)
      case "$target" in prometheus | node-exporter) ;; *) ensure_tools ;; esac
      previous="$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
      "seed_$target"
      # The stale look-alike this replaced, unless a container still uses it.
      if [[ -n "$previous" && "$(docker image inspect -f '{{len .RepoTags}}' "$previous" 2>/dev/null)" == 0 ]]; then
        docker image rm "$previous" >/dev/null 2>&1 || true
      fi
      log "$image: seeded in $((SECONDS - t0)) s ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
      ;;
  esac
done
log "done in $((SECONDS - started)) s"
