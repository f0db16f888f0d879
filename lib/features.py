"""The feature spec: every model feature defined once, evaluated by NumPy (scoring) and by Spark (batch).

Each formula is a function of a backend ``x`` that offers the raw columns and a handful of
operations (``log1p``, ``flag``, ``where``, ...). ``NumpyBackend`` evaluates it on arrays for one
transaction or a micro-batch; ``lib.data.preprocess`` hands in a Spark backend and gets a Column
expression. Arithmetic and comparisons are the operators both already share, so there is one
formula and two evaluators, and ``tests/data/test_features.py`` proves they give the same matrix.
"""

import hashlib
import json
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from lib.errors import DataValidationError
from lib.schema import TRANSACTION_TYPES

CENT = 0.005  # half a cent: amounts and balances are given in cents

# The raw inputs the features need: the 9 columns a scoring request carries (labels are optional).
INPUT_COLUMNS: tuple[str, ...] = (
    "step", "type", "amount", "nameOrig", "oldbalanceOrg", "newbalanceOrig", "nameDest", "oldbalanceDest", "newbalanceDest",
)  # fmt: skip
NUMERIC_INPUTS: tuple[str, ...] = (
    "step",
    "amount",
    "oldbalanceOrg",
    "newbalanceOrig",
    "oldbalanceDest",
    "newbalanceDest",
)


@dataclass(frozen=True)
class Says:
    """What a feature's value means in words, for an alert's reasons: a stable ``code`` and a ``text`` whose
    ``{}`` takes the value as ``shown`` gives it (``expm1`` of a log: the amount itself)."""

    code: str
    text: str
    shown: Callable[[float], float] | None = None

    def sentence(self, value: float) -> str:
        return self.text.format(self.shown(value) if self.shown else value)


def _money(log_value: float) -> float:
    return float(np.expm1(log_value))


@dataclass(frozen=True)
class Feature:
    """One model input: its name, dtype, formula (as text and as code), what its value says in an alert's
    reasons, and whether it is known before settlement.

    ``says`` is required, so a feature cannot ship without its words: one ``Says`` for a number, two for a
    flag (what 0 says, then what 1 says). The words are not part of ``FEATURE_SPEC_VERSION``: rewording a
    reason never invalidates a trained model.
    """

    name: str
    dtype: str  # "double" or "int8"
    formula: str
    compute: Callable[[Any], Any]
    says: tuple[Says, ...]
    after_the_fact: bool = False  # uses the post-transaction balances newbalanceOrig / newbalanceDest

    def says_for(self, value: float) -> Says:
        """The words for ``value``: a flag's own for 0 and 1, a number's one for any value."""
        return self.says[int(value != 0)] if len(self.says) == 2 else self.says[0]


def _flag(name: str, formula: str, compute: Callable[[Any], Any], no: Says, yes: Says, **kw: Any) -> Feature:
    return Feature(name, "int8", formula, compute, (no, yes), **kw)


def _type_flag(t: str) -> Feature:
    return _flag(
        f"type_{t}", f"type == '{t}'", lambda x: x.flag(x.type == t),
        Says(f"NOT_{t}", f"not a {t}"), Says(t, f"a {t}"),
    )  # fmt: skip


def _log_balance(name: str, column: str, code: str, words: str, **kw: Any) -> Feature:
    return Feature(name, "double", f"log1p({column})", lambda x: x.log1p(getattr(x, column)),
                   (Says(code, words + " {:,.2f}", _money),), **kw)  # fmt: skip


