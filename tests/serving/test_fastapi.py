"""The FastAPI twin: routes, access, bad input (4xx, never 500), metrics, JSON logs, OpenAPI."""

import json
import logging

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Histogram

from lib import arrow_batch
from lib.config import Settings
from lib.contract import MAX_BATCH, MAX_BODY_BYTES
from lib.serving.api import JsonLogFormatter, create_app
from lib.serving.metrics import SCORE_BUCKETS, BatchHistogram
from tests.serving.conftest import ARROW_HEADERS, HEADERS, KEY, arrow_stream, read_arrow


def test_predict_one_and_a_batch_in_order(api, transactions):
    one = api.post("/v1/predict", json=transactions[0], headers=HEADERS)
    assert one.status_code == 200
    body = one.json()
    assert set(body) == {"transaction_id", "fraud_probability", "is_fraud", "threshold", "model_name", "model_version",
                         "reasons"}  # fmt: skip
    assert body["transaction_id"] == "tx-0000" and body["model_version"] == "3" and 0 <= body["fraud_probability"] <= 1
    batch = api.post("/v1/predict/batch", json={"transactions": transactions[:300]}, headers=HEADERS)
    assert batch.status_code == 200
    predictions = batch.json()["predictions"]
    assert [p["transaction_id"] for p in predictions] == [t["transaction_id"] for t in transactions[:300]]
    assert predictions[0] == body
    assert sum(p["is_fraud"] for p in predictions) > 0  # the real frauds come first


def test_model_health_and_readiness(api):
    assert api.get("/healthz").json() == {"status": "ok"}
    assert api.get("/readyz").json() == {"status": "ready", "model_version": "3"}
    model = api.get("/v1/model", headers=HEADERS).json()
    assert model["model_name"] == "paysim-fraud-detector" and len(model["features"]) == 21


def test_not_ready_until_the_bundle_loads(tmp_path):
    settings = Settings(serving_model=str(tmp_path / "missing"), api_keys=KEY)
    with TestClient(create_app(settings)) as client:
        assert client.get("/healthz").status_code == 200
        for _ in range(100):
            ready = client.get("/readyz")
            if ready.json()["status"] == "failed":
                break
        assert ready.status_code == 503 and "not a serving bundle" in ready.json()["reason"]
        assert client.post("/v1/predict", json={}, headers=HEADERS).status_code in (422, 503)
        assert client.get("/v1/model", headers=HEADERS).status_code == 503


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY + "x"}, {"X-API-Key": ""}])
def test_prediction_and_model_routes_need_a_valid_key(api, transactions, headers):
    for response in (
        api.post("/v1/predict", json=transactions[0], headers=headers),
        api.post("/v1/predict/batch", json={"transactions": transactions[:2]}, headers=headers),
        api.get("/v1/model", headers=headers),
    ):
        assert response.status_code == 401
        assert response.json() == {"detail": "missing or invalid API key"}  # nothing about valid keys


@pytest.mark.parametrize(
    ("change", "field", "reason"),
    [
        ({"amount": -5}, "amount", "greater than or equal to 0"),
        ({"type": "REFUND"}, "type", "CASH_IN"),
        ({"step": 0}, "step", "greater than or equal to 1"),
        ({"oldbalanceOrg": "lots"}, "oldbalanceOrg", "valid number"),
        ({"nameDest": ""}, "nameDest", "at least 1 character"),
        ({"oldbalanceOrig": 10.0}, "oldbalanceOrig", "Extra inputs"),
        ({"amount": None}, "amount", "valid number"),
    ],
)
def test_bad_fields_are_named_with_the_reason(api, transactions, change, field, reason):
    response = api.post("/v1/predict", json={**transactions[0], **change}, headers=HEADERS)
    assert response.status_code == 422
    assert any(e["field"] == field and reason in e["reason"] for e in response.json()["detail"]), response.json()


def test_bad_bodies_oversized_batches_and_unknown_routes(api, transactions):
    missing = {k: v for k, v in transactions[0].items() if k != "nameOrig"}
    assert api.post("/v1/predict", json=missing, headers=HEADERS).json()["detail"][0]["field"] == "nameOrig"
    broken = api.post("/v1/predict", content=b'{"step": 1,', headers={**HEADERS, "Content-Type": "application/json"})
    assert broken.status_code == 400 and broken.json()["detail"][0]["field"] == "body"  # as the Chalice app answers
    bad_row = [transactions[0], {**transactions[1], "amount": -1}]
    response = api.post("/v1/predict/batch", json={"transactions": bad_row}, headers=HEADERS)
    assert response.status_code == 422 and response.json()["detail"][0]["field"] == "transactions.1.amount"
    assert api.post("/v1/predict/batch", json={"transactions": []}, headers=HEADERS).status_code == 422
    too_many = {"transactions": [transactions[0]] * (MAX_BATCH + 1)}
    assert api.post("/v1/predict/batch", json=too_many, headers=HEADERS).status_code == 413
    huge = b" " * (MAX_BODY_BYTES + 1)
    assert (
        api.post("/v1/predict/batch", content=huge, headers={**HEADERS, "Content-Type": "application/json"}).status_code
        == 413
    )
    assert api.get("/v2/predict").status_code == 404
    assert api.get("/v1/predict", headers=HEADERS).status_code == 405


