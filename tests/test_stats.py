"""Tests for beta_optax._stats: per-layer statistics and layer groups."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from beta_optax._stats import (
    assign_groups,
    format_parameter_overview,
    group_norms,
    group_sizes,
    layer_norms,
    parameter_overview,
)


def _tree():
    rng = np.random.default_rng(0)
    return {
        "stage1": {"conv": {"kernel": rng.normal(size=(3, 3, 2, 4)).astype(np.float32)}},
        "stage10": {"conv": {"kernel": rng.normal(size=(3, 3, 4, 4)).astype(np.float32)}},
        "head": {
            "kernel": rng.normal(size=(4, 10)).astype(np.float32),
            "bias": rng.normal(size=(10,)).astype(np.float32),
        },
    }


def _first_component(path):
    return path.split("/")[0]


def test_layer_norms_match_numpy():
    tree = _tree()

    norms = layer_norms(tree)

    assert list(norms) == ["head/bias", "head/kernel", "stage1/conv/kernel", "stage10/conv/kernel"]
    expected = np.linalg.norm(tree["head"]["kernel"].ravel())
    np.testing.assert_allclose(norms["head/kernel"], expected, rtol=1e-6)
    assert norms["head/kernel"].dtype == jnp.float32


def test_layer_norms_under_jit():
    tree = _tree()

    eager = layer_norms(tree)
    jitted = jax.jit(layer_norms)(tree)

    for path in eager:
        np.testing.assert_allclose(jitted[path], eager[path], rtol=1e-6)


def test_layer_norms_bfloat16_computed_in_float32():
    tree = {"w": jnp.full((1000,), 3.0, dtype=jnp.bfloat16)}

    norms = layer_norms(tree)

    assert norms["w"].dtype == jnp.float32
    np.testing.assert_allclose(norms["w"], 3.0 * np.sqrt(1000), rtol=1e-6)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_group_norms_callable(jit):
    tree = _tree()
    function = jax.jit(group_norms, static_argnums=1) if jit else group_norms

    norms = function(tree, _first_component)

    head = np.concatenate([tree["head"]["kernel"].ravel(), tree["head"]["bias"]])
    np.testing.assert_allclose(norms["head"], np.linalg.norm(head), rtol=1e-6)
    np.testing.assert_allclose(
        norms["stage1"], np.linalg.norm(tree["stage1"]["conv"]["kernel"].ravel()), rtol=1e-6
    )
    assert list(norms) == ["head", "stage1", "stage10"]


def test_group_norms_mapping_order():
    tree = _tree()
    groups = {"body": ["stage1", "stage10"], "classifier": "head"}

    norms = group_norms(tree, groups)

    assert list(norms) == ["body", "classifier"]
    body = np.concatenate(
        [tree["stage1"]["conv"]["kernel"].ravel(), tree["stage10"]["conv"]["kernel"].ravel()]
    )
    np.testing.assert_allclose(norms["body"], np.linalg.norm(body), rtol=1e-6)


def test_group_sizes_counts_elements():
    sizes = group_sizes(_tree(), _first_component)

    assert sizes == {"head": 50, "stage1": 72, "stage10": 144}


def test_group_sizes_shape_dtype_struct():
    tree = jax.eval_shape(lambda: {"a": jnp.zeros((2, 3)), "b": jnp.zeros(4)})

    assert group_sizes(tree, None) == {"a": 6, "b": 4}


def test_assign_groups_prefix_respects_components():
    paths = ["stage1/conv/kernel", "stage10/conv/kernel"]

    group_of, names = assign_groups(paths, {"first": ["stage1"], "tenth": ["stage10"]})

    assert group_of == {"stage1/conv/kernel": "first", "stage10/conv/kernel": "tenth"}
    assert names == ["first", "tenth"]


def test_assign_groups_none_each_path():
    group_of, names = assign_groups(["b", "a"], None)

    assert group_of == {"b": "b", "a": "a"}
    assert names == ["b", "a"]


def test_assign_groups_unknown_prefix_raises():
    with pytest.raises(ValueError, match=r"Unknown group prefix 'stage5' in `groups\['late'\]`"):
        assign_groups(["stage1/w"], {"early": ["stage1"], "late": ["stage5"]})


def test_assign_groups_overlap_raises():
    with pytest.raises(ValueError, match=r"'stage1/w' matches prefixes of two groups"):
        assign_groups(["stage1/w"], {"a": ["stage1"], "b": ["stage1/w"]})


def test_assign_groups_unmatched_raises():
    with pytest.raises(ValueError, match=r"\['head/w'\] match no prefix"):
        assign_groups(["stage1/w", "head/w"], {"body": ["stage1"]})


def test_assign_groups_empty_prefix_raises():
    with pytest.raises(ValueError, match="empty prefix"):
        assign_groups(["a"], {"all": [""]})


def test_assign_groups_non_string_name_raises():
    with pytest.raises(TypeError, match="must return a group name"):
        assign_groups(["a"], lambda path: 3)


def test_parameter_overview_rows():
    tree = _tree()

    rows = parameter_overview(tree)

    assert [row.path for row in rows] == list(layer_norms(tree))
    kernel = tree["head"]["kernel"].astype(np.float64)
    row = rows[1]
    assert row.path == "head/kernel"
    assert row.shape == (4, 10)
    assert row.size == 40
    np.testing.assert_allclose(row.norm, np.linalg.norm(kernel.ravel()), rtol=1e-12)
    np.testing.assert_allclose(row.mean, kernel.mean(), rtol=1e-12)
    np.testing.assert_allclose(row.std, kernel.std(), rtol=1e-12)


def test_format_parameter_overview_total():
    text = format_parameter_overview(parameter_overview(_tree()))

    lines = text.splitlines()
    assert lines[0].split() == ["path", "shape", "size", "norm", "mean", "std"]
    assert any(line.startswith("stage10/conv/kernel") for line in lines)
    assert lines[-1].split() == ["total", "266"]
