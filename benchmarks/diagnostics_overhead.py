"""Cost of the diagnostics: per-step group norms, the attribution pass and the scan.

Two figures against their budgets, measured in one process:

1. The train step with per-group gradient and update norms in the optimizer state
   (`attribution.monitor_group_norms`) against the plain train step. The two compiled steps run
   in interleaved blocks, alternating which goes first, and the ratio of the median step times
   is reported. Budget: at most 1.05.
2. One attribution pass (misclassified-input gradients over `--max-examples` test examples)
   against half a training epoch of plain steps. Budget: at most 1.0. The scan of one
   evaluation point is timed as well, for reference.

    flock /tmp/beta-optax-cpu.lock python benchmarks/diagnostics_overhead.py
"""

import argparse
import json
import pathlib
import statistics
import sys
import time

import jax
import numpy as np

from beta_optax.training import attribution, benchmark, train
from beta_optax.training.config import TrainConfig
from beta_optax.training.optimizers import create_optimizer
from beta_optax.training.scan import DiagnosticsConfig

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--width", type=float, default=0.125, help="ResNet-18 width multiplier")
    parser.add_argument("--rounds", type=int, default=12, help="interleaved timing rounds")
    parser.add_argument("--block", type=int, default=10, help="steps per block and round")
    parser.add_argument(
        "--max-examples",
        type=int,
        nargs="+",
        default=[2000, 10000],
        help="attribution subset sizes to time",
    )
    parser.add_argument("--power-iterations", type=int, default=5, help="scan setting to time")
    parser.add_argument("--scan-batch", type=int, default=32, help="scan setting to time")
    parser.add_argument(
        "--out",
        default=str(REPO_ROOT / "benchmarks/results/diagnostics/overhead.json"),
        help="JSON file of the figures",
    )
    return parser.parse_args(argv)


def build(config):
    mesh = train.create_mesh()
    dataset = train.load_data(config)
    model = train.create_model(config, dataset.num_classes)
    spec = create_optimizer(config, 1000)
    params = train.create_train_state(config, model, spec, dataset.image_shape, mesh).params
    stats_spec = attribution.with_group_stats(spec, params)
    device_data = train.put_dataset(dataset, mesh, config.eval_batch_size)
    steps = {}
    for name, step_spec in (("plain", spec), ("group_stats", stats_spec)):
        state = train.create_train_state(config, model, step_spec, dataset.image_shape, mesh)
        train_fn, _ = train.compile_steps(
            state, device_data, model=model, spec=step_spec, config=config, mesh=mesh
        )
        steps[name] = [train_fn, state]
    return dataset, model, spec, device_data, steps


def time_steps(steps, device_data, rounds, block) -> dict:
    """Run the compiled steps in interleaved blocks; return per-step seconds of every block."""
    seconds = {name: [] for name in steps}
    names = list(steps)
    for round_index in range(rounds + 1):
        order = names if round_index % 2 == 0 else names[::-1]
        for name in order:
            train_fn, state = steps[name]
            started = time.perf_counter()
            for _ in range(block):
                state, metrics = train_fn(state, device_data)
            jax.block_until_ready((state, metrics))
            steps[name][1] = state
            # Round 0 is a warm-up and is not recorded.
            if round_index > 0:
                seconds[name].append((time.perf_counter() - started) / block)
    return seconds


def time_attribution(config, state, device_data, max_examples: int, repeats: int = 3) -> float:
    """Return the median seconds of one attribution pass (after an untimed first pass)."""
    settings = DiagnosticsConfig(attribution_max_examples=max_examples)
    recorder = attribution.DiagnosticsRecorder(pathlib.Path("/nonexistent"), config, settings)
    recorder.prepare(state.params, device_data)
    arguments = (state.params, state.batch_stats, device_data)
    jax.block_until_ready(recorder.attribution_pass(*arguments))
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        jax.block_until_ready(recorder.attribution_pass(*arguments))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def time_scan(config, state, device_data, settings: DiagnosticsConfig) -> float:
    """Return the seconds of one scan after an untimed first scan."""
    recorder = attribution.DiagnosticsRecorder(pathlib.Path("/nonexistent"), config, settings)
    recorder.prepare(state.params, device_data)
    images, labels = recorder.scan_batch
    recorder.scanner.curvatures(state.params, state.batch_stats, images, labels)
    started = time.perf_counter()
    recorder.scanner.curvatures(state.params, state.batch_stats, images, labels)
    return time.perf_counter() - started


def main(argv=None) -> None:
    args = parse_args(argv)
    config = TrainConfig(
        dataset="fashion_mnist",
        data_dir=args.data_dir,
        width_multiplier=args.width,
        method="beta_sgd",
    )
    dataset, model, spec, device_data, steps = build(config)
    seconds = time_steps(steps, device_data, args.rounds, args.block)
    plain = statistics.median(seconds["plain"])
    with_stats = statistics.median(seconds["group_stats"])
    half_epoch = plain * (len(dataset.train_labels) // config.batch_size) / 2

    state = steps["plain"][1]
    attribution_figures = {}
    for max_examples in args.max_examples:
        pass_seconds = time_attribution(config, state, device_data, max_examples)
        attribution_figures[str(max_examples)] = {
            "seconds": pass_seconds,
            "ratio_to_half_epoch": pass_seconds / half_epoch,
        }
    scan_settings = DiagnosticsConfig(
        power_iterations=args.power_iterations, scan_batch_size=args.scan_batch
    )
    scan_seconds = time_scan(config, state, device_data, scan_settings)

    results = {
        "header": benchmark.environment_header(sys.argv),
        "config": {"width_multiplier": args.width, "batch_size": config.batch_size},
        "step_seconds": {"plain": plain, "group_stats": with_stats},
        "step_seconds_all_blocks": seconds,
        "group_stats_ratio": with_stats / plain,
        "half_epoch_seconds": half_epoch,
        "attribution": attribution_figures,
        "scan_settings": {"power_iterations": args.power_iterations, "batch": args.scan_batch},
        "scan_seconds": scan_seconds,
        "scan_ratio_to_half_epoch": scan_seconds / half_epoch,
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))

    print(
        f"train step: plain {1e3 * plain:.1f} ms, with group norms {1e3 * with_stats:.1f} ms, "
        f"ratio {with_stats / plain:.3f} (budget 1.05)"
    )
    print(f"half epoch of plain steps: {half_epoch:.1f} s")
    for size, figures in attribution_figures.items():
        print(
            f"attribution pass over {size} test examples: {figures['seconds']:.2f} s, "
            f"{figures['ratio_to_half_epoch']:.3f} of half an epoch (budget 1.0)"
        )
    print(
        f"scan ({args.power_iterations} power iterations x 7 groups, {args.scan_batch} "
        f"examples): {scan_seconds:.2f} s, "
        f"{scan_seconds / half_epoch:.3f} of half an epoch"
    )
    print(
        f"spread of the block medians: plain {np.std(seconds['plain']) * 1e3:.1f} ms, "
        f"group_stats {np.std(seconds['group_stats']) * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
