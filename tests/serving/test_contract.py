"""One contract: the same 1,000 raw transactions give identical probabilities and decisions on every path."""

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


@pytest.fixture(scope="module")
def expected(bundle, transactions):
    """What the scoring core answers for the 1,000 transactions (real PaySim rows, frauds among them)."""
    assert len(transactions) == 1000
    core = scoring.Scorer.from_folder(bundle).score_records([dict(t) for t in transactions])
    answers = [(r.transaction_id, r.fraud_probability, r.is_fraud) for r in core]
    assert any(is_fraud for _, _, is_fraud in answers) and not all(is_fraud for _, _, is_fraud in answers)
    return answers


def test_core_fastapi_chalice_and_cli_agree(bundle, api, chalice, transactions, expected, tmp_path):
    """The scoring core, the FastAPI twin (single, batch as JSON and as Arrow), the Chalice app in-process,
    `python -m lib score`."""
    fastapi_batch = api.post("/v1/predict/batch", json={"transactions": transactions}, headers=HEADERS).json()
    fastapi_single = [api.post("/v1/predict", json=t, headers=HEADERS).json() for t in transactions]
    chalice_batch = chalice.http.post(
        "/v1/predict/batch", body=json.dumps({"transactions": transactions}),
        headers={"Content-Type": "application/json", **HEADERS},
    ).json_body  # fmt: skip
    assert triples(fastapi_batch["predictions"]) == expected
    core = scoring.Scorer.from_folder(bundle).score_records([dict(t) for t in transactions])
    assert fastapi_batch == {"predictions": msgspec.to_builtins(core)}  # every field of every answer
    arrow = api.post("/v1/predict/batch", content=arrow_stream(transactions), headers=ARROW_HEADERS)
    assert arrow.status_code == 200 and arrow.headers["content-type"] == arrow_batch.ARROW_STREAM
    assert read_arrow(arrow.content) == fastapi_batch["predictions"]  # every field, as the JSON answer has it
    assert triples(fastapi_single) == expected
    assert triples(chalice_batch["predictions"]) == expected

    table = pa.Table.from_pylist([{c: t[c] for c in RAW_COLUMNS} for t in transactions])
    pacsv.write_csv(table, tmp_path / "in.csv")
    done = subprocess.run(
        [sys.executable, "-m", "lib", "score", "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "out.csv"),
         "--model", str(bundle)], cwd=PROJECT_ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    scored = pacsv.read_csv(tmp_path / "out.csv")
    cli = list(zip(scored.column("fraud_probability").to_pylist(), scored.column("is_fraud").to_pylist(), strict=True))
    assert cli == [(p, int(d)) for _, p, d in expected]


@pytest.mark.lambda_package
def test_the_packaged_lambda_agrees(lambda_dev, transactions, expected):
    """The same transactions through `chalice package`'s zip under the Lambda emulator (Python 3.13)."""
    event = lambda_package.api_event("POST", "/v1/predict/batch", json.dumps({"transactions": transactions}), HEADERS)
    packaged = lambda_dev.invoke(event)
    assert packaged["statusCode"] == 200 and triples(json.loads(packaged["body"])["predictions"]) == expected
