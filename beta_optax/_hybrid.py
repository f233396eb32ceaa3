"""Critical momentum early in training, then a constant momentum after a latched switch."""

import numbers
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from beta_optax import _momentum, _physics, _validation


class HybridMomentumState(NamedTuple):
    """State of `scale_by_hybrid_momentum`.

    Attributes:
      count: number of updates applied so far; int32 scalar.
      momentum: momentum applied by the last update (before the first update, the one the first
        update will apply); float32 scalar.
      trace: running trace of past updates, one leaf per parameter.
      switched: whether the constant momentum has taken over; bool scalar, never reset.
      switch_count: the update count at which the switch happened, or -1 before it; int32 scalar.
      peak_learning_rate: the largest learning rate seen so far; float32 scalar.
    """

    count: jax.Array  # shape=(), dtype=jnp.int32.
    momentum: jax.Array  # shape=(), dtype=jnp.float32.
    trace: optax.Params
    switched: jax.Array  # shape=(), dtype=jnp.bool_.
    switch_count: jax.Array  # shape=(), dtype=jnp.int32.
    peak_learning_rate: jax.Array  # shape=(), dtype=jnp.float32.


def _check_switch_step(switch_step) -> None:
    if switch_step is None:
        return
    if isinstance(switch_step, bool) or not isinstance(switch_step, numbers.Integral):
        raise ValueError(
            f"`switch_step` must be None or an integer step count >= 0, got {switch_step!r}."
        )
    if switch_step < 0:
        raise ValueError(f"`switch_step` must be >= 0, got {switch_step}.")


def _warn_if_unreachable(learning_rate, momentum, max_momentum, switch_step) -> None:
    if switch_step is not None:
        return
    # Under optax.inject_hyperparams the learning rate arrives as a JAX array at every step
    # while the state still records the schedule's peak, so only a Python or NumPy number warns.
    if _validation.is_concrete_number(learning_rate):
        warnings.warn(
            "A constant learning rate has no peak, so the automatic switch never happens and "
            "hybrid_sgd behaves like beta_sgd. Pass a schedule that peaks and decays, or "
            "switch_step.",
            UserWarning,
            stacklevel=_validation.external_stacklevel(),
        )
        return
    if not (
        _validation.is_concrete_number(momentum) and _validation.is_concrete_number(max_momentum)
    ):
        return
    if float(max_momentum) < float(momentum):
        warnings.warn(
            f"max_momentum={float(max_momentum):g} is below momentum={float(momentum):g}, so the "
            "critical momentum never reaches it and the automatic switch never happens. Raise "
            "max_momentum or pass switch_step.",
            UserWarning,
            stacklevel=_validation.external_stacklevel(),
        )


def _learning_rate_at(learning_rate, count) -> jax.Array:
    value = learning_rate(count) if callable(learning_rate) else learning_rate
    return jnp.asarray(value, jnp.float32)


