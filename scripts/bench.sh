#!/usr/bin/env bash
# Benchmark: DockerCoins with the teaching delays off (RNG_DELAY=0,
# RNG_CONCURRENCY=0, HASHER_DELAY=0, WORKER_SLEEP=0), every service a native
# release binary on loopback, measured with wrk against two references run
# beside it: `bare` (crates/dockercoins/examples/bare.rs: the same routes' work
# on axum and tokio with no layers) and nginx (`return 200`, when installed).
#
# Absolute figures move with the machine and with whatever else runs on it;
# ratios measured side by side move much less. So each round measures every
# figure once, ours and the reference one after the other (the order reversed
# every other round), and the table gives the median of the rounds' ratios
# beside its target, with the absolute figures (medians too) for information.
#
# Not a test: timings depend on the machine and on what else runs on it.
#
# Usage: scripts/bench.sh
# Env:   PORT_BASE           first of 7 loopback ports used (default 24000:
#                            redis, rng, hasher, webui, worker, bare, nginx;
#                            below Linux's ephemeral range, where the thousands
#                            of connections the run closes would hold ports)
#        ROUNDS              rounds of measurements (default 3)
#        DURATION            length of each wrk run (default 5s)
#        CONNECTIONS         wrk connections (default 64)
#        THREADS             wrk threads (default 1: on 2 CPUs, a second wrk
#                            thread takes a CPU from the server it measures)
#        WORKER_CONCURRENCY  units of work at once in the one worker (default 64)
#        PIPELINE_SECONDS    at least this long to measure the pipeline, each
#                            round (default 5)
#        SERVICE_LOG         RUST_LOG of the services (default info, their default:
#                            one access-log line per request, to a file)
#        NGINX               1 to measure nginx too, 0 not to, auto (default):
#                            when it is installed or can be (nginx-light)
#        BIN_DIR             where the binaries are (default target/release)
#        BUILD               1 to run `cargo build --release` first (default 1)
#        KEEP                1 to keep the logs and wrk outputs (default 0)
# Exit:  0 every target met, 1 some target not met, 2 the run could not be made.
set -euo pipefail

usage() { echo "usage: $0   (benchmark with the delays off, ratios to bare axum and nginx; see the header for env knobs)"; }
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Natively nothing balances connections by readiness: the services stop without
# the drain that follows SIGTERM (SHUTDOWN_DRAIN, docs/operations.md#stopping).
export SHUTDOWN_DRAIN="${SHUTDOWN_DRAIN:-0}"
PORT_BASE="${PORT_BASE:-24000}"
ROUNDS="${ROUNDS:-3}"
DURATION="${DURATION:-5s}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-1}"
WORKER_CONCURRENCY="${WORKER_CONCURRENCY:-64}"
PIPELINE_SECONDS="${PIPELINE_SECONDS:-5}"
SERVICE_LOG="${SERVICE_LOG:-info}"
NGINX="${NGINX:-auto}"
BIN_DIR="${BIN_DIR:-$ROOT/target/release}"
BUILD="${BUILD:-1}"
KEEP="${KEEP:-0}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/dockercoins-bench.XXXXXX")"

declare -A PID=()
declare -A PORT=([redis]=$PORT_BASE [rng]=$((PORT_BASE + 1)) [hasher]=$((PORT_BASE + 2))
  [webui]=$((PORT_BASE + 3)) [worker]=$((PORT_BASE + 4)) [bare]=$((PORT_BASE + 5))
  [nginx]=$((PORT_BASE + 6)))
declare -a ROWS=()
MET=0
MISSED=0

log() { echo "bench: $*" >&2; }
die() { log "$*"; exit 2; }

