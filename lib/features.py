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
from typing import Any

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
class Feature:
    """One model input: its name, dtype, formula (as text and as code) and whether it is known before settlement."""

    name: str
    dtype: str  # "double" or "int8"
    formula: str
    compute: Callable[[Any], Any]
    after_the_fact: bool = False  # uses the post-transaction balances newbalanceOrig / newbalanceDest


def _type_flag(t: str) -> Feature:
    return Feature(f"type_{t}", "int8", f"type == '{t}'", lambda x: x.flag(x.type == t))


FEATURES: tuple[Feature, ...] = (
    Feature("log_amount", "double", "log1p(amount)", lambda x: x.log1p(x.amount)),
    Feature("log_oldbalance_orig", "double", "log1p(oldbalanceOrg)", lambda x: x.log1p(x.oldbalanceOrg)),
    Feature("log_oldbalance_dest", "double", "log1p(oldbalanceDest)", lambda x: x.log1p(x.oldbalanceDest)),
    Feature(
        "log_newbalance_orig",
        "double",
        "log1p(newbalanceOrig)",
        lambda x: x.log1p(x.newbalanceOrig),
        after_the_fact=True,
    ),
    Feature(
        "log_newbalance_dest",
        "double",
        "log1p(newbalanceDest)",
        lambda x: x.log1p(x.newbalanceDest),
        after_the_fact=True,
    ),
    *(_type_flag(t) for t in TRANSACTION_TYPES),
    Feature(
        "balance_error_orig",
        "double",
        "newbalanceOrig + amount - oldbalanceOrg",
        lambda x: x.newbalanceOrig + x.amount - x.oldbalanceOrg,
        after_the_fact=True,
    ),
    Feature(
        "balance_error_dest",
        "double",
        "oldbalanceDest + amount - newbalanceDest",
        lambda x: x.oldbalanceDest + x.amount - x.newbalanceDest,
        after_the_fact=True,
    ),
    Feature("orig_zero_before", "int8", "oldbalanceOrg == 0", lambda x: x.flag(x.oldbalanceOrg == 0)),
    Feature("dest_zero_before", "int8", "oldbalanceDest == 0", lambda x: x.flag(x.oldbalanceDest == 0)),
    Feature(
        "orig_zero_after", "int8", "newbalanceOrig == 0", lambda x: x.flag(x.newbalanceOrig == 0), after_the_fact=True
    ),
    Feature(
        "dest_unchanged_zero",
        "int8",
        "oldbalanceDest == 0 and newbalanceDest == 0",
        lambda x: x.flag((x.oldbalanceDest == 0) & (x.newbalanceDest == 0)),
        after_the_fact=True,
    ),
    Feature(
        "amount_is_whole_balance",
        "int8",
        "|amount - oldbalanceOrg| < 0.005",
        lambda x: x.flag(x.abs(x.amount - x.oldbalanceOrg) < CENT),
    ),
    Feature(
        "amount_to_balance", "double", "amount / (oldbalanceOrg + 1)", lambda x: x.amount / (x.oldbalanceOrg + 1.0)
    ),
    Feature("merchant_dest", "int8", "nameDest starts with 'M'", lambda x: x.flag(x.starts_with(x.nameDest, "M"))),
    Feature("hour_of_day", "int8", "step % 24", lambda x: x.step % 24),
    Feature("day", "int8", "(step - 1) // 24", lambda x: x.floor_div(x.step - 1, 24)),
)

FEATURE_SETS: dict[str, tuple[str, ...]] = {
    "full": tuple(f.name for f in FEATURES),
    "realtime_safe": tuple(f.name for f in FEATURES if not f.after_the_fact),
}
FEATURE_SPEC_VERSION = (
    "fs-"
    + hashlib.sha256(
        json.dumps([(f.name, f.dtype, f.formula, f.after_the_fact) for f in FEATURES]).encode()
    ).hexdigest()[:10]
)


def feature_names(feature_set: str = "full") -> tuple[str, ...]:
    try:
        return FEATURE_SETS[feature_set]
    except KeyError:
        raise DataValidationError(
            f"unknown feature set {feature_set!r}; choose one of {sorted(FEATURE_SETS)}"
        ) from None


_FORMULAS = {name: tuple(f.compute for f in FEATURES if f.name in set(names)) for name, names in FEATURE_SETS.items()}


def _formulas(feature_set: str) -> tuple[Callable[[Any], Any], ...]:
    """The feature set's formulas, in its order; an unknown set is refused as ``feature_names`` refuses it."""
    if feature_set not in _FORMULAS:
        feature_names(feature_set)
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
