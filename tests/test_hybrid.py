"""Tests for scale_by_hybrid_momentum and hybrid_sgd."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import beta_optax
from tests import helpers, reference

PEAK, WARMUP, DECAY = 0.1, 50, 1000


def _warmup_cosine():
    return optax.warmup_cosine_decay_schedule(0.0, PEAK, WARMUP, DECAY)


def _expected_switch_step(schedule, target=0.9, steps=1200):
    """First step past the learning-rate peak whose critical momentum reaches `target`."""
    peak_so_far = 0.0
    for step in range(steps):
        learning_rate = float(schedule(step))
        momentum = reference.critical_momentum(learning_rate)
        if learning_rate < peak_so_far and momentum >= np.float32(target):
            return step
        peak_so_far = max(peak_so_far, learning_rate)
    return None


def _run_states(optimizer, steps, size=3):
    grads = helpers.as_tree_sequence(helpers.random_gradients(steps, (size,), seed=5))
    return helpers.run_optimizer(optimizer, {"w": jnp.zeros(size)}, grads)


def test_hybrid_switches_at_expected_step():
    schedule = _warmup_cosine()
    expected = _expected_switch_step(schedule)
    assert expected is not None and WARMUP < expected < DECAY

    _, states = _run_states(beta_optax.hybrid_sgd(schedule), 1100)

    switch_counts = {int(state[0].switch_count) for state in states[expected:]}
    assert switch_counts == {expected}
    assert not bool(states[expected - 1][0].switched)
    assert bool(states[expected][0].switched)
    applied = np.array([float(state[0].momentum) for state in states])
    critical = np.array([reference.critical_momentum(schedule(step)) for step in range(1100)])
    np.testing.assert_allclose(applied[:expected], critical[:expected], rtol=1e-6)
    np.testing.assert_array_equal(applied[expected:], np.float32(0.9))


def test_hybrid_never_switches_back():
    """A warm restart raises the learning rate again; the latched switch must hold."""
    cycle = optax.warmup_cosine_decay_schedule(0.0, PEAK, WARMUP, 400)
    schedule = optax.join_schedules([cycle, cycle], boundaries=[400])
    first = _expected_switch_step(schedule, steps=400)

    _, states = _run_states(beta_optax.hybrid_sgd(schedule), 800)

    switched = np.array([bool(state[0].switched) for state in states])
    assert not switched[:first].any()
    assert switched[first:].all()
    assert {float(state[0].momentum) for state in states[first:]} == {np.float32(0.9)}
    assert int(states[-1][0].switch_count) == first


def test_hybrid_switch_zero_equals_sgd():
    grads = helpers.as_tree_sequence(helpers.random_gradients(100, (4,), seed=6))
    params = {"w": jnp.ones(4)}
    schedule = _warmup_cosine()

    got, _ = helpers.run_optimizer(beta_optax.hybrid_sgd(schedule, switch_step=0), params, grads)
    expected, _ = helpers.run_optimizer(optax.sgd(schedule, momentum=0.9), params, grads)

    helpers.assert_trees_equal(got, expected)


@pytest.mark.parametrize("nesterov", [False, True], ids=["heavy_ball", "nesterov"])
def test_hybrid_late_switch_equals_beta_sgd(nesterov):
    grads = helpers.as_tree_sequence(helpers.random_gradients(300, (4,), seed=7))
    params = {"w": jnp.ones(4)}
    schedule = _warmup_cosine()

    got, _ = helpers.run_optimizer(
        beta_optax.hybrid_sgd(schedule, switch_step=10_000, nesterov=nesterov), params, grads
    )
    expected, _ = helpers.run_optimizer(
        beta_optax.beta_sgd(schedule, nesterov=nesterov), params, grads
    )

    helpers.assert_trees_equal(got, expected)


def test_hybrid_given_switch_step():
    _, states = _run_states(beta_optax.hybrid_sgd(_warmup_cosine(), switch_step=100), 150)

    assert not bool(states[99][0].switched)
    assert bool(states[100][0].switched)
    assert int(states[-1][0].switch_count) == 100


def test_hybrid_constant_learning_rate_never_switches():
    with pytest.warns(UserWarning, match="no peak"):
        optimizer = beta_optax.hybrid_sgd(0.001)
    _, states = _run_states(optimizer, 50)

    assert not any(bool(state[0].switched) for state in states)


def test_hybrid_unreachable_target_warns():
    with pytest.warns(UserWarning, match="never happens"):
        beta_optax.hybrid_sgd(0.01, momentum=0.95, max_momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        beta_optax.hybrid_sgd(0.01, momentum=0.95, max_momentum=0.9, switch_step=5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"momentum": 1.0}, "`momentum`"),
        ({"momentum": -0.1}, "`momentum`"),
        ({"switch_step": -1}, "`switch_step`"),
        ({"switch_step": 1.5}, "`switch_step`"),
        ({"switch_step": True}, "`switch_step`"),
    ],
    ids=["momentum-one", "momentum-negative", "switch-negative", "switch-float", "switch-bool"],
)
def test_hybrid_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        beta_optax.hybrid_sgd(0.01, **kwargs)


def test_hybrid_jit_single_compilation_across_switch():
    optimizer = beta_optax.hybrid_sgd(optax.warmup_cosine_decay_schedule(0.0, 0.1, 2, 20))
    params = {"w": jnp.ones(2)}
    state = optimizer.init(params)
    update = jax.jit(optimizer.update)

    for _ in range(25):
        _, state = update(params, state, params)

    assert bool(state[0].switched)
    assert helpers.count_compilations(update) == 1


def test_hybrid_constant_learning_rate_warns():
    with pytest.warns(UserWarning, match="no peak") as record:
        beta_optax.hybrid_sgd(0.01)
    assert record[0].filename == __file__


def test_hybrid_injected_learning_rate_no_warning():
    schedule = optax.warmup_cosine_decay_schedule(0.0, 0.05, 2, 20)
    optimizer = optax.inject_hyperparams(beta_optax.hybrid_sgd)(learning_rate=schedule)
    params = {"w": jnp.ones(2)}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        state = optimizer.init(params)
        for _ in range(25):
            _, state = optimizer.update(params, state, params)
    assert bool(state.inner_state[0].switched)
