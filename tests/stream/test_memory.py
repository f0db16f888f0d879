"""Per-account memory served by the stream (issue 34): a real broker (4 partitions), a real Redis, two scorer
processes in one group. For every transaction of the window the entity vector the stream served equals the one
02's rule gives offline (``lib.data.entity``, itself held equal to Spark's and to a brute-force reference),
from a store warmed by ``backfill``, and still with a partition that lags behind the others."""

import time
import urllib.request
import zlib

import numpy as np
import orjson
import pyarrow as pa
import pytest
from confluent_kafka import Producer

from lib.data.acquire import read_window
from lib.data.entity import entity_columns
from lib.features import ENTITY_FEATURES
from lib.local.daemons import free_port
from lib.serving.online import OnlineStore
from lib.stream import kafka as stream
from lib.stream import process as scorer_process
from lib.stream.kafka import client_config
from lib.stream.watermark import tick_headers
from tests.stream.conftest import start_scorer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FIRST, LAST = 361, 408  # the window replayed: day 16 (8,527 rows of the test data) and the quiet day after
DELAY = 2
PARTITIONS = 4


@pytest.fixture(scope="module")
def month(raw_table, tmp_path_factory):
    """The test data with ids, in step order, and its entity features by 02's rule, by transaction id."""
    import pyarrow.parquet as pq

    path = tmp_path_factory.mktemp("memory") / "transactions.parquet"
    pq.write_table(raw_table, path)
    table = read_window(path, 1, LAST)
    table = table.replace_schema_metadata({"path": str(path)})
    columns = {
        c: table.column(c).to_numpy(zero_copy_only=False) for c in ("step", "amount", "nameOrig", "nameDest", "isFraud")
    }
    offline = entity_columns(columns, DELAY)
    ids = table.column("transaction_id").to_pylist()
    vectors = {tid: [offline[f.name][i].item() for f in ENTITY_FEATURES] for i, tid in enumerate(ids)}
    return table, vectors


def publish(bootstrap: str, topics: stream.Topics, table, lagging: int | None = None, lag_from: int = 0) -> None:
    """What ``stream replay --ticks --label-delay-steps 2`` sends, to partitions of the test's choosing; the
    transactions partition ``lagging`` holds back everything from step ``lag_from`` on until the rest is sent."""
    producer = Producer(client_config(bootstrap, **{"linger.ms": 5}))
    late: list[tuple] = []
    labels = stream.DelayedLabels.of(table, topics.labels, DELAY)
    messages, steps = stream.encode_transactions(table), table.column("step").to_numpy()

    def send(topic: str, partition: int, key, value: bytes, step: int, headers=None) -> None:
        message = (topic, value, key, partition, headers)
        if topic == topics.transactions and partition == lagging and step >= lag_from:
            late.append(message)
        else:
            producer.produce(topic, value, key, partition=partition, headers=headers)

    pending, row = 0, 0
    for step in np.unique(steps).tolist():
        while pending < len(labels.messages) and labels.due[pending] <= step:
            key, value = labels.messages[pending]
            send(topics.labels, zlib.crc32(key) % PARTITIONS, key, value, step)
            pending += 1
        for topic in (topics.labels, topics.transactions):
            for partition in range(PARTITIONS):
                send(topic, partition, None, b"", step, tick_headers(step))
        while row < len(messages) and steps[row] == step:
            key, value = messages[row]
            send(topics.transactions, zlib.crc32(key) % PARTITIONS, key, value, step)
            row += 1
        producer.poll(0)
    producer.flush(60)
    if late:
        time.sleep(3)  # the other partitions are read meanwhile: their later steps must wait
        for topic, value, key, partition, headers in late:
            producer.produce(topic, value, key, partition=partition, headers=headers)
    producer.flush(60)


