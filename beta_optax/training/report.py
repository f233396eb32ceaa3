"""The diagnostic pipeline on a run directory: read the run, diagnose, correct, write the report.

A run directory (as `loop.train_and_evaluate` and benchmarks/cifar_resnet.py write it) contains
config.json, metrics.jsonl and checkpoints/. Runs trained through
`attribution.train_with_diagnostics` also hold diagnostics.json, history.jsonl (one attribution
entry per evaluation point) and scan.jsonl (the damping scan). For other runs, `diagnose_run`
computes the scan and the attribution at every checkpoint still on disk (by default only the
newest two) instead.

Outputs beside the run: diagnosis.json, correction.json (with the per-example list),
report.json, report.md, heatmap.png (score by group over training) and zeta.png (damping ratio
by group over training).
"""

import dataclasses
import json
import logging
import math
import os
import pathlib
from typing import Any

import jax
import numpy as np

import beta_optax
from beta_optax.training import train
from beta_optax.training.attribution import (
    DIAGNOSTICS_CONFIG_FILE,
    HISTORY_FILE,
    DiagnosticsRecorder,
    group_prefixes,
    wrap_spec_with_group_stats,
)
from beta_optax.training.checkpoint import CHECKPOINT_DIR, Checkpointer
from beta_optax.training.config import TrainConfig, total_steps
from beta_optax.training.loop import CONFIG_FILE
from beta_optax.training.metrics import METRICS_FILE, read_metrics, series
from beta_optax.training.optimizers import OptimizerSpec, create_optimizer
from beta_optax.training.scan import REGIMES, SCAN_FILE, DiagnosticsConfig, read_jsonl

logger = logging.getLogger(__name__)

DIAGNOSIS_FILE = "diagnosis.json"
CORRECTION_FILE = "correction.json"
REPORT_JSON = "report.json"
REPORT_MARKDOWN = "report.md"
HEATMAP_FILE = "heatmap.png"
ZETA_FILE = "zeta.png"
MAKE_RUN_HINT = (
    "Make one with `python benchmarks/cifar_resnet.py` (each run directory is "
    "OUT_DIR/runs/METHOD/seedK), `python benchmarks/cross_optimizer.py`, or "
    "`beta_optax.training.loop.train_and_evaluate(config, RUN_DIR)`."
)


class NotARunError(ValueError):
    """A directory lacks the files of a training run; the message names them."""


@dataclasses.dataclass
class LoadedRun:
    """A run directory read back: its config, data on the devices and a restored state.

    Attributes:
        run_dir: the directory.
        config: the training config.
        diagnostics: the diagnostics settings the run was trained with, or None.
        spec: the run's optimizer (wrapped for group statistics when the run was).
        device_data: both splits on the devices.
        state: the state restored from checkpoint `step`.
        step: the restored checkpoint's step.
        checkpoint_steps: every checkpoint step on disk, oldest first.
    """

    run_dir: pathlib.Path
    config: TrainConfig
    diagnostics: DiagnosticsConfig | None
    spec: OptimizerSpec
    device_data: train.DeviceData
    state: train.TrainState
    step: int
    checkpoint_steps: list[int]


def check_run_dir(run_dir: str | os.PathLike) -> pathlib.Path:
    """Raise `NotARunError` unless `run_dir` has config.json and at least one checkpoint."""
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        raise NotARunError(
            f"{run_dir} is not a directory, so it is not a training run. {MAKE_RUN_HINT}"
        )
    missing = [name for name in (CONFIG_FILE, METRICS_FILE) if not (run_dir / name).is_file()]
    checkpoints = run_dir / CHECKPOINT_DIR
    has_checkpoint = checkpoints.is_dir() and any(
        entry.name.isdigit() for entry in checkpoints.iterdir()
    )
    if not has_checkpoint:
        missing.append(f"{CHECKPOINT_DIR}/ with at least one checkpoint")
    if missing:
        raise NotARunError(
            f"{run_dir} is not a training run: it is missing {', '.join(missing)}. {MAKE_RUN_HINT}"
        )
    return run_dir