stop() { # stop NAME: SIGTERM, and wait for it
  [[ -n "${PID[$1]:-}" ]] || return 0
  kill -TERM "${PID[$1]}" 2>/dev/null || true
  wait "${PID[$1]}" 2>/dev/null || true
  unset "PID[$1]"
}
cleanup() {
  local rc=$? name
  set +e
  for name in "${!PID[@]}"; do kill -TERM "${PID[$name]}" 2>/dev/null; done
  for name in "${!PID[@]}"; do wait "${PID[$name]}" 2>/dev/null; done
  if [[ "$KEEP" == 1 ]]; then log "logs and wrk outputs kept in $WORK"; else rm -rf "$WORK"; fi
  return "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- what the run needs -----------------------------------------------------
install_packages() { # install_packages PACKAGE...: with apt-get, when root
  [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null || return 1
  log "installing $* (apt-get install -y $*)"
  apt-get install -y -q "$@" >/dev/null 2>&1 ||
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$@" >/dev/null 2>&1; }
}
missing=()
for tool in wrk redis-server redis-cli awk; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  install_packages wrk redis-server gawk ||
    die "${missing[*]} missing; install them (apt-get install -y wrk redis-server gawk), then run again"
fi
NGINX_BIN="$(command -v nginx || echo /usr/sbin/nginx)"
if [[ "$NGINX" != 0 && ! -x "$NGINX_BIN" ]]; then
  install_packages nginx-light || log "nginx not installed (apt-get install -y nginx-light): no nginx column"
fi
[[ "$NGINX" != 0 && -x "$NGINX_BIN" ]] && NGINX=1 || NGINX=0
if [[ "$BUILD" == 1 ]]; then
  log "building the release binaries (cargo build --release --bins --example bare)"
  (cd "$ROOT" && cargo build --release --bins --example bare -q) ||
    die "the build failed; fix it or set BUILD=0 and BIN_DIR"
fi
BARE="$BIN_DIR/examples/bare"
[[ -x "$BARE" ]] || BARE="$BIN_DIR/bare"
[[ -x "$BARE" ]] || die "$BIN_DIR/examples/bare missing; run cargo build --release --example bare"
for name in rng hasher webui worker; do
  [[ -x "$BIN_DIR/$name" ]] || die "$BIN_DIR/$name missing; run cargo build --release or set BIN_DIR"
done
ulimit -n 8192 2>/dev/null || true
for name in "${!PORT[@]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/${PORT[$name]}") 2>/dev/null; then
    die "port ${PORT[$name]} is in use; stop what uses it or set PORT_BASE"
  fi
done

# --- helpers ------------------------------------------------------------------
now_us() { echo "${EPOCHREALTIME/./}"; }

# Sets STATUS to the status code of GET PATH on 127.0.0.1:PORT, or to nothing
# if nothing answers; without forking, so that polling is fine-grained.
STATUS=""
http_status() { # http_status PORT PATH
  STATUS=""
  if exec 3<>"/dev/tcp/127.0.0.1/$1"; then
    if printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3; then
      IFS=' ' read -r -t 2 _ STATUS _ <&3 || true
    fi
    exec 3<&- 3>&-
  fi
} 2>/dev/null

# Sleeps 1 ms without forking (a busy loop would take a CPU from the service
# it waits for).
exec 4<> <(:)
nap() { read -r -t 0.001 -u 4 _ || true; }

# Starts a server and records the time from spawn to its first 200 on PATH
# (default /readyz).
declare -A READY_MS=()
launch() { # launch NAME PATH COMMAND...
  local name="$1" path="$2" t0 t1
  shift 2
  t0="$(now_us)"
  "$@" >>"$WORK/$name.log" 2>&1 &
  PID[$name]=$!
  until http_status "${PORT[$name]}" "$path"; [[ "$STATUS" == 200 ]]; do
    nap
    kill -0 "${PID[$name]}" 2>/dev/null || die "$name exited at start; see $WORK/$name.log (KEEP=1 keeps it)"
    (($(now_us) < t0 + 10000000)) || die "$name not ready after 10 s; see $WORK/$name.log (KEEP=1 keeps it)"
  done
  t1="$(now_us)"
  READY_MS[$name]="$(awk -v us=$((t1 - t0)) 'BEGIN { printf "%.1f", us / 1000 }')"
  log "$name ready in ${READY_MS[$name]} ms (pid ${PID[$name]})"
}
start() { # start NAME [VAR=VALUE...]: one of our services
  local name="$1"
  shift
  launch "$name" /readyz env PORT="${PORT[$name]}" INSTANCE="$name-bench" RUST_LOG="$SERVICE_LOG" "$@" \
    "$BIN_DIR/$name"
}

# CPU seconds (user + system) a process has used so far.
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }

