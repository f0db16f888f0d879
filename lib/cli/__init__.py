"""The command line, ``python -m lib <command>``, one module per group of commands: ``data`` (simulate,
validate, score), ``serve``, ``stream``, ``store`` (the online feature store), ``services`` (the local services and the Lambda package),
``registry`` and ``loop``. Each module adds its commands to the parser; the handlers import what they
need when they run, so ``--help`` and a service's ``status`` stay fast."""

import argparse
import sys

from lib.cli import data, loop, registry, serve, services, store, stream
from lib.errors import PipelineError
from lib.redact import redact


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m lib", description="Fraud-detection pipeline tools")
    commands = root.add_subparsers(dest="command", required=True)
    for group in (data, serve, stream, store, services, registry, loop):
        group.add_commands(commands)
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.handler(args) or 0
    except PipelineError as exc:
        print(f"error: {redact(exc)}", file=sys.stderr)
        return 1
