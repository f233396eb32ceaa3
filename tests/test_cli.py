"""Tests of `python -m beta_optax` on a tiny run directory made here."""

import json
import shutil

import pytest

from beta_optax.__main__ import main
from beta_optax.training import loop
from beta_optax.training.attribution import HISTORY_FILE, train_with_diagnostics
from beta_optax.training.config import TrainConfig
from beta_optax.training.scan import SCAN_FILE, DiagnosticsConfig

_CONFIG = TrainConfig(
    dataset="synthetic",
    model="resnet_tiny",
    width_multiplier=1 / 16,
    method="beta_sgd",
    batch_size=16,
    num_steps=8,
    eval_every_steps=4,
    log_every_steps=4,
    eval_batch_size=32,
    checkpoint_every_steps=4,
    synthetic_examples=(64, 32),
    synthetic_image_shape=(8, 8, 3),
)
_DIAGNOSTICS = DiagnosticsConfig(
    power_iterations=2, scan_batch_size=16, attribution_max_examples=32, attribution_batch_size=16
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("run")
    train_with_diagnostics(_CONFIG, directory, _DIAGNOSTICS)
    return directory


def test_training_records_history_scan_and_metrics(run_dir):
    history = [json.loads(line) for line in (run_dir / HISTORY_FILE).read_text().splitlines()]
    assert [entry["step"] for entry in history] == [4, 8]
    scans = [json.loads(line) for line in (run_dir / SCAN_FILE).read_text().splitlines()]
    assert len(scans[0]["groups"]) == 7
    rows = loop.read_metrics(run_dir / "metrics.jsonl")
    assert any("scan_head_curvature" in row and "stats_head_grad_norm" in row for row in rows)


def test_cli_pipeline_writes_report(run_dir, capsys):
    assert main(["pipeline", str(run_dir), "--steps", "2", "--no-full"]) == 0
    for name in ("report.md", "report.json", "heatmap.png", "zeta.png", "correction.json"):
        assert (run_dir / name).is_file(), name
    report = json.loads((run_dir / "report.json").read_text())
    correction = json.loads((run_dir / "correction.json").read_text())
    assert report["correction"]["surgical"] == correction["surgical"]
    assert report["diagnosis"]["problem_groups"]
    assert "surgical correction" in (run_dir / "report.md").read_text()
    assert "surgical" in capsys.readouterr().out


def test_cli_diagnose_from_checkpoints(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / HISTORY_FILE).unlink()
    (copy / SCAN_FILE).unlink()
    assert main(["diagnose", str(copy), "--max-examples", "16"]) == 0
    history = [json.loads(line) for line in (copy / HISTORY_FILE).read_text().splitlines()]
    assert [entry["step"] for entry in history] == [4, 8]
    assert (copy / "diagnosis.json").is_file()


def test_cli_not_a_run_names_missing_files(tmp_path, capsys):
    with pytest.raises(SystemExit) as error:
        main(["diagnose", str(tmp_path)])
    assert error.value.code == 2
    message = capsys.readouterr().err
    assert "config.json" in message
    assert "checkpoints/" in message
    assert "benchmarks/cifar_resnet.py" in message


def test_cli_correct_without_diagnosis(run_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "diagnosis.json").unlink(missing_ok=True)
    with pytest.raises(SystemExit):
        main(["correct", str(copy)])
    assert "python -m beta_optax diagnose" in capsys.readouterr().err
