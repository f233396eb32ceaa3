#!/usr/bin/env bash
# The main job: install what it needs, then run benchmarks/cifar_resnet.py (CPU preset on
# Fashion-MNIST unless flags select another). Extra arguments go to the benchmark.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
fmnist=/usr/share/datasets/fashion-mnist

if [ ! -d "$fmnist" ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        echo "main: installing Debian's dataset-fashion-mnist into $fmnist"
        apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist
    elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then
        echo "main: installing Debian's dataset-fashion-mnist into $fmnist (sudo)"
        sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist
    else
        echo "main: $fmnist is missing and apt-get is not available here." >&2
        echo "main: the benchmark will look in tensorflow-datasets and --data-dir instead." >&2
    fi
fi

"$root/scripts/bootstrap.sh" train
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-$root/.jax_cache}
cd "$root"
exec .venv/bin/python benchmarks/cifar_resnet.py "$@"
