"""Command line tools: ``python -m lib simulate|validate|score|serve|kafka-local|stream|registry|loop``."""

import argparse
import os
import sys
import time
from pathlib import Path

from lib.config import QUIET_ENVIRONMENT, REGISTRY_ALIASES, Settings, get_settings
from lib.errors import ParameterError, PipelineError
from lib.pipeline import loop_commands
from lib.redact import redact


def _simulate(args: argparse.Namespace) -> None:
    from lib.data.acquire import write_batches
    from lib.data.simulate import DriftScenario, simulate_batches

    drift = DriftScenario(args.drift_start_step, args.drift_amount_factor, args.drift_fraud_pattern)
    began = time.perf_counter()
    path = write_batches(simulate_batches(args.rows, args.seed, drift), Path(args.out))
    seconds = time.perf_counter() - began
    print(f"wrote {args.rows:,} rows to {path} in {seconds:.1f} s ({args.rows / seconds:,.0f} rows/s)")


def _validate(args: argparse.Namespace) -> None:
    from lib.data.acquire import validate_file

    summary = validate_file(args.path)
    types = ", ".join(f"{t} {n:,}" for t, n in sorted(summary.type_counts.items()))
    print(f"{args.path}: OK, {summary.rows:,} rows, {summary.frauds:,} frauds ({types})")


def _bundle(model: str, settings: Settings) -> Path:
    """A bundle folder for ``--model``: a registry alias is fetched from MLflow, a folder is used as it is."""
    from lib.model.registry import bundle_folder

    return bundle_folder(model, settings)


def _score(args: argparse.Namespace) -> None:
    from lib.model.batch import score_file
    from lib.serving.scoring import Scorer

    scorer = Scorer.from_folder(_bundle(args.model, get_settings()))
    began = time.perf_counter()
    summary = score_file(scorer, args.input, args.output)
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

    settings = get_settings()
    model = args.model or settings.serving_model
    workers = args.workers or settings.serving_workers
    interval = args.reload_interval or settings.serving_reload_interval
    if not settings.api_key_list():
        raise ParameterError("set FRAUD_API_KEYS (comma-separated keys) so that clients can authenticate")
    for name, value in QUIET_ENVIRONMENT.items():  # no download bars in the server's log
        os.environ.setdefault(name, value)
    base = f"http://{args.host}:{args.port}"
    served = f"serving {model} on {base} (API docs {base}/docs, metrics {base}/metrics)"
    if workers == 1:
        from lib.serving.api import configure_logging, create_app

        configure_logging()
        app = create_app(settings, locate=lambda: _bundle(model, settings), reload_interval=interval)
        print(f"{served}; Ctrl-C stops", flush=True)
        uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_config=None)
        return
    from lib.serving.metrics import shared_values  # the supervisor imports no model code: it only watches

    if model in REGISTRY_ALIASES:  # fetched once, here, and every worker loads the folder
        model = str(_bundle(model, settings))
    os.environ.update(FRAUD_SERVING_MODEL=model, FRAUD_SERVING_RELOAD_INTERVAL=str(interval))
    with shared_values():
        print(f"{served} with {workers} worker processes; Ctrl-C stops", flush=True)
        uvicorn.run(
            "lib.serving.api:worker_app", factory=True, workers=workers, host=args.host, port=args.port,
            access_log=False, log_config=None,
        )  # fmt: skip


def _kafka_local(args: argparse.Namespace) -> None:
    from lib.stream import local

    if args.action == "start":
        broker = local.start_background(Path(args.data_dir) if args.data_dir else None, args.port)
        print(
            f"Kafka {local.KAFKA_VERSION} running: KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap} "
            f"(pid {broker.pid}, data {broker.data_dir})"
        )
    elif args.action == "stop":
        print("stopped" if local.stop_background() else "no local broker was running")
    else:
        broker = local.read_state()
        if not broker:
            print("no local broker is running (python -m lib kafka-local start)")
            raise SystemExit(3)
        state = "answering" if local.answers(broker.bootstrap) else "NOT answering"
        print(f"Kafka {local.KAFKA_VERSION} pid {broker.pid} on {broker.bootstrap}: {state}")


