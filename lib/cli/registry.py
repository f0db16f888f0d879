"""``registry promote --evidence live``: move the champion alias on the stream's labelled live window."""

import argparse

from lib.config import get_settings, resolve


def _promote(args: argparse.Namespace) -> None:
    from mlflow.tracking import MlflowClient

    from lib.cli.stream import live_answers
    from lib.model import promotion
    from lib.serving.bundles import BundleStore

    settings = get_settings()
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    store = BundleStore(resolve(args.store) if args.store else settings.bundle_store)
    decision = promotion.promote_live(
        client, settings.registered_model, store, live_answers(args.scorer), args.min_frauds
    )
    verdict = "promoted" if decision.promoted else "not promoted"
    print(f"{verdict}: {decision.reason}; champion is v{decision.champion_version}")


def add_commands(commands) -> None:
    registry = commands.add_parser("registry", help="the model registry's aliases")
    actions = registry.add_subparsers(dest="action", required=True)
    promote = actions.add_parser(
        "promote", help="move the champion alias to the challenger if it wins on the labelled live window"
    )
    promote.add_argument("--evidence", required=True, choices=["live"], help="what decides: the live window")
    promote.add_argument(
        "--scorer", action="append", required=True, metavar="HOST:PORT",
        help="a stream scorer's --metrics-port (repeat for every member of the group)",
    )  # fmt: skip
    promote.add_argument("--min-frauds", type=int, default=30, help="labelled frauds needed before deciding")
    promote.add_argument(
        "--store", help="the bundle store the apps serve (default FRAUD_BUNDLE_STORE, where 05_evaluate publishes)"
    )
    promote.set_defaults(handler=_promote)
