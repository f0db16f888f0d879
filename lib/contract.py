"""The JSON contract of every scoring path: a raw PaySim transaction in, a prediction out.

The FastAPI twin, the Chalice app and the stream scorer validate with these models and answer
with these shapes, so a client can switch between them without changing a field.
"""

import types
from collections.abc import Sequence
from dataclasses import dataclass
from typing import (
    Annotated,
    Any,
    Literal,
    NotRequired,  # pydantic needs these on Python 3.11
    Protocol,
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
from lib.schema import AMOUNT_MAX, MAX_STEP, NAME_MAX, TransactionType

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
    type: TransactionType
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


TOP_REASONS = 3  # reasons an explained decision carries at most


class Reason(TypedDict):
    """Why a decision leaned toward fraud: one feature among the ``TOP_REASONS`` whose TreeSHAP contributions
    (``pred_contribs`` of the booster, on the row that was scored) pushed it most toward fraud."""

    code: str  # stable: the feature's words for this value (lib.features.Says), listed in docs/serving.md
    feature: str
    text: str  # the value in words, e.g. "amount equals the sender's whole balance"
    value: float  # the feature's value as the model saw it
    contribution: float  # toward fraud, in log-odds (the margin); > 0


class Prediction(BaseModel):
    transaction_id: str | None
    fraud_probability: float
    is_fraud: bool
    threshold: float
    model_name: str
    model_version: str
    reasons: list[Reason] = Field(
        default_factory=list,
        max_length=TOP_REASONS,
        description=f"for an alert (is_fraud), or any decision asked with ?explain=true: up to {TOP_REASONS} "
        "features that pushed it most toward fraud, the strongest first; empty otherwise",
    )


class BatchPrediction(BaseModel):
    predictions: list[Prediction]


class Answerable(Protocol):
    """What an answer names of its model (a bundle's ``BundleInfo``)."""

    @property
    def threshold(self) -> float: ...

    @property
    def model_name(self) -> str: ...

    @property
    def model_version(self) -> str: ...


# ``Prediction`` as a msgspec struct (made at import, so typed Any here): what every scoring path answers with, built by ``predictions`` alone, and
# encoded by msgspec (half the time of dicts with orjson: docs/benchmarks.md). The stream
# stamps ``produced_at_ms`` (its input's produce time) on what it writes; an answer never carries it.
PredictionRecord: Any = msgspec.defstruct(
    "PredictionRecord",
    [*((name, f.annotation) for name, f in Prediction.model_fields.items()), ("produced_at_ms", int | None, None)],
    omit_defaults=True,
    gc=False,
)
# Messages and answers are encoded by msgspec: orjson's outputs, when many are kept (a batch's messages in a
# list), cost several times msgspec's each (docs/benchmarks.md), for the same bytes.
encode_json = msgspec.json.Encoder().encode


Explained = dict[int, list[Reason]]  # the reasons of the explained answers of a batch, by row (the others have none)
# What an answer without reasons carries: one list shared by all of them, never changed. A list per answer cost
# the batch route half its time (10,000 new containers a request set off the garbage collector, py-spy).
NO_REASONS: list[Reason] = []


def prediction_columns(
    model: Answerable, ids: Sequence[Any], probability: Any, decision: Any, reasons: Explained | None = None
) -> dict[str, list[Any]]:
    """The answers for ``ids`` as columns, keyed by ``Prediction``'s field names: what every answer is built from."""
    n, explained = len(ids), reasons or {}
    return {
        "transaction_id": _as_list(ids), "fraud_probability": _as_list(probability), "is_fraud": _as_list(decision),
        "threshold": [model.threshold] * n, "model_name": [model.model_name] * n,
        "model_version": [model.model_version] * n, "reasons": [explained.get(i, NO_REASONS) for i in range(n)],
    }  # fmt: skip


def _as_list(values: Any) -> list[Any]:
    """Plain Python values (a NumPy array's ``tolist``): what msgspec encodes as JSON numbers and booleans."""
    return list(values.tolist() if hasattr(values, "tolist") else values)


def predictions(
    model: Answerable, ids: Sequence[Any], probability: Any, decision: Any, reasons: Explained | None = None
) -> list[Any]:
    """The one answer builder: a ``PredictionRecord`` per transaction, every field given by its name; the
    ``reasons`` of the rows explained (``lib.serving.scoring.Scorer.explain``), none for the others."""
    threshold, name, version = model.threshold, model.model_name, model.model_version
    explained = reasons or {}
    return [
        PredictionRecord(transaction_id=i, fraud_probability=p, is_fraud=d, threshold=threshold, model_name=name,
                         model_version=version, reasons=explained.get(row) or NO_REASONS)
        for row, (i, p, d) in enumerate(zip(ids, _as_list(probability), _as_list(decision), strict=True))
    ]  # fmt: skip


def prediction_records(columns: dict[str, list[Any]]) -> list[Any]:
    """``PredictionRecord``s of answers read as columns (an API's Arrow answer), each field taken by its name."""
    names = list(Prediction.model_fields)
    return [
        PredictionRecord(**dict(zip(names, row, strict=True))) for row in zip(*(columns[n] for n in names), strict=True)
    ]


class RequestError(PipelineError):
    """A request the contract refuses: ``detail`` (a message, or ``[{field, reason}]``) and the HTTP status."""

    def __init__(self, status: int, detail: Any) -> None:
        super().__init__(str(detail))
        self.http_status = status
        self.detail = detail


_TRANSACTION = TypeAdapter(Transaction)
_TRANSACTIONS = TypeAdapter(list[Transaction])


def field_errors(errors: Sequence[Any], prefix: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """pydantic's errors as {field, reason}: the field path (e.g. ``transactions.3.amount``) and what is wrong."""
    return [{"field": ".".join(str(p) for p in (*prefix, *e["loc"])) or "body", "reason": e["msg"]} for e in errors]


def _errors(exc: ValidationError, prefix: tuple[str, ...] = ()) -> list[dict[str, str]]:
    return field_errors(exc.errors(include_url=False), prefix)


def _load(body: bytes) -> Any:
    if len(body) > MAX_BODY_BYTES:
        raise RequestError(413, f"request body of {len(body):,} bytes exceeds the limit of {MAX_BODY_BYTES:,}")
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestError(400, [{"field": "body", "reason": f"not valid JSON: {exc}"}]) from None


def parse_transaction(body: bytes) -> dict[str, Any]:
    """Validate one transaction from a request body; returns it as a plain dict."""
    try:
        return dict(_TRANSACTION.validate_python(_load(body)))
    except ValidationError as exc:
        raise RequestError(422, _errors(exc)) from None


def parse_message(value: bytes | None) -> Any:
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


def _records_of_batch(body: bytes) -> list[dict[str, Any]]:
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
        return [dict(t) for t in _TRANSACTIONS.validate_python(transactions)]
    except ValidationError as exc:
        raise RequestError(422, _errors(exc, ("transactions",))) from None


@dataclass(frozen=True)
class FieldRule:
    """One field of ``Transaction`` as every decoder checks it, derived from its pydantic annotation: pydantic
    validates the annotation itself, the strict msgspec decoders and the Arrow route these rules."""

    name: str
    kind: type  # int, float or str
    required: bool
    nullable: bool
    bounds: dict[str, Any]  # msgspec.Meta's keywords: ge, le, min_length, max_length
    choices: tuple[Any, ...] = ()  # a Literal's values

    def strict_type(self) -> Any:
        """The field for msgspec: the same type, bounds and choices; ``None`` too where it is nullable."""
        base: Any = Literal[self.choices] if self.choices else self.kind
        if self.bounds:
            base = Annotated[base, msgspec.Meta(**self.bounds)]
        return base | None if self.nullable else base


_BOUNDS = {annotated_types.Ge: "ge", annotated_types.Le: "le", annotated_types.MinLen: "min_length",
           annotated_types.MaxLen: "max_length"}  # fmt: skip


def _bounds(name: str, infos: Sequence[Any]) -> dict[str, Any]:
    """The bounds of pydantic ``Field(...)``s as msgspec.Meta's keywords."""
    bounds = {}
    for bound in (b for info in infos for b in info.metadata):
        if type(bound) not in _BOUNDS:  # a rule the strict decoders would not check: refuse to derive looser ones
            raise TypeError(f"{name}: no strict equivalent of {bound!r}; add it to contract._BOUNDS")
        bounds[_BOUNDS[type(bound)]] = getattr(bound, _BOUNDS[type(bound)])
    return bounds


def _rule(name: str, annotation: Any) -> FieldRule:
    required = get_origin(annotation) is not NotRequired
    kind: Any = annotation if required else get_args(annotation)[0]
    bounds: dict[str, Any] = {}
    choices: tuple[Any, ...] = ()
    nullable = False
    if get_origin(kind) is Annotated:
        kind, *infos = get_args(kind)
        bounds = _bounds(name, infos)
    if get_origin(kind) in (Union, types.UnionType):  # X | None
        options = [a for a in get_args(kind) if a is not type(None)]
        nullable, kind = len(options) < len(get_args(kind)), options[0]
    if get_origin(kind) is Literal:
        choices = get_args(kind)
        kind = type(choices[0])
    return FieldRule(name, kind, required, nullable, bounds, choices)


RULES: tuple[FieldRule, ...] = tuple(
    _rule(name, kind) for name, kind in get_type_hints(Transaction, include_extras=True).items()
)
TEXT_FIELDS: tuple[str, ...] = tuple(r.name for r in RULES if r.kind is str)


def _strict_transaction() -> Any:
    """A msgspec struct of ``Transaction``, strict: the JSON types exactly (a float for ``step``, ``true`` for a
    label: refused), the bounds, no unknown field; an optional field that is not given reads ``None``. What
    it accepts, pydantic accepts with the same values (``tests/serving/test_input_contract.py`` checks it)."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [(r.name, r.strict_type()) for r in RULES if r.required]
    fields += [(r.name, r.strict_type(), None) for r in RULES if not r.required]
    # gc=False: the structs hold strings and numbers only (no cycles), so the collector need not track them
    return msgspec.defstruct("TransactionRecord", fields, forbid_unknown_fields=True, gc=False)


# one validated transaction, read by attribute (batches, stream messages); made at import, so typed Any here
TransactionRecord: Any = _strict_transaction()


def _strict_decoders() -> tuple[msgspec.json.Decoder[Any], msgspec.json.Decoder[Any]]:
    """The strict decoders of a ``BatchRequest`` and of one ``Transaction``, both into ``TransactionRecord``."""
    _, *infos = get_args(get_type_hints(BatchRequest, include_extras=True)["transactions"])
    batch = Annotated[list[TransactionRecord], msgspec.Meta(**_bounds("transactions", infos))]
    batch_request = msgspec.defstruct("BatchRequest", [("transactions", batch)], forbid_unknown_fields=True)
    return msgspec.json.Decoder(batch_request), msgspec.json.Decoder(TransactionRecord)


_STRICT_BATCH, _STRICT_TRANSACTION = _strict_decoders()


def parse_batch(body: bytes) -> tuple[dict[str, Any], list[Any]]:
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


# Which decisions carry reasons: the alerts (the default everywhere), every one (``?explain=true``), or none
# (``?explain=false``, a batch client that reads no reasons; the challenger in shadow)
Explain = Literal["alerts", "all", "none"]
EXPLAIN_VALUES: dict[str | None, Explain] = {None: "alerts", "true": "all", "1": "all", "false": "none", "0": "none"}


def parse_explain(value: str | None) -> Explain:
    """The ``explain`` query parameter of the predict routes: absent, the alerts' reasons; ``true`` or ``1``,
    every decision's; ``false`` or ``0``, none (an alert's TreeSHAP costs about 33 µs)."""
    explain = EXPLAIN_VALUES.get(value)
    if explain is None:
        raise RequestError(422, [{"field": "explain", "reason": f"expected true or false, got {str(value)[:40]!r}"}])
    return explain


# A delayed label on the labels topic (``lib.stream.kafka.DelayedLabels``): the id of a scored transaction, as
# bounded as a transaction's, and 0 or 1 exactly (``true``, ``0.7``, ``"1"`` and a null id are refused, not coerced)
LabelRecord: Any = msgspec.defstruct(
    "LabelRecord",
    [
        ("transaction_id", Annotated[str, msgspec.Meta(min_length=1, max_length=ID_MAX)]),
        ("isFraud", Literal[0, 1]),
        ("step", Annotated[int, msgspec.Meta(ge=1, le=MAX_STEP)] | None, None),
    ],
    forbid_unknown_fields=True,
    gc=False,
)
_STRICT_LABEL = msgspec.json.Decoder(LabelRecord)
MAX_LABEL_BYTES = 1024  # a label is ~80 bytes; a bigger one is refused before it is parsed


def parse_label(value: bytes | None) -> Any:
    """One label message as a ``LabelRecord``; ``RequestError`` 413 beyond ``MAX_LABEL_BYTES``, 422 otherwise
    (naming the field), so the stream dead-letters it instead of joining a coerced or unbounded value."""
    if value is not None and len(value) > MAX_LABEL_BYTES:
        raise RequestError(
            413, [{"field": "label", "reason": f"{len(value):,} bytes; a label is at most {MAX_LABEL_BYTES:,}"}]
        )
    try:
        return _STRICT_LABEL.decode(value or b"")
    except msgspec.DecodeError as exc:
        raise RequestError(
            422, [{"field": "label", "reason": f"a label is {{transaction_id, isFraud: 0|1, step?}}: {exc}"}]
        ) from None
