"""The optimizer benchmark: one training run per method and seed, then a table, JSON and plots.

Runs go in `out_dir/runs/<method>/seed<k>/`. They run one after another in this process, or in
`workers` subprocesses pinned one per CPU core with XLA limited to one thread each. On a 2-core
machine two pinned processes train about 1.7 times faster in total than one process using both
cores, because small convolutions do not scale across XLA's thread pool.
"""

import dataclasses
import datetime
import json
import logging
import os
import pathlib
import platform
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from importlib import metadata

import jax

from beta_optax.training import attribution, loop, plots
from beta_optax.training.config import TrainConfig
from beta_optax.training.metrics import (
    METRICS_FILE,
    aggregate_method,
    format_table,
    read_metrics,
    summarize_run,
)

logger = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
JOB_FILE = "job.json"
LOG_FILE = "log.txt"
# XLA CPU flag that runs each op on the calling thread; with one process per core this avoids
# thread-pool contention. Checked with jax 0.10.2.
SINGLE_THREAD_XLA_FLAG = "--xla_cpu_multi_thread_eigen=false"
_LIBRARIES = ("jax", "jaxlib", "optax", "flax", "orbax-checkpoint", "numpy", "beta-optax")


@dataclasses.dataclass(frozen=True)
class Job:
    """One training run of the benchmark."""

    method: str
    seed: int
    workdir: pathlib.Path


def plan_jobs(out_dir: pathlib.Path, methods: Sequence[str], seeds: Sequence[int]) -> list[Job]:
    """List the runs, seed-major, so that the first seed of every method finishes first."""
    return [
        Job(method, seed, out_dir / "runs" / method / f"seed{seed}")
        for seed in seeds
        for method in methods
    ]


