"""``serve``: the FastAPI twin under uvicorn, one worker or several sharing the port and their metrics.

One definition for both entries: ``python -m lib serve`` (the CLI, which can also fetch a registry alias
from MLflow) and ``python -m lib.serving`` (the API image, which carries no CLI: ``lib.local.shipping``).
"""

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from lib.config import QUIET_ENVIRONMENT, Settings, get_settings
from lib.errors import ParameterError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--model", help="what to serve (default FRAUD_SERVING_MODEL, 'champion'): 'champion', 'challenger', a "
        "bundle store (champion + challenger in shadow, hot reload) or a bundle folder"
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=int, help="worker processes, one per core (default 1, FRAUD_SERVING_WORKERS); they share "
        "the port and their metrics"
    )  # fmt: skip
    parser.add_argument(
        "--reload-interval", type=float, help="seconds between checks of a store's aliases (default 5, "
        "FRAUD_SERVING_RELOAD_INTERVAL)"
    )  # fmt: skip


def serve(
    args: argparse.Namespace, fetch: Callable[[str], Path] | None = None,
    checksum: Callable[[str, str], str | None] | None = None,
) -> None:  # fmt: skip
    """Run the API until Ctrl-C; ``fetch`` gets a registry alias the bundle store does not hold, ``checksum``
    a version's model.so checksum from the registry (``FRAUD_COMPILED_MODELS=registry``; one worker only)."""
    import uvicorn

    from lib.serving.source import resolve_model

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
        app = create_app(
            settings,
            resolve=lambda: resolve_model(model, settings, reload_interval=interval, fetch=fetch, checksum=checksum),
        )
        print(f"{served}; Ctrl-C stops", flush=True)
        uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_config=None)
        return
    from lib.serving.metrics import shared_values  # the supervisor imports no model code: it only watches

    if fetch is not None and not model.startswith(("http://", "https://")) and _fetched_alias(model, settings):
        model = str(fetch(model))  # fetched once, here, and every worker loads the folder
    os.environ.update(FRAUD_SERVING_MODEL=model, FRAUD_SERVING_RELOAD_INTERVAL=str(interval))
    with shared_values():
        print(f"{served} with {workers} worker processes; Ctrl-C stops", flush=True)
        uvicorn.run(
            "lib.serving.api:worker_app", factory=True, workers=workers, host=args.host, port=args.port,
            access_log=False, log_config=None,
        )  # fmt: skip


def _fetched_alias(model: str, settings: Settings) -> bool:
    """Whether ``model`` is a registry alias that the bundle store does not hold (so it must be fetched)."""
    from lib.config import REGISTRY_ALIASES
    from lib.serving.bundles import BundleStore

    if model not in REGISTRY_ALIASES:
        return False
    store = BundleStore(settings.bundle_store)
    return not (store.holds(store.folder) and model in store.aliases())


def main(argv: list[str] | None = None) -> int:
    """``python -m lib.serving``: ``serve``'s options (the image's entry point)."""
    import sys

    from lib.errors import PipelineError
    from lib.redact import redact

    parser = argparse.ArgumentParser(prog="python -m lib.serving", description="the fraud scoring API")
    add_arguments(parser)
    try:
        serve(parser.parse_args(argv))
    except PipelineError as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 1
    return 0
