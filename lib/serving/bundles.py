"""The bundle store: the registry's aliases published next to the bundles, and the models an app serves from it.

A store is a folder: one bundle per registered version (``v<N>/``, as ``lib.serving.scoring``
writes them) and ``aliases.json`` (``{"champion": "2", "challenger": "3"}``), which the registry
gate and ``registry promote`` rewrite atomically whenever they move an alias in MLflow. The apps
read the store, not MLflow: the scoring path stays free of MLflow (the Lambda package has none), and
the pointer is one small file an operator can copy to object storage or a volume.

``LiveModels`` serves from a store: the champion, and the challenger in shadow when the aliases name
another version. It rereads the aliases every ``interval`` seconds and, when they moved, loads the
new bundles completely before it swaps them in with one assignment, so a request or micro-batch
reads either the old pair or the new one, never a mix or a half-loaded model.
"""

import json
import logging
import re
import shutil
from pathlib import Path

from lib import atomic
from lib.config import CHALLENGER, CHAMPION
from lib.redact import redact
from lib.serving.scoring import BUNDLE_FILE, BundleError, CompiledPolicy, Scorer, Served, trust_bundle

log = logging.getLogger(__name__)
ALIASES_FILE = "aliases.json"
_VERSION = re.compile(r"[0-9]{1,9}")
KEEP_VERSIONS = 5  # bundles kept besides the aliased ones; older versions are deleted when one is published


class BundleStore:
    """A folder of ``v<N>/`` bundles and ``aliases.json``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @staticmethod
    def holds(folder: str | Path) -> bool:
        return (Path(folder) / ALIASES_FILE).is_file()

    def aliases(self) -> dict[str, str]:
        """``aliases.json``: each alias names a version number of this store (nothing else is a version: a path
        such as ``1/../../outside`` would serve a folder outside the store)."""
        path = self.folder / ALIASES_FILE
        try:
            aliases = json.loads(path.read_text())
        except FileNotFoundError:
            raise BundleError(
                f"{self.folder}: not a bundle store (no {ALIASES_FILE}); 05_evaluate publishes one "
                "(FRAUD_BUNDLE_STORE), or point FRAUD_SERVING_MODEL at a bundle folder"
            ) from None
        except (OSError, ValueError) as exc:
            raise BundleError(f"{path}: not valid JSON ({exc}); republish it with the registry") from None
        if not isinstance(aliases, dict):
            raise BundleError(
                f"{path}: not an object of aliases ({type(aliases).__name__}); republish it with the registry"
            )
        wrong = {k: v for k, v in aliases.items() if not _VERSION.fullmatch(str(v)) or isinstance(v, bool)}
        if wrong:
            raise BundleError(f"{path}: aliases must name version numbers of this store, not {wrong}")
        if CHAMPION not in aliases:
            raise BundleError(f"{path} names no {CHAMPION!r} version: {aliases}")
        return {k: str(v) for k, v in aliases.items()}

    def bundle(self, version: str | int) -> Path:
        if not _VERSION.fullmatch(str(version)):
            raise BundleError(f"{version!r} is not a version number of the bundle store {self.folder}")
        return self.folder / f"v{version}"

    def publish(self, bundle: str | Path, version: str | int) -> Path:
        """Copy a bundle folder in as ``v<version>`` (atomically; a version's bundle never changes, so one
        already there stays); older unaliased versions are pruned."""
        target = self.bundle(version)
        if not (target / BUNDLE_FILE).is_file():
            with atomic.staged_dir(target) as tmp:
                shutil.copytree(bundle, tmp)
        self._prune()
        return target

    def set_aliases(self, **aliases: str | int) -> dict[str, str]:
        """Point aliases at published versions; one atomic write of ``aliases.json``."""
        try:
            current = self.aliases() if self.holds(self.folder) else {}
        except BundleError as exc:  # a broken aliases.json is replaced, which is how a publisher repairs it
            log.warning("%s; writing the aliases anew", exc)
            current = {}
        for alias, version in aliases.items():
            if not self.bundle(version).is_dir():
                raise BundleError(f"{self.folder}: no bundle v{version} to point {alias!r} at; publish it first")
            current[alias] = str(version)
        atomic.write_text(self.folder / ALIASES_FILE, json.dumps(current, indent=2, sort_keys=True))
        return current

    def _prune(self) -> None:
        aliased = set(self.aliases().values()) if self.holds(self.folder) else set()
        versions = sorted((int(p.name[1:]) for p in self.folder.glob("v*") if p.name[1:].isdigit()), reverse=True)
        for version in versions[KEEP_VERSIONS:]:
            if str(version) not in aliased:
                shutil.rmtree(self.bundle(version), ignore_errors=True)


class LiveModels:
    """The store's champion (and challenger, in shadow), swapped in whole when its aliases move: a
    ``lib.serving.source.ModelSource`` that ``check`` reloads every ``reload_interval`` seconds.

    A new pair that cannot be loaded (any fault: a bundle.json that is not JSON, a truncated model, a
    library that will not load, aliases that name no version) leaves the loaded pair serving; ``failure``
    says why until a later check loads a valid pair."""

    def __init__(
        self, store: BundleStore, reload_interval: float = 5.0, shadow: bool = True,
        trusted: CompiledPolicy = trust_bundle,
    ) -> None:  # fmt: skip
        self.store, self.shadow, self.trusted = store, shadow, trusted
        self.reload_interval: float | None = reload_interval
        self.failure: str | None = None
        self._aliases: dict[str, str] = {}
        self._failed: dict[str, str] | None = None  # the aliases the last failed check tried
        self.swaps = 0
        self.current = self._load(self.store.aliases())

    def _load(self, aliases: dict[str, str]) -> Served:
        champion = Scorer.from_folder(self.store.bundle(aliases[CHAMPION]), self.trusted)
        challenger = None
        if self.shadow and aliases.get(CHALLENGER) not in (None, aliases[CHAMPION]):
            challenger = Scorer.from_folder(self.store.bundle(aliases[CHALLENGER]), self.trusted)
        self._aliases = aliases
        return Served(champion, challenger)

    def check(self) -> bool:
        """Reread the aliases; if they moved, load the new pair and swap it in. True when it swapped. Never
        raises: a pair that cannot be loaded is ``failure``, and the next check tries again."""
        aliases: dict[str, str] | None = None
        try:
            aliases = self.store.aliases()
            if aliases == self._aliases:
                self.failure = self._failed = None
                return False
            served = self._load(aliases)  # fully loaded before anyone sees it
        except Exception as exc:  # any fault of the store: keep serving what is loaded, try again next time
            if self.failure is None or aliases != self._failed:  # said once per new target, not at every check
                self.failure = redact(str(exc) if isinstance(exc, BundleError) else f"{type(exc).__name__}: {exc}")
                log.error("reload failed, still serving v%s: %s", self.current.versions[0], self.failure)
            self._failed = aliases
            return False
        before, self.current, self.failure, self._failed = self.current.versions, served, None, None
        self.swaps += 1
        log.info("models %s -> %s", before, served.versions)
        return True
