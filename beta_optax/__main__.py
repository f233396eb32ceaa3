"""Command line of the diagnostic pipeline: `python -m beta_optax COMMAND RUN_DIR`.

* diagnose: scan and localize. Reads the run's history.jsonl (or computes it from the
  checkpoints), writes diagnosis.json, report.md, report.json, heatmap.png and zeta.png.
* correct: treat and verify. Retrains the groups of diagnosis.json from the newest checkpoint,
  compares with retraining the whole model, writes correction.json and updates the report.
* pipeline: diagnose, then correct.

This module only parses arguments and calls `beta_optax.training.report`; it needs the `train`
extra.
"""

import argparse
import logging
import sys

import beta_optax


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser of the three commands."""
    parser = argparse.ArgumentParser(
        prog="python -m beta_optax",
        description="Diagnose a training run (Scan, Localize) and correct it (Treat, Verify).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    diagnose = commands.add_parser("diagnose", help="scan and localize; write the report")
    correct = commands.add_parser("correct", help="retrain the flagged groups; update the report")
    pipeline = commands.add_parser("pipeline", help="diagnose, then correct")
    for command in (diagnose, correct, pipeline):
        command.add_argument("run_dir", metavar="RUN_DIR", help="a run directory with checkpoints")
        command.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    for command in (diagnose, pipeline):
        command.add_argument(
            "--top-k",
            type=int,
            default=None,
            help="flag this many top groups (default: the largest gap between sorted scores)",
        )
        command.add_argument(
            "--normalization",
            choices=beta_optax.NORMALIZATIONS,
            default="per_parameter",
            help="how group gradient norms become scores (default: per_parameter)",
        )
        command.add_argument(
            "--split",
            choices=("train", "test"),
            default=None,
            help="split of the misclassified inputs when history.jsonl must be computed from "
            "checkpoints (default: the run's diagnostics.json, else test)",
        )
        command.add_argument(
            "--max-examples",
            type=int,
            default=None,
            help="examples examined per checkpoint when computing history.jsonl",
        )
    for command in (correct, pipeline):
        command.add_argument(
            "--steps", type=int, default=200, help="correction steps (default: 200)"
        )
        command.add_argument(
            "--learning-rate",
            type=float,
            default=0.01,
            help="peak learning rate of the correction's beta_sgd, cosine-decayed (default: 0.01)",
        )
        command.add_argument(
            "--seed", type=int, default=0, help="seed of the correction's data order"
        )
        command.add_argument(
            "--no-full",
            action="store_true",
            help="skip retraining the whole model for comparison",
        )
    return parser


def _diagnostics_settings(args):
    from beta_optax.training.scan import DiagnosticsConfig

    changes = {}
    if args.split is not None:
        changes["attribution_split"] = args.split
    if args.max_examples is not None:
        changes["attribution_max_examples"] = args.max_examples
    return DiagnosticsConfig(**changes) if changes else None


def main(argv=None) -> int:
    """Run one command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        from beta_optax.training import report
    except ImportError as error:
        parser.error(f"{error}. Install the harness with `pip install 'beta-optax[train]'`.")

    try:
        if args.command in ("diagnose", "pipeline"):
            diagnosis = report.diagnose_run(
                args.run_dir,
                top_k=args.top_k,
                normalization=args.normalization,
                diagnostics=_diagnostics_settings(args),
            )
            print(diagnosis.summary())
        if args.command in ("correct", "pipeline"):
            result = report.correct_run(
                args.run_dir,
                num_steps=args.steps,
                learning_rate=args.learning_rate,
                seed=args.seed,
                compare_full=not args.no_full,
            )
            print(result.table())
    except report.NotARunError as error:
        parser.exit(2, f"error: {error}\n")
    print(f"Wrote {args.run_dir}/report.md and report.json.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
