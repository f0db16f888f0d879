"""The online store's bounds and failures on a real Redis: buckets that left every window are dropped, keys
expire after the longest window plus the label delay, a label counts once, an unreachable store says where.
(Its values against the point-in-time reference: tests/data/test_entity.py.)"""

import time

import orjson
import pytest

from lib.features import ENTITY_FEATURES, SINCE_CAP
from lib.local.daemons import free_port
from lib.serving.online import OnlineStore, StoreUnavailable

pytestmark = pytest.mark.slow

NAMES = [f.name for f in ENTITY_FEATURES]


def rows(step: int, dest: str = "C9", orig: str = "C1", amount: float = 10.0, n: int = 1) -> dict:
    return {"step": [step] * n, "amount": [amount] * n, "nameOrig": [orig] * n, "nameDest": [dest] * n}


def test_an_account_keeps_only_the_buckets_its_windows_read(online_store):
    store = online_store
    for step in range(1, 400):
        store.record(rows(step, orig=f"C{step}"), [f"t{step}"])
    fields = store.client.hkeys(store.key("nameDest", "C9"))
    steps = sorted({int(f[1:].split(b":")[0]) for f in fields if f[:1] in b"nmys"})
    assert steps == list(range(399 - store.horizon["nameDest"], 400))  # 169 buckets, not 399
    values = dict(zip(NAMES, store.read(rows(400))[0], strict=True))
    assert values["dest_count_168"] == 168 and values["dest_steps_since_first"] == min(399, SINCE_CAP)


def test_keys_expire_after_the_longest_window_plus_the_label_delay(online_store):
    step_seconds = 0.0004  # a step lasts 0.4 ms: a destination's key lives (720 + 3) steps, about 0.29 s
    store = OnlineStore(online_store.url, label_delay=3, step_seconds=step_seconds, prefix=online_store.prefix)
    store.record(rows(5), ["t5"])
    dest, orig = store.key("nameDest", "C9"), store.key("nameOrig", "C1")
    assert store.ttl_steps == {"nameDest": SINCE_CAP + 3, "nameOrig": 24 + 3}
    assert 0 < store.client.pttl(dest) <= (SINCE_CAP + 3) * step_seconds * 1000
    assert 0 < store.client.pttl(orig) <= 27 * step_seconds * 1000 + 1
    time.sleep((SINCE_CAP + 3) * step_seconds + 0.05)
    assert not store.client.exists(dest, orig, f"{store.prefix}t:5")


def test_a_label_counts_once_and_only_for_a_known_transaction(online_store):
    store = online_store
    store.record(rows(10), ["fraud"])
    assert store.label([("fraud", 10), ("fraud", 10), ("unknown", 10), ("fraud", 11)]) == 1
    assert store.label([("fraud", 10)]) == 0  # delivered again: already counted
    values = dict(zip(NAMES, store.read(rows(13))[0], strict=True))
    assert values["dest_frauds_168"] == 1
    for name in ("!mule", "0mule", "1mule"):  # any account name the contract accepts: the index's marker is apart
        store.record(rows(10, dest=name), [f"fraud-{name}"])
        assert store.label([(f"fraud-{name}", 10)]) == 1 and store.label([(f"fraud-{name}", 10)]) == 0
        assert dict(zip(NAMES, store.read(rows(13, dest=name))[0], strict=True))["dest_frauds_168"] == 1


def test_the_applied_offsets_land_with_their_transactions(online_store):
    store = online_store
    store.record(rows(3), ["a"], applied={"fraud.transactions:0": 41})
    store.record(rows(4), ["b"], applied={"fraud.transactions:0": 42, "fraud.transactions:1": 7})
    assert store.applied() == {"fraud.transactions:0": 42, "fraud.transactions:1": 7}


def test_an_unreachable_store_names_itself():
    url = f"redis://127.0.0.1:{free_port()}/0"
    store = OnlineStore(url, label_delay=2, timeout=0.2)
    with pytest.raises(StoreUnavailable, match=f"online store at {url} failed while reading features"):
        store.read(rows(3))
    with pytest.raises(StoreUnavailable, match="recording transactions"):
        store.record(rows(3), ["x"])


def test_both_apps_answer_503_naming_the_store_when_it_is_down(bundle, transactions, monkeypatch):
    """The store-down policy (docs/streaming.md): a deployment that reads entity features does not score
    without them; 503 names the store, and the API counts the failure."""
    from chalice.test import Client
    from fastapi.testclient import TestClient

    from lib.config import Settings
    from lib.serving.api import create_app
    from tests.serving.conftest import KEY, load_chalice_app, wait_ready

    url = f"redis://127.0.0.1:{free_port()}/0"
    row = transactions[0]
    settings = Settings(serving_model=str(bundle), api_keys=KEY, redis_url=url)
    with TestClient(create_app(settings)) as client:
        wait_ready(client)
        for path, body in (("/v1/predict", row), ("/v1/predict/batch", {"transactions": transactions[:5]})):
            answer = client.post(path, json=body, headers={"X-API-Key": KEY})
            assert answer.status_code == 503 and f"online store at {url}" in answer.json()["detail"], answer.text
        metrics = client.get("/metrics").text
        assert 'fraud_store_errors_total{source="api"} 2.0' in metrics
    module = load_chalice_app("chalice_app_store_down", bundle, monkeypatch, FRAUD_REDIS_URL=url)
    with Client(module.app) as chalice:
        answer = chalice.http.post("/v1/predict", body=orjson.dumps(row),
                                   headers={"x-api-key": KEY, "content-type": "application/json"})  # fmt: skip
        assert answer.status_code == 503 and f"online store at {url}".encode() in answer.body


def test_the_apps_default_label_delay_is_the_features():
    from lib.config import Settings
    from lib.features import LABEL_DELAY_STEPS

    assert Settings().store_label_delay == LABEL_DELAY_STEPS
