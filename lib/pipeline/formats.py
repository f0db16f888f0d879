"""Numbers as a reader wants them, by the unit their record declares (``lib.units``): rates as percent,
counts as integers, money with separators, seconds. The run page, the verdicts and the notebooks' small
tables all use ``show``; a value whose unit nobody declared is shown plainly, never by a guess from its name.

Tables: ``table(record)`` for one record (a dataclass), ``frame(records)`` for several side by side, or a
DataFrame whose ``attrs["units"]`` declares its columns' units.
"""

import dataclasses
import functools
import math
from types import SimpleNamespace
from typing import Any

from lib.units import Unit, units


def show(value: Any, unit: Unit = Unit.TEXT) -> str:
    """``value`` formatted for the reader in ``unit``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, int | float):
        return str(value)
    if unit == Unit.RATE:
        return f"{100 * value:.2f} %" if abs(value) >= 1e-4 or value == 0 else f"{100 * value:.4f} %"
    if unit == Unit.PP:
        return f"{value:+.2f} pp"
    if unit == Unit.PCT:
        return f"{value:.2f} %"
    if unit == Unit.CHANGE_PCT:
        return f"{value:+.2f} %"
    if unit == Unit.MONEY:
        return f"{value:,.0f}"
    if unit == Unit.SCORE:
        return f"{value:.4f}"
    if unit == Unit.SECONDS:
        return f"{value:,.1f} s"
    if unit == Unit.MS:
        return f"{value:,.1f} ms"
    if unit == Unit.PER_S:
        return f"{value:,.0f}/s"
    if unit == Unit.COUNT or isinstance(value, int) or float(value).is_integer():
        return f"{round(value):,}"
    return f"{value:,.4g}"


def shown(record: Any) -> SimpleNamespace:
    """Every field of a record, formatted by its declared unit, as attributes: ``shown(card).auprc``."""
    declared = units(type(record))
    return SimpleNamespace(**{name: show(getattr(record, name), unit) for name, unit in declared.items()})


def numbers(record: Any, prefix: str = "") -> dict[str, tuple[float, Unit]]:
    """The record's numeric fields, nested records and ``{name: record}`` dicts flattened (``candidates.
    xgboost_full.auprc``): ``{name: (value, unit)}`` for MLflow metrics and the run page's figures."""
    found: dict[str, tuple[float, Unit]] = {}
    for name, unit in units(type(record)).items():
        value = getattr(record, name)
        if dataclasses.is_dataclass(value):
            found.update(numbers(value, f"{prefix}{name}."))
        elif isinstance(value, dict) and value and all(dataclasses.is_dataclass(v) for v in value.values()):
            for key, item in value.items():
                found.update(numbers(item, f"{prefix}{name}.{key}."))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            found[f"{prefix}{name}"] = (float(value), unit)
    return found


def table(record: Any, title: str = "value"):
    """A one-column pandas table of a record's fields (a dataclass, each shown in its declared unit) or of a
    plain ``{name: value}`` dict (shown plainly), for a notebook cell."""
    import pandas as pd

    if dataclasses.is_dataclass(record):
        values = {k: v for k, v in shown(record).__dict__.items() if not isinstance(getattr(record, k), dict | list)}
    else:
        values = {k: show(v) for k, v in record.items()}
    return pd.DataFrame({title: values})


def frame(data: Any, columns: list[str] | None = None):
    """A styled pandas table: ``{row: record}`` (one row per record, a column per field) or a DataFrame whose
    ``attrs["units"]`` gives its columns' units (an undeclared column is shown plainly); ``columns``: only those."""
    import pandas as pd

    if isinstance(data, dict):
        declared = units(type(next(iter(data.values()))))
        data = pd.DataFrame({row: dataclasses.asdict(record) for row, record in data.items()}).T
        data = data[[c for c in data.columns if not data[c].map(lambda v: isinstance(v, dict | list)).any()]]
        data.attrs["units"] = declared
    elif isinstance(data, pd.Series):
        data = data.to_frame()
    declared = data.attrs.get("units", {})
    if columns is not None:
        data = data[columns]
    formatters = {c: functools.partial(_show_as, declared.get(str(c), Unit.TEXT)) for c in data.columns}
    return data.style.format(formatters)


def _show_as(unit: Unit, value: Any) -> str:
    return show(value, unit)
