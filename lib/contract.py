"""The JSON contract of every scoring path: a raw PaySim transaction in, a prediction out.

The FastAPI twin, the Chalice app and the stream scorer validate with these models and answer
with these shapes, so a client can switch between them without changing a field.
"""

from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,  # pydantic needs these on Python 3.11
)

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from typing_extensions import TypedDict

from lib.errors import PipelineError
from lib.schema import AMOUNT_MAX, MAX_STEP, NAME_MAX

MAX_BATCH = 10_000  # transactions per batch request
MAX_BODY_BYTES = 8 * 1024 * 1024  # a full batch of verbose transactions is ~3 MB
MAX_MESSAGE_BYTES = 64 * 1024  # one transaction as a stream message is ~300 bytes

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

    transaction_id: NotRequired[Annotated[str | None, Field(max_length=128)]]
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


def parse_message(value: bytes | None) -> dict:
    """Validate one transaction as a stream message carries it (JSON bytes, or None for a tombstone).

    Raises ``RequestError`` 413 beyond ``MAX_MESSAGE_BYTES`` (not even parsed), 400 when the bytes are not
    JSON at all, 422 when the JSON breaks the contract.
    """
    if value is not None and len(value) > MAX_MESSAGE_BYTES:
        raise RequestError(
            413,
            [{"field": "message", "reason": f"{len(value):,} bytes; one transaction is at most {MAX_MESSAGE_BYTES:,}"}],
        )
    try:
        return _TRANSACTION.validate_json(value or b"")
    except ValidationError as exc:
        not_json = any(e["type"] == "json_invalid" for e in exc.errors())
        raise RequestError(400 if not_json else 422, _errors(exc)) from None


def parse_batch(body: bytes) -> list[dict]:
    """Validate a batch request body ({"transactions": [...]}); 413 beyond ``MAX_BATCH`` transactions."""
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
