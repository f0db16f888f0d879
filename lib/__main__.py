"""Command line tools: ``python -m lib simulate|validate|score``."""

import argparse
import sys
import time
from pathlib import Path

from lib.errors import PipelineError


def _simulate(args: argparse.Namespace) -> None:
    from lib.acquire import write_batches
    from lib.simulate import DriftScenario, simulate_batches

    drift = DriftScenario(args.drift_start_step, args.drift_amount_factor, args.drift_fraud_pattern)
    began = time.perf_counter()
    path = write_batches(simulate_batches(args.rows, args.seed, drift), Path(args.out))
    seconds = time.perf_counter() - began
    print(f"wrote {args.rows:,} rows to {path} in {seconds:.1f} s ({args.rows / seconds:,.0f} rows/s)")


def _validate(args: argparse.Namespace) -> None:
    from lib.acquire import validate_file

    summary = validate_file(args.path)
    types = ", ".join(f"{t} {n:,}" for t, n in sorted(summary.type_counts.items()))
    print(f"{args.path}: OK, {summary.rows:,} rows, {summary.frauds:,} frauds ({types})")


def _score(args: argparse.Namespace) -> None:
    from lib import scoring
    from lib.config import get_settings

    settings = get_settings()
    scorer = scoring.Scorer.from_folder(
        scoring.bundle_folder(
            args.model, settings.mlflow_tracking_uri, settings.registered_model, settings.bundle_cache
        )
    )
    began = time.perf_counter()
    summary = scoring.score_file(scorer, args.input, args.output)
    seconds = time.perf_counter() - began
    line = (
        f"scored {summary['rows']:,} rows with {summary['model']} v{summary['model_version']} "
        f"in {seconds:.1f} s -> {summary['output']}"
    )
    if summary.get("auprc") is not None:
        line += f"; labels present: {summary['frauds']:,} frauds, AUPRC {summary['auprc']:.4f}"
    print(line)


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    from lib.api import configure_logging, create_app
    from lib.config import get_settings
    from lib.errors import ParameterError

    settings = get_settings()
    if args.model:
        settings = settings.model_copy(update={"serving_model": args.model})
    if not settings.api_key_list():
        raise ParameterError("set FRAUD_API_KEYS (comma-separated keys) so that clients can authenticate")
    configure_logging()
    uvicorn.run(create_app(settings), host=args.host, port=args.port, access_log=False, log_config=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib", description="Fraud-detection pipeline tools")
    commands = parser.add_subparsers(dest="command", required=True)

    simulate = commands.add_parser("simulate", help="write simulated PaySim transactions (.parquet or .csv)")
    simulate.add_argument("--rows", type=int, default=200_000)
    simulate.add_argument("--seed", type=int, default=42)
    simulate.add_argument("--out", required=True, help="output path; the extension picks Parquet or CSV")
    simulate.add_argument("--drift-start-step", type=int, default=0, help="0 = no drift")
    simulate.add_argument("--drift-amount-factor", type=float, default=1.0)
    simulate.add_argument("--drift-fraud-pattern", default="none", choices=["none", "partial_drain"])
    simulate.set_defaults(handler=_simulate)

    validate = commands.add_parser("validate", help="check a PaySim CSV/Parquet file (path or URL)")
    validate.add_argument("path")
    validate.set_defaults(handler=_validate)

    score = commands.add_parser("score", help="score raw PaySim transactions (CSV/Parquet) into a CSV")
    score.add_argument("--input", required=True, help="CSV or Parquet with the 9 input columns (labels optional)")
    score.add_argument("--output", required=True, help="CSV to write: input ids, fraud_probability, is_fraud")
    score.add_argument(
        "--model",
        default="champion",
        help="'champion' or 'challenger' (MLflow registry alias, MLFLOW_TRACKING_URI) or a bundle folder",
    )
    score.set_defaults(handler=_score)

    serve = commands.add_parser("serve", help="serve the scoring API (FastAPI + uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--model", help="'champion' (default, FRAUD_SERVING_MODEL) or a bundle folder")
    serve.set_defaults(handler=_serve)

    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
