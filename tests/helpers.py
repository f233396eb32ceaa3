"""Small helpers shared by the optimizer tests."""

import jax
import jax.numpy as jnp
import numpy as np
import optax


def run_optimizer(optimizer, params, grads_sequence, *, jit=True):
    """Applies `optimizer` to a fixed sequence of gradients; returns (params history, states)."""
    state = optimizer.init(params)
    update = jax.jit(optimizer.update) if jit else optimizer.update
    history, states = [], []
    for grads in grads_sequence:
        updates, state = update(grads, state, params)
        params = optax.apply_updates(params, updates)
        history.append(params)
        states.append(state)
    return history, states


def random_gradients(steps, shape, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) for _ in range(steps)]


def as_tree_sequence(arrays, name="w"):
    return [{name: jnp.asarray(a)} for a in arrays]


def assert_trees_equal(actual, expected):
    """Asserts bit-identical leaves and equal tree structures."""
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def assert_trees_close(actual, expected, rtol=1e-6, atol=0.0):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for a, b in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(
            np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=rtol, atol=atol
        )


def count_compilations(function):
    """Returns how many distinct compilations a jitted function has cached."""
    return function._cache_size()


def momentum_of(state):
    return np.asarray(jnp.asarray(state), np.float32)
