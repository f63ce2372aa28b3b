#!/usr/bin/env bash
# A Swarm of N nodes on one machine, each node a container running its own
# Docker engine, to rehearse the workshop's Swarm chapter (global rng really
# multiplies the speed: one rng per node).
#
#   scripts/cluster.sh up [N]       start N nodes (default 3): node1 manager, the others workers
#   scripts/cluster.sh status       the nodes, the registry's catalog, the services
#   scripts/cluster.sh down         remove every container and network `up` made
#   scripts/cluster.sh image        only build the node image (`up` does it when missing)
#
# What `up` makes:
#   - a bridge network $CLUSTER_NETWORK with a fixed subnet ($CLUSTER_SUBNET);
#     node i is the container node<i>, hostname node<i>, address .(10+i)
#     (node1 10.213.0.11, node2 10.213.0.12, ...). Nothing is published on the
#     machine's ports: reach a node by its address, e.g. http://10.213.0.11:8000/.
#   - the node image $NODE_IMAGE (Debian's docker.io, made offline with
#     debootstrap, cached in $CACHE_DIR and kept by `down`);
#   - a Swarm: `swarm init` on node1, `swarm join` on the others;
#   - a registry on node1 (a plain container, `-p 5000:5000`), and on every other
#     node a forwarder from its 127.0.0.1:5000 to node1's registry, so that
#     127.0.0.1:5000/<service>:<tag>, the names stack.yaml uses, pull on every node.
#     (Swarm's routing mesh, which makes the workshop's `--publish 5000:5000`
#     registry answer on every node, needs IPVS, which this kernel lacks.)
#   - our four images (dockercoins/<service>:$TAG, built by Compose) loaded into
#     node1 and pushed with scripts/push.sh, run on node1; redis:7 loaded into
#     every node (a public image, which the nodes cannot pull).
#
# Commands run on the manager with `docker exec node1 ...`: the repository is
# mounted read-only at /dockercoins in every node, and this machine's docker
# client ($DOCKER_CLIENT) at /usr/local/bin/docker (Debian's 20.10 client in
# the node image refuses a Compose file without `version:`), so
#   docker exec -it -w /dockercoins node1 bash
# is the attendee's shell on node1, where the chapter's commands run unchanged.
#
# Usage: scripts/cluster.sh up|down|status|image [N]
# Env:   CLUSTER_NETWORK  bridge network (default dockercoins-cluster)
#        CLUSTER_SUBNET   its subnet, a /24 (default 10.213.0.0/24)
#        NODE_PREFIX      node names, <prefix><i> (default node)
#        NODE_IMAGE       node image (default dockercoins-node:bookworm-1)
#        CACHE_DIR        debootstrap cache (default /var/cache/dockercoins-cluster)
#        DEBIAN_MIRROR    (default: debootstrap's own mirror)
#        TAG              tag of our images (default latest)
#        BUILD            auto: build our images with Compose only if missing; always; never (default auto)
#        PUSH             1: push our images to the registry during `up` (default 1)
#        DOCKER_CLIENT    client mounted into the nodes (default: the first docker on PATH)
#        REDIS_IMAGE      (default redis:7)   REGISTRY_IMAGE (default registry:2)
#        WAIT_SECONDS     longest wait for an engine or the registry (default 90)
set -euo pipefail

usage() { echo "usage: $0 up|down|status|image [N]   (N nodes, default 3; see the header for env)"; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER_NETWORK="${CLUSTER_NETWORK:-dockercoins-cluster}"
CLUSTER_SUBNET="${CLUSTER_SUBNET:-10.213.0.0/24}"
NODE_PREFIX="${NODE_PREFIX:-node}"
NODE_IMAGE="${NODE_IMAGE:-dockercoins-node:bookworm-1}"
CACHE_DIR="${CACHE_DIR:-/var/cache/dockercoins-cluster}"
DEBIAN_MIRROR="${DEBIAN_MIRROR:-}"
TAG="${TAG:-latest}"
BUILD="${BUILD:-auto}"
PUSH="${PUSH:-1}"
DOCKER_CLIENT="${DOCKER_CLIENT:-$(command -v docker || true)}"
REDIS_IMAGE="${REDIS_IMAGE:-redis:7}"
REGISTRY_IMAGE="${REGISTRY_IMAGE:-registry:2}"
WAIT_SECONDS="${WAIT_SECONDS:-90}"
SERVICES=(hasher rng webui worker)
# Every container and network this script makes carries this label.
LABEL="org.dockercoins.cluster=$CLUSTER_NETWORK"
# Packages of the node image: Debian's Docker engine, and socat for the registry forwarder.
NODE_PACKAGES="docker.io,iptables,ca-certificates,curl,procps,iproute2,socat"

log() { echo "cluster: $*"; }
die() { echo "cluster: $*" >&2; exit 1; }

command="${1:-}"
N="${2:-3}"
case "$command" in
  -h | --help) usage; exit 0 ;;
  up | down | status | image) ;;
  *) usage >&2; exit 2 ;;
