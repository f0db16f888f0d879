"""Get raw transactions from the simulator, a local file or any fsspec URL, validated and written atomically.

``SOURCE`` is ``"simulator"``, a local ``.csv``/``.parquet`` path, or a URL such as
``hf://datasets/MatrixIA/FraudData/FraudData.csv`` or ``s3://bucket/paysim.csv``. Every source
is read as a stream of Arrow record batches with the explicit raw schema, so the same code
handles 20 thousand or 600 million rows.
"""

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from lib import atomic
from lib.errors import DataValidationError, ParameterError, SourceError
from lib.hashing import file_sha256
from lib.schema import RAW_COLUMNS, RAW_SCHEMA
from lib.data.simulate import DriftScenario, simulate_batches
from lib.data.validate import Acquired, ValidationSummary, validate_batches

_CSV_BLOCK_BYTES = 64 << 20
_OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}


def is_url(source: str) -> bool:
    return "://" in str(source)


def _open_source(source: str) -> IO[bytes]:
    """Open a local path or fsspec URL for reading; failures name the source and the fix."""
    try:
        return fsspec.open(source, "rb").open() if is_url(source) else open(source, "rb")
    except FileNotFoundError as exc:
        raise SourceError(f"{source}: not found ({exc}). Check the path or URL given as SOURCE.") from exc
    except Exception as exc:  # fsspec backends raise their own network and auth errors
        raise SourceError(
            f"{source}: cannot be opened ({type(exc).__name__}: {exc}). For hf:// URLs check the dataset name "
            "and HF_TOKEN; for s3:// check the AWS credentials in the environment."
        ) from exc


def _check_header(source: str, first_line: bytes, required: tuple[str, ...] = RAW_COLUMNS) -> list[str]:
    text = first_line.decode("utf-8", errors="replace").strip()
    if not text:
        raise DataValidationError(f"{source}: the file is empty; expected a header line with {', '.join(RAW_COLUMNS)}.")
    header = [h.strip().strip('"') for h in text.split(",")]  # names are read trimmed: "step, type" is fine
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise DataValidationError(f"{source}: column(s) {', '.join(f'`{c}`' for c in repeated)} appear more than once in the header; keep one of each.")
    if len(header) == 1:
        for delimiter, name in _OTHER_DELIMITERS.items():
            if delimiter in text:
                raise DataValidationError(
                    f"{source}: columns are separated by {name}s ({delimiter!r}); expected commas. "
                    "Re-save the file as comma-separated CSV."
                )
    missing = [c for c in required if c not in header]
    if missing:
        raise DataValidationError(
            f"{source}: missing column(s) {', '.join(f'`{c}`' for c in missing)}; the header has {header}. "
            f"A PaySim file needs {', '.join(required)}."
        )
    return header


def _wanted(names: list[str], required: tuple[str, ...]) -> list[str]:
    """The required columns plus whichever other raw columns (e.g. the labels) the file has, in raw order."""
    return [c for c in RAW_COLUMNS if c in required or c in names]


_ARROW_ROW_ERROR = re.compile(r"In CSV column #(\d+): (?:Row #\d+: )?CSV conversion error to \w+: invalid value '(.*)'")


def _conversion_error(source: str, header: list[str], exc: pa.ArrowInvalid) -> DataValidationError:
    match = _ARROW_ROW_ERROR.search(str(exc))
    if not match:
        return DataValidationError(f"{source}: cannot be parsed as PaySim CSV: {exc}")
    column = header[int(match.group(1))]
    # Count every bad value of that column, reading it again as text (error path only).
    with _open_source(source) as handle:
        text = (
            pacsv.read_csv(
                handle,
                read_options=_read_options(header),
                convert_options=pacsv.ConvertOptions(include_columns=[column], column_types={column: pa.string()}),
            )
            .column(column)
            .to_numpy(zero_copy_only=False)
        )
    ok = _parses_as(text, RAW_SCHEMA.field(column).type)
    bad = np.flatnonzero(~ok)
    first = f"row {int(bad[0]) + 1}" if len(bad) else "an unknown row"
    value = text[bad[0]] if len(bad) else match.group(2)
    return DataValidationError(
        f"{source}: column `{column}` has {max(len(bad), 1):,} value(s) that are not {RAW_SCHEMA.field(column).type} "
        f"numbers, first at {first} (value {value!r}); nothing was written. Fix or remove those rows."
    )


def _parses_as(text: np.ndarray, arrow_type: pa.DataType) -> np.ndarray:
    import pandas as pd

    numbers = pd.to_numeric(pd.Series(text), errors="coerce")
    ok = numbers.notna().to_numpy()
    if pa.types.is_integer(arrow_type):
        ok &= (numbers.fillna(0) % 1 == 0).to_numpy()
    return ok


