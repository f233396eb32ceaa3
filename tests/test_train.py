"""The train and eval steps, the loop's NaN stop, and data parallelism over 4 host devices."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from beta_optax.training import augment, loop, train
from beta_optax.training.checkpoint import Checkpointer
from beta_optax.training.config import TrainConfig
from beta_optax.training.optimizers import create_optimizer


def tiny_config(**changes) -> TrainConfig:
    config = TrainConfig(
        dataset="synthetic",
        model="resnet_tiny",
        width_multiplier=1 / 16,
        batch_size=32,
        num_steps=6,
        log_every_steps=1,
        eval_every_steps=3,
        eval_batch_size=64,
        checkpoint_every_steps=2,
        checkpoints_to_keep=5,
    )
    return config.replace(**changes)


@pytest.fixture(scope="module")
def setup():
    config = tiny_config(synthetic_examples=(64, 100))
    mesh = train.create_mesh()
    dataset = train.load_data(config)
    spec = create_optimizer(config, config.num_steps)
    model = train.create_model(config, dataset.num_classes)
    state = train.create_train_state(config, model, spec, dataset.image_shape, mesh)
    device_data = train.put_dataset(dataset, mesh, config.eval_batch_size)
    return config, mesh, dataset, spec, model, state, device_data


def test_put_dataset_pads_test_split(setup):
    config, _, dataset, _, _, _, device_data = setup
    assert device_data.test_labels.shape == (128,)
    assert float(device_data.test_weights.sum()) == len(dataset.test_labels)
    assert np.array_equal(np.asarray(device_data.test_images[:100]), dataset.test_images)


def test_eval_step_matches_direct_forward_pass(setup):
    config, mesh, dataset, _, model, state, device_data = setup
    metrics = jax.jit(
        lambda s, d: train.eval_step(s, d, model=model, eval_batch_size=64, mesh=mesh)
    )(state, device_data)

    variables = {"params": state.params, "batch_stats": state.batch_stats}
    images = (dataset.test_images / 255.0 - device_data.mean) / device_data.std
    logits = model.apply(variables, jnp.asarray(images, jnp.float32), train=False)
    labels = dataset.test_labels
    expected_loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    expected_accuracy = np.mean(np.argmax(logits, -1) == labels)
    np.testing.assert_allclose(metrics["loss"], expected_loss, rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], expected_accuracy, rtol=1e-6)


def test_train_step_advances_step_and_reports_schedule(setup):
    config, mesh, _, spec, model, state, device_data = setup
    step_fn = jax.jit(
        lambda s, d: train.train_step(s, d, model=model, spec=spec, config=config, mesh=mesh)
    )
    state_1, metrics_1 = step_fn(state, device_data)
    state_2, metrics_2 = step_fn(state_1, device_data)

    assert int(state_2.step) == 2
    assert float(metrics_1["learning_rate"]) == pytest.approx(float(spec.learning_rate_fn(0)))
    assert float(metrics_2["learning_rate"]) == pytest.approx(float(spec.learning_rate_fn(1)))
    assert float(metrics_1["momentum"]) == pytest.approx(config.momentum)
    assert np.isfinite(float(metrics_2["loss"]))
    assert float(metrics_2["grad_norm"]) > 0.0
    changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), state.params, state_2.params)
    assert all(jax.tree.leaves(changed))


def test_train_step_with_epoch_order_is_identical(setup):
    config, mesh, dataset, spec, model, state, device_data = setup
    kwargs = {"model": model, "spec": spec, "config": config, "mesh": mesh}
    inline = jax.jit(lambda s, d: train.train_step(s, d, **kwargs))
    ordered = jax.jit(lambda s, d, o: train.train_step(s, d, o, **kwargs))
    inline_state, ordered_state = state, state
    # 64 examples at batch 32: steps 0-1 are epoch 0 and steps 2-3 epoch 1.
    for step in range(4):
        order = train.epoch_order(state.key, step // 2, len(dataset.train_labels))
        inline_state, inline_metrics = inline(inline_state, device_data)
        ordered_state, ordered_metrics = ordered(ordered_state, device_data, order)
        assert float(inline_metrics["loss"]) == float(ordered_metrics["loss"])
    for leaf, other in zip(
        jax.tree.leaves(inline_state), jax.tree.leaves(ordered_state), strict=True
    ):
        assert np.array_equal(leaf, other)


def test_train_step_batches_differ_between_steps(setup):
    config, _, _, _, _, state, _ = setup
    order_key, _ = jax.random.split(state.key)
    first = augment.batch_indices(order_key, 64, config.batch_size, 0)
    second = augment.batch_indices(order_key, 64, config.batch_size, 1)
    assert len(set(np.asarray(first)) | set(np.asarray(second))) == 64


def test_loop_stops_on_nan_and_keeps_good_checkpoint(tmp_path):
    bad_step = 5

    def inject_nan(train_fn):
        calls = 0

        def nan_train_fn(*args):
            nonlocal calls
            calls += 1
            state, metrics = train_fn(*args)
            if calls >= bad_step:
                metrics = dict(metrics, loss=jnp.float32(jnp.nan))
            return state, metrics

        return nan_train_fn

    with pytest.raises(loop.NonFiniteLossError, match=f"at step {bad_step};") as caught:
        loop.train_and_evaluate(tiny_config(), tmp_path, wrap_train_fn=inject_nan)

    assert caught.value.step == bad_step
    assert caught.value.last_checkpoint_step == 4
    checkpointer = Checkpointer(tmp_path / "checkpoints")
    assert checkpointer.all_steps() == [2, 4]
    logged_steps = [json.loads(line)["step"] for line in open(tmp_path / "metrics.jsonl")]
    assert max(logged_steps) == 4


def test_loop_stops_on_diverging_learning_rate(tmp_path):
    config = tiny_config(sgd_peak_learning_rate=1e30, warmup_fraction=0.0, num_steps=20)
    with pytest.raises(loop.NonFiniteLossError, match="at step") as caught:
        loop.train_and_evaluate(config, tmp_path)
    kept = Checkpointer(tmp_path / "checkpoints").all_steps()
    assert all(step < caught.value.step for step in kept)


_DEVICE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import jax
    from beta_optax.training import loop
    from beta_optax.training.config import TrainConfig
    config = TrainConfig.from_json(sys.argv[1])
    result = loop.train_and_evaluate(config, sys.argv[2])
    losses = [row["train_loss"] for row in result.rows if "train_loss" in row]
    accuracies = [row["eval_accuracy"] for row in result.rows if "eval_accuracy" in row]
    print(json.dumps({"devices": jax.device_count(), "losses": losses, "eval": accuracies}))
    """
)


def run_with_devices(num_devices: int, config: TrainConfig, workdir) -> dict:
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={num_devices}"
    completed = subprocess.run(
        [sys.executable, "-c", _DEVICE_SCRIPT, config.to_json(), str(workdir)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_four_devices_match_one_device_losses(tmp_path):
    config = tiny_config(method="sgd", num_steps=4, eval_every_steps=4, checkpoint_every_steps=0)
    one_device = run_with_devices(1, config, tmp_path / "one")
    four_devices = run_with_devices(4, config, tmp_path / "four")

    assert one_device["devices"] == 1
    assert four_devices["devices"] == 4
    assert len(four_devices["losses"]) == config.num_steps
    # Sharding the batch reorders the float32 sums of BatchNorm and the gradients.
    np.testing.assert_allclose(four_devices["losses"], one_device["losses"], rtol=1e-4)
    np.testing.assert_allclose(four_devices["eval"], one_device["eval"], atol=1 / 128)


def test_batch_not_divisible_by_devices_raises():
    config = tiny_config(batch_size=30)
    with pytest.raises(ValueError, match="`batch_size`=30"):
        loop._check_divisible(config, 4)
