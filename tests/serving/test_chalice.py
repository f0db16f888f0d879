"""The Chalice app: the twin's routes and contract through chalice's test client; the prod stage's authorizer."""

import json

import pytest

from tests.serving.conftest import HEADERS, KEY, load_chalice_app


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


@pytest.fixture
def prod_app(bundle, monkeypatch):
    """app.py as `FRAUD_LAMBDA_AUTHORIZER=1 chalice deploy --stage prod` loads it (cd.yml)."""
    return load_chalice_app("chalice_app_prod", bundle, monkeypatch, FRAUD_LAMBDA_AUTHORIZER="1")


def test_prod_puts_a_lambda_authorizer_on_the_protected_routes_only(prod_app):
    from chalice.deploy.swagger import SwaggerGenerator

    deployed = {
        "api_handler_arn": "arn:aws:lambda:eu-west-1:1:function:api",
        "api_handler_name": "paysim-fraud-scoring-prod",
        "lambda_functions": {
            "paysim-fraud-scoring-prod-api_key_authorizer": {"arn": "arn:aws:lambda:eu-west-1:1:function:auth"}
        },
    }
    swagger = SwaggerGenerator("eu-west-1", deployed)
    spec = swagger.generate_swagger(prod_app.app)
    scheme = spec["securityDefinitions"]["api_key_authorizer"]
    assert scheme["in"] == "header" and scheme["name"] == "X-API-Key"
    assert scheme["x-amazon-apigateway-authtype"] == "custom"
    authorizer = scheme["x-amazon-apigateway-authorizer"]
    assert authorizer["type"] == "token" and authorizer["authorizerResultTtlInSeconds"] == 300
    assert "function:auth" in authorizer["authorizerUri"]
    for path, method in (("/v1/predict", "post"), ("/v1/predict/batch", "post"), ("/v1/model", "get")):
        assert spec["paths"][path][method]["security"] == [{"api_key_authorizer": []}], path
    for path in ("/healthz", "/readyz"):
        assert "security" not in spec["paths"][path]["get"], path


def test_the_authorizer_allows_valid_keys_and_refuses_the_rest(prod_app):
    arn = "arn:aws:execute-api:eu-west-1:123456789012:abcdef/prod/POST/v1/predict"

    def event(token):
        return {"type": "TOKEN", "authorizationToken": token, "methodArn": arn}

    allowed = prod_app.api_key_authorizer(event(KEY), None)
    resources = allowed["policyDocument"]["Statement"][0]["Resource"]
    assert allowed["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    # one cached decision must cover every protected route, and nothing else
    assert sorted(resources) == sorted(
        f"arn:aws:execute-api:eu-west-1:123456789012:abcdef/prod/*{p}" for p in prod_app.PROTECTED_ROUTES
    )
    for wrong in ("", "wrong", KEY + "x", KEY[:-1]):
        with pytest.raises(Exception, match=r"^Unauthorized$"):
            prod_app.api_key_authorizer(event(wrong), None)


@pytest.mark.parametrize(("ttl", "after_rotation"), [("300", "old-key"), ("0", "new-key")])
def test_keys_from_ssm_are_read_again_after_their_ttl(bundle, monkeypatch, ttl, after_rotation):
    """A warm Lambda trusts the SSM keys it read for FRAUD_API_KEYS_TTL_SECONDS, then reads them again:
    a revoked key stops working within that time, not only at the next cold start (moto's SSM)."""
    import boto3
    from moto import mock_aws

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        ssm = boto3.client("ssm")
        ssm.put_parameter(Name="/paysim/keys", Value="old-key", Type="SecureString")
        app = load_chalice_app(
            f"chalice_ssm_{ttl}", bundle, monkeypatch, FRAUD_API_KEYS="", FRAUD_API_KEYS_SSM_PARAMETER="/paysim/keys",
            FRAUD_API_KEYS_TTL_SECONDS=ttl,
        )  # fmt: skip
        assert app.get_api_keys() == ["old-key"]
        ssm.put_parameter(Name="/paysim/keys", Value="new-key", Type="SecureString", Overwrite=True)
        assert app.get_api_keys() == [after_rotation]
