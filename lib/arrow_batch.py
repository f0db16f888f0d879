"""The batch route's Arrow IPC body: a table with the transaction's fields as columns, validated by the
contract's ``RULES`` (the rules every decoder derives from ``Transaction``), and the Arrow answer's bytes.

A body is read message by message, and nothing is inflated before it is bounded: the schema first (its
columns' names and types, checked in one pass, before any data), then each record batch's metadata,
which declares its rows and, for a compressed body (LZ4 or ZSTD, as Arrow compresses buffers), each
buffer's size once decompressed. Rows beyond ``MAX_BATCH`` or decompressed bytes beyond
``MAX_DECODED_BYTES`` are refused (413) before a byte is inflated: a 12.5 KB body once declared 400 MB.
Dictionary-encoded, nested, float16 and big-endian columns are refused (422): the contract's columns
are strings and numbers, as every client writes them.
"""

import struct
from typing import Any

import numpy as np

from lib import features
from lib.contract import MAX_BATCH, MAX_BODY_BYTES, RULES, Explained, FieldRule, Reason, RequestError

ARROW_STREAM = "application/vnd.apache.arrow.stream"  # the media type of the body and the answer
MAX_DECODED_BYTES = 4 * MAX_BODY_BYTES  # what a body's batches may hold once decompressed: a full batch is ~2 MB
MAX_MESSAGES = 1_024  # record batches in one body


