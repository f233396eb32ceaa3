"""Reading the applied momentum out of any optimizer state, for logging."""

import jax
import optax

from beta_optax._adam import BetaAdamState
from beta_optax._hybrid import HybridMomentumState
from beta_optax._momentum import BetaMomentumState

_BETA_STATES = (BetaMomentumState, HybridMomentumState, BetaAdamState)
_INJECTED_MOMENTUM_NAMES = ("momentum", "b1")
# optax 0.2.8 builds InjectStatefulHyperparamsState; older releases build InjectHyperparamsState.
_INJECT_STATES = tuple(
    getattr(optax, name)
    for name in ("InjectHyperparamsState", "InjectStatefulHyperparamsState")
    if hasattr(optax, name)
)


def _find_states(opt_state, state_types) -> list:
    found = []

    def visit(node):
        if isinstance(node, state_types):
            found.append(node)
        return node

    jax.tree.map(visit, opt_state, is_leaf=lambda node: isinstance(node, state_types))
    return found


def applied_momentum(opt_state) -> jax.Array | None:
    """Returns the momentum that the last update applied, found anywhere in an optimizer state.

    A beta-optax state (`BetaMomentumState`, `HybridMomentumState`, `BetaAdamState`) is preferred;
    otherwise a `momentum` or `b1` hyperparameter of an `optax.inject_hyperparams` state, such as
    a scheduled momentum of `optax.sgd`. The first match in tree order wins.

    Returns:
      A float32 scalar array, or None when the state contains no momentum (for example plain
      `optax.sgd(0.1, momentum=0.9)`, whose momentum is a Python constant and not in its state).
    """
    for state in _find_states(opt_state, _BETA_STATES):
        return state.momentum

    injected = _find_states(opt_state, _INJECT_STATES)
    for state in injected:
        for name in _INJECTED_MOMENTUM_NAMES:
            value = state.hyperparams.get(name)
            if value is not None:
                return value
    return None
