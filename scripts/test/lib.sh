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
