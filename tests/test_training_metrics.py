"""Metric writing, run summaries, mean +- std over seeds and the results table."""

import math

import pytest

from beta_optax.training import metrics, plots

ROWS = [
    {"step": 10, "train_loss": 1.0},
    {"step": 10, "eval_accuracy": 0.80, "train_seconds": 1.5},
    {"step": 20, "eval_accuracy": 0.91, "train_seconds": 3.0},
    {"step": 30, "eval_accuracy": 0.89, "train_seconds": 4.5},
]


def test_writer_appends_and_truncates(tmp_path):
    writer = metrics.MetricWriter(tmp_path / "sub" / "metrics.jsonl")
    for step in (1, 2, 3):
        writer.write_scalars(step, {"train_loss": step / 10, "train_momentum": None})
    writer.truncate_after(2)
    rows = metrics.read_metrics(writer.path)
    assert [row["step"] for row in rows] == [1, 2]
    assert rows[0]["train_loss"] == pytest.approx(0.1)
    assert math.isnan(rows[0]["train_momentum"])


def test_disabled_writer_writes_nothing(tmp_path):
    writer = metrics.MetricWriter(tmp_path / "metrics.jsonl", enabled=False)
    writer.write_scalars(1, {"train_loss": 1.0})
    assert not writer.path.exists()


@pytest.mark.parametrize(
    ("target", "expected"),
    [(0.8, (10, 1.5)), (0.9, (20, 3.0)), (0.95, (None, None))],
    ids=["first_eval", "later_eval", "never"],
)
def test_first_crossing(target, expected):
    assert metrics.first_crossing(ROWS, target) == expected


def test_summarize_run_reports_final_and_best():
    summary = metrics.summarize_run(ROWS, (0.9,))
    assert summary["final_accuracy"] == 0.89
    assert summary["best_accuracy"] == 0.91
    assert summary["train_seconds"] == 4.5
    assert summary["targets"]["90%"] == {"steps": 20, "seconds": 3.0}


def test_mean_std_skips_missing_values():
    figure = metrics.mean_std([2.0, None, 4.0])
    assert figure["mean"] == 3.0
    assert figure["std"] == pytest.approx(math.sqrt(2.0))
    assert (figure["reached"], figure["runs"]) == (2, 3)
    assert metrics.mean_std([None])["mean"] is None


def test_format_table_shows_never_and_counts():
    reached = metrics.summarize_run(ROWS, (0.9,))
    missed = metrics.summarize_run(ROWS[:2], (0.9,))
    table = metrics.format_table(
        {"sgd": metrics.aggregate_method([reached, missed], (0.9,))}, (0.9,)
    )
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["method", "steps", "to"]
    assert "20 (1/2)" in lines[2]
    assert "84.50 +- 6.36" in lines[2]


@pytest.mark.parametrize(
    ("percents", "expected"),
    [([60.0, 90.0, 95.0], 55.0), ([2.0, 90.0], 0.0), ([], 0.0)],
    ids=["low_point", "clipped_at_zero", "no_points"],
)
def test_accuracy_axis_bottom_shows_lowest_value(percents, expected):
    assert plots.accuracy_axis_bottom(percents) == expected


def test_plot_accuracy_keeps_points_below_targets(tmp_path, monkeypatch):
    plt = plots._pyplot()
    close = plt.close
    closed = []
    monkeypatch.setattr(plt, "close", closed.append)
    rows = [{"step": 10, "eval_accuracy": 0.60}, {"step": 20, "eval_accuracy": 0.93}]

    plots.plot_accuracy({"sgd": [rows]}, tmp_path / "accuracy.png", targets=(0.9, 0.95))

    (axes,) = closed[0].axes
    bottom, top = axes.get_ylim()
    assert bottom < 60.0
    assert top == 100
    target_lines = [line for line in axes.lines if line.get_linestyle() == ":"]
    assert sorted(line.get_ydata()[0] for line in target_lines) == [90.0, 95.0]
    assert (tmp_path / "accuracy.png").stat().st_size > 0
    close(closed[0])
