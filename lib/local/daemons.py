"""Local services as background processes (the Kafka broker, the Spark cluster, Prometheus): ports,
process groups, state, and the one ``start|status|stop`` mechanism of ``python -m lib <service>-local``.

Each service process gets its own session (process group), so stopping it stops exactly it and the
children it started. A service started for a test or a notebook dies with its parent (Linux
``PR_SET_PDEATHSIG``); one started by ``python -m lib <service>-local start`` is detached and remembered
in a state file under the project's cache folder (``Background``).
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from lib import atomic


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


def http_ok(url: str) -> bool:
    """Whether ``url`` answers 200 (a readiness endpoint) within a second."""
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
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


class OneProcess:
    """What a local service that runs as one process (the Kafka broker, Redis) shares: its ``pid`` and
    ``log_file`` are the subclass's; ``start`` is its own."""

    pid: int | None
    start: Callable[..., Any]
    stop_timeout = 30.0

    @property
    def log_file(self) -> Path:
        raise NotImplementedError

    def wait_answering(self, answering: Callable[[], bool], timeout: float, what: str, error: type[Exception]) -> Any:
        """Self, once ``answering()``; ``error`` with the log's end if the process exits first, or (stopped) if it
        does not answer within ``timeout`` seconds."""
        assert self.pid is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not alive(self.pid):
                self.pid = None
                raise error(f"{what} exited; see {self.log_file}:\n{self.tail()}")
            if answering():
                return self
            time.sleep(0.05)
        self.stop()
        raise error(f"{what} did not answer within {timeout:.0f} s; see {self.log_file}")

    def tail(self) -> str:
        """The end of its log, for an error message."""
        try:
            return self.log_file.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def running(self) -> bool:
        return self.pid is not None and alive(self.pid)

    def stop(self, timeout: float | None = None, kill: bool = False) -> None:
        """A clean shutdown (SIGTERM), or SIGKILL when ``kill`` or after ``timeout`` (``stop_timeout``)."""
        if self.pid:
            pid, self.pid = self.pid, None
            stop([pid], self.stop_timeout if timeout is None else timeout, kill)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class Service(Protocol):
    """A local service as ``Background`` runs it: a dataclass whose first field is its ``data_dir``."""

    data_dir: Path

    def start(self, detach: bool = False) -> "Service": ...

    def stop(self) -> None: ...

    def running(self) -> bool: ...

    def started(self) -> str:
        """What ``start`` prints: where the service answers and how to use it."""
        ...

    def status(self) -> str:
        """What ``status`` prints: whether each of its processes answers."""
        ...


@dataclass(frozen=True)
class Background:
    """One kind of local service as ``python -m lib <name> start|status|stop`` runs it: started detached,
    remembered in ``<cache folder>/local.json``, its files in ``<cache folder>/local-data`` by default."""

    name: str  # the command, e.g. "kafka-local"
    what: str  # for messages, e.g. "local Kafka broker"
    kind: type
    cache_folder: Callable[[], Path]  # the service's folder under the project's cache

    @property
    def state_file(self) -> Path:
        return self.cache_folder() / "local.json"

    def running(self) -> Any:
        """The service the state file remembers, if it is still running; else None."""
        try:
            state = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return None
        service = self.kind(**{**state, "data_dir": Path(state["data_dir"])})
        return service if service.running() else None

    def start(self, data_dir: Path | None = None, **options: Any) -> Any:
        """The running service if there is one; else a new one (``options`` for its class) started detached."""
        running = self.running()
        if running:
            return running
        service = self.kind(data_dir or self.cache_folder() / "local-data", **options).start(detach=True)
        atomic.write_text(self.state_file, json.dumps({**asdict(service), "data_dir": str(service.data_dir)}, indent=1))
        return service

    def stop(self) -> bool:
        """Stop the remembered service and forget it; False if none was running."""
        service = self.running()
        self.state_file.unlink(missing_ok=True)
        if not service:
            return False
        service.stop()
        return True
