"""One input contract: the same bad values are refused by every entry, with the field or column and the row.

Entries: ``python -m lib validate`` and 01's loader (``acquire``) on CSV and Parquet, ``python -m lib
score``, the FastAPI twin (single and batch), the Chalice app, and the stream scorer's message parser.
"""

import json
import math

import msgspec
import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pydantic
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lib import contract, features
from lib.data import acquire
from lib.errors import DataValidationError
from lib.model.batch import score_file
from lib.schema import TRANSACTION_TYPES
from lib.serving.scoring import Scorer
from tests.serving.conftest import ARROW_HEADERS, HEADERS, arrow_stream

GOOD = {"step": 5, "type": "TRANSFER", "amount": 1200.5, "nameOrig": "C1", "oldbalanceOrg": 1200.5,
        "newbalanceOrig": 0.0, "nameDest": "C2", "oldbalanceDest": 0.0, "newbalanceDest": 0.0,
        "isFraud": 1, "isFlaggedFraud": 0}  # fmt: skip
BAD_ROW = 3  # 0-based: the 4th data row of the files, transaction 3 of a batch
# (column, bad value, also expressible in JSON)
BAD = [
    ("amount", -1.0, True), ("amount", 1e300, True), ("amount", math.inf, False), ("amount", math.nan, False),
    ("oldbalanceDest", -5.0, True), ("newbalanceOrig", 2e15, True), ("type", "transfer", True),
    ("type", "REFUND", True), ("step", 0, True), ("step", 745, True), ("nameOrig", "", True),
    ("nameDest", "C" * 65, True), ("isFraud", 2, True),
]  # fmt: skip
IDS = [f"{c}={v!r}" for c, v, _ in BAD]


def rows_with(column, value) -> list[dict]:
    rows = [dict(GOOD, nameOrig=f"C{i}") for i in range(6)]
    rows[BAD_ROW][column] = value
    return rows


def write(rows: list[dict], path):
    table = pa.Table.from_pylist(rows)
    if path.suffix == ".csv":
        pacsv.write_csv(table, path)
    else:
        pq.write_table(table, path)
    return path


@pytest.mark.parametrize(("column", "value", "_"), BAD, ids=IDS)
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_files_are_refused_by_validate_acquire_and_score(column, value, _, suffix, bundle, tmp_path):
    source = str(write(rows_with(column, value), tmp_path / f"in{suffix}"))
    scorer = Scorer.from_folder(bundle)
    for entry in (
        lambda: acquire.validate_file(source),
        lambda: acquire.acquire(source, tmp_path / "raw.parquet", rows=0, seed=0),
        lambda: score_file(scorer, source, tmp_path / "scores.csv"),
    ):
        with pytest.raises(DataValidationError) as refused:
            entry()
        message = str(refused.value)
        assert f"`{column}`" in message and f"row {BAD_ROW + 1}" in message, message
    assert not (tmp_path / "raw.parquet").exists() and not (tmp_path / "scores.csv").exists()  # nothing written


@pytest.mark.parametrize(("column", "value", "as_json"), BAD, ids=IDS)
def test_requests_and_messages_are_refused_by_both_apps_and_the_stream(column, value, as_json, api, chalice):
    rows = [{k: v for k, v in r.items() if k != "isFlaggedFraud"} for r in rows_with(column, value)]
    body = json.dumps({"transactions": rows}, allow_nan=True).encode()
    single = json.dumps(rows[BAD_ROW], allow_nan=True).encode()
    expected = (422, f"transactions.{BAD_ROW}.{column}") if as_json else (400, "body")  # NaN/inf: not JSON
    headers = {"Content-Type": "application/json", **HEADERS}
    answers = {
        "fastapi batch": api.post("/v1/predict/batch", content=body, headers=headers),
        "fastapi arrow batch": api.post("/v1/predict/batch", content=arrow_stream(rows), headers=ARROW_HEADERS),
        "fastapi": api.post("/v1/predict", content=single, headers=headers),
        "chalice batch": chalice.http.post("/v1/predict/batch", body=body, headers=headers),
        "chalice": chalice.http.post("/v1/predict", body=single, headers=headers),
    }
    for name, answer in answers.items():
        status = answer.status_code
        detail = (
            answer.json()["detail"] if hasattr(answer, "json") and callable(answer.json) else answer.json_body["detail"]
        )
        field = expected[1] if "batch" in name else expected[1].removeprefix(f"transactions.{BAD_ROW}.")
        if "arrow" in name:  # Arrow carries NaN and inf: the column and row are named for those too
            assert status == 422 and {e["field"] for e in detail} == {f"transactions.{BAD_ROW}.{column}"}, detail
            continue
        assert status == expected[0] and any(e["field"] == field for e in detail), (name, status, detail)
    with pytest.raises(contract.RequestError) as refused:  # the stream's message parser
        contract.parse_message(orjson.dumps(rows[BAD_ROW]) if as_json else single)
    # pydantic's JSON reader takes NaN/Infinity tokens, so the stream names the column for those too
    assert refused.value.http_status == 422 and {e["field"] for e in refused.value.detail} == {column}, (
        refused.value.detail
    )


