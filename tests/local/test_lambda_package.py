"""The Chalice app as Lambda gets it: `chalice package` under Python 3.13 (Lambda's python3.13 runtime),
held to Lambda's limits, and run by the Lambda Runtime Interface Emulator as Lambda runs it."""

import json
import subprocess
import sys

import pytest

from lib.config import PROJECT_ROOT
from lib.local import lambda_package, shipping
from tests.serving.conftest import KEY, require_root, template_environment

pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.lambda_package]


def respond(emulator, method, path, body=None, headers=None):
    """An API Gateway proxy event through the packaged handler: (status, parsed body)."""
    answer = emulator.invoke(lambda_package.api_event(method, path, body, headers))
    return answer["statusCode"], json.loads(answer["body"])


def test_the_package_is_built_for_python_3_13_and_fits_lambda(lambda_packages, tmp_path):
    assert lambda_package.python_version(lambda_package.lambda_root()).startswith("Python 3.13")
    for stage, folder in lambda_packages.items():
        unpacked = lambda_package.unpack(folder / "deployment.zip", tmp_path / stage)
        report = lambda_package.check_package(folder / "deployment.zip", unpacked)
        assert report.unzipped_bytes < lambda_package.UNZIPPED_LIMIT, report.by_top_level
        assert report.forbidden == [], report.forbidden
        assert report.elf_files > 10 and report.elf_problems == [], report.elf_problems  # x86_64, glibc <= 2.34
        carried = sorted(str(p.relative_to(unpacked)) for p in (unpacked / "lib").rglob("*.py"))
        assert carried == [str(f) for f in shipping.shipped("lambda")]  # the scoring path's modules, no other
        assert {"lib", "bundle", "app.py", "xgboost", "numpy", "pydantic"} <= set(report.by_top_level)
        template = json.loads((folder / "sam.json").read_text())
        handler = template["Resources"]["APIHandler"]["Properties"]
        assert handler["Runtime"] == "python3.13" and handler["Handler"] == "app.app"
        assert template_environment(folder)["FRAUD_SERVING_MODEL"] == "bundle"


def test_the_prod_template_puts_the_api_key_authorizer_in_front(lambda_packages):
    resources = json.loads((lambda_packages["prod"] / "sam.json").read_text())["Resources"]
    authorizers = [r for r in resources.values() if r["Properties"].get("Handler") == "app.api_key_authorizer"]
    assert len(authorizers) == 1 and authorizers[0]["Properties"]["Runtime"] == "python3.13"
    swagger = resources["RestAPI"]["Properties"]["DefinitionBody"]
    scheme = swagger["securityDefinitions"]["api_key_authorizer"]
    assert scheme["name"] == "X-API-Key" and scheme["x-amazon-apigateway-authorizer"]["type"] == "token"
    assert swagger["paths"]["/v1/predict"]["post"]["security"] == [{"api_key_authorizer": []}]
    assert "security" not in swagger["paths"]["/healthz"]["get"]
    # dev deploys the authorizer function too (Chalice defines it with the app) but puts no route behind it
    dev = json.loads((lambda_packages["dev"] / "sam.json").read_text())["Resources"]["RestAPI"]["Properties"][
        "DefinitionBody"
    ]
    assert "securityDefinitions" not in dev and "security" not in dev["paths"]["/v1/predict"]["post"]


def test_the_emulated_lambda_answers_every_route(lambda_dev, transactions):
    headers = {"X-API-Key": KEY}
    assert respond(lambda_dev, "GET", "/healthz") == (200, {"status": "ok"})
    assert respond(lambda_dev, "GET", "/readyz") == (200, {"status": "ready", "model_version": "3"})
    status, model = respond(lambda_dev, "GET", "/v1/model", headers=headers)
    assert status == 200 and model["model_version"] == "3" and len(model["features"]) == 21
    status, one = respond(lambda_dev, "POST", "/v1/predict", json.dumps(transactions[0]), headers)
    assert status == 200 and one["transaction_id"] == "tx-0000" and 0 <= one["fraud_probability"] <= 1
    status, bad = respond(lambda_dev, "POST", "/v1/predict", json.dumps({**transactions[0], "amount": -5}), headers)
    assert status == 422 and bad["detail"][0]["field"] == "amount"
    for wrong in ({}, {"X-API-Key": "wrong"}):
        assert respond(lambda_dev, "POST", "/v1/predict", json.dumps(transactions[0]), wrong) == (
            401, {"detail": "missing or invalid API key"},
        )  # fmt: skip
    status, batch = respond(
        lambda_dev, "POST", "/v1/predict/batch", json.dumps({"transactions": transactions[:20]}), headers
    )
    assert status == 200 and [p["transaction_id"] for p in batch["predictions"]] == [
        t["transaction_id"] for t in transactions[:20]
    ]
    assert "INIT REPORT(durationMs:" in lambda_dev.output() and "REPORT RequestId" in lambda_dev.output()


