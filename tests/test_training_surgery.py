"""Tests of surgical correction: frozen groups stay bit-identical, counts match the list."""

import jax
import numpy as np
import pytest

from beta_optax import _paths
from beta_optax.training import surgery, train
from beta_optax.training.config import TrainConfig
from beta_optax.training.models import resnet_group
from beta_optax.training.optimizers import create_optimizer

_GROUPS = ("stage4", "head")


@pytest.fixture(scope="module")
def corrected():
    config = TrainConfig(
        dataset="synthetic",
        model="resnet_tiny",
        width_multiplier=1 / 16,
        method="beta_sgd",
        batch_size=16,
        num_steps=4,
        eval_batch_size=32,
        synthetic_examples=(64, 32),
        synthetic_image_shape=(8, 8, 3),
    )
    mesh = train.create_mesh()
    dataset = train.load_data(config)
    model = train.create_model(config, dataset.num_classes)
    spec = create_optimizer(config, config.num_steps)
    state = train.create_train_state(config, model, spec, dataset.image_shape, mesh)
    device_data = train.put_dataset(dataset, mesh, config.eval_batch_size)
    before = jax.device_get((state.params, state.batch_stats))
    result = surgery.surgical_correct(
        config, state, _GROUPS, device_data=device_data, num_steps=3, learning_rate=0.05
    )
    return before, result


def _split_by_group(tree):
    flagged, frozen = {}, {}
    for path, leaf in _paths.flatten_with_paths(tree).items():
        (flagged if resnet_group(path) in _GROUPS else frozen)[path] = np.asarray(leaf)
    return flagged, frozen


@pytest.mark.parametrize("collection", ["params", "batch_stats"])
def test_surgical_correct_frozen_groups_bit_identical(corrected, collection):
    (params, batch_stats), result = corrected
    before = params if collection == "params" else batch_stats
    after = getattr(result.corrected_state, collection)
    _, frozen_before = _split_by_group(before)
    _, frozen_after = _split_by_group(jax.device_get(after))
    assert frozen_before
    for path, leaf in frozen_before.items():
        np.testing.assert_array_equal(frozen_after[path], leaf, err_msg=path)


@pytest.mark.parametrize("collection", ["params", "batch_stats"])
def test_surgical_correct_flagged_groups_change(corrected, collection):
    (params, batch_stats), result = corrected
    before = params if collection == "params" else batch_stats
    flagged_before, _ = _split_by_group(before)
    flagged_after, _ = _split_by_group(jax.device_get(getattr(result.corrected_state, collection)))
    changed = [
        path
        for path, leaf in flagged_before.items()
        if not np.array_equal(leaf, flagged_after[path])
    ]
    assert len(changed) == len(flagged_before)


def test_surgical_correct_counts_match_example_list(corrected):
    _, result = corrected
    rows = result.examples
    fixed = sum(r["pred_before"] != r["label"] and r["pred_after"] == r["label"] for r in rows)
    introduced = sum(r["pred_before"] == r["label"] and r["pred_after"] != r["label"] for r in rows)
    assert result.surgical.fixed == fixed
    assert result.surgical.introduced == introduced
    assert result.surgical.net == fixed - introduced
    wrong_before = sum(r["pred_before"] != r["label"] for r in rows)
    wrong_after = sum(r["pred_after"] != r["label"] for r in rows)
    assert result.accuracy_before == pytest.approx(1 - wrong_before / result.num_test)
    assert result.surgical.accuracy_after == pytest.approx(1 - wrong_after / result.num_test)


def test_surgical_correct_reports_full_retrain(corrected):
    _, result = corrected
    assert result.full is not None
    assert result.full.param_fraction == 1.0
    assert 0.0 < result.surgical.param_fraction < 1.0
    assert result.full.net == result.full.fixed - result.full.introduced
    assert "full model" in result.table()


def test_compare_predictions_counts():
    labels = np.array([0, 1, 2, 3])
    fixed, introduced, rows = surgery.compare_predictions(
        labels, np.array([1, 1, 2, 0]), np.array([0, 2, 2, 0])
    )
    assert (fixed, introduced) == (1, 1)
    assert [row["index"] for row in rows] == [0, 1, 3]


@pytest.mark.parametrize(
    "groups, match", [((), "empty"), (("stage9",), "own no parameter")], ids=["empty", "unknown"]
)
def test_surgical_correct_rejects_bad_groups(corrected, groups, match):
    (params, _), result = corrected
    with pytest.raises(ValueError, match=match):
        surgery.surgical_correct(TrainConfig(), result.corrected_state, groups, num_steps=1)
