"""Monitoring proven against the real thing: promtool on the rules, and every Grafana panel's query
evaluated by a real Prometheus that scrapes the API, the stream scorer and a Pushgateway on 127.0.0.1."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import httpx
import orjson
import pyarrow.parquet as pq
import pytest
import yaml

from lib.config import PROJECT_ROOT
from lib.data.simulate import simulate_table
from lib.local.monitoring import LocalMonitoring
from lib.monitoring import drift
from lib.serving import scoring
from lib.stream import kafka as stream
from lib.stream import process as scorer_process
from tests.integration.conftest import free_port, wait_for

MONITORING = PROJECT_ROOT / "monitoring"
PROMETHEUS = MONITORING / "prometheus"
DASHBOARDS = sorted((MONITORING / "grafana" / "dashboards").glob("*.json"))
KEY = "monitoring-key"


def need(tool: str) -> str:
    found = shutil.which(tool)
    if not found:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is missing; .ci/run installs it (apt-get install prometheus prometheus-pushgateway)")
        pytest.skip(f"{tool} not installed (apt-get install prometheus prometheus-pushgateway)")
    return found


def panel_queries() -> list[tuple[str, str]]:
    return [
        (f"{path.stem}: {panel['title']}", target["expr"])
        for path in DASHBOARDS
        for panel in json.loads(path.read_text())["panels"]
        for target in panel["targets"]
    ]


def test_promtool_checks_the_config_and_every_alert_has_tests():
    promtool = need("promtool")
    checked = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS / "prometheus.yml")], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", "fraud_test.yml"], cwd=PROMETHEUS / "tests", capture_output=True, text=True
    )
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr
    alerts = {r["alert"] for g in yaml.safe_load((PROMETHEUS / "rules" / "fraud.yml").read_text())["groups"]
              for r in g["rules"] if "alert" in r}  # fmt: skip
    cases = [t for t in yaml.safe_load((PROMETHEUS / "tests" / "fraud_test.yml").read_text())["tests"]]
    for alert in alerts:
        outcomes = [bool(c["exp_alerts"]) for t in cases for c in t["alert_rule_test"] if c["alertname"] == alert]
        assert True in outcomes and False in outcomes, f"{alert} needs a test that fires it and one that does not"


def test_dashboards_are_importable_editable_and_fit_the_provisioning():
    """Provisioned (the datasource variable falls back to the default Prometheus) or imported by hand
    (Grafana's import dialog asks for DS_PROMETHEUS and substitutes it): no hard-coded datasource uid."""
    datasource = yaml.safe_load((MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["type"] == "prometheus" and datasource["datasources"][0]["isDefault"]
    assert DASHBOARDS
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["editable"] is True
        assert [(i["name"], i["type"], i["pluginId"]) for i in dashboard["__inputs"]] == [
            ("DS_PROMETHEUS", "datasource", "prometheus")
        ]
        variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "datasource")
        assert variable["type"] == "datasource" and variable["query"] == "prometheus"
        assert variable["current"]["value"] == "${DS_PROMETHEUS}"
        used = {p["type"] for p in dashboard["panels"]}
        assert used <= {r["id"] for r in dashboard["__requires"] if r["type"] == "panel"}
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
        for panel in dashboard["panels"]:
            expected = {"type": "prometheus", "uid": "${datasource}"}
            assert panel["datasource"] == expected and all(t["datasource"] == expected for t in panel["targets"])
    compose = yaml.safe_load((MONITORING / "docker-compose.yml").read_text())
    assert {"kafka", "api", "scorer", "prometheus", "pushgateway", "grafana"} <= set(compose["services"])
    for name, service in compose["services"].items():
        image = service.get("image", "")
        assert (":" in image and not image.endswith(":latest")) or "build" in service, f"{name}: pin the image tag"
        for volume in service.get("volumes", []):
            assert (MONITORING / volume.split(":")[0]).exists(), f"{name}: {volume} mounts a missing path"


class Load:
    """Bounded background load: predictions (some refused) on the API, transactions (some malformed) on Kafka."""

    def __init__(self, api_url: str, bootstrap: str, topics: stream.Topics) -> None:
        self.stop = threading.Event()
        rows = sorted(simulate_table(3000, seed=9).to_pylist(), key=lambda r: -r["isFraud"])  # frauds in every round
        self.transactions = [{k: v for k, v in r.items() if k not in ("isFraud", "isFlaggedFraud")} for r in rows]
        self.labels = [r["isFraud"] for r in rows]
        self.api_url, self.bootstrap, self.topics = api_url, bootstrap, topics
        self.threads = [threading.Thread(target=f, daemon=True) for f in (self._api, self._stream)]

    def _api(self) -> None:
        with httpx.Client(base_url=self.api_url, headers={"X-API-Key": KEY}) as client:
            for i in range(100_000):
                if self.stop.is_set():
                    return
                client.post("/v1/predict", json=self.transactions[i % 3000])
                if i % 20 == 0:
                    client.post("/v1/predict/batch", json={"transactions": self.transactions[:200]})
                    client.post("/v1/predict", json={"step": 1})  # 422
                time.sleep(0.005)

    def _stream(self) -> None:
        for round_ in range(200):
            if self.stop.is_set():
                return
            batch = [(r["nameOrig"].encode(), orjson.dumps({**r, "transaction_id": f"m{round_}-{i}"}))
                     for i, r in enumerate(self.transactions[:500])]  # fmt: skip
            batch.append((b"bad", b"{not json"))
            stream.replay(self.bootstrap, self.topics.transactions, batch, rate=2000)
            labels = [(r["nameOrig"].encode(), orjson.dumps({"transaction_id": f"m{round_}-{i}", "isFraud": label}))
                      for i, (r, label) in enumerate(zip(self.transactions[:500], self.labels, strict=False))]  # fmt: skip
            stream.replay(self.bootstrap, self.topics.labels, labels)  # the delayed labels of that round

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


def query(prometheus: str, expr: str) -> list:
    url = f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    body = json.loads(urllib.request.urlopen(url, timeout=10).read())
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.mark.integration
@pytest.mark.slow
def test_every_panel_query_returns_data_from_a_real_prometheus(tmp_path, kafka, bundle, redis_server):
    """`monitoring-local`'s Prometheus and Pushgateway (the project's config and rules, scraping every
    second) over the API (reading the online store) and the stream scorer under load: every panel's query
    returns data."""
    need("prometheus"), need("prometheus-pushgateway")
    api_port, metrics_port = free_port(), free_port()
    processes: list[subprocess.Popen] = []
    api = subprocess.Popen(
        [sys.executable, "-m", "lib", "serve", "--port", str(api_port), "--model", str(bundle)],
        cwd=PROJECT_ROOT, env={**os.environ, "FRAUD_API_KEYS": KEY, "FRAUD_REDIS_URL": redis_server.url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    processes.append(api)
    topics = stream.Topics("monitoring.")
    stream.ensure_topics(kafka.bootstrap, topics)
    processes.append(
        scorer_process.start_scorer_process(
            kafka.bootstrap, topics, bundle, "--metrics-port", str(metrics_port), "--batch-size", "500"
        )
    )
    monitoring = LocalMonitoring(
        tmp_path / "monitoring", f"127.0.0.1:{api_port}", f"127.0.0.1:{metrics_port}", scrape_interval="1s"
    )
    try:
        monitoring.start()
        prometheus = monitoring.prometheus_url
        wait_for(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{api_port}/readyz").status == 200, "API", process=api
        )

        # 07_drift_report's push, from a real (small) drift report
        raw = tmp_path / "raw.parquet"
        pq.write_table(simulate_table(20_000, seed=4), raw)
        reference = drift.window_frame(raw, (1, 250), "full", 0, 0)
        current = drift.window_frame(raw, (401, 743), "full", 0, 0)
        _, summary = drift.drift_report(reference, current, "full", 0.1, 0.1)
        scorer_core = scoring.Scorer.from_folder(bundle)
        _, before, after = drift.quality_report(
            drift.add_predictions(reference, scorer_core), drift.add_predictions(current, scorer_core)
        )
        drift.push(
            monitoring.pushgateway, summary, before, after, "3", drift.attribution(scorer_core, reference, current)
        )

        with Load(f"http://127.0.0.1:{api_port}", kafka.bootstrap, topics):
            wait_for(lambda: len(query(prometheus, "up == 1")) == 3, "all three targets scraped", timeout=60)
            assert monitoring.targets() == {"fraud-api": "up", "fraud-stream-scorer": "up", "pushgateway": "up"}
            time.sleep(8)  # a few scrapes with traffic, so rates have two points
            empty = []
            for title, expr in panel_queries():
                if not query(prometheus, expr.replace("$__rate_interval", "30s")):
                    empty.append(f"{title}: {expr}")
        assert not empty, "panels without data:\n" + "\n".join(empty)

        rules = json.loads(urllib.request.urlopen(f"{prometheus}/api/v1/rules").read())["data"]["groups"]
        unhealthy = [(r["name"], r.get("lastError")) for g in rules for r in g["rules"] if r["health"] != "ok"]
        written = yaml.safe_load((PROMETHEUS / "rules" / "fraud.yml").read_text())["groups"]
        assert not unhealthy and sum(len(g["rules"]) for g in rules) == sum(len(g["rules"]) for g in written), unhealthy
        reloads = {r["metric"]["source"]: r["value"][1] for r in query(prometheus, "fraud_model_reload_failing")}
        assert reloads == {"api": "0", "stream": "0"}, reloads  # FraudModelReloadFailing's series, from both
        assert query(prometheus, "fraud_drift_share")[0]["value"][1] == f"{summary.share:g}"
    finally:
        monitoring.stop()
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
