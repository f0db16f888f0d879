"""The raw PaySim transaction contract: column names, types and allowed values.

``RAW_SCHEMA`` (Arrow) is built on first use, so the scoring path (APIs, Lambda) imports these
names without pulling in pyarrow.
"""

from functools import cache
from typing import Literal, get_args

TransactionType = Literal["CASH_IN", "CASH_OUT", "DEBIT", "PAYMENT", "TRANSFER"]  # the contract's type field
TRANSACTION_TYPES: tuple[str, ...] = get_args(TransactionType)
LABEL_COLUMNS: tuple[str, ...] = ("isFraud", "isFlaggedFraud")
MAX_STEP = 744  # the contract's upper bound: PaySim's documentation counts 744 hourly steps (31 days)
N_STEPS = 743  # the steps the public data set actually has (1..743): the simulator and the windows use these

_TYPES = (
    ("step", "int32"),
    ("type", "string"),
    ("amount", "float64"),
    ("nameOrig", "string"),
    ("oldbalanceOrg", "float64"),
    ("newbalanceOrig", "float64"),
    ("nameDest", "string"),
    ("oldbalanceDest", "float64"),
    ("newbalanceDest", "float64"),
    ("isFraud", "int8"),
    ("isFlaggedFraud", "int8"),
)
RAW_COLUMNS: tuple[str, ...] = tuple(name for name, _ in _TYPES)

# The one input contract's bounds, enforced by every entry: file validation (lib validate, 01's loaders,
# lib score), both APIs and the stream (lib.contract). Amounts and balances are finite, within 0..AMOUNT_MAX
# (which keeps their sums finite in float32; the largest PaySim amount is ~9.2e7); account names have
# 1..NAME_MAX characters; step is whole, within 1..MAX_STEP; type one of TRANSACTION_TYPES; labels 0 or 1.
AMOUNT_MAX = 1e15
NAME_MAX = 64
BALANCE_COLUMNS: tuple[str, ...] = ("oldbalanceOrg", "newbalanceOrig", "oldbalanceDest", "newbalanceDest")


@cache
def _raw_schema():
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, arrow_type)()) for name, arrow_type in _TYPES])


def __getattr__(name: str):
    if name == "RAW_SCHEMA":
        return _raw_schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