def _spark_local(args: argparse.Namespace) -> None:
    from lib.data import spark_local

    if args.action == "start":
        cluster = spark_local.start_background(args.workers, args.cores, args.memory, args.port)
        print(
            f"Spark {spark_local.spark_version()} standalone cluster running, {cluster.workers} workers x "
            f"{cluster.cores} core(s), {cluster.memory} each: SPARK_MASTER={cluster.master_url} (web UI {cluster.webui})"
        )
    elif args.action == "stop":
        print("stopped" if spark_local.stop_background() else "no local Spark cluster was running")
    else:
        cluster = spark_local.read_state()
        if not cluster:
            print("no local Spark cluster is running (python -m lib spark-local start)")
            raise SystemExit(3)
        state = cluster.state()
        print(
            f"SPARK_MASTER={cluster.master_url} {state['status']}: {state['aliveworkers']} workers, "
            f"{state['coresused']}/{state['cores']} cores and {state['memoryused']}/{state['memory']} MB in use, "
            f"{len(state['activeapps'])} application(s); web UI {cluster.webui}"
        )


def _monitoring_local(args: argparse.Namespace) -> None:
    from lib.monitoring import local

    if args.action == "start":
        m = local.start_background(args.api, args.scorer, args.port, args.pushgateway_port)
        print(
            f"Prometheus {m.prometheus_url} (rules of monitoring/prometheus/rules; alerts {m.prometheus_url}/alerts) "
            f"scraping the API at {m.api} and the stream scorer at {m.scorer}; "
            f"Pushgateway: PUSHGATEWAY_URL={m.pushgateway}"
        )
    elif args.action == "stop":
        print("stopped" if local.stop_background() else "no local monitoring was running")
    else:
        m = local.read_state()
        if not m:
            print("no local monitoring is running (python -m lib monitoring-local start)")
            raise SystemExit(3)
        targets = ", ".join(f"{job} {health}" for job, health in sorted(m.targets().items()))
        print(f"Prometheus {m.prometheus_url}, Pushgateway {m.pushgateway}: {targets}")


def _lambda_package(args: argparse.Namespace) -> None:
    from lib.config import resolve
    from lib.serving import lambda_package

    out = resolve(args.out or f"build/lambda/{args.stage}")
    folder = lambda_package.package(args.stage, resolve(args.bundle), out, pkg_format=args.pkg_format)
    unpacked = lambda_package.unpack(folder / "deployment.zip", out.parent / f".{args.stage}-unpacked")
    report = lambda_package.check_package(folder / "deployment.zip", unpacked)
    problems = report.forbidden + report.elf_problems
    print(
        f"{folder / 'deployment.zip'}: {report.zipped_bytes / 1e6:.1f} MB, {report.unzipped_bytes / 1e6:.1f} MB unzipped "
        f"(Lambda's limit 262.1 MB), {report.elf_files} ELF files; template {folder / lambda_package.TEMPLATES[args.pkg_format]}"
        + (f"; problems: {problems}" if problems else "")
    )
    if not report.ok:
        raise ParameterError(f"the package does not fit Lambda: {problems or 'too large'}")


def _bootstrap(args: argparse.Namespace, settings: Settings) -> str:
    """--bootstrap, else KAFKA_BOOTSTRAP_SERVERS, else the broker `kafka-local start` left running."""
    from lib.stream import local

    if args.bootstrap or settings.kafka_bootstrap_servers:
        return args.bootstrap or settings.kafka_bootstrap_servers
    running = local.read_state()
    if not running:
        raise ParameterError("give --bootstrap, set KAFKA_BOOTSTRAP_SERVERS, or run: python -m lib kafka-local start")
    return running.bootstrap


def _models(model: str, settings: Settings, reload_interval: float, shadow: bool):
    """What an app serves for ``--model``: a bundle store's champion (and challenger in shadow), hot
    reloaded; a registry alias (fetched from MLflow once) or a bundle folder, as it is."""
    from lib.serving import bundles
    from lib.serving.scoring import Scorer, bundle_path

    if model not in REGISTRY_ALIASES and bundles.BundleStore.holds(bundle_path(model)):
        return bundles.LiveModels(bundles.BundleStore(bundle_path(model)), reload_interval, shadow)
    return Scorer.from_folder(_bundle(model, settings))


