"""Train a ResNet-18 with five optimizers and report how fast each reaches target accuracies.

The methods share the model, data, seed, batch and learning-rate schedule (linear warmup, cosine
decay to 0); see beta_optax/training/optimizers.py. Settings come from a preset in
benchmarks/configs/ plus the flags below.

    # Full-width ResNet-18 on CIFAR-10, targets 90% and 95%:
    python benchmarks/cifar_resnet.py --dataset cifar10 --preset gpu --data-dir DIR
    # Fashion-MNIST at 1/8 width on 2 CPU cores (the default without an accelerator):
    python benchmarks/cifar_resnet.py --preset cpu --workers 2

Writes results.json, table.txt, accuracy.png and schedules.png in --out-dir, and each run's
metrics.jsonl and checkpoints under --out-dir/runs/.
"""

import argparse
import os
import pathlib
import sys

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
PRESETS = ("cpu", "gpu", "test")


def parse_args(argv=None) -> argparse.Namespace:
    """Parse the flags; bad values end with a usage error that names the flag."""
    from beta_optax.training import cli
    from beta_optax.training.config import METHODS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--preset", choices=PRESETS, help="default: gpu with an accelerator, else cpu"
    )
    parser.add_argument("--dataset", choices=("cifar10", "fashion_mnist", "synthetic"))
    parser.add_argument(
        "--methods", help=f"comma-separated subset of {','.join(METHODS)} (default: all five)"
    )
    parser.add_argument("--seeds", type=int, default=1, help="number of seeds, 0 to N-1")
    parser.add_argument("--out-dir", help="output directory (default: runs/<dataset>_<preset>)")
    parser.add_argument("--data-dir", help="directory with the dataset files or a tfds copy")
    parser.add_argument("--download", action="store_true", help="allow a tfds download")
    parser.add_argument("--steps", type=int, help="training steps, replacing the preset's length")
    parser.add_argument(
        "--workers", type=int, help="CPU subprocesses pinned one per core (default: the preset's)"
    )
    parser.add_argument("--resume", action="store_true", help="continue from checkpoints")
    parser.add_argument("--distributed", action="store_true", help="call jax.distributed first")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument(
        "--diagnostics",
        action="store_true",
        help="also record the damping scan and misclassification attribution at each evaluation, "
        "for `python -m beta_optax pipeline RUN_DIR`",
    )
    parser.add_argument("--worker-job", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    for flag, value in (
        ("--seeds", args.seeds),
        ("--steps", args.steps),
        ("--workers", args.workers),
    ):
        if value is not None and value < 1:
            parser.error(f"`{flag}` must be 1 or more, got {value}.")
    try:
        args.methods = cli.parse_methods(args.methods)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv=None) -> int:
    """Run the benchmark; return 1 when a run failed, else 0."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # Set before the first jax import, which parse_args makes.
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO_ROOT / ".jax_cache"))
    args = parse_args(argv)
    import jax

    if args.distributed:
        jax.distributed.initialize()

    from beta_optax.training import benchmark, cli

    cli.configure_logging()
    if args.worker_job:
        benchmark.run_worker_job(args.worker_job)
        return 0

    preset_name = args.preset or ("cpu" if jax.default_backend() == "cpu" else "gpu")
    preset = cli.load_preset(REPO_ROOT / "benchmarks" / "configs" / f"{preset_name}.py")
    config = cli.apply_flags(preset.get_config(), args)
    out_dir = args.out_dir or REPO_ROOT / "runs" / f"{config.dataset}_{preset_name}"
    results, table = benchmark.run_benchmark(
        config,
        methods=args.methods,
        seeds=range(args.seeds),
        out_dir=out_dir,
        workers=args.workers if args.workers is not None else preset.WORKERS,
        resume=args.resume,
        command=["python", _script_path(), *argv],
        worker_command=[sys.executable, str(pathlib.Path(__file__).resolve())],
        report=print,
        make_progress=None if args.no_progress else cli.make_progress,
    )
    if jax.process_index() != 0:
        return 0
    print(cli.format_header(results["header"]))
    print(table)
    print(f"Wrote {out_dir}/results.json, table.txt, accuracy.png and schedules.png.")
    if not results["failed"]:
        return 0
    print(f"{len(results['failed'])} run(s) failed; their logs:", file=sys.stderr)
    for run in results["failed"]:
        print(f"  {run['method']} seed {run['seed']}: {run['log']}", file=sys.stderr)
    return 1


def _script_path() -> str:
    script = pathlib.Path(__file__).resolve()
    try:
        return str(script.relative_to(pathlib.Path.cwd()))
    except ValueError:
        return str(script)


if __name__ == "__main__":
    sys.exit(main())
