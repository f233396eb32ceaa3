"""Tests for the critical momentum, the damping ratio and the regime classifier."""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import beta_optax
from tests import reference


@pytest.mark.parametrize(
    ("learning_rate", "expected"),
    [(0.0025, 0.9), (0.25, 0.0), (0.01, 0.8), (0.0, 0.99), (1e-12, 0.99)],
    ids=["lr0.0025", "lr0.25", "lr0.01", "lr0", "lr1e-12"],
)
def test_critical_momentum_paper_values(learning_rate, expected):
    momentum = beta_optax.critical_momentum(learning_rate)
    assert momentum.dtype == jnp.float32
    np.testing.assert_allclose(momentum, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("curvature", [0.5, 1.0, 4.0], ids=lambda h: f"h{h}")
def test_critical_momentum_exact_form(curvature):
    learning_rate = 0.01
    momentum = beta_optax.critical_momentum(learning_rate, curvature=curvature, form="exact")
    expected = (1 - math.sqrt(learning_rate * curvature)) ** 2
    np.testing.assert_allclose(momentum, expected, rtol=1e-6)


def test_critical_momentum_exact_form_holds_zero_past_unit_step():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        momenta = [beta_optax.critical_momentum(a, form="exact") for a in (1.0, 2.0, 9.0)]
    np.testing.assert_array_equal(momenta, [0.0, 0.0, 0.0])


def test_critical_momentum_schedule_matches_reference():
    schedule = optax.warmup_cosine_decay_schedule(0.0, 0.1, 100, 1000)
    momentum_schedule = beta_optax.critical_momentum(schedule)
    steps = np.arange(0, 1300)
    got = jax.vmap(momentum_schedule)(steps)
    expected = [reference.critical_momentum(schedule(step)) for step in steps]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0)


def test_critical_momentum_integer_learning_rate():
    assert float(beta_optax.critical_momentum(0)) == pytest.approx(0.99)
    assert float(beta_optax.critical_momentum(np.int32(0))) == pytest.approx(0.99)
    schedule = beta_optax.critical_momentum(lambda count: 0)
    assert schedule(3).dtype == jnp.float32


def test_critical_momentum_bounds_clamp():
    momentum = beta_optax.critical_momentum(0.0, min_momentum=0.1, max_momentum=0.5)
    assert float(momentum) == pytest.approx(0.5)
    with pytest.warns(UserWarning, match="clamped"):
        momentum = beta_optax.critical_momentum(0.24, min_momentum=0.1, max_momentum=0.5)
    assert float(momentum) == pytest.approx(0.1)


def test_critical_momentum_warns_once_for_large_constant():
    with pytest.warns(UserWarning, match="exceeds 0.25") as record:
        beta_optax.critical_momentum(0.5)
    assert len(record) == 1


def test_critical_momentum_warns_for_schedule_start():
    with pytest.warns(UserWarning, match="at step 0 of the schedule"):
        beta_optax.critical_momentum(optax.constant_schedule(0.3))


def test_critical_momentum_no_warning_in_range():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        beta_optax.critical_momentum(0.2)
        beta_optax.critical_momentum(0.9, form="exact")
        beta_optax.critical_momentum(optax.warmup_cosine_decay_schedule(0.0, 0.1, 10, 100))


@pytest.mark.parametrize(
    "learning_rate",
    [float("nan"), float("inf"), -float("inf"), -1.0, 1e30, 0.0, -0.0],
    ids=["nan", "inf", "-inf", "negative", "huge", "zero", "-zero"],
)
def test_critical_momentum_traced_never_nan(learning_rate):
    momentum = jax.jit(lambda a: beta_optax.critical_momentum(a))(jnp.float32(learning_rate))
    assert not bool(jnp.isnan(momentum))
    assert 0.0 <= momentum <= np.float32(0.99)


@settings(max_examples=200, deadline=None)
@given(
    learning_rate=st.floats(min_value=0.0, max_value=1e30, allow_nan=False, allow_infinity=False),
    low=st.floats(min_value=0.0, max_value=0.98),
    width=st.floats(min_value=0.0, max_value=1.0),
    curvature=st.floats(min_value=1e-6, max_value=1e6),
    form=st.sampled_from(["paper", "exact"]),
)
def test_critical_momentum_stays_in_bounds(learning_rate, low, width, curvature, form):
    high = low + width * (0.999 - low)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        momentum = beta_optax.critical_momentum(
            learning_rate, curvature=curvature, form=form, min_momentum=low, max_momentum=high
        )
    assert np.float32(low) <= momentum <= np.float32(high)


@settings(max_examples=50, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True, width=32))
def test_critical_momentum_jit_any_float_in_bounds(learning_rate):
    momentum = _jitted_momentum(jnp.float32(learning_rate))
    assert 0.0 <= momentum <= np.float32(0.99)


