"""The benchmark's learning-rate schedule and its five optimizers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from beta_optax.training import optimizers
from beta_optax.training.config import METHODS, TrainConfig


def test_learning_rate_warms_up_then_decays_to_zero():
    schedule = optimizers.create_learning_rate_fn(0.1, 100, 0.1)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(0.05)
    assert float(schedule(10)) == pytest.approx(0.1)
    assert float(schedule(55)) == pytest.approx(0.05, rel=1e-5)
    assert float(schedule(100)) == pytest.approx(0.0, abs=1e-9)
    assert float(schedule(150)) == pytest.approx(0.0, abs=1e-9)


def test_learning_rate_without_warmup_starts_at_peak():
    schedule = optimizers.create_learning_rate_fn(0.2, 10, 0.0)
    assert float(schedule(0)) == pytest.approx(0.2)


def test_learning_rate_rejects_zero_steps():
    with pytest.raises(ValueError, match="`num_steps`"):
        optimizers.create_learning_rate_fn(0.1, 0, 0.1)


def test_onecycle_momentum_mirrors_learning_rate():
    schedule = optimizers.create_learning_rate_fn(0.1, 100, 0.1)
    momentum = optimizers.onecycle_momentum_fn(schedule, 0.1)
    assert float(momentum(0)) == pytest.approx(0.95)
    assert float(momentum(10)) == pytest.approx(0.85)
    assert float(momentum(100)) == pytest.approx(0.95)


def test_decay_mask_selects_kernels_only():
    params = {"conv": {"kernel": jnp.ones((3, 3, 1, 4))}, "norm": {"scale": jnp.ones(4)}}
    mask = optimizers.decay_mask(params)
    assert mask == {"conv": {"kernel": True}, "norm": {"scale": False}}


@pytest.mark.parametrize("method", METHODS)
def test_every_method_updates_and_reports_momentum(method):
    config = TrainConfig(method=method, warmup_fraction=0.1)
    spec = optimizers.create_optimizer(config, num_steps=20)
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
    state = spec.tx.init(params)

    @jax.jit
    def update(state):
        grads = jax.tree.map(jnp.ones_like, params)
        updates, state = spec.tx.update(grads, state, params)
        return updates, state, optimizers.reported_momentum(spec, state)

    for _ in range(3):
        updates, state, momentum = update(state)
    assert all(np.all(np.isfinite(leaf)) for leaf in jax.tree.leaves(updates))
    assert 0.0 <= float(momentum) < 1.0


def test_adam_peak_differs_from_sgd_peak():
    assert TrainConfig(method="adam").peak_learning_rate == 1e-3
    assert TrainConfig(method="hybrid").peak_learning_rate == 0.1


def test_config_rejects_unknown_method():
    with pytest.raises(ValueError, match="`method`='lion'"):
        TrainConfig(method="lion")
