"""Per-layer statistics keyed by parameter path, and the grouping of paths into layer groups.

A layer group is a named set of parameter paths, for example the seven groups of a ResNet-18
(`stem_conv`, `stem_norm`, `stage1` to `stage4`, `head`). Every function that takes a group
specification accepts the same three forms (see `assign_groups`):

* `None`: every path is its own group.
* a callable `path -> group name`, such as a model's `resnet_group`.
* a mapping `group name -> path prefixes`. A prefix matches a path equal to it or a path that
  continues it after a "/" (so `"stage1"` matches `"stage1/conv/kernel"` but not
  `"stage10/conv/kernel"`).
"""

import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from beta_optax import _paths

GroupSpec = Callable[[str], str] | Mapping[str, Sequence[str] | str] | None


def _prefix_matches(prefix: str, path: str) -> bool:
    """Returns whether `prefix` names `path` or one of its enclosing modules."""
    return path == prefix or path.startswith(prefix + "/")


def _assign_by_prefixes(
    paths: Sequence[str], groups: Mapping[str, Sequence[str] | str]
) -> dict[str, str]:
    """Maps every path to the one group whose prefix matches it."""
    group_of: dict[str, str] = {}
    for name, prefixes in groups.items():
        prefixes = [prefixes] if isinstance(prefixes, str) else list(prefixes)
        if not prefixes:
            raise ValueError(f"`groups[{name!r}]` lists no path prefixes. Give at least one.")
        for prefix in prefixes:
            prefix = prefix.rstrip("/")
            if not prefix:
                raise ValueError(
                    f"`groups[{name!r}]` contains an empty prefix, which would match every "
                    "path. List the module paths of the group instead."
                )
            matched = [path for path in paths if _prefix_matches(prefix, path)]
            if not matched:
                raise ValueError(
                    f"Unknown group prefix {prefix!r} in `groups[{name!r}]`: it matches no "
                    f"parameter path. Known paths start with {_top_level_names(paths)}."
                )
            for path in matched:
                if path in group_of and group_of[path] != name:
                    raise ValueError(
                        f"The parameter path {path!r} matches prefixes of two groups, "
                        f"{group_of[path]!r} and {name!r}. Make the prefixes disjoint."
                    )
                group_of[path] = name

    unmatched = [path for path in paths if path not in group_of]
    if unmatched:
        raise ValueError(
            f"The parameter paths {unmatched[:8]} match no prefix in `groups` "
            f"({len(unmatched)} unmatched in all). Add their prefixes to one of the groups "
            f"{list(groups)}."
        )
    return group_of


def _top_level_names(paths: Sequence[str]) -> list[str]:
    """Returns the sorted distinct first components of `paths`."""
    return sorted({path.split("/", 1)[0] for path in paths})


def assign_groups(paths: Sequence[str], groups: GroupSpec) -> tuple[dict[str, str], list[str]]:
    """Assigns every parameter path to a layer group.

    Args:
      paths: The parameter paths, for example the keys of `_paths.flatten_with_paths(params)`.
      groups: `None`, a callable `path -> group name`, or a mapping `group name -> prefixes`
        (a single prefix may be given as a string).

    Returns:
      `(group_of, names)`: `group_of` maps each path to its group name, and `names` lists the
      groups in order. For a mapping, the order is the mapping's order. Otherwise groups are
      ordered by the first path (in the order of `paths`) that belongs to them.

    Raises:
      ValueError: if a mapping prefix matches no path (an unknown group name or prefix), a path
        matches two groups, or a path matches no group.
      TypeError: if the callable returns something other than a string.
    """
    if groups is None:
        group_of = {path: path for path in paths}
    elif isinstance(groups, Mapping):
        # Every group matched at least one path, or `_assign_by_prefixes` raised.
        group_of = _assign_by_prefixes(paths, groups)
        return {path: group_of[path] for path in paths}, list(groups)
    elif callable(groups):
        group_of = {}
        for path in paths:
            name = groups(path)
            if not isinstance(name, str):
                raise TypeError(
                    f"The `groups` function must return a group name (str), got {name!r} of "
                    f"type {type(name).__name__} for the path {path!r}."
                )
            group_of[path] = name
    else:
        raise TypeError(
            "`groups` must be None, a function from path to group name, or a mapping from "
            f"group name to path prefixes, got {type(groups).__name__}."
        )
    return group_of, list(dict.fromkeys(group_of.values()))