def scale_by_hybrid_momentum(
    learning_rate: optax.ScalarOrSchedule,
    *,
    momentum: jax.typing.ArrayLike = 0.9,
    switch_step: int | None = None,
    nesterov: bool = False,
    curvature: jax.typing.ArrayLike = 1.0,
    form: str = "paper",
    min_momentum: jax.typing.ArrayLike = _physics.DEFAULT_MIN_MOMENTUM,
    max_momentum: jax.typing.ArrayLike = _physics.DEFAULT_MAX_MOMENTUM,
    accumulator_dtype: Any | None = None,
) -> optax.GradientTransformation:
    """Keeps a momentum trace with critical momentum first and constant `momentum` after a switch.

    Before the switch the decay is `critical_momentum(learning_rate(count))`, exactly as in
    `scale_by_beta_momentum`; after it, the constant `momentum`, exactly as in `optax.trace`. Both
    phases share one update rule (`trace_update`).

    The switch happens at update `switch_step` when one is given. With `switch_step=None` it is
    parameter-free: the first update after the learning-rate peak (a learning rate below the
    largest seen so far) at which the critical momentum reaches `momentum`. Once switched it never
    switches back, even if the schedule rises again.

    Args:
      learning_rate: a scalar or an optax schedule. Only the momentum is derived from it.
      momentum: the constant momentum used after the switch, in [0, 1).
      switch_step: the update count at which to switch, or None for the automatic rule.
      nesterov: whether to use Nesterov momentum.
      curvature: the Hessian eigenvalue to damp critically, > 0.
      form: "paper" or "exact", as in `critical_momentum`.
      min_momentum: lower clamp of the critical momentum, in [0, 1).
      max_momentum: upper clamp of the critical momentum, in [min_momentum, 1).
      accumulator_dtype: dtype of the trace; by default the parameters' dtype.

    Returns:
      An `optax.GradientTransformation` whose state is a `HybridMomentumState`.

    .. warning::
      With a constant learning rate there is no peak to pass, so the automatic rule never
      switches; pass `switch_step` in that case.
    """
    momentum_at = _momentum.momentum_fn_of(
        learning_rate,
        curvature=curvature,
        form=form,
        min_momentum=min_momentum,
        max_momentum=max_momentum,
    )
    _validation.check_momentum_value("momentum", momentum)
    _check_switch_step(switch_step)
    _warn_if_unreachable(learning_rate, momentum, max_momentum, switch_step)
    accumulator_dtype = None if accumulator_dtype is None else jnp.dtype(accumulator_dtype)

    def init_fn(params):
        count = jnp.zeros([], jnp.int32)
        return HybridMomentumState(
            count=count,
            momentum=momentum_at(count),
            trace=optax.tree.zeros_like(params, dtype=accumulator_dtype),
            switched=jnp.asarray(switch_step == 0),
            switch_count=jnp.asarray(0 if switch_step == 0 else -1, jnp.int32),
            peak_learning_rate=jnp.zeros([], jnp.float32),
        )

    def update_fn(updates, state, params=None):
        del params
        count = state.count
        learning_rate_now = _learning_rate_at(learning_rate, count)
        critical = momentum_at(count)
        constant = jnp.asarray(momentum, jnp.float32)

        if switch_step is None:
            past_peak = learning_rate_now < state.peak_learning_rate
            switched = state.switched | (past_peak & (critical >= constant))
        else:
            switched = state.switched | (count >= switch_step)
        applied = jnp.where(switched, constant, critical)

        updates, trace = _momentum.trace_update(updates, state.trace, applied, nesterov)
        new_state = HybridMomentumState(
            count=optax.safe_increment(count),
            momentum=applied,
            trace=trace,
            switched=switched,
            switch_count=jnp.where(switched & ~state.switched, count, state.switch_count),
            peak_learning_rate=jnp.maximum(state.peak_learning_rate, learning_rate_now),
        )
        return updates, new_state

    return optax.GradientTransformation(init_fn, update_fn)


def hybrid_sgd(
    learning_rate: optax.ScalarOrSchedule,
    *,
    momentum: jax.typing.ArrayLike = 0.9,
    switch_step: int | None = None,
    nesterov: bool = False,
    curvature: jax.typing.ArrayLike = 1.0,
    form: str = "paper",
    min_momentum: jax.typing.ArrayLike = _physics.DEFAULT_MIN_MOMENTUM,
    max_momentum: jax.typing.ArrayLike = _physics.DEFAULT_MAX_MOMENTUM,
    accumulator_dtype: Any | None = None,
) -> optax.GradientTransformation:
    """SGD with critical momentum early in training and a constant momentum late.

    `scale_by_hybrid_momentum` chained with `optax.scale_by_learning_rate`. With the default
    automatic switch and a warmup-then-decay schedule, training starts like `beta_sgd` (low
    momentum near the peak learning rate) and ends like `optax.sgd(learning_rate, momentum)` once
    the decayed learning rate's critical momentum reaches `momentum`. With `switch_step=0` it is
    `optax.sgd(learning_rate, momentum)`; with a `switch_step` past the end of training it is
    `beta_sgd(learning_rate)`.

    Args:
      learning_rate: a scalar or an optax schedule.
      momentum: the constant momentum used after the switch, in [0, 1).
      switch_step: the update count at which to switch, or None for the automatic rule.
      nesterov: whether to use Nesterov momentum.
      curvature: the Hessian eigenvalue to damp critically, > 0.
      form: "paper" or "exact", as in `critical_momentum`.
      min_momentum: lower clamp of the critical momentum, in [0, 1).
      max_momentum: upper clamp of the critical momentum, in [min_momentum, 1).
      accumulator_dtype: dtype of the trace; by default the parameters' dtype.

    Returns:
      An `optax.GradientTransformation`.
    """
    return optax.chain(
        scale_by_hybrid_momentum(
            learning_rate,
            momentum=momentum,
            switch_step=switch_step,
            nesterov=nesterov,
            curvature=curvature,
            form=form,
            min_momentum=min_momentum,
            max_momentum=max_momentum,
            accumulator_dtype=accumulator_dtype,
        ),
        optax.scale_by_learning_rate(learning_rate),
    )
