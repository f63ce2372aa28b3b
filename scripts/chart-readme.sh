#!/usr/bin/env bash
# Writes charts/dockercoins/README.md: the chart's description and install
# commands, and a table of every value of charts/dockercoins/values.yaml (its
# key, its default, and the comment above it). Run it after editing
# values.yaml; the lint suite (scripts/test.sh lint) fails while they differ.
# Python's standard library only: no Helm, no venv.
#
# Usage: scripts/chart-readme.sh [--check]     (--check: only compare, exit 1 if out of date)
set -euo pipefail

usage() { echo "usage: $0 [--check]   (writes charts/dockercoins/README.md from values.yaml)"; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode="write"
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
  --check) mode=check ;;
  "") ;;
  *) usage >&2; exit 2 ;;
esac

exec python3 - "$ROOT/charts/dockercoins" "$mode" <<'PY'
import re
import sys
from pathlib import Path

chart, mode = Path(sys.argv[1]), sys.argv[2]
KEY = re.compile(r"^( *)([A-Za-z_][\w.-]*):(?: +(.*))?$")


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def rows(lines: list[str]) -> list[tuple[str, str, str]]:
    """(key path, default, description) for every key with a value or a comment above it."""
    out, comment, stack, in_list = [], [], [], None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped:
            comment = []
            continue
        if stripped.startswith("#"):
            comment.append(stripped.lstrip("#").strip())
            continue
        m = KEY.match(line)
        if not m:  # an item of a block list: part of the key above, as are its lines
            in_list = stack[-1][0] if stack else 0
            comment = []
            continue
        indent, key, value = len(m.group(1)), m.group(2), (m.group(3) or "").strip()
        if in_list is not None and indent > in_list:
            continue
        in_list = None
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([k for _, k in stack] + [key])
        stack.append((indent, key))
        nxt = next((n for n in lines[i + 1:] if n.strip() and not n.strip().startswith("#")), "")
        if not value and nxt.strip().startswith("- "):
            value = "a list: see values.yaml"
        elif value:
            value = f"`{value}`"
        if value or comment:
            out.append((path, value, " ".join(comment)))
        comment = []
    return out


meta = (chart / "Chart.yaml").read_text()
description = " ".join(re.search(r"^description: >-\n((?:  .*\n)+)", meta, re.M).group(1).split())
version = re.search(r"^version: (.*)$", meta, re.M).group(1)
app_version = re.search(r"^appVersion: \"?([^\"\n]*)\"?$", meta, re.M).group(1)
table = "\n".join(f"| `{k}` | {cell(v)} | {cell(d)} |" for k, v, d in rows((chart / "values.yaml").read_text().splitlines()))
text = f"""# The dockercoins chart

{description}

Chart version {version}, app version {app_version}.

```console
$ helm install dockercoins charts/dockercoins
$ helm upgrade dockercoins charts/dockercoins --reset-then-reuse-values --set worker.image.tag=v0.2
```

How to use it, lesson by lesson, and how it was checked: [Kubernetes](../../docs/kubernetes.md).

## Values

Generated from `values.yaml` by `scripts/chart-readme.sh` (edit `values.yaml`, then run it).
Every value is checked by `values.schema.json`.

| key | default | what |
|---|---|---|
{table}
"""
path = chart / "README.md"
if mode == "check":
    if not path.exists() or path.read_text() != text:
        print("chart-readme: charts/dockercoins/README.md is out of date: run scripts/chart-readme.sh", file=sys.stderr)
        sys.exit(1)
    print("chart-readme: charts/dockercoins/README.md is up to date")
else:
    path.write_text(text)
    print("wrote charts/dockercoins/README.md")
PY
