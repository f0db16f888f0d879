"""``serve --workers N``: N uvicorn processes on one port, whose metrics are the sum of all of them,
including a worker that was killed and replaced by the supervisor."""

import os
import re
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import httpx
import msgspec
import psutil
import pytest

from lib.config import PROJECT_ROOT
from lib.local.daemons import free_port, listening
from lib.serving.scoring import Scorer
from tests.serving.conftest import KEY

pytestmark = pytest.mark.slow
PREDICTED = 'fraud_api_requests_total{method="POST",route="/v1/predict",status="200"}'


def workers_of(server: psutil.Process) -> list[psutil.Process]:
    """uvicorn's live worker processes (multiprocessing's spawned children, not its resource tracker)."""
    live = []
    for child in server.children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(child.cmdline()):
                live.append(child)
        except psutil.NoSuchProcess:  # reaped meanwhile
            continue
    return live


@contextmanager
def only(worker: psutil.Process, server: psutil.Process):
    """Every new connection goes to ``worker``: the others are stopped (SIGSTOP) meanwhile, for less than
    the supervisor's 5 s health check."""
    others = [w for w in workers_of(server) if w.pid != worker.pid]
    for other in others:
        other.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for other in others:
            other.send_signal(signal.SIGCONT)


def fresh(method: str, url: str, **kwargs) -> httpx.Response:
    """One request on a new connection (a new connection is what the kernel hands to a worker)."""
    with httpx.Client(timeout=10) as client:
        return client.request(method, url, **kwargs)


def until_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while fresh("GET", f"{url}/readyz").status_code != 200:
        assert time.monotonic() < deadline, "a worker did not load the bundle"
        time.sleep(0.1)


def counted(url: str) -> float:
    found = re.search(re.escape(PREDICTED) + r" (\S+)", fresh("GET", f"{url}/metrics").text)
    return float(found.group(1)) if found else 0.0


def test_two_workers_answer_on_one_port_and_report_every_workers_requests(bundle, transactions, tmp_path):
    shared = tmp_path / "metrics"
    shared.mkdir()
    (shared / "counter_1.db").write_bytes(b"an earlier run's file")  # must be cleared, not summed (or crash)
    port, url = free_port(), None
    log = (tmp_path / "server.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "lib", "serve", "--port", str(port), "--model", str(bundle), "--workers", "2"],
        cwd=PROJECT_ROOT, env={**os.environ, "FRAUD_API_KEYS": KEY, "PROMETHEUS_MULTIPROC_DIR": str(shared)},
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    server, url = psutil.Process(process.pid), f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not (listening("127.0.0.1", port) and len(workers_of(server)) == 2):
            assert time.monotonic() < deadline and process.poll() is None, (tmp_path / "server.log").read_text()
            time.sleep(0.2)
        first, second = workers_of(server)
        expected = [msgspec.to_builtins(r) for r in Scorer.from_folder(bundle).score_records(transactions[:12])]
        headers = {"X-API-Key": KEY}
        for worker, part in ((first, range(0, 7)), (second, range(7, 12))):
            with only(worker, server):
                until_ready(url)
                for i in part:
                    answer = fresh("POST", f"{url}/v1/predict", json=transactions[i], headers=headers)
                    assert answer.status_code == 200 and answer.json() == expected[i]
        for worker in (first, second):  # each worker answers with both workers' counts
            with only(worker, server):
                assert counted(url) == 12
        assert not (shared / "counter_1.db").exists()

        first.kill()  # the supervisor replaces it; what it counted stays in the total
        deadline = time.monotonic() + 60
        while {w.pid for w in workers_of(server)} in ({second.pid}, {first.pid, second.pid}):
            assert time.monotonic() < deadline, "the killed worker was not replaced"
            time.sleep(0.2)
        (replacement,) = (w for w in workers_of(server) if w.pid != second.pid)
        with only(replacement, server):
            until_ready(url)
            assert fresh("POST", f"{url}/v1/predict", json=transactions[0], headers=headers).json() == expected[0]
            assert counted(url) == 13
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
    assert process.returncode == 0
    assert "with 2 worker processes" in (tmp_path / "server.log").read_text()
