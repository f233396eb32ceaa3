"""The training loop: setup, resume, periodic logging, evaluation and checkpoints.

`train_and_evaluate` is the entry point. Timing covers the train steps only: compilation happens
ahead of time, and the clock stops (after the devices finish) around every evaluation and
checkpoint.
"""

import dataclasses
import logging
import math
import os
import pathlib
import time
from typing import Any, Protocol

import jax
import numpy as np

from beta_optax.training import train
from beta_optax.training.checkpoint import CHECKPOINT_DIR, Checkpointer
from beta_optax.training.config import TrainConfig, total_steps
from beta_optax.training.metrics import METRICS_FILE, MetricWriter, read_metrics, summarize_run
from beta_optax.training.optimizers import OptimizerSpec, create_optimizer

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"


class NonFiniteLossError(RuntimeError):
    """A training loss or gradient was NaN or infinite; the run stopped without saving that state.

    Attributes:
        step: the training step (counted from 1) whose loss or gradient norm was not finite.
        last_checkpoint_step: the newest checkpoint on disk, or None.
    """

    def __init__(self, message: str, step: int, last_checkpoint_step: int | None):
        super().__init__(message)
        self.step = step
        self.last_checkpoint_step = last_checkpoint_step


class Progress(Protocol):
    """Receiver of the loop's progress; scripts supply one (see `progress.TqdmProgress`)."""

    def start(self, total: int, initial: int) -> None: ...

    def update(self, step: int, scalars: dict) -> None: ...

    def close(self) -> None: ...


class Stopwatch:
    """Accumulates seconds over start/stop intervals, starting from `seconds`."""

    def __init__(self, seconds: float = 0.0):
        self.seconds = seconds
        self._started = None

    def start(self) -> None:
        self._started = time.perf_counter()

    def stop(self) -> float:
        self.seconds += time.perf_counter() - self._started
        self._started = None
        return self.seconds

    def read(self) -> float:
        """Return the total so far, including a running interval."""
        running = time.perf_counter() - self._started if self._started is not None else 0.0
        return self.seconds + running


@dataclasses.dataclass
class Run:
    """Everything built once per run: the compiled steps, data on the devices, outputs."""

    config: TrainConfig
    num_steps: int
    spec: OptimizerSpec
    device_data: train.DeviceData
    train_fn: Any
    eval_fn: Any
    writer: MetricWriter
    checkpointer: Checkpointer
    # Called as eval_hook(run, state, step) after each evaluation, outside the timed interval.
    eval_hook: Any = None
    # Called as order_fn(key, epoch): the epoch's example order, which train_fn takes as its
    # third argument. Computing it once per epoch keeps a full sort out of every step.
    order_fn: Any = None
    steps_per_epoch: int = 1


@dataclasses.dataclass
class RunResult:
    """The final state and, on the first host, the metric rows and their summary."""

    state: train.TrainState
    rows: list[dict]
    summary: dict | None


def setup_run(
    config: TrainConfig, workdir: str | os.PathLike, *, resume: bool, wrap_optimizer=None
):
    """Load data, build the model, optimizer and state, restore a checkpoint, compile the steps.

    Returns:
        `(run, state, train_seconds)`: `state` and `train_seconds` come from the newest
        checkpoint when `resume` is set and one exists, else from initialization and 0.
    """
    workdir = pathlib.Path(workdir)
    mesh = train.create_mesh()
    _check_divisible(config, mesh.size)
    dataset = train.load_data(config)
    num_steps = total_steps(config, len(dataset.train_labels))
    spec = create_optimizer(config, num_steps)
    if wrap_optimizer is not None:
        spec = wrap_optimizer(spec)
    model = train.create_model(config, dataset.num_classes)
    state = train.create_train_state(config, model, spec, dataset.image_shape, mesh)
    device_data = train.put_dataset(dataset, mesh, config.eval_batch_size)

    is_first_host = jax.process_index() == 0
    writer = MetricWriter(workdir / METRICS_FILE, enabled=is_first_host)
    checkpointer = Checkpointer(workdir / CHECKPOINT_DIR, max_to_keep=config.checkpoints_to_keep)
    state, train_seconds = _restore_or_start(state, checkpointer, writer, resume=resume)
    if is_first_host:
        (workdir / CONFIG_FILE).write_text(config.to_json())

    train_fn, eval_fn = train.compile_steps(
        state, device_data, model=model, spec=spec, config=config, mesh=mesh, with_order=True
    )
    num_examples = len(dataset.train_labels)
    run = Run(config, num_steps, spec, device_data, train_fn, eval_fn, writer, checkpointer)
    run.order_fn = train.compile_epoch_order(mesh, num_examples)
    run.steps_per_epoch = num_examples // config.batch_size
    return run, state, train_seconds


def _check_divisible(config: TrainConfig, num_devices: int) -> None:
    for name in ("batch_size", "eval_batch_size"):
        value = getattr(config, name)
        if value % num_devices:
            raise ValueError(
                f"`{name}`={value} must be a multiple of the {num_devices} devices; "
                f"use {num_devices * max(1, value // num_devices)}."
            )


def _restore_or_start(state, checkpointer, writer, *, resume: bool):
    latest = checkpointer.latest_step()
    if latest is not None and not resume:
        raise ValueError(
            f"{checkpointer.directory} already contains checkpoints (newest at step {latest}). "
            "Pass `resume=True` (the --resume flag) to continue, or use an empty directory."
        )
    if latest is None:
        writer.truncate_after(-1)
        return state, 0.0

    arrays, metadata = checkpointer.restore(latest, state.arrays())
    writer.truncate_after(latest)
    logger.info("Resuming at step %d with %.1f s of training done.", latest, metadata["seconds"])
    return train.TrainState(**arrays), float(metadata["seconds"])


