"""The batch route's Arrow IPC body: a table with the transaction's fields as columns, validated by the
contract's ``RULES`` (the rules every decoder derives from ``Transaction``), and the Arrow answer's bytes."""

from typing import Any

from lib import features
from lib.contract import MAX_BATCH, MAX_BODY_BYTES, RULES, FieldRule, RequestError

ARROW_STREAM = "application/vnd.apache.arrow.stream"  # the media type of the body and the answer


def arrow_stream(table: Any) -> bytes:
    """A ``pyarrow.Table`` as the bytes of an Arrow IPC stream (what the batch route takes and answers)."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def arrow_schema() -> Any:
    """``Transaction`` as the Arrow schema a client sends (``lib.serving.remote``): strings, int64 or float64."""
    import pyarrow as pa

    kinds = {str: pa.string(), int: pa.int64(), float: pa.float64()}
    return pa.schema([(r.name, kinds[r.kind]) for r in RULES if r.name not in ("isFraud", "isFlaggedFraud")])


def _structure_problems(names: list[str]) -> list[dict[str, str]]:
    """Missing, unknown and repeated columns (in one pass over the names: a body may name thousands)."""
    known = {r.name: r for r in RULES}
    seen: dict[str, int] = {}
    for name in names:
        seen[name] = seen.get(name, 0) + 1
    problems = [{"field": r.name, "reason": "Field required"} for r in RULES if r.required and r.name not in seen]
    problems += [{"field": n, "reason": "Extra inputs are not permitted"} for n in seen if n not in known]
    problems += [{"field": n, "reason": "repeated column"} for n, count in sorted(seen.items()) if count > 1]
    return problems


def _value_checks(rule: FieldRule, column: Any) -> list[tuple[Any, str]]:
    """(values breaking the rule as a boolean array, why) for one column of the right kind; a null is not bad."""
    import pyarrow as pa
    import pyarrow.compute as pc

    checks = []
    if rule.kind is str:
        values, what = pc.utf8_length(column), "String should have"
        low, high = rule.bounds.get("min_length"), rule.bounds.get("max_length")
        span = f"{low}..{high}" if low is not None else f"at most {high}"
        if low is not None or high is not None:
            checks.append((_outside(values, low, high), f"{what} {span} characters"))
    else:
        values = pc.cast(column, pa.float64(), safe=False)  # 2^60 is far beyond any bound: no exact value needed
        low, high = rule.bounds.get("ge"), rule.bounds.get("le")
        whole = " whole" if rule.kind is int else ""
        if low is not None or high is not None:
            checks.append(
                (_outside(values, low, high), f"Input should be a finite{whole} number within {low:g}..{high:g}")
            )
        if rule.kind is int:
            checks.append((pc.not_equal(values, pc.floor(values)), f"Input should be a{whole} number"))
    if rule.choices:
        allowed = pa.array(rule.choices, pa.string() if rule.kind is str else pa.float64())
        checks.append((pc.invert(pc.is_in(values if rule.kind is not str else column, allowed)),
                       f"Input should be {', '.join(repr(c) for c in rule.choices)}"))  # fmt: skip
    return checks


def _outside(values: Any, low: float | None, high: float | None) -> Any:
    """Where ``values`` are below ``low`` or above ``high`` (NaN is outside both)."""
    import pyarrow.compute as pc

    inside = [pc.greater_equal(values, low)] if low is not None else []
    inside += [pc.less_equal(values, high)] if high is not None else []
    return pc.invert(inside[0] if len(inside) == 1 else pc.and_(*inside))


def parse_arrow_batch(body: bytes) -> tuple[dict[str, Any], list[Any]]:
    """Validate a batch as an Arrow IPC stream (a table with the transaction's fields as columns) by ``RULES``,
    the rules every decoder derives from ``Transaction``; returns (column arrays for ``Scorer.score_columns``,
    transaction ids). The columns' names first, then their types, then their values.

    Errors name the column, and the first row that breaks each rule, as ``transactions.<row>.<column>``.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(body) > MAX_BODY_BYTES:
        raise RequestError(413, f"request body of {len(body):,} bytes exceeds the limit of {MAX_BODY_BYTES:,}")
    try:
        table = pa.ipc.open_stream(body).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise RequestError(400, [{"field": "body", "reason": f"not a valid Arrow IPC stream: {exc}"}]) from None
    problems = _structure_problems(table.column_names)
    if problems:
        raise RequestError(422, problems)
    if table.num_rows == 0:
        raise RequestError(422, [{"field": "transactions", "reason": "needs at least 1 transaction"}])
    if table.num_rows > MAX_BATCH:
        raise RequestError(413, f"{table.num_rows:,} transactions in one batch; the limit is {MAX_BATCH:,}")
    present = [r for r in RULES if r.name in table.column_names]
    for rule in present:
        kind = table.column(rule.name).type
        text = pa.types.is_string(kind) or pa.types.is_large_string(kind)
        number = pa.types.is_integer(kind) or pa.types.is_floating(kind)
        if (rule.kind is str and not text) or (rule.kind is not str and not number):
            wanted = "a valid string" if rule.kind is str else "a valid number"
            problems.append({"field": rule.name, "reason": f"Input should be {wanted} (the column is {kind})"})
    if problems:
        raise RequestError(422, problems)
    for rule in present:
        column = table.column(rule.name)
        bad = [(pc.is_null(column), "Field required (null)")] if not rule.nullable and column.null_count else []
        for values, reason in bad or _value_checks(rule, column):
            values = pc.fill_null(values, False)
            if pc.any(values).as_py():
                problems.append(
                    {"field": f"transactions.{pc.index(values, True).as_py()}.{rule.name}", "reason": reason}
                )
    if problems:
        raise RequestError(422, problems)
    columns = {
        r.name: table.column(r.name).to_numpy(zero_copy_only=False)
        if r.kind is str
        else pc.cast(table.column(r.name), pa.float64()).to_numpy()
        for r in present
        if r.name in features.INPUT_COLUMNS
    }
    columns["step"] = columns["step"].astype(np.int64)
    ids = (
        table.column("transaction_id").to_pylist()
        if "transaction_id" in table.column_names
        else [None] * table.num_rows
    )
    return columns, ids
