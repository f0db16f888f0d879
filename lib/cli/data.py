"""``simulate``, ``validate`` and ``score``: data in and scores out, as files."""

import argparse
import time
from pathlib import Path

from lib.config import get_settings


def _simulate(args: argparse.Namespace) -> None:
    from lib.data.acquire import write_batches
    from lib.data.simulate import DriftScenario, simulate_batches

    drift = DriftScenario(args.drift_start_step, args.drift_amount_factor, args.drift_fraud_pattern)
    began = time.perf_counter()
    path = write_batches(simulate_batches(args.rows, args.seed, drift, mule_reuse=args.mule_reuse), Path(args.out))
    seconds = time.perf_counter() - began
    print(f"wrote {args.rows:,} rows to {path} in {seconds:.1f} s ({args.rows / seconds:,.0f} rows/s)")


def _validate(args: argparse.Namespace) -> None:
    from lib.data.acquire import validate_file

    summary = validate_file(args.path)
    types = ", ".join(f"{t} {n:,}" for t, n in sorted(summary.type_counts.items()))
    print(f"{args.path}: OK, {summary.rows:,} rows, {summary.frauds:,} frauds ({types})")


def _score(args: argparse.Namespace) -> None:
    from lib.cli.models import model_source
    from lib.model.batch import score_file

    scorer = model_source(args.model, get_settings(), shadow=False).current.champion
    began = time.perf_counter()
    summary = score_file(scorer, args.input, args.output, args.reasons)
    seconds = time.perf_counter() - began
    line = (
        f"scored {summary['rows']:,} rows with {summary['model']} v{summary['model_version']} "
        f"in {seconds:.1f} s -> {summary['output']}"
    )
    if summary.get("auprc") is not None:
        line += f"; labels present: {summary['frauds']:,} frauds, AUPRC {summary['auprc']:.4f}"
    print(line)


def add_commands(commands) -> None:
    simulate = commands.add_parser("simulate", help="write simulated PaySim transactions (.parquet or .csv)")
    simulate.add_argument("--rows", type=int, default=200_000)
    simulate.add_argument("--seed", type=int, default=42)
    simulate.add_argument("--out", required=True, help="output path; the extension picks Parquet or CSV")
    simulate.add_argument("--drift-start-step", type=int, default=0, help="0 = no drift")
    simulate.add_argument("--drift-amount-factor", type=float, default=1.0)
    simulate.add_argument("--drift-fraud-pattern", default="none", choices=["none", "partial_drain"])
    simulate.add_argument("--mule-reuse", type=float, default=0.0,
                          help="share of thefts whose mule is a recurring one, 0..1 (0: PaySim's fresh mules)")  # fmt: skip
    simulate.set_defaults(handler=_simulate)

    validate = commands.add_parser("validate", help="check a PaySim CSV/Parquet file (path or URL)")
    validate.add_argument("path")
    validate.set_defaults(handler=_validate)

    score = commands.add_parser("score", help="score raw PaySim transactions (CSV/Parquet) into a CSV")
    score.add_argument("--input", required=True, help="CSV or Parquet with the 9 input columns (labels optional)")
    score.add_argument("--output", required=True, help="CSV to write: input ids, fraud_probability, is_fraud")
    score.add_argument(
        "--model", default="champion", help="'champion' or 'challenger' (the bundle store's, else the registry's: "
        "MLFLOW_TRACKING_URI), a bundle store or a bundle folder",
    )  # fmt: skip
    score.add_argument(
        "--reasons", action="store_true",
        help="add a column 'reasons': each alert's reason codes, strongest first, ';'-separated (docs/serving.md)",
    )  # fmt: skip
    score.set_defaults(handler=_score)
