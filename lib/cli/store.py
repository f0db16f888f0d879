"""``store backfill|stats``: the online feature store (``lib.serving.online``) a new deployment starts from."""

import argparse

from lib.config import get_settings
from lib.errors import ParameterError
from lib.features import LABEL_DELAY_STEPS


def store_url(given: str) -> str:
    """--store URL, else FRAUD_REDIS_URL, else the Redis `redis-local start` left running."""
    from lib.local.redis import BACKGROUND

    if given or get_settings().redis_url:
        return given or get_settings().redis_url
    running = BACKGROUND.running()
    if not running:
        raise ParameterError("give --store URL, set FRAUD_REDIS_URL, or run: python -m lib redis-local start")
    return str(running.url)


def _store(args: argparse.Namespace):
    from lib.serving.online import OnlineStore

    return OnlineStore(store_url(args.store), args.label_delay_steps, prefix=args.store_prefix)


def _backfill(args: argparse.Namespace) -> None:
    import time

    from lib.data.acquire import read_window

    store = _store(args)
    table = read_window(args.raw, args.first_step, args.last_step)
    began = time.perf_counter()
    names = ("step", "amount", "nameOrig", "nameDest", "transaction_id", "isFraud")
    frauds = store.backfill({c: table.column(c).to_pylist() for c in names})
    print(
        f"backfilled {table.num_rows:,} transactions of steps {args.first_step}..{args.last_step} "
        f"({frauds:,} frauds counted) into {store.url} in {time.perf_counter() - began:.1f} s; the stream goes on "
        f"from step {args.last_step + 1}"
    )


def _stats(args: argparse.Namespace) -> None:
    for name, value in _store(args).stats().items():
        print(f"{name}: {value:,}")


def add_commands(commands) -> None:
    store = commands.add_parser("store", help="the online feature store (Redis)")
    actions = store.add_subparsers(dest="action", required=True)
    backfill = actions.add_parser("backfill", help="load past transactions (and their labels) into the store")
    stats = actions.add_parser("stats", help="keys and memory of the store")
    for sub, handler in ((backfill, _backfill), (stats, _stats)):
        sub.add_argument("--store", default="", metavar="REDIS_URL", help="default: FRAUD_REDIS_URL or redis-local")
        sub.add_argument("--store-prefix", default="fraud:", help="the store's key prefix (one per deployment)")
        sub.add_argument(
            "--label-delay-steps", type=int, default=LABEL_DELAY_STEPS, metavar="STEPS",
            help="steps until a label counts in the entity features (02's LABEL_DELAY_STEPS)",
        )  # fmt: skip
        sub.set_defaults(handler=handler)
    backfill.add_argument("--raw", default="data/raw", help="raw Parquet file or folder (01_acquire's output)")
    backfill.add_argument("--first-step", type=int, default=1)
    backfill.add_argument("--last-step", type=int, required=True, help="the last step before the stream takes over")
