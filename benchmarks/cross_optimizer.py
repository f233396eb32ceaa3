"""Do beta_sgd and Adam localize errors to the same layer groups?

Trains the same ResNet-18 (small width, short budget) with beta_sgd and with Adam for several
seeds through the harness, with the scan and the attribution pass at every evaluation point.
It then diagnoses each run and compares the two optimizers seed by seed: the Jaccard overlap of
their problem groups and Kendall's tau-b between their group scores. Writes per-run reports,
results.json and table.md in --out-dir.

The defaults fit 3 seeds x 2 optimizers in about 15 minutes on a 2-core CPU, with two worker
processes pinned one per core: width 1/8 (8-16-32-64 channels) and 400 steps of batch 128 (0.85
epochs of Fashion-MNIST). That is far shorter than a real training run, so the models are not
converged.

    flock /tmp/beta-optax-cpu.lock python benchmarks/cross_optimizer.py
"""

import argparse
import dataclasses
import json
import os
import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
OPTIMIZERS = ("beta_sgd", "adam")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out-dir",
        default=str(REPO_ROOT / "benchmarks/results/diagnostics/cross_optimizer"),
        help="directory of the runs and the results",
    )
    parser.add_argument("--dataset", default="fashion_mnist", help="dataset name")
    parser.add_argument(
        "--data-dir", default="/usr/share/datasets/fashion-mnist", help="dataset directory"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds per optimizer")
    parser.add_argument("--steps", type=int, default=400, help="training steps per run")
    parser.add_argument("--width", type=float, default=0.125, help="ResNet-18 width multiplier")
    parser.add_argument("--eval-every", type=int, default=100, help="steps between eval points")
    parser.add_argument(
        "--max-examples", type=int, default=1000, help="test examples per attribution pass"
    )
    parser.add_argument("--power-iterations", type=int, default=5, help="per group and point")
    parser.add_argument("--scan-batch", type=int, default=32, help="examples of the scan's loss")
    parser.add_argument("--workers", type=int, default=2, help="pinned worker processes")
    parser.add_argument("--model", default="resnet18", help="resnet18 or resnet_tiny")
    parser.add_argument(
        "--analyze-only", action="store_true", help="compare the runs already in --out-dir"
    )
    parser.add_argument("--worker-job", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def build_configs(args):
    from beta_optax.training.config import TrainConfig
    from beta_optax.training.scan import DiagnosticsConfig

    config = TrainConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        model=args.model,
        width_multiplier=args.width,
        num_steps=args.steps,
        eval_every_steps=args.eval_every,
        log_every_steps=args.eval_every,
        checkpoint_every_steps=0,
        checkpoints_to_keep=1,
    )
    diagnostics = DiagnosticsConfig(
        power_iterations=args.power_iterations,
        scan_batch_size=args.scan_batch,
        attribution_max_examples=args.max_examples,
    )
    return config, diagnostics


def run_worker(job_file: str, diagnostics_file: str) -> None:
    """Train one job of job.json with diagnostics and write its summary.json."""
    from beta_optax.training import benchmark
    from beta_optax.training.attribution import train_with_diagnostics
    from beta_optax.training.config import TrainConfig
    from beta_optax.training.scan import DiagnosticsConfig

    spec = json.loads(pathlib.Path(job_file).read_text())
    config = TrainConfig.from_json(json.dumps(spec["config"]))
    config = config.replace(method=spec["method"], seed=spec["seed"])
    diagnostics = DiagnosticsConfig.from_json(pathlib.Path(diagnostics_file).read_text())
    result = train_with_diagnostics(config, spec["workdir"], diagnostics)
    summary_file = pathlib.Path(spec["workdir"]) / benchmark.SUMMARY_FILE
    summary_file.write_text(json.dumps(result.summary, indent=2))


def compare(jobs, seeds) -> dict:
    """Diagnose every run and compare the optimizers seed by seed."""
    from beta_optax.training import report

    per_seed = {}
    for seed in seeds:
        runs = {job.method: job.workdir for job in jobs if job.seed == seed}
        diagnoses = {method: report.diagnose_run(runs[method]) for method in OPTIMIZERS}
        comparison = report.compare_diagnoses(*(diagnoses[method] for method in OPTIMIZERS))
        comparison["scores"] = {m: diagnoses[m].scores for m in OPTIMIZERS}
        comparison["final_accuracy"] = {
            m: report.write_report(runs[m])["run"]["final_accuracy"] for m in OPTIMIZERS
        }
        per_seed[str(seed)] = comparison

    aggregate = {name: _mean_std([e[name] for e in per_seed.values()]) for name in _MEASURES}

    # Baseline: the same optimizer across seeds. Agreement across optimizers means little
    # unless it is comparable to this.
    within = {}
    for method in OPTIMIZERS:
        diagnoses = [report.diagnose_run(j.workdir) for j in jobs if j.method == method]
        pairs = [
            report.compare_diagnoses(diagnoses[i], diagnoses[k])
            for i in range(len(diagnoses))
            for k in range(i + 1, len(diagnoses))
        ]
        within[method] = {name: _mean_std([p[name] for p in pairs]) for name in _MEASURES}
    return {"per_seed": per_seed, "aggregate": aggregate, "across_seeds": within}


_MEASURES = ("jaccard", "kendall_tau_b")


def compare_normalizations(jobs, seeds) -> dict:
    """Repeat the comparison for every normalization, with a group-size baseline.

    The baseline is Kendall's tau-b between a run's scores and 1 / sqrt(group size): how much
    of the ranking the number of parameters per group explains without any gradient.
    Nothing is written into the run directories.
    """
    import beta_optax
    from beta_optax.training import report

    histories = {
        (job.method, job.seed): beta_optax.load_history(job.workdir / "history.jsonl")
        for job in jobs
    }
    figures = {}
    for normalization in beta_optax.NORMALIZATIONS:
        diagnoses = {}
        for key, history in histories.items():
            groups = report.group_prefixes(history[0]["layer_norms"])
            diagnoses[key] = beta_optax.diagnose(
                history, groups=groups, normalization=normalization
            )
        pairs = [
            report.compare_diagnoses(diagnoses[("beta_sgd", seed)], diagnoses[("adam", seed)])
            for seed in seeds
        ]
        size_taus = [
            report.kendall_tau_b(
                [d.scores[name] for name in d.groups],
                [d.group_sizes[name] ** -0.5 for name in d.groups],
            )
            for d in diagnoses.values()
        ]
        figures[normalization] = {
            **{name: _mean_std([pair[name] for pair in pairs]) for name in _MEASURES},
            "size_baseline_tau": _mean_std(size_taus),
            "problem_groups": {
                f"{method} seed {seed}": list(d.problem_groups)
                for (method, seed), d in diagnoses.items()
            },
        }
    return figures


def _mean_std(values) -> dict:
    import numpy as np

    values = np.asarray(values, np.float64)
    if values.size == 0:
        return {"mean": None, "std": None, "runs": 0}
    std = float(values.std(ddof=1)) if values.size > 1 else 0.0
    return {"mean": float(values.mean()), "std": std, "runs": int(values.size)}


def format_table(comparison: dict) -> str:
    lines = [
        "| seed | beta_sgd problem groups | adam problem groups | Jaccard | Kendall tau-b "
        "| acc beta_sgd | acc adam |",
        "|---|---|---|---|---|---|---|",
    ]
    for seed, entry in comparison["per_seed"].items():
        groups = [", ".join(names) for names in entry["problem_groups"]]
        accuracy = entry["final_accuracy"]
        lines.append(
            f"| {seed} | {groups[0]} | {groups[1]} | {entry['jaccard']:.2f} "
            f"| {entry['kendall_tau_b']:+.2f} | {accuracy['beta_sgd']:.2%} "
            f"| {accuracy['adam']:.2%} |"
        )
    aggregate = comparison["aggregate"]
    lines.append(
        f"| mean +- std | | | {aggregate['jaccard']['mean']:.2f} +- "
        f"{aggregate['jaccard']['std']:.2f} | {aggregate['kendall_tau_b']['mean']:+.2f} +- "
        f"{aggregate['kendall_tau_b']['std']:.2f} | | |"
    )
    for method, figures in comparison["across_seeds"].items():
        if figures["jaccard"]["mean"] is None:
            continue
        lines.append(
            f"| {method} seed vs seed (baseline) | | | {figures['jaccard']['mean']:.2f} +- "
            f"{figures['jaccard']['std']:.2f} | {figures['kendall_tau_b']['mean']:+.2f} +- "
            f"{figures['kendall_tau_b']['std']:.2f} | | |"
        )
    return "\n".join(lines)


def format_normalization_table(results: dict) -> str:
    lines = [
        "| normalization | Jaccard beta_sgd vs adam | Kendall tau-b beta_sgd vs adam "
        "| tau-b of scores vs 1/sqrt(group size) |",
        "|---|---|---|---|",
    ]
    for normalization, figures in results["normalizations"].items():
        cells = [
            f"{figures[name]['mean']:+.2f} +- {figures[name]['std']:.2f}"
            for name in ("jaccard", "kendall_tau_b", "size_baseline_tau")
        ]
        lines.append(f"| {normalization} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO_ROOT / ".jax_cache"))
    out_dir = pathlib.Path(args.out_dir)
    diagnostics_file = out_dir / "diagnostics.json"
    if args.worker_job:
        run_worker(args.worker_job, str(diagnostics_file))
        return

    from beta_optax.training import benchmark

    config, diagnostics = build_configs(args)
    out_dir.mkdir(parents=True, exist_ok=True)
    diagnostics_file.write_text(diagnostics.to_json())
    seeds = list(range(args.seeds))
    jobs = benchmark.plan_jobs(out_dir, OPTIMIZERS, seeds)
    worker_command = [
        sys.executable,
        str(pathlib.Path(__file__).resolve()),
        "--out-dir",
        str(out_dir),
    ]
    results_file = out_dir / "results.json"
    if args.analyze_only:
        results = json.loads(results_file.read_text())
    else:
        benchmark.run_in_workers(
            config,
            jobs,
            workers=args.workers,
            resume=False,
            worker_command=worker_command,
            report=lambda line: print(line, flush=True),
        )
        comparison = compare(jobs, seeds)
        results = {
            "header": benchmark.environment_header(sys.argv),
            "config": dataclasses.asdict(config),
            "diagnostics": dataclasses.asdict(diagnostics),
            **comparison,
        }
    results["normalizations"] = compare_normalizations(jobs, seeds)
    comparison = results
    results_file.write_text(json.dumps(results, indent=2))
    table = format_table(comparison) + "\n\n" + format_normalization_table(results)
    (out_dir / "table.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
