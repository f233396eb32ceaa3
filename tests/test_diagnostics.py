"""Tests for beta_optax._diagnostics: scoring, ranking and flagging layer groups."""

import json
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from beta_optax._diagnostics import (
    Diagnosis,
    append_history,
    count_problem_groups,
    diagnose,
    history_entry,
    load_history,
)
from beta_optax._paths import flatten_with_paths, unflatten_like
from beta_optax._surgery import surgical_optimizer

# Parameter shapes of a small ResNet-like network in its seven layer groups.
_SHAPES = {
    "stem_conv/kernel": (3, 3, 3, 8),
    "stem_norm/scale": (8,),
    "stem_norm/bias": (8,),
    "stage1_block0/conv1/kernel": (3, 3, 8, 8),
    "stage1_block0/norm1/scale": (8,),
    "stage2_block0/conv1/kernel": (3, 3, 8, 16),
    "stage2_block0/norm1/scale": (16,),
    "stage3_block0/conv1/kernel": (3, 3, 16, 32),
    "stage3_block0/norm1/scale": (32,),
    "stage4_block0/conv1/kernel": (3, 3, 32, 64),
    "stage4_block0/norm1/scale": (64,),
    "head/kernel": (64, 10),
    "head/bias": (10,),
}
_GROUPS = ["stem_conv", "stem_norm", "stage1", "stage2", "stage3", "stage4", "head"]
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _resnet_group(path):
    first = path.split("/")[0]
    return first.split("_block")[0]


def _size(path):
    return int(np.prod(_SHAPES[path]))


def _synthetic_history(seed, planted_rms, *, entries=6, noise=0.3):
    """Builds history records whose per-parameter RMS gradient is 1 except in planted groups."""
    rng = np.random.default_rng(seed)
    history = []
    for step in range(entries):
        norms = {}
        for path in _SHAPES:
            rms = planted_rms.get(_resnet_group(path), 1.0) * rng.lognormal(0.0, noise)
            norms[path] = float(rms * np.sqrt(_size(path)))
        history.append(
            {
                "step": 100 * step,
                "layer_norms": norms,
                "total_norm": float(rng.uniform(50.0, 60.0)),
                "layer_sizes": {path: _size(path) for path in _SHAPES},
            }
        )
    return history


def _hand_history():
    return [
        {
            "step": 10,
            "layer_norms": {"a/w": 3.0, "a/b": 4.0, "b/w": 1.0},
            "total_norm": 10.0,
            "layer_sizes": {"a/w": 20, "a/b": 5, "b/w": 4},
        },
        {
            "step": 20,
            "layer_norms": {"a/w": 0.0, "a/b": 2.0, "b/w": 6.0},
            "total_norm": 4.0,
            "layer_sizes": {"a/w": 20, "a/b": 5, "b/w": 4},
        },
    ]


@pytest.mark.parametrize("normalization", ["per_parameter", "relative"])
@pytest.mark.parametrize("seed", range(5), ids=[f"seed{seed}" for seed in range(5)])
def test_diagnose_ranks_planted_group_first(seed, normalization):
    history = _synthetic_history(seed, {"stage3": 10.0})

    diagnosis = diagnose(history, groups=_resnet_group, normalization=normalization)

    assert diagnosis.ranking[0] == "stage3"
    if normalization == "per_parameter":
        assert diagnosis.problem_groups == ("stage3",)


@pytest.mark.parametrize("seed", range(5), ids=[f"seed{seed}" for seed in range(5)])
def test_diagnose_flags_three_planted_groups(seed):
    planted = {"stem_norm": 6.0, "stage3": 9.0, "head": 12.0}
    history = _synthetic_history(seed, planted)

    diagnosis = diagnose(history, groups=_resnet_group)

    assert diagnosis.problem_groups == ("head", "stage3", "stem_norm")
    assert diagnosis.rule == "largest_log_gap"
    assert set(diagnosis.groups) == set(_GROUPS)


