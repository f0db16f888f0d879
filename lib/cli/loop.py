"""``loop check|retrain``: the closed loop's retraining trigger (07's drift verdict, the live-recall alert)."""

import argparse


def _reasons(args: argparse.Namespace) -> list[str]:
    from lib.pipeline import loop

    drift = loop.drift_verdict(args.drift) if args.drift else None
    alerts = loop.firing_alerts(args.prometheus) if args.prometheus else []
    return loop.reasons(drift, alerts)


def _check(args: argparse.Namespace) -> int:
    found = _reasons(args)
    print("retrain: " + "; ".join(found) if found else "no retraining needed: no drift verdict, no alert firing")
    return 0 if found else 3


def _retrain(args: argparse.Namespace) -> int:
    from lib.pipeline import loop
    from lib.pipeline.runner import parse_overrides, run_pipeline

    if args.if_needed:
        found = _reasons(args)
        if not found:
            print("no retraining needed: no drift verdict, no alert firing")
            return 0
        print("retrain: " + "; ".join(found), flush=True)
    windows = loop.recent_windows(args.raw, args.validation_steps, args.test_steps)
    overrides = {"RAW_PATH": args.raw, **windows, **parse_overrides(args.param)}
    result = run_pipeline(profile=loop.PROFILE, overrides=overrides, start=loop.STEPS[0], until=loop.STEPS[1])
    return 0 if result.ok else 1


def add_commands(commands) -> None:
    loop = commands.add_parser("loop", help="the closed loop's retraining trigger (drift verdict, live-recall alert)")
    actions = loop.add_subparsers(dest="action", required=True)
    check = actions.add_parser("check", help="say whether to retrain (exit 0: yes, 3: no)")
    retrain = actions.add_parser("retrain", help="02-05 on the most recent window; registers a challenger in shadow")
    for sub, handler in ((check, _check), (retrain, _retrain)):
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