FEATURES: tuple[Feature, ...] = (
    _log_balance("log_amount", "amount", "AMOUNT", "amount of"),
    _log_balance("log_oldbalance_orig", "oldbalanceOrg", "ORIG_BALANCE_BEFORE", "sender's balance before:"),
    _log_balance("log_oldbalance_dest", "oldbalanceDest", "DEST_BALANCE_BEFORE", "recipient's balance before:"),
    _log_balance(
        "log_newbalance_orig", "newbalanceOrig", "ORIG_BALANCE_AFTER", "sender's balance after:", after_the_fact=True
    ),
    _log_balance(
        "log_newbalance_dest", "newbalanceDest", "DEST_BALANCE_AFTER", "recipient's balance after:", after_the_fact=True
    ),
    *(_type_flag(t) for t in TRANSACTION_TYPES),
    Feature(
        "balance_error_orig",
        "double",
        "newbalanceOrig + amount - oldbalanceOrg",
        lambda x: x.newbalanceOrig + x.amount - x.oldbalanceOrg,
        (Says("ORIG_BALANCE_ERROR", "sender's balance error of {:,.2f} (after + amount - before)"),),
        after_the_fact=True,
    ),
    Feature(
        "balance_error_dest",
        "double",
        "oldbalanceDest + amount - newbalanceDest",
        lambda x: x.oldbalanceDest + x.amount - x.newbalanceDest,
        (Says("DEST_BALANCE_ERROR", "recipient's balance error of {:,.2f} (before + amount - after)"),),
        after_the_fact=True,
    ),
    _flag(
        "orig_zero_before",
        "oldbalanceOrg == 0",
        lambda x: x.flag(x.oldbalanceOrg == 0),
        Says("ORIG_FUNDED", "sender's account held money before"),
        Says("ORIG_EMPTY", "sender's account was empty before"),
    ),
    _flag(
        "dest_zero_before",
        "oldbalanceDest == 0",
        lambda x: x.flag(x.oldbalanceDest == 0),
        Says("DEST_FUNDED", "recipient's account held money before"),
        Says("DEST_EMPTY", "recipient's account was empty before"),
    ),
    _flag(
        "orig_zero_after",
        "newbalanceOrig == 0",
        lambda x: x.flag(x.newbalanceOrig == 0),
        Says("ORIG_NOT_EMPTIED", "sender's account not left empty"),
        Says("ORIG_EMPTIED", "sender's account left empty"),
        after_the_fact=True,
    ),
    _flag(
        "dest_unchanged_zero",
        "oldbalanceDest == 0 and newbalanceDest == 0",
        lambda x: x.flag((x.oldbalanceDest == 0) & (x.newbalanceDest == 0)),
        Says("DEST_BALANCE_MOVED", "recipient's balance not zero before and after"),
        Says("DEST_STAYED_ZERO", "recipient's balance zero before and after, though money was sent"),
        after_the_fact=True,
    ),
    _flag(
        "amount_is_whole_balance",
        "|amount - oldbalanceOrg| < 0.005",
        lambda x: x.flag(x.abs(x.amount - x.oldbalanceOrg) < CENT),
        Says("PART_OF_BALANCE", "amount is not the sender's whole balance"),
        Says("WHOLE_BALANCE", "amount equals the sender's whole balance"),
    ),
    Feature(
        "amount_to_balance",
        "double",
        "amount / (oldbalanceOrg + 1)",
        lambda x: x.amount / (x.oldbalanceOrg + 1.0),
        (Says("AMOUNT_TO_BALANCE", "amount is {:,.2f} times the sender's balance (+1)"),),
    ),
    _flag(
        "merchant_dest",
        "nameDest starts with 'M'",
        lambda x: x.flag(x.starts_with(x.nameDest, "M")),
        Says("NOT_MERCHANT", "recipient is not a merchant"),
        Says("MERCHANT", "recipient is a merchant"),
    ),
    Feature("hour_of_day", "int8", "step % 24", lambda x: x.step % 24, (Says("HOUR", "at hour {:.0f} of the day"),)),
    Feature(
        "day",
        "int8",
        "(step - 1) // 24",
        lambda x: x.floor_div(x.step - 1, 24),
        (Says("DAY", "on day {:.0f} of the month", lambda day: day + 1),),
    ),
)

FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "full": tuple(f.name for f in FEATURES),
    "realtime_safe": tuple(f.name for f in FEATURES if not f.after_the_fact),
}

# --- per-account memory (issue 33): features of a transaction's accounts' history, declared as data ---------
# Computed point in time by ``lib.data.entity`` (Spark); the rule of what a transaction may see is ``history``.

Entity = Literal["nameDest", "nameOrig"]
Aggregation = Literal["count", "sum", "mean", "distinct_senders", "steps_since_first", "frauds"]

