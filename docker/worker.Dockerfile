# DockerCoins worker: mines coins with rng and hasher, counts hashes in Redis.
#
# Build:  docker compose build worker     (or: DOCKER_BUILDKIT=1 docker build -f docker/worker.Dockerfile -t localhost/dockercoins/worker .)
# Needs BuildKit (for RUN --mount), but no "# syntax=" line: nothing is pulled.
#
# The build stage is the same, byte for byte, in the four Dockerfiles of docker/:
# it compiles the whole workspace once into static binaries and keeps all four,
# so whichever image is built first, the other three reuse its layers.

FROM --platform=$BUILDPLATFORM rust:1.95-slim-bookworm AS build
# With CARGO_AUDITABLE=1 (the release images; locally:
# `CARGO_AUDITABLE=1 docker compose build`), each binary carries the list of
# crates it was built from (cargo auditable: compressed JSON in an ELF
# section, .dep-v0), so image scanners (Trivy, Grype, `cargo audit bin`) see
# the dependencies of a scratch image. The tool is compiled once per builder,
# in a layer of its own that no target and no source change invalidates, and
# unoptimised (--debug): it only wraps the compiler. Off by default: it is a
# build tool of 34 crates that an attendee's first `docker compose up` would
# compile before the services (docs/compose.md#the-first-build).
ARG CARGO_AUDITABLE=0
RUN --mount=type=cache,id=dockercoins-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    if [ "$CARGO_AUDITABLE" = 1 ]; then \
      cargo install --locked --debug --version 0.7.7 cargo-auditable; \
    fi
# The images trade a little size for much faster rebuilds: no cross-crate LTO,
# so a one-line change relinks in seconds instead of minutes, for about 0.6 MB
# more per image. `--build-arg CARGO_PROFILE_RELEASE_LTO=thin` restores the
# workspace's own release profile.
ARG CARGO_PROFILE_RELEASE_LTO=off
ARG CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
# The platform being built for (set by BuildKit): linux/amd64, linux/arm64 or
# linux/arm/v7 (TARGETARCH=arm, TARGETVARIANT=v7).
ARG TARGETPLATFORM
ARG TARGETARCH
ARG TARGETVARIANT
# The compiler runs on the machine's own platform ($BUILDPLATFORM) and builds
# for the target's: natively when they are the same (`docker compose up` on
# any machine), otherwise cross-compiled with rustup's standard library for
# the target and Debian's cross linker and C library, much faster than
# compiling under emulation (docs/platforms.md). The target triple is the
# builder's own (`rustc --print host-tuple`) with the target's CPU in front
# and its ABI behind (eabihf: 32-bit ARM with hardware floating point). The
# cross linker is the one of the image's Debian release (not pinned further).
# hadolint ignore=DL3008
RUN case "$TARGETARCH$TARGETVARIANT" in \
      amd64) cpu=x86_64 abi="" cc=x86_64-linux-gnu gcc=gcc-x86-64-linux-gnu debarch=amd64 ;; \
      arm64 | arm64v8) cpu=aarch64 abi="" cc=aarch64-linux-gnu gcc=gcc-aarch64-linux-gnu debarch=arm64 ;; \
      armv7) cpu=armv7 abi=eabihf cc=arm-linux-gnueabihf gcc=gcc-arm-linux-gnueabihf debarch=armhf ;; \
      *) echo "DockerCoins builds for linux/amd64, linux/arm64 and linux/arm/v7, not $TARGETPLATFORM" >&2; exit 1 ;; \
    esac \
 && host="$(rustc --print host-tuple)" \
 && os="${host#*-}" \
 && triple="$cpu-${os%eabihf}$abi" \
 && echo "$triple" >/target-triple \
 && if [ "$triple" != "$host" ]; then \
      rustup target add "$triple" \
      && apt-get update \
      && apt-get install -y --no-install-recommends "$gcc" "libc6-dev-$debarch-cross" \
      && rm -rf /var/lib/apt/lists/* \
      && echo "target.$triple.linker = \"$cc-gcc\"" >/target-cargo.toml; \
    fi \
 && touch /target-cargo.toml
# bind80 (docker/bind80.c), the entrypoint in front of the service: a static C
# program carrying the file capability cap_net_bind_service (permitted only),
# so that the service binds port 80 as user 65532 also where the runtime lets
# no unprivileged user bind it (a pod from `kubectl create deployment` on
# containerd 1.x). Built for the target with the C toolchain of the binaries;
# its capability set by a copy built for the builder.
COPY docker/bind80.c /bind80.c
RUN cc="$(sed -n 's/^target\..*\.linker = "\(.*\)"$/\1/p' /target-cargo.toml)" \
 && gcc -O2 -o /usr/local/bin/bind80-setcap /bind80.c \
 && mkdir -p /out \
 && "${cc:-gcc}" -O2 -static -o /out/bind80 /bind80.c \
 && bind80-setcap --setcap /out/bind80
WORKDIR /src
COPY . .
# Static binaries (glibc, static-pie) so the final image can be "scratch". An
# explicit --target keeps crt-static off the build scripts and proc macros.
# The cargo registry and the target directory live in cache mounts shared by
# the four builds: a rebuild after a small change recompiles only what changed.
# The target directory has one cache per target platform (amd64, arm64, armv7).
# The workspace's files are touched first: COPY keeps their times, and cargo,
# which goes by times, would take an edit older than the cached build (a build
# from another checkout since) as already compiled.
RUN --mount=type=cache,id=dockercoins-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=dockercoins-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=dockercoins-target-${TARGETARCH}${TARGETVARIANT},target=/src/target,sharing=locked \
    triple="$(cat /target-triple)" \
 && find crates -type f -exec touch {} + \
 && set -- build \
 && if [ "$CARGO_AUDITABLE" = 1 ]; then set -- auditable build; fi \
 && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo "$@" --release --locked --workspace --target "$triple" --config /target-cargo.toml \
 && mkdir -p /out \
 && for bin in rng hasher worker webui; do \
      cp "target/$triple/release/$bin" /out/; \
    done

FROM scratch
LABEL org.opencontainers.image.title="dockercoins-worker" \
      org.opencontainers.image.description="DockerCoins worker: mines coins with rng and hasher, counts hashes in Redis." \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/worker /worker
COPY --from=build /out/bind80 /bind80
# Any non-root user: numeric, since scratch has no /etc/passwd. Docker lets
# unprivileged processes bind port 80 inside a container (ip_unprivileged_port_start=0),
# so do the manifests and the chart; elsewhere bind80 gives the service the capability.
USER 65532:65532
EXPOSE 80
# The binary checks itself (no curl in the image), always on port 80, the port
# the service promises: a container made to listen elsewhere reports unhealthy.
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/worker", "healthcheck", "--port", "80"]
ENTRYPOINT ["/bind80", "/worker"]