esac
[[ $# -le 2 ]] || { usage >&2; exit 2; }
[[ "$N" =~ ^[1-9][0-9]?$ ]] || die "N must be a number of nodes from 1 to 99 (got '$N')"
case "$BUILD" in
  auto | always | never) ;;
  *) die "BUILD must be auto, always or never (got '$BUILD')" ;;
esac
[[ "$CLUSTER_SUBNET" =~ ^([0-9]+\.[0-9]+\.[0-9]+)\.0/24$ ]] || die "CLUSTER_SUBNET must be a /24 like 10.213.0.0/24 (got '$CLUSTER_SUBNET')"
NET_PREFIX="${BASH_REMATCH[1]}"

node_name() { echo "$NODE_PREFIX$1"; }
node_ip() { echo "$NET_PREFIX.$((10 + $1))"; }
MANAGER="$(node_name 1)"
MANAGER_IP="$(node_ip 1)"

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine; is dockerd running?"

# The node containers of this cluster, by name, in order.
our_nodes() {
  docker ps -a --filter "label=$LABEL" --format '{{.Names}}' | sort -V
}
network_exists() { docker network inspect "$CLUSTER_NETWORK" >/dev/null 2>&1; }
on_manager() { docker exec "$MANAGER" "$@"; }

# --- the node image ----------------------------------------------------------------

