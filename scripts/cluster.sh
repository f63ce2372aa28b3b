#!/usr/bin/env bash
# A Swarm of N nodes on one machine, each node a container running its own
# Docker engine, to rehearse the workshop's Swarm chapter (global rng really
# multiplies the speed: one rng per node).
#
#   scripts/cluster.sh up [N]       start N nodes (default 3): node1..node$MANAGERS managers, the others workers
#   scripts/cluster.sh status       the nodes, the registry's catalog, the services
#   scripts/cluster.sh down         remove every container, network and volume `up` made
#   scripts/cluster.sh image        only build the node image (`up` does it when missing)
#
# Faults to rehearse the node-management and high-availability lessons (NODE is
# a node's name, e.g. node2, or its number, e.g. 2); each prints the Docker
# commands it runs (docs/node-failures.md):
#   scripts/cluster.sh drain NODE      docker node update --availability drain: its tasks move elsewhere
#   scripts/cluster.sh activate NODE   docker node update --availability active: it takes tasks again
#   scripts/cluster.sh kill NODE       docker kill of the node's container: a power cut
#   scripts/cluster.sh start NODE      docker start of it: the machine boots, its engine rejoins
#   scripts/cluster.sh cut NODE        iptables in the node's namespace drops its traffic with the other nodes
#   scripts/cluster.sh heal NODE       removes those rules
#   scripts/cluster.sh leader          prints the Raft leader's name
#   scripts/cluster.sh kill-leader     kill of the leader's container (then `start` it)
# A node that is killed and started again keeps its engine's state (swarm
# membership, images, volumes such as Redis's) only with NODE_STORAGE=volume;
# with tmpfs it boots blank and cannot rejoin as itself.
#
# What `up` makes:
#   - a bridge network $CLUSTER_NETWORK with a fixed subnet ($CLUSTER_SUBNET);
#     node i is the container node<i>, hostname node<i>, address .(10+i)
#     (node1 10.213.0.11, node2 10.213.0.12, ...). Nothing is published on the
#     machine's ports: reach a node by its address, e.g. http://10.213.0.11:8000/.
#   - the node image $NODE_IMAGE (Debian's docker.io, made offline with
#     debootstrap, cached in $CACHE_DIR and kept by `down`);
#   - each node's engine state (/var/lib/docker) on a tmpfs (NODE_STORAGE=tmpfs,
#     gone when the node stops) or on a Docker volume <node>-engine (NODE_STORAGE=volume,
#     kept across `kill` and `start`, removed by `down`);
#   - a Swarm: `swarm init` on node1, `swarm join` on the others, as managers up to
#     node$MANAGERS (MANAGERS=3: a Raft quorum of 2 out of 3 survives the loss of one);
#   - a registry on node1 (a plain container, `-p 5000:5000`), and on every other
#     node a forwarder from its 127.0.0.1:5000 to node1's registry, so that
#     127.0.0.1:5000/<service>:<tag>, the names stack.yaml uses, pull on every node;
#     every node pulls them once during `up`, so that a task can still start on
#     any node while node1 (the registry) is down: the engine falls back to the
#     image it has when a pull fails.
#     (Swarm's routing mesh, which makes the workshop's `--publish 5000:5000`
#     registry answer on every node, needs IPVS, which this kernel lacks.)
#   - our four images (localhost/dockercoins/<service>:$TAG, built by Compose) loaded into
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
# Usage: scripts/cluster.sh up [N] | down | status | image | drain|activate|kill|start|cut|heal NODE | leader | kill-leader
# Env:   MANAGERS         how many of the nodes are managers, node1 first (default 1; 3 for a Raft quorum)
#        NODE_STORAGE     tmpfs or volume: where each node's engine keeps its state (default tmpfs)
#        CLUSTER_NETWORK  bridge network (default dockercoins-cluster)
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

usage() { echo "usage: $0 up [N] | down | status | image | drain|activate|kill|start|cut|heal NODE | leader | kill-leader   (N nodes, default 3; see the header for env)"; }

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
MANAGERS="${MANAGERS:-1}"
NODE_STORAGE="${NODE_STORAGE:-tmpfs}"
SERVICES=(hasher rng webui worker)
# Every container and network this script makes carries this label.
LABEL="org.dockercoins.cluster=$CLUSTER_NETWORK"
# Packages of the node image: Debian's Docker engine, and socat for the registry forwarder.
NODE_PACKAGES="docker.io,iptables,ca-certificates,curl,procps,iproute2,socat"

