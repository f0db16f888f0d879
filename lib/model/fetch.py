"""Serving bundles out of the MLflow registry: ``models:/<name>@<alias>``'s bundle, downloaded atomically.

05_evaluate logs version N's bundle under ``serving_bundle/vN`` of its run; this is how the gate, the
CLI (``--model champion`` where the bundle store does not hold it) and the tests get it back.
"""

import functools
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lib import atomic
from lib.config import Settings
from lib.serving import scoring


def fetch_bundle(tracking_uri: str, model_name: str, alias: str, dest: str | Path) -> Path:
    """Download the serving bundle of ``models:/<model_name>@<alias>`` from MLflow into ``dest`` (atomically)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:
        raise scoring.BundleError(
            f"no model {model_name!r} with alias {alias!r} in MLflow at {tracking_uri}; run the pipeline "
            "through 05_evaluate first, or pass a bundle folder"
        ) from exc
    artifact = scoring.bundle_artifact_path(version.version)
    if not version.run_id:
        raise scoring.BundleError(
            f"{model_name} v{version.version} (alias {alias!r}) names no run to fetch its bundle from"
        )
    with tempfile.TemporaryDirectory() as download, atomic.staged_dir(Path(dest)) as tmp:
        try:  # stores differ in where below dst_path the files land; the returned path is the truth
            fetched = Path(client.download_artifacts(version.run_id, artifact, download))
        except MlflowException as exc:
            raise scoring.BundleError(
                f"{model_name} v{version.version} (alias {alias!r}) has no serving bundle at {artifact} of run "
                f"{version.run_id}; was it registered by 05_evaluate? ({exc})"
            ) from exc
        shutil.copytree(fetched, tmp)
    return Path(dest)


def fetch_alias(alias: str, settings: Settings) -> Path:
    """The bundle of ``alias`` (``champion``, ``challenger``) of the registered model, in the bundle cache."""
    dest = settings.bundle_cache / f"{settings.registered_model}-{alias}"
    return fetch_bundle(settings.mlflow_tracking_uri, settings.registered_model, alias, dest)


def compiled_checksum(settings: Settings) -> Callable[[str, str], str | None]:
    """``(model name, version) -> the SHA-256 of that version's model.so`` as the registry's version tag records
    it (``registry.COMPILED_SHA256_TAG``), or None (no tag, or no answer: the library is then not loaded)."""
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)

    @functools.cache
    def checksum(name: str, version: str) -> str | None:
        try:
            return client.get_model_version(name, version).tags.get("compiled_sha256")
        except MlflowException:
            return None

    return checksum
