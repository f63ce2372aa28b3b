#!/usr/bin/env bash
# The documentation's links: every relative link and #anchor in README.md,
# CHANGELOG.md, CONTRIBUTING.md, SECURITY.md and docs/*.md leads to a file of
# the repository and, for an anchor, to a heading (GitHub's slugs) or id in it. Links with a scheme
# (https:, mailto:) are not followed. The checker first checks itself on
# made-up pages with good and dead links (scripts/test/suites/lint/docs_links.py).
#
# Usage: scripts/test/suites/lint/docs-links.sh [FILE.md...]   (default: README.md CHANGELOG.md CONTRIBUTING.md SECURITY.md docs/*.md)
# Env:   EXPECTED   space-separated paths of pages not written yet that links may
#                   already name (default empty: a link to a missing file fails)
#        PYTHON     the Python 3 interpreter (default python3)
set -euo pipefail

case "${1:-}" in
  -h | --help) echo "usage: $0 [FILE.md...]   (checks the docs' relative links and anchors; env EXPECTED, PYTHON)"; exit 0 ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
export EXPECTED="${EXPECTED:-}"

files=("$@")
if [[ ${#files[@]} -eq 0 ]]; then
  files=(README.md CHANGELOG.md CONTRIBUTING.md SECURITY.md)
  shopt -s nullglob
  files+=(docs/*.md)
fi
if ! command -v "$PYTHON" >/dev/null; then
  echo "docs-links: $PYTHON not found: install python3 or set PYTHON"
  echo "0 passed, 1 failed"
  exit 1
fi
echo "docs-links: ${#files[@]} files${EXPECTED:+, expected later: $EXPECTED}"
exec "$PYTHON" scripts/test/suites/lint/docs_links.py "${files[@]}"