log() { echo "cluster: $*"; }
die() { echo "cluster: $*" >&2; exit 1; }

command="${1:-}"
N=3
TARGET=""
case "$command" in
  -h | --help) usage; exit 0 ;;
  up)
    [[ $# -le 2 ]] || { usage >&2; exit 2; }
    N="${2:-3}"
    [[ "$N" =~ ^[1-9][0-9]?$ ]] || die "N must be a number of nodes from 1 to 99 (got '$N')"
    [[ "$MANAGERS" =~ ^[1-9][0-9]?$ && "$MANAGERS" -le "$N" ]] || die "MANAGERS must be a number from 1 to N=$N (got '$MANAGERS')"
    case "$NODE_STORAGE" in
      tmpfs | volume) ;;
      *) die "NODE_STORAGE must be tmpfs or volume (got '$NODE_STORAGE')" ;;
    esac
    ;;
  down | status | image | leader | kill-leader) [[ $# -eq 1 ]] || { usage >&2; exit 2; } ;;
  drain | activate | kill | start | cut | heal)
    [[ $# -eq 2 ]] || { usage >&2; exit 2; }
    TARGET="$2"
    ;;
  *) usage >&2; exit 2 ;;
esac
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
[[ -z "$TARGET" || ! "$TARGET" =~ ^[0-9]+$ ]] || TARGET="$(node_name "$TARGET")"

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "cannot talk to the Docker engine; is dockerd running?"

# The node containers of this cluster, by name, in order.
our_nodes() {
  docker ps -a --filter "label=$LABEL" --format '{{.Names}}' | sort -V
}
network_exists() { docker network inspect "$CLUSTER_NETWORK" >/dev/null 2>&1; }
our_volumes() {
  docker volume ls -q --filter "label=$LABEL" | sort -V
}
# The running manager nodes (the containers carry their role), node1 first.
our_managers() {
  docker ps --filter "label=$LABEL" --filter "label=org.dockercoins.cluster.role=manager" --format '{{.Names}}' | sort -V
}
# The first manager whose engine answers as a manager (node1 unless it is down).
MANAGER_NOW=""
find_manager() {
  local node
  [[ -z "$MANAGER_NOW" ]] || return 0
  for node in $(our_managers); do
    if timeout 10 docker exec "$node" docker node ls -q >/dev/null 2>&1; then
      MANAGER_NOW="$node"
      return 0
    fi
  done
  die "no manager answers (a Raft quorum needs more than half of the managers up); see '$0 status'"
}
on_manager() {
  find_manager
  docker exec "$MANAGER_NOW" "$@"
}
# Prints a command (as run on this machine), then runs it (its output hidden).
run() {
  echo "+ $*"
  "$@" >/dev/null
}

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
  local t0 i node ip img missing=() pids=() token mtoken deadline forward images storage role svc
  if [[ -n "$(our_nodes)" ]] || network_exists || [[ -n "$(our_volumes)" ]]; then
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
    docker image inspect "$img" >/dev/null 2>&1 || die "no local $img; seed it (scripts/test/lib/seed-images.sh) and re-run"
  done
  for img in "${SERVICES[@]}"; do
    docker image inspect "localhost/dockercoins/$img:$TAG" >/dev/null 2>&1 || missing+=("$img")
  done
  if [[ "$BUILD" == always || ("$BUILD" == auto && ${#missing[@]} -gt 0) ]]; then
    docker compose version >/dev/null 2>&1 ||
      die "'docker compose' (Compose v2) is needed to build our images; install it (scripts/test/lib/compose-plugin.sh does), or build them and re-run with BUILD=never"
    log "building ${SERVICES[*]} with Compose (TAG=$TAG)"
    TAG="$TAG" docker compose -f "$ROOT/compose.yaml" build "${SERVICES[@]}"
  elif [[ ${#missing[@]} -gt 0 ]]; then
    die "no local image for ${missing[*]} (localhost/dockercoins/<service>:$TAG); build them (docker compose build) or re-run with BUILD=auto"
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
    role=worker
    ((i > MANAGERS)) || role=manager
    if [[ "$NODE_STORAGE" == volume ]]; then
      docker volume create --label "$LABEL" "$node-engine" >/dev/null
      storage=(-v "$node-engine:/var/lib/docker")
    else
      storage=(--tmpfs /var/lib/docker:exec)
    fi
    log "$node at $ip ($role, engine state on ${NODE_STORAGE})"
    # No --privileged (one capability is outside this machine's bounding set):
    # every capability but SYS_RESOURCE, no seccomp/AppArmor profile, and the
    # cgroup hierarchy writable, which the node's engine needs for its containers.
    docker run -d --name "$node" --hostname "$node" --label "$LABEL" --label "org.dockercoins.cluster.role=$role" --init \
      --cap-add ALL --cap-drop SYS_RESOURCE \
      --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
      "${storage[@]}" --tmpfs /run -v /sys/fs/cgroup:/sys/fs/cgroup:rw \
      -v "$ROOT:/dockercoins:ro" -v "$DOCKER_CLIENT:/usr/local/bin/docker:ro" \
      --network "$CLUSTER_NETWORK" --ip "$ip" "${forward[@]}" \
      "$NODE_IMAGE" >/dev/null
  done
  for i in $(seq 1 "$N"); do wait_engine "$(node_name "$i")"; done
  log "engines up after $((SECONDS - t0)) s"

  log "swarm init on $MANAGER; $((MANAGERS - 1)) manager(s) and $((N - MANAGERS)) worker(s) join"
  docker exec "$MANAGER" docker swarm init --advertise-addr "$MANAGER_IP" >/dev/null
  token="$(docker exec "$MANAGER" docker swarm join-token -q worker)"
  mtoken="$(docker exec "$MANAGER" docker swarm join-token -q manager)"
  # Managers join one at a time (each join is a Raft membership change).
  for i in $(seq 2 "$MANAGERS"); do
    docker exec "$(node_name "$i")" docker swarm join --token "$mtoken" --advertise-addr "$(node_ip "$i")" "$MANAGER_IP:2377" >/dev/null ||
      die "$(node_name "$i") could not join as a manager; see above, then '$0 down'"
  done
  for i in $(seq $((MANAGERS + 1)) "$N"); do
    docker exec "$(node_name "$i")" docker swarm join --token "$token" --advertise-addr "$(node_ip "$i")" "$MANAGER_IP:2377" >/dev/null &
    pids+=($!)
  done

  log "images: ${SERVICES[*]/#/dockercoins/} and $REGISTRY_IMAGE into $MANAGER, $REDIS_IMAGE into every node"
  images=()
  for img in "${SERVICES[@]}"; do images+=("localhost/dockercoins/$img:$TAG"); done
  copy_images "$MANAGER" "${images[@]}" "$REGISTRY_IMAGE" "$REDIS_IMAGE" &
  pids+=($!)
  for i in $(seq 2 "$N"); do
    copy_images "$(node_name "$i")" "$REDIS_IMAGE" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || die "joining the swarm or copying images failed; see above, then '$0 down'"; done

  log "registry on $MANAGER (127.0.0.1:5000 of every node reaches it)"
  docker exec "$MANAGER" docker run -d --name registry --restart always -p 5000:5000 "$REGISTRY_IMAGE" >/dev/null
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
    log "every node pulls 127.0.0.1:5000/{$(IFS=,; echo "${SERVICES[*]}")}:$TAG once (tasks start on any node while $MANAGER is down)"
    pids=()
    for i in $(seq 2 "$N"); do
      for svc in "${SERVICES[@]}"; do
        docker exec "$(node_name "$i")" docker pull -q "127.0.0.1:5000/$svc:$TAG" >/dev/null &
        pids+=($!)
      done
    done
    for pid in "${pids[@]}"; do wait "$pid" || die "a node could not pull our images from the registry; then '$0 down'"; done
  fi
  trap - EXIT
  log "up in $((SECONDS - t0)) s: $N node(s), manager(s) $(seq 1 "$MANAGERS" | while read -r i; do node_name "$i"; done | xargs)"
  cmd_status
  cat <<NEXT
cluster: next, on the manager (the repository is at /dockercoins):
  docker exec -it -w /dockercoins $MANAGER bash
  docker stack deploy -c stack.yaml -c docker/swarm/swarm-override.yaml dockercoins
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
  log "nodes: $nodes on $CLUSTER_NETWORK ($CLUSTER_SUBNET); running: $(docker ps --filter "label=$LABEL" --format '{{.Names}}' | sort -V | xargs)"
  if ! (find_manager 2>/dev/null) || ! on_manager docker node ls 2>/dev/null; then
    log "no manager answers (yet); see: docker logs $MANAGER"
    return 0
  fi
  log "(answered by $MANAGER_NOW)"
  echo "registry catalog: $(docker exec "$MANAGER" curl -fsS --max-time 3 http://127.0.0.1:5000/v2/_catalog 2>/dev/null || echo 'no answer')"
  on_manager docker service ls
}

# --- down ----------------------------------------------------------------------------------

cmd_down() {
  local nodes node cgroups=() id dir volumes
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
  volumes="$(our_volumes | xargs)"
  if [[ -n "$volumes" ]]; then
    log "removing volumes $volumes"
    # shellcheck disable=SC2086
    docker volume rm $volumes >/dev/null
  fi
  log "down: nothing of the cluster is left (the node image $NODE_IMAGE stays, as a cache)"
}


# --- faults ----------------------------------------------------------------------------------

target_node() {
  docker container inspect -f '{{index .Config.Labels "org.dockercoins.cluster"}}' "$TARGET" 2>/dev/null |
    grep -qx "$CLUSTER_NETWORK" || die "$TARGET is not a node of this cluster ($(our_nodes | xargs))"
}
running() { [[ "$(docker container inspect -f '{{.State.Running}}' "$1" 2>/dev/null)" == true ]]; }

cmd_drain() {
  target_node
  find_manager
  run docker exec "$MANAGER_NOW" docker node update --availability drain "$TARGET"
  log "$TARGET drained: its tasks stop, the replicated ones start elsewhere, global ones are not replaced"
}
cmd_activate() {
  target_node
  find_manager
  run docker exec "$MANAGER_NOW" docker node update --availability active "$TARGET"
  log "$TARGET active: global services come back on it, new tasks may land on it (running ones are not moved back)"
}
cmd_kill() {
  target_node
  running "$TARGET" || die "$TARGET is not running"
  docker volume inspect "$TARGET-engine" >/dev/null 2>&1 ||
    log "warning: $TARGET keeps its engine state on a tmpfs: started again, it boots blank (NODE_STORAGE=volume keeps it)"
  run docker kill "$TARGET"
  log "$TARGET is off (a power cut); '$0 start $TARGET' boots it"
}
cmd_start() {
  target_node
  running "$TARGET" && die "$TARGET is running already"
  run docker start "$TARGET"
  wait_engine "$TARGET"
  log "$TARGET's engine is up; it rejoins the swarm by itself (docker node ls on a manager: Ready)"
}
# The rules a cut adds in the node's own namespace: every packet from or to
# another node is dropped (the overlay's VXLAN, Raft, gossip); this machine,
# the network's gateway, still reaches it.
cut_rules() { # -I|-D
  local op="$1" i ip self
  self="$(docker inspect -f "{{(index .NetworkSettings.Networks \"$CLUSTER_NETWORK\").IPAddress}}" "$TARGET")"
  for i in $(our_nodes | sed "s/^$NODE_PREFIX//"); do
    ip="$(node_ip "$i")"
    [[ "$ip" != "$self" ]] || continue
    if [[ "$op" == -I ]]; then
      run docker exec "$TARGET" iptables -I INPUT -s "$ip" -j DROP
      run docker exec "$TARGET" iptables -I OUTPUT -d "$ip" -j DROP
    else
      while docker exec "$TARGET" iptables -C INPUT -s "$ip" -j DROP 2>/dev/null; do
        run docker exec "$TARGET" iptables -D INPUT -s "$ip" -j DROP
      done
      while docker exec "$TARGET" iptables -C OUTPUT -d "$ip" -j DROP 2>/dev/null; do
        run docker exec "$TARGET" iptables -D OUTPUT -d "$ip" -j DROP
      done
    fi
  done
}
cmd_cut() {
  target_node
  running "$TARGET" || die "$TARGET is not running"
  cut_rules -I
  log "$TARGET is cut off from the other nodes; '$0 heal $TARGET' joins it again"
}
cmd_heal() {
  target_node
  running "$TARGET" || die "$TARGET is not running"
  cut_rules -D
  log "$TARGET reaches the other nodes again"
}
leader_name() {
  on_manager docker node ls --filter role=manager --format '{{.Hostname}} {{.ManagerStatus}}' | awk '$2 == "Leader" { print $1 }'
}
cmd_leader() {
  local leader
  leader="$(leader_name)"
  [[ -n "$leader" ]] || die "no leader (yet): the managers are electing one, or too few are up"
  echo "$leader"
}
cmd_kill_leader() {
  local leader
  find_manager
  echo "+ docker exec $MANAGER_NOW docker node ls --filter role=manager   (the leader: MANAGER STATUS Leader)"
  leader="$(leader_name)"
  [[ -n "$leader" ]] || die "no leader (yet): the managers are electing one, or too few are up"
  TARGET="$leader"
  cmd_kill
}

"cmd_${command//-/_}"