def test_parquet_columns_of_the_wrong_type_are_refused_not_cast(tmp_path):
    good = pa.Table.from_pylist([GOOD, GOOD])
    wrong = {
        "amount": pa.array([True, False]),  # a bool cast to 1.0 / 0.0 would be silently wrong
        "oldbalanceOrg": pa.array(["12.5", "3"]),  # text cast to numbers
        "step": pa.array([1.5, 2.0]),  # not a whole number
        "type": pa.array([1, 2]),
    }
    for column, values in wrong.items():
        table = good.set_column(good.schema.get_field_index(column), column, values)
        pq.write_table(table, tmp_path / "wrong.parquet")
        with pytest.raises(DataValidationError, match=rf"column `{column}` has the wrong type, .*: it must hold"):
            acquire.validate_file(str(tmp_path / "wrong.parquet"))


def test_repeated_columns_are_refused_and_header_spaces_trimmed(tmp_path):
    good = pa.Table.from_pylist([GOOD, GOOD])
    repeated = pa.Table.from_arrays([*good.columns, good.column("amount")], names=[*good.column_names, "amount"])
    pq.write_table(repeated, tmp_path / "twice.parquet")
    with pytest.raises(DataValidationError, match="`amount` appear more than once"):
        acquire.validate_file(str(tmp_path / "twice.parquet"))
    lines = ["step, type, amount, nameOrig, oldbalanceOrg, newbalanceOrig, nameDest, oldbalanceDest, newbalanceDest, isFraud, isFlaggedFraud",
             "1,TRANSFER,181.0,C1,181.0,0.0,C2,0.0,0.0,1,0"]  # fmt: skip
    (tmp_path / "spaced.csv").write_text("\n".join(lines) + "\n")
    summary = acquire.validate_file(str(tmp_path / "spaced.csv"))  # the header's names are read trimmed
    assert summary.rows == 1 and summary.frauds == 1 and summary.type_counts == {"TRANSFER": 1}
    (tmp_path / "spaced.csv").write_text(lines[0] + "\n1, TRANSFER, 181.0, C1, 181.0, 0.0, C2, 0.0, 0.0, 1, 0\n")
    with pytest.raises(DataValidationError, match=r"column `type`: .* first at row 1 \(value ' TRANSFER'\)"):
        acquire.validate_file(str(tmp_path / "spaced.csv"))  # values are data: named, never silently trimmed


def _answer(parse, body: bytes):
    """What a batch parser gives for ``body``: ("ok", columns as lists, ids) or ("refused", status, detail)."""
    try:
        columns, ids = parse(body)
    except contract.RequestError as exc:
        return "refused", exc.http_status, exc.detail
    return "ok", {name: values.tolist() for name, values in columns.items()}, ids


def _pydantic_batch(body: bytes):
    records = contract._records_of_batch(body)
    return features.columns_from_records(records), [r.get("transaction_id") for r in records]


