"""Checkpoints: save/restore round trip and kill-and-resume giving bit-identical parameters."""

import jax
import numpy as np
import pytest

from beta_optax.training import loop
from beta_optax.training.checkpoint import Checkpointer
from beta_optax.training.config import TrainConfig


class SimulatedKill(Exception):
    """Raised by the wrapped train step, as if the process died at that point."""


def tiny_config(**changes) -> TrainConfig:
    config = TrainConfig(
        dataset="synthetic",
        model="resnet_tiny",
        width_multiplier=1 / 16,
        method="beta_sgd",
        batch_size=32,
        num_steps=10,
        log_every_steps=1,
        eval_every_steps=5,
        eval_batch_size=64,
        checkpoint_every_steps=3,
        checkpoints_to_keep=5,
    )
    return config.replace(**changes)


def kill_after(num_calls: int):
    """Wrap a train step so that call number `num_calls + 1` raises SimulatedKill."""

    def wrap(train_fn):
        calls = 0

        def killing_train_fn(*args):
            nonlocal calls
            calls += 1
            if calls > num_calls:
                raise SimulatedKill
            return train_fn(*args)

        return killing_train_fn

    return wrap


def assert_trees_equal(actual, expected):
    actual_leaves, actual_tree = jax.tree.flatten(actual)
    expected_leaves, expected_tree = jax.tree.flatten(expected)
    assert actual_tree == expected_tree
    for actual_leaf, expected_leaf in zip(actual_leaves, expected_leaves, strict=True):
        assert np.array_equal(np.asarray(actual_leaf), np.asarray(expected_leaf))


@pytest.mark.parametrize("method", ["beta_sgd", "onecycle"])
def test_resume_after_kill_is_bit_identical(tmp_path, method):
    config = tiny_config(method=method)
    uninterrupted = loop.train_and_evaluate(config, tmp_path / "uninterrupted")

    # Killed during step 8: steps 7 and 8 after the checkpoint at step 6 are lost and redone.
    with pytest.raises(SimulatedKill):
        loop.train_and_evaluate(config, tmp_path / "killed", wrap_train_fn=kill_after(7))
    assert Checkpointer(tmp_path / "killed" / "checkpoints").latest_step() == 6
    resumed = loop.train_and_evaluate(config, tmp_path / "killed", resume=True)

    assert int(resumed.state.step) == config.num_steps
    assert_trees_equal(resumed.state.arrays(), uninterrupted.state.arrays())
    losses = [row["train_loss"] for row in uninterrupted.rows if "train_loss" in row]
    resumed_losses = [row["train_loss"] for row in resumed.rows if "train_loss" in row]
    assert resumed_losses == losses


def test_resume_without_flag_raises(tmp_path):
    config = tiny_config(num_steps=3)
    loop.train_and_evaluate(config, tmp_path)
    with pytest.raises(ValueError, match="resume"):
        loop.train_and_evaluate(config, tmp_path)


def test_resume_of_finished_run_keeps_state(tmp_path):
    config = tiny_config(num_steps=3)
    first = loop.train_and_evaluate(config, tmp_path)
    again = loop.train_and_evaluate(config, tmp_path, resume=True)
    assert_trees_equal(again.state.arrays(), first.state.arrays())
    assert [row["step"] for row in again.rows] == [row["step"] for row in first.rows]


def test_checkpointer_round_trip(tmp_path):
    checkpointer = Checkpointer(tmp_path, max_to_keep=2)
    arrays = {"weights": jax.numpy.arange(6.0).reshape(2, 3), "count": jax.numpy.int32(4)}
    for step in (1, 2, 3):
        checkpointer.save(step, jax.tree.map(lambda x, s=step: x * s, arrays), {"seconds": step})
    assert checkpointer.all_steps() == [2, 3]

    restored, metadata = checkpointer.restore(3, arrays)
    checkpointer.close()
    assert metadata == {"seconds": 3}
    assert_trees_equal(restored, jax.tree.map(lambda x: x * 3, arrays))
    assert restored["count"].dtype == np.int32


def test_checkpointer_rejects_zero_to_keep(tmp_path):
    with pytest.raises(ValueError, match="`max_to_keep`"):
        Checkpointer(tmp_path, max_to_keep=0)
