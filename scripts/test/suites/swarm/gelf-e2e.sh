#!/usr/bin/env bash
# End-to-end test of centralized logging (docs/logging.md): DockerCoins' logs
# through Docker's own gelf log driver into a GELF receiver on this machine,
# scripts/test/fixtures/gelf_receiver.py (it does what Logstash's gelf input does:
# chunked GELF, gzip, zlib and uncompressed payloads). No ELK image can be
# pulled here; docker/elk/elk.yaml is checked by `docker stack config` only.
#
# Steps: static checks of stack.gelf.yaml, compose.gelf.yaml and
# docker/elk/elk.yaml; the receiver's self-test; the receiver on
# 127.0.0.1:$GELF_PORT; then
# - the stack $STACK (stack.yaml + docker/swarm/swarm-override.yaml +
#   stack.gelf.yaml, the local images localhost/dockercoins/*) on this
#   machine's Swarm, in the text log format: every service's lines (rng,
#   hasher, worker, webui, redis) arrive, each with its container name, the
#   stack, service, task and node ID, and the node's name as `host`; the
#   worker's "N units of work done, updating hash counter" lines arrive as the
#   engine's own copy has them (`docker logs`); `docker service logs` still
#   works;
# - at the same time, the Compose project $PROJECT (compose.yaml +
#   compose.gelf.yaml, LOG_FORMAT=json): every service's lines, with the
#   project and service labels; and chunking: a container prints one long
#   incompressible line through the gelf driver, once per compression type
#   (gzip, zlib, none): each arrives whole, in several chunks;
# - the stack removed and deployed again with LOG_FORMAT=json: the same
#   checks, and every line of our four services is a JSON object, the
#   worker's with that message; then the lesson's own command,
#   `docker service update <stack>_rng --log-driver gelf --log-opt gelf-address=...`:
#   the new rng task's lines arrive, without the labels.
# Everything it started is removed on exit, whatever happens: the stack, the
# Compose project, their volumes, the receiver, and the swarm if it made one.
#
# Usage: scripts/test/suites/swarm/gelf-e2e.sh
# Env:   GELF_PORT     UDP port of the receiver (default 12201, the lesson's)
#        WEBUI_PORT    the stack's web UI port (default 9100)
#        COMPOSE_PORTS the Compose project's web UI, rng and hasher ports (default "9101 9102 9103")
#        STACK         stack name (default dcgelf); PROJECT  Compose project (default dcgelf-compose)
#        TAG           image tag of localhost/dockercoins/* (default latest; built if missing)
#        WAIT_SECONDS  longest wait for every service's lines (default 90)
#        COMPOSE=0     skip the Compose check
#        KEEP_DIR=1    keep the received messages (printed at the end)
#        SKIP_SEED=1   do not run seed-images.sh / compose-plugin.sh

# Most checks are functions run through check(); shellcheck cannot see those calls.
# shellcheck disable=SC2317
set -euo pipefail

usage() { echo "usage: $0   (sends DockerCoins' logs through Docker's gelf driver to a local receiver; see the header for env knobs)"; }
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
GELF_PORT="${GELF_PORT:-12201}"
WEBUI_PORT="${WEBUI_PORT:-9100}"
read -r C_WEBUI_PORT C_RNG_PORT C_HASHER_PORT <<<"${COMPOSE_PORTS:-9101 9102 9103}"
STACK="${STACK:-dcgelf}"
PROJECT="${PROJECT:-dcgelf-compose}"
TAG="${TAG:-latest}"
WAIT_SECONDS="${WAIT_SECONDS:-90}"
COMPOSE="${COMPOSE:-1}"
KEEP_DIR="${KEEP_DIR:-0}"
SKIP_SEED="${SKIP_SEED:-0}"
SERVICES=(rng hasher worker webui redis)
RUST_SERVICES=(rng hasher worker webui)
GELF_ADDRESS="udp://127.0.0.1:$GELF_PORT"
STACK_FILES=(-c "$ROOT/stack.yaml" -c "$ROOT/docker/swarm/swarm-override.yaml" -c "$ROOT/stack.gelf.yaml")
COMPOSE_CMD=(docker compose -p "$PROJECT" -f "$ROOT/compose.yaml" -f "$ROOT/compose.gelf.yaml")
# The worker's line, as the text format writes it (timestamp, level, target, message).
UNITS='[1-9][0-9]* units of work done, updating hash counter'
TEXT_UNITS="^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z +INFO worker::ledger: $UNITS\$"