# Peak resident memory of a process, in MB.
peak_mb() { awk '$1 == "VmHWM:" { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

# TEXT padded with spaces to WIDTH characters (printf would count bytes, not ≥).
pad() { local LC_ALL=C.UTF-8 text="$1"; while ((${#text} < $2)); do text+=" "; done; printf '%s' "$text"; }
at_least() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a >= b) }' && echo 1 || echo 0; }
at_most() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }' && echo 1 || echo 0; }
thousands() { LC_ALL=C awk -v n="$1" 'BEGIN { s = sprintf("%.0f", n); while (s ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]([,]|$)/, ",&", s); print s }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print 0 }'; }

# Runs wrk against URL; sets RATE to its requests per second. Socket errors
# or non-2xx answers make the figure suspect: they are logged and counted in
# SUSPECT.
SUSPECT=0
RATE=0
wrk_rate() { # wrk_rate NAME URL [wrk options...]
  local name="$1" url="$2" out rate non2xx errors
  shift 2
  out="$WORK/$name.wrk"
  wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url" >"$out" 2>&1 ||
    die "wrk failed on $url; see $out (KEEP=1 keeps it)"
  cat "$out" >>"$WORK/all.wrk"
  rate="$(awk '/^Requests\/sec:/ { print $2 }' "$out")"
  non2xx="$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$out")"
  errors="$(awk '/Socket errors/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' "$out")"
  if [[ "${non2xx:-0}${errors:-0}" != 00 ]]; then
    SUSPECT=$((SUSPECT + 1))
    log "$name: ${non2xx:-0} non-2xx answers, ${errors:-0} socket errors"
  fi
  RATE="${rate:-0}"
}

# --- start everything -----------------------------------------------------------
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
log "load before the run: $LOAD_BEFORE on $(nproc) CPUs; writing to $WORK"
t0="$(now_us)"
redis-server --port "${PORT[redis]}" --bind 127.0.0.1 --save "" --appendonly no \
  >"$WORK/redis.log" 2>&1 &
PID[redis]=$!
until redis-cli -p "${PORT[redis]}" ping >/dev/null 2>&1; do
  kill -0 "${PID[redis]}" 2>/dev/null || die "redis-server exited; see $WORK/redis.log (KEEP=1 keeps it)"
  (($(now_us) < t0 + 10000000)) || die "redis-server not answering after 10 s"
  sleep 0.02
done
REDIS="redis://127.0.0.1:${PORT[redis]}"
redis-cli -p "${PORT[redis]}" set hashes 0 >/dev/null

start rng RNG_DELAY=0 RNG_CONCURRENCY=0
start hasher HASHER_DELAY=0
start webui REDIS_URL="$REDIS"
launch bare / "$BARE" "${PORT[bare]}"
if [[ "$NGINX" == 1 ]]; then
  mkdir -p "$WORK/nginx"
  # keepalive_requests: hyper keeps a connection for any number of requests;
  # nginx's default of 1,000 would make wrk reconnect all the time.
  cat >"$WORK/nginx.conf" <<EOF
daemon off;
worker_processes auto;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    server {
        listen 127.0.0.1:${PORT[nginx]};
        location / { return 200 "nginx\n"; }
    }
}
EOF
  launch nginx / "$NGINX_BIN" -p "$WORK/nginx" -c "$WORK/nginx.conf"
fi

printf '%s\n' 'wrk.method = "POST"' 'wrk.body = string.rep("x", 32)' \
  'wrk.headers["Content-Type"] = "application/octet-stream"' >"$WORK/post32.lua"

