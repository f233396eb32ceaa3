"""Tests of the curvature scan: power iteration restricted to a group, and regime labels."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from beta_optax.training import scan

# Block matrices of a quadratic over two groups, "a" (3 parameters) and "b" (2 parameters),
# coupled by C. The restriction to a group must see only that group's diagonal block.
_A = np.diag([4.0, 1.5, 0.5]).astype(np.float32)
_B = np.array([[-6.0, 0.0], [0.0, 2.0]], np.float32)
_C = np.full((3, 2), 3.0, np.float32)
_PARAMS = {"a": jnp.ones(3), "b": jnp.ones(2)}


def _quadratic(params):
    a, b = params["a"], params["b"]
    return 0.5 * a @ _A @ a + 0.5 * b @ _B @ b + a @ _C @ b


def _curvatures(num_iterations=60):
    groups = ("a", "b")
    flags = scan.group_flags(_PARAMS, lambda path: path, groups)
    noise = scan.start_noise(_PARAMS, seed=0)
    step = jax.jit(
        lambda direction, row: scan.power_iteration_step(_quadratic, _PARAMS, direction, row)
    )
    return scan.top_curvatures(step, noise, flags, num_iterations=num_iterations)


def test_top_curvatures_known_quadratic_block():
    curvatures, residuals = _curvatures()
    np.testing.assert_allclose(float(curvatures[0]), 4.0, rtol=1e-4)
    assert float(residuals[0]) < 1e-3


def test_top_curvatures_negative_dominant_eigenvalue():
    curvatures, _ = _curvatures()
    # Power iteration finds the eigenvalue of largest magnitude of B, -6.
    np.testing.assert_allclose(float(curvatures[1]), -6.0, rtol=1e-4)


def test_group_flags_one_hot_rows():
    flags = scan.group_flags(_PARAMS, lambda path: path, ("a", "b"))
    np.testing.assert_array_equal(np.asarray(flags["a"]), [1.0, 0.0])
    np.testing.assert_array_equal(np.asarray(flags["b"]), [0.0, 1.0])


@pytest.mark.parametrize(
    "momentum, learning_rate, curvature, regime",
    [
        (0.8, 0.01, 1.0, "critical"),  # zeta = 0.2 / (2 * 0.1) = 1
        (0.95, 0.01, 1.0, "underdamped"),  # zeta = 0.25
        (0.0, 0.01, 1.0, "overdamped"),  # zeta = 5
        (0.8, 0.01, 100.0, "underdamped"),  # zeta = 0.1
    ],
    ids=["critical", "under-high-momentum", "over-no-momentum", "under-high-curvature"],
)
def test_classify_group_known_regimes(momentum, learning_rate, curvature, regime):
    result = scan.classify_group(
        "g", curvature, 0.0, momentum=momentum, learning_rate=learning_rate
    )
    expected_zeta = (1 - momentum) / (2 * math.sqrt(learning_rate * curvature))
    assert result.regime == regime
    assert result.zeta == pytest.approx(expected_zeta, rel=1e-5)


@pytest.mark.parametrize(
    "curvature, momentum, reason",
    [(-2.0, 0.8, "negative curvature"), (0.0, 0.8, "zero curvature"), (3.0, None, "momentum")],
    ids=["negative", "zero", "no-momentum"],
)
def test_classify_group_undefined_without_nan(curvature, momentum, reason):
    result = scan.classify_group("g", curvature, 0.0, momentum=momentum, learning_rate=0.01)
    assert result.regime == scan.UNDEFINED_REGIME
    assert result.zeta is None
    assert reason in result.reason
    scalars = scan.scan_metrics([result])
    assert scalars == {"scan_g_curvature": curvature}


def test_scan_metrics_regime_codes():
    result = scan.classify_group("g", 1.0, 0.0, momentum=0.95, learning_rate=0.01)
    scalars = scan.scan_metrics([result])
    assert scalars["scan_g_regime"] == scan.REGIME_CODES["underdamped"]
    assert all(math.isfinite(value) for value in scalars.values())


def test_append_jsonl_drops_repeated_steps(tmp_path):
    path = tmp_path / "scan.jsonl"
    for step in (10, 20, 30):
        scan.append_jsonl(path, {"step": step})
    scan.append_jsonl(path, {"step": 20, "again": True})
    assert scan.read_jsonl(path) == [{"step": 10}, {"step": 20, "again": True}]


@pytest.mark.parametrize(
    "field, value",
    [("power_iterations", 0), ("attribution_split", "validation"), ("damping_tolerance", -1.0)],
    ids=["iterations", "split", "tolerance"],
)
def test_diagnostics_config_rejects_invalid(field, value):
    with pytest.raises(ValueError, match=f"`{field}`"):
        scan.DiagnosticsConfig(**{field: value})