def train_and_evaluate(
    config: TrainConfig,
    workdir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: Progress | None = None,
    wrap_train_fn=None,
    eval_hook=None,
    wrap_optimizer=None,
) -> RunResult:
    """Train `config` to its last step, evaluating, logging and checkpointing on the way.

    Args:
        config: the run's settings.
        workdir: directory of metrics.jsonl, config.json and checkpoints/.
        resume: continue from the newest checkpoint in `workdir`. The result is bit-identical
            to a run that was never interrupted.
        progress: receives the train scalars at every log step (a progress bar, say).
        eval_hook: optional `eval_hook(run, state, step)` called after each evaluation, with
            the stopwatch stopped (the diagnostics recorder of `training.attribution`).
        wrap_optimizer: optional function OptimizerSpec -> OptimizerSpec applied before the
            state is built, for example to record statistics in the optimizer state.
        wrap_train_fn: optional function applied to the compiled train step, for tests that
            inject a failure or an interruption.

    Raises:
        NonFiniteLossError: a training loss was NaN or infinite. The message names the step;
            checkpoints up to the last good one stay on disk and the bad state is not saved.
    """
    run, state, train_seconds = setup_run(
        config, workdir, resume=resume, wrap_optimizer=wrap_optimizer
    )
    run.eval_hook = eval_hook
    if wrap_train_fn is not None:
        run.train_fn = wrap_train_fn(run.train_fn)
    if progress is not None:
        progress.start(run.num_steps, int(train.to_host(state.step)))
    try:
        state = run_loop(run, state, Stopwatch(train_seconds), progress)
    finally:
        run.checkpointer.close()
        if progress is not None:
            progress.close()

    rows = read_metrics(run.writer.path) if run.writer.enabled else []
    summary = summarize_run(rows, config.targets) if rows else None
    return RunResult(state, rows, summary)


def run_loop(
    run: Run, state, stopwatch: Stopwatch, progress: Progress | None, *, until: int | None = None
):
    """Run the train steps from `state.step` to the end, or to step `until`; return the state.

    Stopping at `until` is not the end of training: it neither evaluates nor saves there unless
    the config schedules it there, so benchmarks can time segments of a run.
    """
    config = run.config
    pending = []
    last_log = (int(train.to_host(state.step)), stopwatch.read())
    stop = run.num_steps if until is None else min(until, run.num_steps)
    # The key never changes during a run; a host copy survives the donation of `state`.
    key = train.to_host(state.key)
    epoch, order = None, None
    stopwatch.start()
    for step in range(last_log[0] + 1, stop + 1):
        if (step - 1) // run.steps_per_epoch != epoch:
            epoch = (step - 1) // run.steps_per_epoch
            order = run.order_fn(key, epoch)
        state, metrics = run.train_fn(state, run.device_data, order)
        pending.append(metrics)
        is_last = step == run.num_steps
        should_log = step % config.log_every_steps == 0 or is_last
        should_eval = step % config.eval_every_steps == 0 or is_last
        should_save = is_last or (
            config.checkpoint_every_steps > 0 and step % config.checkpoint_every_steps == 0
        )
        if not (should_log or should_eval or should_save):
            continue

        host_metrics = _check_finite(train.to_host(pending), step, run.checkpointer)
        pending = []
        if should_log:
            last_log = _log_train(run, step, host_metrics, last_log, stopwatch, progress)
        if should_eval or should_save:
            stopwatch.stop()
            if should_eval:
                _log_eval(run, state, step, stopwatch.seconds)
                if run.eval_hook is not None:
                    run.eval_hook(run, state, step)
            if should_save:
                run.checkpointer.save(step, state.arrays(), {"seconds": stopwatch.seconds})
            stopwatch.start()
    stopwatch.stop()
    return state


def _check_finite(host_metrics: list[dict], step: int, checkpointer: Checkpointer):
    # A finite loss with non-finite gradients still writes NaN into the parameters, so both
    # are checked before the state of this step may be saved.
    first_step = step - len(host_metrics) + 1
    for offset, metrics in enumerate(host_metrics):
        loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
        if math.isfinite(loss) and math.isfinite(grad_norm):
            continue
        bad_step = first_step + offset
        latest = checkpointer.latest_step()
        kept = (
            f"the last good checkpoint is step {latest} in {checkpointer.directory}"
            if latest is not None
            else "no checkpoint was saved before it"
        )
        message = (
            f"Training loss is {loss} (gradient norm {grad_norm}) at step {bad_step}; "
            f"stopped the run, and {kept}."
        )
        logger.error(message)
        raise NonFiniteLossError(message, bad_step, latest)
    return host_metrics


def _log_train(run, step, host_metrics, last_log, stopwatch, progress):
    last_step, last_seconds = last_log
    now = stopwatch.read()
    scalars = {
        "train_loss": np.mean([m["loss"] for m in host_metrics]),
        "train_accuracy": np.mean([m["accuracy"] for m in host_metrics]),
        "train_grad_norm": np.mean([m["grad_norm"] for m in host_metrics]),
        "train_learning_rate": host_metrics[-1]["learning_rate"],
        "train_momentum": host_metrics[-1]["momentum"],
        "train_steps_per_second": (step - last_step) / max(now - last_seconds, 1e-9),
    }
    run.writer.write_scalars(step, scalars)
    if progress is not None:
        progress.update(step, scalars)
    return step, now


def _log_eval(run, state, step, seconds):
    started = time.perf_counter()
    metrics = train.to_host(run.eval_fn(state, run.device_data))
    scalars = {
        "eval_loss": metrics["loss"],
        "eval_accuracy": metrics["accuracy"],
        "eval_seconds": time.perf_counter() - started,
        "train_seconds": seconds,
    }
    run.writer.write_scalars(step, scalars)
