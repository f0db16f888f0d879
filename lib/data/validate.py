"""Value checks of raw PaySim transactions with pandera, batch by batch.

Structural problems (empty file, wrong delimiter, missing column, text in a number column) are
caught while reading (see ``lib.data.acquire``); this module checks the values of rows that parsed.
Failures of all batches are summed up into one error naming the column, the check, how many rows
fail it and the first one, so a file is never half accepted.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import pandera.pandas as pa_schema
import pyarrow as pa
from pandera.errors import SchemaErrors

from lib.errors import DataValidationError
from lib.schema import AMOUNT_MAX, BALANCE_COLUMNS, LABEL_COLUMNS, MAX_STEP, NAME_MAX, TRANSACTION_TYPES
from lib.units import Count, Rate


def _money(column: str) -> list[pa_schema.Check]:
    # inf fails the upper bound, NaN the null check: money is finite, as the API contract wants it
    return [pa_schema.Check.in_range(0, AMOUNT_MAX, error=f"{column} must be a finite number within 0..{AMOUNT_MAX:g}")]


def _name(column: str) -> list[pa_schema.Check]:
    return [pa_schema.Check.str_length(1, NAME_MAX, error=f"{column} must have 1..{NAME_MAX} characters")]


_CHECKS: dict[str, list[pa_schema.Check]] = {
    "step": [pa_schema.Check.in_range(1, MAX_STEP, error=f"step must be within 1..{MAX_STEP}")],
    "type": [pa_schema.Check.isin(TRANSACTION_TYPES, error=f"type must be one of {', '.join(TRANSACTION_TYPES)}")],
    "amount": _money("amount"),
    "nameOrig": _name("nameOrig"),
    "nameDest": _name("nameDest"),
    **{c: _money(c) for c in BALANCE_COLUMNS},
    **{c: [pa_schema.Check.isin([0, 1], error=f"{c} must be 0 or 1")] for c in LABEL_COLUMNS},
}
# the labels may be absent (files to score); the reader has already required every other column
TRANSACTION_SCHEMA = pa_schema.DataFrameSchema(
    {name: pa_schema.Column(checks=checks, nullable=False, required=name not in LABEL_COLUMNS) for name, checks in _CHECKS.items()},
    strict=False,
)


@dataclass
class ValidationSummary:
    """What a validated stream contained."""

    rows: int = 0
    frauds: int = 0
    type_counts: dict[str, int] = field(default_factory=dict)
    # (column, problem) -> [count of bad rows, first bad row (1-based), first bad value]
    failures: dict[tuple[str, str], list] = field(default_factory=dict)

    def add_failures(self, errors: SchemaErrors, offset: int) -> None:
        cases = errors.failure_cases
        for (column, check), group in cases.groupby(["column", "check"], sort=False, dropna=False):
            index = group["index"].dropna()
            first = int(index.min()) if len(index) else -1
            value = group.loc[index.idxmin(), "failure_case"] if len(index) else None
            key = (str(column), _problem(str(check)))
            entry = self.failures.setdefault(key, [0, None, None])
            entry[0] += index.nunique() if len(index) else 1
            if entry[1] is None and first >= 0:
                entry[1], entry[2] = offset + first + 1, value

    def error(self, source: str) -> DataValidationError:
        lines = [f"{source}: {len(self.failures)} problem(s) found in {self.rows:,} rows; nothing was written."]
        for (column, problem), (count, row, value) in self.failures.items():
            where = f", first at row {row} (value {value!r})" if row else ""
            lines.append(f"  column `{column}`: {count:,} row(s) fail '{problem}'{where}")
        lines.append("Fix those rows in the source (or drop them) and run again.")
        return DataValidationError("\n".join(lines))


def _problem(check: str) -> str:
    return {"not_nullable": "must not be empty"}.get(check, check)


def validate_batches(
    batches: Iterable[pa.RecordBatch], source: str, summary: ValidationSummary
) -> Iterator[pa.RecordBatch]:
    """Pass batches through while checking them; raise one DataValidationError at the end if any failed.

    Bad batches are not passed on, so a writer downstream never sees them, and it is told about the
    failure by the exception before it commits anything.
    """
    for batch in batches:
        frame = batch.to_pandas()
        try:
            TRANSACTION_SCHEMA.validate(frame, lazy=True)
        except SchemaErrors as errors:
            summary.add_failures(errors, summary.rows)
        else:
            if not summary.failures:
                yield batch
        summary.rows += batch.num_rows
        summary.frauds += int(frame["isFraud"].sum()) if "isFraud" in frame else 0
        for t, n in frame["type"].value_counts().items():
            summary.type_counts[t] = summary.type_counts.get(t, 0) + int(n)
    if summary.rows == 0:
        raise DataValidationError(f"{source}: has a header but no rows; nothing was written.")
    if summary.failures:
        raise summary.error(source)


@dataclass(frozen=True)
class Acquired:
    """What 01_acquire wrote: the validated raw data and its counts."""

    raw_path: str
    rows: Count
    frauds: Count
    fraud_rate: Rate
    type_counts: dict[str, int]
    raw_sha256: str
    engine: str  # what made it: one process, or Spark and its master