STARTED=$SECONDS
TEST_NAME=gelf-e2e
# shellcheck source=scripts/test/lib/lib.sh
source "$ROOT/scripts/test/lib/lib.sh"
declare -A FIGURE=()
DIR="$(mktemp -d /tmp/gelf-e2e.XXXXXX)"
OUT="$DIR/received.jsonl"
RECEIVER_PID=""
STACK_OWNED=0
COMPOSE_OWNED=0
COMPOSE_PID=""

stack_exists() { docker stack ls --format '{{.Name}}' 2>/dev/null | grep -qx -- "$STACK"; }
network_exists() { docker network inspect "$1" >/dev/null 2>&1; }

# Waits until no container of the stack is left, then until its network is gone.
wait_stack_gone() {
  local deadline=$((SECONDS + 60))
  while [[ -n "$(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK")" ]] ||
    network_exists "${STACK}_default"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

remove_stack() {
  if stack_exists; then docker stack rm "$STACK" >/dev/null; fi
  wait_stack_gone
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  log "cleaning up"
  if [[ -n "$COMPOSE_PID" ]]; then wait "$COMPOSE_PID" 2>/dev/null; fi
  if ((COMPOSE_OWNED)); then "${COMPOSE_CMD[@]}" down -v --timeout 5 >/dev/null 2>&1; fi
  if ((STACK_OWNED)); then
    remove_stack || log "the stack's containers or network are still there"
    if docker volume inspect "${STACK}_redis-data" >/dev/null 2>&1; then docker volume rm "${STACK}_redis-data" >/dev/null; fi
  fi
  docker rm -f dcgelf-chunk-gzip dcgelf-chunk-zlib dcgelf-chunk-none >/dev/null 2>&1
  if [[ -n "$RECEIVER_PID" ]]; then
    kill "$RECEIVER_PID" 2>/dev/null
    wait "$RECEIVER_PID" 2>/dev/null
    sed 's/^/    /' "$DIR/receiver.log"
  fi
  swarm_leave_if_created
  if [[ "$KEEP_DIR" == 1 ]]; then log "messages kept in $DIR"; else rm -rf "$DIR"; fi
  return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

summary() {
  echo
  echo "=== DockerCoins GELF e2e summary (stack $STACK, receiver $GELF_ADDRESS) ==="
  printf '  %-50s %s\n' \
    "chunked test lines (gzip, zlib, none): chunks" "${FIGURE[chunks]:-?}" \
    "stack deploy -> every service's lines (text)" "${FIGURE[text_wait]:-?} s" \
    "GELF messages per service (text)" "${FIGURE[text_counts]:-?}" \
    "Compose up -> every service's lines (json)" "${FIGURE[compose_wait]:-?} s" \
    "GELF messages per service (Compose, json)" "${FIGURE[compose_counts]:-?}" \
    "stack deploy -> every service's lines (json)" "${FIGURE[json_wait]:-?} s" \
    "GELF messages per service (json)" "${FIGURE[json_counts]:-?}" \
    "the lesson's service update -> rng's new lines" "${FIGURE[lesson_update]:-?} s" \
    "messages received / chunked / errors" "${FIGURE[totals]:-?}" \
    "whole run" "$((SECONDS - STARTED)) s"
  echo "$PASSED passed, $FAILED failed"
}

# --- prerequisites -------------------------------------------------------------------

for tool in docker jq python3 base64; do
  command -v "$tool" >/dev/null || { echo "gelf-e2e: $tool is missing; install it (apt-get install -y $tool)" >&2; exit 1; }
done
docker info >/dev/null 2>&1 || { echo "gelf-e2e: cannot talk to the Docker engine; is dockerd running?" >&2; exit 1; }
if [[ "$SKIP_SEED" != 1 ]]; then
  "$ROOT/scripts/test/lib/compose-plugin.sh"
  "$ROOT/scripts/test/lib/seed-images.sh"
fi
if stack_exists; then
  echo "gelf-e2e: a stack $STACK exists already; remove it (docker stack rm $STACK) or set STACK" >&2
  exit 1
fi
if [[ "$COMPOSE" == 1 && -n "$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")" ]]; then
  echo "gelf-e2e: the Compose project $PROJECT exists already; remove it or set PROJECT" >&2
  exit 1
fi

# --- static checks ----------------------------------------------------------------------

log "static checks"
# A merged stack config as JSON: `docker stack config` writes YAML only; Compose reads it back.
stack_json() { docker stack config "$@" | docker compose -p "$PROJECT" -f - config --format json 2>/dev/null; }
# Every service of a merged config JSON (stdin) logs through gelf to $1, naming the labels $2...
gelf_everywhere() {
  local address="$1" svc driver addr labels label n=0
  shift
  while read -r svc driver addr labels; do
    n=$((n + 1))
    [[ "$driver" == gelf && "$addr" == "$address" ]] || { echo "    $svc: $driver $addr" >&2; return 1; }
    for label in "$@"; do
      [[ ",$labels," == *",$label,"* ]] || { echo "    $svc: no $label in labels ($labels)" >&2; return 1; }
    done
  done < <(jq -r '.services | to_entries[] |
    "\(.key) \(.value.logging.driver) \(.value.logging.options["gelf-address"]) \(.value.logging.options.labels)"')
  ((n == ${#SERVICES[@]}))
}
# ... and our four services get LOG_FORMAT=$1.
log_format_is() {
  jq -e --arg f "$1" '[.services | to_entries[] | select(.key != "redis") | .value.environment.LOG_FORMAT == $f] |
    length == 4 and all' >/dev/null
}
SWARM_LABELS=(com.docker.stack.namespace com.docker.swarm.service.name com.docker.swarm.task.name com.docker.swarm.node.id)
COMPOSE_LABELS=(com.docker.compose.project com.docker.compose.service)
stack_defaults="$(env -u GELF_ADDRESS -u LOG_FORMAT docker stack config -c "$ROOT/stack.yaml" -c "$ROOT/stack.gelf.yaml" |
  docker compose -p "$PROJECT" -f - config --format json 2>/dev/null || true)"
stack_defaults_ok() {
  gelf_everywhere udp://127.0.0.1:12201 "${SWARM_LABELS[@]}" <<<"$stack_defaults" && log_format_is text <<<"$stack_defaults"
}
check "stack.gelf.yaml: the five services log through gelf to udp://127.0.0.1:12201 with the stack, service, task and node labels; LOG_FORMAT text" \
  stack_defaults_ok
stack_set="$(GELF_ADDRESS=udp://10.0.0.5:5000 LOG_FORMAT=json stack_json "${STACK_FILES[@]}" || true)"
stack_set_ok() {
  gelf_everywhere udp://10.0.0.5:5000 "${SWARM_LABELS[@]}" <<<"$stack_set" && log_format_is json <<<"$stack_set"
}
check "stack.gelf.yaml over the test override: GELF_ADDRESS and LOG_FORMAT=json taken" stack_set_ok
compose_defaults="$(env -u GELF_ADDRESS -u LOG_FORMAT "${COMPOSE_CMD[@]}" config --format json 2>/dev/null || true)"
compose_defaults_ok() {
  gelf_everywhere udp://127.0.0.1:12201 "${COMPOSE_LABELS[@]}" <<<"$compose_defaults" && log_format_is text <<<"$compose_defaults"
}
check "compose.gelf.yaml: the five services log through gelf to udp://127.0.0.1:12201 with the project and service labels; LOG_FORMAT text" \
  compose_defaults_ok
elk="$(stack_json -c "$ROOT/docker/elk/elk.yaml" || true)"
elk_shape() {
  jq -e '(.services | keys) == ["elasticsearch", "kibana", "logstash"] and
    (.services.logstash.ports | any(.target == 12201 and .published == "12201" and .protocol == "udp")) and
    (.services.kibana.ports | any(.target == 5601 and .published == "5601")) and
    (.services.logstash.command | join(" ") | test("gelf \\{ \\}") and test("elasticsearch:9200"))' <<<"$elk" >/dev/null
}
check "docker/elk/elk.yaml: Logstash's gelf input on 12201/udp into Elasticsearch, Kibana on 5601" elk_shape

# --- the receiver ------------------------------------------------------------------------------

log "gelf_receiver.py --self-test"
if python3 "$ROOT/scripts/test/fixtures/gelf_receiver.py" --self-test >"$DIR/self-test.log" 2>&1; then
  pass "the receiver decodes chunked, gzip, zlib and plain GELF and refuses bad datagrams ($(tail -n 1 "$DIR/self-test.log"))"
else
  sed 's/^/    /' "$DIR/self-test.log"
  fail "the receiver's self-test"
fi
: >"$OUT"
python3 "$ROOT/scripts/test/fixtures/gelf_receiver.py" --port "$GELF_PORT" --out "$OUT" 2>"$DIR/receiver.log" &
RECEIVER_PID=$!
for _ in $(seq 1 50); do
  if grep -qs listening "$DIR/receiver.log"; then break; fi
  kill -0 "$RECEIVER_PID" 2>/dev/null || break
  sleep 0.1
done
if ! grep -q listening "$DIR/receiver.log"; then
  cat "$DIR/receiver.log" >&2
  RECEIVER_PID=""
  abort "the receiver listens on $GELF_ADDRESS (port taken? set GELF_PORT)"
fi

# --- swarm and images -------------------------------------------------------------------------

swarm_join
NODE_ID="$(docker info --format '{{.Swarm.NodeID}}')"
NODE_NAME="$(docker info --format '{{.Name}}')"

missing=()
for svc in "${RUST_SERVICES[@]}"; do
  docker image inspect "localhost/dockercoins/$svc:$TAG" >/dev/null 2>&1 || missing+=("$svc")
done
if ((${#missing[@]})); then
  log "building ${missing[*]} (docker compose build)"
  TAG="$TAG" docker compose -f "$ROOT/compose.yaml" build "${missing[@]}" >"$DIR/build.log" 2>&1 ||
    { tail -n 20 "$DIR/build.log" >&2; abort "docker compose build ${missing[*]}"; }
fi

# --- helpers on the received messages --------------------------------------------------------------

# The complete lines received so far.
received_lines() { wc -l <"$OUT"; }
# The messages received between lines $1 (exclusive) and $2 (inclusive), into file $3.
snapshot() { sed -n "$(($1 + 1)),$2p" "$OUT" >"$3"; }
# The jq filter that selects one service's messages: stack services by their
# Swarm service label, Compose ones by their Compose labels.
select_service() { # KIND SERVICE
  if [[ "$1" == stack ]]; then
    echo "select(.gelf[\"_com.docker.swarm.service.name\"] == \"${STACK}_$2\")"
  else
    echo "select(.gelf[\"_com.docker.compose.project\"] == \"$PROJECT\" and .gelf[\"_com.docker.compose.service\"] == \"$2\")"
  fi
}
count_of() { # FILE KIND SERVICE
  tail -n "+$((${4:-0} + 1))" "$1" | jq -s "[.[] | $(select_service "$2" "$3")] | length"
}
# The worker's units lines in FORMAT (text | json) among messages $1 of kind $2.
units_filter() {
  if [[ "$1" == text ]]; then
    echo ".gelf.short_message | test(\"$TEXT_UNITS\")"
  else
    echo ".gelf.short_message | (try fromjson catch null) | type == \"object\" and (.message | test(\"^$UNITS\$\"))"
  fi
}
units_count() { # FILE KIND FORMAT [FROM]
  tail -n "+$((${4:-0} + 1))" "$1" | jq -s "[.[] | $(select_service "$2" worker) | select($(units_filter "$3"))] | length"
}
# Waits (at most WAIT_SECONDS from $4) until every service of kind $2 has
# sent lines after line $1 of the receiver's file, and the worker a units line
# in format $3. Prints the seconds it took.
wait_every_service() { # FROM KIND FORMAT T0
  local from="$1" kind="$2" format="$3" t0="$4" svc ok
  while true; do
    ok=1
    for svc in "${SERVICES[@]}"; do
      (($(count_of "$OUT" "$kind" "$svc" "$from") > 0)) || { ok=0; break; }
    done
    if ((ok)) && (($(units_count "$OUT" "$kind" "$format" "$from") > 0)); then
      elapsed "$t0" "$(now)"
      return 0
    fi
    if ! between "$(elapsed "$t0" "$(now)")" 0 "$WAIT_SECONDS"; then return 1; fi
    sleep 1
  done
}
counts_line() { # FILE KIND
  local svc
  for svc in "${SERVICES[@]}"; do printf '%s %s  ' "$svc" "$(count_of "$1" "$2" "$svc")"; done | sed 's/ *$//'
}

# --- checks of one phase -----------------------------------------------------------------------------

# The stack's messages in FILE carry the container, stack, service, task and node fields.
stack_fields_ok() { # FILE
  local bad
  bad="$(jq -r --arg stack "$STACK" --arg node "$NODE_ID" --arg host "$NODE_NAME" '
    select(.gelf["_com.docker.stack.namespace"] == $stack) | .gelf |
    ._container_name as $c | .["_com.docker.swarm.service.name"] as $s |
    select(($c | startswith($s + ".") | not) or .["_com.docker.swarm.task.name"] != $c or
      .["_com.docker.swarm.node.id"] != $node or .host != $host or (._container_id | length) != 64 or
      (._image_name | length) == 0 or .level != 6) |
    "\($c) \($s) \(.["_com.docker.swarm.task.name"]) \(.["_com.docker.swarm.node.id"]) \(.host) \(.level)"' "$1" | head -n 3)"
  [[ -z "$bad" ]] || { echo "    $bad" >&2; return 1; }
  jq -e --arg stack "$STACK" -s '[.[] | select(.gelf["_com.docker.stack.namespace"] == $stack)] | length > 0' "$1" >/dev/null
}
compose_fields_ok() { # FILE
  local bad
  bad="$(jq -r --arg p "$PROJECT" '
    select(.gelf["_com.docker.compose.project"] == $p) | .gelf |
    select(._container_name != "\($p)-\(.["_com.docker.compose.service"])-1" or (._container_id | length) != 64 or .level != 6) |
    "\(._container_name) \(.["_com.docker.compose.service"]) \(.level)"' "$1" | head -n 3)"
  [[ -z "$bad" ]] || { echo "    $bad" >&2; return 1; }
}
# Our four services' messages, access lines ($4 = access) or the others
# ($4 = other), are all JSON objects (format json) or none is (text).
ACCESS_LINE='("target":"access"}$)|(^[^ ]+ +[A-Z]+ access: )'
format_ok() { # FILE KIND FORMAT access|other
  local svc want which bad=0 n
  [[ "$3" == json ]] && want=true || want=false
  [[ "$4" == access ]] && which=true || which=false
  for svc in "${RUST_SERVICES[@]}"; do
    n="$(jq -s --arg re "$ACCESS_LINE" "[.[] | $(select_service "$2" "$svc") | .gelf.short_message |
      select(test(\$re) == $which) | select(((try fromjson catch null) | type == \"object\") != $want)] | length" "$1")"
    if ((n > 0)); then
      echo "    $svc: $n $4 lines not in the $3 format, e.g. $(jq -r --arg re "$ACCESS_LINE" \
        "$(select_service "$2" "$svc") | .gelf.short_message | select(test(\$re) == $which)" "$1" | tail -n 1)" >&2
      bad=1
    fi
  done
  ((!bad))
}
access_count() { # FILE KIND
  jq -s --arg re "$ACCESS_LINE" "[.[] | $(select_service "$2" rng) | .gelf.short_message | select(test(\$re))] | length" "$1"
}
# The worker's units lines arrived as the engine's own copy of that
# container's log has them (Docker keeps one beside any log driver): every
# GELF message of one worker container is one of its `docker logs` lines.
units_intact() { # FILE KIND FORMAT
  local cid example
  cid="$(jq -r "$(select_service "$2" worker) | select($(units_filter "$3")) | .gelf._container_id" "$1" | head -n 1)"
  [[ -n "$cid" ]] || return 1
  example="$(jq -r "select(.gelf._container_id == \"$cid\") | select($(units_filter "$3")) | .gelf.short_message" "$1" | tail -n 1)"
  echo "    e.g. $example"
  docker logs "$cid" 2>&1 | sort -u >"$DIR/docker-logs"
  jq -r "select(.gelf._container_id == \"$cid\") | .gelf.short_message" "$1" | sort -u >"$DIR/gelf-lines"
  local extra
  extra="$(comm -13 "$DIR/docker-logs" "$DIR/gelf-lines" | head -n 3)"
  [[ -z "$extra" ]] || { echo "    not in docker logs: $extra" >&2; return 1; }
  [[ -s "$DIR/gelf-lines" ]]
}

service_logs_show_units() {
  local lines
  lines="$(docker service logs --tail 5 "${STACK}_worker" 2>&1)"
  grep -Eq "$UNITS" <<<"$lines"
}

# The lesson's own command on one service: `docker service update <stack>_rng
# --log-driver gelf --log-opt gelf-address=...`. Swarm replaces the rng task,
# and the new task's lines arrive, without the labels: the flags replace the
# service's whole set of log options.
lesson_update() {
  local from t0 took deadline n
  from="$(received_lines)"
  log "docker service update ${STACK}_rng --log-driver gelf --log-opt gelf-address=$GELF_ADDRESS (the lesson's command)"
  t0="$(now)"
  docker service update --detach --quiet --log-driver gelf --log-opt "gelf-address=$GELF_ADDRESS" "${STACK}_rng" >/dev/null ||
    { fail "docker service update --log-driver gelf ${STACK}_rng"; return 0; }
  deadline=$((SECONDS + WAIT_SECONDS))
  while n="$(tail -n "+$((from + 1))" "$OUT" | jq -s --arg p "${STACK}_rng." \
    '[.[] | .gelf | select((._container_name | startswith($p)) and (has("_com.docker.swarm.service.name") | not))] | length')" &&
    ((n == 0 && SECONDS < deadline)); do
    sleep 0.5
  done
  took="$(elapsed "$t0" "$(now)")"
  FIGURE[lesson_update]="$took"
  check "the new rng task's lines arrived ${took} s after the update ($n), named by container only: no labels without labels=" test "$n" -gt 0
}

# Deploys the stack in FORMAT, waits for every service's lines, checks them.
stack_phase() { # FORMAT
  local format="$1" from t0 took file="$DIR/stack-$1.jsonl"
  from="$(received_lines)"
  log "LOG_FORMAT=$format docker stack deploy -c stack.yaml -c docker/swarm/swarm-override.yaml -c stack.gelf.yaml $STACK"
  t0="$(now)"
  STACK_OWNED=1
  if ! REGISTRY=localhost/dockercoins TAG="$TAG" WEBUI_PORT="$WEBUI_PORT" GELF_ADDRESS="$GELF_ADDRESS" LOG_FORMAT="$format" \
    docker stack deploy --detach=true --resolve-image never "${STACK_FILES[@]}" "$STACK" >/dev/null; then
    fail "docker stack deploy ($format)"
    return 1
  fi
  if [[ "$format" == text ]]; then
    start_compose
    chunk_phase # while the services start
  fi
  if took="$(wait_every_service "$from" stack "$format" "$t0")"; then
    FIGURE[${format}_wait]="$took"
    pass "every service's lines arrived, the worker's units line among them, ${took} s after 'stack deploy'"
  else
    fail "every service's lines and the worker's units line within $WAIT_SECONDS s of 'stack deploy'"
    docker service ls --filter "label=com.docker.stack.namespace=$STACK" >&2
  fi
  snapshot "$from" "$(received_lines)" "$file"
  FIGURE[${format}_counts]="$(counts_line "$file" stack)"
  echo "    GELF messages: ${FIGURE[${format}_counts]}"
  check "every message of the stack names its container, stack, service, task (= container name) and node ($NODE_ID, host $NODE_NAME), level 6" \
    stack_fields_ok "$file"
  check "our four services' lines other than access lines are all in the $format format" format_ok "$file" stack "$format" other
  check "their access lines ($(access_count "$file" stack) from rng) are all in the $format format" format_ok "$file" stack "$format" access
  check "the worker's units lines arrived intact (as 'docker logs' has them), $(units_count "$file" stack "$format") of them" \
    units_intact "$file" stack "$format"
  if [[ "$format" == text ]]; then
    check "'docker service logs' still shows the worker's lines beside the gelf driver" service_logs_show_units
    check_compose
  fi
  if [[ "$format" == json ]]; then lesson_update; fi
  log "docker stack rm $STACK"
  docker stack rm "$STACK" >/dev/null
  if [[ "$format" == text ]]; then stop_compose; fi
  check "the stack's containers and network are gone" wait_stack_gone
}

# --- the Compose override, beside the stack's text phase -------------------------------------------------

COMPOSE_FROM=0
COMPOSE_T0=""
start_compose() {
  [[ "$COMPOSE" == 1 ]] || return 0
  log "LOG_FORMAT=json docker compose -p $PROJECT -f compose.yaml -f compose.gelf.yaml up -d (in the background)"
  COMPOSE_FROM="$(received_lines)"
  COMPOSE_T0="$(now)"
  COMPOSE_OWNED=1
  WEBUI_PORT="$C_WEBUI_PORT" RNG_PORT="$C_RNG_PORT" HASHER_PORT="$C_HASHER_PORT" TAG="$TAG" \
    GELF_ADDRESS="$GELF_ADDRESS" LOG_FORMAT=json "${COMPOSE_CMD[@]}" up -d --no-build >"$DIR/compose.log" 2>&1 &
  COMPOSE_PID=$!
}
check_compose() {
  [[ "$COMPOSE" == 1 ]] || return 0
  local rc=0 took file="$DIR/compose.jsonl"
  wait "$COMPOSE_PID" || rc=$?
  COMPOSE_PID=""
  if ((rc != 0)); then
    sed 's/^/    /' "$DIR/compose.log" | tail -n 10
    fail "docker compose up (compose.gelf.yaml)"
    return 0
  fi
  if took="$(wait_every_service "$COMPOSE_FROM" compose json "$COMPOSE_T0")"; then
    FIGURE[compose_wait]="$took"
    pass "Compose: every service's lines arrived, the worker's units line (json) among them, ${took} s after 'up'"
  else
    fail "Compose: every service's lines and the worker's units line within $WAIT_SECONDS s of 'up'"
  fi
  snapshot "$COMPOSE_FROM" "$(received_lines)" "$file"
  FIGURE[compose_counts]="$(counts_line "$file" compose)"
  echo "    GELF messages: ${FIGURE[compose_counts]}"
  check "Compose: every message names its container ($PROJECT-<service>-1), project and service, level 6" compose_fields_ok "$file"
  check "Compose: our four services' lines other than access lines are all in the json format" format_ok "$file" compose json other
  check "Compose: their access lines ($(access_count "$file" compose) from rng) are all in the json format" format_ok "$file" compose json access
  check "Compose: the worker's units lines arrived intact (as 'docker logs' has them)" units_intact "$file" compose json
}
stop_compose() {
  [[ "$COMPOSE" == 1 ]] || return 0
  "${COMPOSE_CMD[@]}" down -v --timeout 5 >/dev/null 2>&1 && COMPOSE_OWNED=0
}

# --- chunking ----------------------------------------------------------------------------------------------

# One line of 6,000 random base64 characters: about 4.5 kB even compressed,
# so the driver splits it into chunks (1,420 bytes of payload each).
# "<chunks> <compression>" says more than one chunk, compressed as $2.
chunked_as() { [[ "$1" =~ ^([0-9]+)\ (.*)$ ]] && ((BASH_REMATCH[1] > 1)) && [[ "${BASH_REMATCH[2]}" == "$2" ]]; }
chunk_phase() {
  local c line from file="$DIR/chunks.jsonl" got chunks=()
  log "a long incompressible line through the gelf driver, per compression type"
  from="$(received_lines)"  # the stack's and Compose's lines come in too: told apart by container name
  line="$(head -c 4500 /dev/urandom | base64 -w 0)"
  for c in gzip zlib none; do
    printf '%s\n' "$line" | docker run --rm -i --name "dcgelf-chunk-$c" --log-driver gelf \
      --log-opt "gelf-address=$GELF_ADDRESS" --log-opt "gelf-compression-type=$c" \
      --entrypoint cat redis:7 >/dev/null || fail "docker run --log-driver gelf --log-opt gelf-compression-type=$c"
  done
  sleep 0.5
  snapshot "$from" "$(received_lines)" "$file"
  for c in gzip zlib none; do
    got="$(jq -r --arg n "dcgelf-chunk-$c" --arg l "$line" \
      'select(.gelf._container_name == $n and .gelf.short_message == $l) | "\(.chunks) \(.compression)"' "$file")"
    chunks+=("${got%% *}")
    check "$c: the 6,000-character line arrived whole, in ${got%% *} chunks, ${got#* } payload" \
      chunked_as "$got" "$c"
  done
  FIGURE[chunks]="${chunks[*]}"
}

stack_phase text
stack_phase json

errors="$(jq -s '[.[] | select(.error)] | length' "$OUT")"
FIGURE[totals]="$(jq -s '[.[] | select(.gelf)] | length' "$OUT") / $(jq -s '[.[] | select(.chunks > 1)] | length' "$OUT") / $errors"
check "no datagram the receiver could not decode ($errors)" test "$errors" = 0
finish