# The figures, each `name url [wrk options]`; a round measures them in this
# order, or the reverse.
FIGURES=(
  "bare_get http://127.0.0.1:${PORT[bare]}/"
  "hasher_get http://127.0.0.1:${PORT[hasher]}/"
  "bare_post http://127.0.0.1:${PORT[bare]}/ -s $WORK/post32.lua"
  "hasher_post http://127.0.0.1:${PORT[hasher]}/ -s $WORK/post32.lua"
  "bare_bytes http://127.0.0.1:${PORT[bare]}/32"
  "rng_bytes http://127.0.0.1:${PORT[rng]}/32"
  "webui_json http://127.0.0.1:${PORT[webui]}/json"
  "pipeline -"
)
if [[ "$NGINX" == 1 ]]; then FIGURES=("nginx http://127.0.0.1:${PORT[nginx]}/" "${FIGURES[@]}"); fi

# Every server once before the rounds (connections, caches, allocator).
log "warming up: 1 s of wrk on each server"
for figure in "${FIGURES[@]}"; do
  read -r name url options <<<"$figure"
  [[ "$url" == - ]] && continue
  # shellcheck disable=SC2086 # options are words
  DURATION=1s wrk_rate "warm-$name" "$url" $options
done

# --- the pipeline -------------------------------------------------------------
# The worker adds to `hashes` once a second; the rate is measured from one
# change of the counter to another, PIPELINE_SECONDS or more later, so that
# no partial second is counted. The worker runs only for its measurement, so
# that it does not load rng and hasher while wrk measures them.
hashes() { redis-cli -p "${PORT[redis]}" get hashes; }
next_flush() { # waits for `hashes` to change from $1; prints "value time_us"
  local value
  while value="$(hashes)"; [[ "$value" == "$1" ]]; do sleep 0.01; done
  echo "$value $(now_us)"
}
WORKER_MB=0
CPU_LINE=""
pipeline_rate() { # sets RATE to hashes per second
  local h1 t1 h2 t2 name line=""
  declare -A cpu1=()
  start worker REDIS_URL="$REDIS" RNG_URL="http://127.0.0.1:${PORT[rng]}" \
    HASHER_URL="http://127.0.0.1:${PORT[hasher]}" WORKER_SLEEP=0 \
    WORKER_CONCURRENCY="$WORKER_CONCURRENCY"
  read -r h1 t1 < <(next_flush "$(hashes)") # the first flush may hold a partial second
  read -r h1 t1 < <(next_flush "$h1")
  for name in redis rng hasher worker; do cpu1[$name]="$(cpu_seconds "${PID[$name]}")"; done
  sleep "$PIPELINE_SECONDS"
  read -r h2 t2 < <(next_flush "$(hashes)")
  for name in redis rng hasher worker; do
    line+=" $name $(awk -v a="${cpu1[$name]}" -v b="$(cpu_seconds "${PID[$name]}")" -v s=$((t2 - t1)) \
      'BEGIN { printf "%.0f%%", (b - a) / (s / 1e6) * 100 }'),"
  done
  CPU_LINE="$line"
  WORKER_MB="$(awk -v a="$WORKER_MB" -v b="$(peak_mb "${PID[worker]}")" 'BEGIN { print (b > a) ? b : a }')"
  stop worker
  log "pipeline: $((h2 - h1)) hashes in $(awk -v us=$((t2 - t1)) 'BEGIN { printf "%.2f", us / 1e6 }') s"
  RATE="$(awk -v h=$((h2 - h1)) -v us=$((t2 - t1)) 'BEGIN { printf "%.0f", h / (us / 1e6) }')"
}

