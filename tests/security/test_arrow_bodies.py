"""Hostile Arrow IPC bodies on the batch route: every one answered 4xx by column or body, nothing inflated
before it is bounded, no 500."""

import json
import logging
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from lib import arrow_batch
from lib.config import PROJECT_ROOT, Settings
from lib.contract import MAX_BATCH
from lib.serving.api import create_app
from lib.serving.scoring import Served
from tests.serving.conftest import ARROW_HEADERS, HEADERS, KEY


def compressed(table: pa.Table, codec: str) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression=codec)) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def good_table(transactions, rows: int = 5) -> pa.Table:
    return pa.Table.from_pylist([{k: v for k, v in t.items() if k != "isFlaggedFraud"} for t in transactions[:rows]])


def post(api, body: bytes):
    answer = api.post("/v1/predict/batch", content=body, headers=ARROW_HEADERS)
    return answer.status_code, answer.json() if answer.status_code != 200 else None


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_a_decompression_bomb_is_refused_before_anything_is_inflated(api, transactions, codec):
    """A body of a few hundred KB whose names inflate to 100 MB (once: 12.5 KB became 400 MB): 413, read
    from the batch's declared sizes; a fresh interpreter parsing it never allocates the 100 MB."""
    table = good_table(transactions, 1)
    rows = 2_500
    table = pa.Table.from_pydict({name: [table.column(name)[0].as_py()] * rows for name in table.column_names})
    bomb = table.set_column(table.column_names.index("nameOrig"), "nameOrig", pa.array(["a" * 40_000] * rows))
    body = compressed(bomb, codec)
    assert len(body) < 2_000_000
    status, answer = post(api, body)
    assert status == 413 and "decompressed" in answer["detail"], answer
    code = textwrap.dedent(f"""
        import sys, pyarrow as pa
        sys.path.insert(0, {str(PROJECT_ROOT)!r})
        from lib import arrow_batch, contract
        body = open(sys.argv[1], "rb").read()
        try:
            arrow_batch.parse_arrow_batch(body)
        except contract.RequestError as exc:
            print(exc.http_status, pa.default_memory_pool().max_memory())
    """)
    path = PROJECT_ROOT / "build" / f"bomb-{codec}.arrows"
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(body)
    try:
        done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    finally:
        path.unlink()
    status, peak = done.stdout.split()
    assert status == "413" and int(peak) < 16_000_000, done.stdout + done.stderr  # the body, not 100 MB


def test_more_rows_than_a_batch_are_refused_from_the_declared_length(api, transactions):
    """20,000 copies of one transaction compress to a few KB: the batch's metadata says 20,000 rows,
    refused before the batch is read."""
    one = good_table(transactions, 1)
    many = pa.Table.from_pydict({name: pa.repeat(one.column(name)[0], 20_000) for name in one.column_names})
    body = compressed(many, "zstd")
    assert len(body) < 400_000
    status, answer = post(api, body)
    assert (
        status == 413 and answer["detail"] == f"20,000 transactions declared in one batch; the limit is {MAX_BATCH:,}"
    )


def test_thousands_of_columns_are_refused_in_one_pass_with_a_bounded_answer(api, transactions):
    """40,000 null columns (2.4 MB) once blocked a worker for 15 s; 40,000 repeats of one name too."""
    nulls = pa.table({f"c{i}": pa.nulls(1) for i in range(40_000)})
    status, answer = post(api, arrow_batch.arrow_stream(nulls))
    assert status == 422 and len(answer["detail"]) <= 60, len(answer["detail"])
    assert {"field": "amount", "reason": "Field required"} in answer["detail"]
    good = good_table(transactions, 1)
    repeated = pa.Table.from_arrays([*good.columns, *[good.column("amount")] * 40_000],
                                    names=[*good.column_names, *["amount"] * 40_000])  # fmt: skip
    status, answer = post(api, arrow_batch.arrow_stream(repeated))
    assert status == 422 and answer["detail"] == [{"field": "amount", "reason": "repeated column"}]


