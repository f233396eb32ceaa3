"""Treat and verify: retrain only the flagged layer groups, then compare test predictions.

`surgical_correct` continues training a checkpointed state with `beta_sgd` (plus the run's L2
weight decay) through `beta_optax.surgical_optimizer`. Every parameter outside the flagged
groups gets an update of exactly zero, momentum and weight decay included, and the optimizer
keeps no state for it.

BatchNorm policy: the correction step runs the model in train mode, as the train step does, so
every BatchNorm layer normalizes with the statistics of the batch. After each step the running
averages (`batch_stats`) of the unflagged groups are restored to their values before the
correction, so they stay bit-identical. The running averages of the flagged groups keep updating,
so they follow the retrained weights.

Verification compares per-example test predictions (eval mode, running averages) before and
after: errors fixed (wrong before, right after), errors introduced (right before, wrong after)
and their difference. With `compare_full`, the whole model is retrained for the same steps, from
the same state, seed and schedule, and reported beside it, with wall time and XLA's FLOP count of
each compiled step.

References:
  Pasichnyk, `Beta-Scheduling <https://arxiv.org/abs/2603.28921>`_, 2026.
"""

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import beta_optax
from beta_optax import _paths
from beta_optax.training import train
from beta_optax.training.config import TrainConfig
from beta_optax.training.models import resnet_group
from beta_optax.training.optimizers import OptimizerSpec, create_learning_rate_fn, decay_mask

logger = logging.getLogger(__name__)

# Defaults of the correction: a short fine-tune at a tenth of the usual SGD peak learning rate,
# decayed by a cosine to 0. beta_sgd then starts at momentum 1 - 2 * sqrt(0.01) = 0.8.
DEFAULT_CORRECTION_STEPS = 200
DEFAULT_CORRECTION_LEARNING_RATE = 0.01


@dataclasses.dataclass
class RetrainOutcome:
    """Test-set outcome of one retraining (surgical or full) against the starting state.

    Attributes:
        accuracy_after: test accuracy after retraining.
        fixed: examples wrong before and right after.
        introduced: examples right before and wrong after.
        net: `fixed - introduced`, the change in the number of correct test examples.
        seconds: wall time of the retraining steps, without compilation.
        flops_per_step: FLOPs of one compiled step by XLA's cost analysis (None if unavailable).
        param_fraction: fraction of the parameters whose updates may be nonzero.
    """

    accuracy_after: float
    fixed: int
    introduced: int
    net: int
    seconds: float
    flops_per_step: float | None
    param_fraction: float


@dataclasses.dataclass
class CorrectionResult:
    """Measurements of `surgical_correct`.

    Attributes:
        problem_groups: the retrained groups.
        num_steps: correction steps.
        learning_rate: peak learning rate of the correction.
        num_test: test examples compared.
        accuracy_before: test accuracy of the starting state.
        surgical: outcome of retraining only `problem_groups`.
        full: outcome of retraining every group for the same steps, or None.
        examples: one row per test example that is wrong before or after the surgical
            correction: `{"index", "label", "pred_before", "pred_after"}`.
        corrected_state: the train state after the surgical correction (not serialized).
    """

    problem_groups: tuple[str, ...]
    num_steps: int
    learning_rate: float
    num_test: int
    accuracy_before: float
    surgical: RetrainOutcome
    full: RetrainOutcome | None
    examples: list[dict]
    corrected_state: Any = dataclasses.field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        """Return every field but `corrected_state` as JSON-ready Python values."""
        return {
            field.name: _plain(getattr(self, field.name))
            for field in dataclasses.fields(self)
            if field.name != "corrected_state"
        }

    def table(self) -> str:
        """Format the comparison as a Markdown table, one row per retraining."""
        rows = [("surgical", self.surgical)]
        if self.full is not None:
            rows.append(("full model", self.full))
        lines = [
            "| retrained | params | acc before | acc after | fixed | introduced | net "
            "| seconds | GFLOPs/step |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for name, outcome in rows:
            flops = (
                "n/a" if outcome.flops_per_step is None else f"{outcome.flops_per_step / 1e9:.2f}"
            )
            lines.append(
                f"| {name} | {outcome.param_fraction:.2%} | {self.accuracy_before:.2%} "
                f"| {outcome.accuracy_after:.2%} | {outcome.fixed} | {outcome.introduced} "
                f"| {outcome.net:+d} | {outcome.seconds:.1f} | {flops} |"
            )
        return "\n".join(lines)


def _plain(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return list(value) if isinstance(value, tuple) else value


def retrain_mask(params, groups: Sequence[str], group_fn: Callable[[str], str] = resnet_group):
    """Build the boolean mask over `params`: True (retrain) for each leaf of `groups`."""
    flagged = set(groups)
    flags = {path: group_fn(path) in flagged for path in _paths.leaf_paths(params)}
    return _paths.unflatten_like(params, flags)


def correction_spec(
    config: TrainConfig, num_steps: int, learning_rate: float, mask=None
) -> OptimizerSpec:
    """Build beta_sgd plus the run's weight decay on a cosine schedule, masked if `mask` is set."""
    learning_rate_fn = create_learning_rate_fn(learning_rate, num_steps, warmup_fraction=0.0)
    tx = beta_optax.beta_sgd(learning_rate_fn)
    if config.weight_decay > 0:
        tx = optax.chain(optax.add_decayed_weights(config.weight_decay, mask=decay_mask), tx)
    if mask is not None:
        tx = beta_optax.surgical_optimizer(tx, mask)
    return OptimizerSpec(tx, learning_rate_fn, None)


def _restore_frozen_stats(batch_stats, frozen_stats, flagged_stats):
    return jax.tree.map(
        lambda new, old, flagged: new if flagged else old, batch_stats, frozen_stats, flagged_stats
    )


def _flops(compiled) -> float | None:
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list | tuple):
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])


