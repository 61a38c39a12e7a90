#!/usr/bin/env bash
# mypy cannot follow setuptools' package-dir mapping (cli/ → dtstore.cli, connectors/ → dtstore.connectors),
# (and agent/ → dtstore.agent), so type-check a throw-away tree of symlinks laid out as the installed package.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tree="$(mktemp -d)"
trap 'rm -rf "$tree"' EXIT
mkdir -p "$tree/dtstore"
for entry in "$root"/dtstore/*; do ln -s "$entry" "$tree/dtstore/"; done
ln -s "$root/cli" "$tree/dtstore/cli"
ln -s "$root/connectors" "$tree/dtstore/connectors"
ln -s "$root/agent" "$tree/dtstore/agent"
cd "$tree"
python3 -m mypy --config-file "$root/pyproject.toml" --cache-dir "$tree/.mypy_cache" -p dtstore "$@"
