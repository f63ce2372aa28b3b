#!/usr/bin/env bash
# Our images run by containerd as a kubelet would run them in a pod without the
# sysctl net.ipv4.ip_unprivileged_port_start=0: the first lesson's
# `kubectl create deployment rng --image=...` on a cluster whose runtime does not
# set it (containerd 1.x without enable_unprivileged_ports). Debian's containerd,
# a second daemon of the suite's own beside Docker's, imports our images and runs
# each in a new network namespace (the kernel's default: ports below 1024 are
# privileged), as its image's user (65532):
#   - with the runtime's default capabilities and no_new_privs off (a pod from
#     `kubectl create deployment`): every image answers on port 80;
#   - as the restricted profile allows: every capability dropped but
#     NET_BIND_SERVICE, no_new_privs, the default seccomp profile, a read-only
#     root: rng answers on port 80;
#   - with NET_BIND_SERVICE dropped too: rng cannot bind port 80 and says so (the
#     check can fail: there the pods need the manifests' sysctl);
# and under Docker as Compose runs them (every capability dropped, read-only,
# Docker's own sysctl): rng answers on port 80.
# Removes everything it started, whatever happens.
#
# Usage: scripts/test/suites/kubernetes/kubernetes-containerd.sh      (run by scripts/test/suites/kubernetes/kubernetes.sh)
# Env:   TAG     tag of our images localhost/dockercoins/<service>:TAG (default latest; they must exist)
#        PREFIX  the daemon's directories /run/PREFIX-containerd, /var/lib/PREFIX-containerd,
#                its namespace and containers (default dck8s)
# Needs root, Docker, containerd and ctr (Debian's containerd), nsenter, curl.
set -euo pipefail

usage() { echo "usage: $0   (our images under containerd without the port sysctl; env TAG, PREFIX)"; }
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
TEST_NAME=kubernetes-containerd
# shellcheck source=scripts/test/lib/lib.sh
source "$ROOT/scripts/test/lib/lib.sh"
TAG="${TAG:-latest}"
PREFIX="${PREFIX:-dck8s}"
STATE="/run/$PREFIX-containerd"
DATA="/var/lib/$PREFIX-containerd"
SOCK="$STATE/containerd.sock"
NS="$PREFIX"
LABEL="org.dockercoins.test=$PREFIX"
daemon=""
summary() { echo "$PASSED passed, $FAILED failed"; }

ctr_() { ctr --address "$SOCK" --namespace "$NS" "$@"; }
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
  if [[ -n "$daemon" ]]; then
    local id
    for id in $(ctr_ task ls -q 2>/dev/null); do ctr_ task kill -s KILL "$id" >/dev/null 2>&1 || true; done
    sleep 0.5
    for id in $(ctr_ task ls -q 2>/dev/null); do ctr_ task delete -f "$id" >/dev/null 2>&1 || true; done
    for id in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$id" >/dev/null 2>&1 || true; done
    kill "$daemon" 2>/dev/null || true
    wait "$daemon" 2>/dev/null || true
  fi
  local ids
  ids=$(docker ps -aq --filter "label=$LABEL-containerd" 2>/dev/null || true)
  # shellcheck disable=SC2086 # one id per word
  [[ -z "$ids" ]] || docker rm -f -v $ids >/dev/null 2>&1 || true
  # The daemon's state and data (snapshots of our images): the suite's own directories.
  rm -rf "${STATE:?}" "${DATA:?}"
}
trap cleanup EXIT

for tool in containerd ctr nsenter curl; do
  command -v "$tool" >/dev/null || { fail "$tool missing (Debian: containerd, util-linux, curl)"; finish; }
done
[[ "$(id -u)" -eq 0 ]] || { fail "needs root (containerd, nsenter)"; finish; }

# A containerd of our own: its socket, state and data apart from Docker's; no CRI plugin.
mkdir -p "$STATE" "$DATA"
cat >"$STATE/config.toml" <<EOF
version = 2
root = "$DATA"
state = "$STATE/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$SOCK"
EOF
containerd --config "$STATE/config.toml" >"$STATE/containerd.log" 2>&1 &
daemon=$!
for _ in $(seq 50); do ctr_ version >/dev/null 2>&1 && break; sleep 0.2; done
ctr_ version >/dev/null 2>&1 || { fail "containerd did not start: $(tail -n 3 "$STATE/containerd.log")"; finish; }
log "containerd $(containerd --version | awk '{print $3}') started (pid $daemon, socket $SOCK)"

