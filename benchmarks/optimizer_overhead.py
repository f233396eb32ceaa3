"""Times the jit-compiled update of beta_sgd and hybrid_sgd against optax.sgd(momentum=0.9).

The parameters are a pytree with the shapes of a CIFAR ResNet-18 (about 11.2M parameters).
Methods run interleaved, round by round, so that drift in machine load hits all of them alike.
The script prints the median time per update, the ratio to optax.sgd and the optimizer-state
bytes of each method.

    python benchmarks/optimizer_overhead.py --rounds 7 --steps 20
"""

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import beta_optax


def resnet18_param_shapes(num_classes=10, widths=(64, 128, 256, 512)):
    """Returns {path: shape} for a CIFAR ResNet-18 (3x3 stem, two basic blocks per stage)."""
    shapes = {"stem_conv/kernel": (3, 3, 3, widths[0])}
    shapes.update({f"stem_norm/{name}": (widths[0],) for name in ("scale", "bias")})
    in_channels = widths[0]
    for stage, width in enumerate(widths, start=1):
        for block in (1, 2):
            prefix = f"stage{stage}_block{block}"
            shapes[f"{prefix}/conv1/kernel"] = (3, 3, in_channels, width)
            shapes[f"{prefix}/conv2/kernel"] = (3, 3, width, width)
            for norm in ("norm1", "norm2"):
                shapes.update({f"{prefix}/{norm}/{name}": (width,) for name in ("scale", "bias")})
            if in_channels != width:
                shapes[f"{prefix}/conv_proj/kernel"] = (1, 1, in_channels, width)
                shapes.update({f"{prefix}/norm_proj/{n}": (width,) for n in ("scale", "bias")})
            in_channels = width
    shapes["head/kernel"] = (in_channels, num_classes)
    shapes["head/bias"] = (num_classes,)
    return shapes


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    shapes = resnet18_param_shapes()
    return {
        path: jnp.asarray(rng.standard_normal(shape, np.float32)) for path, shape in shapes.items()
    }


def tree_bytes(tree) -> int:
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))


def make_step(optimizer):
    def step(params, state, grads):
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def time_steps(step, params, state, grads, steps):
    start = time.perf_counter()
    for _ in range(steps):
        params, state = step(params, state, grads)
    jax.block_until_ready((params, state))
    return (time.perf_counter() - start) / steps, params, state


def build_runs(methods, grads):
    """Compiles and warms up one jitted step per method."""
    runs = {}
    for name, optimizer in methods.items():
        params = make_params()
        state = optimizer.init(params)
        step = make_step(optimizer)
        _, params, state = time_steps(step, params, state, grads, 2)
        runs[name] = {
            "step": step,
            "params": params,
            "state": state,
            "times": [],
            "state_bytes": tree_bytes(state),
        }
    return runs


def run_rounds(runs, grads, rounds, steps):
    """Times every method once per round, rotating the order so no method always goes first."""
    names = list(runs)
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            run = runs[name]
            seconds, run["params"], run["state"] = time_steps(
                run["step"], run["params"], run["state"], grads, steps
            )
            run["times"].append(seconds)


def summarize(runs, baseline_name):
    baseline = statistics.median(runs[baseline_name]["times"])
    baseline_bytes = runs[baseline_name]["state_bytes"]
    results = {}
    for name, run in runs.items():
        median = statistics.median(run["times"])
        results[name] = {
            "ms_per_update": 1e3 * median,
            "ratio": median / baseline,
            "state_bytes": run["state_bytes"],
            "extra_state_bytes": run["state_bytes"] - baseline_bytes,
        }
    return results


def print_table(results, num_params, args):
    processor = platform.processor() or platform.machine()
    device = jax.devices()[0].device_kind
    print(f"jax {jax.__version__}, optax {optax.__version__}, {processor}, {device}")
    print(f"parameters: {num_params:,}; {args.rounds} rounds x {args.steps} updates per method")
    print(f"{'method':<26} {'ms/update':>10} {'ratio':>7} {'state bytes':>14} {'extra bytes':>12}")
    for name, row in results.items():
        print(
            f"{name:<26} {row['ms_per_update']:>10.2f} {row['ratio']:>7.3f} "
            f"{row['state_bytes']:>14,} {row['extra_state_bytes']:>12,}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=20, help="updates per method per round")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    schedule = optax.warmup_cosine_decay_schedule(0.0, 0.1, 100, 10_000)
    baseline_name = "optax.sgd(momentum=0.9)"
    methods = {
        baseline_name: optax.sgd(schedule, momentum=0.9),
        "beta_sgd": beta_optax.beta_sgd(schedule),
        "hybrid_sgd": beta_optax.hybrid_sgd(schedule),
    }
    grads = make_params(seed=1)
    num_params = sum(leaf.size for leaf in jax.tree.leaves(grads))

    runs = build_runs(methods, grads)
    run_rounds(runs, grads, args.rounds, args.steps)
    results = summarize(runs, baseline_name)

    print_table(results, num_params, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"num_params": num_params, "args": vars(args), "results": results}, f, indent=2
            )


if __name__ == "__main__":
    main()