def _restore(run_dir: pathlib.Path, template: train.TrainState, step: int) -> train.TrainState:
    checkpointer = Checkpointer(run_dir / CHECKPOINT_DIR)
    try:
        arrays, _ = checkpointer.restore(step, template.arrays())
    finally:
        checkpointer.close()
    return train.TrainState(**arrays)


def load_run(run_dir: str | os.PathLike, *, step: int | None = None) -> LoadedRun:
    """Read a run directory and restore checkpoint `step` (default: the newest).

    Raises:
        NotARunError: the directory lacks config.json, metrics.jsonl or checkpoints.
        ValueError: `step` has no checkpoint.
    """
    run_dir = check_run_dir(run_dir)
    config = TrainConfig.from_json((run_dir / CONFIG_FILE).read_text())
    diagnostics = None
    if (run_dir / DIAGNOSTICS_CONFIG_FILE).is_file():
        diagnostics = DiagnosticsConfig.from_json((run_dir / DIAGNOSTICS_CONFIG_FILE).read_text())

    mesh = train.create_mesh()
    dataset = train.load_data(config)
    spec = create_optimizer(config, total_steps(config, len(dataset.train_labels)))
    if diagnostics is not None and diagnostics.group_stats:
        spec = wrap_spec_with_group_stats(config)(spec)
    model = train.create_model(config, dataset.num_classes)
    # Abstract shapes and shardings are all a restore needs, so nothing is initialized.
    template = jax.eval_shape(
        lambda: train.create_train_state(config, model, spec, dataset.image_shape, mesh)
    )
    device_data = train.put_dataset(dataset, mesh, config.eval_batch_size)

    checkpointer = Checkpointer(run_dir / CHECKPOINT_DIR)
    steps = checkpointer.all_steps()
    checkpointer.close()
    step = steps[-1] if step is None else step
    if step not in steps:
        raise ValueError(f"`step`={step} has no checkpoint in {run_dir}; saved steps: {steps}.")
    state = _restore(run_dir, template, step)
    return LoadedRun(run_dir, config, diagnostics, spec, device_data, state, step, steps)


def record_from_checkpoints(loaded: LoadedRun, diagnostics: DiagnosticsConfig) -> None:
    """Write history.jsonl and scan.jsonl from every checkpoint of a run trained without them."""
    recorder = DiagnosticsRecorder(loaded.run_dir, loaded.config, diagnostics)
    for step in loaded.checkpoint_steps:
        state = (
            loaded.state if step == loaded.step else _restore(loaded.run_dir, loaded.state, step)
        )
        recorder.record(state, step, loaded.device_data, loaded.spec)
    logger.info(
        "Recorded the scan and attribution of %d checkpoints of %s.",
        len(loaded.checkpoint_steps),
        loaded.run_dir,
    )


def diagnose_run(
    run_dir: str | os.PathLike,
    *,
    top_k: int | None = None,
    normalization: str = "per_parameter",
    diagnostics: DiagnosticsConfig | None = None,
) -> beta_optax.Diagnosis:
    """Diagnose a run from its history.jsonl (recorded from checkpoints when missing).

    Writes diagnosis.json, then the report files.
    """
    run_dir = check_run_dir(run_dir)
    history_path = run_dir / HISTORY_FILE
    if not history_path.is_file():
        loaded = load_run(run_dir)
        settings = diagnostics or loaded.diagnostics or DiagnosticsConfig()
        logger.info("%s has no %s; computing it from the checkpoints.", run_dir, HISTORY_FILE)
        record_from_checkpoints(loaded, settings)

    history = beta_optax.load_history(history_path)
    groups = group_prefixes(history[0]["layer_norms"])
    diagnosis = beta_optax.diagnose(
        history, groups=groups, top_k=top_k, normalization=normalization
    )
    (run_dir / DIAGNOSIS_FILE).write_text(diagnosis.to_json())
    write_report(run_dir)
    return diagnosis