def served(store: OnlineStore, expect: int, timeout: float = 180) -> dict[str, list[float]]:
    """The vectors the scorers logged (every one: --log-features 1), once ``expect`` are there or at ``timeout``."""
    names = [f.name for f in ENTITY_FEATURES]
    deadline = time.monotonic() + timeout
    while len(logged := store.served_log()) < expect and time.monotonic() < deadline:
        time.sleep(0.5)
    return {x["transaction_id"]: [x["features"][n] for n in names] for x in logged}


@pytest.mark.parametrize("lagging", [None, 1], ids=["in-step", "a-partition-lags"])
def test_the_stream_serves_the_offline_vectors(kafka, topics, redis_server, month, bundle, lagging):
    table, offline = month
    prefix = f"m{lagging}:"
    steps = table.column("step").to_numpy()
    history, window = table.filter(pa.array(steps < FIRST)), table.filter(pa.array(steps >= FIRST))
    store = OnlineStore(redis_server.url, DELAY, prefix=prefix)
    columns = {
        c: history.column(c).to_pylist()
        for c in ("step", "amount", "nameOrig", "nameDest", "transaction_id", "isFraud")
    }
    assert store.backfill(columns) > 0  # frauds of the history counted: dest_frauds_168 starts warm
    options = ("--group", "memory", "--store", redis_server.url, "--store-prefix", prefix, "--log-features", "1",
               "--label-delay-steps", str(DELAY), "--no-shadow")  # fmt: skip
    ports = [free_port() for _ in range(2)]
    scorers = [start_scorer(kafka.bootstrap, topics, bundle, *options, "--metrics-port", str(p)) for p in ports]
    try:
        time.sleep(4)  # both members join before the data arrives
        publish(kafka.bootstrap, topics, window, lagging, lag_from=FIRST + 6)
        got = served(store, window.num_rows)
        for port in ports:  # all released in the end, none late (each partition in step order)
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            assert "fraud_stream_held_messages 0.0" in metrics, metrics
            assert "fraud_stream_late_transactions_total 0.0" in metrics
    finally:
        outputs = [scorer_process.stop_scorer_process(p) for p in scorers]
    ids = window.column("transaction_id").to_pylist()
    assert set(got) == set(ids), (len(got), len(ids), outputs)
    wrong = [(tid, got[tid], offline[tid]) for tid in ids if got[tid] != offline[tid]]
    assert not wrong, f"{len(wrong)} of {len(ids)} served vectors differ from 02's, e.g. {wrong[:3]}"
    assert any(
        v[ENTITY_FEATURES.index(next(f for f in ENTITY_FEATURES if f.aggregation == "frauds"))] for v in got.values()
    )
    shares = [int(out.split("stopped: ")[1].split(" scored")[0].replace(",", "")) for out in outputs]
    assert min(shares) > 0, outputs  # both members scored


def feed_api(post, store: OnlineStore, window, singles_from: int) -> None:
    """The window to an API in step order: a batch per step before step ``singles_from``, then one request per
    transaction; after each request, the labels of its frauds (early: the reader's rule holds them back)."""
    rows = window.to_pylist()
    by_step: dict[int, list[dict]] = {}
    for row in rows:
        by_step.setdefault(row["step"], []).append(row)
    requests = [("/v1/predict/batch", batch) for step, batch in by_step.items() if step < singles_from]
    requests += [("/v1/predict", [row]) for row in rows if row["step"] >= singles_from]
    for path, sent in requests:
        body = {"transactions": [strip(r) for r in sent]} if path.endswith("batch") else strip(sent[0])
        status, text = post(path, body)
        assert status == 200, text
        store.label([(r["transaction_id"], r["step"]) for r in sent if r["isFraud"]])


def strip(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in ("isFraud", "isFlaggedFraud")}


