"""Tests for beta_optax._surgery: masked retraining that keeps unflagged leaves fixed."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.core import freeze

from beta_optax._paths import flatten_with_paths
from beta_optax._surgery import mask_param_fraction, surgical_optimizer

_STEPS = 5


def _params():
    rng = np.random.default_rng(0)
    return {
        "body": {
            "kernel": jnp.asarray(rng.normal(size=(4, 8)), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=(8,)), jnp.float32),
        },
        "head": {
            "kernel": jnp.asarray(rng.normal(size=(8, 3)), jnp.float32),
            "bias": jnp.asarray(rng.normal(size=(3,)), jnp.float32),
        },
    }


_HEAD_MASK = {
    "body": {"kernel": False, "bias": False},
    "head": {"kernel": True, "bias": True},
}


def _loss(params, x):
    hidden = jnp.tanh(x @ params["body"]["kernel"] + params["body"]["bias"])
    logits = hidden @ params["head"]["kernel"] + params["head"]["bias"]
    return jnp.mean(jnp.square(logits - 1.0))


def _inner_optimizer():
    # Weight decay inside the chain: it would move every leaf if the mask leaked.
    return optax.chain(optax.add_decayed_weights(1e-2), optax.sgd(0.05, momentum=0.9))


def _train(optimizer, params, steps=_STEPS):
    x = jnp.asarray(np.random.default_rng(1).normal(size=(16, 4)), jnp.float32)
    state = optimizer.init(params)

    @jax.jit
    def step(params, state):
        grads = jax.grad(_loss)(params, x)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
    return params, state


@pytest.mark.parametrize("mask_kind", ["pytree", "callable"])
def test_surgical_optimizer_frozen_leaves_bit_identical(mask_kind):
    params = _params()
    mask = _HEAD_MASK if mask_kind == "pytree" else (lambda tree: _HEAD_MASK)

    trained, _ = _train(surgical_optimizer(_inner_optimizer(), mask), params)

    before, after = flatten_with_paths(params), flatten_with_paths(trained)
    for path in ("body/kernel", "body/bias"):
        assert np.asarray(after[path]).tobytes() == np.asarray(before[path]).tobytes(), path
    for path in ("head/kernel", "head/bias"):
        assert not np.array_equal(after[path], before[path]), path


def test_surgical_optimizer_matches_inner_on_flagged_leaves():
    params = _params()
    trained, _ = _train(surgical_optimizer(_inner_optimizer(), _HEAD_MASK), params)

    # The same run with the body fixed by hand: optimize only the head.
    x = jnp.asarray(np.random.default_rng(1).normal(size=(16, 4)), jnp.float32)
    head_optimizer = _inner_optimizer()
    head, state = params["head"], head_optimizer.init(params["head"])
    for _ in range(_STEPS):
        grads = jax.grad(lambda head: _loss({"body": params["body"], "head": head}, x))(head)
        updates, state = head_optimizer.update(grads, state, head)
        head = optax.apply_updates(head, updates)

    for name in ("kernel", "bias"):
        np.testing.assert_allclose(trained["head"][name], head[name], rtol=1e-6, atol=1e-7)


def test_optax_masked_alone_moves_frozen_leaves():
    # The reason surgical_optimizer exists: optax.masked passes unmasked gradients through.
    params = _params()

    trained, _ = _train(optax.masked(_inner_optimizer(), _HEAD_MASK), params)

    assert not np.array_equal(trained["body"]["kernel"], params["body"]["kernel"])


def test_surgical_optimizer_no_state_for_frozen_leaves():
    params = _params()

    _, state = _train(surgical_optimizer(_inner_optimizer(), _HEAD_MASK), params, steps=1)

    is_masked = lambda leaf: isinstance(leaf, optax.MaskedNode)  # noqa: E731
    traces = [
        trace_state.trace
        for trace_state in jax.tree.leaves(state, is_leaf=lambda n: isinstance(n, optax.TraceState))
        if isinstance(trace_state, optax.TraceState)
    ]
    assert len(traces) == 1
    trace = traces[0]
    assert isinstance(trace["body"]["kernel"], optax.MaskedNode)
    assert isinstance(trace["body"]["bias"], optax.MaskedNode)
    assert trace["head"]["kernel"].shape == (8, 3)
    stored = [leaf for leaf in jax.tree.leaves(state, is_leaf=is_masked) if not is_masked(leaf)]
    stored_sizes = sorted(int(np.size(leaf)) for leaf in stored)
    # The head's momentum trace (24 + 3 elements) plus scalar counters, nothing for the body.
    assert 32 not in stored_sizes
    assert 8 not in stored_sizes
    assert 24 in stored_sizes


def test_surgical_optimizer_plain_dict_mask_for_frozen_dict():
    params = freeze(_params())
    mask = {"body": {"kernel": False, "bias": False}, "head": {"kernel": True, "bias": True}}
    optimizer = surgical_optimizer(optax.sgd(0.1), mask)
    grads = jax.tree.map(jnp.ones_like, params)

    updates, _ = optimizer.update(grads, optimizer.init(params), params)

    np.testing.assert_array_equal(updates["body"]["kernel"], 0.0)
    np.testing.assert_allclose(updates["head"]["kernel"], -0.1)


def test_surgical_optimizer_mismatched_mask_raises():
    mask = {"body": {"kernel": False}, "head": {"kernel": True, "bias": True}}
    optimizer = surgical_optimizer(optax.sgd(0.1), mask)

    with pytest.raises(ValueError, match=r"missing from `mask`: \['body/bias'\]"):
        optimizer.init(_params())


def test_surgical_optimizer_extra_mask_path_raises():
    mask = {**_HEAD_MASK, "tail": {"kernel": True}}
    optimizer = surgical_optimizer(optax.sgd(0.1), mask)

    with pytest.raises(ValueError, match=r"not in `params`: \['tail/kernel'\]"):
        optimizer.init(_params())


def test_surgical_optimizer_all_false_raises():
    mask = jax.tree.map(lambda _: False, _params())
    optimizer = surgical_optimizer(optax.sgd(0.1), mask)

    with pytest.raises(ValueError, match="nothing to retrain"):
        optimizer.init(_params())


def test_surgical_optimizer_non_boolean_mask_raises():
    mask = jax.tree.map(lambda _: 1, _params())
    optimizer = surgical_optimizer(optax.sgd(0.1), mask)

    with pytest.raises(ValueError, match="`mask` leaves must be booleans"):
        optimizer.init(_params())


def test_surgical_optimizer_numpy_bool_mask():
    mask = jax.tree.map(lambda flag: np.bool_(flag), _HEAD_MASK)

    trained, _ = _train(surgical_optimizer(optax.sgd(0.1), mask), _params(), steps=1)

    np.testing.assert_array_equal(trained["body"]["bias"], _params()["body"]["bias"])


def test_mask_param_fraction_counts_elements():
    fraction = mask_param_fraction(_HEAD_MASK, _params())

    assert fraction == pytest.approx((24 + 3) / (32 + 8 + 24 + 3))


def test_mask_param_fraction_all_false_is_zero():
    mask = jax.tree.map(lambda _: False, _params())

    assert mask_param_fraction(mask, _params()) == 0.0
