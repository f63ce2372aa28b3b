#!/usr/bin/env bash
# The one test command. On a fresh Debian machine it installs what the tests
# need (Debian packages, the Compose plugin), seeds the base images the
# Dockerfiles name, then runs every suite: lint, the Rust tests, the native
# end-to-end measurements, the browser test, and the Docker, Compose and Swarm
# tests. It prints one line per suite and a final `N passed, M failed`.
#
# Usage: scripts/test.sh [SUITE...]     (default: all suites, in the order below)
# Environment: SKIP="suite ..." skips suites; LOG_DIR keeps each suite's log
# (default: a temporary directory, printed at the end).
# A suite's scripts are in scripts/test/suites/SUITE/, run in the order listed.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# -- The suites, in the order they run: the one list ------------------------------
# SUITE, what it needs (binaries: the workspace's binaries, built first; chromium:
# the browser; docker: the Docker engine, the Compose plugin and the seeded base
# images; cluster: a multi-node Swarm of containers, made by scripts/cluster.sh),
# and its scripts in scripts/test/suites/SUITE/ (-: its steps are in this file).
SUITES='
lint                -                  -
rust                -                  -
native              binaries           native-e2e.sh
browser             binaries,chromium  webui-browser.sh
prometheus          binaries           prometheus-scrape.sh
faults              binaries           faults-e2e.sh drain-e2e.sh
compose             docker             compose-e2e.sh
compose-faults      docker             compose-faults.sh compose-ha.sh
compose-prometheus  docker             compose-prometheus.sh
swarm               docker             swarm-e2e.sh gelf-e2e.sh
cluster             docker,cluster     cluster-e2e.sh cluster-metrics.sh
cluster-faults      docker,cluster     cluster-faults.sh
kubernetes          docker             kubernetes.sh
multiarch           docker             multiarch.sh
'
declare -A NEEDS=() PARTS=()
ALL_SUITES=()
while read -r name needs parts; do
    [ -n "$name" ] || continue
    ALL_SUITES+=("$name")
    NEEDS[$name]=$needs
    PARTS[$name]=$parts
done <<<"$SUITES"
SKIP=${SKIP:-}
LOG_DIR=${LOG_DIR:-$(mktemp -d /tmp/dockercoins-test.XXXXXX)}
mkdir -p "$LOG_DIR"

case "${1:-}" in
    -h | --help)
        sed -n '2,/^set /p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
        echo
        printf '%-20s %-18s %s\n' SUITE NEEDS SCRIPTS
        while read -r name needs parts; do
            [ -n "$name" ] && printf '%-20s %-18s %s\n' "$name" "$needs" "$parts"
        done <<<"$SUITES"
        exit 0
        ;;
esac
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=("${ALL_SUITES[@]}")

# -- What the tests need --------------------------------------------------------
install_packages() {
    local wanted=(redis-server redis-tools debootstrap shellcheck prometheus wrk curl jq python3-venv qemu-user-static binfmt-support)
    local missing=()
    # The browser, only for the browser suite (Ubuntu ships Chromium only as a snap).
    needed chromium && wanted+=(chromium chromium-driver)
    for package in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'ok installed' || missing+=("$package")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing Debian packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
        return 1
    fi
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# runs SUITE: whether SUITE is among the suites asked for and not in SKIP.
runs() {
    case " ${suites[*]} " in *" $1 "*) ;; *) return 1 ;; esac
    case " $SKIP " in *" $1 "*) return 1 ;; esac
}

# needed NEED: whether a suite that runs needs NEED.
needed() {
    local suite
    for suite in "${suites[@]}"; do
        case ",${NEEDS[$suite]:-}," in *",$1,"*) runs "$suite" && return 0 ;; esac
    done
    return 1
}

install_packages
command -v cargo >/dev/null || { echo "cargo missing: install Rust (https://rustup.rs)" >&2; exit 1; }
if needed docker; then
    docker info >/dev/null 2>&1 || { echo "Docker engine not reachable: start dockerd" >&2; exit 1; }
    scripts/test/lib/compose-plugin.sh
    scripts/test/lib/seed-images.sh
fi

