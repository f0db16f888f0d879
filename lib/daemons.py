"""Local services as background processes (the Kafka broker, the Spark cluster): ports, process groups, state.

Each service process gets its own session (process group), so stopping it stops exactly it and the
children it started. A service started for a test or a notebook dies with its parent (Linux
``PR_SET_PDEATHSIG``); one started by ``python -m lib … start`` is detached and remembered in a
state file under the project's cache folder.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

from lib import atomic


@contextlib.contextmanager
def stderr_to(log: Path):
    """This process's stderr (fd 2) goes to ``log`` inside the block: for native code that writes there
    directly, past Python's ``sys.stderr`` (a JVM's start-up lines, TensorFlow's C++ import messages).
    Errors still reach Python as exceptions."""
    log.parent.mkdir(parents=True, exist_ok=True)
    saved = os.dup(2)
    try:
        with open(log, "ab") as out:
            os.dup2(out.fileno(), 2)
            yield log
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(host: str, port: int, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def spawn(command: list[str], log: Path, env: dict | None = None, detach: bool = False) -> int:
    """Start ``command`` in its own process group, output appended to ``log``; returns its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, preexec_fn=None if detach else _die_with_parent,
        )  # fmt: skip
    return process.pid


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (our own exited children are reaped on the way)."""
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
        if waited == pid:
            return False
    except ChildProcessError:  # not our child (a `stop` from another process)
        pass
    return atomic.pid_running(pid)


def stop(pids: list[int], timeout: float = 30.0, kill: bool = False) -> None:
    """SIGTERM (or SIGKILL when ``kill``) each process group, last started first; SIGKILL what is left at ``timeout``."""
    for pid in reversed(pids):
        _signal_group(pid, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if alive(pid):
            _signal_group(pid, signal.SIGKILL)
    while any(alive(pid) for pid in pids):
        time.sleep(0.05)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _die_with_parent() -> None:
    import ctypes

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def save_state(path: Path, service) -> None:
    """Remember a detached service (a dataclass with ``data_dir``) for later ``status``/``stop`` calls."""
    atomic.write_text(path, json.dumps({**asdict(service), "data_dir": str(service.data_dir)}, indent=1))


def load_state(path: Path, cls):
    """The service ``save_state`` remembered, if it is still running; else None."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    service = cls(**{**state, "data_dir": Path(state["data_dir"])})
    return service if service.running() else None


def start_detached(path: Path, cls, make):
    """The service ``path`` remembers if it still runs; else ``make()`` started detached and remembered."""
    running = load_state(path, cls)
    if running:
        return running
    service = make().start(detach=True)
    save_state(path, service)
    return service


def stop_detached(path: Path, cls) -> bool:
    """Stop the service ``path`` remembers and forget it; False if none was running."""
    service = load_state(path, cls)
    path.unlink(missing_ok=True)
    if not service:
        return False
    service.stop()
    return True
