"""Tests for scale_by_beta_momentum and beta_sgd."""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import beta_optax
from tests import helpers, reference

STEPS = 1200

SCHEDULES = {
    "warmup_cosine": (
        optax.warmup_cosine_decay_schedule(0.0, 0.1, 100, 1000),
        functools.partial(reference.warmup_cosine, peak=0.1, warmup_steps=100, decay_steps=1000),
    ),
    "piecewise": (
        optax.piecewise_constant_schedule(0.1, {300: 0.1, 700: 0.1}),
        functools.partial(
            reference.piecewise, init_value=0.1, boundaries_and_scales={300: 0.1, 700: 0.1}
        ),
    ),
    "constant": (0.01, lambda step: 0.01),
}


@pytest.mark.parametrize("nesterov", [False, True], ids=["heavy_ball", "nesterov"])
@pytest.mark.parametrize("schedule_name", list(SCHEDULES))
def test_beta_sgd_matches_numpy_reference(schedule_name, nesterov):
    """Momentum to rtol 1e-6 per step; parameters to 1e-6 of their largest magnitude.

    A per-element relative tolerance is ill-posed for parameters that cross zero, and the float32
    learning rates of optax and of the float64 reference schedule differ in the last bit.
    """
    schedule, reference_schedule = SCHEDULES[schedule_name]
    grads = helpers.random_gradients(STEPS, (5,), seed=1)
    params = {"w": jnp.linspace(-1.0, 1.0, 5)}

    history, states = helpers.run_optimizer(
        beta_optax.beta_sgd(schedule, nesterov=nesterov), params, helpers.as_tree_sequence(grads)
    )

    learning_rates = [reference_schedule(step) for step in range(STEPS)]
    momenta = [reference.critical_momentum(a) for a in learning_rates]
    expected = reference.heavy_ball(params["w"], grads, learning_rates, momenta, nesterov=nesterov)
    applied = [float(beta_optax.applied_momentum(state)) for state in states]
    np.testing.assert_allclose(applied, momenta, rtol=1e-6, atol=0)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(
        np.stack([p["w"] for p in history]), expected, rtol=1e-6, atol=1e-6 * scale
    )


@pytest.mark.parametrize("nesterov", [False, True], ids=["heavy_ball", "nesterov"])
@pytest.mark.parametrize(
    "learning_rate", [0.0025, optax.constant_schedule(0.0025)], ids=["scalar", "schedule"]
)
def test_beta_sgd_equals_sgd_at_momentum_point_nine(learning_rate, nesterov):
    grads = helpers.as_tree_sequence(helpers.random_gradients(50, (4, 3), seed=2))
    params = {"w": jnp.ones((4, 3))}

    got, _ = helpers.run_optimizer(
        beta_optax.beta_sgd(learning_rate, nesterov=nesterov), params, grads
    )
    expected, _ = helpers.run_optimizer(
        optax.sgd(learning_rate, momentum=0.9, nesterov=nesterov), params, grads
    )

    helpers.assert_trees_equal(got, expected)


def test_beta_sgd_first_update_uses_step_zero():
    schedule = lambda count: 0.01 * (count + 1)  # noqa: E731
    optimizer = beta_optax.beta_sgd(schedule)
    state = optimizer.init({"w": jnp.zeros(2)})

    updates, state = optimizer.update({"w": jnp.ones(2)}, state)

    np.testing.assert_allclose(updates["w"], [-0.01, -0.01], rtol=1e-6)
    np.testing.assert_allclose(beta_optax.applied_momentum(state), 0.8, rtol=1e-6)
    updates, state = optimizer.update({"w": jnp.ones(2)}, state)
    momentum = reference.critical_momentum(0.02)
    np.testing.assert_allclose(updates["w"], -0.02 * (1 + momentum), rtol=1e-6)


def test_scale_by_beta_momentum_state_fields():
    transform = beta_optax.scale_by_beta_momentum(optax.linear_schedule(0.0, 0.04, 10))
    state = transform.init({"w": jnp.zeros(3)})
    assert state.count.dtype == jnp.int32
    assert float(state.momentum) == pytest.approx(0.99)

    for _ in range(10):
        _, state = transform.update({"w": jnp.ones(3)}, state)

    assert int(state.count) == 10
    np.testing.assert_allclose(state.momentum, reference.critical_momentum(0.036), rtol=1e-6)


