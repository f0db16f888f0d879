"""Display units, declared with a record's fields: ``auprc: Score``, ``fraud_rate: Rate``, ``alerts: Count``.

A record (a dataclass: what a pipeline step hands on, a scorecard) annotates each number with its unit,
so the run page, the verdicts and the notebooks' tables show it as what it is (a rate as percent, money
with separators) without guessing from the field's name. ``unit_of(cls, name)`` reads it back.
"""

import dataclasses
from enum import StrEnum
from typing import Annotated, Any, get_args, get_origin, get_type_hints


class Unit(StrEnum):
    COUNT = "count"  # a whole number: 12,345
    RATE = "rate"  # a share of 1, shown as percent: 0.0123 -> 1.23 %
    PCT = "pct"  # already percent: 4.20 %
    CHANGE_PCT = "change_pct"  # a change in percent, signed: +4.20 %
    PP = "pp"  # percentage points, signed: -1.50 pp
    MONEY = "money"  # in the account currency: 1,234,567
    SCORE = "score"  # a probability, AUPRC, a distance: 0.9876
    SECONDS = "seconds"
    MS = "ms"
    PER_S = "per_s"  # a rate per second: 1,234/s
    TEXT = "text"  # shown as it is


Count = Annotated[int, Unit.COUNT]
Rate = Annotated[float, Unit.RATE]
Pct = Annotated[float, Unit.PCT]
ChangePct = Annotated[float, Unit.CHANGE_PCT]
Money = Annotated[float, Unit.MONEY]
Score = Annotated[float, Unit.SCORE]
Seconds = Annotated[float, Unit.SECONDS]
Ms = Annotated[float, Unit.MS]
PerSecond = Annotated[float, Unit.PER_S]


def _unit(annotation: Any) -> Unit:
    """The unit an annotation declares (also inside ``X | None``); text for anything else."""
    if get_origin(annotation) is Annotated:
        return next((u for u in get_args(annotation)[1:] if isinstance(u, Unit)), Unit.TEXT)
    for option in get_args(annotation):  # Rate | None
        if get_origin(option) is Annotated:
            return _unit(option)
    return Unit.TEXT


_UNITS: dict[type, dict[str, Unit]] = {}


def units(cls: type) -> dict[str, Unit]:
    """``{field: unit}`` of a dataclass (read once per class)."""
    if cls not in _UNITS:
        hints = get_type_hints(cls, include_extras=True)
        _UNITS[cls] = {f.name: _unit(hints[f.name]) for f in dataclasses.fields(cls)}
    return _UNITS[cls]


def unit_of(cls: type, name: str) -> Unit:
    return units(cls)[name]