def load_diagnosis(run_dir: str | os.PathLike) -> beta_optax.Diagnosis:
    """Read diagnosis.json of a run; NotARunError names the command that writes it."""
    path = pathlib.Path(run_dir) / DIAGNOSIS_FILE
    if not path.is_file():
        raise NotARunError(
            f"{run_dir} has no {DIAGNOSIS_FILE}. Run `python -m beta_optax diagnose {run_dir}` "
            "first, or `python -m beta_optax pipeline` to do both."
        )
    return beta_optax.Diagnosis.from_json(path.read_text())


def correct_run(run_dir: str | os.PathLike, **options):
    """Run `surgical_correct` on the newest checkpoint with the groups of diagnosis.json.

    `options` go to `surgery.surgical_correct` (num_steps, learning_rate, seed, compare_full).
    Writes correction.json, then the report files.
    """
    from beta_optax.training.surgery import surgical_correct

    diagnosis = load_diagnosis(run_dir)
    loaded = load_run(run_dir)
    result = surgical_correct(
        loaded.config, loaded.state, diagnosis, device_data=loaded.device_data, **options
    )
    payload = {"checkpoint_step": loaded.step, **result.to_dict()}
    (loaded.run_dir / CORRECTION_FILE).write_text(json.dumps(payload, indent=2))
    write_report(loaded.run_dir)
    return result


def _finite_or_none(value):
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return None
    return value


def summarize_scan(records: list[dict]) -> dict[str, dict]:
    """Summarize scan.jsonl per group: regime counts, median curvature, the last evaluation."""
    summary = {}
    for record in records:
        for row in record["groups"]:
            entry = summary.setdefault(
                row["group"], {"regime_counts": dict.fromkeys(REGIMES, 0), "curvatures": []}
            )
            entry["regime_counts"][row["regime"]] += 1
            entry["curvatures"].append(row["curvature"])
            entry["last"] = {"step": record["step"], **row}
    for entry in summary.values():
        entry["median_curvature"] = float(np.median(entry.pop("curvatures")))
        entry["last"]["zeta"] = _finite_or_none(entry["last"]["zeta"])
    return summary


def plot_zeta(records: list[dict], path: str | os.PathLike, *, tolerance: float) -> None:
    """Plot each group's damping ratio against step, log scale, with the critical band shaded.

    Evaluation points whose regime is undefined (curvature <= 0) are drawn as crosses on the
    lower edge.
    """
    from beta_optax.training.plots import _pyplot

    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 5))
    names = list(dict.fromkeys(row["group"] for record in records for row in record["groups"]))
    finite = [
        row["zeta"]
        for record in records
        for row in record["groups"]
        if row["zeta"] is not None and math.isfinite(row["zeta"]) and row["zeta"] > 0
    ]
    floor = min(finite, default=1.0) / 2
    for index, name in enumerate(names):
        color = f"C{index % 10}"
        rows = [(r["step"], g) for r in records for g in r["groups"] if g["group"] == name]
        defined = [(s, g["zeta"]) for s, g in rows if g["zeta"] is not None and g["zeta"] > 0]
        undefined = [s for s, g in rows if g["zeta"] is None]
        if defined:
            axes.plot(*zip(*defined, strict=True), marker="o", color=color, label=name)
        if undefined:
            axes.scatter(undefined, [floor] * len(undefined), marker="x", color=color)
    axes.axhspan(1 - tolerance, 1 + tolerance, color="gray", alpha=0.2, label="critical band")
    axes.set_yscale("log")
    axes.set_xlabel("training step")
    axes.set_ylabel("damping ratio zeta (x: undefined, curvature <= 0)")
    axes.set_title("Damping ratio by layer group")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _run_summary(run_dir: pathlib.Path) -> dict[str, Any]:
    config = json.loads((run_dir / CONFIG_FILE).read_text())
    rows = read_metrics(run_dir / METRICS_FILE)
    steps, accuracies = series(rows, "eval_accuracy")
    keys = ("dataset", "model", "width_multiplier", "method", "batch_size", "seed")
    return {
        **{key: config.get(key) for key in keys},
        "final_step": steps[-1] if steps else None,
        "final_accuracy": accuracies[-1] if accuracies else None,
    }


