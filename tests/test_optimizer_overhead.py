"""The optimizer-overhead benchmark runs end to end with a tiny budget."""

import json
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "optimizer_overhead.py"


def test_optimizer_overhead_runs_one_round(tmp_path):
    output = tmp_path / "overhead.json"

    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--rounds", "1", "--steps", "1", "--json", str(output)],
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert "beta_sgd" in result.stdout
    report = json.loads(output.read_text())
    assert report["num_params"] == 11_173_962
    rows = report["results"]
    assert set(rows) == {"optax.sgd(momentum=0.9)", "beta_sgd", "hybrid_sgd"}
    assert rows["beta_sgd"]["extra_state_bytes"] == 8  # an int32 count and a float32 momentum
    assert all(row["ms_per_update"] > 0 for row in rows.values())
