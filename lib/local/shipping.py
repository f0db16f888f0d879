"""What ships: the ``lib`` files the scoring path imports, and nothing of the ops, pipeline or model rooms.

The Lambda zip and the API image carry the import closure of their entry (``ENTRIES``): every ``lib``
module the entry imports, at module level or inside a function, and what those import in turn, with
their packages' ``__init__.py``. ``lambda-package`` copies exactly that into ``chalice_app/vendor/lib``
(Chalice puts ``vendor/`` at the package root); ``k8s/Dockerfile`` copies the image's files by name,
and ``tests/code/test_shipping.py`` holds both to the closure and fails on a module of a room that
never ships (``NEVER_SHIPPED``).

Standard library only, so a bare Python (cd.yml's Python 3.13) can run it:
``python -m lib.local.shipping lambda chalice_app/vendor/lib``.
"""

import ast
import shutil
import sys
import tempfile
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
LIB = PROJECT_ROOT / "lib"
ENTRIES = {
    "lambda": PROJECT_ROOT / "chalice_app" / "app.py",
    "image": LIB / "serving" / "__main__.py",
}
NEVER_SHIPPED = ("local", "cli", "pipeline", "model", "data", "monitoring", "__main__")  # lib/<room> or lib/__main__


def _module_file(name: str) -> Path | None:
    """The file of ``lib`` module ``name`` (``lib.serving.api`` -> lib/serving/api.py), or None outside lib."""
    parts = name.split(".")
    if parts[0] != "lib":
        return None
    base = PROJECT_ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported(path: Path) -> set[str]:
    """Every ``lib`` module ``path`` names in an import (``from lib import atomic`` names the module atomic of lib too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {n for n in names if n == "lib" or n.startswith("lib.")}


def closure(entry: Path) -> list[Path]:
    """The ``lib`` files ``entry`` needs: its imports, theirs, and every package ``__init__.py`` on the way."""
    found: set[Path] = set()
    todo = [entry]
    while todo:
        for name in _imported(todo.pop()):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # lib, lib.serving, lib.serving.api
                path = _module_file(".".join(parts[:depth]))
                if path is not None and path not in found:
                    found.add(path)
                    todo.append(path)
    return sorted(found)


def shipped(target: str) -> list[Path]:
    """What ``target`` (``lambda`` or ``image``) carries of ``lib``, relative to the project."""
    files = closure(ENTRIES[target])
    if ENTRIES[target].is_relative_to(LIB):
        files = sorted({*files, ENTRIES[target]})
    return [f.relative_to(PROJECT_ROOT) for f in files]


def copy_shipped(target: str, dest: Path) -> Path:
    """``dest`` (e.g. ``chalice_app/vendor/lib``) holding exactly what ``target`` carries of ``lib``, replaced whole."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    for relative in shipped(target):
        copy = staging / relative.relative_to("lib")
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / relative, copy)
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    shutil.rmtree(dest, ignore_errors=True)
    staging.rename(dest)
    return dest


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ENTRIES:
        sys.exit(f"usage: python -m lib.local.shipping {{{'|'.join(ENTRIES)}}} DEST")
    print(f"{copy_shipped(sys.argv[1], Path(sys.argv[2]))}: {len(shipped(sys.argv[1]))} files of lib")
