"""Tests for beta_optax._paths: parameter paths of pytrees."""

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from flax.core import freeze

from beta_optax._paths import flatten_with_paths, leaf_paths, path_str, unflatten_like


class _Pair(NamedTuple):
    weight: jax.Array
    bias: jax.Array


@jax.tree_util.register_pytree_node_class
class _Unkeyed:
    """A pytree registered without keys, so JAX names its children by FlattenedIndexKey."""

    def __init__(self, first, second):
        self.first, self.second = first, second

    def tree_flatten(self):
        return (self.first, self.second), None

    @classmethod
    def tree_unflatten(cls, aux_data, children):
        del aux_data
        return cls(*children)


class _TwoLayers(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(2, 3, rngs=rngs)
        self.layers = nnx.List([nnx.Linear(3, 1, rngs=rngs)])


class _LinenDense(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(2, name="head")(x)


def test_path_str_key_kinds():
    key_path = (
        jax.tree_util.DictKey("stage1"),
        jax.tree_util.GetAttrKey("conv"),
        jax.tree_util.SequenceKey(2),
        jax.tree_util.FlattenedIndexKey(0),
    )
    assert path_str(key_path) == "stage1/conv/2/0"


def test_path_str_drops_variable_value():
    key_path = (jax.tree_util.DictKey("l1"), jax.tree_util.GetAttrKey("value"))
    assert path_str(key_path) == "l1"


def test_path_str_keeps_inner_value():
    key_path = (jax.tree_util.GetAttrKey("value"), jax.tree_util.DictKey("w"))
    assert path_str(key_path) == "value/w"


def test_path_str_empty():
    assert path_str(()) == ""


_TREES = {
    "plain_dict": (
        {"b": {"kernel": np.ones(2)}, "a": np.zeros(3)},
        ["a", "b/kernel"],
    ),
    "frozen_dict": (
        freeze({"params": {"dense": {"kernel": np.ones((2, 2)), "bias": np.ones(2)}}}),
        ["params/dense/bias", "params/dense/kernel"],
    ),
    "tuple_and_list": (
        (np.ones(1), [np.ones(2), np.ones(3)]),
        ["0", "1/0", "1/1"],
    ),
    "named_tuple": (
        _Pair(weight=np.ones(2), bias=np.zeros(2)),
        ["bias", "weight"],
    ),
    "unkeyed_node": (
        {"node": _Unkeyed(np.ones(1), np.ones(2))},
        ["node/0", "node/1"],
    ),
}


@pytest.mark.parametrize("name", list(_TREES), ids=list(_TREES))
def test_flatten_with_paths_sorted_keys(name):
    tree, expected_paths = _TREES[name]

    flat = flatten_with_paths(tree)

    assert list(flat) == expected_paths


@pytest.mark.parametrize("name", list(_TREES), ids=list(_TREES))
def test_unflatten_like_round_trip(name):
    tree, _ = _TREES[name]

    rebuilt = unflatten_like(tree, flatten_with_paths(tree))

    assert jax.tree.structure(rebuilt) == jax.tree.structure(tree)
    for before, after in zip(jax.tree.leaves(tree), jax.tree.leaves(rebuilt), strict=True):
        assert before is after


def test_flatten_with_paths_nnx_state():
    state = nnx.state(_TwoLayers(nnx.Rngs(0)))

    flat = flatten_with_paths(state)

    assert list(flat) == ["l1/bias", "l1/kernel", "layers/0/bias", "layers/0/kernel"]
    assert flat["l1/kernel"].shape == (2, 3)


def test_unflatten_like_nnx_state_keeps_variables():
    state = nnx.state(_TwoLayers(nnx.Rngs(0)))
    flags = {path: path.endswith("kernel") for path in flatten_with_paths(state)}

    mask = unflatten_like(state, flags)

    assert jax.tree.structure(mask) == jax.tree.structure(state)
    assert isinstance(mask, nnx.State)
    assert mask["l1"]["kernel"].get_value() is True
    assert mask["l1"]["bias"].get_value() is False


def test_flatten_with_paths_linen_variables():
    variables = _LinenDense().init(jax.random.key(0), jnp.ones((1, 3)))

    flat = flatten_with_paths(variables)

    assert list(flat) == ["params/head/bias", "params/head/kernel"]


def test_unflatten_like_missing_path():
    tree = {"a": np.ones(1), "b": np.ones(1)}

    with pytest.raises(ValueError, match=r"missing from `mapping`: \['b'\]"):
        unflatten_like(tree, {"a": 1})


def test_unflatten_like_extra_path():
    tree = {"a": np.ones(1)}

    with pytest.raises(ValueError, match=r"not in `tree`: \['c'\]"):
        unflatten_like(tree, {"a": 1, "c": 2})


def test_leaf_paths_duplicate_raises():
    tree = {"a/b": np.ones(1), "a": {"b": np.ones(1)}}

    with pytest.raises(ValueError, match=r"share the parameter paths \['a/b'\]"):
        leaf_paths(tree)


def test_leaf_paths_tree_order():
    tree = {"b": np.ones(1), "a": (np.ones(1), np.ones(1))}

    assert leaf_paths(tree) == ["a/0", "a/1", "b"]
