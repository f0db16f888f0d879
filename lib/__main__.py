"""Command line tools: ``python -m lib simulate|validate|score|serve|kafka-local|stream``."""

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


def _kafka_local(args: argparse.Namespace) -> None:
    from lib import kafka_local

    if args.action == "start":
        broker = kafka_local.start_background(Path(args.data_dir) if args.data_dir else None, args.port)
        print(
            f"Kafka {kafka_local.KAFKA_VERSION} running: KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap} (pid {broker.pid}, data {broker.data_dir})"
        )
    elif args.action == "stop":
        print("stopped" if kafka_local.stop_background() else "no local broker was running")
    else:
        broker = kafka_local.read_state()
        if not broker:
            print("no local broker is running (python -m lib kafka-local start)")
            raise SystemExit(3)
        state = "answering" if kafka_local.answers(broker.bootstrap) else "NOT answering"
        print(f"Kafka {kafka_local.KAFKA_VERSION} pid {broker.pid} on {broker.bootstrap}: {state}")


def _bootstrap(args: argparse.Namespace) -> str:
    import os

    from lib import kafka_local
    from lib.errors import ParameterError

    bootstrap = args.bootstrap or os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if not bootstrap:
        running = kafka_local.read_state()
        if not running:
            raise ParameterError(
                "give --bootstrap, set KAFKA_BOOTSTRAP_SERVERS, or run: python -m lib kafka-local start"
            )
        bootstrap = running.bootstrap
    return bootstrap


def _stream_score(args: argparse.Namespace) -> None:
    from prometheus_client import CollectorRegistry, start_http_server

    from lib import scoring, stream, stream_scorer
    from lib.config import get_settings
    from lib.errors import ParameterError

    settings = get_settings()
    bootstrap = _bootstrap(args)
    if args.via_http:
        if not settings.api_key_list():
            raise ParameterError("--via-http needs an API key: set FRAUD_API_KEYS (the first key is used)")
        scorer = stream_scorer.HttpScorer(args.via_http, settings.api_key_list()[0])
    else:
        folder = scoring.bundle_folder(
            args.model or settings.serving_model, settings.mlflow_tracking_uri, settings.registered_model,
            settings.bundle_cache,
        )  # fmt: skip
        scorer = scoring.Scorer.from_folder(folder)
    registry = CollectorRegistry()
    metrics = stream_scorer.StreamMetrics(registry)
    if hasattr(scorer, "info"):
        metrics.set_model(scorer.info)
    if args.metrics_port is not None:
        start_http_server(args.metrics_port, addr=args.metrics_host, registry=registry)
    topics = stream.Topics(args.topic_prefix)
    stream.ensure_topics(bootstrap, topics, args.partitions)
    worker = stream_scorer.StreamScorer(
        bootstrap, scorer, topics, args.group, args.batch_size, args.batch_timeout_ms / 1000, metrics
    )
    worker.stop_on_sigterm()
    print(f"scoring {topics.transactions} on {bootstrap} as group {args.group}", flush=True)
    worker.run(idle_timeout=args.idle_timeout)
    print(f"stopped: {worker.scored:,} scored, {worker.dead_letters:,} dead letters", flush=True)


def _stream_replay(args: argparse.Namespace) -> None:
    from lib import stream
    from lib.acquire import read_window

    bootstrap = _bootstrap(args)
    topics = stream.Topics(args.topic_prefix)
    stream.ensure_topics(bootstrap, topics, args.partitions)
    table = read_window(args.raw, args.first_step, args.last_step, args.limit)
    stats = stream.replay(bootstrap, topics.transactions, stream.encode_transactions(table), args.rate)
    print(
        f"replayed {stats.messages:,} transactions to {topics.transactions} in {stats.seconds:.1f} s ({stats.rate:,.0f}/s)"
    )


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

    local = commands.add_parser("kafka-local", help="a local Apache Kafka broker (KRaft) on 127.0.0.1")
    local.add_argument("action", choices=["start", "stop", "status"])
    local.add_argument("--port", type=int, default=0, help="broker port (default: a free one)")
    local.add_argument("--data-dir", help="storage folder (default: ~/.cache/fraud-mlops/kafka/<version>/local-data)")
    local.set_defaults(handler=_kafka_local)

    streaming = commands.add_parser("stream", help="real-time scoring on Kafka").add_subparsers(
        dest="action", required=True
    )
    for name, handler, text in (
        ("score", _stream_score, "consume transactions, score micro-batches, produce scores/alerts/dead letters"),
        ("replay", _stream_replay, "produce raw transactions of a step window in step order"),
    ):
        sub = streaming.add_parser(name, help=text)
        sub.add_argument(
            "--bootstrap", help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS or kafka-local)"
        )
        sub.add_argument("--topic-prefix", default="paysim.")
        sub.add_argument("--partitions", type=int, default=4, help="partitions of the topics this creates")
        sub.set_defaults(handler=handler)
        if name == "score":
            sub.add_argument("--group", default="fraud-scorer", help="consumer group (add members to scale out)")
            sub.add_argument(
                "--model", help="'champion' (default, FRAUD_SERVING_MODEL), 'challenger' or a bundle folder"
            )
            sub.add_argument("--via-http", metavar="URL", help="score through the API's batch route at URL instead")
            sub.add_argument("--batch-size", type=int, default=2000)
            sub.add_argument("--batch-timeout-ms", type=float, default=20)
            sub.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
            sub.add_argument("--metrics-host", default="127.0.0.1")
            sub.add_argument("--idle-timeout", type=float, help="stop after this many seconds without messages")
        else:
            sub.add_argument("--raw", default="data/raw", help="raw Parquet file or folder (01_acquire's output)")
            sub.add_argument("--first-step", type=int, default=1)
            sub.add_argument("--last-step", type=int, default=743)
            sub.add_argument("--limit", type=int, default=0, help="at most this many transactions (0 = all)")
            sub.add_argument("--rate", type=float, default=0, help="transactions per second (0 = as fast as possible)")

    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
