"""Both apps over the session's test bundle, with API keys from settings (never from the repo)."""

import importlib.util
import time

import pyarrow.csv as pacsv
import pytest
from fastapi.testclient import TestClient

from lib.config import PROJECT_ROOT, Settings
from lib.data.simulate import simulate_table
from lib.serving.api import create_app
from tests.conftest import REAL_SAMPLE

KEY = "test-key-0f3a"
HEADERS = {"X-API-Key": KEY}


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
