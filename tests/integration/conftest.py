"""Real services for integration tests, started on 127.0.0.1 and stopped by the fixtures, plus the README's run command."""

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from lib.local.daemons import free_port
from tests.conftest import project_env


def wait_for(check, what: str, timeout: float = 120.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} before it was ready")
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{what} not ready after {timeout:.0f} s")


def run_pipeline(project: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python run_pipeline.py`` as a user runs it, in ``project``: a copy of the checkout (``copy_project``),
    whose runs/, data/, mlflow.db and DVC remote it writes."""
    command = [sys.executable, "run_pipeline.py", *args]
    done = subprocess.run(
        command, cwd=project, env=project_env(project, **(env or {})), capture_output=True, text=True, timeout=1800
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _postgres_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name)]
    if not found[-1]:
        message = "PostgreSQL not installed: apt-get install postgresql"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found[-1]


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL cluster (Debian package) on 127.0.0.1; its URL for database ``mlflow``."""
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses to run as root
    data = Path(tempfile.mkdtemp(prefix="fraud-pg-", dir="/tmp"))
    if as_postgres:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()
    run = dict(check=True, capture_output=True, text=True)
    subprocess.run(
        [*as_postgres, _postgres_bin("initdb"), "-D", str(data / "db"), "-U", "mlflow", "--auth=trust"], **run
    )
    options = f"-p {port} -k {data} -h 127.0.0.1"
    pg_ctl = [*as_postgres, _postgres_bin("pg_ctl"), "-D", str(data / "db")]
    subprocess.run([*pg_ctl, "-o", options, "-l", str(data / "log"), "-w", "start"], **run)
    try:
        subprocess.run([_postgres_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow"], **run)
        yield f"postgresql://mlflow@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_server(postgres_url, tmp_path_factory):
    """``mlflow server`` backed by PostgreSQL, serving artifacts from a local folder; yields its URL."""
    artifacts = tmp_path_factory.mktemp("mlflow-server-artifacts")
    port = free_port()
    log = open(artifacts.parent / "mlflow-server.log", "w")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", postgres_url,
         "--artifacts-destination", artifacts.as_uri(), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: urllib.request.urlopen(f"{url}/health", timeout=2).status == 200, "mlflow server", 180, server)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