# Steps from a transaction until its label counts in an entity feature: 02's and 06's LABEL_DELAY_STEPS (the stream's
# label replay) and the online store's, so the features the stream serves are those trained on
LABEL_DELAY_STEPS = 2
SINCE_CAP = 720  # steps since first seen, capped at 30 days; an account never seen before is NEVER_SEEN
NEVER_SEEN = -1


@dataclass(frozen=True)
class EntityFeature:
    """One feature of an account's history: ``aggregation`` of its transactions (incoming for ``nameDest``,
    outgoing for ``nameOrig``) over the ``window`` steps before the transaction's (None: all history)."""

    name: str
    entity: Entity
    aggregation: Aggregation
    window: int | None
    needs_labels: bool = False


def _entity_windows(
    entity: Entity, prefix: str, aggregations: tuple[Aggregation, ...], windows: tuple[int, ...]
) -> tuple[EntityFeature, ...]:
    return tuple(EntityFeature(f"{prefix}_{a}_{w}", entity, a, w) for w in windows for a in aggregations)


ENTITY_FEATURES: tuple[EntityFeature, ...] = (
    *_entity_windows("nameDest", "dest", ("count", "sum", "mean"), (1, 24, 168)),
    EntityFeature("dest_distinct_senders_24", "nameDest", "distinct_senders", 24),
    EntityFeature("dest_steps_since_first", "nameDest", "steps_since_first", None),
    EntityFeature("dest_frauds_168", "nameDest", "frauds", 168, needs_labels=True),
    *_entity_windows("nameOrig", "orig", ("count", "sum"), (24,)),
)


def history(feature: EntityFeature, label_delay: int) -> tuple[int | None, int]:
    """The steps a transaction at step ``s`` may see for ``feature``, as offsets from ``s`` (first, last;
    first None: from the beginning). The rule: its accounts' transactions at steps before ``s``, never its
    own step (rows of one step have no order in PaySim); the label of a transaction at step ``t`` from step
    ``t + label_delay`` on (the stream's label replay publishes it before that step's first transaction)."""
    last = -max(label_delay, 1) if feature.needs_labels else -1
    return (-feature.window if feature.window is not None else None), last


FEATURE_SPEC_VERSION = (
    "fs-"
    + hashlib.sha256(
        json.dumps(
            [(f.name, f.dtype, f.formula, f.after_the_fact) for f in FEATURES]
            + [(e.name, e.entity, e.aggregation, e.window, e.needs_labels) for e in ENTITY_FEATURES]
        ).encode()
    ).hexdigest()[:10]
)


def describe_entities() -> list[dict[str, Any]]:
    """The entity features as rows (for the manifest and the notebooks)."""
    return [
        {"name": e.name, "entity": e.entity, "aggregation": e.aggregation, "window_steps": e.window,
         "needs_labels": e.needs_labels}
        for e in ENTITY_FEATURES
    ]  # fmt: skip


def feature_names(feature_set: str = "full") -> tuple[str, ...]:
    try:
        return FEATURE_SETS[feature_set]
    except KeyError:
        raise DataValidationError(
            f"unknown feature set {feature_set!r}; choose one of {sorted(FEATURE_SETS)}"
        ) from None


_SPECS = {name: tuple(f for f in FEATURES if f.name in set(names)) for name, names in FEATURE_SETS.items()}
_FORMULAS = {name: tuple(f.compute for f in spec) for name, spec in _SPECS.items()}


def spec(feature_set: str = "full") -> tuple[Feature, ...]:
    """The feature set's ``Feature``s, in its order; an unknown set is refused as ``feature_names`` refuses it."""
    if feature_set not in _SPECS:
        feature_names(feature_set)
    return _SPECS[feature_set]


def _formulas(feature_set: str) -> tuple[Callable[[Any], Any], ...]:
    """The feature set's formulas, in its order."""
    spec(feature_set)
    return _FORMULAS[feature_set]


def describe() -> list[dict[str, Any]]:
    """The spec as plain data (for manifests, bundles and the notebooks)."""
    return [
        {"name": f.name, "dtype": f.dtype, "formula": f.formula, "after_the_fact": f.after_the_fact} for f in FEATURES
    ]