# Every default capability of containerd's spec, but NET_BIND_SERVICE (the restricted profile's
# drop: [ALL] + add: [NET_BIND_SERVICE]).
RESTRICTED_DROPS=()
for cap in CHOWN DAC_OVERRIDE FSETID FOWNER MKNOD NET_RAW SETGID SETUID SETFCAP SETPCAP SYS_CHROOT KILL AUDIT_WRITE; do
  RESTRICTED_DROPS+=(--cap-drop "CAP_$cap")
done

# pid_of ID: the task's process on the host.
pid_of() { ctr_ task ls | awk -v id="$1" '$1 == id { print $2 }'; }
# answers PID: GET /healthz on 127.0.0.1:80 in the process' network namespace, retried for 10 s.
answers() {
  for _ in $(seq 50); do
    [[ -d "/proc/$1" ]] || return 1
    if nsenter -t "$1" -n curl -sf --max-time 1 -o /dev/null "http://127.0.0.1:80/healthz"; then return 0; fi
    sleep 0.2
  done
  return 1
}

for service in rng hasher worker webui; do
  image="localhost/dockercoins/$service:$TAG"
  docker save "$image" | ctr_ images import --no-unpack - >/dev/null 2>&1 || { fail "ctr images import $image"; continue; }
done
# (Read whole, then matched: `| grep -q` would stop reading early, and pipefail take ctr's SIGPIPE for a failure.)
imported=$(ctr_ images ls -q 2>&1 || true)
[[ "$imported" == *"localhost/dockercoins/rng:$TAG"* ]] || { fail "our images are not in containerd: $imported"; finish; }

# 1. A pod from `kubectl create deployment`: default capabilities, no_new_privs off, the image's user.
for service in rng hasher worker webui; do
  id="$PREFIX-$service-default"
  if ! ctr_ run -d --allow-new-privs --log-uri "file://$STATE/$id.log" "localhost/dockercoins/$service:$TAG" "$id" >/dev/null 2>&1; then
    fail "$service: ctr run failed"
    continue
  fi
  pid=$(pid_of "$id")
  start=$(nsenter -t "$pid" -n cat /proc/sys/net/ipv4/ip_unprivileged_port_start 2>/dev/null || echo "?")
  user=$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo "?")
  if answers "$pid"; then
    pass "$service under containerd as a pod from kubectl create deployment (user $user, ip_unprivileged_port_start=$start, default capabilities): answers on port 80"
  else
    fail "$service under containerd as a pod from kubectl create deployment: no answer on port 80: $(ctr_ task ls | awk -v id="$id" '$1 == id { print $3 }'), $(grep -m 1 . "$STATE/$id.log" 2>/dev/null || true)"
  fi
done

# 2. The restricted profile: every capability dropped but NET_BIND_SERVICE, no_new_privs, seccomp, read-only root.
id="$PREFIX-rng-restricted"
if ctr_ run -d --read-only --seccomp --log-uri "file://$STATE/$id.log" "${RESTRICTED_DROPS[@]}" "localhost/dockercoins/rng:$TAG" "$id" >/dev/null 2>&1; then
  pid=$(pid_of "$id")
  bounding=$(awk '/^CapBnd:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo "?")
  nnp=$(awk '/^NoNewPrivs:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo "?")
  check "rng under containerd as the restricted profile allows (bounding set $bounding: NET_BIND_SERVICE only, NoNewPrivs $nnp, seccomp, read-only): answers on port 80" \
    answers "$pid"
else
  fail "rng restricted: ctr run failed"
fi

# 3. NET_BIND_SERVICE dropped too, still without the sysctl: port 80 cannot be bound (what the
# manifests' sysctl is for), and the service says so.
id="$PREFIX-rng-nocap"
ctr_ run --rm --read-only "${RESTRICTED_DROPS[@]}" --cap-drop CAP_NET_BIND_SERVICE "localhost/dockercoins/rng:$TAG" "$id" \
  >"$STATE/nocap.log" 2>&1 && code=0 || code=$?
line=$(grep -m 1 -i "permission denied" "$STATE/nocap.log" || head -n 1 "$STATE/nocap.log")
check "rng under containerd with no capability and no sysctl exits ($code): $line" \
  test "$code" -ne 0 -a -n "$line"

# 4. Compose's way: every capability dropped, read-only, Docker's own sysctl (0).
name="$PREFIX-containerd-compose"
if docker run -d --name "$name" --label "$LABEL-containerd" --cap-drop ALL --read-only --user 65532:65532 \
  --security-opt no-new-privileges "localhost/dockercoins/rng:$TAG" >/dev/null; then
  pid=$(docker inspect -f '{{.State.Pid}}' "$name")
  check "rng under Docker as Compose runs it (cap_drop ALL, read-only, no-new-privileges): answers on port 80" answers "$pid"
else
  fail "docker run of rng as Compose runs it"
fi
finish
