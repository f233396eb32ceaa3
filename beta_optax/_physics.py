"""Critical damping of heavy-ball momentum: momentum from the learning rate, and the damping ratio.

Heavy-ball momentum on a quadratic with curvature (Hessian eigenvalue) `h`, learning rate `a` and
momentum `mu` is a damped oscillator. Its discrete iteration is critically damped, the fastest
approach without overshoot, when

    mu = (1 - sqrt(a * h)) ** 2                      (form="exact")

and the first-order version of that condition is

    mu = 1 - 2 * sqrt(a * h)                         (form="paper")

which with `h = 1` is the beta schedule of Pasichnyk, "Beta-Scheduling" (arXiv 2603.28921, 2026).
"""

import enum
import math
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from beta_optax import _validation

DEFAULT_MIN_MOMENTUM = 0.0
DEFAULT_MAX_MOMENTUM = 0.99

# A momentum is called critically damped when its damping ratio is within 10% of 1. The exact
# discrete form gives zeta = 1 - sqrt(a * h) / 2, which stays inside this band for a * h <= 0.04,
# which covers the usual SGD learning rates at unit curvature.
DEFAULT_DAMPING_TOLERANCE = 0.1


class DampingRegime(str, enum.Enum):
    """Regime of a damped oscillator, from its damping ratio zeta."""

    UNDERDAMPED = "underdamped"
    CRITICAL = "critical"
    OVERDAMPED = "overdamped"


def clamp_threshold(form: str, min_momentum: float = DEFAULT_MIN_MOMENTUM) -> float:
    """Returns the value of `learning_rate * curvature` above which the momentum is clamped.

    Above it the unclamped formula would give a momentum below `min_momentum`: 0.25 for the paper
    form and 1.0 for the exact form when `min_momentum` is 0.
    """
    _validation.check_form(form)
    if form == "paper":
        return ((1.0 - min_momentum) / 2.0) ** 2
    return (1.0 - math.sqrt(min_momentum)) ** 2


def momentum_from_learning_rate(
    learning_rate: jax.typing.ArrayLike,
    curvature: jax.typing.ArrayLike = 1.0,
    form: str = "paper",
    min_momentum: jax.typing.ArrayLike = DEFAULT_MIN_MOMENTUM,
    max_momentum: jax.typing.ArrayLike = DEFAULT_MAX_MOMENTUM,
) -> jax.Array:
    """Computes the clamped critical momentum in float32 without any host-side check.

    This is the traced math behind `critical_momentum`. It never returns NaN: a NaN or infinite
    `learning_rate * curvature` gives `min_momentum`, and a negative one counts as 0 and gives
    `max_momentum`.
    """
    step_size = jnp.asarray(learning_rate, jnp.float32) * jnp.asarray(curvature, jnp.float32)
    step_size = jnp.where(jnp.isnan(step_size), jnp.inf, step_size)
    root = jnp.sqrt(jnp.maximum(step_size, 0.0))

    if form == "paper":
        momentum = 1.0 - 2.0 * root
    else:
        # Past a * h = 1 the square (1 - sqrt(a * h)) ** 2 would rise again; hold it at 0 instead.
        momentum = jnp.square(1.0 - jnp.minimum(root, 1.0))

    low = jnp.asarray(min_momentum, jnp.float32)
    high = jnp.asarray(max_momentum, jnp.float32)
    return jnp.clip(momentum, low, high)


def critical_momentum(
    learning_rate: optax.ScalarOrSchedule,
    *,
    curvature: jax.typing.ArrayLike = 1.0,
    form: str = "paper",
    min_momentum: jax.typing.ArrayLike = DEFAULT_MIN_MOMENTUM,
    max_momentum: jax.typing.ArrayLike = DEFAULT_MAX_MOMENTUM,
) -> jax.Array | optax.Schedule:
    r"""Computes the critically damped momentum for a learning rate or a learning-rate schedule.

    .. math::

      \mu = \operatorname{clip}\big(1 - 2\sqrt{a h},\ \mu_{\min},\ \mu_{\max}\big)
      \quad\text{(paper)}, \qquad
      \mu = \operatorname{clip}\big((1 - \sqrt{\min(a h, 1)})^2,\ \mu_{\min},\ \mu_{\max}\big)
      \quad\text{(exact)}

    With the default `curvature=1` and `form="paper"` the momentum is 0.9 at a learning rate of
    0.0025, 0 at 0.25 and tends to 1 as the learning rate tends to 0. The result is float32 for
    any input dtype, integer learning rates included.

    Args:
      learning_rate: a scalar learning rate, or an optax schedule mapping the step count to one.
      curvature: the Hessian eigenvalue `h` to damp critically; must be > 0.
      form: "paper" for the first-order condition, "exact" for the discrete heavy-ball one.
      min_momentum: lower clamp, in [0, 1). The paper form falls below 0 for `a * h > 0.25`.
      max_momentum: upper clamp, in [min_momentum, 1). Keeps the trace finite as `a` tends to 0.

    Returns:
      A float32 scalar array for a scalar learning rate, or a schedule `step -> momentum` for a
      schedule. Both are pure and safe to call under `jax.jit`.

    Raises:
      ValueError: for a negative, NaN, infinite or non-scalar learning rate, `curvature <= 0`,
        bounds outside [0, 1), `min_momentum > max_momentum` or an unknown `form`. Only concrete
        Python and NumPy numbers are checked; traced values are clamped instead.

    Examples:
      >>> import beta_optax
      >>> print(round(float(beta_optax.critical_momentum(0.0025)), 4))
      0.9
      >>> schedule = beta_optax.critical_momentum(lambda step: 0.01 / (1 + step))
      >>> print(round(float(schedule(0)), 4))
      0.8

    .. warning::
      Where the unclamped formula falls below `min_momentum` (`a * h > 0.25` for the paper form,
      `a * h > 1` for the exact form, with `min_momentum=0`), the momentum is held at
      `min_momentum`. One `UserWarning` reports the clamp where it is visible at construction: for a
      constant learning rate, and for a schedule's value at step 0. Later schedule values are
      clamped inside jit without a warning.
    """
    _check_arguments(learning_rate, curvature, form, min_momentum, max_momentum)
    _warn_if_clamped(learning_rate, curvature, form, min_momentum)

    def momentum_at(value):
        return momentum_from_learning_rate(value, curvature, form, min_momentum, max_momentum)

    if callable(learning_rate):
        return _compose(learning_rate, momentum_at)
    return momentum_at(learning_rate)