ANY_JSON = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**20), 10**20), st.floats(allow_nan=False), st.text(max_size=70),
    st.sampled_from(["TRANSFER", "transfer", "1", "12.5", ""]), st.just([]), st.just({}),
)  # fmt: skip
VALID = {  # values the contract takes, in their own JSON types
    "step": st.integers(1, 744),
    "type": st.sampled_from(TRANSACTION_TYPES),
    "name": st.one_of(st.text(min_size=1, max_size=64), st.sampled_from(["C1", "M2", "é" * 64])),
    "amount": st.one_of(st.floats(0, 1e15), st.integers(0, 10**15), st.sampled_from([0, -0.0, 1e15])),
    "transaction_id": st.one_of(st.none(), st.text(max_size=128)),
    "label": st.sampled_from([None, 0, 1]),
}
LAX = {  # values the contract takes too, in other JSON types (pydantic's lax mode)
    "step": st.sampled_from([1.0, 744.0, "5"]),
    "amount": st.sampled_from(["7.5", "0"]),
    "label": st.sampled_from([True, 0.0]),
}
NEAR = {  # values at and just past each field's rules
    "step": st.one_of(st.sampled_from([0, 745, -1, 1.5, 10**20]), st.floats(0, 746)),
    "type": st.sampled_from(["transfer", "REFUND", "TRANSFER "]),
    "name": st.sampled_from(["", "é" * 65, "C" * 65]),
    "amount": st.one_of(st.sampled_from([-1, -0.01, 1e15 + 1, 2 * 10**15, 1e300]), st.floats(-1, 0)),
    "transaction_id": st.text(min_size=129, max_size=130),
    "label": st.sampled_from([2, -1, 0.5, "1"]),
}
KINDS = {c: "amount" for c in features.NUMERIC_INPUTS if c != "step"}
KINDS.update(step="step", type="type", nameOrig="name", nameDest="name", transaction_id="transaction_id",
             isFraud="label", isFlaggedFraud="label")  # fmt: skip


@st.composite
def transactions(draw) -> dict:
    """A transaction the contract takes (optional fields there or not), or one with a field or two broken,
    missing, unknown or of another JSON type."""
    optional = ("transaction_id", "isFraud", "isFlaggedFraud")
    row = {name: draw(VALID[kind]) for name, kind in KINDS.items() if name not in optional or draw(st.booleans())}
    for name in draw(st.sampled_from([[], [], []]) | st.lists(st.sampled_from([*KINDS, "extra"]), max_size=2)):
        kind, how = KINDS.get(name, ""), draw(st.sampled_from(["near", "near", "lax", "any", "missing"]))
        if how == "missing":
            row.pop(name, None)
        else:
            row[name] = draw({"near": NEAR, "lax": LAX}.get(how, {}).get(kind, ANY_JSON))
    return row


@settings(max_examples=600, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(transactions(), min_size=0, max_size=3), st.sampled_from([{}, {"extra": 1}]))
def test_the_fast_json_batch_decoder_answers_what_pydantic_answers(rows, extra):
    """``parse_batch`` decodes with a strict msgspec decoder derived from the pydantic types and leaves the
    rest to pydantic: for any body, the same columns and ids, or the same refusal, as pydantic alone."""
    body = json.dumps({"transactions": rows, **extra}).encode()
    assert _answer(contract.parse_batch, body) == _answer(_pydantic_batch, body)


def _pydantic_message(value: bytes):
    try:  # a field not given reads None, as on a TransactionRecord
        return "ok", {
            **dict.fromkeys(contract.TransactionRecord.__struct_fields__),
            **contract._TRANSACTION.validate_json(value),
        }
    except pydantic.ValidationError as exc:
        return "refused", contract._errors(exc)


def _message(value: bytes):
    try:
        return "ok", msgspec.structs.asdict(contract.parse_message(value))
    except contract.RequestError as exc:
        return "refused", exc.detail


@settings(max_examples=600, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(transactions())
def test_the_fast_message_decoder_answers_what_pydantic_answers(row):
    """The stream's ``parse_message`` decodes with the strict msgspec decoder of one transaction first: for
    any message, the same values (``None`` for an optional field not given or given as null) or the same
    refusal as pydantic alone."""
    value = json.dumps(row).encode()
    assert _message(value) == _pydantic_message(value)


def test_the_fast_decoder_takes_the_plain_batches_and_leaves_lax_values_to_pydantic():
    """Real rows (ints for amounts included) are decoded by msgspec; lax values pydantic accepts (``1.0`` for
    a step, ``true`` for a label, a number as a string) are still accepted, by pydantic."""
    plain = [dict(GOOD, amount=1200, transaction_id=f"t{i}") for i in range(3)]
    assert contract._STRICT_BATCH.decode(json.dumps({"transactions": plain}))
    for lax in ({"step": 5.0}, {"isFraud": True}, {"amount": "1200.5"}):
        body = json.dumps({"transactions": [dict(GOOD, **lax)]}).encode()
        with pytest.raises(msgspec.ValidationError):
            contract._STRICT_BATCH.decode(body)
        columns, ids = contract.parse_batch(body)
        assert columns["step"].tolist() == [5] and columns["amount"].tolist() == [1200.5] and ids == [None]
