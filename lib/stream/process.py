"""The stream scorer in a process of its own, as an operator runs it: ``python -m lib stream score``, started
and stopped by 06_stream (``lib.monitoring.stream_report``), the tests and the benchmarks."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lib.config import PROJECT_ROOT
from lib.stream.kafka import StreamError, Topics
from lib.stream.scorer import ASSIGNED


def start_scorer_process(
    bootstrap: str,
    topics: Topics,
    model: str | Path,
    *extra: str,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
) -> Any:
    """``python -m lib stream score`` in its own process (as an operator runs it); returns once the
    consumer group has assigned it its partitions, so what is produced next is consumed by it.

    Its output (``scoring …``, ``assigned …`` per rebalance, then ``stopped: N scored, M dead letters``)
    is on ``.stdout``.
    """
    command = [sys.executable, "-m", "lib", "stream", "score", "--bootstrap", bootstrap, "--topic-prefix",
               topics.prefix, "--model", str(model), *extra]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=PROJECT_ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    seen = _read_until(process, ASSIGNED, timeout)
    if not seen.splitlines()[-1:] or not seen.splitlines()[-1].startswith(ASSIGNED):
        process.kill()
        raise StreamError(f"the stream scorer was not assigned partitions within {timeout:.0f} s:\n{seen[-3000:]}")
    return process


def _read_until(process: Any, prefix: str, timeout: float) -> str:
    """Lines of ``process.stdout`` up to the first that starts with ``prefix`` (or the timeout, or its exit)."""
    import selectors

    seen = []
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(timeout=max(deadline - time.monotonic(), 0)):
                break
            line = process.stdout.readline()
            if not line:  # exited
                break
            seen.append(line)
            if line.startswith(prefix):
                break
    return "".join(seen)


def stop_scorer_process(process: Any, timeout: float = 60.0) -> str:
    """SIGTERM (finish the batch, commit, leave the group); returns its output, raises if it failed."""
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=timeout)
    if process.returncode != 0:
        raise StreamError(f"the stream scorer exited with {process.returncode}:\n{output[-3000:]}")
    return str(output)