def _compose(schedule: Callable, momentum_at: Callable) -> optax.Schedule:
    def momentum_schedule(count):
        return momentum_at(schedule(count))

    return momentum_schedule


def _check_arguments(learning_rate, curvature, form, min_momentum, max_momentum) -> None:
    _validation.check_learning_rate(learning_rate)
    if callable(learning_rate):
        first = learning_rate(0)
        if not isinstance(first, jax.core.Tracer):
            _validation.check_learning_rate(first, " at step 0 of the schedule")
    _validation.check_curvature(curvature)
    _validation.check_form(form)
    _validation.check_momentum_bounds(min_momentum, max_momentum)


def _visible_learning_rate(learning_rate):
    """Returns the learning rate seen at construction as a float, or None when it is traced."""
    value = learning_rate(0) if callable(learning_rate) else learning_rate
    if isinstance(value, jax.core.Tracer):
        return None
    return float(value)


def _warn_if_clamped(learning_rate, curvature, form, min_momentum) -> None:
    if not (
        _validation.is_concrete_number(curvature) and _validation.is_concrete_number(min_momentum)
    ):
        return
    value = _visible_learning_rate(learning_rate)
    if value is None:
        return

    threshold = clamp_threshold(form, float(min_momentum))
    step_size = value * float(curvature)
    if step_size > threshold:
        where = "at step 0 of the schedule" if callable(learning_rate) else "constant"
        warnings.warn(
            f"learning_rate * curvature = {step_size:g} ({where}) exceeds {threshold:g}, where "
            f"the {form!r} critical momentum falls below min_momentum={float(min_momentum):g}; "
            f"the momentum is clamped to {float(min_momentum):g} there. Lower the learning rate "
            "or the curvature to stay in the critically damped range.",
            UserWarning,
            stacklevel=_validation.external_stacklevel(),
        )


def damping_ratio(
    momentum: jax.typing.ArrayLike,
    learning_rate: jax.typing.ArrayLike,
    curvature: jax.typing.ArrayLike = 1.0,
) -> jax.Array:
    r"""Computes the damping ratio of heavy-ball momentum on a quadratic of curvature `h`.

    .. math::

      \zeta = \frac{1 - \mu}{2 \sqrt{a h}}

    zeta < 1 is underdamped (the iterate oscillates), zeta = 1 critical, zeta > 1 overdamped (slow,
    monotone). The paper form of `critical_momentum` gives zeta = 1 exactly; the exact form gives
    `1 - sqrt(a * h) / 2`. Broadcasts like NumPy and returns float32; where `a * h == 0` the ratio
    is `inf`.

    Raises:
      ValueError: for a concrete momentum that is not finite, or a concrete learning rate or
        curvature outside the ranges that `critical_momentum` accepts.
    """
    if _validation.is_concrete_number(momentum) and not math.isfinite(float(momentum)):
        raise ValueError(f"`momentum` must be finite, got {float(momentum)!r}.")
    _validation.check_learning_rate(learning_rate)
    _validation.check_curvature(curvature)

    mu = jnp.asarray(momentum, jnp.float32)
    step_size = jnp.asarray(learning_rate, jnp.float32) * jnp.asarray(curvature, jnp.float32)
    safe = jnp.where(step_size > 0, step_size, 1.0)
    ratio = (1.0 - mu) / (2.0 * jnp.sqrt(safe))
    return jnp.where(step_size > 0, ratio, jnp.inf)


def classify_damping(zeta, *, tolerance: float = DEFAULT_DAMPING_TOLERANCE) -> DampingRegime:
    """Classifies a damping ratio as underdamped, critical or overdamped.

    Critical means `|zeta - 1| <= tolerance`; below that band is underdamped, above it overdamped.

    Args:
      zeta: a scalar damping ratio, as returned by `damping_ratio`.
      tolerance: half-width of the critical band, >= 0. The default 0.1 is a relative error of 10%.

    Raises:
      ValueError: for a NaN or non-scalar `zeta`, or a negative or NaN `tolerance`.
    """
    if not (tolerance >= 0):
        raise ValueError(f"`tolerance` must be >= 0, got {tolerance!r}.")
    _validation.check_scalar_shape("zeta", zeta)
    value = float(zeta)
    if math.isnan(value):
        raise ValueError("`zeta` is NaN; check the momentum and learning rate it came from.")

    if value < 1.0 - tolerance:
        return DampingRegime.UNDERDAMPED
    if value > 1.0 + tolerance:
        return DampingRegime.OVERDAMPED
    return DampingRegime.CRITICAL
