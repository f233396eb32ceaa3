"""Parameter paths: name every leaf of a pytree by its "/"-joined key path.

Per-layer statistics, layer groups and retraining masks are all keyed by these strings, so the
same code serves flax linen variable dicts (plain dicts or `FrozenDict`), `flax.nnx.State`, plain
dicts, lists, tuples and NamedTuples. Nothing here imports flax: every one of those containers is
a registered pytree, and JAX reports its keys as `DictKey`, `GetAttrKey`, `SequenceKey` or
`FlattenedIndexKey` entries.

A flax `Variable` (the leaves of an `nnx.State`, or a boxed linen parameter such as
`nn.Partitioned`) stores its array under the attribute `value`, so JAX reports the path
`l1/kernel/value`. `path_str` drops that last `value` key, so that an `nnx.State` and a linen
parameter dict of the same network produce the same paths (`l1/kernel`). Dropping it cannot make
two leaves share a path, because a node whose child is named `value` is never a leaf itself.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import jax

# The attribute under which flax `Variable` containers store their array.
_VARIABLE_VALUE_KEY = "value"


def _key_name(key) -> str:
    """Returns the text of one key-path entry."""
    if isinstance(key, jax.tree_util.DictKey):
        return str(key.key)
    if isinstance(key, jax.tree_util.GetAttrKey):
        return key.name
    if isinstance(key, jax.tree_util.SequenceKey):
        return str(key.idx)
    if isinstance(key, jax.tree_util.FlattenedIndexKey):
        return str(key.key)
    raise TypeError(
        f"Unsupported key-path entry {key!r} of type {type(key).__name__}. Expected DictKey, "
        "GetAttrKey, SequenceKey or FlattenedIndexKey."
    )


def path_str(key_path: Sequence[Any]) -> str:
    """Joins a JAX key path with "/" into a parameter path.

    Args:
      key_path: A key path as returned by `jax.tree_util.tree_flatten_with_path`.

    Returns:
      The path, for example `"stage1_block0/conv1/kernel"` for
      `(DictKey("stage1_block0"), DictKey("conv1"), DictKey("kernel"))`. `DictKey` contributes its
      key, `GetAttrKey` its attribute name, `SequenceKey` and `FlattenedIndexKey` their index. A
      final `GetAttrKey("value")` (a flax `Variable`) is dropped.
    """
    keys = list(key_path)
    last = keys[-1] if keys else None
    if isinstance(last, jax.tree_util.GetAttrKey) and last.name == _VARIABLE_VALUE_KEY:
        keys = keys[:-1]
    return "/".join(_key_name(key) for key in keys)


def leaf_paths(tree) -> list[str]:
    """Returns the path of every leaf of `tree`, in `jax.tree.leaves` order.

    Raises:
      ValueError: if two leaves map to the same path, which happens when a dict key itself
        contains "/" (for example `{"a/b": x, "a": {"b": y}}`).
    """
    paths = [path_str(key_path) for key_path, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]
    if len(set(paths)) != len(paths):
        seen: set[str] = set()
        duplicates = sorted({path for path in paths if path in seen or seen.add(path)})
        raise ValueError(
            f"Two or more leaves share the parameter paths {duplicates}. Rename the dict keys "
            "that contain '/' so that every leaf has its own path."
        )
    return paths


def flatten_with_paths(tree) -> dict[str, Any]:
    """Flattens a pytree into a dict from parameter path to leaf, sorted by path.

    Args:
      tree: Any pytree, for example a flax linen `{"params": ...}` dict, an `nnx.State`, a plain
        dict, a tuple or a NamedTuple. `None` subtrees and `optax.MaskedNode` have no leaves and
        therefore no paths.

    Returns:
      A dict `{path: leaf}` whose keys are in sorted order.

    Raises:
      ValueError: if two leaves map to the same path (see `leaf_paths`).
    """
    paths = leaf_paths(tree)
    leaves = jax.tree.leaves(tree)
    return dict(sorted(zip(paths, leaves, strict=True), key=lambda item: item[0]))


def unflatten_like(tree, mapping: Mapping[str, Any]):
    """Builds a pytree with the structure of `tree` and leaves taken from `mapping` by path.

    This is the inverse of `flatten_with_paths`: for any pytree `t`,
    `unflatten_like(t, flatten_with_paths(t))` rebuilds `t`.

    Args:
      tree: The pytree whose structure (containers, keys, flax `Variable` wrappers) to copy.
      mapping: A mapping from every leaf path of `tree` to the new leaf.

    Returns:
      A pytree with the same tree structure as `tree`.

    Raises:
      ValueError: if the keys of `mapping` are not exactly the leaf paths of `tree`. The message
        lists the missing and the extra paths.
    """
    paths = leaf_paths(tree)
    check_same_paths(paths, mapping.keys(), expected_name="`tree`", actual_name="`mapping`")
    treedef = jax.tree.structure(tree)
    return jax.tree.unflatten(treedef, [mapping[path] for path in paths])


def check_same_paths(
    expected, actual, *, expected_name: str, actual_name: str, max_listed: int = 8
) -> None:
    """Raises ValueError naming the paths that differ between two path collections."""
    expected_set, actual_set = set(expected), set(actual)
    if expected_set == actual_set:
        return

    missing = sorted(expected_set - actual_set)
    extra = sorted(actual_set - expected_set)
    parts = []
    if missing:
        parts.append(f"missing from {actual_name}: {_shorten(missing, max_listed)}")
    if extra:
        parts.append(f"not in {expected_name}: {_shorten(extra, max_listed)}")
    raise ValueError(
        f"The parameter paths of {actual_name} do not match those of {expected_name} ("
        + "; ".join(parts)
        + "). Build both from the same parameter tree."
    )


def _shorten(paths: list[str], max_listed: int) -> str:
    """Formats a list of paths, cut after `max_listed` with a count of the rest."""
    if len(paths) <= max_listed:
        return str(paths)
    return f"{paths[:max_listed]} and {len(paths) - max_listed} more"
