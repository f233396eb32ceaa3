"""The benchmark command line end to end on the test preset (tiny ResNet, random data)."""

import importlib.util
import json
import pathlib

import pytest

from beta_optax.training import benchmark

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "benchmarks" / "cifar_resnet.py"


def load_script():
    spec = importlib.util.spec_from_file_location("cifar_resnet", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("workers", [1, 2], ids=["in_process", "two_workers"])
def test_cli_writes_table_json_and_plots(tmp_path, capsys, workers):
    script = load_script()
    argv = ["--preset", "test", "--methods", "sgd,hybrid", "--out-dir", str(tmp_path)]
    script.main([*argv, "--workers", str(workers), "--no-progress"])

    output = capsys.readouterr().out
    assert "steps to 10%" in output
    assert "hybrid" in output
    for name in ("results.json", "table.txt", "accuracy.png", "schedules.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["methods"]) == ["sgd", "hybrid"]
    assert "--preset test" in results["header"]["command"]
    assert results["header"]["workers"] == workers
    summary = results["methods"]["sgd"]["seeds"]["0"]
    assert summary["final_step"] == 8
    assert set(summary["targets"]) == {"10%", "50%"}
    assert results["methods"]["hybrid"]["aggregate"]["final_accuracy"]["runs"] == 1


def test_cli_resume_skips_finished_runs(tmp_path, capsys):
    script = load_script()
    argv = ["--preset", "test", "--methods", "adam", "--out-dir", str(tmp_path), "--no-progress"]
    script.main(argv)
    first = (tmp_path / "results.json").read_text()
    capsys.readouterr()

    script.main([*argv, "--resume"])
    assert "done adam" not in capsys.readouterr().out
    first_seeds = json.loads(first)["methods"]["adam"]["seeds"]
    assert json.loads((tmp_path / "results.json").read_text())["methods"]["adam"]["seeds"] == (
        first_seeds
    )


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--methods", "sgd,lion"], "unknown names lion; choose from sgd, beta_sgd, hybrid"),
        (["--methods", ""], "gives no method; choose from sgd, beta_sgd, hybrid"),
        (["--methods", "sgd,sgd"], "names sgd more than once"),
        (["--seeds", "0"], "`--seeds` must be 1 or more, got 0"),
        (["--steps", "-3"], "`--steps` must be 1 or more, got -3"),
        (["--workers", "0"], "`--workers` must be 1 or more, got 0"),
    ],
    ids=[
        "unknown_method",
        "no_method",
        "repeated_method",
        "no_seeds",
        "negative_steps",
        "no_workers",
    ],
)
def test_cli_rejects_bad_flags_with_usage_error(tmp_path, capsys, flags, expected):
    script = load_script()
    with pytest.raises(SystemExit) as raised:
        script.main(["--preset", "test", "--out-dir", str(tmp_path), *flags])

    assert raised.value.code == 2
    error = capsys.readouterr().err
    assert error.startswith("usage:")
    assert expected in error
    assert "Traceback" not in error
    assert not (tmp_path / "runs").exists()


def test_cli_help_lists_methods(capsys):
    script = load_script()
    with pytest.raises(SystemExit):
        script.main(["--help"])

    help_text = " ".join(capsys.readouterr().out.split())
    assert "sgd,beta_sgd,hybrid,adam,onecycle" in help_text


def test_cli_failed_worker_exits_nonzero_and_names_log(tmp_path, capsys):
    script = load_script()
    # The worker finds no CIFAR-10 in an empty folder and exits with an error.
    argv = ["--preset", "test", "--dataset", "cifar10", "--data-dir", str(tmp_path / "none")]
    argv += ["--methods", "sgd", "--workers", "2", "--out-dir", str(tmp_path), "--no-progress"]

    assert script.main(argv) == 1

    captured = capsys.readouterr()
    log = tmp_path / "runs" / "sgd" / "seed0" / "log.txt"
    assert "DatasetNotFoundError" in log.read_text()
    assert f"sgd seed 0: {log}" in captured.err
    table = (tmp_path / "table.txt").read_text()
    assert "failed" in table.splitlines()[2]
    assert "never" not in table
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["failed"] == [{"method": "sgd", "seed": 0, "log": str(log)}]
    assert results["methods"]["sgd"]["failed_seeds"] == [0]


def test_mark_failed_runs_keeps_columns_aligned():
    table = "method  steps to 10%  final acc %\n------  ------------  -----------\n"
    table += "sgd     4 (1/1)       12.50\nadam    never         never"
    results = {
        "methods": {
            "sgd": {"seeds": {"0": {}}, "failed_seeds": [1]},
            "adam": {"seeds": {}, "failed_seeds": [0, 1]},
        }
    }

    lines = benchmark.mark_failed_runs(table, results).splitlines()

    assert lines[2].startswith("sgd (1 of 2 failed)  4 (1/1)")
    assert lines[3].split() == ["adam", "failed", "failed"]
    assert lines[0].index("steps") == lines[2].index("4 (1/1)") == lines[3].index("failed")


def test_cli_diagnostics_records_history_and_scan(tmp_path, capsys):
    script = load_script()
    argv = ["--preset", "test", "--methods", "beta_sgd", "--out-dir", str(tmp_path)]
    script.main([*argv, "--diagnostics", "--no-progress"])
    capsys.readouterr()

    run_dir = tmp_path / "runs" / "beta_sgd" / "seed0"
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    scans = (run_dir / "scan.jsonl").read_text().splitlines()
    assert len(history) >= 1
    assert history[0]["layer_norms"]
    assert len(scans) == len(history)
    metrics = (run_dir / "metrics.jsonl").read_text()
    assert '"scan_stem_conv_curvature"' in metrics
    assert '"scan_stem_conv_regime"' in metrics
