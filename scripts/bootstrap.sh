#!/usr/bin/env bash
# Create .venv at the repository root and install beta-optax into it with the given extras.
# Usage: scripts/bootstrap.sh [EXTRAS]   (EXTRAS defaults to "train,test")
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
extras=${1:-train,test}
python=${PYTHON:-python3}

if [ ! -x "$root/.venv/bin/python" ]; then
    echo "bootstrap: creating $root/.venv with $($python --version)"
    "$python" -m venv "$root/.venv"
fi

echo "bootstrap: installing beta-optax[$extras] (pinned by requirements/constraints.txt)"
"$root/.venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c "$root/requirements/constraints.txt" -e "$root[$extras]"
