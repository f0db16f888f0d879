"""``stream score|replay|live``: real-time scoring on Kafka and the live window it keeps."""

import argparse

from lib.config import get_settings
from lib.errors import ParameterError
from lib.features import LABEL_DELAY_STEPS
from lib.redact import redact


def _bootstrap(args: argparse.Namespace) -> str:
    """--bootstrap, else KAFKA_BOOTSTRAP_SERVERS, else the broker `kafka-local start` left running."""
    from lib.local.kafka import BACKGROUND

    if args.bootstrap or get_settings().kafka_bootstrap_servers:
        return args.bootstrap or get_settings().kafka_bootstrap_servers
    running = BACKGROUND.running()
    if not running:
        raise ParameterError("give --bootstrap, set KAFKA_BOOTSTRAP_SERVERS, or run: python -m lib kafka-local start")
    return running.bootstrap


def _score(args: argparse.Namespace) -> None:
    from prometheus_client import CollectorRegistry

    from lib.stream import kafka, live, scorer
    from lib.stream import metrics as stream_metrics

    settings = get_settings()
    bootstrap = _bootstrap(args)
    spec = args.via_http or args.model or settings.serving_model
    models = _when_loadable(spec, settings, args)
    registry = CollectorRegistry()
    metrics = stream_metrics.StreamMetrics(registry)
    topics = kafka.Topics(args.topic_prefix)
    kafka.ensure_topics(bootstrap, topics, args.partitions)
    store = None
    if args.store is not None:
        from lib.cli.store import store_url
        from lib.serving.online import OnlineStore

        store = OnlineStore(store_url(args.store), args.label_delay_steps, args.store_step_seconds, args.store_prefix)
    worker = scorer.StreamScorer(
        bootstrap, models, topics, args.group, args.batch_size, args.batch_timeout_ms / 1000, metrics,
        live.LabelJoin(args.label_capacity, args.label_window), reasons="none" if args.no_reasons else "alerts",
        store=store, features_share=args.log_features,
    )  # fmt: skip
    metrics.set_model(models.current.champion.info)
    if args.metrics_port is not None:
        stream_metrics.serve_metrics(args.metrics_host, args.metrics_port, registry, worker)
    worker.stop_on_sigterm()
    print(f"scoring {topics.transactions} on {bootstrap} as group {args.group}", flush=True)
    print(f"serving {scorer.describe(models.current)}", flush=True)
    worker.run(idle_timeout=args.idle_timeout)
    print(f"stopped: {worker.scored:,} scored, {worker.dead_letters:,} dead letters", flush=True)


def _when_loadable(spec: str, settings, args: argparse.Namespace):
    """The model source ``spec`` names; while a bundle store cannot be loaded (a fault, a half-published
    version), the scorer waits and tries again every ``--reload-interval`` seconds, saying why once per
    reason, instead of exiting (a supervisor would restart it into the same fault, again and again)."""
    import time

    from lib.cli.models import model_source
    from lib.config import REGISTRY_ALIASES, resolve
    from lib.serving.bundles import BundleStore
    from lib.serving.scoring import BundleError

    store = BundleStore.holds(settings.bundle_store if spec in REGISTRY_ALIASES else resolve(spec))
    said = None
    while True:
        try:
            return model_source(spec, settings, shadow=not args.no_shadow, reload_interval=args.reload_interval)
        except BundleError as exc:
            if not store:
                raise
            if str(exc) != said:
                print(f"waiting for a bundle store it can load: {redact(exc)}", flush=True)
                said = str(exc)
            time.sleep(args.reload_interval)


def _replay(args: argparse.Namespace) -> None:
    from lib.data.acquire import read_window
    from lib.stream import kafka

    bootstrap = _bootstrap(args)
    topics = kafka.Topics(args.topic_prefix)
    kafka.ensure_topics(bootstrap, topics, args.partitions)
    table = read_window(args.raw, args.first_step, args.last_step, args.limit)
    labels = None
    if args.label_delay_steps is not None:
        labels = kafka.DelayedLabels.of(
            table, topics.labels, args.label_delay_steps, args.label_missing_share, args.label_seed
        )
    steps = table.column("step").to_numpy() if args.ticks else None
    stats = kafka.replay(
        bootstrap, topics.transactions, kafka.encode_transactions(table), args.rate, labels, steps, topics.labels
    )
    print(
        f"replayed {stats.messages:,} transactions to {topics.transactions} in {stats.seconds:.1f} s "
        f"({stats.rate:,.0f}/s)" + (f"; {stats.labels:,} labels to {topics.labels}" if labels else "")
    )


LIVE_TIMEOUT = 60.0  # seconds for every scorer's /live answer together, however slowly each trickles
LIVE_MAX_BYTES = 64 * 1024 * 1024  # a window of 20,000 labelled results is about 1 MB


