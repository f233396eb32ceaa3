"""Surgical correction: retrain only the flagged leaves of a network, keep the rest exactly fixed.

Every mask here reads True as "retrain this leaf", the meaning `optax.masked` gives True and the
opposite of `optax.freeze`. `Diagnosis.mask(params)` builds such a mask.
"""

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import optax

from beta_optax import _paths, _stats

_RETRAIN = "retrain"
_FROZEN = "frozen"


def _resolve_mask(mask, tree, *, allow_all_false: bool = False) -> Any:
    """Returns the boolean mask for `tree` with exactly the tree structure of `tree`.

    A mask with the same paths but other containers (a plain dict for a `FrozenDict`) is rebuilt
    into the structure of `tree`, so that optax's tree maps over both line up.
    """
    mask_tree = mask(tree) if callable(mask) else mask
    flat_mask = _paths.flatten_with_paths(mask_tree)
    _paths.check_same_paths(
        _paths.leaf_paths(tree), flat_mask, expected_name="`params`", actual_name="`mask`"
    )

    flags = {}
    for path, flag in flat_mask.items():
        if isinstance(flag, jax.core.Tracer):
            raise ValueError(
                f"`mask` must be static, but its leaf at {path!r} is a traced array. Build the "
                "mask from Python or NumPy booleans outside `jax.jit`."
            )
        if np.shape(flag) != () or np.asarray(flag).dtype != np.bool_:
            raise ValueError(
                f"`mask` leaves must be booleans (True = retrain), got {flag!r} at the path "
                f"{path!r}."
            )
        flags[path] = bool(flag)

    if not allow_all_false and not any(flags.values()):
        raise ValueError(
            "`mask` is False for every leaf, so there is nothing to retrain. Flag at least one "
            "layer group (True = retrain), for example with `Diagnosis.mask(params)`."
        )
    return _paths.unflatten_like(tree, flags)


def surgical_optimizer(
    optimizer: optax.GradientTransformation, mask: Any | Callable[[Any], Any]
) -> optax.GradientTransformationExtraArgs:
    """Wraps `optimizer` so that it updates only the leaves flagged by `mask`.

    The flagged leaves go through `optimizer` unchanged: momentum, weight decay and any other
    transform inside it. Every other leaf gets an update of exactly zero, so
    `optax.apply_updates` leaves it bit-identical (except that a parameter equal to -0.0 becomes
    +0.0, since -0.0 + 0.0 == +0.0). `optimizer` keeps no state for those leaves: in its state
    they are `optax.MaskedNode`.

    `optax.masked(optimizer, mask)` alone is not enough, because it passes the unflagged
    updates (the raw gradients) through untransformed instead of zeroing them. This function
    partitions the leaves with `optax.partition` and sends the unflagged ones to
    `optax.set_to_zero`.

    Args:
      optimizer: Any optax gradient transformation, for example
        `optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9))`.
      mask: A boolean pytree with the same leaf paths as the parameters (True = retrain), or a
        function from the parameters to such a pytree. It must be static (Python or NumPy
        booleans).

    Returns:
      An optax gradient transformation. Its `init` and `update` raise ValueError when the mask's
      leaf paths differ from those of the parameters (naming the differing paths), when a mask
      leaf is not a boolean, or when the mask is False everywhere.
    """

    def labels(tree):
        return jax.tree.map(lambda flag: _RETRAIN if flag else _FROZEN, _resolve_mask(mask, tree))

    return optax.partition({_RETRAIN: optimizer, _FROZEN: optax.set_to_zero()}, labels)


def mask_param_fraction(mask, params) -> float:
    """Returns the fraction of the elements of `params` that `mask` flags True (retrain).

    Args:
      mask: A boolean pytree with the leaf paths of `params`, or a function of `params`.
      params: The parameter pytree. Only shapes are read.

    Raises:
      ValueError: as `surgical_optimizer` does, for a mask whose leaf paths differ from those of
        `params` or whose leaves are not booleans.
    """
    flags = _paths.flatten_with_paths(_resolve_mask(mask, params, allow_all_false=True))
    sizes = {
        path: _stats.leaf_size(leaf) for path, leaf in _paths.flatten_with_paths(params).items()
    }
    total = sum(sizes.values())
    if total == 0:
        raise ValueError(
            "`params` contains no elements, so the fraction is undefined. Pass a non-empty tree."
        )
    return sum(size for path, size in sizes.items() if flags[path]) / total
