"""The raw PaySim transaction contract: column names, types and allowed values."""

import pyarrow as pa

TRANSACTION_TYPES: tuple[str, ...] = ("CASH_IN", "CASH_OUT", "DEBIT", "PAYMENT", "TRANSFER")
LABEL_COLUMNS: tuple[str, ...] = ("isFraud", "isFlaggedFraud")
MAX_STEP = 744  # PaySim's own documentation: 744 steps of one hour (30 days)

RAW_SCHEMA = pa.schema(
    [
        ("step", pa.int32()),
        ("type", pa.string()),
        ("amount", pa.float64()),
        ("nameOrig", pa.string()),
        ("oldbalanceOrg", pa.float64()),
        ("newbalanceOrig", pa.float64()),
        ("nameDest", pa.string()),
        ("oldbalanceDest", pa.float64()),
        ("newbalanceDest", pa.float64()),
        ("isFraud", pa.int8()),
        ("isFlaggedFraud", pa.int8()),
    ]
)
RAW_COLUMNS: tuple[str, ...] = tuple(RAW_SCHEMA.names)
BALANCE_COLUMNS: tuple[str, ...] = ("oldbalanceOrg", "newbalanceOrig", "oldbalanceDest", "newbalanceDest")