def run_job(config: TrainConfig, job: Job, *, resume: bool, progress=None) -> dict:
    """Train one run in this process and write its summary.json.

    A run that stops on a non-finite loss is summarized from the metrics logged so far, with
    the message under "error".
    """
    config = config.replace(method=job.method, seed=job.seed)
    job.workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = _train(config, job.workdir, resume=resume, progress=progress)
        summary = result.summary
    except loop.NonFiniteLossError as error:
        summary = summarize_run(read_metrics(job.workdir / METRICS_FILE), config.targets)
        summary["error"] = str(error)
    if jax.process_index() == 0:
        (job.workdir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    return summary


def _train(config: TrainConfig, workdir: pathlib.Path, *, resume: bool, progress):
    if not config.record_diagnostics:
        return loop.train_and_evaluate(config, workdir, resume=resume, progress=progress)
    return attribution.train_with_diagnostics(config, workdir, resume=resume, progress=progress)


def run_worker_job(job_file: str | os.PathLike) -> dict:
    """Run the job described by a job.json that `run_in_workers` wrote (worker side)."""
    spec = json.loads(pathlib.Path(job_file).read_text())
    config = TrainConfig.from_json(json.dumps(spec["config"]))
    job = Job(spec["method"], spec["seed"], pathlib.Path(spec["workdir"]))
    return run_job(config, job, resume=spec["resume"])


def worker_environment(base: dict | None = None) -> dict:
    """Return the environment of a pinned CPU worker: CPU backend, one XLA thread."""
    env = dict(os.environ if base is None else base)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {SINGLE_THREAD_XLA_FLAG}".strip()
    return env


def run_in_workers(
    config: TrainConfig,
    jobs: Sequence[Job],
    *,
    workers: int,
    resume: bool,
    worker_command: Sequence[str],
    report: Callable[[str], None],
) -> None:
    """Run `jobs` in `workers` subprocesses at a time, worker k pinned to the k-th allowed core.

    Each subprocess runs `worker_command + ["--worker-job", JOB_FILE]` with its output in the
    run's log.txt.
    """
    cores = sorted(os.sched_getaffinity(0))
    pending = queue.Queue()
    for job in jobs:
        pending.put(job)

    def serve(slot: int) -> None:
        core = cores[slot % len(cores)]
        while True:
            try:
                job = pending.get_nowait()
            except queue.Empty:
                return
            _run_pinned(config, job, core, resume, worker_command, report)

    threads = [threading.Thread(target=serve, args=(slot,)) for slot in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _run_pinned(config, job, core, resume, worker_command, report) -> None:
    job.workdir.mkdir(parents=True, exist_ok=True)
    job_file = job.workdir / JOB_FILE
    spec = {
        "config": dataclasses.asdict(config),
        "method": job.method,
        "seed": job.seed,
        "workdir": str(job.workdir),
        "resume": resume,
    }
    job_file.write_text(json.dumps(spec, indent=2))
    report(f"start {job.method} seed {job.seed} on core {core}")
    with open(job.workdir / LOG_FILE, "w") as log:
        # taskset pins the process before XLA sizes its thread pools; preexec_fn would not be
        # safe here, because this runs in one of several threads.
        completed = subprocess.run(
            ["taskset", "-c", str(core), *worker_command, "--worker-job", str(job_file)],
            env=worker_environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if completed.returncode != 0 or not (job.workdir / SUMMARY_FILE).exists():
        report(
            f"FAILED {job.method} seed {job.seed}: exit {completed.returncode}, see "
            f"{job.workdir / LOG_FILE}"
        )
    else:
        report(f"done {job.method} seed {job.seed}: {_short_summary(job.workdir)}")


def _short_summary(workdir: pathlib.Path) -> str:
    summary = json.loads((workdir / SUMMARY_FILE).read_text())
    text = f"final accuracy {summary['final_accuracy']:.4f}"
    return text + (f" ({summary['error']})" if "error" in summary else "")


def environment_header(command: Sequence[str]) -> dict:
    """Describe the machine and software: CPU, cores, devices, library versions, date, command."""
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    devices = jax.devices()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(command),
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "cores_allowed": len(os.sched_getaffinity(0)),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "process_count": jax.process_count(),
        "python": platform.python_version(),
        "versions": versions,
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def collect_results(config, jobs: Sequence[Job], methods: Sequence[str], header: dict) -> dict:
    """Gather every run's summary and metrics into the results dict that results.json stores.

    A run without a summary.json failed: its seed is listed under the method's "failed_seeds"
    and, with the path of its log, under the top-level "failed".
    """
    results = {"header": header, "config": dataclasses.asdict(config), "methods": {}}
    results["failed"] = []
    for method in methods:
        summaries = {}
        failed_seeds = []
        for job in jobs:
            if job.method != method:
                continue
            summary_file = job.workdir / SUMMARY_FILE
            if summary_file.exists():
                summaries[str(job.seed)] = json.loads(summary_file.read_text())
                continue
            failed_seeds.append(job.seed)
            log = str(job.workdir / LOG_FILE)
            results["failed"].append({"method": method, "seed": job.seed, "log": log})
        results["methods"][method] = {
            "seeds": summaries,
            "failed_seeds": failed_seeds,
            "aggregate": aggregate_method(list(summaries.values()), config.targets),
        }
    return results


def mark_failed_runs(table: str, results: dict) -> str:
    """Mark the failed runs in a table from `format_table` over `results["methods"]`.

    A method whose runs all failed shows "failed" in every figure column instead of "never".
    A method with some failed runs gets "(k of n failed)" after its name.
    """
    # format_table pads cells and joins them with two or more spaces; cells have single spaces.
    rows = [re.split(r" {2,}", line) for line in table.splitlines()]
    for row, entry in zip(rows[2:], results["methods"].values(), strict=True):
        failed = len(entry["failed_seeds"])
        runs = failed + len(entry["seeds"])
        if failed and failed == runs:
            row[1:] = ["failed"] * (len(rows[0]) - 1)
        elif failed:
            row[0] += f" ({failed} of {runs} failed)"
    widths = [max(len(cell) for cell in column) for column in zip(*rows, strict=True)]
    rows[1] = ["-" * width for width in widths]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    return "\n".join(line.rstrip() for line in lines)


def write_report(results: dict, jobs: Sequence[Job], out_dir: pathlib.Path) -> str:
    """Write results.json, table.txt, accuracy.png and schedules.png; return the table."""
    targets = results["config"]["targets"]
    aggregates = {method: entry["aggregate"] for method, entry in results["methods"].items()}
    table = mark_failed_runs(format_table(aggregates, targets), results)
    (out_dir / "results.json").write_text(json.dumps(results, indent=2))
    (out_dir / "table.txt").write_text(table + "\n")

    runs = {method: [] for method in results["methods"]}
    for job in jobs:
        metrics_file = job.workdir / METRICS_FILE
        if metrics_file.exists():
            runs[job.method].append(read_metrics(metrics_file))
    config = results["config"]
    title = f"{config['dataset']}, {config['model']} at width {config['width_multiplier']:g}"
    plots.plot_accuracy(runs, out_dir / "accuracy.png", targets=targets, title=title)
    plots.plot_schedules(runs, out_dir / "schedules.png", title=title)
    return table


def run_benchmark(
    config: TrainConfig,
    *,
    methods: Sequence[str],
    seeds: Sequence[int],
    out_dir: str | os.PathLike,
    workers: int = 1,
    resume: bool = False,
    command: Sequence[str] = (),
    worker_command: Sequence[str] = (),
    report: Callable[[str], None] = logger.info,
    make_progress: Callable[[Job], "loop.Progress"] | None = None,
) -> tuple[dict, str]:
    """Train every method and seed, then write the report in `out_dir`.

    Args:
        workers: with 2 or more, runs go to pinned subprocesses started by `worker_command`,
            which must accept `--worker-job FILE`. With 1, they run in this process in turn.
        resume: continue runs from their checkpoints; finished runs are not run again.
        command: the command line, recorded in the results header.
        report: receives one status line per started and finished run.
        make_progress: builds the progress reporter of a run in this process (workers == 1).

    Returns:
        `(results, table)`. `results["failed"]` lists the runs that wrote no summary (a worker
        that crashed), each with the path of its log.txt; the table marks them "failed".
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs = plan_jobs(out_dir, methods, seeds)
    todo = [job for job in jobs if not (resume and (job.workdir / SUMMARY_FILE).exists())]
    if jax.process_index() == 0:
        for job in todo:
            # A summary left by an earlier run would hide a failure of this one.
            (job.workdir / SUMMARY_FILE).unlink(missing_ok=True)
    header = environment_header(command or sys.argv)
    header["workers"] = workers

    if workers > 1:
        if jax.process_count() > 1:
            raise ValueError(
                f"`workers`={workers} needs a single process; use 1 with --distributed."
            )
        if not worker_command:
            raise ValueError("`worker_command` is required when `workers` > 1.")
        run_in_workers(
            config,
            todo,
            workers=workers,
            resume=resume,
            worker_command=worker_command,
            report=report,
        )
    else:
        for job in todo:
            progress = make_progress(job) if make_progress is not None else None
            run_job(config, job, resume=resume, progress=progress)
            report(f"done {job.method} seed {job.seed}: {_short_summary(job.workdir)}")

    # NOTE: multi-host runs (jax.distributed) are written for but were never run: every process
    # trains each job in turn, and only the first writes metrics, summaries and the report.
    results = collect_results(config, jobs, methods, header)
    if jax.process_index() != 0:
        return results, ""
    return results, write_report(results, jobs, out_dir)
