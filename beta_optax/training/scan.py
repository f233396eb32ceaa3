"""Scan: the damping regime of each layer group at an evaluation point.

For every layer group the scan estimates the curvature h, the top eigenvalue of the group's block
of the loss Hessian, by power iteration on Hessian-vector products. The products are
forward-over-reverse (`jax.jvp` of `jax.grad`) on one fixed training batch. The direction is zero
outside the group and each product is projected back onto the group. With the learning rate and
momentum of the last update, the damping ratio is
zeta = (1 - momentum) / (2 * sqrt(learning_rate * h)) and `classify_damping` names the regime.

Power iteration converges to the eigenvalue of largest magnitude. When that eigenvalue is
negative (or zero), the group sits on negative curvature, the damping ratio is undefined, and
the scan reports the regime "undefined" with the curvature it found instead of a zeta.

The loss of the products is the cross-entropy of the model in train mode: BatchNorm normalizes
with the statistics of the batch, as in the train step, and the updated running averages are
discarded. This is the loss the optimizer descends. The L2 weight decay of the SGD family would
add `weight_decay` (5e-4 by default) to the curvature of kernels and is left out.

References:
  Pasichnyk, `Beta-Scheduling <https://arxiv.org/abs/2603.28921>`_, 2026.
"""

import dataclasses
import json
import math
import operator
import os
import warnings
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import beta_optax
from beta_optax import _paths
from beta_optax.training.models import LAYER_GROUPS, resnet_group