# -- The suites -------------------------------------------------------------------
suite_lint() {
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    shellcheck scripts/*.sh scripts/*/*.sh scripts/test/*/*.sh scripts/test/suites/*/*.sh .ci/run docker/redis-ha/start.sh
    # A Swarm config cannot change: stack.ha.yaml names start.sh's by its content.
    local sha
    sha=$(sha256sum docker/redis-ha/start.sh | cut -c1-8)
    grep -q "name: dockercoins-redis-ha-start-$sha\$" stack.ha.yaml ||
        { echo "stack.ha.yaml: name the config dockercoins-redis-ha-start-$sha (docker/redis-ha/start.sh changed)" >&2; return 1; }
    # The web UI serves uPlot's gzipped copy to browsers that accept gzip.
    gzip -dc crates/webui/assets/uPlot.iife.min.js.gz | cmp -s - crates/webui/assets/uPlot.iife.min.js ||
        { echo "crates/webui/assets/uPlot.iife.min.js.gz is not uPlot.iife.min.js: gzip -9 -n -k -f it again" >&2; return 1; }
    scripts/test/suites/lint/docs-links.sh
    scripts/chart-readme.sh --check
    scripts/test/suites/lint/cargo-deny.sh
    local bin
    bin=$(scripts/test/lib/github-lint-venv.sh)
    echo "actionlint, zizmor --persona pedantic, check-jsonschema: .github/"
    "$bin/actionlint" .github/workflows/*.yml
    "$bin/zizmor" --offline --persona pedantic -q .github
    "$bin/check-jsonschema" --builtin-schema vendor.github-workflows .github/workflows/*.yml
    "$bin/check-jsonschema" --builtin-schema vendor.dependabot .github/dependabot.yml
    echo "ruff: the project's Python (its default rules)"
    "$bin/ruff" check --no-cache .
    if docker compose version >/dev/null 2>&1; then
        for file in compose.yaml compose.*.yaml; do
            [ "$file" = compose.yaml ] && docker compose -f compose.yaml config -q && continue
            docker compose -f compose.yaml -f "$file" config -q
        done
    fi
    for file in stack.yaml stack.*.yaml; do
        [ "$file" = stack.yaml ] && docker stack config -c stack.yaml >/dev/null && continue
        docker stack config -c stack.yaml -c "$file" >/dev/null
    done
    # The ELK stack of docs/logging.md stands alone: not an override of stack.yaml.
    docker stack config -c docker/elk/elk.yaml >/dev/null
}
# The workspace is compiled once, in the test profile: `cargo test` builds the
# four binaries too, and the native suites run those. Their measurements are
# set by the services' delays (0.1 s a call), not by the compiler's
# optimisations; the benchmark (scripts/bench.sh) builds its own release
# binaries. A suite run alone builds what is missing first (seconds when built).
export BIN_DIR="$root/target/debug" BIN="$root/target/debug"
debug_binaries() { cargo build --workspace --bins --locked --quiet; }
suite_rust() { cargo test --workspace --locked; }
# One cluster for both: cluster-e2e leaves it up (KEEP_CLUSTER=1), cluster-metrics
# adds Prometheus to its stack and takes it down (or starts its own if none is up).
suite_cluster() {
    local status=0
    KEEP_CLUSTER=1 scripts/test/suites/cluster/cluster-e2e.sh || status=$?
    REUSE_CLUSTER=1 scripts/test/suites/cluster/cluster-metrics.sh || status=$?
    return "$status"
}
# Any other suite: the binaries first if it needs them, then its scripts in order.
run_suite() {
    local part
    if declare -F "suite_$1" >/dev/null; then "suite_$1"; return; fi
    case ",${NEEDS[$1]}," in *,binaries,*) debug_binaries ;; esac
    for part in ${PARTS[$1]}; do
        "scripts/test/suites/$1/$part"
    done
}

passed=0
failed=0
summary=()
for suite in "${suites[@]}"; do
    case " $SKIP " in *" $suite "*) summary+=("SKIP  $suite"); continue ;; esac
    [ -n "${NEEDS[$suite]:-}" ] || { echo "unknown suite: $suite (see --help)" >&2; exit 2; }
    echo "=== $suite (log: $LOG_DIR/$suite.log)"
    start=$(date +%s)
    # In a subshell with errexit on, outside `if`: bash ignores `set -e` in a
    # function called as an `if` condition, so any failing step fails the suite.
    set +e
    (set -e; run_suite "$suite") > >(tee "$LOG_DIR/$suite.log") 2>&1
    status=$?
    set -e
    if [ "$status" -eq 0 ]; then
        result=PASS; passed=$((passed + 1))
    else
        result=FAIL; failed=$((failed + 1))
    fi
    line=$(printf '%-5s %-15s %4ss' "$result" "$suite" "$(($(date +%s) - start))")
    summary+=("$line")
    echo "=== $line"
done

echo
echo "Suites (logs in $LOG_DIR):"
printf '  %s\n' "${summary[@]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