@pytest.mark.parametrize(
    ("column", "values", "reason"),
    [
        ("amount", pa.array([2**60] * 5, pa.int64()), "within 0..1e+15"),
        ("amount", pa.array([2**53 + 1] * 5, pa.int64()), "within 0..1e+15"),
        ("step", pa.array([2**64 - 1] * 5, pa.uint64()), "within 1..744"),
        ("isFraud", pa.array(np.zeros(5, np.float16)), "valid number (the column is halffloat)"),
        ("type", pa.array(["TRANSFER"] * 5).dictionary_encode(), "valid string"),
    ],
)
def test_values_arrow_holds_but_the_contract_refuses_answer_422(api, transactions, column, values, reason):
    table = good_table(transactions)
    names = table.column_names
    table = (
        table.set_column(names.index(column), column, values)
        if column in names
        else table.append_column(column, values)
    )
    status, answer = post(api, arrow_batch.arrow_stream(table))
    assert status == 422 and any(reason in e["reason"] for e in answer["detail"]), answer


def big_endian_stream(column: str = "amount") -> bytes:
    """An IPC stream whose schema says big-endian (pyarrow writes only little-endian): its schema message
    built with FlatBuffers, as Arrow's Message.fbs lays it out."""
    import flatbuffers

    b = flatbuffers.Builder(256)
    name = b.CreateString(column)
    b.StartObject(2), b.PrependInt32Slot(0, 64, 0), b.PrependBoolSlot(1, True, False)
    int_type = b.EndObject()
    b.StartVector(4, 0, 4)
    children = b.EndVector()
    b.StartObject(7), b.PrependUOffsetTRelativeSlot(0, name, 0), b.PrependBoolSlot(1, True, False)
    b.PrependUint8Slot(2, 2, 0), b.PrependUOffsetTRelativeSlot(3, int_type, 0)  # Type.Int
    b.PrependUOffsetTRelativeSlot(5, children, 0)
    field = b.EndObject()
    b.StartVector(4, 1, 4), b.PrependUOffsetTRelative(field)
    fields = b.EndVector()
    b.StartObject(4), b.PrependInt16Slot(0, 1, 0), b.PrependUOffsetTRelativeSlot(1, fields, 0)  # Endianness.Big
    schema = b.EndObject()
    (
        b.StartObject(5),
        b.PrependInt16Slot(0, 4, 0),
        b.PrependUint8Slot(1, 1, 0),
        b.PrependUOffsetTRelativeSlot(2, schema, 0),
    )
    b.Finish(b.EndObject())
    meta = bytes(b.Output())
    meta += b"\0" * (-len(meta) % 8)
    return b"\xff\xff\xff\xff" + struct.pack("<i", len(meta)) + meta + b"\xff\xff\xff\xff\0\0\0\0"


def test_a_big_endian_stream_and_broken_streams_are_refused(api):
    assert pa.ipc.read_schema(pa.ipc.MessageReader.open_stream(pa.py_buffer(big_endian_stream())).read_next_message())
    status, answer = post(api, big_endian_stream())
    assert status == 422 and "big-endian" in answer["detail"][0]["reason"]
    good = arrow_batch.arrow_stream(pa.table({"step": [1]}))
    for broken in (b"not arrow", good[:20], good[:-12] + b"\x00" * 12, b"\xff\xff\xff\xff" + b"\x7f" * 12):
        status, answer = post(api, broken)
        assert status in (400, 422), (broken, status, answer)


class Broken:
    """A model whose scoring fails: what a bug in the scoring path looks like from outside."""

    reload_interval = None
    failure = None

    def __init__(self, info) -> None:
        self.info, self.current = info, Served(self)

    def check(self) -> bool:
        return False

    def score_columns(self, columns, *explain_and_ids):
        raise RuntimeError("the scoring core failed")

    assess = score_batch = score_records = score_columns


def test_a_500_is_counted_and_logged_like_any_answer(bundle, transactions, caplog):
    """A request that fails inside the app still reaches fraud_api_requests_total and the request log (the
    middleware had no try/finally: a 5xx alert could never fire)."""
    from lib.serving.scoring import Scorer

    registry = CollectorRegistry()
    app = create_app(Settings(api_keys=KEY), source=Broken(Scorer.from_folder(bundle).info), registry=registry)
    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level(logging.INFO, logger="fraud.api"):
        answer = client.post("/v1/predict/batch", json={"transactions": transactions[:3]}, headers=HEADERS)
    assert answer.status_code == 500
    labels = {"route": "/v1/predict/batch", "method": "POST", "status": "500"}
    assert registry.get_sample_value("fraud_api_requests_total", labels) == 1
    lines = [
        json.loads(r.getMessage()) if r.getMessage().startswith("{") else r.__dict__.get("fields")
        for r in caplog.records
    ]
    assert any(
        line and line.get("status") == 500 and "the scoring core failed" in line.get("error", "") for line in lines
    )
