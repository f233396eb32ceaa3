#!/usr/bin/env bash
# Install everything the tests need into .venv, then run the whole suite on the CPU.
# Extra arguments go to pytest, for example: scripts/test.sh -k momentum
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/bootstrap.sh" train,test

export JAX_PLATFORMS=cpu
# A persistent compilation cache cuts each test process's start-up compile time.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$root/.jax_cache}
cd "$root"
exec .venv/bin/python -m pytest -n 2 --durations=15 "$@"
