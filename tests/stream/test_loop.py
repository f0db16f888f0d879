"""The loop on a real Kafka broker and a real MLflow registry: delayed labels joined to the scorer's
results, a challenger in shadow, promotion on live evidence, and a champion swapped in between
micro-batches while transactions flow, with no transaction lost."""

import collections
import json
import os
import subprocess
import sys
import time
import urllib.request

import orjson
import pyarrow.parquet as pq
import pytest
from mlflow.tracking import MlflowClient

from lib.config import PROJECT_ROOT
from lib.data.acquire import read_window
from lib.model import registry
from lib.serving import bundles
from lib.stream import kafka as stream
from tests.integration.conftest import free_port, wait_for
from tests.model.test_registry import new_version
from tests.stream.conftest import replay_in_background, start_scorer

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def live(port: int) -> dict:
    return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/live", timeout=10).read())


def results(bootstrap: str, topic: str, expect: int) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = collections.defaultdict(list)
    for message in stream.read_topic(bootstrap, topic, expect=expect, timeout=120, idle=5):
        result = orjson.loads(message.value())
        found[result["transaction_id"]].append({**result, "appended_ms": message.timestamp()[1]})
    return found


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lib", *args], cwd=PROJECT_ROOT, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def test_shadow_live_evidence_promotion_and_a_hot_swap(
    kafka, topics, raw_table, model_versions, tmp_path, tracking_uri
):
    pq.write_table(raw_table, tmp_path / "raw.parquet")
    table = read_window(tmp_path / "raw.parquet", 1, 743, limit=90_000)
    thirds = [table.slice(i * 30_000, 30_000) for i in range(3)]
    client, name = MlflowClient(tracking_uri), f"loop-{tmp_path.name}"
    env = {"MLFLOW_TRACKING_URI": tracking_uri, "FRAUD_REGISTERED_MODEL": name}
    registry.gate(client, name, new_version(client, name, tmp_path), 0.5, None)  # v1: champion
    store = bundles.BundleStore(tmp_path / "bundles")
    store.publish(model_versions["1"], 1)
    store.set_aliases(champion=1, challenger=1)
    port = free_port()
    scorer = start_scorer(
        kafka.bootstrap, topics, store.folder, "--metrics-port", str(port), "--reload-interval", "0.5"
    )
    try:
        # 1. v1 alone; labels arrive 3 steps after their transactions, 10 % never
        labels = stream.DelayedLabels.of(thirds[0], topics.labels, delay_steps=3, missing_share=0.1, seed=1)
        stream.replay(kafka.bootstrap, topics.transactions, stream.encode_transactions(thirds[0]), labels=labels)
        wait_for(lambda: live(port)["labels"]["joined"] >= 0.85 * 30_000, "labels joined", timeout=90, process=scorer)
        # 2. retraining registered v2 as challenger (the live policy): the scorer picks it up, in shadow
        registry.gate(client, name, new_version(client, name, tmp_path), 0.9, 0.5, promotion="live")
        store.publish(model_versions["2"], 2)
        store.set_aliases(challenger=2)
        wait_for(lambda: live(port)["roles"] == {"1": "champion", "2": "challenger"}, "shadow", timeout=30)
        labels = stream.DelayedLabels.of(thirds[1], topics.labels, delay_steps=3, missing_share=0.1, seed=2)
        stream.replay(kafka.bootstrap, topics.transactions, stream.encode_transactions(thirds[1]), labels=labels)
        wait_for(lambda: len(live(port)["window"]["labels"]) >= 15_000, "shadowed labels", timeout=90)
        shown = cli("stream", "live", "--scorer", f"127.0.0.1:{port}", env=env)
        assert shown.returncode == 0 and "v1 (champion)" in shown.stdout and "v2 (challenger)" in shown.stdout
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        assert 'fraud_live_auprc{model_version="2",role="challenger"}' in metrics
        # 3. too few frauds: no decision; enough: v2 wins on the live window
        undecided = cli("registry", "promote", "--evidence", "live", "--scorer", f"127.0.0.1:{port}",
                        "--min-frauds", "100000", "--store", str(store.folder), env=env)  # fmt: skip
        assert undecided.returncode == 0 and "not promoted: no decision" in undecided.stdout, undecided.stderr
        # 4. promote while transactions flow: the swap happens between micro-batches, nothing is lost
        flowing = replay_in_background(
            kafka.bootstrap, topics.transactions, stream.encode_transactions(thirds[2]), 1000
        )
        time.sleep(1)  # 30 s of traffic: the promotion and the swap happen inside it
        promoted = cli("registry", "promote", "--evidence", "live", "--scorer", f"127.0.0.1:{port}",
                       "--min-frauds", "10", "--store", str(store.folder), env=env)  # fmt: skip
        assert promoted.returncode == 0 and promoted.stdout.startswith("promoted: live AUPRC"), promoted.stdout
        flowing.result(timeout=120)
        wait_for(lambda: live(port)["roles"] == {"2": "champion"}, "the swap", timeout=30)
    finally:
        scorer.terminate()
        output = scorer.communicate(timeout=60)[0]
    served_lines = [line for line in output.splitlines() if line.startswith("serving ")]
    # (its first line, "serving paysim-fraud-detector v1", came before it joined the group)
    assert served_lines == ["serving paysim-fraud-detector v1 with v2 in shadow", "serving paysim-fraud-detector v2"]
    assert store.aliases() == {"champion": "2", "challenger": "2"}
    assert client.get_model_version(name, "2").tags["live_decision"] == "promoted"

    ids = [t for third in thirds for t in third.column("transaction_id").to_pylist()]
    scored = results(kafka.bootstrap, topics.scores, len(ids))
    assert set(scored) == set(ids), f"{len(set(ids) - set(scored))} transactions without a result"
    flowing = [scored[t][-1] for t in thirds[2].column("transaction_id").to_pylist()]
    by_version = {v: [r["appended_ms"] for r in flowing if r["model_version"] == v] for v in ("1", "2")}
    assert by_version["1"] and by_version["2"], "the swap happened before or after the traffic"
    assert max(by_version["1"]) <= min(by_version["2"])  # one switch, between micro-batches
    shadowed = results(kafka.bootstrap, topics.shadow, 0)  # the second third and the third's first part
    assert set(thirds[1].column("transaction_id").to_pylist()) <= set(shadowed)
    assert {r["model_version"] for rs in shadowed.values() for r in rs} == {"2"}
    alerts = {orjson.loads(m.value())["transaction_id"] for m in stream.read_topic(kafka.bootstrap, topics.alerts)}
    assert alerts and alerts <= set(ids)  # alerts come from the champion alone
