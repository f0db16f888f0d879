"""``--model`` as every command reads it: ``lib.serving.source.resolve_model``, with registry aliases the
bundle store does not hold fetched from MLflow (the CLI has MLflow; the apps do not)."""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from lib.config import Settings
from lib.serving.source import ModelSource, resolve_model


def fetcher(settings: Settings):
    """A registry alias -> its bundle, downloaded from ``MLFLOW_TRACKING_URI`` into the bundle cache."""

    def fetch(alias: str) -> Path:
        from lib.model.fetch import fetch_alias

        return fetch_alias(alias, settings)

    return fetch


def checksums(settings: Settings) -> Callable[[str, str], str | None] | None:
    """With ``FRAUD_COMPILED_MODELS=registry``: a version's model.so checksum as the registry records it."""
    if settings.compiled_models != "registry":
        return None
    from lib.model.fetch import compiled_checksum

    return compiled_checksum(settings)


def model_source(spec: str, settings: Settings, **options: Any) -> ModelSource:
    return resolve_model(spec, settings, fetch=fetcher(settings), checksum=checksums(settings), **options)