def _stream_score(args: argparse.Namespace) -> None:
    from prometheus_client import CollectorRegistry

    from lib.stream import kafka, live, scorer
    from lib.stream import metrics as stream_metrics

    settings = get_settings()
    bootstrap = _bootstrap(args, settings)
    if args.via_http:
        if not settings.api_key_list():
            raise ParameterError("--via-http needs an API key: set FRAUD_API_KEYS (the first key is used)")
        from lib.stream.via_http import HttpScorer

        model = HttpScorer(args.via_http, settings.api_key_list()[0])
    else:
        model = _models(args.model or settings.serving_model, settings, args.reload_interval, not args.no_shadow)
    registry = CollectorRegistry()
    metrics = stream_metrics.StreamMetrics(registry)
    topics = kafka.Topics(args.topic_prefix)
    kafka.ensure_topics(bootstrap, topics, args.partitions)
    worker = scorer.StreamScorer(
        bootstrap, model, topics, args.group, args.batch_size, args.batch_timeout_ms / 1000, metrics,
        live.LabelJoin(args.label_capacity, args.label_window),
    )  # fmt: skip
    served = worker.served
    if hasattr(served.champion, "info"):
        metrics.set_model(served.champion.info)
    if args.metrics_port is not None:
        stream_metrics.serve_metrics(args.metrics_host, args.metrics_port, registry, worker)
    worker.stop_on_sigterm()
    print(f"scoring {topics.transactions} on {bootstrap} as group {args.group}", flush=True)
    if hasattr(served.champion, "info"):
        print(f"serving {scorer.describe(served)}", flush=True)
    worker.run(idle_timeout=args.idle_timeout)
    print(f"stopped: {worker.scored:,} scored, {worker.dead_letters:,} dead letters", flush=True)


def _stream_replay(args: argparse.Namespace) -> None:
    from lib.data.acquire import read_window
    from lib.stream import kafka

    bootstrap = _bootstrap(args, get_settings())
    topics = kafka.Topics(args.topic_prefix)
    kafka.ensure_topics(bootstrap, topics, args.partitions)
    table = read_window(args.raw, args.first_step, args.last_step, args.limit)
    labels = None
    if args.label_delay_steps is not None:
        labels = kafka.DelayedLabels.of(
            table, topics.labels, args.label_delay_steps, args.label_missing_share, args.label_seed
        )
    stats = kafka.replay(bootstrap, topics.transactions, kafka.encode_transactions(table), args.rate, labels)
    print(
        f"replayed {stats.messages:,} transactions to {topics.transactions} in {stats.seconds:.1f} s "
        f"({stats.rate:,.0f}/s)" + (f"; {stats.labels:,} labels to {topics.labels}" if labels else "")
    )


def _add_data_commands(commands) -> None:
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


def _add_serving_commands(commands) -> None:
    serve = commands.add_parser("serve", help="serve the scoring API (FastAPI + uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--model", help="'champion' (default, FRAUD_SERVING_MODEL), a bundle folder, or a bundle store (hot reload)"
    )
    serve.add_argument(
        "--workers", type=int, help="worker processes, one per core (default 1, FRAUD_SERVING_WORKERS); they share "
        "the port and their metrics"
    )  # fmt: skip
    serve.add_argument(
        "--reload-interval", type=float, help="seconds between checks of a store's aliases (default 5, "
        "FRAUD_SERVING_RELOAD_INTERVAL)"
    )  # fmt: skip
    serve.set_defaults(handler=_serve)

    local = commands.add_parser("kafka-local", help="a local Apache Kafka broker (KRaft) on 127.0.0.1")
    local.add_argument("action", choices=["start", "stop", "status"])
    local.add_argument("--port", type=int, default=0, help="broker port (default: a free one)")
    local.add_argument("--data-dir", help="storage folder (default: ~/.cache/fraud-mlops/kafka/<version>/local-data)")
    local.set_defaults(handler=_kafka_local)

    spark = commands.add_parser("spark-local", help="a local Spark standalone cluster (master + workers) on 127.0.0.1")
    spark.add_argument("action", choices=["start", "stop", "status"])
    spark.add_argument("--workers", type=int, default=2)
    spark.add_argument("--cores", type=int, default=1, help="cores per worker")
    spark.add_argument("--memory", default="2g", help="memory per worker (its executors get this much)")
    spark.add_argument("--port", type=int, default=0, help="master port (default: a free one)")
    spark.set_defaults(handler=_spark_local)

    package = commands.add_parser(
        "lambda-package", help="chalice package under Python 3.13 (Lambda's runtime), checked against Lambda's limits"
    )
    package.add_argument("--stage", default="prod", choices=["dev", "prod"])
    package.add_argument("--bundle", default="data/bundle", help="the serving bundle the package carries")
    package.add_argument("--out", help="folder for deployment.zip and its template (default build/lambda/STAGE)")
    package.add_argument(
        "--pkg-format", default="cloudformation", choices=["cloudformation", "terraform"],
        help="the template: SAM (sam.json, the default) or Terraform (chalice.tf.json)",
    )  # fmt: skip
    package.set_defaults(handler=_lambda_package)

    monitoring = commands.add_parser(
        "monitoring-local", help="Debian's Prometheus + Pushgateway with the project's config and alert rules"
    )
    monitoring.add_argument("action", choices=["start", "stop", "status"])
    monitoring.add_argument("--api", default="127.0.0.1:8000", help="the API to scrape (python -m lib serve)")
    monitoring.add_argument("--scorer", default="127.0.0.1:9108", help="the stream scorer's --metrics-port")
    monitoring.add_argument("--port", type=int, default=9090, help="Prometheus port")
    monitoring.add_argument("--pushgateway-port", type=int, default=9091)
    monitoring.set_defaults(handler=_monitoring_local)


