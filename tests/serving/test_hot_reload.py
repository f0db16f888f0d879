"""The FastAPI twin served from a bundle store, as ``python -m lib serve --model data/bundles`` runs it:
the challenger scored in shadow (logged, never returned), and the champion swapped while clients
keep sending requests, with not one failed request and every answer naming the version that made it."""

import json
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest

from lib.config import PROJECT_ROOT
from lib.local.daemons import free_port
from lib.serving import bundles
from tests.serving.conftest import KEY

pytestmark = pytest.mark.slow


def test_shadow_and_a_swap_under_load_fail_no_request(model_versions, transactions, tmp_path):
    store = bundles.BundleStore(tmp_path / "bundles")
    for version, folder in model_versions.items():
        store.publish(folder, version)
    store.set_aliases(champion=1, challenger=1)
    port, log = free_port(), tmp_path / "server.log"
    with log.open("w") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "lib", "serve", "--port", str(port), "--model", str(store.folder),
             "--reload-interval", "0.2"],
            cwd=PROJECT_ROOT, env={**os.environ, "FRAUD_API_KEYS": KEY}, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    answers: list[list[tuple[int, str]]] = [[] for _ in range(4)]
    stop = threading.Event()

    def load(seen: list[tuple[int, str]]) -> None:
        with httpx.Client(base_url=base, headers={"X-API-Key": KEY}, timeout=30) as client:
            for i in range(100_000):
                if stop.is_set():
                    return
                if i % 10 == 0:
                    response = client.post("/v1/predict/batch", json={"transactions": transactions[:100]})
                    versions = (
                        {p["model_version"] for p in response.json()["predictions"]} if response.is_success else {"-"}
                    )
                    assert len(versions) == 1, versions  # one request, one model
                    seen.append((response.status_code, versions.pop()))
                else:
                    response = client.post("/v1/predict", json=transactions[i % len(transactions)])
                    seen.append((response.status_code, response.json().get("model_version", "-")))

    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        assert httpx.get(f"{base}/readyz").json() == {"status": "ready", "model_version": "1"}
        clients = [threading.Thread(target=load, args=(seen,)) for seen in answers]
        for thread in clients:
            thread.start()
        time.sleep(1.5)
        store.set_aliases(challenger=2)  # retraining registered v2: it joins in shadow
        time.sleep(1.5)
        assert httpx.get(f"{base}/readyz").json() == {"status": "ready", "model_version": "1", "shadow_version": "2"}
        store.set_aliases(champion=2)  # promoted on live evidence
        time.sleep(1.5)
        stop.set()
        for thread in clients:
            thread.join(timeout=60)
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=30)
    for seen in answers:
        assert seen and {status for status, _ in seen} == {200}, "a request failed during the swap"
        versions = [version for _, version in seen]
        assert versions[0] == "1" and versions[-1] == "2"
        assert "1" not in versions[versions.index("2") :]  # once a client got v2, never v1 again
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    events = [line["event"] for line in lines]
    assert events.count("model_swapped") == 2, events[:20]
    shadows = [line for line in lines if line["event"] == "shadow"]
    assert shadows and all(s["model_version"] == "2" and s["champion_version"] == "1" for s in shadows)
    assert {r["transaction_id"] for s in shadows for r in s["results"]} <= {t["transaction_id"] for t in transactions}
