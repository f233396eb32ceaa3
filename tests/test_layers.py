"""The core and the diagnostics import only jax, optax and numpy."""

import ast
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "beta_optax"
CORE_MODULES = sorted(PACKAGE.glob("_*.py")) + [PACKAGE / "__init__.py"]
ALLOWED_ROOTS = {"jax", "optax", "numpy", "beta_optax"}
HEAVY_MODULES = ("flax", "orbax", "tensorflow_datasets", "matplotlib", "tqdm")


def _top_level_imports(path):
    """Module-level imports only; imports inside functions are lazy and allowed."""
    tree = ast.parse(path.read_text())
    roots = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("path", CORE_MODULES, ids=lambda p: p.name)
def test_core_module_imports_allowed(path):
    third_party = {root for root in _top_level_imports(path) if root not in sys.stdlib_module_names}
    assert third_party <= ALLOWED_ROOTS, f"{path.name} imports {third_party - ALLOWED_ROOTS}"


def test_import_loads_no_training_dependency():
    code = (
        "import sys, beta_optax\n"
        f"loaded = [m for m in {HEAVY_MODULES!r} if m in sys.modules]\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