def retrain(
    state: train.TrainState,
    device_data: train.DeviceData,
    *,
    config: TrainConfig,
    model,
    spec: OptimizerSpec,
    num_steps: int,
    seed: int,
    flagged_stats=None,
) -> tuple[train.TrainState, float, float | None]:
    """Run `num_steps` train steps of `spec` from the weights of `state`, on a fresh step count.

    Args:
        flagged_stats: a bool pytree like `state.batch_stats`; where False, the running averages
            are put back after every step. None lets every running average update.

    Returns:
        `(new_state, seconds, flops_per_step)`; the seconds exclude compilation.
    """
    mesh = train.create_mesh()
    train_key = jax.random.split(jax.random.PRNGKey(seed))[1]
    start = train.TrainState(
        step=jnp.zeros((), jnp.int32),
        params=jax.tree.map(jnp.copy, state.params),
        batch_stats=jax.tree.map(jnp.copy, state.batch_stats),
        opt_state=spec.tx.init(state.params),
        key=train_key,
    )
    step_fn = functools.partial(train.train_step, model=model, spec=spec, config=config, mesh=mesh)

    def correction_step(current, data):
        frozen_stats = current.batch_stats
        new_state, metrics = step_fn(current, data)
        if flagged_stats is not None:
            kept = _restore_frozen_stats(new_state.batch_stats, frozen_stats, flagged_stats)
            new_state = new_state.replace(batch_stats=kept)
        return new_state, metrics

    compiled = jax.jit(correction_step, donate_argnums=0).lower(start, device_data).compile()
    current = start
    started = time.perf_counter()
    for _ in range(num_steps):
        current, _ = compiled(current, device_data)
    jax.block_until_ready(current)
    return current, time.perf_counter() - started, _flops(compiled)


def predict_test_split(variables_state, device_data: train.DeviceData, *, model, batch_size: int):
    """Return the predicted class of every real test example (eval mode), as numpy int32."""
    num_batches = device_data.test_labels.shape[0] // batch_size

    @jax.jit
    def predict(params, batch_stats, images, mean, std):
        variables = {"params": params, "batch_stats": batch_stats}

        def one_batch(batch):
            batch_images = jax.lax.dynamic_slice_in_dim(images, batch * batch_size, batch_size)
            normalized = (batch_images.astype(jnp.float32) / 255.0 - mean) / std
            return jnp.argmax(model.apply(variables, normalized, train=False), -1)

        return jax.lax.map(one_batch, jnp.arange(num_batches)).reshape(-1)

    predictions = predict(
        variables_state.params,
        variables_state.batch_stats,
        device_data.test_images,
        device_data.mean,
        device_data.std,
    )
    num_real = int(np.asarray(jax.device_get(device_data.test_weights)).sum())
    return np.asarray(jax.device_get(predictions))[:num_real].astype(np.int32)


def _outcome(labels, before, after, seconds, flops, param_fraction):
    """Build the outcome of predictions `after` against `before`, with the per-example rows."""
    fixed, introduced, rows = compare_predictions(labels, before, after)
    outcome = RetrainOutcome(
        accuracy_after=float(np.mean(after == labels)),
        fixed=fixed,
        introduced=introduced,
        net=fixed - introduced,
        seconds=seconds,
        flops_per_step=flops,
        param_fraction=param_fraction,
    )
    return outcome, rows


