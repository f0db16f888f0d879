"""The loop's command line: ``stream live``, ``registry promote --evidence live``, ``loop check|retrain``
(wired into ``python -m lib`` by ``lib/__main__.py``)."""

import argparse

from lib.config import get_settings
from lib.errors import ParameterError


def live_answers(addresses: list[str]) -> dict[str, dict]:
    """The ``/live`` answer of each stream scorer (``host:port`` of its --metrics-port)."""
    import json
    import urllib.request

    answers = {}
    for address in addresses:
        url = f"http://{address}/live"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                answers[address] = json.loads(response.read())
        except (OSError, ValueError) as exc:
            raise ParameterError(
                f"no live evidence from {url} ({exc}); start the scorer with --metrics-port, and give that "
                "host:port to --scorer"
            ) from None
    return answers


def stream_live(args: argparse.Namespace) -> None:
    from lib.monitoring.stream_report import live_table

    for address, answer in live_answers(args.scorer).items():
        counts = ", ".join(f"{k} {v:,}" for k, v in answer["labels"].items())
        print(f"{address} (group {answer['group']}): labels {counts}")
        print(live_table(answer).to_string(float_format="{:.4f}".format))


def _registry_promote(args: argparse.Namespace) -> None:
    from mlflow.tracking import MlflowClient

    from lib.model import registry
    from lib.serving.bundles import BundleStore
    from lib.serving.scoring import bundle_path

    settings = get_settings()
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    store = BundleStore(bundle_path(args.store))
    decision = registry.promote_live(
        client, settings.registered_model, store, live_answers(args.scorer), args.min_frauds
    )
    verdict = "promoted" if decision.promoted else "not promoted"
    print(f"{verdict}: {decision.reason}; champion is v{decision.champion_version}")


def _loop_reasons(args: argparse.Namespace) -> list[str]:
    from lib.pipeline import loop

    drift = loop.drift_verdict(args.drift) if args.drift else None
    alerts = loop.firing_alerts(args.prometheus) if args.prometheus else []
    return loop.reasons(drift, alerts)


def _loop_check(args: argparse.Namespace) -> int:
    found = _loop_reasons(args)
    print("retrain: " + "; ".join(found) if found else "no retraining needed: no drift verdict, no alert firing")
    return 0 if found else 3


def _loop_retrain(args: argparse.Namespace) -> int:
    from lib.pipeline import loop
    from lib.pipeline.runner import parse_overrides, run_pipeline

    if args.if_needed:
        found = _loop_reasons(args)
        if not found:
            print("no retraining needed: no drift verdict, no alert firing")
            return 0
        print("retrain: " + "; ".join(found), flush=True)
    windows = loop.recent_windows(args.raw, args.validation_steps, args.test_steps)
    overrides = {"RAW_PATH": args.raw, **windows, **parse_overrides(args.param)}
    result = run_pipeline(profile=loop.PROFILE, overrides=overrides, start=loop.STEPS[0], until=loop.STEPS[1])
    return 0 if result.ok else 1


def add_loop(commands) -> None:
    loop = commands.add_parser("loop", help="the closed loop's retraining trigger (drift verdict, live-recall alert)")
    actions = loop.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="say whether to retrain (exit 0: yes, 3: no)")
    retrain = actions.add_parser("retrain", help="02-05 on the most recent window; registers a challenger in shadow")
    for sub, handler in ((check, _loop_check), (retrain, _loop_retrain)):
        sub.add_argument(
            "--drift", help="a run's outputs.json with 07_drift_report's verdict, e.g. runs/latest/outputs.json"
        )
        sub.add_argument(
            "--prometheus", help="Prometheus URL whose firing alerts count (FraudLiveRecallDropped, FraudDataDrift)"
        )
        sub.set_defaults(handler=handler)
    retrain.add_argument(
        "--raw", default="data/raw/transactions.parquet", help="the raw data to retrain on (its most recent steps)"
    )
    retrain.add_argument("--validation-steps", type=int, default=100)
    retrain.add_argument("--test-steps", type=int, default=100)
    retrain.add_argument("--if-needed", action="store_true", help="only when --drift or --prometheus give a reason")
    retrain.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE", help="more parameters")


def add_registry(commands) -> None:
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
    promote.add_argument("--store", default="data/bundles", help="the bundle store the apps serve (05_evaluate's)")
    promote.set_defaults(handler=_registry_promote)


def add_stream_live(actions) -> None:
    """``stream live`` under ``python -m lib stream``."""
    live = actions.add_parser("live", help="live performance per model version, from stream scorers' /live")
    live.add_argument("--scorer", action="append", required=True, metavar="HOST:PORT", help="a scorer's --metrics-port")
    live.set_defaults(handler=stream_live)
