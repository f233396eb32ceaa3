"""History entries: per-layer gradient norms recorded at evaluation points, as JSON lines.

A history entry is one of:

* a record `{"step": int, "layer_norms": {path: norm}, "total_norm": float | None,
  "layer_sizes": {path: int}}`, as `history_entry` builds it and `append_history` /
  `load_history` write and read as JSON lines. `layer_norms` contains the L2 norm of each
  parameter's gradient on the misclassified inputs. `total_norm` is the global gradient norm of
  the loss over all inputs, which the "relative" normalization needs. `layer_sizes` contains
  each parameter's element count, which "per_parameter" needs unless `params` is given. Only
  `layer_norms` is required.
* a flat dict `{path: norm}` whose values are all scalars (Python numbers or 0-d arrays).
* a gradient pytree (flax linen dict, `nnx.State`, plain dict, ...): the norms and sizes are
  computed from its leaves. A gradient pytree whose leaves are all scalars is indistinguishable
  from the flat dict above, so pass it through `history_entry` first.
"""

import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax

from beta_optax import _paths, _stats

HISTORY_KEYS = ("step", "layer_norms", "total_norm", "layer_sizes")

_layer_norms_jit = jax.jit(_stats.layer_norms)


class _Entry(NamedTuple):
    """One history entry in canonical form."""

    step: int
    norms: dict[str, float]
    total_norm: float | None
    sizes: dict[str, int] | None


def history_entry(step: int, grads, total_grads=None, *, total_norm: float | None = None) -> dict:
    """Builds a JSON-ready history entry from the gradient on the misclassified inputs.

    Args:
      step: The training step of the evaluation point.
      grads: The gradient pytree of the loss over the misclassified inputs only.
      total_grads: The gradient pytree of the loss over all inputs. Its global norm becomes the
        entry's `total_norm`, which the "relative" normalization divides by.
      total_norm: The global norm of `total_grads`, when it was computed already (for example
        inside a jitted step). Give at most one of `total_grads` and `total_norm`.

    Returns:
      A dict `{"step", "layer_norms", "total_norm", "layer_sizes"}` of Python numbers.

    Raises:
      ValueError: if both `total_grads` and `total_norm` are given, or `grads` has no leaves.
    """
    if total_grads is not None and total_norm is not None:
        raise ValueError(
            "Give either `total_grads` or `total_norm`, not both: `total_norm` is the global "
            "norm of `total_grads`."
        )
    flat = _paths.flatten_with_paths(grads)
    if not flat:
        raise ValueError("`grads` has no array leaves. Pass the gradient pytree of the loss.")

    norms = jax.device_get(_layer_norms_jit(grads))
    if total_grads is not None:
        total_layer_norms = jax.device_get(_layer_norms_jit(total_grads)).values()
        total_norm = math.sqrt(sum(float(norm) ** 2 for norm in total_layer_norms))
    return {
        "step": int(step),
        "layer_norms": {path: float(norm) for path, norm in norms.items()},
        "total_norm": None if total_norm is None else float(total_norm),
        "layer_sizes": {path: _stats.leaf_size(leaf) for path, leaf in flat.items()},
    }


def append_history(path: str | os.PathLike, entry: Mapping[str, Any]) -> None:
    """Appends one history entry as a JSON line to the file at `path`.

    Non-finite norms are written as `NaN`/`Infinity` (Python's JSON extension) so that the file
    keeps the record, and `diagnose` then names the entry and the path.
    """
    if "layer_norms" not in entry:
        raise ValueError(
            f"`entry` must be a history record with a 'layer_norms' key, got the keys "
            f"{sorted(entry)}. Build it with `history_entry(step, grads)`."
        )
    with open(path, "a", encoding="utf-8") as file:
        file.write(json.dumps(dict(entry), sort_keys=True) + "\n")