def leaf_size(leaf) -> int:
    """Returns the number of elements of an array, a ShapeDtypeStruct or a Python number."""
    shape = leaf.shape if hasattr(leaf, "shape") else np.shape(leaf)
    return math.prod(shape)


def _sum_of_squares(leaf) -> jax.Array:
    """Returns the float32 sum of squares of one leaf."""
    value = jnp.asarray(leaf).astype(jnp.float32)
    return jnp.sum(jnp.square(value))


def layer_norms(tree) -> dict[str, jax.Array]:
    """Computes the L2 norm of every leaf, keyed by parameter path.

    Safe under `jax.jit`: the paths are static and every norm is a float32 scalar array.

    Args:
      tree: Any pytree of arrays, for example gradients or parameters.

    Returns:
      A dict `{path: norm}`, sorted by path.
    """
    return {
        path: jnp.sqrt(_sum_of_squares(leaf))
        for path, leaf in _paths.flatten_with_paths(tree).items()
    }


def group_norms(tree, groups: GroupSpec) -> dict[str, jax.Array]:
    """Computes the L2 norm of each layer group: the square root of its leaves' sum of squares.

    Safe under `jax.jit` and cheap enough to run inside a train step: it adds one reduction per
    leaf and one square root per group.

    Args:
      tree: Any pytree of arrays, for example gradients.
      groups: The group specification (see `assign_groups`).

    Returns:
      A dict `{group: norm}` of float32 scalars, in group order.
    """
    flat = _paths.flatten_with_paths(tree)
    group_of, names = assign_groups(list(flat), groups)
    totals = {name: jnp.zeros((), jnp.float32) for name in names}
    for path, leaf in flat.items():
        totals[group_of[path]] = totals[group_of[path]] + _sum_of_squares(leaf)
    return {name: jnp.sqrt(total) for name, total in totals.items()}


def group_sizes(tree, groups: GroupSpec) -> dict[str, int]:
    """Counts the elements (parameters) in each layer group.

    Args:
      tree: Any pytree of arrays or `jax.ShapeDtypeStruct`s. Only shapes are read.
      groups: The group specification (see `assign_groups`).

    Returns:
      A dict `{group: number of elements}`, in group order.
    """
    flat = _paths.flatten_with_paths(tree)
    group_of, names = assign_groups(list(flat), groups)
    sizes = dict.fromkeys(names, 0)
    for path, leaf in flat.items():
        sizes[group_of[path]] += leaf_size(leaf)
    return sizes


class ParameterRow(NamedTuple):
    """Statistics of one parameter array, as a row of `parameter_overview`.

    Attributes:
      path: The "/"-joined parameter path.
      shape: The array shape.
      size: The number of elements.
      norm: The L2 norm.
      mean: The mean of the elements.
      std: The standard deviation of the elements (population, ddof=0).
    """

    path: str
    shape: tuple[int, ...]
    size: int
    norm: float
    mean: float
    std: float


def parameter_overview(tree) -> list[ParameterRow]:
    """Computes path, shape, size, norm, mean and std of every leaf, sorted by path.

    Reads the arrays onto the host and computes in float64, so call it outside `jax.jit`.

    Args:
      tree: Any pytree of arrays.

    Returns:
      One `ParameterRow` per leaf.
    """
    rows = []
    for path, leaf in _paths.flatten_with_paths(tree).items():
        values = np.asarray(jax.device_get(leaf), dtype=np.float64)
        empty = values.size == 0
        rows.append(
            ParameterRow(
                path=path,
                shape=tuple(values.shape),
                size=int(values.size),
                norm=float(np.sqrt(np.sum(np.square(values)))),
                mean=float("nan") if empty else float(np.mean(values)),
                std=float("nan") if empty else float(np.std(values)),
            )
        )
    return rows


def format_parameter_overview(rows: Sequence[ParameterRow]) -> str:
    """Formats `parameter_overview` rows as an aligned text table with a total line."""
    header = ("path", "shape", "size", "norm", "mean", "std")
    body = [
        (
            row.path,
            str(row.shape),
            str(row.size),
            f"{row.norm:.4g}",
            f"{row.mean:.4g}",
            f"{row.std:.4g}",
        )
        for row in rows
    ]
    total = sum(row.size for row in rows)
    footer = ("total", "", str(total), "", "", "")
    table = [header, *body, footer]
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]

    def render(line):
        cells = [line[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(line[1:], widths[1:], strict=True)]
        return "  ".join(cells).rstrip()

    rule = "-" * len(render(header))
    return "\n".join([render(header), rule, *map(render, body), rule, render(footer)])
