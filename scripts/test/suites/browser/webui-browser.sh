#!/usr/bin/env bash
# The web UI in a real headless Chromium (Debian's chromium and chromium-driver,
# driven by Python's selenium from PyPI in a cached venv).
#
# Starts redis-server, rng, hasher, webui and two workers natively on loopback
# ports, and a second webui serving webui:v0.2's page (scripts/variants.sh
# --assets: the workshop's update lesson, sed -i s/15px/50px/ webui.css, and
# the chart in green as in the classic v0.2), runs
# scripts/test/suites/browser/webui_browser.py against them (speed, workers, rng instance,
# chart, console, layout at 1920 and 390 px, the Redis-down banner, the lesson,
# and the page through scripts/test/fixtures/prefix_proxy.py, which serves the web UI under
# kubectl proxy's path /api/v1/namespaces/default/services/webui/proxy/),
# prints the screenshots' paths and the page's figures, and stops everything it
# started, whatever happens.
#
# Usage: scripts/test/suites/browser/webui-browser.sh
# Env:   PORT_BASE        first of the nine loopback ports used (default 31000)
#        BIN_DIR          where rng, hasher, worker, webui are (default target/release)
#        BUILD            1: cargo build --release first; 0: never; auto (default): if a binary is missing
#        SCREENSHOT_DIR   where the screenshots go (default target/webui-browser)
#        DOCS_SCREENSHOT  also write the docs' picture of the live page there, 1280 x 800
#                         (default unset; the README's is docs/img/webui-desktop.png)
#        DOCS_SCREENSHOT_AFTER  seconds of mining on the page before that picture (default 60)
#        VENV             the Python venv for selenium (default ~/.cache/dockercoins/webui-browser-venv)
#        SELENIUM_VERSION selenium from PyPI (default 4.50.0)
#        CHROMIUM, CHROMEDRIVER  the browser and its driver (default /usr/bin/chromium, /usr/bin/chromedriver)
#        SPEED_DEADLINE   seconds for the speed to show above 0 (default 20)
#        SPEED_MIN/MAX    accepted speed of the two workers, hashes/s (default 5.0 / 8.5)
set -euo pipefail

usage() { echo "usage: $0   (tests the web UI in headless Chromium; see the header for env knobs)"; }
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
# Natively nothing balances connections by readiness: the services stop without
# the drain that follows SIGTERM (SHUTDOWN_DRAIN, docs/operations.md#stopping).
export SHUTDOWN_DRAIN="${SHUTDOWN_DRAIN:-0}"
PORT_BASE="${PORT_BASE:-31000}"
BIN_DIR="${BIN_DIR:-$ROOT/target/release}"
BUILD="${BUILD:-auto}"
export SCREENSHOT_DIR="${SCREENSHOT_DIR:-$ROOT/target/webui-browser}"
DOCS_SCREENSHOT="${DOCS_SCREENSHOT:-}"
if [[ -n "$DOCS_SCREENSHOT" ]]; then
  mkdir -p "$(dirname "$DOCS_SCREENSHOT")"
  DOCS_SCREENSHOT="$(cd "$(dirname "$DOCS_SCREENSHOT")" && pwd)/$(basename "$DOCS_SCREENSHOT")"
fi
export DOCS_SCREENSHOT
export DOCS_SCREENSHOT_AFTER="${DOCS_SCREENSHOT_AFTER:-60}"
VENV="${VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/dockercoins/webui-browser-venv}"
SELENIUM_VERSION="${SELENIUM_VERSION:-4.50.0}"
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
export CHROMEDRIVER="${CHROMEDRIVER:-/usr/bin/chromedriver}"
export SPEED_DEADLINE="${SPEED_DEADLINE:-20}"
export SPEED_MIN="${SPEED_MIN:-5.0}"
export SPEED_MAX="${SPEED_MAX:-8.5}"

export REDIS_PORT=$((PORT_BASE + 1))
RNG_PORT=$((PORT_BASE + 2))
HASHER_PORT=$((PORT_BASE + 3))
WEBUI_PORT=$((PORT_BASE + 4))
WORKER_PORTS=($((PORT_BASE + 5)) $((PORT_BASE + 6)))
EDITED_PORT=$((PORT_BASE + 7))
PROXY_PORT=$((PORT_BASE + 8))
export PROXY_PREFIX="/api/v1/namespaces/default/services/webui/proxy"
export RNG_INSTANCE="rng-browser-1"
export HASHER_INSTANCE="hasher-browser-1"
export WORKERS="worker-browser-1,worker-browser-2"
export WEBUI_URL="http://127.0.0.1:$WEBUI_PORT"
export EDITED_URL="http://127.0.0.1:$EDITED_PORT"
export PROXY_URL="http://127.0.0.1:$PROXY_PORT"

log() { echo "webui-browser: $*"; }
die() { log "$*"; echo "0 passed, 1 failed"; exit 1; }

# --- What the test needs on the machine -----------------------------------------
missing=()
[[ -x "$CHROMIUM" ]] || missing+=(chromium)
[[ -x "$CHROMEDRIVER" ]] || missing+=(chromium-driver)
command -v redis-server >/dev/null || missing+=(redis-server)
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
    die "cannot install ${missing[*]}: install them (apt-get install -y ${missing[*]}) and run again"
  fi