@pytest.mark.parametrize("app", ["fastapi", "chalice"])
def test_the_apis_serve_the_offline_vectors(redis_server, month, bundle, app, monkeypatch):
    """An API that records what it scores (FRAUD_STORE_RECORD: no stream) serves 02's vectors, fed in step order."""
    from fastapi.testclient import TestClient

    from lib.config import Settings
    from lib.serving.api import create_app
    from tests.serving.conftest import KEY, load_chalice_app, wait_ready

    table, offline = month
    prefix = f"api-{app}:"
    steps = table.column("step").to_numpy()
    history, window = table.filter(pa.array(steps < FIRST)), table.filter(pa.array(steps >= FIRST))
    store = OnlineStore(redis_server.url, DELAY, prefix=prefix)
    names = ("step", "amount", "nameOrig", "nameDest", "transaction_id", "isFraud")
    store.backfill({c: history.column(c).to_pylist() for c in names})
    env = {"FRAUD_REDIS_URL": redis_server.url, "FRAUD_STORE_RECORD": "true", "FRAUD_STORE_LOG_SHARE": "1",
           "FRAUD_STORE_PREFIX": prefix, "FRAUD_STORE_LABEL_DELAY": str(DELAY)}  # fmt: skip
    if app == "fastapi":
        settings = Settings(serving_model=str(bundle), api_keys=KEY, **{k[6:].lower(): v for k, v in env.items()})
        with TestClient(create_app(settings)) as client:
            wait_ready(client)

            def post(path, body):
                response = client.post(path, json=body, headers={"X-API-Key": KEY})
                return response.status_code, response.text[:300]

            feed_api(post, store, window, singles_from=LAST - 20)
    else:
        from chalice.test import Client

        module = load_chalice_app("chalice_app_with_store", bundle, monkeypatch, **env)
        with Client(module.app) as client:

            def post(path, body):
                headers = {"x-api-key": KEY, "content-type": "application/json"}
                response = client.http.post(path, body=orjson.dumps(body), headers=headers)
                return response.status_code, response.body[:300]

            feed_api(post, store, window, singles_from=LAST - 20)
    got = served(store, window.num_rows, timeout=5)
    ids = window.column("transaction_id").to_pylist()
    assert set(got) == set(ids)
    wrong = [(tid, got[tid], offline[tid]) for tid in ids if got[tid] != offline[tid]]
    assert not wrong, f"{len(wrong)} of {len(ids)} served vectors differ from 02's, e.g. {wrong[:3]}"


def test_the_documented_recipe(kafka, topics, month, bundle, tmp_path):
    """docs/streaming.md's commands, as a user runs them: redis-local, backfill, score --store, replay --ticks."""
    import os
    import subprocess
    import sys

    from lib.config import PROJECT_ROOT

    table, offline = month
    raw = table.schema.metadata[b"path"].decode()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("FRAUD_REDIS_URL", None)

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "lib", *args], cwd=PROJECT_ROOT, env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    url = cli("redis-local", "start").split("FRAUD_REDIS_URL=")[1].split()[0]
    scorer = None
    try:
        backfilled = cli("store", "backfill", "--raw", raw, "--last-step", str(FIRST - 1))
        assert f"transactions of steps 1..{FIRST - 1}" in backfilled and f"from step {FIRST}" in backfilled
        scorer = scorer_process.start_scorer_process(
            kafka.bootstrap,
            topics,
            bundle,
            "--store",
            "--log-features",
            "1",
            env={"XDG_CACHE_HOME": env["XDG_CACHE_HOME"]},
        )
        replayed = cli("stream", "replay", "--bootstrap", kafka.bootstrap, "--topic-prefix", topics.prefix, "--raw", raw,
                       "--first-step", str(FIRST), "--last-step", str(LAST), "--ticks", "--label-delay-steps", "2")  # fmt: skip
        window = int(replayed.split("replayed ")[1].split()[0].replace(",", ""))
        got = served(OnlineStore(url, DELAY), window)
        assert len(got) == window and all(got[tid] == offline[tid] for tid in got)
        stats = cli("store", "stats")
        assert "destinations: " in stats and "used_memory_bytes: " in stats
    finally:
        if scorer is not None:
            scorer_process.stop_scorer_process(scorer)
        cli("redis-local", "stop")
