#!/usr/bin/env bash
# Writes k8s/dockercoins.yaml, k8s/rng-daemonset.yaml and k8s/networkpolicy.yaml
# from charts/dockercoins (Helm's own library, helm-python-sdk: no helm binary):
# the chart's defaults without Helm's bookkeeping labels. Run it after editing
# the chart; the kubernetes test suite fails while they differ.
#
# Usage: scripts/k8s-manifests.sh [--check]     (--check: only compare)
# Env:   VENV   the Python venv (default ~/.cache/dockercoins/kubernetes-venv)
set -euo pipefail

usage() { echo "usage: $0 [--check]   (renders k8s/*.yaml from charts/dockercoins)"; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
args=()
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  --check) args=(--check) ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac
python=$("$ROOT/scripts/test/lib/kubernetes-venv.sh")
exec "$python" "$ROOT/scripts/test/suites/kubernetes/kubernetes.py" manifests "${args[@]}"
