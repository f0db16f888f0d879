"""The JSON contract of every scoring path: a raw PaySim transaction in, a prediction out.

The FastAPI twin, the Chalice app and the stream scorer validate with these models and answer
with these shapes, so a client can switch between them without changing a field.
"""

import functools
import operator
import types
from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,  # pydantic needs these on Python 3.11
    Union,  # what get_origin gives for Optional[...]
    get_args,
    get_origin,
    get_type_hints,
)

import annotated_types
import msgspec
import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from lib import features
from lib.errors import PipelineError
from lib.schema import AMOUNT_MAX, LABEL_COLUMNS, MAX_STEP, NAME_MAX, RAW_COLUMNS, TRANSACTION_TYPES

MAX_BATCH = 10_000  # transactions per batch request
MAX_BODY_BYTES = 8 * 1024 * 1024  # a full batch of verbose transactions is ~3 MB
MAX_MESSAGE_BYTES = 64 * 1024  # one transaction as a stream message is ~300 bytes
ID_MAX = 128  # characters of a transaction_id

# the bounds of lib.schema, which file validation enforces too
Amount = Annotated[float, Field(ge=0, le=AMOUNT_MAX, description="in the account currency, cents as decimals")]
AccountName = Annotated[str, Field(min_length=1, max_length=NAME_MAX)]


# A real PaySim fraud (the first one in data/reference/paysim_real_sample.csv): the example the API docs show.
EXAMPLE = {
    "transaction_id": "t-0001", "step": 1, "type": "TRANSFER", "amount": 181.0, "nameOrig": "C1305486145",
    "oldbalanceOrg": 181.0, "newbalanceOrig": 0.0, "nameDest": "C553264065", "oldbalanceDest": 0.0, "newbalanceDest": 0.0,
}  # fmt: skip


class Transaction(TypedDict):
    """One raw PaySim transaction: the 9 input columns, an optional id, optional labels (ignored).

    A TypedDict, so validation hands back plain dicts (no model objects to unpack per transaction).
    """

    __pydantic_config__ = ConfigDict(extra="forbid", allow_inf_nan=False, json_schema_extra={"examples": [EXAMPLE]})  # type: ignore[misc]

    transaction_id: NotRequired[Annotated[str | None, Field(max_length=ID_MAX)]]
    step: Annotated[int, Field(ge=1, le=MAX_STEP, description="hour of the simulated month, 1-744")]
    type: Literal["CASH_IN", "CASH_OUT", "DEBIT", "PAYMENT", "TRANSFER"]
    amount: Amount
    nameOrig: AccountName
    oldbalanceOrg: Amount
    newbalanceOrig: Amount
    nameDest: AccountName
    oldbalanceDest: Amount
    newbalanceDest: Amount
    isFraud: NotRequired[Literal[0, 1] | None]
    isFlaggedFraud: NotRequired[Literal[0, 1] | None]


class BatchRequest(TypedDict):
    __pydantic_config__ = ConfigDict(  # type: ignore[misc]
        extra="forbid",
        json_schema_extra={
            "examples": [{"transactions": [EXAMPLE, {**EXAMPLE, "transaction_id": "t-0002", "type": "CASH_OUT"}]}]
        },
    )

    transactions: Annotated[list[Transaction], Field(min_length=1, max_length=MAX_BATCH)]


class Prediction(BaseModel):
    transaction_id: str | None
    fraud_probability: float
    is_fraud: bool
    threshold: float
    model_name: str
    model_version: str


class BatchPrediction(BaseModel):
    predictions: list[Prediction]


# ``Prediction`` as a msgspec struct, for the JSON batch answer: the bytes orjson gives for the dicts, in
# half the time (10,000 answers built and encoded in 2 ms instead of 4 here)
PredictionRecord = msgspec.defstruct(
    "PredictionRecord", [(name, f.annotation) for name, f in Prediction.model_fields.items()], gc=False
)
# Messages and answers are encoded by msgspec: orjson's outputs, when many are kept (a batch's messages in a
# list), cost 2.8 us each on this VM (0.2 us when each is freed at once); msgspec's 0.4 us, the same bytes.
encode_json = msgspec.json.Encoder().encode


