"""The Chalice app: the twin's routes and contract through chalice's test client, and a real ``chalice package``."""

import json

import pytest

from tests.api.conftest import HEADERS, KEY

LAMBDA_LIMIT_BYTES = 250 * 1024 * 1024  # unzipped deployment package


def post(client, path, body, headers=HEADERS):
    return client.http.post(path, body=json.dumps(body), headers={"Content-Type": "application/json", **headers})


def test_routes_and_contract(chalice, transactions):
    one = post(chalice, "/v1/predict", transactions[0])
    assert one.status_code == 200 and one.json_body["transaction_id"] == "tx-0000"
    batch = post(chalice, "/v1/predict/batch", {"transactions": transactions[:50]})
    assert [p["transaction_id"] for p in batch.json_body["predictions"]] == [
        t["transaction_id"] for t in transactions[:50]
    ]
    assert batch.json_body["predictions"][0] == one.json_body
    assert chalice.http.get("/v1/model", headers=HEADERS).json_body["model_version"] == "3"
    assert chalice.http.get("/healthz").json_body == {"status": "ok"}
    assert chalice.http.get("/readyz").json_body == {"status": "ready", "model_version": "3"}


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": KEY + "x"}])
def test_keys_are_required(chalice, transactions, headers):
    response = post(chalice, "/v1/predict", transactions[0], headers)
    assert response.status_code == 401 and response.json_body == {"detail": "missing or invalid API key"}
    assert chalice.http.get("/v1/model", headers=headers).status_code == 401


def test_bad_input_is_4xx_with_the_field(chalice, transactions):
    bad = post(chalice, "/v1/predict", {**transactions[0], "amount": -1})
    assert bad.status_code == 422 and bad.json_body["detail"][0]["field"] == "amount"
    rows = post(chalice, "/v1/predict/batch", {"transactions": [transactions[0], {**transactions[1], "type": "X"}]})
    assert rows.status_code == 422 and rows.json_body["detail"][0]["field"] == "transactions.1.type"
    broken = chalice.http.post("/v1/predict", body=b'{"step":', headers={"Content-Type": "application/json", **HEADERS})
    assert broken.status_code == 400 and broken.json_body["detail"][0]["field"] == "body"
    assert post(chalice, "/v1/predict/batch", {"transactions": [transactions[0]] * 10_001}).status_code == 413
    assert chalice.http.get("/v2/nothing").status_code in (403, 404)  # API Gateway answers 403 for unknown paths
