#!/usr/bin/env bash
# Quick start: install dtstore, snapshot a folder into a local repository, restore it, compare.
set -euo pipefail
cd "$(dirname "$0")/.."
# A virtual environment: Debian's own Python refuses system-wide pip installs (PEP 668).
if ! python3 -m venv --help >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv python3-pip >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
export PATH="$PWD/.venv/bin:$PATH"
# man pages beside the venv's bin/ (man finds them through PATH), and bash completion for this user
dtstore generate --man "$PWD/.venv/share/man/man1" >/dev/null
completions="${XDG_DATA_HOME:-$HOME/.local/share}/bash-completion/completions"
mkdir -p "$completions" && dtstore generate --completion bash > "$completions/dtstore"
echo "installed: man dtstore (with $PWD/.venv/bin on PATH), bash completion in $completions/dtstore"

work=$(mktemp -d)
export DTSTORE_REPOSITORY="$work/repo" DTSTORE_CACHE_DIR="$work/cache"
printf 'quickstart-password\n' > "$work/password"; chmod 600 "$work/password"
export DTSTORE_PASSWORD_FILE="$work/password"

mkdir -p "$work/data/sql"
python3 -c "
import random
rnd = random.Random(7)
with open('$work/data/sql/shop.sql', 'w') as f:
    for i in range(200_000):
        f.write(f\"INSERT INTO orders VALUES ({i},'customer{rnd.randrange(5000)}',{rnd.randrange(10**6)/100});\n\")
"
echo "-- schema" > "$work/data/sql/schema.sql"

dtstore init
dtstore snapshot --tag quickstart "$work/data"
dtstore snapshot --tag quickstart "$work/data"        # unchanged: stores almost nothing
dtstore snapshots
dtstore restore latest --target "$work/restored"
diff -r "$work/data" "$work/restored$work/data" && echo "restore is byte-identical: OK"
echo "repository: $work/repo"