# --- the rounds -----------------------------------------------------------------
declare -A RATES=()  # name -> the rates of every round, space-separated
declare -A RATIOS=() # row -> the ratios of every round
for ((round = 1; round <= ROUNDS; round++)); do
  order=("${FIGURES[@]}")
  if ((round % 2 == 0)); then
    order=()
    for ((i = ${#FIGURES[@]} - 1; i >= 0; i--)); do order+=("${FIGURES[i]}"); done
  fi
  declare -A R=()
  for figure in "${order[@]}"; do
    read -r name url options <<<"$figure"
    if [[ "$url" == - ]]; then
      log "round $round/$ROUNDS: pipeline, one worker, WORKER_CONCURRENCY=$WORKER_CONCURRENCY, ${PIPELINE_SECONDS}s or more"
      pipeline_rate
    else
      log "round $round/$ROUNDS: $name: wrk -t$THREADS -c$CONNECTIONS -d$DURATION $options $url"
      # shellcheck disable=SC2086 # options are words
      wrk_rate "$name" "$url" $options
    fi
    R[$name]="$RATE"
    RATES[$name]+="${R[$name]} "
  done
  RATIOS[hasher_get]+="$(ratio "${R[hasher_get]}" "${R[bare_get]}") "
  RATIOS[hasher_post]+="$(ratio "${R[hasher_post]}" "${R[bare_post]}") "
  RATIOS[rng_bytes]+="$(ratio "${R[rng_bytes]}" "${R[bare_bytes]}") "
  RATIOS[webui_json]+="$(ratio "${R[webui_json]}" "${R[bare_get]}") "
  RATIOS[pipeline]+="$(ratio "${R[pipeline]}" "$(awk -v b="${R[bare_get]}" 'BEGIN { print b / 2 }')") "
  if [[ "$NGINX" == 1 ]]; then
    RATIOS[bare_nginx]+="$(ratio "${R[bare_get]}" "${R[nginx]}") "
    for name in hasher_get hasher_post rng_bytes webui_json; do
      RATIOS[${name}_nginx]+="$(ratio "${R[$name]}" "${R[nginx]}") "
    done
    RATIOS[pipeline_nginx]+="$(ratio "${R[pipeline]}" "$(awk -v b="${R[nginx]}" 'BEGIN { print b / 2 }')") "
  fi
  unset R
done
declare -A MED=()
for name in "${!RATES[@]}"; do
  # shellcheck disable=SC2086 # a list of numbers
  MED[$name]="$(median ${RATES[$name]})"
done
for name in "${!RATIOS[@]}"; do
  # shellcheck disable=SC2086 # a list of numbers
  MED[ratio_$name]="$(median ${RATIOS[$name]})"
done

# --- the table ----------------------------------------------------------------
# With the access log on (the default), the throughput targets are 0.85; the
# 0.9 they aim at is for services without it. `met?` says which was met.
ACCESS_LOG=1
[[ "$SERVICE_LOG" == *access=warn* || "$SERVICE_LOG" == *access=error* || "$SERVICE_LOG" == *access=off* ||
  "$SERVICE_LOG" == warn* || "$SERVICE_LOG" == error* || "$SERVICE_LOG" == off* ]] && ACCESS_LOG=0
row() { # row FIGURE TARGET RATIO ÷NGINX OURS REFERENCE CLASSIC MET
  local met="$8"
  case "$met" in
    1 | 0.9) MET=$((MET + 1)); met=yes ;;
    0.85) MET=$((MET + 1)); met="0.85" ;;
    0) MISSED=$((MISSED + 1)); met=NO ;;
  esac
  ROWS+=("| $(pad "$1" 38) | $(pad "$2" 7) | $(pad "$3" 6) | $(pad "$4" 7) | $(pad "$5" 16) | $(pad "$6" 16) | $(pad "$7" 12) | $(pad "$met" 4) |")
}
throughput_met() { # throughput_met RATIO TARGET: 1, 0.85 (log on, 0.85 only) or 0
  if [[ "$(at_least "$1" "$2")" == 1 ]]; then echo 1
  elif [[ "$2" == 0.9 && "$ACCESS_LOG" == 1 && "$(at_least "$1" 0.85)" == 1 ]]; then echo 0.85
  else echo 0; fi
}
nginx_ratio() { [[ "$NGINX" == 1 ]] && printf '%.2f' "${MED[ratio_${1}_nginx]}" || echo -; }
per_s() { echo "$(thousands "${MED[$1]}")/s"; }
throughput_row() { # throughput_row FIGURE NAME REFERENCE TARGET CLASSIC
  row "$1" "≥ $4" "$(printf '%.2f' "${MED[ratio_$2]}")" "$(nginx_ratio "$2")" "$(per_s "$2")" \
    "$(per_s "$3")" "$5" "$(throughput_met "${MED[ratio_$2]}" "$4")"
}
throughput_row "hasher GET / ÷ bare GET /" hasher_get bare_get 0.9 -
throughput_row "hasher POST / 32 B ÷ bare POST /" hasher_post bare_post 0.9 2,215/s
throughput_row "rng GET /32 ÷ bare GET /32" rng_bytes bare_bytes 0.9 1,000/s
throughput_row "webui GET /json ÷ bare GET /" webui_json bare_get 0.6 8,088/s
row "pipeline ÷ (bare GET / ÷ 2)" "≥ 0.8" "$(printf '%.2f' "${MED[ratio_pipeline]}")" "$(nginx_ratio pipeline)" \
  "$(thousands "${MED[pipeline]}") hashes/s" "$(per_s bare_get) ÷ 2" "165 hashes/s" \
  "$(at_least "${MED[ratio_pipeline]}" 0.8)"
