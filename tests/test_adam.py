"""Tests for scale_by_beta_adam and beta_adam."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

import beta_optax
from tests import helpers, reference


def test_beta_adam_equals_adam_at_constant_b1():
    grads = helpers.as_tree_sequence(helpers.random_gradients(100, (5,), seed=8))
    params = {"w": jnp.ones(5)}

    got, states = helpers.run_optimizer(beta_optax.beta_adam(0.0025), params, grads)
    expected, _ = helpers.run_optimizer(optax.adam(0.0025, b1=0.9), params, grads)

    helpers.assert_trees_close(got, expected, rtol=1e-6)
    assert float(beta_optax.applied_momentum(states[-1])) == pytest.approx(0.9, rel=1e-6)


def test_beta_adam_b1_follows_schedule():
    schedule = optax.warmup_cosine_decay_schedule(0.0, 0.01, 10, 100)
    _, states = helpers.run_optimizer(
        beta_optax.beta_adam(schedule),
        {"w": jnp.zeros(3)},
        helpers.as_tree_sequence(helpers.random_gradients(100, (3,), seed=9)),
    )

    applied = [float(beta_optax.applied_momentum(state)) for state in states]
    expected = [reference.critical_momentum(schedule(step)) for step in range(100)]
    np.testing.assert_allclose(applied, expected, rtol=1e-6)


def test_beta_adam_bfloat16_params():
    optimizer = beta_optax.beta_adam(0.001)
    params = {"w": jnp.ones(4, jnp.bfloat16)}
    state = optimizer.init(params)

    updates, state = optimizer.update({"w": jnp.ones(4, jnp.bfloat16)}, state, params)

    assert optax.apply_updates(params, updates)["w"].dtype == jnp.bfloat16
    assert state[0].momentum.dtype == jnp.float32
