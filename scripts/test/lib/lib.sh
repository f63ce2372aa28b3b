# What the end-to-end test scripts share: one line per check, counted, and
# timing helpers. Source it once ROOT is set, after setting TEST_NAME (the
# prefix of log lines); ELAPSED_DECIMALS (default 1) sets what `elapsed` prints.
# Counts in PASSED and FAILED; a script that calls `finish` or `abort` defines
# `summary`, which prints its figures and the closing `N passed, M failed`.
# shellcheck shell=bash disable=SC2034
PASSED=0
FAILED=0

log() { echo "$TEST_NAME: $*"; }
pass() { PASSED=$((PASSED + 1)); echo "  ok    $*"; }
fail() { FAILED=$((FAILED + 1)); echo "  FAIL  $*"; }
check() { # check "description" command...
  local what="$1"
  shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
# check_range NAME VALUE LOW HIGH: LOW <= VALUE <= HIGH, said with the value and the range.
check_range() { check "$1: $2 (expected $3..$4)" between "$2" "$3" "$4"; }

# Seconds since the epoch with nanoseconds, and differences of them.
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" -v d="${ELAPSED_DECIMALS:-1}" 'BEGIN { printf("%." d "f", b - a) }'; }
# between X LOW HIGH: LOW <= X <= HIGH.
between() { awk -v x="$1" -v lo="$2" -v hi="$3" 'BEGIN { exit !(x >= lo && x <= hi) }'; }

# Prints the summary and exits: 1 if any check failed, else 0.
finish() {
  summary
  if ((FAILED > 0)); then exit 1; fi
  exit 0
}
# A step that cannot go on: count it and stop here.
abort() {
  fail "$*"
  finish
}

# --- a single-node Swarm of this engine -------------------------------------------------
# swarm_join: `docker swarm init` if the engine is in no swarm (SWARM_CREATED=1, and
# GWBRIDGE_CREATED=1 if that made docker_gwbridge), or use the active one if this
# engine is a manager. swarm_leave_if_created undoes it, in the test's clean-up.
SWARM_CREATED=0
GWBRIDGE_CREATED=0
swarm_join() {
  local state
  state="$(docker info --format '{{.Swarm.LocalNodeState}}')"
  if [[ "$state" == inactive ]]; then
    log "docker swarm init --advertise-addr 127.0.0.1"
    # `swarm init` creates docker_gwbridge and `swarm leave` keeps it: remove it too if it is new.
    docker network inspect docker_gwbridge >/dev/null 2>&1 || GWBRIDGE_CREATED=1
    docker swarm init --advertise-addr 127.0.0.1 >/dev/null || abort "docker swarm init"
    SWARM_CREATED=1
  elif [[ "$(docker info --format '{{.Swarm.ControlAvailable}}')" != true ]]; then
    abort "this engine is in a swarm ($state) but not a manager; run the test on a manager"
  else
    log "using the active swarm (it stays)"
  fi
}
swarm_leave_if_created() {
  ((SWARM_CREATED)) || return 0
  docker swarm leave --force >/dev/null
  # Its endpoints go some time after the swarm's containers.
  local i
  for i in $(seq 1 30); do
    if ((!GWBRIDGE_CREATED)) || docker network rm docker_gwbridge >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  log "docker_gwbridge is still in use; remove it later: docker network rm docker_gwbridge"
}
