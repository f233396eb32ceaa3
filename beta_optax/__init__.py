"""beta-optax: momentum derived from the learning rate by critical damping, as optax transforms.

The core (this namespace) depends on jax, optax and numpy only. The training harness lives in
`beta_optax.training` and needs the `train` extra.
"""

from beta_optax._adam import BetaAdamState, beta_adam, scale_by_beta_adam
from beta_optax._diagnostics import NORMALIZATIONS, Diagnosis, count_problem_groups, diagnose
from beta_optax._history import append_history, history_entry, load_history
from beta_optax._hybrid import HybridMomentumState, hybrid_sgd, scale_by_hybrid_momentum
from beta_optax._inspect import applied_momentum
from beta_optax._momentum import BetaMomentumState, beta_sgd, scale_by_beta_momentum
from beta_optax._paths import flatten_with_paths, path_str, unflatten_like
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
from beta_optax._stats import (
    ParameterRow,
    assign_groups,
    format_parameter_overview,
    group_norms,
    group_sizes,
    layer_norms,
    parameter_overview,
)
from beta_optax._surgery import mask_param_fraction, surgical_optimizer

__version__ = "0.1.0"

# The training harness needs the `train` extra, so its entry points load on first use.
_LAZY_TRAINING_NAMES = {"surgical_correct": "beta_optax.training.surgery"}


def __getattr__(name):
    if name in _LAZY_TRAINING_NAMES:
        import importlib

        return getattr(importlib.import_module(_LAZY_TRAINING_NAMES[name]), name)
    raise AttributeError(f"module 'beta_optax' has no attribute {name!r}")


__all__ = [
    "NORMALIZATIONS",
    "Diagnosis",
    "ParameterRow",
    "append_history",
    "assign_groups",
    "count_problem_groups",
    "diagnose",
    "flatten_with_paths",
    "format_parameter_overview",
    "group_norms",
    "group_sizes",
    "history_entry",
    "layer_norms",
    "load_history",
    "mask_param_fraction",
    "parameter_overview",
    "path_str",
    "surgical_optimizer",
    "unflatten_like",
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
