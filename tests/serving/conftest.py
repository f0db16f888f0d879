"""Both apps over the session's test bundle, with API keys from settings (never from the repo)."""

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from fastapi.testclient import TestClient

from lib import arrow_batch
from lib.config import PROJECT_ROOT, Settings
from lib.data.simulate import simulate_table
from lib.serving.api import create_app
from tests.conftest import REAL_SAMPLE

KEY = "test-key-0f3a"
HEADERS = {"X-API-Key": KEY}
ARROW_HEADERS = {"Content-Type": arrow_batch.ARROW_STREAM, **HEADERS}


def arrow_stream(rows: list[dict]) -> bytes:
    """Transactions as the Arrow IPC body of the batch route."""
    return arrow_batch.arrow_stream(pa.Table.from_pylist(rows))


def read_arrow(body: bytes) -> list[dict]:
    return pa.ipc.open_stream(body).read_all().to_pylist()


@pytest.fixture(scope="session")
def transactions() -> list[dict]:
    """1,000 raw transactions: 600 real PaySim rows (frauds included) and 400 simulated ones, with ids."""
    real = pacsv.read_csv(REAL_SAMPLE).to_pylist()
    frauds = [r for r in real if r["isFraud"]][:60]
    rows = frauds + [r for r in real if not r["isFraud"]][:540] + simulate_table(400, seed=3).to_pylist()
    return [{**r, "transaction_id": f"tx-{i:04d}"} for i, r in enumerate(rows)]


def wait_ready(client, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get("/readyz")
        if response.status_code == 200:
            return response
        time.sleep(0.05)
    raise TimeoutError(client.get("/readyz").json())


@pytest.fixture(scope="session")
def api(bundle):
    settings = Settings(serving_model=str(bundle), api_keys=f"other-key,{KEY}")
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        yield client


def load_chalice_app(name: str, bundle, mp: pytest.MonkeyPatch, **env: str):
    """chalice_app/app.py, imported as Lambda would import it, configured through its environment."""
    for key, value in {"FRAUD_API_KEYS": f"other-key,{KEY}", "FRAUD_SERVING_MODEL": str(bundle), **env}.items():
        mp.setenv(key, value)
    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "chalice_app" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def chalice_module(bundle):
    mp = pytest.MonkeyPatch()
    yield load_chalice_app("chalice_app_under_test", bundle, mp)
    mp.undo()


@pytest.fixture
def chalice(chalice_module):
    from chalice.test import Client

    with Client(chalice_module.app) as client:
        yield client


def require_root() -> None:
    """The Lambda package is built with debootstrap and chroot: root, as in CI."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the Lambda package tests need root (debootstrap, chroot)")
        pytest.skip("the Lambda package tests need root (debootstrap, chroot)")


@pytest.fixture(scope="session")
def lambda_packages(bundle, tmp_path_factory) -> dict[str, Path]:
    """`chalice package` of the dev and prod stages under the Lambda Python (Debian trixie's 3.13), with
    the session's test bundle; {stage: folder with deployment.zip and sam.json}."""
    require_root()
    out = tmp_path_factory.mktemp("lambda")
    for stage in ("dev", "prod"):  # the documented command
        done = subprocess.run(
            [sys.executable, "-m", "lib", "lambda-package", "--stage", stage, "--bundle", str(bundle), "--out", str(out / stage)],
            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=3000,
        )  # fmt: skip
        assert done.returncode == 0 and "MB unzipped" in done.stdout, done.stdout + done.stderr
    return {stage: out / stage for stage in ("dev", "prod")}


def template_environment(package: Path, function: str = "APIHandler") -> dict[str, str]:
    """The environment variables the SAM template gives a function of the package."""
    template = json.loads((package / "sam.json").read_text())
    return dict(template["Resources"][function]["Properties"].get("Environment", {}).get("Variables", {}))


@pytest.fixture(scope="session")
def lambda_dev(lambda_packages, tmp_path_factory):
    """The dev package unzipped and run by the Lambda Runtime Interface Emulator, with its template's
    environment and local keys instead of the SSM parameter (there is no AWS here)."""
    from lib.local import lambda_package

    unpacked = lambda_package.unpack(lambda_packages["dev"] / "deployment.zip", tmp_path_factory.mktemp("task"))
    env = {
        **template_environment(lambda_packages["dev"]),
        "FRAUD_API_KEYS_SSM_PARAMETER": "",
        "FRAUD_API_KEYS": f"other-key,{KEY}",
    }
    with lambda_package.LambdaEmulator(unpacked, env) as emulator:
        yield emulator