def _add_stream_commands(commands) -> None:
    streaming = commands.add_parser("stream", help="real-time scoring on Kafka")
    actions = streaming.add_subparsers(dest="action", required=True)
    score = actions.add_parser(
        "score", help="consume transactions, score micro-batches, produce scores/alerts/dead letters"
    )
    replay = actions.add_parser("replay", help="produce raw transactions of a step window in step order")
    loop_commands.add_stream_live(actions)
    for sub, handler in ((score, _stream_score), (replay, _stream_replay)):
        sub.add_argument(
            "--bootstrap", help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS or kafka-local)"
        )
        sub.add_argument("--topic-prefix", default="paysim.")
        sub.add_argument("--partitions", type=int, default=4, help="partitions of the topics this creates")
        sub.set_defaults(handler=handler)
    score.add_argument("--group", default="fraud-scorer", help="consumer group (add members to scale out)")
    score.add_argument("--model", help="'champion' (default, FRAUD_SERVING_MODEL), 'challenger' or a bundle folder")
    score.add_argument("--via-http", metavar="URL", help="score through the API's batch route at URL instead")
    score.add_argument("--batch-size", type=int, default=2000)
    score.add_argument("--batch-timeout-ms", type=float, default=20)
    score.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    score.add_argument("--metrics-host", default="127.0.0.1")
    score.add_argument("--idle-timeout", type=float, help="stop after this many seconds without messages")
    score.add_argument(
        "--reload-interval", type=float, default=5.0, help="seconds between checks of a bundle store's aliases"
    )
    score.add_argument("--no-shadow", action="store_true", help="do not score the store's challenger in shadow")
    score.add_argument("--label-capacity", type=int, default=100_000, help="results kept waiting for their label")
    score.add_argument("--label-window", type=int, default=20_000, help="labelled results in the live window")
    replay.add_argument("--raw", default="data/raw", help="raw Parquet file or folder (01_acquire's output)")
    replay.add_argument("--first-step", type=int, default=1)
    replay.add_argument("--last-step", type=int, default=743)
    replay.add_argument("--limit", type=int, default=0, help="at most this many transactions (0 = all)")
    replay.add_argument("--rate", type=float, default=0, help="transactions per second (0 = as fast as possible)")
    replay.add_argument(
        "--label-delay-steps", type=int, metavar="STEPS",
        help="also publish each label to the labels topic this many steps (simulated hours) after its transaction",
    )  # fmt: skip
    replay.add_argument("--label-missing-share", type=float, default=0.0, help="share of labels that never arrive")
    replay.add_argument("--label-seed", type=int, default=0, help="seed of which labels go missing")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m lib", description="Fraud-detection pipeline tools")
    commands = root.add_subparsers(dest="command", required=True)
    _add_data_commands(commands)
    _add_serving_commands(commands)
    _add_stream_commands(commands)
    loop_commands.add_registry(commands)
    loop_commands.add_loop(commands)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except PipelineError as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