def compare_predictions(labels, before, after) -> tuple[int, int, list[dict]]:
    """Count fixed and introduced errors and list every example wrong before or after.

    Returns:
        `(fixed, introduced, rows)`, rows as `{"index", "label", "pred_before", "pred_after"}`.
    """
    wrong_before = before != labels
    wrong_after = after != labels
    fixed = int(np.sum(wrong_before & ~wrong_after))
    introduced = int(np.sum(~wrong_before & wrong_after))
    rows = [
        {
            "index": int(index),
            "label": int(labels[index]),
            "pred_before": int(before[index]),
            "pred_after": int(after[index]),
        }
        for index in np.flatnonzero(wrong_before | wrong_after)
    ]
    return fixed, introduced, rows


def surgical_correct(
    config: TrainConfig,
    state: train.TrainState,
    problem_groups,
    *,
    device_data: train.DeviceData | None = None,
    num_steps: int = DEFAULT_CORRECTION_STEPS,
    learning_rate: float = DEFAULT_CORRECTION_LEARNING_RATE,
    seed: int = 0,
    compare_full: bool = True,
    group_fn: Callable[[str], str] = resnet_group,
) -> CorrectionResult:
    """Retrain only `problem_groups` of a trained ResNet and measure the test errors it fixes.

    Args:
        config: the training config of the run (model, data, batch size, augmentation, decay).
        state: the trained state, for example restored from the run's last checkpoint.
        problem_groups: the group names to retrain, or a `beta_optax.Diagnosis` (its
            `problem_groups`).
        device_data: the dataset on the devices; loaded from `config` when None.
        num_steps: correction steps (train batches of `config.batch_size`).
        learning_rate: peak learning rate of beta_sgd, decayed by a cosine to 0.
        seed: seed of the correction's data order and augmentation.
        compare_full: also retrain the whole model for the same steps and report it.
        group_fn: parameter or batch_stats path -> group name.

    Returns:
        A `CorrectionResult`.

    Raises:
        ValueError: for no problem groups, a group that owns no parameter, or `num_steps` < 1.
    """
    groups = tuple(getattr(problem_groups, "problem_groups", problem_groups))
    _check_groups(groups, state.params, group_fn, num_steps)
    if device_data is None:
        mesh = train.create_mesh()
        device_data = train.put_dataset(train.load_data(config), mesh, config.eval_batch_size)
    model = train.create_model(config, num_classes=state.params["head"]["kernel"].shape[-1])
    labels = _test_labels(device_data)
    predict = functools.partial(
        predict_test_split, device_data=device_data, model=model, batch_size=config.eval_batch_size
    )
    before = predict(state)
    common = dict(config=config, model=model, num_steps=num_steps, seed=seed)

    mask = retrain_mask(state.params, groups, group_fn)
    flagged_stats = retrain_mask(state.batch_stats, groups, group_fn)
    spec = correction_spec(config, num_steps, learning_rate, mask)
    corrected, seconds, flops = retrain(
        state, device_data, spec=spec, flagged_stats=flagged_stats, **common
    )
    fraction = beta_optax.mask_param_fraction(mask, state.params)
    surgical, rows = _outcome(labels, before, predict(corrected), seconds, flops, fraction)
    logger.info(
        "Surgical correction of %s: %d fixed, %d introduced.",
        groups,
        surgical.fixed,
        surgical.introduced,
    )

    full = None
    if compare_full:
        full_spec = correction_spec(config, num_steps, learning_rate)
        retrained, seconds, flops = retrain(state, device_data, spec=full_spec, **common)
        full, _ = _outcome(labels, before, predict(retrained), seconds, flops, 1.0)
    result = CorrectionResult(
        groups,
        num_steps,
        learning_rate,
        len(labels),
        float(np.mean(before == labels)),
        surgical,
        full,
        rows,
        corrected,
    )
    return result


def _test_labels(device_data: train.DeviceData) -> np.ndarray:
    num_real = int(np.asarray(jax.device_get(device_data.test_weights)).sum())
    return np.asarray(jax.device_get(device_data.test_labels))[:num_real]


def _check_groups(groups, params, group_fn, num_steps) -> None:
    if num_steps < 1:
        raise ValueError(f"`num_steps` must be at least 1, got {num_steps}.")
    if not groups:
        raise ValueError(
            "`problem_groups` is empty, so there is nothing to retrain. Pass group names such as "
            "('stage4', 'head') or a Diagnosis that flags at least one group."
        )
    owned = {group_fn(path) for path in _paths.leaf_paths(params)}
    unknown = sorted(set(groups) - owned)
    if unknown:
        raise ValueError(
            f"`problem_groups` contains {unknown}, which own no parameter; the model's groups "
            f"are {sorted(owned)}."
        )