def test_diagnose_group_mapping_order():
    history = _synthetic_history(0, {"head": 10.0})
    groups = {name: [name] for name in ["stem_conv", "stem_norm", "head"]}
    groups["body"] = ["stage1_block0", "stage2_block0", "stage3_block0", "stage4_block0"]

    diagnosis = diagnose(history, groups=groups)

    assert diagnosis.groups == ("stem_conv", "stem_norm", "head", "body")
    assert diagnosis.problem_groups == ("head",)


@pytest.mark.parametrize("normalization", ["raw", "per_parameter", "relative"])
def test_diagnose_normalization_matches_numpy(normalization):
    history = _hand_history()
    raw = np.array([[np.hypot(3.0, 4.0), 1.0], [np.hypot(0.0, 2.0), 6.0]])
    divisors = {
        "raw": np.ones((2, 2)),
        "per_parameter": np.sqrt(np.array([[25.0, 4.0], [25.0, 4.0]])),
        "relative": np.array([[10.0, 10.0], [4.0, 4.0]]),
    }
    expected = raw / divisors[normalization]

    # top_k=1 because the raw scores of the two groups tie (3.5 each).
    diagnosis = diagnose(history, groups=lambda path: path[0], normalization=normalization, top_k=1)

    assert diagnosis.groups == ("a", "b")
    np.testing.assert_allclose(diagnosis.score_matrix(), expected, rtol=1e-12)
    np.testing.assert_allclose(
        [diagnosis.scores["a"], diagnosis.scores["b"]], expected.mean(axis=0), rtol=1e-12
    )
    assert diagnosis.steps == (10, 20)


def test_diagnose_each_path_own_group():
    diagnosis = diagnose(_hand_history(), normalization="raw")

    assert diagnosis.groups == ("a/b", "a/w", "b/w")
    np.testing.assert_allclose(diagnosis.scores["b/w"], 3.5, rtol=1e-12)
    assert diagnosis.ranking[0] == "b/w"


def test_diagnose_flat_norm_dicts_with_params():
    history = [{"a": 3.0, "b": jnp.float32(1.0)}, {"a": 5.0, "b": np.float64(1.0)}]
    params = {"a": jnp.zeros((4,)), "b": jnp.zeros((1,))}

    diagnosis = diagnose(history, params=params)

    np.testing.assert_allclose(diagnosis.scores["a"], 2.0, rtol=1e-12)
    assert diagnosis.group_sizes == {"a": 4, "b": 1}
    assert diagnosis.steps == (0, 1)


def test_diagnose_top_k_overrides_rule():
    history = _synthetic_history(0, {"stage3": 10.0})

    diagnosis = diagnose(history, groups=_resnet_group, top_k=3)

    assert diagnosis.problem_groups == diagnosis.ranking[:3]
    assert diagnosis.rule == "top_k"


def test_diagnose_param_fraction():
    diagnosis = diagnose(_hand_history(), groups=lambda path: path[0], top_k=1)

    assert diagnosis.problem_groups == ("b",)
    assert diagnosis.param_fraction == pytest.approx(4 / 29)


def test_diagnose_param_fraction_unknown_without_sizes():
    diagnosis = diagnose([{"a": 1.0, "b": 2.0}], normalization="raw")

    assert diagnosis.group_sizes is None
    assert diagnosis.param_fraction is None


@pytest.mark.parametrize(
    ("scores", "expected"),
    [
        ([10.0, 1.0, 1.1, 0.9, 1.05, 0.95, 1.0], 1),
        ([8.0, 7.0, 9.0, 1.0, 1.0, 1.0, 1.0], 3),
        ([5.0, 4.0, 3.0, 2.5, 2.0, 0.01], 2),
        ([100.0, 50.0, 1.0, 1.0, 1.0], 2),
        ([3.0, 0.0, 0.0], 1),
        ([5.0, 4.0, 0.0, 0.0], 2),
        ([2.0], 1),
        ([1.0, 2.0], 1),
        ([0.0, 0.0, 0.0], 0),
    ],
    ids=[
        "one_outlier",
        "three_outliers",
        "near_zero_tail_ignored",
        "ratio_not_difference",
        "gap_to_zero",
        "two_above_zeros",
        "single_group",
        "two_groups",
        "all_zero",
    ],
)
def test_count_problem_groups_designed_vectors(scores, expected):
    assert count_problem_groups(scores) == expected


