"""Tests for applied_momentum."""

import jax.numpy as jnp
import optax
import pytest

import beta_optax


def _after_one_update(optimizer):
    params = {"w": jnp.ones(2)}
    state = optimizer.init(params)
    _, state = optimizer.update({"w": jnp.ones(2)}, state, params)
    return state


@pytest.mark.parametrize(
    ("optimizer", "expected"),
    [
        (beta_optax.beta_sgd(0.01), 0.8),
        (beta_optax.hybrid_sgd(0.01, switch_step=10**6), 0.8),
        (beta_optax.beta_adam(0.0025), 0.9),
        (optax.inject_hyperparams(beta_optax.beta_sgd)(learning_rate=0.01), 0.8),
        (optax.inject_hyperparams(beta_optax.hybrid_sgd)(learning_rate=0.01, momentum=0.5), 0.8),
        (optax.inject_hyperparams(optax.sgd)(learning_rate=0.1, momentum=0.85), 0.85),
        (optax.inject_hyperparams(optax.adam)(learning_rate=0.1, b1=0.7), 0.7),
    ],
    ids=[
        "beta_sgd",
        "hybrid",
        "beta_adam",
        "inject-beta",
        "inject-hybrid",
        "inject-sgd",
        "inject-adam",
    ],
)
def test_applied_momentum_found(optimizer, expected):
    momentum = beta_optax.applied_momentum(_after_one_update(optimizer))
    assert float(momentum) == pytest.approx(expected, rel=1e-6)


def test_applied_momentum_none_without_momentum():
    assert beta_optax.applied_momentum(_after_one_update(optax.sgd(0.1, momentum=0.9))) is None
    assert beta_optax.applied_momentum(_after_one_update(optax.adam(0.1))) is None
