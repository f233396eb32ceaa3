"""The five optimizers the benchmark compares, on one learning-rate schedule.

Every method uses the same schedule shape: linear warmup from 0 to a peak learning rate over
`warmup_fraction` of the steps, then cosine decay to 0 at the last step. The peak is set once per
optimizer family and not tuned per method:

* SGD family ("sgd", "beta_sgd", "hybrid", "onecycle"): `sgd_peak_learning_rate`, 0.1 by default,
  the usual value for ResNets on CIFAR at batch 128 (He et al, `Deep Residual Learning for Image
  Recognition <https://arxiv.org/abs/1512.03385>`_, 2015).
* Adam: `adam_peak_learning_rate`, 1e-3 by default, the default of Kingma and Ba.

The SGD family adds the same L2 weight decay (`weight_decay` times the kernels) to the gradients
before the momentum; BatchNorm scales and biases do not decay. Adam runs without weight decay,
because L2 decay through Adam's per-coordinate scaling is not the decay SGD applies.
"""

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

import beta_optax
from beta_optax.training.config import TrainConfig

# Momentum of "onecycle" at the start and end of training (learning rate 0), and its drop
# at the peak learning rate, as in PyTorch's OneCycleLR (max_momentum 0.95, base_momentum 0.85).
ONECYCLE_MAX_MOMENTUM = 0.95
ONECYCLE_MOMENTUM_RANGE = 0.10
# Adam's first-moment decay, reported as its momentum.
ADAM_B1 = 0.9


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer and the schedules the training loop reports.

    Attributes:
        tx: the optax GradientTransformation.
        learning_rate_fn: step -> learning rate.
        constant_momentum: the momentum to report when the optimizer state stores none
            (plain optax.sgd and optax.adam); None when `beta_optax.applied_momentum` finds it.
    """

    tx: optax.GradientTransformation
    learning_rate_fn: optax.Schedule
    constant_momentum: float | None


def create_learning_rate_fn(
    peak_learning_rate: float, num_steps: int, warmup_fraction: float
) -> optax.Schedule:
    """Build linear warmup from 0 to `peak_learning_rate`, then cosine decay to 0 at `num_steps`."""
    if num_steps <= 0:
        raise ValueError(f"`num_steps` must be positive, got {num_steps}.")
    warmup_steps = int(round(warmup_fraction * num_steps))
    decay_steps = max(1, num_steps - warmup_steps)
    warmup = optax.linear_schedule(0.0, peak_learning_rate, max(1, warmup_steps))
    decay = optax.cosine_decay_schedule(peak_learning_rate, decay_steps)
    if warmup_steps == 0:
        return decay
    return optax.join_schedules([warmup, decay], [warmup_steps])


def onecycle_momentum_fn(learning_rate_fn: optax.Schedule, peak_learning_rate: float):
    """Build the momentum schedule mirroring the learning rate: 0.95 at lr 0, 0.85 at the peak."""

    def momentum_fn(step):
        fraction = learning_rate_fn(step) / peak_learning_rate
        return ONECYCLE_MAX_MOMENTUM - ONECYCLE_MOMENTUM_RANGE * fraction

    return momentum_fn


def decay_mask(params):
    """Return a pytree of bools, True for the kernels (ndim >= 2), the leaves that decay."""
    return jax.tree.map(lambda leaf: jnp.ndim(leaf) >= 2, params)


def create_optimizer(config: TrainConfig, num_steps: int) -> OptimizerSpec:
    """Build the optimizer of `config.method` on the shared schedule over `num_steps` steps."""
    peak = config.peak_learning_rate
    learning_rate_fn = create_learning_rate_fn(peak, num_steps, config.warmup_fraction)
    builders: dict[str, Callable[[], tuple[optax.GradientTransformation, float | None]]] = {
        "sgd": lambda: (optax.sgd(learning_rate_fn, momentum=config.momentum), config.momentum),
        "beta_sgd": lambda: (beta_optax.beta_sgd(learning_rate_fn), None),
        "hybrid": lambda: (
            beta_optax.hybrid_sgd(learning_rate_fn, momentum=config.momentum, switch_step=None),
            None,
        ),
        "onecycle": lambda: (
            optax.inject_hyperparams(optax.sgd)(
                learning_rate=learning_rate_fn,
                momentum=onecycle_momentum_fn(learning_rate_fn, peak),
            ),
            None,
        ),
        "adam": lambda: (optax.adam(learning_rate_fn, b1=ADAM_B1), ADAM_B1),
    }
    tx, constant_momentum = builders[config.method]()

    if config.method != "adam" and config.weight_decay > 0:
        tx = optax.chain(optax.add_decayed_weights(config.weight_decay, mask=decay_mask), tx)
    return OptimizerSpec(tx, learning_rate_fn, constant_momentum)


def reported_momentum(spec: OptimizerSpec, opt_state) -> jax.Array:
    """Return the momentum the last update applied, as a float32 scalar (jit-safe)."""
    if spec.constant_momentum is not None:
        return jnp.float32(spec.constant_momentum)
    momentum = beta_optax.applied_momentum(opt_state)
    if momentum is None:
        return jnp.float32(jnp.nan)
    return jnp.asarray(momentum, jnp.float32)