class RequestError(PipelineError):
    """A request the contract refuses: ``detail`` (a message, or ``[{field, reason}]``) and the HTTP status."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.http_status = status
        self.detail = detail


_TRANSACTION = TypeAdapter(Transaction)
_TRANSACTIONS = TypeAdapter(list[Transaction])


def field_errors(errors: list[dict], prefix: tuple = ()) -> list[dict]:
    """pydantic's errors as {field, reason}: the field path (e.g. ``transactions.3.amount``) and what is wrong."""
    return [{"field": ".".join(str(p) for p in (*prefix, *e["loc"])) or "body", "reason": e["msg"]} for e in errors]


def _errors(exc: ValidationError, prefix: tuple = ()) -> list[dict]:
    return field_errors(exc.errors(include_url=False), prefix)


def _load(body: bytes) -> Any:
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(413, f"request body of {len(body):,} bytes exceeds the limit of {MAX_BODY_BYTES:,}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, [{"field": "body", "reason": f"not valid JSON: {exc}"}]) from None


def parse_transaction(body: bytes) -> dict:
    """Validate one transaction from a request body; returns it as a plain dict."""
    try:
        return _TRANSACTION.validate_python(_load(body))
    except ValidationError as exc:
        raise RequestError(422, _errors(exc)) from None


def parse_message(value: bytes | None) -> "TransactionRecord":
    """Validate one transaction as a stream message carries it (JSON bytes, or None for a tombstone); returns
    it as a ``TransactionRecord`` (its fields as attributes, ``None`` for an optional one not given), the
    element type of a batch, so a micro-batch's columns are ``features.columns_from_records(..., attributes=True)``.

    Raises ``RequestError`` 413 beyond ``MAX_MESSAGE_BYTES`` (not even parsed), 400 when the bytes are not
    JSON at all, 422 when the JSON breaks the contract.
    """
    if value is not None and len(value) > MAX_MESSAGE_BYTES:
        raise RequestError(
            413,
            [{"field": "message", "reason": f"{len(value):,} bytes; one transaction is at most {MAX_MESSAGE_BYTES:,}"}],
        )
    try:  # the strict msgspec decoder first (a fraction of pydantic's time); whatever it refuses, pydantic decides
        return _STRICT_TRANSACTION.decode(value or b"")
    except ValueError:
        pass
    try:
        return TransactionRecord(**_TRANSACTION.validate_json(value or b""))  # validated: the struct takes it as is
    except ValidationError as exc:
        not_json = any(e["type"] == "json_invalid" for e in exc.errors())
        raise RequestError(400 if not_json else 422, _errors(exc)) from None


def _records_of_batch(body: bytes) -> list[dict]:
    """A batch request body ({"transactions": [...]}) validated by pydantic, as plain dicts: 413 beyond
    ``MAX_BATCH`` transactions, the contract's 400/422 otherwise."""
    data = _load(body)
    if not isinstance(data, dict) or not isinstance(data.get("transactions"), list):
        raise RequestError(422, [{"field": "transactions", "reason": 'expected a body {"transactions": [...]}'}])
    unknown = sorted(set(data) - {"transactions"})
    if unknown:
        raise RequestError(422, [{"field": name, "reason": "Extra inputs are not permitted"} for name in unknown])
    transactions = data["transactions"]
    if not transactions:
        raise RequestError(422, [{"field": "transactions", "reason": "needs at least 1 transaction"}])
    if len(transactions) > MAX_BATCH:
        raise RequestError(413, f"{len(transactions):,} transactions in one batch; the limit is {MAX_BATCH:,}")
    try:
        return _TRANSACTIONS.validate_python(transactions)
    except ValidationError as exc:
        raise RequestError(422, _errors(exc, ("transactions",))) from None


_BOUNDS = {annotated_types.Ge: "ge", annotated_types.Le: "le", annotated_types.MinLen: "min_length",
           annotated_types.MaxLen: "max_length"}  # fmt: skip


def _strict_type(kind: Any, base: Any = None) -> Any:
    """A field's pydantic annotation for msgspec: the same type (or ``base``) with the same bounds."""
    if get_origin(kind) is not Annotated:
        return kind  # Literal[...] (or None): msgspec reads it as pydantic does
    given, *infos = get_args(kind)
    base, bounds = base or given, {}
    for bound in (b for info in infos for b in info.metadata):
        if type(bound) not in _BOUNDS:  # a rule msgspec would not check: refuse to build a looser decoder
            raise TypeError(f"no msgspec equivalent of {bound!r}; add it to contract._BOUNDS")
        bounds[_BOUNDS[type(bound)]] = getattr(bound, _BOUNDS[type(bound)])
    meta = msgspec.Meta(**bounds)
    if get_origin(base) in (Union, types.UnionType):  # str | None: the bounds apply to the str
        return functools.reduce(operator.or_, (a if a is type(None) else Annotated[a, meta] for a in get_args(base)))
    return Annotated[base, meta]


def _strict_transaction() -> type:
    """A msgspec struct of ``Transaction`` derived from the pydantic types but strict: the JSON types exactly
    (a float for ``step``, ``true`` for a label: refused), the bounds, no unknown field; an optional field
    that is not given reads ``None``. What it accepts, pydantic accepts with the same values
    (``tests/api/test_input_contract.py`` checks it)."""
    fields, optional = [], []
    for name, kind in get_type_hints(Transaction, include_extras=True).items():
        if get_origin(kind) is NotRequired:
            optional.append((name, _strict_type(get_args(kind)[0]), None))
        else:
            fields.append((name, _strict_type(kind)))
    # gc=False: the structs hold strings and numbers only (no cycles), so the collector need not track them
    return msgspec.defstruct("TransactionRecord", fields + optional, forbid_unknown_fields=True, gc=False)


TransactionRecord = _strict_transaction()  # one validated transaction, read by attribute (batches, stream messages)


def _strict_decoders() -> tuple[msgspec.json.Decoder, msgspec.json.Decoder]:
    """The strict decoders of a ``BatchRequest`` and of one ``Transaction``, both into ``TransactionRecord``."""
    batch = _strict_type(get_type_hints(BatchRequest, include_extras=True)["transactions"], list[TransactionRecord])
    batch_request = msgspec.defstruct("BatchRequest", [("transactions", batch)], forbid_unknown_fields=True)
    return msgspec.json.Decoder(batch_request), msgspec.json.Decoder(TransactionRecord)


_STRICT_BATCH, _STRICT_TRANSACTION = _strict_decoders()


def parse_batch(body: bytes) -> tuple[dict[str, Any], list]:
    """Validate a batch request body ({"transactions": [...]}) by ``BatchRequest``; returns (column arrays for
    ``Scorer.score_columns``, transaction ids), as ``parse_arrow_batch`` does. 413 beyond ``MAX_BATCH``.

    msgspec decodes a batch straight into columns, strictly (a fifth of pydantic's time); whatever it
    refuses goes through pydantic, which accepts what the contract's lax rules allow (``"step": 1.0``)
    and answers the contract's errors for the rest, as every other route does.
    """
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(413, f"request body of {len(body):,} bytes exceeds the limit of {MAX_BODY_BYTES:,}")
    try:
        transactions = _STRICT_BATCH.decode(body).transactions
    except ValueError:  # msgspec's DecodeError and ValidationError, invalid UTF-8: pydantic decides
        records = _records_of_batch(body)
        return features.columns_from_records(records), [r.get("transaction_id") for r in records]
    return features.columns_from_records(transactions, attributes=True), [t.transaction_id for t in transactions]


ARROW_STREAM = "application/vnd.apache.arrow.stream"
_REQUIRED = tuple(c for c in RAW_COLUMNS if c not in LABEL_COLUMNS)  # the 9 inputs
_OPTIONAL = ("transaction_id", *LABEL_COLUMNS)


def arrow_stream(table) -> bytes:
    """A ``pyarrow.Table`` as the bytes of an Arrow IPC stream (what the batch route takes and answers)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def parse_arrow_batch(body: bytes) -> tuple[dict[str, Any], list]:
    """Validate a batch as an Arrow IPC stream (a table with the transaction's fields as columns) by the
    same rules as ``Transaction``; returns (column arrays for ``Scorer.score_columns``, transaction ids).

    Errors name the column, and the first row that breaks each rule, as ``transactions.<row>.<column>``.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(body) > MAX_BODY_BYTES:
        raise RequestError(413, f"request body of {len(body):,} bytes exceeds the limit of {MAX_BODY_BYTES:,}")
    try:
        table = pa.ipc.open_stream(body).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise RequestError(400, [{"field": "body", "reason": f"not a valid Arrow IPC stream: {exc}"}]) from None
    names = table.column_names
    problems = [{"field": c, "reason": "Field required"} for c in _REQUIRED if c not in names]
    problems += [
        {"field": c, "reason": "Extra inputs are not permitted"} for c in names if c not in (*_REQUIRED, *_OPTIONAL)
    ]
    problems += [{"field": c, "reason": "repeated column"} for c in sorted({c for c in names if names.count(c) > 1})]
    if problems:
        raise RequestError(422, problems)
    if table.num_rows == 0:
        raise RequestError(422, [{"field": "transactions", "reason": "needs at least 1 transaction"}])
    if table.num_rows > MAX_BATCH:
        raise RequestError(413, f"{table.num_rows:,} transactions in one batch; the limit is {MAX_BATCH:,}")

    def first_bad(column: str, bad, reason: str) -> None:
        """Record the first row where the boolean array ``bad`` is true (a null there: not bad)."""
        bad = pc.fill_null(bad, False)
        if pc.any(bad).as_py():
            problems.append({"field": f"transactions.{pc.index(bad, True).as_py()}.{column}", "reason": reason})

    def within(values, low: float, high: float):  # NaN fails both comparisons
        return pc.and_(pc.greater_equal(values, low), pc.less_equal(values, high))

    columns: dict[str, Any] = {}
    for name in _REQUIRED + tuple(c for c in _OPTIONAL if c in names):
        column, text = table.column(name), name in ("type", "nameOrig", "nameDest", "transaction_id")
        kind = column.type
        if name in _REQUIRED and column.null_count:
            first_bad(name, pc.is_null(column), "Field required (null)")
        elif text and not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            problems.append({"field": name, "reason": f"Input should be a valid string (the column is {kind})"})
        elif not text and not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            problems.append({"field": name, "reason": f"Input should be a valid number (the column is {kind})"})
        elif name == "type":
            first_bad(name, pc.invert(pc.is_in(column, pa.array(TRANSACTION_TYPES))),
                      f"Input should be {', '.join(repr(t) for t in TRANSACTION_TYPES)}")  # fmt: skip
            columns[name] = column.to_numpy(zero_copy_only=False)
        elif name == "transaction_id":
            first_bad(
                name, pc.greater(pc.utf8_length(column), ID_MAX), f"String should have at most {ID_MAX} characters"
            )
        elif text:
            first_bad(name, pc.invert(within(pc.utf8_length(column), 1, NAME_MAX)),
                      f"String should have 1..{NAME_MAX} characters")  # fmt: skip
            columns[name] = column.to_numpy(zero_copy_only=False)
        elif name in LABEL_COLUMNS:  # 0, 1 or null; scoring ignores them
            outside = pc.and_(pc.is_valid(column), pc.invert(pc.is_in(column, pa.array([0, 1], kind))))
            first_bad(name, outside, "Input should be 0 or 1")
        else:
            values = pc.cast(column, pa.float64())
            if name == "step":
                whole = pc.and_(pc.equal(values, pc.floor(values)), within(values, 1, MAX_STEP))
                first_bad(name, pc.invert(whole), f"Input should be a whole number within 1..{MAX_STEP}")
            else:
                first_bad(name, pc.invert(within(values, 0, AMOUNT_MAX)),
                          f"Input should be a finite number within 0..{AMOUNT_MAX:g}")  # fmt: skip
            columns[name] = values.to_numpy()
    if problems:
        raise RequestError(422, problems)
    columns["step"] = columns["step"].astype(np.int64)
    ids = table.column("transaction_id").to_pylist() if "transaction_id" in names else [None] * table.num_rows
    return columns, ids