fi
if ! "$VENV/bin/python" -c "import selenium, sys; sys.exit(selenium.__version__ != '$SELENIUM_VERSION')" 2>/dev/null; then
  log "installing selenium $SELENIUM_VERSION into $VENV"
  python3 -m venv "$VENV" || die "cannot make a venv in $VENV: set VENV to a writable directory"
  "$VENV/bin/pip" install -q --disable-pip-version-check "selenium==$SELENIUM_VERSION" \
    || die "cannot install selenium from PyPI: check the network or set SELENIUM_VERSION"
fi

# --- The binaries ---------------------------------------------------------------
have_binaries() { for bin in rng hasher worker webui; do [[ -x "$BIN_DIR/$bin" ]] || return 1; done; }
if [[ "$BUILD" == 1 ]] || { [[ "$BUILD" == auto ]] && ! have_binaries; }; then
  log "building the release binaries (cargo build --release)"
  (cd "$ROOT" && cargo build --release --locked -q) || die "cargo build --release failed"
fi
have_binaries || die "rng, hasher, worker, webui not all in $BIN_DIR: build them (cargo build --release) or set BIN_DIR"

# --- The services ------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/webui-browser.XXXXXX")"
export REDIS_DIR="$WORK/redis"
mkdir -p "$REDIS_DIR" "$SCREENSHOT_DIR"
PIDS=()

# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ -f "$REDIS_DIR/redis.pid" ]]; then
    local redis_pid
    redis_pid="$(cat "$REDIS_DIR/redis.pid")"
    kill "$redis_pid" 2>/dev/null || true
    # Redis writes its files while it stops: removing them before it is gone can fail.
    for _ in $(seq 50); do kill -0 "$redis_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  if [[ "${KEEP_LOGS:-0}" == 1 ]]; then log "logs kept in $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for port in "$REDIS_PORT" "$RNG_PORT" "$HASHER_PORT" "$WEBUI_PORT" "${WORKER_PORTS[@]}" "$EDITED_PORT" "$PROXY_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is taken: stop what listens there or set PORT_BASE"
  fi
done

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly yes --dir "$REDIS_DIR" \
  --daemonize yes --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/redis.log"

# run NAME PORT [VAR=value...]: starts target/release/NAME with its env, logging to $WORK.
run() {
  local name="$1" port="$2" instance="$3"
  shift 3
  env PORT="$port" INSTANCE="$instance" "$@" "$BIN_DIR/$name" >"$WORK/$instance.log" 2>&1 &
  PIDS+=($!)
}
run rng "$RNG_PORT" "$RNG_INSTANCE"
run hasher "$HASHER_PORT" "$HASHER_INSTANCE"
run webui "$WEBUI_PORT" webui-browser REDIS_URL="redis://127.0.0.1:$REDIS_PORT"
# webui:v0.2's page (the update lesson's edit, and the chart in green), served by a second webui.
"$ROOT/scripts/variants.sh" --assets "$WORK/edited" >/dev/null
run webui "$EDITED_PORT" webui-browser-edited REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
  WEBUI_ASSETS_DIR="$WORK/edited/assets"
# The web UI under kubectl proxy's path, nothing rewritten (the page must use relative URLs only).
python3 "$ROOT/scripts/test/fixtures/prefix_proxy.py" "$PROXY_PORT" "$WEBUI_PORT" "$PROXY_PREFIX" >"$WORK/prefix-proxy.log" 2>&1 &
PIDS+=($!)
i=0
for name in ${WORKERS//,/ }; do
  run worker "${WORKER_PORTS[$i]}" "$name" REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
    RNG_URL="http://127.0.0.1:$RNG_PORT" HASHER_URL="http://127.0.0.1:$HASHER_PORT"
  i=$((i + 1))
done

for port in "$RNG_PORT" "$HASHER_PORT" "$WEBUI_PORT" "${WORKER_PORTS[@]}" "$EDITED_PORT"; do
  for _ in $(seq 50); do
    curl -fs --max-time 1 "http://127.0.0.1:$port/healthz" >/dev/null && continue 2
    sleep 0.1
  done
  die "nothing healthy on port $port after 5 s: see the logs (KEEP_LOGS=1 keeps them in $WORK)"
done
for _ in $(seq 100); do
  curl -fs --max-time 1 "$PROXY_URL$PROXY_PREFIX/healthz" >/dev/null && break
  sleep 0.1
done
curl -fs --max-time 1 "$PROXY_URL$PROXY_PREFIX/healthz" >/dev/null \
  || die "the prefix proxy does not reach the web UI on port $PROXY_PORT after 10 s: see the logs (KEEP_LOGS=1 keeps them in $WORK)"
log "redis, rng, hasher, webui, two workers, the edited webui and the prefix proxy are up on ports $PORT_BASE+1..8"

status=0
"$VENV/bin/python" "$ROOT/scripts/test/suites/browser/webui_browser.py" || status=$?
exit "$status"
