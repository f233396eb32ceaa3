"""Localize errors to layer groups from gradient attribution on misclassified inputs.

The pipeline records, at each evaluation point, the per-layer gradient norms of the loss over the
misclassified inputs only (a "history entry"). `diagnose` turns those records into one score per
layer group, ranks the groups, and flags the problem groups whose retraining should fix the errors
("surgical correction", see `_surgery.surgical_optimizer`).

The history entry format is described in `_history.py`.

References:
  Pasichnyk, `Beta-Scheduling <https://arxiv.org/abs/2603.28921>`_, 2026.
"""

import dataclasses
import json
import numbers
import os
import warnings
from collections.abc import Sequence

import numpy as np

from beta_optax import _paths, _stats
from beta_optax._history import (  # noqa: F401  (re-exported: the public names live here too)
    HISTORY_KEYS,
    _Entry,
    _read_history,
    append_history,
    history_entry,
    load_history,
)

NORMALIZATIONS = ("raw", "per_parameter", "relative")
RULE_LARGEST_GAP = "largest_log_gap"
RULE_TOP_K = "top_k"
_JSON_FORMAT = "beta_optax.Diagnosis/1"


def _resolve_sizes(entries: list[_Entry], params, paths: list[str]) -> dict[str, int] | None:
    """Returns the element count of every path, or None when nothing records it."""
    if params is not None:
        flat = _paths.flatten_with_paths(params)
        missing = sorted(set(paths) - set(flat))
        if missing:
            raise ValueError(
                f"`params` has no leaves at the history paths {missing[:8]} "
                f"({len(missing)} missing in all). Pass the same parameter tree that the "
                "gradients were taken with respect to."
            )
        return {path: _stats.leaf_size(flat[path]) for path in paths}

    if any(entry.sizes is None for entry in entries):
        return None
    for index, entry in enumerate(entries):
        _paths.check_same_paths(
            paths, entry.sizes, expected_name="'layer_norms'", actual_name=f"entry {index} sizes"
        )
        if entry.sizes != entries[0].sizes:
            raise ValueError(
                f"History entry {index} records other parameter sizes than entry 0. All entries "
                "must come from the same model."
            )
    return dict(entries[0].sizes)


def _group_scores(
    entry: _Entry,
    index: int,
    group_of: dict[str, str],
    names: list[str],
    group_sizes: dict[str, int] | None,
    normalization: str,
) -> np.ndarray:
    """Computes one entry's score per group, in the order of `names`."""
    squares = dict.fromkeys(names, 0.0)
    for path, norm in entry.norms.items():
        squares[group_of[path]] += norm * norm
    raw = np.sqrt(np.array([squares[name] for name in names], dtype=np.float64))

    if normalization == "raw":
        return raw
    if normalization == "per_parameter":
        return raw / np.sqrt(np.array([group_sizes[name] for name in names], dtype=np.float64))
    if entry.total_norm is None or entry.total_norm <= 0:
        raise ValueError(
            f'normalization="relative" needs a positive total_norm, but history entry {index} '
            f"(step {entry.step}) has total_norm={entry.total_norm}. Record it with "
            '`history_entry(step, grads, total_grads)`, or use normalization="per_parameter".'
        )
    return raw / entry.total_norm