def test_an_arrow_batch_is_refused_by_column_and_row_as_json_is(api, transactions):
    """Structure first (missing, extra, repeated columns, types), then values (the first bad row per
    column and rule); errors are the JSON route's bodies; the answer is Arrow with the JSON answer's fields."""
    import pyarrow as pa

    rows = [{k: v for k, v in t.items() if k != "isFlaggedFraud"} for t in transactions[:5]]

    def post(body: bytes):
        answer = api.post("/v1/predict/batch", content=body, headers=ARROW_HEADERS)
        return answer.status_code, answer.json()["detail"] if answer.status_code != 200 else read_arrow(answer.content)

    table = pa.Table.from_pylist(rows)
    status, detail = post(
        arrow_batch.arrow_stream(table.drop_columns(["nameOrig"]).append_column("note", pa.array(list("abcde"))))
    )
    assert status == 422 and detail == [
        {"field": "nameOrig", "reason": "Field required"}, {"field": "note", "reason": "Extra inputs are not permitted"},
    ]  # fmt: skip
    as_text = table.set_column(table.column_names.index("amount"), "amount", pa.array(["1"] * 5))
    assert post(arrow_batch.arrow_stream(as_text)) == (
        422, [{"field": "amount", "reason": "Input should be a valid number (the column is string)"}],
    )  # fmt: skip
    bad = [dict(r) for r in rows]
    bad[2]["step"], bad[4]["type"], bad[1]["nameDest"] = 0, "REFUND", None
    status, detail = post(arrow_stream(bad))
    assert status == 422 and [e["field"] for e in detail] == ["transactions.2.step", "transactions.4.type",
                                                              "transactions.1.nameDest"], detail  # fmt: skip
    assert post(b"not arrow")[0] == 400
    assert post(arrow_batch.arrow_stream(table.slice(0, 0)))[0] == 422
    assert post(arrow_batch.arrow_stream(pa.concat_tables([table] * (MAX_BATCH // 5 + 1))))[0] == 413
    status, answer = post(arrow_stream(rows))
    assert (
        status == 200
        and answer == api.post("/v1/predict/batch", json={"transactions": rows}, headers=HEADERS).json()["predictions"]
    )


def test_metrics_and_json_request_logs(api, transactions, caplog):
    with caplog.at_level(logging.INFO, logger="fraud.api"):
        response = api.post(
            "/v1/predict/batch", json={"transactions": transactions[:10]}, headers={**HEADERS, "X-Request-ID": "req-42"}
        )
    assert response.headers["x-request-id"] == "req-42"
    lines = [json.loads(JsonLogFormatter().format(r)) for r in caplog.records]  # what the log stream carries
    entry = next(line for line in lines if line.get("request_id") == "req-42")
    assert entry["event"] == "request" and entry["level"] == "info" and entry["ts"] > 0
    assert entry["route"] == "/v1/predict/batch" and entry["status"] == 200 and entry["duration_ms"] > 0
    assert api.get("/healthz").headers["x-request-id"]  # generated when the client sends none
    text = api.get("/metrics").text
    for needle in (
        'fraud_api_requests_total{method="POST",route="/v1/predict/batch",status="200"}',
        'fraud_api_request_duration_seconds_bucket{le="0.005",method="POST",route="/v1/predict/batch",status="200"}',
        'fraud_api_requests_total{method="GET",route="unmatched",status="404"}',
        'fraud_prediction_score_count{source="api"}',
        'fraud_decisions_total{outcome="fraud",source="api"}',
        "fraud_model_info{feature_spec_version=",
    ):
        assert needle in text, needle


def test_a_batch_observed_at_once_is_exposed_as_prometheus_observes_it_one_by_one():
    values = np.concatenate([np.random.default_rng(7).random(1000), SCORE_BUCKETS, [0.0, 1.0]])  # bounds included
    batched, single = CollectorRegistry(), CollectorRegistry()
    histogram = BatchHistogram("score", "s", ("source", "x"), SCORE_BUCKETS, batched)
    histogram.observe(values[:500])
    histogram.observe_one(float(values[500]))
    histogram.observe(values[501:])
    reference = Histogram("score", "s", ["source"], buckets=SCORE_BUCKETS, registry=single).labels("x")
    for value in values:
        reference.observe(float(value))

    def samples(registry):
        return {(s.name, tuple(sorted(s.labels.items()))): s.value for m in registry.collect() for s in m.samples
                if not s.name.endswith("_created")}  # fmt: skip

    assert samples(batched) == pytest.approx(samples(single), rel=1e-12)  # the sum's addition order differs
    assert samples(batched)[("score_count", (("source", "x"),))] == len(values)


def test_openapi_documents_the_contract_and_the_key(api):
    spec = api.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/predict/batch", "/v1/model", "/healthz", "/readyz"} <= set(spec["paths"])
    assert spec["components"]["securitySchemes"]["APIKeyHeader"] == {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    assert "Transaction" in spec["components"]["schemas"] and api.get("/docs").status_code == 200
