"""Heavy-ball momentum whose decay is the critical momentum of the current learning rate."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from beta_optax import _physics


class BetaMomentumState(NamedTuple):
    """State of `scale_by_beta_momentum`.

    Attributes:
      count: number of updates applied so far; int32 scalar.
      momentum: momentum applied by the last update, float32 scalar. Before the first update it
        is the momentum that the first update will apply.
      trace: running trace of past updates, one leaf per parameter.
    """

    count: jax.Array  # shape=(), dtype=jnp.int32.
    momentum: jax.Array  # shape=(), dtype=jnp.float32.
    trace: optax.Params


def momentum_fn_of(
    learning_rate: optax.ScalarOrSchedule,
    *,
    curvature: jax.typing.ArrayLike,
    form: str,
    min_momentum: jax.typing.ArrayLike,
    max_momentum: jax.typing.ArrayLike,
):
    """Checks the arguments once and returns a function `count -> critical momentum`."""
    momentum = _physics.critical_momentum(
        learning_rate,
        curvature=curvature,
        form=form,
        min_momentum=min_momentum,
        max_momentum=max_momentum,
    )
    if callable(momentum):
        return momentum
    return lambda count: momentum


def trace_update(
    updates: optax.Updates,
    trace: optax.Params,
    momentum: jax.Array,
    nesterov: bool,
) -> tuple[optax.Updates, optax.Params]:
    """Applies one heavy-ball step: `trace = g + momentum * trace`, with optax's conventions.

    The update is the new trace, or `g + momentum * trace` with Nesterov. Updates keep the
    gradients' dtype and the trace keeps its own dtype, while the products run in the wider of the
    two and float32, so bfloat16 parameters get a float32 momentum.
    """

    def accumulate(g, t):
        return g + momentum * t

    new_trace = jax.tree.map(
        lambda g, t: None if g is None else accumulate(g, t),
        updates,
        trace,
        is_leaf=lambda g: g is None,
    )
    new_updates = jax.tree.map(accumulate, updates, new_trace) if nesterov else new_trace

    new_updates = jax.tree.map(lambda u, g: u.astype(g.dtype), new_updates, updates)
    new_trace = jax.tree.map(lambda new, old: new.astype(old.dtype), new_trace, trace)
    return new_updates, new_trace


def scale_by_beta_momentum(
    learning_rate: optax.ScalarOrSchedule,
    *,
    nesterov: bool = False,
    curvature: jax.typing.ArrayLike = 1.0,
    form: str = "paper",
    min_momentum: jax.typing.ArrayLike = _physics.DEFAULT_MIN_MOMENTUM,
    max_momentum: jax.typing.ArrayLike = _physics.DEFAULT_MAX_MOMENTUM,
    accumulator_dtype: Any | None = None,
) -> optax.GradientTransformation:
    r"""Keeps a momentum trace whose decay is the critical momentum of the learning rate.

    At update `t` (counting from 0) with gradient :math:`g_t`:

    .. math::

      \mu_t = \mathrm{critical\_momentum}(a_t), \qquad
      m_t = g_t + \mu_t m_{t-1}, \qquad
      u_t = m_t \ \text{or, with Nesterov,}\ u_t = g_t + \mu_t m_t

    where :math:`a_t` is the learning rate the schedule gives at step `t`, the same step that
    `optax.scale_by_learning_rate` uses for that update. This is `optax.trace` with a decay that
    changes every step; the learning rate is not applied here (see `beta_sgd`).

    Args:
      learning_rate: a scalar or an optax schedule. Only the momentum is derived from it.
      nesterov: whether to use Nesterov momentum.
      curvature: the Hessian eigenvalue to damp critically, > 0.
      form: "paper" (`1 - 2 sqrt(a h)`) or "exact" (`(1 - sqrt(a h))**2`).
      min_momentum: lower clamp of the momentum, in [0, 1).
      max_momentum: upper clamp of the momentum, in [min_momentum, 1).
      accumulator_dtype: dtype of the trace; by default the parameters' dtype.

    Returns:
      An `optax.GradientTransformation` whose state is a `BetaMomentumState`.

    Raises:
      ValueError: for invalid concrete arguments, as `critical_momentum` lists.
    """
    momentum_at = momentum_fn_of(
        learning_rate,
        curvature=curvature,
        form=form,
        min_momentum=min_momentum,
        max_momentum=max_momentum,
    )
    accumulator_dtype = None if accumulator_dtype is None else jnp.dtype(accumulator_dtype)

    def init_fn(params):
        count = jnp.zeros([], jnp.int32)
        return BetaMomentumState(
            count=count,
            momentum=momentum_at(count),
            trace=optax.tree.zeros_like(params, dtype=accumulator_dtype),
        )

    def update_fn(updates, state, params=None):
        del params
        momentum = momentum_at(state.count)
        updates, trace = trace_update(updates, state.trace, momentum, nesterov)
        new_state = BetaMomentumState(
            count=optax.safe_increment(state.count),
            momentum=momentum,
            trace=trace,
        )
        return updates, new_state

    return optax.GradientTransformation(init_fn, update_fn)


def beta_sgd(
    learning_rate: optax.ScalarOrSchedule,
    *,
    nesterov: bool = False,
    curvature: jax.typing.ArrayLike = 1.0,
    form: str = "paper",
    min_momentum: jax.typing.ArrayLike = _physics.DEFAULT_MIN_MOMENTUM,
    max_momentum: jax.typing.ArrayLike = _physics.DEFAULT_MAX_MOMENTUM,
    accumulator_dtype: Any | None = None,
) -> optax.GradientTransformation:
    r"""SGD with momentum derived from the learning rate by critical damping.

    The optimizer is `optax.sgd` with its constant `momentum` replaced by

    .. math::

      \mu_t = \operatorname{clip}(1 - 2\sqrt{a_t h}, \mu_{\min}, \mu_{\max})

    so the learning-rate schedule is its only hyperparameter: high momentum while the learning
    rate is small (warmup start, end of decay), low momentum near the peak. With
    `optax.inject_hyperparams(beta_sgd)` the momentum follows the injected learning rate, so
    changing `opt_state.hyperparams["learning_rate"]` changes the momentum too.

    Args:
      learning_rate: a scalar or an optax schedule.
      nesterov: whether to use Nesterov momentum.
      curvature: the Hessian eigenvalue to damp critically, > 0. 1.0 gives the paper's rule.
      form: "paper" (`1 - 2 sqrt(a h)`) or "exact" (`(1 - sqrt(a h))**2`).
      min_momentum: lower clamp of the momentum, in [0, 1).
      max_momentum: upper clamp of the momentum, in [min_momentum, 1).
      accumulator_dtype: dtype of the trace; by default the parameters' dtype.

    Returns:
      An `optax.GradientTransformation`: `scale_by_beta_momentum` chained with
      `optax.scale_by_learning_rate`.

    Examples:
      >>> import jax.numpy as jnp
      >>> import optax
      >>> import beta_optax
      >>> schedule = optax.warmup_cosine_decay_schedule(0.0, 0.1, 10, 100)
      >>> optimizer = beta_optax.beta_sgd(schedule)
      >>> params = {"w": jnp.ones(3)}
      >>> state = optimizer.init(params)
      >>> updates, state = optimizer.update({"w": jnp.ones(3)}, state)
      >>> print(round(float(beta_optax.applied_momentum(state)), 4))
      0.99

    References:
      Pasichnyk, `Beta-Scheduling <https://arxiv.org/abs/2603.28921>`_, 2026.
    """
    return optax.chain(
        scale_by_beta_momentum(
            learning_rate,
            nesterov=nesterov,
            curvature=curvature,
            form=form,
            min_momentum=min_momentum,
            max_momentum=max_momentum,
            accumulator_dtype=accumulator_dtype,
        ),
        optax.scale_by_learning_rate(learning_rate),
    )