@pytest.mark.parametrize(
    "factory",
    [beta_optax.beta_sgd, beta_optax.hybrid_sgd, beta_optax.beta_adam],
    ids=["beta_sgd", "hybrid_sgd", "beta_adam"],
)
def test_inject_hyperparams_equals_plain(factory):
    schedule = optax.warmup_cosine_decay_schedule(0.0, 0.05, 20, 200)
    grads = helpers.as_tree_sequence(helpers.random_gradients(200, (6,), seed=3))
    params = {"w": jnp.ones(6)}

    plain, plain_states = helpers.run_optimizer(factory(schedule), params, grads)
    injected, injected_states = helpers.run_optimizer(
        optax.inject_hyperparams(factory)(learning_rate=schedule), params, grads
    )

    # Adam's bias correction divides by 1 - b1**t, about 0.01 while b1 is near 0.99, which
    # turns a last-bit difference in the learning rate between the two compiled graphs into a
    # relative error near 1e-5 after 200 steps.
    rtol = 1e-4 if factory is beta_optax.beta_adam else 1e-6
    helpers.assert_trees_close(injected, plain, rtol=rtol)
    for plain_state, injected_state in zip(plain_states, injected_states, strict=True):
        assert float(beta_optax.applied_momentum(injected_state)) == pytest.approx(
            float(beta_optax.applied_momentum(plain_state)), rel=1e-6
        )


def test_inject_hyperparams_momentum_follows_runtime_learning_rate():
    optimizer = optax.inject_hyperparams(beta_optax.beta_sgd)(learning_rate=0.01)
    update = jax.jit(optimizer.update)
    params = {"w": jnp.ones(2)}
    state = optimizer.init(params)

    _, state = update({"w": jnp.ones(2)}, state, params)
    assert float(beta_optax.applied_momentum(state)) == pytest.approx(0.8, rel=1e-6)
    state.hyperparams["learning_rate"] = jnp.asarray(0.0025, jnp.float32)
    _, state = update({"w": jnp.ones(2)}, state, params)

    assert float(beta_optax.applied_momentum(state)) == pytest.approx(0.9, rel=1e-6)
    assert helpers.count_compilations(update) == 1


@pytest.mark.parametrize(
    "factory",
    [beta_optax.beta_sgd, beta_optax.hybrid_sgd, beta_optax.beta_adam],
    ids=["beta_sgd", "hybrid_sgd", "beta_adam"],
)
def test_update_no_recompilation(factory):
    optimizer = factory(optax.warmup_cosine_decay_schedule(0.0, 0.1, 5, 50))
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}
    state = optimizer.init(params)
    update = jax.jit(optimizer.update)

    for _ in range(3):
        updates, state = update(params, state, params)
        params = optax.apply_updates(params, updates)

    assert helpers.count_compilations(update) == 1


@pytest.mark.parametrize("nesterov", [False, True], ids=["heavy_ball", "nesterov"])
def test_beta_sgd_bfloat16_params_stay_bfloat16(nesterov):
    schedule = optax.warmup_cosine_decay_schedule(0.0, 0.05, 10, 100)
    grads = helpers.random_gradients(100, (8,), seed=4)
    optimizer = beta_optax.beta_sgd(schedule, nesterov=nesterov)

    low, low_states = helpers.run_optimizer(
        optimizer,
        {"w": jnp.ones(8, jnp.bfloat16)},
        [{"w": jnp.asarray(g, jnp.bfloat16)} for g in grads],
    )
    full, full_states = helpers.run_optimizer(
        optimizer, {"w": jnp.ones(8, jnp.float32)}, helpers.as_tree_sequence(grads)
    )

    assert low[-1]["w"].dtype == jnp.bfloat16
    assert low_states[-1][0].trace["w"].dtype == jnp.bfloat16
    for low_state, full_state in zip(low_states, full_states, strict=True):
        assert low_state[0].momentum.dtype == jnp.float32
        np.testing.assert_allclose(low_state[0].momentum, full_state[0].momentum, rtol=1e-6, atol=0)
    np.testing.assert_allclose(
        np.asarray(low[-1]["w"], np.float32), full[-1]["w"], rtol=0.05, atol=0.05
    )