def test_count_problem_groups_scale_invariant():
    scores = np.array([8.0, 7.0, 9.0, 1.0, 1.2, 0.8, 1.0])

    assert count_problem_groups(scores * 1e-6) == count_problem_groups(scores)


def test_count_problem_groups_tie_warns():
    with pytest.warns(UserWarning, match="no layer group scores above the others"):
        count = count_problem_groups([1.0, 1.0, 1.0, 1.0, 0.5])

    assert count == 5


def test_diagnose_all_zero_warns():
    with pytest.warns(UserWarning, match="Every group score is 0"):
        diagnosis = diagnose([{"a": 0.0, "b": 0.0}], normalization="raw")

    assert diagnosis.problem_groups == ()


def _bad_history_cases():
    good = _hand_history()
    mismatched = [good[0], {**good[1], "layer_norms": {"a/w": 1.0, "a/b": 1.0, "c/w": 1.0}}]
    with_nan = [good[0], {**good[1], "layer_norms": {**good[1]["layer_norms"], "b/w": np.nan}}]
    with_inf = [{**good[0], "layer_norms": {**good[0]["layer_norms"], "a/b": np.inf}}]
    negative = [{"a": -1.0}]
    no_total = [{"layer_norms": {"a": 1.0}, "layer_sizes": {"a": 1}}]
    return {
        "empty": ([], {}, "`params_grads_history` is empty"),
        "mismatched_paths": (
            mismatched,
            {},
            r"history entry 1 .*missing from history entry 1: \['b/w'\].*not in history entry 0: "
            r"\['c/w'\]",
        ),
        "nan": (
            with_nan,
            {},
            r"History entry 1 \(step 20\) has the non-finite norm nan at the path 'b/w'",
        ),
        "inf": (
            with_inf,
            {},
            r"History entry 0 \(step 10\) has the non-finite norm inf at the path 'a/b'",
        ),
        "negative": (negative, {"normalization": "raw"}, "negative norm -1.0 at the path 'a'"),
        "unknown_group": (
            good,
            {"groups": {"a": ["a"], "b": ["b"], "c": ["stage9"]}},
            r"Unknown group prefix 'stage9' in `groups\['c'\]`",
        ),
        "top_k_zero": (good, {"top_k": 0}, r"`top_k` must be between 1 and .* got top_k=0"),
        "top_k_too_large": (
            good,
            {"top_k": 4},
            r"`top_k` must be between 1 and .*\(3\), got top_k=4",
        ),
        "unknown_normalization": (good, {"normalization": "l1"}, "Unknown `normalization` 'l1'"),
        "relative_without_total": (
            no_total,
            {"normalization": "relative"},
            r"needs a positive total_norm, but history entry 0 \(step 0\) has total_norm=None",
        ),
        "per_parameter_without_sizes": ([{"a": 1.0}], {}, "history records no 'layer_sizes'"),
        "unknown_record_key": (
            [{"layer_norms": {"a": 1.0}, "steps": 3}],
            {},
            r"History entry 0 has unknown keys \['steps'\]",
        ),
        "params_missing_paths": (
            [{"a": 1.0, "b": 1.0}],
            {"params": {"a": np.ones(2)}},
            r"`params` has no leaves at the history paths \['b'\]",
        ),
    }


_BAD_CASES = _bad_history_cases()


@pytest.mark.parametrize("case", list(_BAD_CASES), ids=list(_BAD_CASES))
def test_diagnose_bad_history_raises(case):
    history, kwargs, message = _BAD_CASES[case]

    with pytest.raises(ValueError, match=message):
        diagnose(history, **kwargs)


