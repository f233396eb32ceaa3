"""beta-optax: momentum derived from the learning rate by critical damping, as optax transforms.

The core (this namespace) depends on jax, optax and numpy only. The training harness lives in
`beta_optax.training` and needs the `train` extra.
"""

from beta_optax._adam import BetaAdamState, beta_adam, scale_by_beta_adam
from beta_optax._hybrid import HybridMomentumState, hybrid_sgd, scale_by_hybrid_momentum
from beta_optax._inspect import applied_momentum
from beta_optax._momentum import BetaMomentumState, beta_sgd, scale_by_beta_momentum
from beta_optax._physics import (
    DEFAULT_DAMPING_TOLERANCE,
    DEFAULT_MAX_MOMENTUM,
    DEFAULT_MIN_MOMENTUM,
    DampingRegime,
    clamp_threshold,
    classify_damping,
    critical_momentum,
    damping_ratio,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_DAMPING_TOLERANCE",
    "DEFAULT_MAX_MOMENTUM",
    "DEFAULT_MIN_MOMENTUM",
    "BetaAdamState",
    "BetaMomentumState",
    "DampingRegime",
    "HybridMomentumState",
    "applied_momentum",
    "beta_adam",
    "beta_sgd",
    "clamp_threshold",
    "classify_damping",
    "critical_momentum",
    "damping_ratio",
    "hybrid_sgd",
    "scale_by_beta_adam",
    "scale_by_beta_momentum",
    "scale_by_hybrid_momentum",
]
