"""One contract: the same 1,000 raw transactions give identical probabilities, decisions and reasons on every path."""

import json
import subprocess
import sys

import msgspec
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from lib import arrow_batch
from lib.config import PROJECT_ROOT
from lib.local import lambda_package
from lib.schema import RAW_COLUMNS
from lib.serving import scoring
from tests.serving.conftest import ARROW_HEADERS, HEADERS, arrow_stream, read_arrow

pytestmark = pytest.mark.slow


def triples(predictions):
    return [(p["transaction_id"], p["fraud_probability"], p["is_fraud"]) for p in predictions]


def reasons(predictions):
    return [(p["transaction_id"], p["reasons"]) for p in predictions]


@pytest.fixture(scope="module")
def core_answers(bundle, transactions):
    """Every field of the scoring core's answers, reasons included (each alert has some)."""
    answers = msgspec.to_builtins(scoring.Scorer.from_folder(bundle).score_records([dict(t) for t in transactions]))
    assert all(a["reasons"] for a in answers if a["is_fraud"]) and not any(
        a["reasons"] for a in answers if not a["is_fraud"]
    )
    return answers


@pytest.fixture(scope="module")
def expected(bundle, transactions):
    """What the scoring core answers for the 1,000 transactions (real PaySim rows, frauds among them)."""
    assert len(transactions) == 1000
    core = scoring.Scorer.from_folder(bundle).score_records([dict(t) for t in transactions])
    answers = [(r.transaction_id, r.fraud_probability, r.is_fraud) for r in core]
    assert any(is_fraud for _, _, is_fraud in answers) and not all(is_fraud for _, _, is_fraud in answers)
    return answers


def test_core_fastapi_chalice_and_cli_agree(bundle, api, chalice, transactions, expected, core_answers, tmp_path):
    """The scoring core, the FastAPI twin (single, batch as JSON and as Arrow), the Chalice app in-process,
    `python -m lib score`: the same answers, field by field (an alert's reasons too)."""
    fastapi_batch = api.post("/v1/predict/batch", json={"transactions": transactions}, headers=HEADERS).json()
    fastapi_single = [api.post("/v1/predict", json=t, headers=HEADERS).json() for t in transactions]
    chalice_batch = chalice.http.post(
        "/v1/predict/batch", body=json.dumps({"transactions": transactions}),
        headers={"Content-Type": "application/json", **HEADERS},
    ).json_body  # fmt: skip
    assert triples(fastapi_batch["predictions"]) == expected
    assert fastapi_batch == {"predictions": core_answers}  # every field of every answer
    arrow = api.post("/v1/predict/batch", content=arrow_stream(transactions), headers=ARROW_HEADERS)
    assert arrow.status_code == 200 and arrow.headers["content-type"] == arrow_batch.ARROW_STREAM
    assert read_arrow(arrow.content) == fastapi_batch["predictions"]  # every field, as the JSON answer has it
    assert fastapi_single == core_answers  # the single route: scalar features and compiled trees, same reasons
    assert chalice_batch["predictions"] == core_answers

    table = pa.Table.from_pylist([{c: t[c] for c in RAW_COLUMNS} for t in transactions])
    pacsv.write_csv(table, tmp_path / "in.csv")
    done = subprocess.run(
        [sys.executable, "-m", "lib", "score", "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.csv"),
         "--model", str(bundle), "--reasons"], cwd=PROJECT_ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    scored = pacsv.read_csv(tmp_path / "out.csv", convert_options=pacsv.ConvertOptions(strings_can_be_null=False))
    cli = list(zip(scored.column("fraud_probability").to_pylist(), scored.column("is_fraud").to_pylist(), strict=True))
    assert cli == [(p, int(d)) for _, p, d in expected]
    codes = [";".join(r["code"] for r in a["reasons"]) for a in core_answers]
    assert scored.column("reasons").to_pylist() == codes


def test_explained_on_request_everywhere(api, chalice, transactions, core_answers):
    """``?explain=true``: every decision carries its reasons (non-alerts too), the same on both apps;
    ``?explain=false``: none, alerts included (a batch client that reads no reasons pays no TreeSHAP); anything
    but true/false/1/0 is a 422 naming the parameter."""
    sample = transactions[:50]
    fastapi = api.post("/v1/predict/batch?explain=true", json={"transactions": sample}, headers=HEADERS).json()
    chalice_answer = chalice.http.post(
        "/v1/predict/batch?explain=true", body=json.dumps({"transactions": sample}),
        headers={"Content-Type": "application/json", **HEADERS},
    ).json_body  # fmt: skip
    assert fastapi == chalice_answer
    explained = fastapi["predictions"]
    assert all(p["reasons"] for p in explained if not p["is_fraud"]) and any(not p["is_fraud"] for p in explained)
    assert [p for p in explained if p["is_fraud"]] == [a for a in core_answers[:50] if a["is_fraud"]]
    single = api.post("/v1/predict?explain=1", json=sample[-1], headers=HEADERS).json()
    assert single == explained[-1]
    quiet = api.post("/v1/predict/batch?explain=false", json={"transactions": sample}, headers=HEADERS).json()
    assert quiet == chalice.http.post(
        "/v1/predict/batch?explain=0", body=json.dumps({"transactions": sample}),
        headers={"Content-Type": "application/json", **HEADERS},
    ).json_body  # fmt: skip
    assert [{**p, "reasons": []} for p in explained] == quiet["predictions"]
    assert any(p["is_fraud"] for p in quiet["predictions"])
    for app_answer in (
        api.post("/v1/predict?explain=yes", json=sample[0], headers=HEADERS).json(),
        chalice.http.post("/v1/predict?explain=yes", body=json.dumps(sample[0]),
                          headers={"Content-Type": "application/json", **HEADERS}).json_body,
    ):  # fmt: skip
        assert app_answer["detail"][0]["field"] == "explain"


@pytest.mark.lambda_package
def test_the_packaged_lambda_agrees(lambda_dev, transactions, expected, core_answers):
    """The same transactions through `chalice package`'s zip under the Lambda emulator (Python 3.13): the same
    answers, reasons included."""
    event = lambda_package.api_event("POST", "/v1/predict/batch", json.dumps({"transactions": transactions}), HEADERS)
    packaged = lambda_dev.invoke(event)
    assert packaged["statusCode"] == 200 and triples(json.loads(packaged["body"])["predictions"]) == expected
    assert reasons(json.loads(packaged["body"])["predictions"]) == reasons(core_answers)