def test_diagnose_single_entry_not_list_raises():
    with pytest.raises(TypeError, match="must be a sequence"):
        diagnose({"a": 1.0})


def test_diagnosis_json_round_trip():
    diagnosis = diagnose(_synthetic_history(1, {"stage2": 10.0}), groups=_resnet_group)

    restored = Diagnosis.from_json(diagnosis.to_json())

    assert restored == diagnosis
    assert restored.mask(_params_like_shapes()) == diagnosis.mask(_params_like_shapes())


def test_diagnosis_from_json_wrong_format_raises():
    with pytest.raises(ValueError, match="Not a serialized Diagnosis"):
        Diagnosis.from_json(json.dumps({"groups": []}))


def test_diagnosis_save_heatmap_png(tmp_path):
    diagnosis = diagnose(_synthetic_history(2, {"head": 10.0}, entries=12), groups=_resnet_group)
    path = tmp_path / "heatmap.png"

    diagnosis.save_heatmap(path)

    data = path.read_bytes()
    assert data[:8] == _PNG_SIGNATURE
    assert len(data) > 1000


def test_diagnosis_summary_lists_groups():
    diagnosis = diagnose(_synthetic_history(3, {"stage4": 10.0}), groups=_resnet_group)

    text = diagnosis.summary()

    lines = text.splitlines()
    assert re.match(r"1\s+stage4\s+\S+\s+\S+%\s+yes", lines[1])
    assert len(lines) == 1 + len(_GROUPS) + 1
    assert "1 of 7 groups flagged" in lines[-1]


def _params_like_shapes():
    return {path: np.zeros(shape, np.float32) for path, shape in _SHAPES.items()}


def test_diagnosis_mask_and_frozen_mask():
    diagnosis = diagnose(_synthetic_history(4, {"head": 10.0}), groups=_resnet_group)
    params = _params_like_shapes()

    mask = diagnosis.mask(params)
    frozen = diagnosis.frozen_mask(params)

    assert mask == {path: path.startswith("head/") for path in _SHAPES}
    assert frozen == {path: not flag for path, flag in mask.items()}


def test_diagnosis_mask_mismatched_params_raises():
    diagnosis = diagnose(_hand_history(), groups=lambda path: path[0])

    with pytest.raises(ValueError, match=r"missing from `params`: \['b/w'\]"):
        diagnosis.mask({"a": {"w": np.ones(20), "b": np.ones(5)}})


def test_history_entry_from_grads():
    grads = {"dense": {"kernel": jnp.full((2, 3), 2.0), "bias": jnp.zeros(3)}}
    total = {"dense": {"kernel": jnp.full((2, 3), 1.0), "bias": jnp.full(3, 1.0)}}

    entry = history_entry(7, grads, total)

    assert entry["step"] == 7
    assert entry["layer_norms"] == pytest.approx(
        {"dense/bias": 0.0, "dense/kernel": 2 * np.sqrt(6)}
    )
    assert entry["total_norm"] == pytest.approx(3.0)
    assert entry["layer_sizes"] == {"dense/bias": 3, "dense/kernel": 6}


def test_history_entry_both_totals_raises():
    grads = {"w": jnp.ones(2)}

    with pytest.raises(ValueError, match="either `total_grads` or `total_norm`"):
        history_entry(0, grads, grads, total_norm=1.0)


def test_history_file_round_trip(tmp_path):
    path = tmp_path / "history.jsonl"
    grads = {"w": jnp.ones(4), "b": jnp.full(2, 3.0)}
    entries = [history_entry(step, grads, total_norm=5.0) for step in (0, 50)]

    for entry in entries:
        append_history(path, entry)
    loaded = load_history(path)

    assert loaded == entries
    assert diagnose(loaded).steps == (0, 50)