def write_report(run_dir: str | os.PathLike) -> dict:
    """Write report.json, report.md and the PNGs from the pipeline files present in `run_dir`."""
    run_dir = pathlib.Path(run_dir)
    report: dict[str, Any] = {"run": _run_summary(run_dir)}
    diagnostics = DiagnosticsConfig()
    if (run_dir / DIAGNOSTICS_CONFIG_FILE).is_file():
        diagnostics = DiagnosticsConfig.from_json((run_dir / DIAGNOSTICS_CONFIG_FILE).read_text())

    diagnosis = None
    if (run_dir / DIAGNOSIS_FILE).is_file():
        diagnosis = beta_optax.Diagnosis.from_json((run_dir / DIAGNOSIS_FILE).read_text())
        diagnosis.save_heatmap(run_dir / HEATMAP_FILE)
        report["diagnosis"] = {
            "ranking": list(diagnosis.ranking),
            "scores": diagnosis.scores,
            "problem_groups": list(diagnosis.problem_groups),
            "param_fraction": diagnosis.param_fraction,
            "normalization": diagnosis.normalization,
            "rule": diagnosis.rule,
            "steps": list(diagnosis.steps),
        }
    scan_records = read_jsonl(run_dir / SCAN_FILE) if (run_dir / SCAN_FILE).is_file() else []
    if scan_records:
        plot_zeta(scan_records, run_dir / ZETA_FILE, tolerance=diagnostics.damping_tolerance)
        report["scan"] = summarize_scan(scan_records)
    if (run_dir / CORRECTION_FILE).is_file():
        correction = json.loads((run_dir / CORRECTION_FILE).read_text())
        correction.pop("examples")
        report["correction"] = {**correction, "examples_file": CORRECTION_FILE}

    (run_dir / REPORT_JSON).write_text(json.dumps(report, indent=2, allow_nan=False))
    (run_dir / REPORT_MARKDOWN).write_text(format_markdown(report, diagnosis, diagnostics))
    return report


def format_markdown(report: dict, diagnosis, diagnostics: DiagnosticsConfig) -> str:
    """Format the report dict as Markdown: run, diagnosis table, scan table, correction table."""
    run = report["run"]
    accuracy = run["final_accuracy"]
    lines = [
        f"# Diagnostic report: {run['method']} on {run['dataset']}, seed {run['seed']}",
        "",
        f"Model {run['model']} (width x{run['width_multiplier']}), batch {run['batch_size']}, "
        f"{run['final_step']} steps, final test accuracy "
        f"{'n/a' if accuracy is None else f'{accuracy:.2%}'}.",
        "",
    ]
    if diagnosis is not None:
        lines += [
            "## Localize: gradient attribution on misclassified inputs",
            "",
            f"Attribution split: {diagnostics.attribution_split}, at most "
            f"{diagnostics.attribution_max_examples} examples per evaluation point. "
            "Heatmap: heatmap.png.",
            "",
            "```",
            diagnosis.summary(),
            "```",
            "",
        ]
    if "scan" in report:
        lines += _scan_lines(report["scan"], diagnostics)
    if "correction" in report:
        lines += _correction_lines(report["correction"])
    return "\n".join(lines) + "\n"