def live_answers(addresses: list[str], timeout: float = LIVE_TIMEOUT) -> dict[str, dict]:
    """The ``/live`` answer of each stream scorer (``host:port`` of its --metrics-port), all of them within
    ``timeout`` seconds in total (a per-read timeout alone lets a trickling endpoint hold on for ever) and
    ``LIVE_MAX_BYTES`` each; a scorer that does not answer so, or not with JSON, is named."""
    import http.client
    import json
    import time

    deadline = time.monotonic() + timeout
    answers = {}
    for address in dict.fromkeys(addresses):
        url = f"http://{address}/live"
        host, _, port = address.rpartition(":")
        try:
            left = deadline - time.monotonic()
            if left <= 0 or not port.isdigit():
                raise TimeoutError(f"no time left of {timeout:.0f} s" if left <= 0 else "not host:port")
            connection = http.client.HTTPConnection(host, int(port), timeout=left)
            try:
                connection.request("GET", "/live")
                response = connection.getresponse()
                if response.status != 200:
                    raise OSError(f"HTTP {response.status}")
                body = bytearray()
                while chunk := response.read1(65536):
                    body += chunk
                    if len(body) > LIVE_MAX_BYTES:
                        raise OSError(f"more than {LIVE_MAX_BYTES:,} bytes")
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"still answering after {timeout:.0f} s")
                    if connection.sock is not None:  # the next read waits no longer than what is left
                        connection.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            finally:
                connection.close()
            answers[address] = json.loads(body)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            raise ParameterError(
                f"no live evidence from {url} ({exc}); start the scorer with --metrics-port, and give that "
                "host:port to --scorer"
            ) from None
        if not isinstance(answers[address], dict):
            raise ParameterError(f"{url} answered {type(answers[address]).__name__}, not a /live answer")
    return answers


def _live(args: argparse.Namespace) -> None:
    from lib.monitoring.stream_report import live_table

    for address, answer in live_answers(args.scorer).items():
        counts = ", ".join(f"{k} {v:,}" for k, v in answer["labels"].items())
        print(f"{address} (group {answer['group']}): labels {counts}")
        print(live_table(answer).to_string(float_format="{:.4f}".format))


def add_commands(commands) -> None:
    streaming = commands.add_parser("stream", help="real-time scoring on Kafka")
    actions = streaming.add_subparsers(dest="action", required=True)
    score = actions.add_parser(
        "score", help="consume transactions, score micro-batches, produce scores/alerts/dead letters"
    )
    replay = actions.add_parser("replay", help="produce raw transactions of a step window in step order")
    for sub, handler in ((score, _score), (replay, _replay)):
        sub.add_argument(
            "--bootstrap", help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP_SERVERS or kafka-local)"
        )
        sub.add_argument("--topic-prefix", default="paysim.")
        sub.add_argument("--partitions", type=int, default=4, help="partitions of the topics this creates")
        sub.set_defaults(handler=handler)
    score.add_argument("--group", default="fraud-scorer", help="consumer group (add members to scale out)")
    score.add_argument(
        "--model", help="'champion' (default, FRAUD_SERVING_MODEL), 'challenger', a bundle store or folder, or an "
        "API's URL"
    )  # fmt: skip
    score.add_argument("--via-http", metavar="URL", help="score through the API's batch route at URL (as --model URL)")
    score.add_argument("--batch-size", type=int, default=2000)
    score.add_argument("--batch-timeout-ms", type=float, default=20)
    score.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port")
    score.add_argument("--metrics-host", default="127.0.0.1")
    score.add_argument("--idle-timeout", type=float, help="stop after this many seconds without messages")
    score.add_argument(
        "--reload-interval", type=float, default=5.0, help="seconds between checks of a bundle store's aliases"
    )
    score.add_argument(
        "--no-reasons", action="store_true", help="alerts without their reasons (each costs ~30 us of TreeSHAP)"
    )
    score.add_argument("--no-shadow", action="store_true", help="do not score the store's challenger in shadow")
    score.add_argument("--label-capacity", type=int, default=100_000, help="results kept waiting for their label")
    score.add_argument("--label-window", type=int, default=20_000, help="labelled results in the live window")
    score.add_argument(
        "--store", nargs="?", const="", metavar="REDIS_URL",
        help="keep per-account memory in the online store (default URL: FRAUD_REDIS_URL or redis-local) and read "
        "each transaction's entity features from it; waits for the watermark (replay --ticks)",
    )  # fmt: skip
    score.add_argument(
        "--label-delay-steps", type=int, default=LABEL_DELAY_STEPS, metavar="STEPS",
        help="steps until a label counts in the entity features (02's LABEL_DELAY_STEPS)",
    )  # fmt: skip
    score.add_argument("--store-prefix", default="fraud:", help="the store's key prefix (one per deployment)")
    score.add_argument(
        "--store-step-seconds", type=float, default=3600.0, help="seconds a step lasts, for the store's key expiry"
    )
    score.add_argument(
        "--log-features", type=float, default=0.01, metavar="SHARE",
        help="share of the served entity vectors logged in the store (the skew check's sample)",
    )  # fmt: skip
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
    replay.add_argument(
        "--ticks", action="store_true",
        help="a watermark tick to every partition as each step begins (what scorers with --store wait for)",
    )  # fmt: skip
    live = actions.add_parser("live", help="live performance per model version, from stream scorers' /live")
    live.add_argument("--scorer", action="append", required=True, metavar="HOST:PORT", help="a scorer's --metrics-port")
    live.set_defaults(handler=_live)