def test_the_packaged_lambda_reads_and_records_in_a_real_redis(lambda_packages, redis_server, tmp_path):
    """The package's own redis client (and hiredis, built for 3.13) against Redis on loopback: each transaction's
    entity features read, the transaction recorded (FRAUD_STORE_RECORD), the vectors logged; then the store down."""
    from lib.serving.online import OnlineStore

    unpacked = lambda_package.unpack(lambda_packages["dev"] / "deployment.zip", tmp_path / "dev")
    prefix = "lambda:"
    env = {**template_environment(lambda_packages["dev"]), "FRAUD_API_KEYS_SSM_PARAMETER": "", "FRAUD_API_KEYS": KEY,
           "FRAUD_REDIS_URL": redis_server.url, "FRAUD_STORE_RECORD": "true", "FRAUD_STORE_LOG_SHARE": "1",
           "FRAUD_STORE_PREFIX": prefix}  # fmt: skip
    row = {"step": 5, "type": "TRANSFER", "amount": 100.0, "nameOrig": "C1", "oldbalanceOrg": 100.0,
           "newbalanceOrig": 0.0, "nameDest": "C9", "oldbalanceDest": 0.0, "newbalanceDest": 0.0}  # fmt: skip
    headers = {"X-API-Key": KEY}
    with lambda_package.LambdaEmulator(unpacked, env) as emulator:
        for i, (step, amount) in enumerate([(5, 100.0), (5, 50.0), (6, 20.0), (7, 1.0)]):
            body = json.dumps({**row, "step": step, "amount": amount, "nameOrig": f"C{i}", "transaction_id": f"L{i}"})
            assert respond(emulator, "POST", "/v1/predict", body, headers)[0] == 200
    logged = {x["transaction_id"]: x["features"] for x in OnlineStore(redis_server.url, 2, prefix=prefix).served_log()}
    assert [logged[f"L{i}"]["dest_count_24"] for i in range(4)] == [0, 0, 2, 3]
    assert [logged[f"L{i}"]["dest_sum_24"] for i in range(4)] == [0.0, 0.0, 150.0, 170.0]
    assert logged["L3"]["dest_distinct_senders_24"] == 3 and logged["L3"]["dest_steps_since_first"] == 2
    down = {**env, "FRAUD_REDIS_URL": "redis://127.0.0.1:9/0"}  # nothing listens on the discard port
    with lambda_package.LambdaEmulator(unpacked, down) as emulator:
        status, answer = respond(emulator, "POST", "/v1/predict", json.dumps(row), headers)
    assert status == 503 and "online store at redis://127.0.0.1:9/0" in answer["detail"]


def test_the_prod_authorizer_answers_token_events(lambda_packages, tmp_path):
    unpacked = lambda_package.unpack(lambda_packages["prod"] / "deployment.zip", tmp_path / "prod")
    env = {**template_environment(lambda_packages["prod"]), "FRAUD_API_KEYS_SSM_PARAMETER": "", "FRAUD_API_KEYS": KEY}
    arn = "arn:aws:execute-api:eu-west-1:123456789012:abcdef/prod/POST/v1/predict"
    with lambda_package.LambdaEmulator(unpacked, env, handler="app.api_key_authorizer") as authorizer:
        allowed = authorizer.invoke({"type": "TOKEN", "authorizationToken": KEY, "methodArn": arn})
        refused = authorizer.invoke({"type": "TOKEN", "authorizationToken": "wrong", "methodArn": arn})
    assert allowed["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    assert refused["errorMessage"] == "Unauthorized"


def test_the_terraform_package_describes_the_same_functions(bundle, tmp_path):
    """`lambda-package --pkg-format terraform`: chalice.tf.json with both functions on python3.13."""
    require_root()
    out = tmp_path / "terraform"
    done = subprocess.run(
        [sys.executable, "-m", "lib", "lambda-package", "--stage", "prod", "--pkg-format", "terraform",
         "--bundle", str(bundle), "--out", str(out)],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=3000,
    )  # fmt: skip
    assert done.returncode == 0 and "chalice.tf.json" in done.stdout, done.stdout + done.stderr
    functions = json.loads((out / "chalice.tf.json").read_text())["resource"]["aws_lambda_function"]
    handlers = {f["handler"]: f["runtime"] for f in functions.values()}
    assert handlers == {"app.app": "python3.13", "app.api_key_authorizer": "python3.13"}
    assert (out / "deployment.zip").stat().st_size > 10e6
