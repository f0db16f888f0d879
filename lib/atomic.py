"""Atomic outputs: a failed step leaves the previous file or folder in place, never a half-written one.

Every write of the project goes through here. A temporary sibling with a unique name (``.<name>.<pid>-
<random>.tmp``) is written and renamed over the target only when the block succeeds, so two writers
of the same target never share a temporary file and the last complete one wins. Temporaries that a
killed process left behind are removed by the next write of the same target.
"""

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _temporary(target: Path, kind: str = "tmp") -> Path:
    return target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.{kind}")


def pid_running(pid: int) -> bool:
    """Whether a process ``pid`` exists (the writer of a temporary file, a daemon of ``lib.local.daemons``)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep(target: Path) -> None:
    """Remove temporaries of ``target`` whose writer process is gone (killed mid-write)."""
    for stale in target.parent.glob(f".{target.name}.*-*.*"):
        pid = stale.name[len(target.name) + 2 :].split("-", 1)[0]
        if pid.isdigit() and not pid_running(int(pid)):
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


@contextmanager
def staged_file(target: str | Path) -> Iterator[Path]:
    """A temporary path beside ``target`` to write; it replaces ``target`` when the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep(target)
    tmp = _temporary(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file renamed over it."""
    with staged_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


@contextmanager
def staged_dir(target: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``target`` (not yet created) that replaces it when the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep(target)
    tmp, old = _temporary(target), _temporary(target, "old")
    try:
        yield tmp
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