def test_beta_sgd_accumulator_dtype():
    optimizer = beta_optax.beta_sgd(0.01, accumulator_dtype=jnp.float32)
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    state = optimizer.init(params)

    updates, state = optimizer.update({"w": jnp.ones(3, jnp.bfloat16)}, state)

    assert state[0].trace["w"].dtype == jnp.float32
    assert updates["w"].dtype == jnp.bfloat16


def _quadratic_trajectory(optimizer, curvature, steps):
    x = jnp.float32(1.0)
    state = optimizer.init(x)
    update = jax.jit(optimizer.update)
    trajectory = []
    for _ in range(steps):
        updates, state = update(curvature * x, state)
        x = optax.apply_updates(x, updates)
        trajectory.append(float(x))
    return np.array(trajectory)


@pytest.mark.parametrize("curvature", [0.5, 4.0, 20.0], ids=lambda h: f"h{h}")
def test_exact_form_converges_without_overshoot(curvature):
    learning_rate = 0.01

    critical = _quadratic_trajectory(
        beta_optax.beta_sgd(learning_rate, curvature=curvature, form="exact"), curvature, 400
    )
    constant = _quadratic_trajectory(optax.sgd(learning_rate, momentum=0.9), curvature, 400)

    assert np.all(critical > 0), "critically damped iterate changed sign"
    assert abs(critical[-1]) < 1e-3
    assert np.any(constant < 0), "momentum 0.9 was expected to overshoot"


def test_beta_sgd_clamp_warning_once_at_construction():
    with pytest.warns(UserWarning, match="clamped") as record:
        optimizer = beta_optax.beta_sgd(0.5)
    assert len(record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        state = optimizer.init({"w": jnp.ones(2)})
        jax.jit(optimizer.update)({"w": jnp.ones(2)}, state)


INVALID = [
    ({"learning_rate": -0.1}, "`learning_rate`"),
    ({"learning_rate": float("nan")}, "`learning_rate`"),
    ({"learning_rate": np.full((2,), 0.1)}, "`learning_rate`"),
    ({"learning_rate": 0.1, "curvature": 0.0}, "`curvature`"),
    ({"learning_rate": 0.1, "min_momentum": 1.5}, "`min_momentum`"),
    ({"learning_rate": 0.1, "max_momentum": -0.5}, "`max_momentum`"),
    ({"learning_rate": 0.1, "min_momentum": 0.9, "max_momentum": 0.1}, "`min_momentum`"),
    ({"learning_rate": 0.1, "form": "Paper"}, "`form`"),
]
INVALID_IDS = ["neg-lr", "nan-lr", "vector-lr", "zero-h", "min>1", "max<0", "min>max", "bad-form"]


@pytest.mark.parametrize(
    "factory",
    [
        beta_optax.scale_by_beta_momentum,
        beta_optax.beta_sgd,
        beta_optax.scale_by_hybrid_momentum,
        beta_optax.hybrid_sgd,
        beta_optax.scale_by_beta_adam,
        beta_optax.beta_adam,
    ],
    ids=lambda f: f.__name__,
)
@pytest.mark.parametrize(("kwargs", "match"), INVALID, ids=INVALID_IDS)
def test_factories_invalid_arguments(factory, kwargs, match):
    with pytest.raises(ValueError, match=match):
        factory(**kwargs)


def test_beta_sgd_traced_learning_rate_not_checked():
    def make_update(learning_rate):
        optimizer = beta_optax.beta_sgd(learning_rate)
        state = optimizer.init({"w": jnp.ones(2)})
        updates, state = optimizer.update({"w": jnp.ones(2)}, state)
        return updates["w"], beta_optax.applied_momentum(state)

    updates, momentum = jax.jit(make_update)(jnp.float32(float("nan")))

    assert not bool(jnp.isnan(momentum))
    assert np.isnan(np.asarray(updates)).all()
