"""PNG plots of logged metrics: test accuracy, learning rate and momentum against step.

Matplotlib is imported inside the functions, with the file-only Agg backend, so importing this
module costs nothing and needs no display.
"""

import math
import os
from collections.abc import Mapping, Sequence

from beta_optax.training.metrics import series

# One color per method, fixed so that every plot of a benchmark uses the same legend.
_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")
# Line styles and markers too, so that methods with equal curves (the hybrid before its switch
# equals beta_sgd) stay visible.
_STYLES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1)))
_MARKERS = ("o", "s", "^", "v", "D", "x")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _line_style(number: int) -> dict:
    return {
        "color": _COLORS[number % len(_COLORS)],
        "linestyle": _STYLES[number % len(_STYLES)],
        "marker": _MARKERS[number % len(_MARKERS)],
        "markersize": 3,
    }


def accuracy_axis_bottom(percents: Sequence[float], margin: float = 5.0) -> float:
    """Return the lower limit of an accuracy axis in percent that shows every value.

    The limit is the lowest value minus `margin`, clipped to 0; with no values it is 0.
    """
    return max(0.0, min(percents, default=0.0) - margin)


def plot_accuracy(
    runs: Mapping[str, Sequence[Sequence[Mapping]]],
    path: str | os.PathLike,
    *,
    targets: Sequence[float] = (),
    title: str = "",
) -> None:
    """Plot test accuracy against step, one color per method and one line per seed.

    Args:
        runs: method -> list over seeds of metric rows (as `metrics.read_metrics` returns).
        path: the PNG file to write.
        targets: accuracies to mark with dotted horizontal lines.
        title: figure title.
    """
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 5))
    plotted = [100 * target for target in targets]
    for number, (method, seed_rows) in enumerate(runs.items()):
        style = _line_style(number)
        for index, rows in enumerate(seed_rows):
            steps, accuracies = series(rows, "eval_accuracy")
            percents = [100 * a for a in accuracies]
            plotted += [percent for percent in percents if math.isfinite(percent)]
            label = method if index == 0 else None
            axes.plot(steps, percents, label=label, alpha=0.8, **style)
    for target in targets:
        axes.axhline(100 * target, color="gray", linestyle=":", linewidth=1)
    axes.set_ylim(accuracy_axis_bottom(plotted), 100)
    axes.set_xlabel("training step")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    # With every run failed there is no line to label.
    if axes.get_legend_handles_labels()[0]:
        axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_schedules(
    runs: Mapping[str, Sequence[Sequence[Mapping]]], path: str | os.PathLike, *, title: str = ""
) -> None:
    """Plot the logged learning rate and momentum against step, first seed of each method."""
    plt = _pyplot()
    figure, (lr_axes, momentum_axes) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    for number, (method, seed_rows) in enumerate(runs.items()):
        if not seed_rows:
            continue
        style = _line_style(number)
        style["marker"] = None
        steps, learning_rates = series(seed_rows[0], "train_learning_rate")
        lr_axes.plot(steps, learning_rates, label=method, **style)
        steps, momenta = series(seed_rows[0], "train_momentum")
        momentum_axes.plot(steps, momenta, label=method, **style)
    lr_axes.set_yscale("log")
    lr_axes.set_ylabel("learning rate (log scale)")
    momentum_axes.set_ylabel("momentum (Adam: b1)")
    momentum_axes.set_xlabel("training step")
    for axes in (lr_axes, momentum_axes):
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend()
    lr_axes.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
