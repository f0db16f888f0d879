"""`chalice local --stage local` as chalice_app/README.md documents it: keys from the shell, the champion's
bundle from ../data/bundle, every route answering (in a copy of the checkout, with the test bundle there)."""

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from lib.local.daemons import free_port, listening
from tests.conftest import copy_project, project_env
from tests.serving.conftest import KEY

pytestmark = pytest.mark.slow


def call(url, method="GET", body=None, key=None):
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body else None, method=method)
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("X-API-Key", key)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_chalice_local_serves_the_documented_stage(bundle, transactions, tmp_path):
    project = copy_project(tmp_path / "project")
    shutil.copytree(bundle, project / "data" / "bundle")  # what `make run` exports
    port = free_port()
    chalice = [
        str(project_env(project)["PATH"].split(":")[0] + "/chalice"),
        "local",
        "--stage",
        "local",
        "--port",
        str(port),
    ]
    server = subprocess.Popen(
        chalice, cwd=project / "chalice_app", env=project_env(project, FRAUD_API_KEYS=KEY),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not listening("127.0.0.1", port) and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.2)
        base = f"http://127.0.0.1:{port}"
        assert call(f"{base}/healthz") == (200, {"status": "ok"})
        assert call(f"{base}/readyz") == (200, {"status": "ready", "model_version": "3"})
        status, one = call(f"{base}/v1/predict", "POST", transactions[0], KEY)
        assert status == 200 and one["transaction_id"] == "tx-0000" and one["model_version"] == "3"
        assert call(f"{base}/v1/predict", "POST", transactions[0]) == (401, {"detail": "missing or invalid API key"})
        status, model = call(f"{base}/v1/model", key=KEY)
        assert status == 200 and model["candidate"] == "xgboost_full"
        status, batch = call(f"{base}/v1/predict/batch", "POST", {"transactions": transactions[:10]}, KEY)
        assert status == 200 and len(batch["predictions"]) == 10
    finally:
        server.send_signal(signal.SIGINT)  # chalice local stops on Ctrl-C, not on SIGTERM
        try:
            output, _ = server.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            output, _ = server.communicate()
    assert "Traceback" not in output, output[-3000:]