def arrow_stream(table: Any) -> bytes:
    """A ``pyarrow.Table`` as the bytes of an Arrow IPC stream (what the batch route takes and answers)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def arrow_schema() -> Any:
    """``Transaction`` as the Arrow schema a client sends (``lib.serving.remote``): strings, int64 or float64."""
    import pyarrow as pa

    kinds = {str: pa.string(), int: pa.int64(), float: pa.float64()}
    return pa.schema([(r.name, kinds[r.kind]) for r in RULES if r.name not in ("isFraud", "isFlaggedFraud")])


def reasons_array(rows: int, reasons: Explained) -> Any:
    """The answer's ``reasons`` column: per row a list of ``Reason`` structs, empty where a row has none (built
    from offsets: a batch of 10,000 answers with a few alerts costs what its alerts do)."""
    import pyarrow as pa

    kinds = {str: pa.string(), float: pa.float64()}
    reason = pa.struct([(name, kinds[kind]) for name, kind in Reason.__annotations__.items()])
    counts = np.zeros(rows + 1, np.int32)
    for row, given in reasons.items():
        counts[row + 1] = len(given)
    flat = [r for row in sorted(reasons) for r in reasons[row]]
    return pa.ListArray.from_arrays(pa.array(np.cumsum(counts, dtype=np.int32)), pa.array(flat, reason))


# --- the IPC metadata, read without inflating anything (Arrow's Message.fbs, as FlatBuffers lay it out) -----

_SCHEMA, _DICTIONARY_BATCH, _RECORD_BATCH = 1, 2, 3  # MessageHeader's union types
_BIG_ENDIAN = 1


def _field(meta: bytes, table: int, index: int) -> int | None:
    """Where field ``index`` of the FlatBuffers table at ``table`` is, or None when it is absent."""
    vtable = table - struct.unpack_from("<i", meta, table)[0]
    size = struct.unpack_from("<H", meta, vtable)[0]
    if 4 + 2 * index >= size:
        return None
    offset = struct.unpack_from("<H", meta, vtable + 4 + 2 * index)[0]
    return table + offset if offset else None


def _target(meta: bytes, at: int) -> int:
    """The table or vector an offset field at ``at`` points to."""
    return at + int(struct.unpack_from("<I", meta, at)[0])


def _header(meta: bytes) -> tuple[int, int | None]:
    """(the message's header type, where its header table is)."""
    root = _target(meta, 0)
    kind = _field(meta, root, 1)
    header = _field(meta, root, 2)
    return (meta[kind] if kind is not None else 0), (_target(meta, header) if header is not None else None)


def _declared(meta: bytes, body: memoryview) -> tuple[int, int]:
    """A record batch's (rows, bytes once decompressed) from its metadata and the 8-byte length prefix Arrow
    writes before each compressed buffer (-1: that buffer was left uncompressed)."""
    _, batch = _header(meta)
    if batch is None:
        raise ValueError("a record batch without its header")
    rows_at, buffers_at = _field(meta, batch, 0), _field(meta, batch, 2)
    rows = struct.unpack_from("<q", meta, rows_at)[0] if rows_at is not None else 0
    compressed = _field(meta, batch, 3) is not None
    decoded = 0
    if buffers_at is not None:
        vector = _target(meta, buffers_at)
        for i in range(struct.unpack_from("<I", meta, vector)[0]):
            offset, length = struct.unpack_from("<qq", meta, vector + 4 + 16 * i)
            if offset < 0 or length < 0 or offset + length > len(body):
                raise ValueError("a buffer outside the message body")
            if compressed and length >= 8:
                inflated = struct.unpack_from("<q", body, offset)[0]
                decoded += length - 8 if inflated == -1 else inflated
                if inflated < -1:
                    raise ValueError("a negative decompressed length")
            else:
                decoded += length
    return rows, decoded


def _refused(status: int, field: str, reason: str) -> RequestError:
    return RequestError(status, [{"field": field, "reason": reason}])


def _schema_problems(schema: Any) -> list[dict[str, str]]:
    """Names (missing, unknown, repeated: one pass) and types, before any data is read."""
    import pyarrow as pa

    problems = _structure_problems(schema.names)
    if problems:
        return problems
    for rule in RULES:
        if rule.name not in schema.names:
            continue
        kind = schema.field(rule.name).type
        text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
        number = pa.types.is_integer(kind) or pa.types.is_float32(kind) or pa.types.is_float64(kind)
        if (rule.kind is str and not text) or (rule.kind is not str and not number):
            wanted = "a valid string" if rule.kind is str else "a valid number"
            problems.append({"field": rule.name, "reason": f"Input should be {wanted} (the column is {kind})"})
    return problems


def _read_table(body: bytes) -> Any:
    """The body's table, read message by message: the schema checked before any batch, each batch's rows and
    decompressed bytes bounded before it is read (see the module's docstring)."""
    import pyarrow as pa

    reader = pa.ipc.MessageReader.open_stream(pa.py_buffer(body))
    message = reader.read_next_message()
    if message.type != "schema":
        raise _refused(400, "body", f"not an Arrow IPC stream: it starts with a {message.type} message, not the schema")
    meta = message.metadata.to_pybytes()
    _, header = _header(meta)
    endianness = _field(meta, header, 0) if header is not None else None
    if endianness is not None and struct.unpack_from("<h", meta, endianness)[0] == _BIG_ENDIAN:
        raise _refused(422, "body", "a big-endian Arrow stream: send it little-endian, as Arrow writes by default")
    schema = pa.ipc.read_schema(message)
    problems = _schema_problems(schema)
    if problems:
        raise RequestError(422, problems)
    batches: list[Any] = []
    rows = decoded = 0
    while True:
        try:
            message = reader.read_next_message()
        except StopIteration:
            break
        if message.type == "dictionary batch":
            raise _refused(422, "body", "dictionary-encoded columns: send the values themselves")
        if message.type != "record batch":
            raise _refused(400, "body", f"a {message.type} message where record batches were expected")
        batch_rows, batch_bytes = _declared(message.metadata.to_pybytes(), memoryview(message.body))
        rows, decoded = rows + batch_rows, decoded + batch_bytes
        if rows > MAX_BATCH:
            raise RequestError(413, f"{rows:,} transactions declared in one batch; the limit is {MAX_BATCH:,}")
        if decoded > MAX_DECODED_BYTES:
            raise RequestError(
                413, f"the batch declares {decoded:,} bytes once decompressed; the limit is {MAX_DECODED_BYTES:,}"
            )
        if len(batches) >= MAX_MESSAGES:
            raise RequestError(413, f"more than {MAX_MESSAGES:,} record batches in one body; send fewer, larger ones")
        batches.append(pa.ipc.read_record_batch(message, schema))
    return pa.Table.from_batches(batches, schema)


def _structure_problems(names: list[str]) -> list[dict[str, str]]:
    """Missing, unknown and repeated columns (in one pass over the names: a body may name thousands)."""
    known = {r.name: r for r in RULES}
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    problems = [{"field": r.name, "reason": "Field required"} for r in RULES if r.required and r.name not in seen]
    problems += [{"field": n, "reason": "Extra inputs are not permitted"} for n in seen if n not in known][:20]
    problems += [{"field": n, "reason": "repeated column"} for n, count in sorted(seen.items()) if count > 1][:20]
    return problems


def _value_checks(rule: FieldRule, column: Any) -> list[tuple[Any, str]]:
    """(values breaking the rule as a boolean array, why) for one column of the right kind; a null is not bad."""
    import pyarrow as pa
    import pyarrow.compute as pc

    checks = []
    if rule.kind is str:
        values, what = pc.utf8_length(column), "String should have"
        low, high = rule.bounds.get("min_length"), rule.bounds.get("max_length")
        span = f"{low}..{high}" if low is not None else f"at most {high}"
        if low is not None or high is not None:
            checks.append((_outside(values, low, high), f"{what} {span} characters"))
    else:
        values = pc.cast(column, pa.float64(), safe=False)  # 2^60 is far beyond any bound: no exact value needed
        low, high = rule.bounds.get("ge"), rule.bounds.get("le")
        whole = " whole" if rule.kind is int else ""
        if low is not None or high is not None:
            checks.append(
                (_outside(values, low, high), f"Input should be a finite{whole} number within {low:g}..{high:g}")
            )
        if rule.kind is int:
            checks.append((pc.not_equal(values, pc.floor(values)), f"Input should be a{whole} number"))
    if rule.choices:
        allowed = pa.array(rule.choices, pa.string() if rule.kind is str else pa.float64())
        checks.append((pc.invert(pc.is_in(values if rule.kind is not str else column, allowed)),
                       f"Input should be {', '.join(repr(c) for c in rule.choices)}"))  # fmt: skip
    return checks


def _outside(values: Any, low: float | None, high: float | None) -> Any:
    """Where ``values`` are below ``low`` or above ``high`` (NaN is outside both)."""
    import pyarrow.compute as pc

    inside = [pc.greater_equal(values, low)] if low is not None else []
    inside += [pc.less_equal(values, high)] if high is not None else []
    return pc.invert(inside[0] if len(inside) == 1 else pc.and_(*inside))


def parse_arrow_batch(body: bytes) -> tuple[dict[str, Any], list[Any]]:
    """Validate a batch as an Arrow IPC stream (a table with the transaction's fields as columns) by ``RULES``,
    the rules every decoder derives from ``Transaction``; returns (column arrays for ``Scorer.score_columns``,
    transaction ids). The columns' names and types first, then the declared sizes, then the values.

    Errors name the column, and the first row that breaks each rule, as ``transactions.<row>.<column>``.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(body) > MAX_BODY_BYTES:
        raise RequestError(413, f"request body of {len(body):,} bytes exceeds the limit of {MAX_BODY_BYTES:,}")
    try:
        table = _read_table(body)
    except RequestError:
        raise
    except (pa.ArrowException, OSError, ValueError, struct.error, IndexError, StopIteration) as exc:
        raise _refused(400, "body", f"not a valid Arrow IPC stream: {exc}") from None
    if table.num_rows == 0:
        raise _refused(422, "transactions", "needs at least 1 transaction")
    present = [r for r in RULES if r.name in table.column_names]
    problems = []
    try:
        for rule in present:
            column = table.column(rule.name)
            bad = [(pc.is_null(column), "Field required (null)")] if not rule.nullable and column.null_count else []
            for values, reason in bad or _value_checks(rule, column):
                values = pc.fill_null(values, False)
                if pc.any(values).as_py():
                    row = pc.index(values, True).as_py()
                    problems.append({"field": f"transactions.{row}.{rule.name}", "reason": reason})
    except pa.ArrowException as exc:  # a value Arrow cannot compare or cast: the contract refuses it, never a 500
        raise _refused(422, "body", f"values Arrow cannot check: {exc}") from None
    if problems:
        raise RequestError(422, problems)
    columns = {
        r.name: table.column(r.name).to_numpy(zero_copy_only=False)
        if r.kind is str
        else pc.cast(table.column(r.name), pa.float64(), safe=False).to_numpy()
        for r in present
        if r.name in features.INPUT_COLUMNS
    }
    columns["step"] = columns["step"].astype(np.int64)
    ids = (
        table.column("transaction_id").to_pylist()
        if "transaction_id" in table.column_names
        else [None] * table.num_rows
    )
    return columns, ids