def count_problem_groups(scores: Sequence[float]) -> int:
    """Chooses how many of the top-scoring groups are problem groups (largest log gap rule).

    Sort the scores in descending order, s_1 >= s_2 >= ... >= s_n. The rule flags the top k
    groups, where k maximizes the gap log(s_k / s_{k+1}) over 1 <= k <= max(1, n // 2) with
    s_k > 0 (a gap down to a score of 0 is infinite).

    Why this rule: it has no threshold to tune. Gradient norms are positive and spread over
    orders of magnitude, so a group differs from the next one by a ratio rather than a
    difference. The log also makes the rule independent of the scale of the scores. The bound
    k <= n // 2 encodes what localizing means (the problem groups are a minority). It also keeps
    one near-zero group, whose ratio to the rest would be the largest gap, from flagging every
    other group.

    Args:
      scores: One score per group, all finite and >= 0.

    Returns:
      The number of problem groups: 0 when every score is 0, and the number of positive scores
      (with a warning) when the top half of the scores is tied.
    """
    ordered = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    if ordered.size == 0 or ordered[0] <= 0:
        return 0
    if ordered.size == 1:
        return 1

    candidates = np.arange(1, max(1, ordered.size // 2) + 1)
    candidates = candidates[ordered[candidates - 1] > 0]
    with np.errstate(divide="ignore"):
        gaps = np.log(ordered[candidates - 1]) - np.log(ordered[candidates])
    if np.max(gaps) <= 0:
        positive = int(np.sum(ordered > 0))
        warnings.warn(
            f"The top {candidates.size + 1} group scores are tied, so no layer group scores "
            "above the others. "
            f"Flagging all {positive} groups with a positive score.",
            stacklevel=2,
        )
        return positive
    return int(candidates[np.argmax(gaps)])


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """The result of `diagnose`: group scores, their ranking and the flagged problem groups.

    Attributes:
      groups: The layer groups, in group order (see `_stats.assign_groups`).
      scores: The score of each group: the mean over history entries of its per-entry score.
      ranking: The groups ordered by score, highest first (ties keep group order).
      problem_groups: The flagged groups, highest score first.
      normalization: One of "raw", "per_parameter", "relative" (see `diagnose`).
      rule: How `problem_groups` was chosen: "largest_log_gap" (see `count_problem_groups`) or
        "top_k".
      steps: The training step of each history entry.
      history_scores: The per-entry scores, one row per history entry and one column per group in
        the order of `groups`.
      group_of: The group of every parameter path.
      group_sizes: The number of parameters in each group, or None when the history records no
        sizes and no `params` were given.
    """

    groups: tuple[str, ...]
    scores: dict[str, float]
    ranking: tuple[str, ...]
    problem_groups: tuple[str, ...]
    normalization: str
    rule: str
    steps: tuple[int, ...]
    history_scores: tuple[tuple[float, ...], ...]
    group_of: dict[str, str]
    group_sizes: dict[str, int] | None

    @property
    def param_fraction(self) -> float | None:
        """The fraction of all parameters in the problem groups, or None without sizes."""
        if self.group_sizes is None:
            return None
        flagged = sum(self.group_sizes[name] for name in self.problem_groups)
        return flagged / sum(self.group_sizes.values())

    def score_matrix(self) -> np.ndarray:
        """Returns `history_scores` as a float64 array of shape (entries, groups)."""
        return np.array(self.history_scores, dtype=np.float64).reshape(
            len(self.steps), len(self.groups)
        )

    def mask(self, params):
        """Builds the retraining mask: True for each leaf of a problem group (retrain it).

        The mask has the same tree structure as `params`, so it works as the `mask` of
        `surgical_optimizer` and of `optax.masked` (both read True as "apply the update").
        `optax.freeze` reads True as "freeze": give it `frozen_mask(params)` instead.

        Args:
          params: A parameter pytree whose leaf paths are exactly the diagnosed paths.

        Raises:
          ValueError: naming the paths of `params` that were not diagnosed, or vice versa.
        """
        return self._leaf_flags(params, retrain=True)

    def frozen_mask(self, params):
        """Builds the negation of `mask(params)`: True for each leaf to keep fixed."""
        return self._leaf_flags(params, retrain=False)

    def _leaf_flags(self, params, *, retrain: bool):
        """Maps every leaf of `params` to whether it is (or is not) in a problem group."""
        paths = _paths.leaf_paths(params)
        _paths.check_same_paths(
            self.group_of, paths, expected_name="the diagnosed history", actual_name="`params`"
        )
        problem = set(self.problem_groups)
        flags = {path: (self.group_of[path] in problem) == retrain for path in paths}
        return _paths.unflatten_like(params, flags)

    def to_json(self) -> str:
        """Serializes the diagnosis to a JSON string that `from_json` reads back."""
        fields = dataclasses.asdict(self)
        return json.dumps({"format": _JSON_FORMAT, **fields}, indent=2, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> "Diagnosis":
        """Reads a diagnosis from the JSON that `to_json` wrote."""
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != _JSON_FORMAT:
            raise ValueError(
                f"Not a serialized Diagnosis: expected 'format' to be {_JSON_FORMAT!r}. Write "
                "it with `Diagnosis.to_json()`."
            )
        names = [field.name for field in dataclasses.fields(cls)]
        missing = [name for name in names if name not in data]
        if missing:
            raise ValueError(f"The serialized Diagnosis lacks the fields {missing}.")
        sizes = data["group_sizes"]
        return cls(
            groups=tuple(data["groups"]),
            scores={name: float(value) for name, value in data["scores"].items()},
            ranking=tuple(data["ranking"]),
            problem_groups=tuple(data["problem_groups"]),
            normalization=data["normalization"],
            rule=data["rule"],
            steps=tuple(int(step) for step in data["steps"]),
            history_scores=tuple(tuple(float(v) for v in row) for row in data["history_scores"]),
            group_of=dict(data["group_of"]),
            group_sizes=None if sizes is None else {k: int(v) for k, v in sizes.items()},
        )

    def summary(self) -> str:
        """Formats the ranking as a text table: rank, group, score, parameter share, flag."""
        header = ("rank", "group", f"score ({self.normalization})", "params", "problem")
        rows = [header]
        for rank, name in enumerate(self.ranking, start=1):
            share = "?"
            if self.group_sizes is not None:
                share = f"{self.group_sizes[name] / sum(self.group_sizes.values()):.1%}"
            flag = "yes" if name in self.problem_groups else ""
            rows.append((str(rank), name, f"{self.scores[name]:.4g}", share, flag))
        widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
        lines = [
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows
        ]

        fraction = self.param_fraction
        share = "unknown" if fraction is None else f"{fraction:.1%}"
        lines.append(
            f"{len(self.problem_groups)} of {len(self.groups)} groups flagged ({self.rule}), "
            f"with {share} of the parameters, over {len(self.steps)} history entries."
        )
        return "\n".join(lines)

    def save_heatmap(self, path: str | os.PathLike) -> None:
        """Writes a PNG heatmap of each group's score over the history entries' steps.

        Problem groups are marked with "*" in the row labels. Needs matplotlib, which the
        `train` extra installs; it renders with the Agg backend and leaves pyplot untouched.

        Raises:
          ImportError: if matplotlib is not installed.
        """
        try:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure
        except ImportError as error:
            raise ImportError(
                "Diagnosis.save_heatmap needs matplotlib. Install it with "
                "`pip install 'beta-optax[train]'`."
            ) from error

        matrix = self.score_matrix().T
        labels = [f"{name} *" if name in self.problem_groups else name for name in self.groups]
        width = max(5.0, 2.0 + 0.5 * len(self.steps))
        figure = Figure(figsize=(width, 1.0 + 0.35 * len(self.groups)))
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        image = axes.imshow(matrix, aspect="auto", interpolation="nearest", cmap="viridis")
        figure.colorbar(image, ax=axes, label=f"score ({self.normalization})")

        tick_stride = max(1, len(self.steps) // 10)
        ticks = list(range(0, len(self.steps), tick_stride))
        axes.set_xticks(ticks, [str(self.steps[tick]) for tick in ticks])
        axes.set_yticks(range(len(self.groups)), labels)
        axes.set_xlabel("step")
        axes.set_title("Gradient attribution on misclassified inputs")
        figure.tight_layout()
        figure.savefig(path, format="png")


def _select_problem_groups(
    ranking: list[str], scores: dict[str, float], top_k: int | None
) -> tuple[tuple[str, ...], str]:
    """Returns the problem groups and the rule that chose them."""
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral):
            raise TypeError(f"`top_k` must be an int or None, got {top_k!r}.")
        if not 1 <= top_k <= len(ranking):
            raise ValueError(
                f"`top_k` must be between 1 and the number of groups ({len(ranking)}), got "
                f"top_k={top_k}. Pass top_k=None to use the largest-gap rule."
            )
        return tuple(ranking[:top_k]), RULE_TOP_K

    count = count_problem_groups([scores[name] for name in ranking])
    if count == 0:
        warnings.warn(
            "Every group score is 0, so no layer group is flagged: the misclassified inputs "
            "produced no gradient.",
            stacklevel=3,
        )
    return tuple(ranking[:count]), RULE_LARGEST_GAP


def diagnose(
    params_grads_history,
    *,
    groups: _stats.GroupSpec = None,
    top_k: int | None = None,
    normalization: str = "per_parameter",
    params=None,
) -> Diagnosis:
    """Scores each layer group by its gradient attribution on misclassified inputs.

    For every history entry, the raw score of group g is the L2 norm of its gradient,
    :math:`r_g = \\sqrt{\\sum_{l \\in g} n_l^2}` over the layer norms :math:`n_l`. The
    normalization then gives the score:

    * ``"raw"``: :math:`r_g`. Large groups score high because they have many parameters.
    * ``"per_parameter"`` (default): :math:`r_g / \\sqrt{N_g}` with :math:`N_g` the number of
      parameters in g, the RMS gradient per parameter, so groups of different size compare
      fairly. The sizes come from gradient-pytree entries, from `params`, or from the entries'
      `layer_sizes`.
    * ``"relative"``: :math:`r_g / \\|\\nabla L\\|` with the entry's `total_norm`, the global
      gradient norm over all inputs: the group's misclassified-input gradient as a share of
      the whole-loss gradient, comparable across training steps.

    A group's score is the mean of its per-entry scores over the history (every evaluation point
    weighs the same). The groups are ranked by score and the problem groups are the top
    `top_k`, or, when `top_k` is None, the number `count_problem_groups` chooses.

    Args:
      params_grads_history: A non-empty sequence of history entries (see the module docstring
        for the formats). Every entry must cover the same parameter paths.
      groups: None (each path is its own group), a callable path -> group name, or a mapping
        group name -> path prefixes (see `_stats.assign_groups`).
      top_k: The number of problem groups, between 1 and the number of groups. None chooses it
        by the largest log gap of the sorted scores.
      normalization: "raw", "per_parameter" or "relative".
      params: The parameter pytree, read only for the element counts of the paths.

    Returns:
      A `Diagnosis`.

    Raises:
      ValueError: for an empty history or entries with different parameter paths (the message
        names the paths). Also for a non-finite or negative norm (the message names the entry
        and the path), an unknown group prefix, a `top_k` out of range, or an unknown
        normalization. Also when the history lacks what the normalization needs (sizes for
        "per_parameter", total_norm for "relative").
      TypeError: if `params_grads_history` is not a sequence or `top_k` is not an int.
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"Unknown `normalization` {normalization!r}. Choose one of {list(NORMALIZATIONS)}."
        )
    entries = _read_history(params_grads_history)
    paths = list(entries[0].norms)
    group_of, names = _stats.assign_groups(sorted(paths), groups)

    sizes = _resolve_sizes(entries, params, paths)
    group_sizes = None
    if sizes is not None:
        group_sizes = dict.fromkeys(names, 0)
        for path, size in sizes.items():
            group_sizes[group_of[path]] += size
    if normalization == "per_parameter":
        _check_group_sizes(group_sizes)

    matrix = np.stack(
        [
            _group_scores(entry, index, group_of, names, group_sizes, normalization)
            for index, entry in enumerate(entries)
        ]
    )
    mean_scores = matrix.mean(axis=0)
    scores = {name: float(score) for name, score in zip(names, mean_scores, strict=True)}
    # A stable sort on the negated score keeps group order among ties.
    ranking = [names[i] for i in np.argsort(-mean_scores, kind="stable")]
    problem_groups, rule = _select_problem_groups(ranking, scores, top_k)

    return Diagnosis(
        groups=tuple(names),
        scores=scores,
        ranking=tuple(ranking),
        problem_groups=problem_groups,
        normalization=normalization,
        rule=rule,
        steps=tuple(entry.step for entry in entries),
        history_scores=tuple(tuple(float(v) for v in row) for row in matrix),
        group_of={path: group_of[path] for path in sorted(paths)},
        group_sizes=group_sizes,
    )


def _check_group_sizes(group_sizes: dict[str, int] | None) -> None:
    """Raises ValueError when per-parameter scores cannot be computed."""
    if group_sizes is None:
        raise ValueError(
            'normalization="per_parameter" needs the number of parameters per group, but the '
            "history records no 'layer_sizes'. Pass `params=`, record entries with "
            '`history_entry`, or use normalization="raw".'
        )
    empty = [name for name, size in group_sizes.items() if size == 0]
    if empty:
        raise ValueError(
            f'normalization="per_parameter" is undefined for the groups {empty}, which contain no '
            'parameters. Drop their empty arrays or use normalization="raw".'
        )
