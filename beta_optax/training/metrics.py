"""Metric writing (JSON lines plus the log), reading back, and per-run summaries.

A run directory contains `metrics.jsonl`: one JSON object per line with a "step" (completed training
steps) and scalars with a `train_` or `eval_` prefix. Train lines carry `train_loss`,
`train_accuracy`, `train_learning_rate`, `train_momentum` and `train_steps_per_second`; eval
lines carry `eval_loss`, `eval_accuracy`, `eval_seconds` (the evaluation's duration) and
`train_seconds`, the training time so far without compilation, evaluation and checkpointing.
"""

import json
import logging
import math
import os
import pathlib
from collections.abc import Mapping, Sequence

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"


class MetricWriter:
    """Appends scalars to a JSON-lines file and logs them at INFO level.

    Args:
        path: the JSON-lines file; its directory is created when missing.
        enabled: False turns writing and logging off, as on every host but the first.
    """

    def __init__(self, path: str | os.PathLike, *, enabled: bool = True):
        self.path = pathlib.Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        """Write one line `{"step": step, **scalars}` with every value converted to float."""
        if not self.enabled:
            return
        row = {"step": int(step)}
        row.update({name: _to_float(value) for name, value in scalars.items()})
        with self.path.open("a") as file:
            file.write(json.dumps(row) + "\n")
        logger.info(
            "step %d: %s", step, ", ".join(f"{k}={v:.6g}" for k, v in row.items() if k != "step")
        )

    def truncate_after(self, step: int) -> None:
        """Drop the lines after `step`, so a resumed run does not log those steps twice."""
        if not self.enabled or not self.path.exists():
            return
        kept = [row for row in read_metrics(self.path) if row["step"] <= step]
        with self.path.open("w") as file:
            file.writelines(json.dumps(row) + "\n" for row in kept)


def _to_float(value) -> float:
    return float(value) if value is not None else math.nan


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Read a metrics file written by `MetricWriter`, one dict per line, in file order."""
    with open(path) as file:
        return [json.loads(line) for line in file if line.strip()]


def series(rows: Sequence[Mapping], name: str) -> tuple[list[int], list[float]]:
    """Return `(steps, values)` of the rows that contain the scalar `name`."""
    selected = [row for row in rows if name in row]
    return [row["step"] for row in selected], [row[name] for row in selected]


def first_crossing(rows: Sequence[Mapping], target: float) -> tuple[int | None, float | None]:
    """Return `(step, train_seconds)` of the first evaluation with accuracy >= `target`.

    Returns `(None, None)` when no evaluation reaches `target`.
    """
    for row in rows:
        if "eval_accuracy" in row and row["eval_accuracy"] >= target:
            return row["step"], row.get("train_seconds")
    return None, None


def summarize_run(rows: Sequence[Mapping], targets: Sequence[float]) -> dict:
    """Summarize one run: steps and seconds to each target, final and best test accuracy."""
    steps, accuracies = series(rows, "eval_accuracy")
    _, seconds = series(rows, "train_seconds")
    summary = {
        "final_step": steps[-1] if steps else None,
        "final_accuracy": accuracies[-1] if accuracies else None,
        "best_accuracy": max(accuracies) if accuracies else None,
        "train_seconds": seconds[-1] if seconds else None,
        "targets": {},
    }
    for target in targets:
        step, target_seconds = first_crossing(rows, target)
        summary["targets"][_target_key(target)] = {"steps": step, "seconds": target_seconds}
    return summary


def _target_key(target: float) -> str:
    return f"{100 * target:g}%"


def mean_std(values: Sequence[float | None]) -> dict:
    """Return mean, sample std (None below two values) and count of the values that are not None.

    With a missing value (a seed that never reached a target) the mean covers only the seeds that
    did, and `reached` counts those seeds.
    """
    present = [float(value) for value in values if value is not None]
    if not present:
        return {"mean": None, "std": None, "reached": 0, "runs": len(values)}
    mean = sum(present) / len(present)
    std = None
    if len(present) > 1:
        std = math.sqrt(sum((value - mean) ** 2 for value in present) / (len(present) - 1))
    return {"mean": mean, "std": std, "reached": len(present), "runs": len(values)}


def aggregate_method(summaries: Sequence[Mapping], targets: Sequence[float]) -> dict:
    """Combine the per-seed summaries of one method into mean +- std figures."""
    aggregate = {
        "final_accuracy": mean_std([s["final_accuracy"] for s in summaries]),
        "train_seconds": mean_std([s["train_seconds"] for s in summaries]),
        "targets": {},
    }
    for target in targets:
        key = _target_key(target)
        aggregate["targets"][key] = {
            "steps": mean_std([s["targets"][key]["steps"] for s in summaries]),
            "seconds": mean_std([s["targets"][key]["seconds"] for s in summaries]),
        }
    return aggregate


def _format_mean_std(figure: Mapping, digits: int, scale: float = 1.0) -> str:
    if figure["mean"] is None:
        return "never"
    text = f"{scale * figure['mean']:.{digits}f}"
    if figure["std"] is not None:
        text += f" +- {scale * figure['std']:.{digits}f}"
    if figure["reached"] < figure["runs"]:
        text += f" ({figure['reached']}/{figure['runs']})"
    return text


def format_table(aggregates: Mapping[str, Mapping], targets: Sequence[float]) -> str:
    """Format the per-method aggregates as a fixed-width text table, one row per method.

    A cell "a +- b (k/n)" is a mean and sample std over the k of n seeds that reached the target.
    """
    header = ["method"]
    for target in targets:
        header += [f"steps to {_target_key(target)}", f"seconds to {_target_key(target)}"]
    header += ["final acc %", "train s"]
    rows = [header]
    for method, aggregate in aggregates.items():
        row = [method]
        for target in targets:
            figures = aggregate["targets"][_target_key(target)]
            row += [_format_mean_std(figures["steps"], 0), _format_mean_std(figures["seconds"], 1)]
        row += [
            _format_mean_std(aggregate["final_accuracy"], 2, scale=100.0),
            _format_mean_std(aggregate["train_seconds"], 1),
        ]
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)
