"""``--model`` as every command reads it: ``lib.serving.source.resolve_model``, with registry aliases the
bundle store does not hold fetched from MLflow (the CLI has MLflow; the apps do not)."""

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


def model_source(spec: str, settings: Settings, **options: Any) -> ModelSource:
    return resolve_model(spec, settings, fetch=fetcher(settings), **options)
