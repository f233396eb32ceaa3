"""Compare the harness's training throughput with a bare flax + optax loop on the same model.

Both loops train the same ResNet with optax.sgd (momentum 0.9) on the same on-device data, with
the same crop, flip and normalization inside the jit-compiled step. The harness runs its own
compiled train step through `loop.run_loop`, with sharding, the per-epoch permutation and metric
reads every `log_every_steps`. The bare loop draws batch indices on the host and only dispatches
steps.
Rounds alternate between the two so that machine load affects both alike.

    python benchmarks/throughput.py --rounds 5 --steps 40
"""

import argparse
import functools
import os
import pathlib
import statistics
import tempfile
import time

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per loop")
    parser.add_argument("--steps", type=int, default=40, help="train steps per round")
    parser.add_argument("--width", type=float, default=1 / 8, help="ResNet-18 width multiplier")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--data-dir", default=None)
    return parser.parse_args(argv)


def make_bare_loop(run, model, batch_size):
    """Build a minimal flax + optax train step and a function that runs `steps` of it."""
    import jax
    import numpy as np
    import optax

    from beta_optax.training import augment

    tx = optax.sgd(run.spec.learning_rate_fn, momentum=0.9)
    data = run.device_data

    @functools.partial(jax.jit, donate_argnums=(0, 1, 2))
    def bare_step(params, batch_stats, opt_state, indices, key):
        images = augment.augment_batch(data.train_images[indices], key, data.mean, data.std)
        labels = data.train_labels[indices]

        def loss_fn(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": batch_stats},
                images,
                train=True,
                mutable=["batch_stats"],
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, updates["batch_stats"]

        (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), batch_stats, opt_state, loss

    num_examples = data.train_labels.shape[0]
    rng = np.random.default_rng(0)

    def run_steps(carry, steps):
        params, batch_stats, opt_state, key = carry
        for _ in range(steps):
            indices = rng.choice(num_examples, batch_size, replace=False).astype(np.int32)
            key, step_key = jax.random.split(key)
            params, batch_stats, opt_state, loss = bare_step(
                params, batch_stats, opt_state, indices, step_key
            )
        jax.block_until_ready(loss)
        return params, batch_stats, opt_state, key

    return run_steps, tx


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(REPO_ROOT / ".jax_cache"))
    import jax

    from beta_optax.training import cli, loop, train
    from beta_optax.training.config import TrainConfig

    cli.configure_logging()
    total = (args.rounds + 1) * args.steps
    config = TrainConfig(
        dataset=args.dataset,
        data_dir=args.data_dir,
        width_multiplier=args.width,
        batch_size=args.batch_size,
        method="sgd",
        num_steps=total + 1,
        eval_every_steps=10 * total,
        checkpoint_every_steps=10 * total,
    )
    workdir = tempfile.mkdtemp(prefix="throughput_")
    run, state, _ = loop.setup_run(config, workdir, resume=False)
    model = train.create_model(config, 10)
    run_bare, tx = make_bare_loop(run, model, args.batch_size)
    params = jax.tree.map(lambda x: x.copy(), state.params)
    batch_stats = jax.tree.map(lambda x: x.copy(), state.batch_stats)
    carry = (params, batch_stats, tx.init(params), jax.random.PRNGKey(1))

    harness_rates, bare_rates = [], []
    for round_index in range(args.rounds + 1):
        started = time.perf_counter()
        step = int(train.to_host(state.step))
        state = loop.run_loop(run, state, loop.Stopwatch(), None, until=step + args.steps)
        jax.block_until_ready(state)
        harness_seconds = time.perf_counter() - started

        started = time.perf_counter()
        carry = run_bare(carry, args.steps)
        bare_seconds = time.perf_counter() - started
        # Round 0 compiles the bare step and warms both loops up; it is not counted.
        if round_index > 0:
            harness_rates.append(args.steps * args.batch_size / harness_seconds)
            bare_rates.append(args.steps * args.batch_size / bare_seconds)
            print(
                f"round {round_index}: harness {harness_rates[-1]:.0f} img/s, "
                f"bare {bare_rates[-1]:.0f} img/s"
            )
    run.checkpointer.close()

    harness, bare = statistics.median(harness_rates), statistics.median(bare_rates)
    # The ratio within each round cancels load that changes between rounds.
    ratio = statistics.median(h / b for h, b in zip(harness_rates, bare_rates, strict=True))
    print(f"device: {jax.devices()[0].device_kind} x {jax.device_count()}")
    print(
        f"median over {args.rounds} rounds of {args.steps} steps at batch {args.batch_size}: "
        f"harness {harness:.0f} img/s, bare {bare:.0f} img/s, "
        f"median ratio per round {ratio:.3f}"
    )


if __name__ == "__main__":
    main()
