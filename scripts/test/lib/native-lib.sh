# What the scripts that run the services as plain processes share (faults-e2e,
# drain-e2e): the binaries of $BIN_DIR, free loopback ports, a service started
# and waited for, and everything started removed at exit. Source it after
# lib.sh, once ROOT, BIN_DIR, WORK and KEEP_LOGS are set.
# shellcheck shell=bash disable=SC2034
declare -A PID=() PORT=()

# Kills what `start` started and removes $WORK (unless KEEP_LOGS=1); the EXIT trap.
cleanup() {
  local rc=$? name
  set +e
  for name in "${!PID[@]}"; do
    kill -KILL "${PID[$name]}" 2>/dev/null
  done
  wait 2>/dev/null
  if [[ "$KEEP_LOGS" == 1 ]]; then
    echo "$TEST_NAME: logs kept in $WORK"
  else
    rm -rf "$WORK"
  fi
  return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# need_tools "PACKAGES" TOOL...: each TOOL is on the PATH, or says which Debian packages bring them.
need_tools() {
  local packages="$1" tool
  shift
  for tool in "$@"; do
    if ! command -v "$tool" >/dev/null; then
      echo "$TEST_NAME: $tool is missing; install it (apt-get install -y $packages)" >&2
      exit 1
    fi
  done
}

# need_binaries NAME...: builds the workspace's binaries into $BIN_DIR when one is missing
# (the release profile for a target/release, else the test profile).
need_binaries() {
  local name profile=()
  for name in "$@"; do
    [[ -x "$BIN_DIR/$name" ]] && continue
    [[ "$BIN_DIR" == */release ]] && profile=(--release)
    log "building the binaries (cargo build ${profile[*]} --bins)"
    (cd "$ROOT" && cargo build "${profile[@]}" --bins -q)
    return
  done
}

# ports_free FIRST LAST: no loopback port from FIRST to LAST is in use.
ports_free() {
  local port
  for port in $(seq "$1" "$2"); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$TEST_NAME: port $port is in use; stop what uses it or set PORT_BASE" >&2
      exit 1
    fi
  done
}

# wait_up PORT PATH: PATH answers 2xx on PORT within 10 s.
wait_up() {
  local deadline=$((SECONDS + 10))
  until curl -fs --max-time 1 -o /dev/null "http://127.0.0.1:$1$2"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}

# start NAME BINARY PORT [VAR=VALUE...]: $BIN_DIR/BINARY as NAME, logging to
# $WORK/NAME.log; up when its /healthz answers.
start() {
  local name="$1" binary="$2" port="$3"
  shift 3
  env PORT="$port" INSTANCE="$name" "$@" "$BIN_DIR/$binary" >>"$WORK/$name.log" 2>&1 &
  PID[$name]=$!
  PORT[$name]=$port
  wait_up "$port" /healthz
}