class NumpyBackend:
    """Evaluates formulas on NumPy arrays (one transaction = arrays of length 1)."""

    def __init__(self, columns: Mapping[str, np.ndarray]) -> None:
        self._columns = columns

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self._columns[name]
        except KeyError:
            raise AttributeError(name) from None

    log1p = staticmethod(np.log1p)
    abs = staticmethod(np.abs)

    @staticmethod
    def flag(condition: np.ndarray) -> np.ndarray:
        return condition.astype(np.int32)

    @staticmethod
    def starts_with(values: np.ndarray, prefix: str) -> np.ndarray:
        return np.asarray(values.astype(f"U{len(prefix)}") == prefix)  # the cast keeps the first len(prefix) characters

    @staticmethod
    def floor_div(a: np.ndarray, b: int) -> np.ndarray:
        return np.asarray(np.floor_divide(a, b))


class ScalarBackend:
    """Evaluates formulas on one transaction's Python values: what a single request costs, in microseconds.

    The same formulas as ``NumpyBackend`` on the same float64 values (step an int), and NumPy's own
    ``log1p`` on each value: on CPUs with AVX-512 NumPy's differs from the C library's in the last bit
    for about 1 % of values, so ``math.log1p`` would not give ``compute``'s row bit for bit.
    Built-ins otherwise (no Python-level helper per operation): each costs a fraction of a microsecond.
    """

    __slots__ = (*NUMERIC_INPUTS, "type", "nameOrig", "nameDest")
    log1p = staticmethod(np.log1p)  # on a float: NumPy's loop, as in the batch (returns a np.float64)
    abs = staticmethod(abs)
    flag = staticmethod(operator.pos)  # of a bool: the int 1 or 0
    starts_with = staticmethod(str.startswith)
    floor_div = staticmethod(operator.floordiv)

    def __init__(self, record: Mapping[str, Any]) -> None:
        self.step = int(record["step"])
        self.amount = float(record["amount"])
        self.oldbalanceOrg = float(record["oldbalanceOrg"])
        self.newbalanceOrig = float(record["newbalanceOrig"])
        self.oldbalanceDest = float(record["oldbalanceDest"])
        self.newbalanceDest = float(record["newbalanceDest"])
        self.type, self.nameOrig, self.nameDest = record["type"], record["nameOrig"], record["nameDest"]


def compute_one(record: Mapping[str, Any], feature_set: str = "full") -> list[float]:
    """One validated transaction's feature row, in the feature set's order (``compute`` of one row)."""
    x = ScalarBackend(record)
    return [formula(x) for formula in _formulas(feature_set)]


def columns_from_records(records: list[Any], attributes: bool = False) -> dict[str, np.ndarray]:
    """Raw transactions (dicts, or objects with the columns as ``attributes``; already validated) -> column
    arrays, without pandas."""
    field, n = operator.attrgetter if attributes else operator.itemgetter, len(records)
    columns = {c: np.fromiter(map(field(c), records), np.float64, n) for c in NUMERIC_INPUTS}
    columns["step"] = columns["step"].astype(np.int64)
    for c in ("type", "nameOrig", "nameDest"):
        columns[c] = np.fromiter(map(field(c), records), object, n)
    return columns


def compute(columns: Mapping[str, np.ndarray], feature_set: str = "full") -> np.ndarray:
    """The feature matrix (rows x features, float64) of raw columns, in the feature set's order."""
    missing = [c for c in INPUT_COLUMNS if c not in columns]
    if missing:
        raise DataValidationError(f"raw transactions lack column(s) {missing}; features need {list(INPUT_COLUMNS)}")
    prepared = dict(columns)
    for c in NUMERIC_INPUTS:
        prepared[c] = np.asarray(columns[c], dtype=np.int64 if c == "step" else np.float64)
    backend = NumpyBackend(prepared)
    formulas = _formulas(feature_set)
    matrix = np.empty((len(prepared["amount"]), len(formulas)), dtype=np.float64)
    for j, formula in enumerate(formulas):
        matrix[:, j] = formula(backend)
    return matrix
