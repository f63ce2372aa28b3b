#!/usr/bin/env bash
# The one test command. On a fresh Debian machine it installs what the tests
# need (Debian packages, the Compose plugin), seeds the base images the
# Dockerfiles name, then runs every suite: lint, the Rust tests, the native
# end-to-end measurements, the browser test, and the Docker, Compose and Swarm
# tests. It prints one line per suite and a final `N passed, M failed`.
#
# Usage: scripts/test.sh [SUITE...]     (default: all suites, in order)
# Suites: lint rust native browser prometheus faults compose compose-faults compose-prometheus
#         swarm cluster cluster-faults kubernetes multiarch
# Environment: SKIP="suite ..." skips suites; LOG_DIR keeps each suite's log
# (default: a temporary directory, printed at the end).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
ALL_SUITES=(lint rust native browser prometheus faults compose compose-faults compose-prometheus swarm cluster cluster-faults kubernetes multiarch)
SKIP=${SKIP:-}
LOG_DIR=${LOG_DIR:-$(mktemp -d /tmp/dockercoins-test.XXXXXX)}
mkdir -p "$LOG_DIR"

case "${1:-}" in
    -h | --help) sed -n '2,/^set /p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'; exit 0 ;;
esac
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=("${ALL_SUITES[@]}")

# -- What the tests need --------------------------------------------------------
install_packages() {
    local wanted=(redis-server redis-tools debootstrap shellcheck prometheus wrk curl jq python3-venv qemu-user-static binfmt-support)
    local missing=()
    # The browser, only for the browser suite (Ubuntu ships Chromium only as a snap).
    runs browser && wanted+=(chromium chromium-driver)
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

needs_docker() {
    case " $* " in *" compose"* | *" swarm "* | *" cluster "* | *" cluster-faults "* | *" kubernetes "* | *" multiarch "*) return 0 ;; esac
    return 1
}

install_packages
command -v cargo >/dev/null || { echo "cargo missing: install Rust (https://rustup.rs)" >&2; exit 1; }
if needs_docker "${suites[@]}"; then
    docker info >/dev/null 2>&1 || { echo "Docker engine not reachable: start dockerd" >&2; exit 1; }
    scripts/test/compose-plugin.sh
    scripts/test/seed-images.sh
fi

# -- The suites -------------------------------------------------------------------
suite_lint() {
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets --locked -- -D warnings
    shellcheck scripts/*.sh scripts/*/*.sh .ci/run docker/redis-ha/start.sh
    # A Swarm config cannot change: stack.ha.yaml names start.sh's by its content.
    local sha
    sha=$(sha256sum docker/redis-ha/start.sh | cut -c1-8)
    grep -q "name: dockercoins-redis-ha-start-$sha\$" stack.ha.yaml ||
        { echo "stack.ha.yaml: name the config dockercoins-redis-ha-start-$sha (docker/redis-ha/start.sh changed)" >&2; return 1; }
    # The web UI serves uPlot's gzipped copy to browsers that accept gzip.
    gzip -dc crates/webui/assets/uPlot.iife.min.js.gz | cmp -s - crates/webui/assets/uPlot.iife.min.js ||
        { echo "crates/webui/assets/uPlot.iife.min.js.gz is not uPlot.iife.min.js: gzip -9 -n -k -f it again" >&2; return 1; }
    scripts/test/docs-links.sh
    scripts/chart-readme.sh --check
    scripts/test/cargo-deny.sh
    local bin
    bin=$(scripts/test/github-lint-venv.sh)
    echo "actionlint, zizmor --persona pedantic, check-jsonschema: .github/"
    "$bin/actionlint" .github/workflows/*.yml
    "$bin/zizmor" --offline --persona pedantic -q .github
    "$bin/check-jsonschema" --builtin-schema vendor.github-workflows .github/workflows/*.yml
    "$bin/check-jsonschema" --builtin-schema vendor.dependabot .github/dependabot.yml
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
suite_native() { debug_binaries; scripts/test/native-e2e.sh; }
suite_browser() { debug_binaries; scripts/test/webui-browser.sh; }
suite_prometheus() { debug_binaries; scripts/test/prometheus-scrape.sh; }
suite_faults() {
    debug_binaries
    scripts/test/faults-e2e.sh
    scripts/test/drain-e2e.sh
}
suite_compose() { scripts/test/compose-e2e.sh; }
suite_compose-faults() {
    scripts/test/compose-faults.sh
    scripts/test/compose-ha.sh
}
suite_compose-prometheus() { scripts/test/compose-prometheus.sh; }
suite_swarm() {
    scripts/test/swarm-e2e.sh
    scripts/test/gelf-e2e.sh
}
# One cluster for both: cluster-e2e leaves it up (KEEP_CLUSTER=1), cluster-metrics
# adds Prometheus to its stack and takes it down (or starts its own if none is up).
suite_cluster() {
    local status=0
    KEEP_CLUSTER=1 scripts/test/cluster-e2e.sh || status=$?
    REUSE_CLUSTER=1 scripts/test/cluster-metrics.sh || status=$?
    return "$status"
}
suite_kubernetes() { scripts/test/kubernetes.sh; }
suite_multiarch() { scripts/test/multiarch.sh; }
suite_cluster-faults() { scripts/test/cluster-faults.sh; }

passed=0
failed=0
summary=()
for suite in "${suites[@]}"; do
    case " $SKIP " in *" $suite "*) summary+=("SKIP  $suite"); continue ;; esac
    declare -F "suite_$suite" >/dev/null || { echo "unknown suite: $suite (see --help)" >&2; exit 2; }
    echo "=== $suite (log: $LOG_DIR/$suite.log)"
    start=$(date +%s)
    # In a subshell with errexit on, outside `if`: bash ignores `set -e` in a
    # function called as an `if` condition, so any failing step fails the suite.
    set +e
    (set -e; "suite_$suite") > >(tee "$LOG_DIR/$suite.log") 2>&1
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