build_node_image() {
  local dir="$CACHE_DIR/rootfs" stamp="bookworm $NODE_PACKAGES"
  if docker image inspect "$NODE_IMAGE" >/dev/null 2>&1; then
    return 0
  fi
  [[ "$(id -u)" -eq 0 ]] || die "building the node image needs root (debootstrap); run as root or build $NODE_IMAGE elsewhere"
  if [[ ! -f "$CACHE_DIR/complete" || "$(cat "$CACHE_DIR/complete")" != "$stamp" ]]; then
    if ! command -v debootstrap >/dev/null; then
      log "installing debootstrap"
      DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends debootstrap debian-archive-keyring
    fi
    rm -rf "$dir" "$CACHE_DIR/complete"
    mkdir -p "$dir" "$CACHE_DIR/debs"
    log "node image: debootstrap bookworm (minbase + $NODE_PACKAGES) into $dir, about a minute"
    debootstrap --variant=minbase --include="$NODE_PACKAGES" --cache-dir="$CACHE_DIR/debs" \
      bookworm "$dir" ${DEBIAN_MIRROR:+"$DEBIAN_MIRROR"} >"$CACHE_DIR/debootstrap.log" 2>&1 ||
      die "debootstrap failed; see $CACHE_DIR/debootstrap.log"
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/usr/share/doc/* "$dir"/usr/share/man/*
    # The node's start: the registry forwarder (worker nodes), then the engine.
    cat >"$dir/usr/local/sbin/dockercoins-node" <<'START'
#!/bin/sh
# Start of a DockerCoins cluster node: if REGISTRY_FORWARD (host:port) is set,
# forward this node's 127.0.0.1:5000 to it; then run the Docker engine.
set -e
if [ -n "${REGISTRY_FORWARD:-}" ]; then
  socat TCP-LISTEN:5000,bind=127.0.0.1,fork,reuseaddr "TCP:$REGISTRY_FORWARD" &
fi
exec dockerd --log-level warn "$@"
START
    chmod 755 "$dir/usr/local/sbin/dockercoins-node"
    mkdir -p "$dir/etc/docker"
    echo '{ "log-opts": { "max-size": "5m", "max-file": "2" } }' >"$dir/etc/docker/daemon.json"
    echo "$stamp" >"$CACHE_DIR/complete"
  fi
  log "node image: importing $dir as $NODE_IMAGE"
  tar --numeric-owner -C "$dir" -c . |
    docker import -c "LABEL org.dockercoins.node-image=1" -c 'CMD ["/usr/local/sbin/dockercoins-node"]' - "$NODE_IMAGE" >/dev/null
}

# --- up ------------------------------------------------------------------------------------

wait_engine() { # node
  local deadline=$((SECONDS + WAIT_SECONDS))
  until docker exec "$1" docker info >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "the engine in $1 did not start within $WAIT_SECONDS s; see: docker logs $1"
    sleep 0.5
  done
}

# docker save on this machine | docker load on a node.
copy_images() { # node image...
  local node="$1"
  shift
  docker save "$@" | docker exec -i "$node" docker load -q >/dev/null ||
    die "could not copy $* into $node"
}

cmd_image() { build_node_image; log "node image $NODE_IMAGE is ready"; }

cmd_up() {
  local t0 i node ip img missing=() pids=() token deadline forward images
  if [[ -n "$(our_nodes)" ]] || network_exists; then
    die "a cluster is up already ($(our_nodes | xargs) on $CLUSTER_NETWORK); see '$0 status', or '$0 down' first"
  fi
  for i in $(seq 1 "$N"); do
    node="$(node_name "$i")"
    if docker container inspect "$node" >/dev/null 2>&1; then
      die "a container named $node exists and is not ours; remove it or set NODE_PREFIX"
    fi
  done
  [[ -x "$DOCKER_CLIENT" ]] || die "no docker client to mount into the nodes (DOCKER_CLIENT='$DOCKER_CLIENT')"
  for img in "$REDIS_IMAGE" "$REGISTRY_IMAGE"; do
    docker image inspect "$img" >/dev/null 2>&1 || die "no local $img; seed it (scripts/test/seed-images.sh) and re-run"
  done
  for img in "${SERVICES[@]}"; do
    docker image inspect "dockercoins/$img:$TAG" >/dev/null 2>&1 || missing+=("$img")
  done
  if [[ "$BUILD" == always || ("$BUILD" == auto && ${#missing[@]} -gt 0) ]]; then
    docker compose version >/dev/null 2>&1 ||
      die "'docker compose' (Compose v2) is needed to build our images; install it (scripts/test/compose-plugin.sh does), or build them and re-run with BUILD=never"
    log "building ${SERVICES[*]} with Compose (TAG=$TAG)"
    TAG="$TAG" docker compose -f "$ROOT/compose.yaml" build "${SERVICES[@]}"
  elif [[ ${#missing[@]} -gt 0 ]]; then
    die "no local image for ${missing[*]} (dockercoins/<service>:$TAG); build them (docker compose build) or re-run with BUILD=auto"
  fi
  build_node_image
  t0=$SECONDS
  trap 'echo "cluster: up did not finish; see above, and run $0 down to remove what it made" >&2' EXIT

  log "network $CLUSTER_NETWORK ($CLUSTER_SUBNET)"
  docker network create --driver bridge --subnet "$CLUSTER_SUBNET" --label "$LABEL" "$CLUSTER_NETWORK" >/dev/null
  for i in $(seq 1 "$N"); do
    node="$(node_name "$i")"
    ip="$(node_ip "$i")"
    forward=()
    ((i == 1)) || forward=(-e "REGISTRY_FORWARD=$MANAGER_IP:5000")
    log "$node at $ip"
    # No --privileged (one capability is outside this machine's bounding set):
    # every capability but SYS_RESOURCE, no seccomp/AppArmor profile, and the
    # cgroup hierarchy writable, which the node's engine needs for its containers.
    docker run -d --name "$node" --hostname "$node" --label "$LABEL" --init \
      --cap-add ALL --cap-drop SYS_RESOURCE \
      --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
      --tmpfs /var/lib/docker:exec -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
      -v "$ROOT:/dockercoins:ro" -v "$DOCKER_CLIENT:/usr/local/bin/docker:ro" \
      --network "$CLUSTER_NETWORK" --ip "$ip" "${forward[@]}" \
      "$NODE_IMAGE" >/dev/null
  done
  for i in $(seq 1 "$N"); do wait_engine "$(node_name "$i")"; done
  log "engines up after $((SECONDS - t0)) s"

  log "swarm init on $MANAGER; $((N - 1)) worker(s) join"
  on_manager docker swarm init --advertise-addr "$MANAGER_IP" >/dev/null
  token="$(on_manager docker swarm join-token -q worker)"
  for i in $(seq 2 "$N"); do
    docker exec "$(node_name "$i")" docker swarm join --token "$token" --advertise-addr "$(node_ip "$i")" "$MANAGER_IP:2377" >/dev/null &
    pids+=($!)
  done

  log "images: ${SERVICES[*]/#/dockercoins/} and $REGISTRY_IMAGE into $MANAGER, $REDIS_IMAGE into every node"
  images=()
  for img in "${SERVICES[@]}"; do images+=("dockercoins/$img:$TAG"); done
  copy_images "$MANAGER" "${images[@]}" "$REGISTRY_IMAGE" "$REDIS_IMAGE" &
  pids+=($!)
  for i in $(seq 2 "$N"); do
    copy_images "$(node_name "$i")" "$REDIS_IMAGE" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || die "joining the swarm or copying images failed; see above, then '$0 down'"; done

  log "registry on $MANAGER (127.0.0.1:5000 of every node reaches it)"
  on_manager docker run -d --name registry --restart always -p 5000:5000 "$REGISTRY_IMAGE" >/dev/null
  for i in $(seq 1 "$N"); do
    node="$(node_name "$i")"
    deadline=$((SECONDS + WAIT_SECONDS))
    until docker exec "$node" curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:5000/v2/ 2>/dev/null; do
      ((SECONDS < deadline)) || die "$node's 127.0.0.1:5000 does not reach the registry; see: docker exec $MANAGER docker logs registry"
      sleep 0.5
    done
  done
  if [[ "$PUSH" == 1 ]]; then
    log "scripts/push.sh on $MANAGER"
    docker exec -w /dockercoins -e TAG="$TAG" -e BUILD=never "$MANAGER" scripts/push.sh | sed 's/^/  /'
  fi
  trap - EXIT
  log "up in $((SECONDS - t0)) s: $N node(s), $MANAGER ($MANAGER_IP) manager"
  cmd_status
  cat <<NEXT
cluster: next, on the manager (the repository is at /dockercoins):
  docker exec -it -w /dockercoins $MANAGER bash
  docker stack deploy -c stack.yaml -c scripts/test/swarm-override.yaml dockercoins
  then open http://$MANAGER_IP:8000/ (or the address of the node running webui); '$0 down' when done
NEXT
}

# --- status --------------------------------------------------------------------------------

cmd_status() {
  local nodes
  nodes="$(our_nodes | xargs)"
  if [[ -z "$nodes" ]]; then
    log "no cluster is up ($0 up starts one)"
    network_exists && log "(network $CLUSTER_NETWORK is left over: '$0 down' removes it)"
    return 0
  fi
  log "nodes: $nodes on $CLUSTER_NETWORK ($CLUSTER_SUBNET)"
  if ! on_manager docker node ls 2>/dev/null; then
    log "$MANAGER's engine is not a swarm manager (yet); see: docker logs $MANAGER"
    return 0
  fi
  echo "registry catalog: $(on_manager curl -fsS --max-time 3 http://127.0.0.1:5000/v2/_catalog 2>/dev/null || echo 'no answer')"
  on_manager docker service ls
}

# --- down ----------------------------------------------------------------------------------

cmd_down() {
  local nodes node cgroups=() id dir
  nodes="$(our_nodes | xargs)"
  if [[ -n "$nodes" ]]; then
    # The nodes' own containers have cgroups in this machine's hierarchy:
    # remember them, to remove any that a stopping engine leaves behind.
    for node in $nodes; do
      for id in $(docker exec "$node" docker ps -aq --no-trunc 2>/dev/null); do cgroups+=("$id"); done
    done
    log "removing $nodes"
    # A stop (not a kill) lets each engine stop its containers first.
    # shellcheck disable=SC2086
    docker stop -t 20 $nodes >/dev/null
    # shellcheck disable=SC2086
    docker rm -v $nodes >/dev/null
    for id in "${cgroups[@]}"; do
      for dir in /sys/fs/cgroup/*/docker/"$id" /sys/fs/cgroup/docker/"$id"; do
        if [[ -d "$dir" ]]; then rmdir "$dir" 2>/dev/null || true; fi
      done
    done
  fi
  if network_exists; then
    log "removing network $CLUSTER_NETWORK"
    docker network rm "$CLUSTER_NETWORK" >/dev/null
  fi
  log "down: nothing of the cluster is left (the node image $NODE_IMAGE stays, as a cache)"
}

"cmd_$command"
