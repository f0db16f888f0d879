"""Which model an app serves: one rule for every entry (the CLI, the FastAPI twin, the Chalice app, the stream).

``resolve_model(spec, settings)`` turns a setting (``FRAUD_SERVING_MODEL``, ``--model``) into a
``ModelSource``, whose ``current`` is the pair (champion, shadow challenger) to score one request or
micro-batch with, and whose ``check()`` swaps in a newer pair where there can be one:

* ``http://…`` or ``https://…``: the API there (``lib.serving.remote.HttpScorer``), with the first
  of ``FRAUD_API_KEYS``; it names the model the API serves;
* ``champion``: the bundle store's champion (``FRAUD_BUNDLE_STORE``, where 05_evaluate publishes the
  registry's aliases; default ``data/bundles``), with its challenger in shadow, reloaded when the aliases
  move; ``challenger``: the store's challenger alone. Where the store does not hold the alias, ``fetch``
  gets it from the registry (the CLI hands in MLflow's; the apps have no MLflow and say what to do);
* a folder with ``aliases.json``: that bundle store, as for ``champion``;
* any other folder: the bundle in it (``bundle.json``), for good.

Relative folders are taken from ``base`` (the project; the Chalice app gives its own folder).
"""

import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from lib.config import CHAMPION, PROJECT_ROOT, REGISTRY_ALIASES, Settings
from lib.errors import ParameterError
from lib.redact import redact
from lib.serving.bundles import BundleStore, LiveModels
from lib.serving.scoring import BundleError, CompiledPolicy, Scorer, Served, trust_bundle

log = logging.getLogger(__name__)


class ModelSource(Protocol):
    """Where an app's models come from: a ``Scorer``, a ``LiveModels`` store or an ``HttpScorer``."""

    reload_interval: float | None  # seconds between ``check`` calls; None: ``current`` never changes
    failure: str | None  # why the newest version is not served (the last check failed), else None

    @property
    def current(self) -> Served:
        """The pair to score one request or micro-batch with (read it once: a swap never splits one)."""
        ...

    def check(self) -> bool:
        """Look for a newer pair and swap it in; True when it did. Never raises for a bad new version."""
        ...


def resolve_model(
    spec: str,
    settings: Settings,
    *,
    base: Path = PROJECT_ROOT,
    shadow: bool = True,
    reload_interval: float | None = None,
    fetch: Callable[[str], Path] | None = None,
    checksum: Callable[[str, str], str | None] | None = None,
) -> ModelSource:
    """The model source ``spec`` names (the module's docstring says how); ``reload_interval`` defaults to
    ``FRAUD_SERVING_RELOAD_INTERVAL``. ``checksum(model_name, version)``: the SHA-256 of a version's
    model.so as the registry records it (the CLI hands in MLflow's), for ``FRAUD_COMPILED_MODELS=registry``."""
    interval = reload_interval or settings.serving_reload_interval
    trusted = compiled_policy(settings.compiled_models, checksum)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", spec) and not spec.startswith(("http://", "https://")):
        raise ParameterError(
            f"the model {redact(spec)!r}: an address the apps do not read; give champion, challenger, a bundle "
            "store or folder on this machine, or an http(s) URL of an API"
        )
    if spec.startswith(("http://", "https://")):
        from lib.serving.remote import HttpScorer

        if not settings.api_key_list():
            raise ParameterError(f"scoring through {spec} needs an API key: set FRAUD_API_KEYS (the first key is used)")
        return HttpScorer(spec, settings.api_key_list()[0], reload_interval=interval)
    if spec in REGISTRY_ALIASES:
        store = BundleStore(settings.bundle_store)
        aliases = store.aliases() if store.holds(store.folder) else {}
        if spec == CHAMPION and CHAMPION in aliases:
            return LiveModels(store, interval, shadow, trusted)
        if spec in aliases:
            return Scorer.from_folder(store.bundle(aliases[spec]), trusted)
        if fetch is None:
            raise BundleError(
                f"the bundle store {store.folder} holds no {spec!r} (05_evaluate publishes it there): run the pipeline "
                f"through 05_evaluate, set FRAUD_BUNDLE_STORE to the store, or point FRAUD_SERVING_MODEL at a bundle folder"
            )
        return Scorer.from_folder(fetch(spec), trusted)
    folder = base / Path(spec).expanduser()
    if BundleStore.holds(folder):
        return LiveModels(BundleStore(folder), interval, shadow, trusted)
    return Scorer.from_folder(folder, trusted)


def compiled_policy(mode: str, checksum: Callable[[str, str], str | None] | None) -> CompiledPolicy:
    """Which bundle's model.so to load (``FRAUD_COMPILED_MODELS``; docs/serving.md says who may write the store)."""
    if mode == "bundle":
        return trust_bundle
    if mode == "registry" and checksum is not None:
        return lambda info: (
            info.compiled is not None and checksum(info.model_name, info.model_version) == info.compiled.sha256
        )
    if mode == "registry":
        log.warning("FRAUD_COMPILED_MODELS=registry and no registry to ask: no model.so is loaded (the booster serves)")
    return lambda info: False


def watch(source: ModelSource, on_check: Callable[[bool], None], stopping: threading.Event) -> threading.Thread | None:
    """Check ``source`` every ``reload_interval`` seconds in a daemon thread until ``stopping`` is set, calling
    ``on_check(swapped)`` after each check; None when the source never changes."""
    interval = source.reload_interval
    if interval is None:
        return None

    def poll() -> None:
        while not stopping.wait(interval):
            try:
                swapped = source.check()
            except Exception as exc:  # the reloader survives anything: what is loaded keeps serving
                source.failure = redact(f"{type(exc).__name__}: {exc}")
                swapped = False
            on_check(swapped)

    thread = threading.Thread(target=poll, name="model-reloader", daemon=True)
    thread.start()
    return thread
