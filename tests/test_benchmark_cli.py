"""The benchmark command line end to end on the test preset (tiny ResNet, random data)."""

import importlib.util
import json
import pathlib

import pytest

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


def test_cli_rejects_unknown_method(tmp_path):
    script = load_script()
    with pytest.raises(ValueError, match="`--methods`"):
        script.main(["--preset", "test", "--methods", "sgd,lion", "--out-dir", str(tmp_path)])


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
