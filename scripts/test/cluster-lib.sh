# What the scripts that strike the nodes of the local Swarm share: the tasks
# of a service and where they run, polling with a deadline, and the samples
# of `hashes` and rates read from them. Source it after lib.sh, in a script
# that defines `on_mgr` (runs a command on a manager that answers) and sets
# STACK (the stack's name) and SAMPLES (a file of JSON samples, one a line,
# each with its time `t` and, when Redis answered, `hashes` as `h`).
# shellcheck shell=bash

# Nodes of the running tasks of a service, one a line (desired running, state Running).
running_on() {
  on_mgr docker service ps "${STACK}_$1" --filter desired-state=running --format '{{.Node}} {{.CurrentState}}' 2>/dev/null |
    awk '$2 == "Running" { print $1 }'
}
count_running() { running_on "$1" | grep -c . || true; }
# "node container-id" of the running task of a service.
task_of() {
  local n cid
  n="$(running_on "$1" | head -n 1)"
  [[ -n "$n" ]] || return 1
  cid="$(docker exec "$n" docker ps -q --filter "label=com.docker.swarm.service.name=${STACK}_$1" | head -n 1)"
  [[ -n "$cid" ]] || return 1
  echo "$n $cid"
}

# wait_for seconds command...: polls every 0.5 s; prints the seconds it took, or "timeout".
wait_for() {
  local limit="$1" t0
  shift
  t0="$(now)"
  while ! "$@"; do
    if awk -v a="$t0" -v b="$(now)" -v l="$limit" 'BEGIN { exit !(b - a > l) }'; then
      echo "timeout"
      return 1
    fi
    sleep 0.5
  done
  elapsed "$t0" "$(now)"
}
since() { elapsed "$1" "$(now)"; }

# The samples that parse, one JSON object a line.
samples() { jq -cR 'fromjson? | select(type == "object" and .t != null)' "$SAMPLES" 2>/dev/null; }
# Rate between two times, from the first sample at or after $1 and the last at or before $2.
rate() {
  samples | jq -rs --argjson a "$1" --argjson b "$2" '
    [.[] | select(.h != null and .t >= $a and .t <= $b)] as $s
    | if ($s | length) < 2 or ($s[-1].t - $s[0].t) < 1 then "n/a"
      else (($s[-1].h - $s[0].h) / ($s[-1].t - $s[0].t) * 10 | round / 10 | tostring) end'
}