SCAN_FILE = "scan.jsonl"
UNDEFINED_REGIME = "undefined"
# Numeric code of each regime in metrics.jsonl, whose values must be numbers.
REGIME_CODES = {"underdamped": -1.0, "critical": 0.0, "overdamped": 1.0}
REGIMES = (*REGIME_CODES, UNDEFINED_REGIME)
ATTRIBUTION_SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class DiagnosticsConfig:
    """Settings of the scan and the attribution pass at each evaluation point."""

    # Hessian-vector products per group and evaluation point. Each costs about two gradients of
    # `scan_batch_size` examples. scan.jsonl records the residual, which shows convergence.
    power_iterations: int = 10
    # Training examples (fixed for the whole run, not augmented) in the scan's loss.
    scan_batch_size: int = 128
    # Half-width of the critical band: |zeta - 1| <= tolerance counts as critically damped.
    damping_tolerance: float = beta_optax.DEFAULT_DAMPING_TOLERANCE
    # Split whose misclassified inputs the attribution pass uses: "train" or "test".
    attribution_split: str = "test"
    # Examples of that split the pass examines (a fixed random subset when the split is larger).
    # It bounds the cost: forward plus two backward passes per example.
    attribution_max_examples: int = 2000
    # Examples per batch of the attribution pass.
    attribution_batch_size: int = 250
    # Record per-group gradient and update norms in the optimizer state at every train step.
    group_stats: bool = True
    # Seed of the scan batch, the power-iteration start and the attribution subset.
    seed: int = 0

    def __post_init__(self):
        for name in (
            "power_iterations",
            "scan_batch_size",
            "attribution_max_examples",
            "attribution_batch_size",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1, got {getattr(self, name)}.")
        if self.attribution_split not in ATTRIBUTION_SPLITS:
            raise ValueError(
                f"`attribution_split`={self.attribution_split!r} is unknown; expected one of "
                f"{ATTRIBUTION_SPLITS}."
            )
        if not self.damping_tolerance >= 0:
            raise ValueError(f"`damping_tolerance` must be >= 0, got {self.damping_tolerance}.")

    def to_json(self) -> str:
        """Serialize every field as a JSON object."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "DiagnosticsConfig":
        """Build a config from `to_json` output."""
        return cls(**json.loads(text))


@dataclasses.dataclass(frozen=True)
class GroupScan:
    """The scan of one layer group at one evaluation point.

    Attributes:
        group: the layer group.
        curvature: the power-iteration eigenvalue estimate h (may be <= 0).
        residual: ||H v - h v|| / |h| of the final direction v, small when converged.
        zeta: the damping ratio, or None when the regime is undefined.
        regime: "underdamped", "critical", "overdamped" or "undefined".
        reason: why the regime is undefined, else "".
    """

    group: str
    curvature: float
    residual: float
    zeta: float | None
    regime: str
    reason: str = ""


def group_flags(params, group_fn: Callable[[str], str], groups: Sequence[str]):
    """Build a pytree like `params` whose leaves are float32 (len(groups),) one-hot rows.

    Row entry g is 1 where the leaf belongs to `groups[g]`.
    """
    index = {name: position for position, name in enumerate(groups)}
    flat = _paths.flatten_with_paths(params)
    rows = {}
    for path in flat:
        row = np.zeros(len(groups), np.float32)
        row[index[group_fn(path)]] = 1.0
        rows[path] = jnp.asarray(row)
    return _paths.unflatten_like(params, rows)


def present_groups(params, group_fn: Callable[[str], str] = resnet_group) -> tuple[str, ...]:
    """Return the groups that own at least one leaf of `params`, ResNet groups in network order."""
    found = {group_fn(path) for path in _paths.leaf_paths(params)}
    ordered = [name for name in LAYER_GROUPS if name in found]
    return tuple(ordered + sorted(found - set(ordered)))


def start_noise(params, seed: int):
    """Draw standard normal values shaped like `params`, on the host.

    Drawing them with numpy keeps the random number generator out of the compiled scan, which
    would more than double its compile time (9 s -> 20 s for the tiny ResNet on CPU, jax
    0.10.2).
    """
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda leaf: jnp.asarray(rng.standard_normal(leaf.shape), leaf.dtype), params
    )


def _tree_vdot(left, right) -> jax.Array:
    products = jax.tree.map(lambda a, b: jnp.vdot(a, b).real, left, right)
    return sum(jax.tree.leaves(products), jnp.zeros((), jnp.float32))


def _restrict(tree, flags):
    return jax.tree.map(
        lambda leaf, flag: jnp.where(flag > 0, leaf, 0.0).astype(leaf.dtype), tree, flags
    )


def start_direction(noise, row):
    """Restrict `noise` to one group (`row`: 0/1 per leaf) and scale it to unit norm (jit-safe)."""
    direction = _restrict(noise, row)
    return _scale(direction, jax.lax.rsqrt(_tree_vdot(direction, direction)))


def power_iteration_step(loss_fn: Callable, params, direction, row):
    """Apply the group-restricted Hessian to a unit `direction` once (jit-safe).

    Args:
        loss_fn: params -> scalar loss.
        params: the point at which the Hessian is taken.
        direction: a unit vector (pytree like `params`), zero outside the group.
        row: a pytree like `params` of 0-d arrays, 1 on the group's leaves and 0 elsewhere.

    Returns:
        `(next_direction, rayleigh, residual)`: the normalized product, the Rayleigh quotient
        h = v.Hv and ||Hv - hv|| / |h|.
    """
    product = jax.jvp(jax.grad(loss_fn), (params,), (direction,))[1]
    product = _restrict(product, row)
    rayleigh = _tree_vdot(direction, product)
    norm = jnp.sqrt(_tree_vdot(product, product))
    # ||Hv - hv||^2 = ||Hv||^2 - h^2 for a unit v and h = v.Hv.
    residual = jnp.sqrt(jnp.maximum(norm**2 - rayleigh**2, 0.0)) / jnp.abs(rayleigh)
    # A zero product (a group the loss does not depend on) keeps the old direction.
    scale = jnp.where(norm > 0, 1.0 / jnp.where(norm > 0, norm, 1.0), 0.0)
    keep = jnp.where(norm > 0, 0.0, 1.0)
    next_direction = jax.tree.map(lambda p, d: p * scale + d * keep, product, direction)
    return next_direction, rayleigh, residual


def top_curvatures(
    step_fn: Callable, noise, flags, *, num_iterations: int
) -> tuple[np.ndarray, np.ndarray]:
    """Estimate each group's top Hessian eigenvalue by power iteration.

    The groups and iterations loop on the host, one compiled `step_fn` call per
    Hessian-vector product, so the product compiles once. A `jax.lax.fori_loop` version ran
    9 times slower on CPU (60 s against 6.7 s for 35 products on 32 Fashion-MNIST images,
    ResNet-18 at width 1/8, one core, jax 0.10.2).

    Args:
        step_fn: (direction, row) -> `power_iteration_step(...)` output, usually jitted.
        noise: a pytree like the params of random values. Its restriction to a group is that
            group's start direction. The groups are disjoint, so the starts are independent.
        flags: `group_flags` output, one-hot group rows per leaf.
        num_iterations: Hessian-vector products per group.

    Returns:
        `(curvatures, residuals)`, float32 arrays of shape (groups,): the Rayleigh quotient of
        the last unit direction and its residual.
    """
    num_groups = jax.tree.leaves(flags)[0].shape[0]
    curvatures = np.zeros(num_groups, np.float32)
    residuals = np.zeros(num_groups, np.float32)
    for group in range(num_groups):
        row = jax.tree.map(operator.itemgetter(group), flags)
        direction = _start_direction_jit(noise, row)
        for _ in range(num_iterations):
            direction, rayleigh, residual = step_fn(direction, row)
        curvatures[group], residuals[group] = jax.device_get((rayleigh, residual))
    return curvatures, residuals


_start_direction_jit = jax.jit(start_direction)


def _scale(tree, factor):
    return jax.tree.map(lambda leaf: leaf * factor, tree)


def _train_mode_loss(model, batch_stats, images, labels):
    def loss_fn(params):
        variables = {"params": params, "batch_stats": batch_stats}
        logits, _ = model.apply(variables, images, train=True, mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    return loss_fn


class CurvatureScanner:
    """Scanner of a model's layer groups on one fixed batch, compiling one product step once.

    Args:
        model: a Flax ResNet, applied as `model.apply(variables, images, train=...)`.
        groups: the group names, in report order.
        group_fn: parameter path -> group name.
        config: the power-iteration settings.
    """

    def __init__(
        self,
        model,
        groups: Sequence[str],
        config: DiagnosticsConfig,
        group_fn: Callable[[str], str] = resnet_group,
    ):
        self.groups = tuple(groups)
        self.config = config
        self._group_fn = group_fn
        self._flags = None
        self._noise = None

        def step(params, batch_stats, images, labels, direction, row):
            loss_fn = _train_mode_loss(model, batch_stats, images, labels)
            return power_iteration_step(loss_fn, params, direction, row)

        self._step = jax.jit(step)

    def curvatures(self, params, batch_stats, images, labels) -> tuple[np.ndarray, np.ndarray]:
        """Return `(curvatures, residuals)` per group as numpy arrays."""
        if self._flags is None:
            self._flags = group_flags(params, self._group_fn, self.groups)
            self._noise = start_noise(params, self.config.seed)

        def step_fn(direction, row):
            return self._step(params, batch_stats, images, labels, direction, row)

        return top_curvatures(
            step_fn, self._noise, self._flags, num_iterations=self.config.power_iterations
        )

    def scan(self, params, batch_stats, images, labels, *, momentum, learning_rate):
        """Scan every group and classify its regime; returns a list of `GroupScan`."""
        curvatures, residuals = self.curvatures(params, batch_stats, images, labels)
        return [
            classify_group(
                name,
                float(curvature),
                float(residual),
                momentum=momentum,
                learning_rate=learning_rate,
                tolerance=self.config.damping_tolerance,
            )
            for name, curvature, residual in zip(self.groups, curvatures, residuals, strict=True)
        ]


def classify_group(
    group: str,
    curvature: float,
    residual: float,
    *,
    momentum: float | None,
    learning_rate: float,
    tolerance: float = beta_optax.DEFAULT_DAMPING_TOLERANCE,
) -> GroupScan:
    """Turn a curvature estimate into zeta and a regime, or an explicit "undefined".

    The regime is undefined for a curvature that is not finite or <= 0 (negative curvature, where
    heavy-ball dynamics do not oscillate around a minimum) and for an unknown momentum.
    """
    reason = ""
    if not math.isfinite(curvature):
        reason = f"curvature estimate is {curvature}"
        warnings.warn(
            f"The curvature estimate of group {group!r} is {curvature}; its regime is undefined.",
            stacklevel=2,
        )
    elif curvature <= 0:
        reason = "negative curvature" if curvature < 0 else "zero curvature"
    elif momentum is None or not math.isfinite(momentum):
        reason = "the optimizer state records no momentum"
    if reason:
        return GroupScan(group, curvature, residual, None, UNDEFINED_REGIME, reason)

    zeta = float(beta_optax.damping_ratio(momentum, learning_rate, curvature))
    regime = beta_optax.classify_damping(zeta, tolerance=tolerance).value
    return GroupScan(group, curvature, residual, zeta, regime)


def scan_metrics(results: Sequence[GroupScan]) -> dict[str, float]:
    """Return the metrics.jsonl scalars of one scan: curvature, zeta and regime code per group.

    `scan_<group>_zeta` and `scan_<group>_regime` are left out where the regime is undefined, so
    no NaN reaches the metrics; scan.jsonl records the reason.
    """
    scalars = {}
    for result in results:
        scalars[f"scan_{result.group}_curvature"] = result.curvature
        if result.regime != UNDEFINED_REGIME:
            scalars[f"scan_{result.group}_zeta"] = result.zeta
            scalars[f"scan_{result.group}_regime"] = REGIME_CODES[result.regime]
    return scalars


def scan_record(step: int, results: Sequence[GroupScan], *, momentum, learning_rate) -> dict:
    """Return the scan.jsonl record of one evaluation point."""
    return {
        "step": int(step),
        "momentum": None if momentum is None else float(momentum),
        "learning_rate": float(learning_rate),
        "groups": [dataclasses.asdict(result) for result in results],
    }


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append `record` to a JSON-lines file, first dropping records at or after its step.

    Dropping them keeps the file consistent when a resumed run evaluates a step again.
    """
    rows = read_jsonl(path) if os.path.exists(path) else []
    kept = [row for row in rows if row["step"] < record["step"]]
    with open(path, "w", encoding="utf-8") as file:
        file.writelines(json.dumps(row) + "\n" for row in [*kept, record])


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file, one dict per line, skipping blank lines."""
    with open(path, encoding="utf-8") as file:
        return [json.loads(line) for line in file if line.strip()]
