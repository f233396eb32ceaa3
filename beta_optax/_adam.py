"""Adam whose first-moment decay b1 follows the critical momentum of the learning rate."""

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from beta_optax import _momentum, _physics


class BetaAdamState(NamedTuple):
    """State of `scale_by_beta_adam`.

    Attributes:
      count: number of updates applied so far; int32 scalar.
      momentum: the b1 applied by the last update (before the first update, the one the first
        update will apply); float32 scalar.
      adam: the state of `optax.scale_by_adam`, which does the moment arithmetic.
    """

    count: jax.Array  # shape=(), dtype=jnp.int32.
    momentum: jax.Array  # shape=(), dtype=jnp.float32.
    adam: optax.ScaleByAdamState


def scale_by_beta_adam(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    nesterov: bool = False,
    curvature: jax.typing.ArrayLike = 1.0,
    form: str = "paper",
    min_momentum: jax.typing.ArrayLike = _physics.DEFAULT_MIN_MOMENTUM,
    max_momentum: jax.typing.ArrayLike = _physics.DEFAULT_MAX_MOMENTUM,
    mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
    """Rescales updates like `optax.scale_by_adam` with `b1 = critical_momentum(learning_rate)`.

    Every update builds `optax.scale_by_adam` with the b1 of the current step and applies it to
    the kept Adam state, so the moment arithmetic is optax's own.

    Returns:
      An `optax.GradientTransformation` whose state is a `BetaAdamState`.

    .. warning::
      optax's bias correction divides the first moment by `1 - b1**t` with the current b1, which
      is exact only for a constant b1. With a b1 that changes every step the correction is an
      approximation. It matters mainly while `b1**t` is not yet close to 0: for b1 <= 0.99 that
      is the first few hundred steps.
    """
    momentum_at = _momentum.momentum_fn_of(
        learning_rate,
        curvature=curvature,
        form=form,
        min_momentum=min_momentum,
        max_momentum=max_momentum,
    )

    def adam_with(b1):
        return optax.scale_by_adam(
            b1=b1, b2=b2, eps=eps, eps_root=eps_root, mu_dtype=mu_dtype, nesterov=nesterov
        )

    def init_fn(params):
        count = jnp.zeros([], jnp.int32)
        momentum = momentum_at(count)
        return BetaAdamState(count=count, momentum=momentum, adam=adam_with(momentum).init(params))

    def update_fn(updates, state, params=None):
        momentum = momentum_at(state.count)
        updates, adam_state = adam_with(momentum).update(updates, state.adam, params)
        new_state = BetaAdamState(
            count=optax.safe_increment(state.count), momentum=momentum, adam=adam_state
        )
        return updates, new_state

    return optax.GradientTransformation(init_fn, update_fn)


def beta_adam(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b2: jax.typing.ArrayLike = 0.999,
    eps: jax.typing.ArrayLike = 1e-8,
    eps_root: jax.typing.ArrayLike = 0.0,
    nesterov: bool = False,
    curvature: jax.typing.ArrayLike = 1.0,
    form: str = "paper",
    min_momentum: jax.typing.ArrayLike = _physics.DEFAULT_MIN_MOMENTUM,
    max_momentum: jax.typing.ArrayLike = _physics.DEFAULT_MAX_MOMENTUM,
    mu_dtype: Any | None = None,
) -> optax.GradientTransformation:
    """Adam whose b1 is the critical momentum of the learning rate.

    An extension beyond the beta-scheduling paper, which derives the momentum of SGD only. Adam's
    first moment is an exponential moving average, `m = b1 * m + (1 - b1) * g`, so b1 plays the
    role of heavy-ball momentum with the step size rescaled by `1 - b1`. Whether critical damping
    of that average helps is an empirical question, not a derived property, and the benchmarks
    here do not measure it yet.

    Args:
      learning_rate: a scalar or an optax schedule.
      b2: decay of the second-moment average, as in `optax.adam`.
      eps: added to the denominator outside the square root, as in `optax.adam`.
      eps_root: added to the denominator inside the square root, as in `optax.adam`.
      nesterov: whether to use Nesterov momentum, as in `optax.adam`.
      curvature: the Hessian eigenvalue to damp critically, > 0.
      form: "paper" or "exact", as in `critical_momentum`.
      min_momentum: lower clamp of b1, in [0, 1).
      max_momentum: upper clamp of b1, in [min_momentum, 1).
      mu_dtype: dtype of the first moment, as in `optax.adam`.

    Returns:
      An `optax.GradientTransformation`: `scale_by_beta_adam` chained with
      `optax.scale_by_learning_rate`.
    """
    return optax.chain(
        scale_by_beta_adam(
            learning_rate,
            b2=b2,
            eps=eps,
            eps_root=eps_root,
            nesterov=nesterov,
            curvature=curvature,
            form=form,
            min_momentum=min_momentum,
            max_momentum=max_momentum,
            mu_dtype=mu_dtype,
        ),
        optax.scale_by_learning_rate(learning_rate),
    )