def load_history(path: str | os.PathLike) -> list[dict]:
    """Reads the history entries that `append_history` wrote, one JSON object per line.

    Blank lines are skipped.

    Raises:
      ValueError: if a line is not valid JSON or not a history record; the message gives the
        line number.
    """
    entries = []
    with open(path, encoding="utf-8") as file:
        for line_number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"Invalid JSON on line {line_number} of {path}: {error}"
                ) from error
            if not isinstance(record, dict) or "layer_norms" not in record:
                raise ValueError(
                    f"Line {line_number} of {path} is not a history record: it has no "
                    "'layer_norms' key. Write the file with `append_history`."
                )
            entries.append(record)
    return entries


def _is_scalar(value) -> bool:
    """Returns whether `value` is a real number or a 0-d numeric array."""
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Real):
        return True
    return getattr(value, "shape", None) == () and hasattr(value, "dtype")


def _is_norm_mapping(entry) -> bool:
    """Returns whether `entry` is a flat dict from path to scalar norm."""
    return (
        isinstance(entry, Mapping)
        and len(entry) > 0
        and all(isinstance(key, str) for key in entry)
        and all(_is_scalar(value) for value in entry.values())
    )


def _read_record(index: int, entry: Mapping) -> _Entry:
    """Converts a history record (a dict with 'layer_norms') to canonical form."""
    unknown = sorted(set(entry) - set(HISTORY_KEYS))
    if unknown:
        raise ValueError(
            f"History entry {index} has unknown keys {unknown}. A history record has the keys "
            f"{list(HISTORY_KEYS)}."
        )
    if not _is_norm_mapping(entry["layer_norms"]):
        raise ValueError(
            f"History entry {index}: 'layer_norms' must be a non-empty dict from parameter path "
            "to a scalar norm."
        )

    sizes = entry.get("layer_sizes")
    total_norm = entry.get("total_norm")
    return _Entry(
        step=int(entry.get("step", index)),
        norms={path: float(value) for path, value in entry["layer_norms"].items()},
        total_norm=None if total_norm is None else float(total_norm),
        sizes=None if sizes is None else {path: int(size) for path, size in sizes.items()},
    )


def _read_entry(index: int, entry) -> _Entry:
    """Converts any supported history entry to canonical form and checks its values."""
    if isinstance(entry, Mapping) and "layer_norms" in entry:
        result = _read_record(index, entry)
    elif _is_norm_mapping(entry):
        result = _Entry(index, {path: float(value) for path, value in entry.items()}, None, None)
    elif jax.tree.leaves(entry):
        # A gradient pytree: its step is its position in the history.
        result = _read_record(index, history_entry(index, entry))
    else:
        raise ValueError(
            f"History entry {index} has no norms: it is neither a record with 'layer_norms', "
            "a dict from path to norm, nor a gradient pytree with leaves."
        )

    for path, norm in result.norms.items():
        if not math.isfinite(norm):
            raise ValueError(
                f"History entry {index} (step {result.step}) has the non-finite norm {norm} at "
                f"the path {path!r}. Drop the entry or fix the gradient computation."
            )
        if norm < 0:
            raise ValueError(
                f"History entry {index} (step {result.step}) has the negative norm {norm} at the "
                f"path {path!r}. Norms must be >= 0."
            )
    if result.total_norm is not None and not math.isfinite(result.total_norm):
        raise ValueError(
            f"History entry {index} (step {result.step}) has the non-finite total_norm "
            f"{result.total_norm}."
        )
    return result


def _read_history(params_grads_history) -> list[_Entry]:
    """Reads and cross-checks every history entry."""
    if isinstance(params_grads_history, Mapping) or not isinstance(params_grads_history, Sequence):
        raise TypeError(
            "`params_grads_history` must be a sequence (list or tuple) of history entries, got "
            f"{type(params_grads_history).__name__}. Wrap a single entry in a list."
        )
    if len(params_grads_history) == 0:
        raise ValueError(
            "`params_grads_history` is empty. Record at least one history entry "
            "(see `history_entry`)."
        )

    entries = [_read_entry(index, entry) for index, entry in enumerate(params_grads_history)]
    for index, entry in enumerate(entries[1:], start=1):
        _paths.check_same_paths(
            entries[0].norms,
            entry.norms,
            expected_name="history entry 0",
            actual_name=f"history entry {index}",
        )
    return entries