declare -A CLASSIC_MB=([rng]=33 [hasher]=37 [webui]=129 [worker]=-)
for name in rng hasher webui worker; do
  if [[ "$name" == worker ]]; then mb="$WORKER_MB"; else mb="$(peak_mb "${PID[$name]}")"; fi
  row "$name peak resident memory (VmHWM)" "≤ 15 MB" - - "$mb MB" - "${CLASSIC_MB[$name]} MB" "$(at_most "$mb" 15)"
done
for name in rng hasher webui worker; do
  row "$name start to ready (to 200 /readyz)" "≤ 50 ms" - - "${READY_MS[$name]} ms" - - \
    "$(at_most "${READY_MS[$name]}" 50)"
done
if [[ "$NGINX" == 1 ]]; then
  row "bare GET / ÷ nginx return 200" - "$(printf '%.2f' "${MED[ratio_bare_nginx]}")" - "$(per_s bare_get)" \
    "$(per_s nginx)" - -
fi

echo
echo "DockerCoins with the delays off: $(nproc) CPUs, loopback, native release binaries,"
echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $ROUNDS interleaved rounds (medians); services at RUST_LOG=$SERVICE_LOG"
echo "(access log $( ((ACCESS_LOG)) && echo on || echo off)); load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| $(pad figure 38) | $(pad target 7) | $(pad ratio 6) | ÷ nginx | $(pad ours 16) | $(pad reference 16) | $(pad classic 12) | met? |"
echo "|$(pad "" 40 | tr ' ' -)|$(pad "" 9 | tr ' ' -)|-------:|--------:|$(pad "" 17 | tr ' ' -):|$(pad "" 17 | tr ' ' -):|$(pad "" 13 | tr ' ' -):|------|"
printf '%s\n' "${ROWS[@]}"
echo
echo "Rounds (requests/s; pipeline in hashes/s):"
for figure in "${FIGURES[@]}"; do
  read -r name _ <<<"$figure"
  echo "  $(pad "$name" 12) ${RATES[$name]}"
done
echo "CPU used during the last pipeline (100% = one core):${CPU_LINE%,}"
((SUSPECT == 0)) || echo "$SUSPECT wrk runs had errors or non-2xx answers (KEEP=1 keeps their output)"
((ACCESS_LOG == 0)) || echo "met? 0.85: at least 0.85 with the access log on, not 0.9"
echo "$MET of $((MET + MISSED)) targets met"
((MISSED == 0 && SUSPECT == 0)) || exit 1