def _scan_lines(scan: dict, diagnostics: DiagnosticsConfig) -> list[str]:
    lines = [
        "## Scan: damping regime by layer group",
        "",
        f"Top Hessian eigenvalue per group by {diagnostics.power_iterations} power iterations "
        f"on {diagnostics.scan_batch_size} training examples; critical band "
        f"|zeta - 1| <= {diagnostics.damping_tolerance}. Plot: zeta.png.",
        "",
        "| group | median curvature | last curvature | last zeta | last regime | "
        + " | ".join(REGIMES)
        + " |",
        "|---" * (5 + len(REGIMES)) + "|",
    ]
    for name, entry in scan.items():
        last = entry["last"]
        zeta = "n/a" if last["zeta"] is None else f"{last['zeta']:.3g}"
        regime = last["regime"] + (f" ({last['reason']})" if last["reason"] else "")
        counts = " | ".join(str(entry["regime_counts"][r]) for r in REGIMES)
        lines.append(
            f"| {name} | {entry['median_curvature']:.4g} | {last['curvature']:.4g} | {zeta} "
            f"| {regime} | {counts} |"
        )
    return [*lines, ""]


def _correction_lines(correction: dict) -> list[str]:
    from beta_optax.training.surgery import CorrectionResult, RetrainOutcome

    full = correction["full"]
    result = CorrectionResult(
        problem_groups=tuple(correction["problem_groups"]),
        num_steps=correction["num_steps"],
        learning_rate=correction["learning_rate"],
        num_test=correction["num_test"],
        accuracy_before=correction["accuracy_before"],
        surgical=RetrainOutcome(**correction["surgical"]),
        full=None if full is None else RetrainOutcome(**full),
        examples=[],
    )
    return [
        "## Treat and verify: surgical correction",
        "",
        f"Retrained {', '.join(result.problem_groups)} for {result.num_steps} steps of beta_sgd "
        f"(peak learning rate {result.learning_rate:g}) from the checkpoint at step "
        f"{correction['checkpoint_step']}, on {result.num_test} test examples. Per-example "
        f"list: {correction['examples_file']}.",
        "",
        result.table(),
        "",
    ]


def kendall_tau_b(first, second) -> float:
    """Compute Kendall's tau-b rank correlation of two equal-length score sequences.

    tau-b = (concordant - discordant) / sqrt((n0 - ties_first) * (n0 - ties_second)) over all
    n0 = n (n - 1) / 2 pairs, the variant that corrects for ties (as `scipy.stats.kendalltau`
    computes by default).

    Raises:
        ValueError: for sequences of different lengths, fewer than 2 values, or a sequence
            whose values are all tied (tau-b is undefined there).
    """
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    if first.shape != second.shape or first.ndim != 1 or first.size < 2:
        raise ValueError(
            f"Kendall's tau needs two 1-d sequences of the same length >= 2, got shapes "
            f"{first.shape} and {second.shape}."
        )
    upper = np.triu_indices(first.size, k=1)
    sign_first = np.sign(first[:, None] - first[None, :])[upper]
    sign_second = np.sign(second[:, None] - second[None, :])[upper]
    untied_first = np.count_nonzero(sign_first)
    untied_second = np.count_nonzero(sign_second)
    if untied_first == 0 or untied_second == 0:
        raise ValueError("Kendall's tau-b is undefined when every value of a sequence is tied.")
    return float(np.sum(sign_first * sign_second) / math.sqrt(untied_first * untied_second))


def jaccard(first, second) -> float:
    """Return |A & B| / |A | B| of two sets of group names (1.0 when both are empty)."""
    first, second = set(first), set(second)
    union = first | second
    return 1.0 if not union else len(first & second) / len(union)


def compare_diagnoses(first: beta_optax.Diagnosis, second: beta_optax.Diagnosis) -> dict:
    """Compare two diagnoses of the same model: problem-group Jaccard and score Kendall tau-b."""
    if first.groups != second.groups:
        raise ValueError(
            f"The diagnoses cover different groups, {first.groups} and {second.groups}; "
            "compare runs of the same model."
        )
    return {
        "jaccard": jaccard(first.problem_groups, second.problem_groups),
        "kendall_tau_b": kendall_tau_b(
            [first.scores[name] for name in first.groups],
            [second.scores[name] for name in second.groups],
        ),
        "problem_groups": [list(first.problem_groups), list(second.problem_groups)],
    }
