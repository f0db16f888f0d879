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
import shutil
from pathlib import Path

from lib import atomic
from lib.config import CHALLENGER, CHAMPION
from lib.serving.scoring import BUNDLE_FILE, BundleError, Scorer, Served

log = logging.getLogger(__name__)
ALIASES_FILE = "aliases.json"
KEEP_VERSIONS = 5  # bundles kept besides the aliased ones; older versions are deleted when one is published


class BundleStore:
    """A folder of ``v<N>/`` bundles and ``aliases.json``."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @staticmethod
    def holds(folder: str | Path) -> bool:
        return (Path(folder) / ALIASES_FILE).is_file()

    def aliases(self) -> dict[str, str]:
        path = self.folder / ALIASES_FILE
        try:
            aliases = json.loads(path.read_text())
        except FileNotFoundError:
            raise BundleError(
                f"{self.folder}: not a bundle store (no {ALIASES_FILE}); 05_evaluate publishes one "
                "(FRAUD_BUNDLE_STORE), or point FRAUD_SERVING_MODEL at a bundle folder"
            ) from None
        except ValueError as exc:
            raise BundleError(f"{path}: not valid JSON ({exc}); republish it with the registry") from None
        if CHAMPION not in aliases:
            raise BundleError(f"{path} names no {CHAMPION!r} version: {aliases}")
        return {k: str(v) for k, v in aliases.items()}

    def bundle(self, version: str | int) -> Path:
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
        current = self.aliases() if self.holds(self.folder) else {}
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
    ``lib.serving.source.ModelSource`` that ``check`` reloads every ``reload_interval`` seconds."""

    def __init__(self, store: BundleStore, reload_interval: float = 5.0, shadow: bool = True) -> None:
        self.store, self.shadow = store, shadow
        self.reload_interval: float | None = reload_interval
        self._aliases: dict[str, str] = {}
        self.swaps = 0
        self.current = self._load(self.store.aliases())

    def _load(self, aliases: dict[str, str]) -> Served:
        champion = Scorer.from_folder(self.store.bundle(aliases[CHAMPION]))
        challenger = None
        if self.shadow and aliases.get(CHALLENGER) not in (None, aliases[CHAMPION]):
            challenger = Scorer.from_folder(self.store.bundle(aliases[CHALLENGER]))
        self._aliases = aliases
        return Served(champion, challenger)

    def check(self) -> bool:
        """Reread the aliases; if they moved, load the new pair and swap it in. True when it swapped."""
        try:
            aliases = self.store.aliases()
            if aliases == self._aliases:
                return False
            served = self._load(aliases)  # fully loaded before anyone sees it
        except BundleError as exc:  # keep serving what is loaded; say why the new one is not
            log.error("reload failed, still serving v%s: %s", self.current.versions[0], exc)
            return False
        before, self.current = self.current.versions, served
        self.swaps += 1
        log.info("models %s -> %s", before, served.versions)
        return True
