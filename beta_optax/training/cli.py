"""Helpers the benchmark scripts share: presets, flag overrides, logging and progress bars."""

import argparse
import importlib.util
import logging
import os
import pathlib

from beta_optax.training.config import METHODS, TrainConfig
from beta_optax.training.progress import TqdmProgress


def configure_logging(level: int = logging.WARNING) -> None:
    """Log beta_optax at `level` to stderr, and keep orbax's per-save INFO lines out."""
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)
    except ImportError:
        pass


def load_preset(path: str | os.PathLike):
    """Import a preset module (a file with `get_config()` and `WORKERS`) by path."""
    path = pathlib.Path(path)
    if not path.exists():
        raise ValueError(f"Preset file {path} not found; presets live in {path.parent}.")
    spec = importlib.util.spec_from_file_location(f"preset_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def apply_flags(config: TrainConfig, args: argparse.Namespace) -> TrainConfig:
    """Override preset fields with the flags that were given (--dataset, --data-dir, ...)."""
    changes = {}
    if args.dataset is not None:
        changes["dataset"] = args.dataset
    if args.data_dir is not None:
        changes["data_dir"] = args.data_dir
    if args.download:
        changes["download"] = True
    if args.steps is not None:
        changes["num_steps"] = args.steps
    if getattr(args, "diagnostics", False):
        changes["record_diagnostics"] = True
    return config.replace(**changes)


def parse_methods(text: str | None) -> tuple[str, ...]:
    """Parse a comma-separated method list; None selects all five.

    Raises:
        ValueError: the list is empty, names an unknown method, or names one twice.
    """
    if text is None:
        return METHODS
    choices = ", ".join(METHODS)
    methods = tuple(name.strip() for name in text.split(",") if name.strip())
    if not methods:
        raise ValueError(f"`--methods`={text!r} gives no method; choose from {choices}.")
    unknown = [name for name in methods if name not in METHODS]
    if unknown:
        raise ValueError(
            f"`--methods`={text!r} has unknown names {', '.join(unknown)}; choose from {choices}."
        )
    repeated = sorted({name for name in methods if methods.count(name) > 1})
    if repeated:
        raise ValueError(
            f"`--methods`={text!r} names {', '.join(repeated)} more than once; give each "
            "method once."
        )
    return methods


def make_progress(job) -> TqdmProgress:
    """Build the progress bar of one benchmark run."""
    return TqdmProgress(f"{job.method} seed {job.seed}")


def format_header(header: dict) -> str:
    """Format the results header (machine, versions, date, command) as a few text lines."""
    versions = ", ".join(f"{name} {version}" for name, version in header["versions"].items())
    return "\n".join(
        [
            f"date: {header['date']}",
            f"command: {header['command']}",
            f"machine: {header['cpu_model']}, {header['cpu_cores']} cores "
            f"({header['cores_allowed']} allowed), {header['device_count']} x "
            f"{header['device_kind']}, {header['workers']} worker(s)",
            f"python {header['python']}; {versions}",
        ]
    )