def _read_options(header: list[str]) -> pacsv.ReadOptions:
    """The header's trimmed names instead of the file's own first line."""
    return pacsv.ReadOptions(block_size=_CSV_BLOCK_BYTES, column_names=header, skip_rows=1)


def _csv_batches(source: str, required: tuple[str, ...]) -> Iterator[pa.RecordBatch]:
    with _open_source(source) as handle:
        header = _check_header(source, handle.readline(), required)
        columns = _wanted(header, required)
        handle.seek(0)
        try:
            reader = pacsv.open_csv(
                handle,
                read_options=_read_options(header),
                convert_options=pacsv.ConvertOptions(
                    column_types={c: RAW_SCHEMA.field(c).type for c in columns},
                    include_columns=columns,
                    strings_can_be_null=False,
                ),
            )
        except pa.ArrowInvalid as exc:
            raise _conversion_error(source, header, exc) from exc
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except pa.ArrowInvalid as exc:
                raise _conversion_error(source, header, exc) from exc
            yield batch


def _parquet_batches(source: str, required: tuple[str, ...]) -> Iterator[pa.RecordBatch]:
    with _open_source(source) as handle:
        try:
            parquet = pq.ParquetFile(handle)
        except pa.ArrowInvalid as exc:
            raise DataValidationError(f"{source}: is not a readable Parquet file ({exc}).") from exc
        names = parquet.schema_arrow.names
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise DataValidationError(f"{source}: column(s) {', '.join(f'`{c}`' for c in repeated)} appear more than once; keep one of each.")
        missing = [c for c in required if c not in names]
        if missing:
            raise DataValidationError(
                f"{source}: missing column(s) {', '.join(f'`{c}`' for c in missing)}; it has {names}."
            )
        columns = _wanted(names, required)
        for name in columns:
            _check_type(source, name, parquet.schema_arrow.field(name).type)
        schema = pa.schema([RAW_SCHEMA.field(c) for c in columns])
        for batch in parquet.iter_batches(columns=columns):
            try:
                yield batch.cast(schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise DataValidationError(f"{source}: a column has the wrong type for PaySim ({exc}).") from exc


def _check_type(source: str, column: str, found: pa.DataType) -> None:
    """A Parquet column must hold what the contract says: text for names and type, whole numbers for step
    and the labels, numbers for money; a bool or a string is never cast into a number."""
    wanted = RAW_SCHEMA.field(column).type
    if pa.types.is_dictionary(found):
        found = found.value_type
    if pa.types.is_string(wanted):
        ok, what = pa.types.is_string(found) or pa.types.is_large_string(found), "text"
    elif pa.types.is_integer(wanted):
        ok, what = pa.types.is_integer(found), "whole numbers"
    else:
        ok, what = pa.types.is_integer(found) or pa.types.is_floating(found) or pa.types.is_decimal(found), "numbers"
    if not ok:
        raise DataValidationError(
            f"{source}: column `{column}` has the wrong type, {found}: it must hold {what} ({wanted}); fix the file's column type."
        )


def read_batches(source: str, required: tuple[str, ...] = RAW_COLUMNS) -> Iterator[pa.RecordBatch]:
    """Stream a CSV or Parquet file (local path or fsspec URL) as batches of the raw schema.

    ``required`` names the columns the file must have (all 11 by default; scoring needs only the 9
    inputs); raw columns beyond those are read too when present.
    """
    name = str(source).lower().split("?")[0]
    if name.endswith((".parquet", ".pq")):
        return _parquet_batches(str(source), required)
    if name.endswith((".csv", ".csv.gz", ".txt")):
        return _csv_batches(str(source), required)
    raise SourceError(f"{source}: unknown file type; SOURCE must end in .csv, .csv.gz or .parquet, or be 'simulator'.")


def sample_rows(batches: Iterable[pa.RecordBatch], size: int, seed: int) -> Iterator[pa.RecordBatch]:
    """A seeded uniform sample of ``size`` rows, streamed (memory ~ size rows), kept in input order."""
    rng = np.random.default_rng(seed)
    kept: pa.Table | None = None
    kept_keys = np.zeros(0)
    offset = 0
    for batch in batches:
        keys = rng.random(batch.num_rows)
        table = pa.Table.from_batches([batch]).append_column(
            "_row", pa.array(np.arange(offset, offset + batch.num_rows))
        )
        offset += batch.num_rows
        candidates = table if kept is None else pa.concat_tables([kept, table])
        all_keys = np.concatenate([kept_keys, keys])
        if len(all_keys) > size:
            best = np.argpartition(all_keys, size)[:size]
            candidates, all_keys = candidates.take(best), all_keys[best]
        kept, kept_keys = candidates, all_keys
    if kept is None:
        return
    kept = kept.sort_by("_row").drop_columns(["_row"])
    yield from kept.combine_chunks().to_batches()


def write_batches(batches: Iterable[pa.RecordBatch], out: Path) -> Path:
    """Write batches to ``out`` (.parquet or .csv) through a temporary file; nothing is left on failure."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise SourceError(f"{out}: output must end in .parquet or .csv")
    with atomic.staged_file(out) as tmp:
        if suffix == ".parquet":
            with pq.ParquetWriter(tmp, RAW_SCHEMA, compression="snappy") as writer:
                for batch in batches:
                    writer.write_batch(batch, row_group_size=len(batch))
        else:
            with pacsv.CSVWriter(tmp, RAW_SCHEMA, write_options=pacsv.WriteOptions(quoting_style="none")) as writer:
                for batch in batches:
                    writer.write_batch(batch)
    return out


def source_batches(
    source: str, rows: int, seed: int, drift: DriftScenario | None = None, mule_reuse: float = 0.0
) -> Iterator[pa.RecordBatch]:
    """Batches of the raw schema from the simulator or a file/URL."""
    if source == "simulator":
        return simulate_batches(rows, seed, drift, mule_reuse=mule_reuse)
    if drift is not None and drift.active:
        raise SourceError("drift scenarios apply to SOURCE='simulator' only; set DRIFT_START_STEP=0 for a file")
    if mule_reuse:
        raise SourceError("MULE_REUSE applies to SOURCE='simulator' only; set MULE_REUSE=0 for a file")
    return read_batches(source)


ENGINES = ("auto", "numpy", "spark")


def engine(source: str, choice: str, spark_master: str) -> str:
    """Which engine 01 runs: ``numpy`` (one process) or ``spark`` (the simulator's blocks as Spark tasks).

    ``auto`` picks Spark for the simulator when ``SPARK_MASTER`` is a cluster; files are always read
    by one streaming process (the Spark job of 02 is where a file meets the cluster).
    """
    from lib.data.spark import is_local

    if choice not in ENGINES:
        raise ParameterError(f"SIMULATE_ENGINE={choice!r}: use one of {', '.join(ENGINES)}")
    if choice == "auto":
        return "spark" if source == "simulator" and not is_local(spark_master) else "numpy"
    if choice == "spark" and source != "simulator":
        raise ParameterError(f"SIMULATE_ENGINE=spark runs the simulator; SOURCE={source!r} is read by one process")
    return choice


def acquire(
    source: str,
    out: Path,
    rows: int,
    seed: int,
    sample_size: int = 0,
    drift: DriftScenario | None = None,
    spark=None,
    mule_reuse: float = 0.0,
) -> Acquired:
    """Load ``source``, optionally sample it, validate every row, and write ``out`` atomically.

    With a ``spark`` session (``engine(...) == "spark"``) the simulator runs on it, writing a Parquet folder.
    """
    if spark is not None:
        from lib.data.simulate_spark import simulate_parquet

        if sample_size:
            raise ParameterError("SAMPLE_SIZE samples a file SOURCE; the simulator on Spark makes exactly ROWS rows")
        return simulate_parquet(spark, rows, seed, drift, out, mule_reuse=mule_reuse)
    batches = source_batches(source, rows, seed, drift, mule_reuse)
    if sample_size:
        batches = sample_rows(batches, sample_size, seed)
    summary = ValidationSummary()
    path = write_batches(validate_batches(batches, str(source), summary), Path(out))
    return Acquired(
        raw_path=str(path),
        rows=summary.rows,
        frauds=summary.frauds,
        fraud_rate=summary.frauds / summary.rows,
        type_counts=dict(sorted(summary.type_counts.items())),
        raw_sha256=file_sha256(path),
        engine="numpy (one process)",
    )


def validate_file(path: str) -> ValidationSummary:
    """Read and check every row of ``path`` without writing anything."""
    summary = ValidationSummary()
    for _ in validate_batches(read_batches(path), str(path), summary):
        pass
    return summary


def read_window(raw_path: str | Path, first_step: int, last_step: int, limit: int = 0):
    """The raw transactions of steps ``first_step..last_step`` in ``step`` order (stable), with ids.

    ``transaction_id`` is ``t<row number in the raw file>``: the same row gets the same id in
    every replay, so results can be joined back to the labels.
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    dataset = ds.dataset(str(raw_path), format="parquet")
    step = dataset.to_table(columns=["step"]).column("step")  # one small column to find the window's rows
    rows = pc.indices_nonzero(pc.and_(pc.greater_equal(step, first_step), pc.less_equal(step, last_step)))
    table = dataset.take(rows)
    ids = [f"t{i:09d}" for i in rows.to_numpy().tolist()]
    table = table.append_column("transaction_id", pa.array(ids, pa.string()))
    table = table.take(pc.sort_indices(table, [("step", "ascending")]))  # sort_indices is stable
    return table.slice(0, limit) if limit else table
