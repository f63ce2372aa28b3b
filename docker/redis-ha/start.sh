#!/bin/sh
# The start of each Redis and each Sentinel of the highly available Redis
# (compose.ha.yaml, stack.ha.yaml), in the official redis image. Nothing in
# the topology is fixed in a command line: whoever starts, in whatever order,
# asks the Sentinels which Redis is the primary now.
#
#   sh start.sh redis NAME [redis-server arguments...]
#     A Redis announced as NAME. If the Sentinels name it the primary, it
#     starts as the primary, with its data; if they name another, as that
#     one's replica. A Redis that has no data of its own never takes the
#     primary's role from the Sentinels (it would hand its empty data to every
#     replica): it waits and exits, the restart policy starts it again, until
#     the Sentinels have promoted a replica with the data. If no Sentinel
#     answers, a Redis with data does not guess (a guess could make a stale
#     copy the primary, or copy one over newer data): it waits for them
#     (REDIS_HA_WAIT seconds: a whole set started again, a node whose network
#     is not back yet) and exits, to be started again, until one answers. A
#     Redis without data, with no Sentinel answering, is a first start: `redis`
#     is the primary and the others its replicas.
#
#   sh start.sh sentinel NAME
#     A Sentinel announced as NAME, its configuration in /data (its volume):
#     started again or recreated, it keeps the primary it last knew, its
#     epochs and its peers, and takes SENTINEL_* from the environment; a new
#     one asks the other Sentinels for the primary.
#
# Environment: SENTINELS (default "sentinel-1 sentinel-2 sentinel-3"),
# PRIMARY_NAME (mymaster), FIRST_PRIMARY (redis), REDIS_HA_WAIT (20),
# SENTINEL_QUORUM (2), SENTINEL_DOWN_AFTER_MS (2000),
# SENTINEL_FAILOVER_TIMEOUT_MS (10000).
set -eu

role=${1:?usage: start.sh redis|sentinel NAME [arguments...]}
me=${2:?usage: start.sh redis|sentinel NAME [arguments...]}
shift 2
sentinels=${SENTINELS:-sentinel-1 sentinel-2 sentinel-3}
name=${PRIMARY_NAME:-mymaster}
first=${FIRST_PRIMARY:-redis}

say() { echo "start.sh: $me: $*" >&2; }

# The primary's host as the Sentinels name it (the view with the highest
# config epoch wins, as the services choose); nothing if none answers.
ask_sentinels() {
    best_epoch=-1
    best=
    for sentinel in $sentinels; do
        [ "$sentinel" = "$me" ] && continue
        epoch=$(timeout 2 redis-cli -h "$sentinel" -p 26379 --raw SENTINEL MASTER "$name" 2>/dev/null |
            awk 'previous == "config-epoch" { print; exit } { previous = $0 }') || continue
        case $epoch in '' | *[!0-9]*) continue ;; esac
        host=$(timeout 2 redis-cli -h "$sentinel" -p 26379 --raw SENTINEL GET-MASTER-ADDR-BY-NAME "$name" 2>/dev/null |
            head -n 1) || continue
        case $host in '' | *' '*) continue ;; esac
        if [ "$epoch" -gt "$best_epoch" ]; then
            best_epoch=$epoch
            best=$host
        fi
    done
    [ -n "$best" ] && echo "$best"
}

has_data() {
    [ -n "$(ls -A /data/appendonlydir 2>/dev/null)" ] || [ -s /data/dump.rdb ]
}

start_redis() {
    primary=$(ask_sentinels || true)
    if [ -z "$primary" ] && has_data; then
        waited=0
        while [ -z "$primary" ] && [ "$waited" -lt "${REDIS_HA_WAIT:-20}" ]; do
            sleep 1
            waited=$((waited + 1))
            primary=$(ask_sentinels || true)
        done
        if [ -z "$primary" ]; then
            say "no Sentinel answered within ${REDIS_HA_WAIT:-20} s, and I have data: not guessing the primary; exiting, to be started again"
            exit 1
        fi
    fi
    named=yes
    if [ -z "$primary" ]; then
        named=no
        primary=$first
        say "no Sentinel answers (a first start): $first is the primary"
    fi
    if [ "$primary" = "$me" ]; then
        if [ "$named" = yes ] && ! has_data; then
            say "the Sentinels name me the primary, but my volume is new: waiting for them to promote a replica"
            sleep 5
            exit 1
        fi
        say "starting as the primary"
        exec docker-entrypoint.sh redis-server "$@" --replica-announce-ip "$me"
    fi
    say "starting as a replica of $primary"
    exec docker-entrypoint.sh redis-server "$@" --replica-announce-ip "$me" --replicaof "$primary" 6379
}

start_sentinel() {
    conf=/data/sentinel.conf
    state=
    monitor=
    if [ -s "$conf" ]; then
        monitor=$(awk -v name="$name" '$1 == "sentinel" && $2 == "monitor" && $3 == name { print $4; exit }' "$conf")
        state=$(grep -E "^sentinel (myid|current-epoch) |^sentinel (config-epoch|leader-epoch|known-replica|known-sentinel) $name " "$conf" || true)
    fi
    if [ -n "$monitor" ]; then
        say "the primary I last knew: $monitor"
    else
        monitor=$(ask_sentinels || true)
        [ -n "$monitor" ] || monitor=$first
        say "watching $monitor"
    fi
    cat >"$conf.new" <<EOF
port 26379
dir /data
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $me
sentinel monitor $name $monitor 6379 ${SENTINEL_QUORUM:-2}
sentinel down-after-milliseconds $name ${SENTINEL_DOWN_AFTER_MS:-2000}
sentinel failover-timeout $name ${SENTINEL_FAILOVER_TIMEOUT_MS:-10000}
sentinel parallel-syncs $name 1
$state
EOF
    mv "$conf.new" "$conf"
    chown redis:redis "$conf" 2>/dev/null || true
    exec docker-entrypoint.sh redis-server "$conf" --sentinel
}

case $role in
    redis) start_redis "$@" ;;
    sentinel) start_sentinel ;;
    *) echo "usage: start.sh redis|sentinel NAME [arguments...]" >&2; exit 2 ;;
esac
