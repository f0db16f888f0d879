"""Pipeline parameters checked before anything runs: the type of the notebook's default, and a range.

A value from a profile or ``-p`` must have the type of the default in the notebook's ``parameters``
cell (a whole number for ``ROWS = 200_000``, a number for ``DRIFT_AMOUNT_FACTOR = 1.0``, ``true``/
``false`` for a flag, text for a path or a name; numbers are accepted as text), and lie in the
range below when it has one. Papermill itself would inject anything, and a notebook would fail
later with a raw ``TypeError``, or silently misbehave (``SAMPLE_SIZE=-1`` dropped one row).
"""

import ast
import math
from typing import Any

from lib.errors import ParameterError
from lib.schema import N_STEPS

# name: (low, high, inclusive high) ; None = unbounded on that side
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "ROWS": (1, None, True),
    "SEED": (0, None, True),
    "TRAIN_SEED": (0, None, True),
    "SAMPLE_SIZE": (0, None, True),
    "FIDELITY_ROWS": (0, None, True),
    "DRIFT_START_STEP": (0, N_STEPS, True),
    "DRIFT_AMOUNT_FACTOR": (0, None, True),
    "MULE_REUSE": (0, 1, True),
    "TRAIN_END_STEP": (1, N_STEPS - 2, True),
    "VALIDATION_END_STEP": (2, N_STEPS - 1, True),
    "XGB_MAX_ROUNDS": (1, None, True),
    "XGB_EARLY_STOPPING_ROUNDS": (1, None, True),
    "XGB_LEARNING_RATE": (0, 1, True),
    "XGB_MAX_DEPTH": (1, 30, True),
    "MLP_EPOCHS": (1, None, True),
    "MLP_BATCH_SIZE": (1, None, True),
    "MLP_PATIENCE": (1, None, True),
    "REVIEW_COST": (0, None, True),
    "TARGET_FPR": (0, 1, False),
    "ALERT_BUDGET_PER_DAY": (1, None, True),
    "SHAP_SAMPLE_ROWS": (1, None, True),
    "STREAM_RATE": (0, None, True),
    "LABEL_DELAY_STEPS": (0, N_STEPS, True),
    "LABEL_MISSING_SHARE": (0, 1, False),
    "STREAM_LIMIT": (0, None, True),
    "PARTITIONS": (1, None, True),
    "BATCH_SIZE": (1, None, True),
    "BATCH_TIMEOUT_MS": (0, None, True),
    "STORE_LOG_SHARE": (0, 1, True),
    "DRIFT_SAMPLE_ROWS": (0, None, True),
    "DRIFT_THRESHOLD": (0, 1, True),
    "DRIFT_SHARE": (0, 1, True),
}
EXCLUSIVE_LOW = {"DRIFT_AMOUNT_FACTOR", "XGB_LEARNING_RATE", "TARGET_FPR", "DRIFT_THRESHOLD", "DRIFT_SHARE"}


def check(name: str, value: Any, default: str | None, notebook: str) -> Any:
    """``value`` for parameter ``name`` whose notebook default is the literal ``default``; raises ParameterError."""
    expected = ast.literal_eval(default) if default else None
    if isinstance(expected, bool):
        if not isinstance(value, bool):
            raise _wrong(name, value, "true or false", notebook, default)
    elif isinstance(expected, int):
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise _wrong(name, value, "a whole number", notebook, default)
        value = int(value)
    elif isinstance(expected, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise _wrong(name, value, "a number", notebook, default)
        value = float(value)
    elif isinstance(expected, str):
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)  # POS_WEIGHT=2.5, DVC_REMOTE=123: numbers are fine as text
        if not isinstance(value, str):
            raise _wrong(name, value, "text (a path, a URL or a name)", notebook, default)
    _in_range(name, value)
    return value


def _in_range(name: str, value: Any) -> None:
    if name not in RANGES or isinstance(value, str):
        return
    low, high, high_inclusive = RANGES[name]
    below = low is not None and (value <= low if name in EXCLUSIVE_LOW else value < low)
    above = high is not None and (value > high if high_inclusive else value >= high)
    if below or above:
        left = "(" if name in EXCLUSIVE_LOW else "["
        right = "]" if high_inclusive else ")"
        span = f"{left}{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}{right}"
        raise ParameterError(f"{name}={value!r} is out of range: it must lie in {span}")


def _wrong(name: str, value: Any, what: str, notebook: str, default: str | None) -> ParameterError:
    return ParameterError(
        f"{name}={value!r} ({type(value).__name__}): {notebook} expects {what}, like its default {name} = {default}"
    )
