"""What an operator's mistakes and a long life do to the apps: a credential in a --model argument never
reaches an answer or a log; the workers' metric files do not grow with every worker ever started; a
shadow log line does not grow with the batch."""

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
from fastapi.testclient import TestClient

from lib.config import PROJECT_ROOT, Settings
from lib.errors import ParameterError
from lib.serving import bundles, scoring
from lib.serving.api import SHADOW_SAMPLE, create_app
from lib.serving.source import resolve_model
from tests.conftest import bundle_info
from tests.serving.conftest import HEADERS, KEY, load_chalice_app


@pytest.mark.parametrize(
    "spec", ["s3://alice:s3cr3t@bucket//models/x", "ftp://alice:s3cr3t@host//x", "file://alice:s3cr3t@h//x"]
)
def test_an_address_as_model_is_refused_without_its_password(spec, tmp_path):
    """A --model shaped like an address once became a path (its // collapsed), and the password showed in
    /readyz and the log."""
    with pytest.raises(ParameterError) as refused:
        resolve_model(spec, Settings())
    assert "s3cr3t" not in str(refused.value) and "an address the apps do not read" in str(refused.value)
    with TestClient(create_app(Settings(api_keys=KEY, serving_model=spec, serving_reload_interval=0.05))) as api:
        ready = api.get("/readyz")
    assert ready.status_code == 503 and "s3cr3t" not in ready.text and "alice" not in ready.text


def test_the_chalice_app_says_why_it_is_not_ready_without_addresses(monkeypatch, tmp_path):
    folder = tmp_path / "at-secret-host"
    app = load_chalice_app("chalice_not_ready", folder, monkeypatch, FRAUD_SERVING_MODEL="s3://bob:hunter2@b//m")
    from chalice.test import Client

    with Client(app.app) as client:
        answer = client.http.get("/readyz")
    assert answer.status_code == 503 and "hunter2" not in answer.body.decode() and "bob" not in answer.body.decode()


def test_dead_workers_metric_files_are_folded_and_their_counts_kept(tmp_path):
    """Each worker writes its own counter and histogram files; 2,000 dead workers once left 4,000 files (16 MB,
    0.3 s a scrape). A starting worker folds those of dead workers into one file per type."""
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(PROJECT_ROOT)!r})
        from prometheus_client import CollectorRegistry
        from lib.serving.metrics import ApiMetrics
        metrics = ApiMetrics(CollectorRegistry(), shared=True)
        metrics.observe_request("/v1/predict", "POST", "200", 0.001)
        metrics.reload_checked(None)
    """)
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(13):  # thirteen workers, one after the other (uvicorn restarting a dying one)
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)
    files = sorted(p.name for p in tmp_path.glob("*.db"))
    # the last worker's three files and one folded file per summed type: not three more per worker started
    assert len(files) == 5 and {"counter_dead.db", "histogram_dead.db"} <= set(files), files
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    labels = {"route": "/v1/predict", "method": "POST", "status": "200"}
    assert registry.get_sample_value("fraud_api_requests_total", labels) == 13  # every worker's request counted


def test_a_shadow_log_line_says_its_counts_and_a_sample(tmp_path, bundle, transactions, caplog):
    store = bundles.BundleStore(tmp_path / "bundles")
    booster = scoring.load_bundle(bundle)[1]
    for version in ("1", "2"):
        store.publish(
            scoring.export_bundle(tmp_path / f"b{version}", booster, bundle_info(model_version=version)), version
        )
    store.set_aliases(champion=1, challenger=2)
    with TestClient(create_app(Settings(api_keys=KEY, serving_model=str(store.folder)))) as api:
        while api.get("/readyz").status_code != 200:
            pass
        with caplog.at_level(logging.INFO, logger="fraud.api"):
            assert (
                api.post("/v1/predict/batch", json={"transactions": transactions}, headers=HEADERS).status_code == 200
            )
    (line,) = [r.__dict__["fields"] for r in caplog.records if r.getMessage() == "shadow"]
    assert line["transactions"] == len(transactions) and len(line["results"]) == SHADOW_SAMPLE
    assert len(json.dumps(line)) < 5_000  # 1,000 results once made a line of ~84 KB
