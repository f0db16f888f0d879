"""``serve``: the scoring API (``lib.serving.server``), with registry aliases fetched from MLflow if need be."""

import argparse

from lib.config import get_settings


def _serve(args: argparse.Namespace) -> None:
    from lib.cli.models import checksums, fetcher
    from lib.serving.server import serve

    serve(args, fetch=fetcher(get_settings()), checksum=checksums(get_settings()))


def add_commands(commands) -> None:
    from lib.serving.server import add_arguments

    serve = commands.add_parser("serve", help="serve the scoring API (FastAPI + uvicorn)")
    add_arguments(serve)
    serve.set_defaults(handler=_serve)