_jitted_momentum = jax.jit(lambda a: beta_optax.critical_momentum(a))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"learning_rate": -0.1}, "`learning_rate`"),
        ({"learning_rate": float("nan")}, "`learning_rate`"),
        ({"learning_rate": float("inf")}, "`learning_rate`"),
        ({"learning_rate": np.ones(3)}, "`learning_rate`.*shape"),
        ({"learning_rate": 0.1, "curvature": 0.0}, "`curvature`"),
        ({"learning_rate": 0.1, "curvature": -2.0}, "`curvature`"),
        ({"learning_rate": 0.1, "curvature": float("nan")}, "`curvature`"),
        ({"learning_rate": 0.1, "min_momentum": -0.1}, "`min_momentum`"),
        ({"learning_rate": 0.1, "max_momentum": 1.0}, "`max_momentum`"),
        (
            {"learning_rate": 0.1, "min_momentum": 0.6, "max_momentum": 0.5},
            "`min_momentum`.*exceed",
        ),
        ({"learning_rate": 0.1, "form": "continuous"}, "`form`"),
    ],
    ids=[
        "negative-lr",
        "nan-lr",
        "inf-lr",
        "vector-lr",
        "zero-curvature",
        "negative-curvature",
        "nan-curvature",
        "negative-min",
        "max-one",
        "min-above-max",
        "unknown-form",
    ],
)
def test_critical_momentum_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        beta_optax.critical_momentum(**kwargs)


def test_damping_ratio_paper_form_is_one():
    for learning_rate in (0.001, 0.01, 0.1, 0.2):
        momentum = beta_optax.critical_momentum(learning_rate)
        zeta = beta_optax.damping_ratio(momentum, learning_rate)
        np.testing.assert_allclose(zeta, 1.0, rtol=1e-5)
        assert beta_optax.classify_damping(zeta) is beta_optax.DampingRegime.CRITICAL


def test_damping_ratio_exact_form_value():
    learning_rate, curvature = 0.04, 1.0
    momentum = beta_optax.critical_momentum(learning_rate, form="exact")
    zeta = beta_optax.damping_ratio(momentum, learning_rate, curvature)
    np.testing.assert_allclose(zeta, 1 - math.sqrt(learning_rate * curvature) / 2, rtol=1e-6)


def test_damping_ratio_regimes():
    learning_rate = 0.01
    assert (
        beta_optax.classify_damping(beta_optax.damping_ratio(0.9, learning_rate)) == "underdamped"
    )
    assert beta_optax.classify_damping(beta_optax.damping_ratio(0.5, learning_rate)) == "overdamped"
    assert beta_optax.classify_damping(beta_optax.damping_ratio(0.8, learning_rate)) == "critical"


def test_damping_ratio_tolerance_edges():
    assert beta_optax.classify_damping(1.1, tolerance=0.1) is beta_optax.DampingRegime.CRITICAL
    assert beta_optax.classify_damping(1.1001, tolerance=0.1) is beta_optax.DampingRegime.OVERDAMPED
    assert (
        beta_optax.classify_damping(0.8999, tolerance=0.1) is beta_optax.DampingRegime.UNDERDAMPED
    )


def test_damping_ratio_zero_learning_rate_is_inf():
    assert float(beta_optax.damping_ratio(0.9, 0.0)) == math.inf
    zeta = jax.jit(beta_optax.damping_ratio)(jnp.float32(0.9), jnp.float32(0.0))
    assert float(zeta) == math.inf


def test_damping_ratio_broadcasts_under_jit():
    momenta = jnp.array([0.9, 0.8, 0.5])
    zeta = jax.jit(beta_optax.damping_ratio)(momenta, jnp.float32(0.01))
    np.testing.assert_allclose(zeta, [0.5, 1.0, 2.5], rtol=1e-6)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: beta_optax.damping_ratio(float("nan"), 0.1), "`momentum`"),
        (lambda: beta_optax.damping_ratio(0.9, -0.1), "`learning_rate`"),
        (lambda: beta_optax.damping_ratio(0.9, 0.1, 0.0), "`curvature`"),
        (lambda: beta_optax.classify_damping(float("nan")), "`zeta`"),
        (lambda: beta_optax.classify_damping(1.0, tolerance=-0.1), "`tolerance`"),
        (lambda: beta_optax.classify_damping(np.ones(2)), "`zeta`"),
    ],
    ids=[
        "nan-momentum",
        "negative-lr",
        "zero-curvature",
        "nan-zeta",
        "negative-tol",
        "vector-zeta",
    ],
)
def test_damping_invalid_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_clamp_warning_points_at_caller():
    for build in (
        lambda: beta_optax.critical_momentum(0.5),
        lambda: beta_optax.beta_sgd(0.5),
        lambda: beta_optax.beta_adam(optax.constant_schedule(0.5)),
    ):
        with pytest.warns(UserWarning, match="clamped") as record:
            build()
        assert record[0].filename == __file__


@pytest.mark.parametrize(
    "schedule",
    [lambda count: -0.1 + 0 * count, lambda count: float("nan"), optax.constant_schedule(-1.0)],
    ids=["negative", "nan", "negative-constant-schedule"],
)
def test_critical_momentum_rejects_bad_schedule_start(schedule):
    with pytest.raises(ValueError, match="`learning_rate`.*at step 0 of the schedule"):
        beta_optax.beta_sgd(schedule)


@pytest.mark.parametrize("learning_rate", ["0.1", None, [0.1]], ids=["str", "none", "list"])
def test_critical_momentum_rejects_non_numbers(learning_rate):
    with pytest.raises(TypeError, match="`learning_rate` must be a number"):
        beta_optax.beta_sgd(learning_rate)
