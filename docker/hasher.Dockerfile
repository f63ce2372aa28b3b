# DockerCoins hasher: the SHA-256 of what you POST.
#
# Build:  docker compose build hasher     (or: DOCKER_BUILDKIT=1 docker build -f docker/hasher.Dockerfile -t dockercoins/hasher .)
# Needs BuildKit (for RUN --mount), but no "# syntax=" line: nothing is pulled.
#
# The build stage is the same, byte for byte, in the four Dockerfiles of docker/:
# it compiles the whole workspace once into static binaries and keeps all four,
# so whichever image is built first, the other three reuse its layers.

FROM rust:1.95-slim-bookworm AS build
# The images trade a little size for much faster rebuilds: no cross-crate LTO,
# so a one-line change relinks in seconds instead of minutes, for about 0.6 MB
# more per image. `--build-arg CARGO_PROFILE_RELEASE_LTO=thin` restores the
# workspace's own release profile.
ARG CARGO_PROFILE_RELEASE_LTO=off
ARG CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
# The platform being built (set by BuildKit): linux/amd64, linux/arm64, ...
ARG TARGETARCH
ARG TARGETVARIANT
WORKDIR /src
COPY . .
# Static binaries (glibc, static-pie) so the final image can be "scratch".
# The target triple is the builder's own (`rustc --print host-tuple`):
# x86_64-unknown-linux-gnu on amd64, aarch64-unknown-linux-gnu on arm64. An
# explicit --target keeps crt-static off the build scripts and proc macros.
# The cargo registry and the target directory live in cache mounts shared by
# the four builds: a rebuild after a small change recompiles only what changed.
# The target directory has one cache per platform, so building amd64 and arm64
# on one machine does not make each rebuild the other's build scripts.
RUN --mount=type=cache,id=dockercoins-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=dockercoins-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=dockercoins-target-${TARGETARCH}${TARGETVARIANT},target=/src/target,sharing=locked \
    triple="$(rustc --print host-tuple)" \
 && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --workspace --target "$triple" \
 && mkdir -p /out \
 && for bin in rng hasher worker webui; do \
      cp "target/$triple/release/$bin" /out/; \
    done

FROM scratch
LABEL org.opencontainers.image.title="dockercoins-hasher" \
      org.opencontainers.image.description="DockerCoins hasher: the SHA-256 of what you POST." \
      org.opencontainers.image.source="https://github.com/dockercoins/dockercoins-rs" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/hasher /hasher
# Any non-root user: numeric, since scratch has no /etc/passwd. Docker lets
# unprivileged processes bind port 80 inside a container (ip_unprivileged_port_start=0).
USER 65532:65532
EXPOSE 80
# The binary checks itself (no curl in the image), always on port 80, the port
# the service promises: a container made to listen elsewhere reports unhealthy.
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/hasher", "healthcheck", "--port", "80"]
ENTRYPOINT ["/hasher"]