def test_history_file_keeps_nan_for_diagnose(tmp_path):
    path = tmp_path / "history.jsonl"
    append_history(path, {"step": 3, "layer_norms": {"w": float("nan")}})

    with pytest.raises(ValueError, match=r"History entry 0 \(step 3\) has the non-finite norm"):
        diagnose(load_history(path), normalization="raw")


def test_load_history_invalid_line_raises(tmp_path):
    path = tmp_path / "history.jsonl"
    path.write_text('{"layer_norms": {"w": 1.0}}\n\n{"oops": 1}\n')

    with pytest.raises(ValueError, match="Line 3 of .* is not a history record"):
        load_history(path)


class _LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(8, name="body")(x))
        return nn.Dense(3, name="head")(x)


class _NnxNet(nnx.Module):
    def __init__(self, rngs):
        self.body = nnx.Linear(4, 8, rngs=rngs)
        self.head = nnx.Linear(8, 3, rngs=rngs)


def _linen_params():
    return _LinenNet().init(jax.random.key(0), jnp.ones((1, 4)))["params"]


def _nnx_params():
    return nnx.state(_NnxNet(nnx.Rngs(0)))


def _dict_params():
    rng = np.random.default_rng(0)
    return {
        "body": {"kernel": jnp.asarray(rng.normal(size=(4, 8)), jnp.float32), "bias": jnp.zeros(8)},
        "head": {"kernel": jnp.asarray(rng.normal(size=(8, 3)), jnp.float32), "bias": jnp.zeros(3)},
    }


_PARAM_BUILDERS = {"linen": _linen_params, "nnx_state": _nnx_params, "plain_dict": _dict_params}


def _head_heavy_grads(params, scale):
    """Builds gradients equal to `scale` in the head and 0.01 elsewhere."""
    values = {
        path: jnp.full(leaf.shape, scale if path.startswith("head") else 0.01, jnp.float32)
        for path, leaf in flatten_with_paths(params).items()
    }
    return unflatten_like(params, values)


@pytest.mark.parametrize("kind", list(_PARAM_BUILDERS), ids=list(_PARAM_BUILDERS))
def test_diagnose_gradient_pytrees_mask_structure(kind):
    params = _PARAM_BUILDERS[kind]()
    history = [_head_heavy_grads(params, scale) for scale in (1.0, 2.0)]

    diagnosis = diagnose(history, groups=lambda path: path.split("/")[0])
    mask = diagnosis.mask(params)

    assert diagnosis.problem_groups == ("head",)
    assert jax.tree.structure(mask) == jax.tree.structure(params)
    assert flatten_with_paths(mask) == {
        "body/bias": False,
        "body/kernel": False,
        "head/bias": True,
        "head/kernel": True,
    }


@pytest.mark.parametrize("kind", list(_PARAM_BUILDERS), ids=list(_PARAM_BUILDERS))
@pytest.mark.parametrize("wrapper", ["optax_masked", "surgical_optimizer"])
def test_diagnosis_mask_drives_optimizer(kind, wrapper):
    params = _PARAM_BUILDERS[kind]()
    grads = _head_heavy_grads(params, 1.0)
    diagnosis = diagnose([grads], groups=lambda path: path.split("/")[0])
    mask = diagnosis.mask(params)
    inner = optax.sgd(0.1)
    if wrapper == "optax_masked":
        # optax.masked passes unmasked updates through, so zero them explicitly.
        optimizer = optax.chain(
            optax.masked(inner, mask),
            optax.masked(optax.set_to_zero(), diagnosis.frozen_mask(params)),
        )
    else:
        optimizer = surgical_optimizer(inner, mask)

    state = optimizer.init(params)
    updates, state = jax.jit(optimizer.update)(grads, state, params)
    new_params = optax.apply_updates(params, updates)

    before, after = flatten_with_paths(params), flatten_with_paths(new_params)
    for path in before:
        if path.startswith("head"):
            assert not np.array_equal(after[path], before[path]), path
        else:
            np.testing.assert_array_equal(after[path], before[path])
