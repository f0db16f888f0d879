"""The Spark feature job: raw transactions -> features of the one spec, split by time, as Parquet + manifest.

An explicit schema (no inference); the row features are one ``select`` whose expressions are
generated from ``lib.features``; the entity features (each account's history, point in time:
``lib.data.entity``) need shuffles, after which every row goes back to its input partition and its
place there, so the output is the same bytes whatever the cluster. A split label from ``step``, and a
write partitioned by split into a temporary folder that replaces the output only when complete.
"""

import json
import math
import operator
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import reduce
from pathlib import Path

import pyarrow.parquet as pq
from pyspark.sql import functions as F

from lib import atomic
from lib.config import project_relative
from lib.data.entity import entity_features
from lib.data.processed import KEPT_COLUMNS, MANIFEST, SPLITS, SplitWindows
from lib.errors import DataValidationError
from lib.features import (
    ENTITY_FEATURES,
    FEATURE_SETS,
    FEATURE_SPEC_VERSION,
    FEATURES,
    INPUT_COLUMNS,
    LABEL_DELAY_STEPS,
    describe,
    describe_entities,
)
from lib.hashing import file_sha256
from lib.data.spark import spark_schema, stable_file_names
from lib.schema import RAW_COLUMNS

class SparkBackend:
    """Evaluates ``lib.features`` formulas into Spark Column expressions."""

    def __getattr__(self, name: str):
        if name in RAW_COLUMNS:
            return F.col(name)
        raise AttributeError(name)

    log1p = staticmethod(F.log1p)
    abs = staticmethod(F.abs)

    @staticmethod
    def flag(condition):
        return condition.cast("int")

    @staticmethod
    def starts_with(column, prefix: str):
        return column.startswith(prefix)

    @staticmethod
    def floor_div(column, divisor: int):
        return F.floor(column / divisor).cast("int")


def feature_columns(frame):
    """``frame``'s feature columns (the full spec, in spec order) as Spark expressions."""
    backend = SparkBackend()
    spark_types = {"double": "double", "int8": "tinyint"}
    return [feature.compute(backend).cast(spark_types[feature.dtype]).alias(feature.name) for feature in FEATURES]


def _check_input(source: str, spark) -> None:
    """Missing columns or wrong types stop the job before anything is written."""
    from pyspark.sql import types as T

    if _is_parquet(source):
        found = {f.name: f.dataType for f in spark.read.parquet(source).schema.fields}
    elif "://" in source:  # a CSV on cluster storage: the FAILFAST read names bad rows
        return
    else:
        with open(source) as handle:
            found = {name.strip().strip('"'): None for name in handle.readline().strip().split(",")}
    missing = [c for c in RAW_COLUMNS if c not in found]
    if missing:
        raise DataValidationError(
            f"{source}: missing column(s) {missing}; the preprocess job needs {list(RAW_COLUMNS)}"
        )
    expected = {f.name: f.dataType for f in spark_schema().fields}
    for name, dtype in found.items():
        if dtype is None or name not in expected:
            continue
        numeric_wanted = not isinstance(expected[name], T.StringType)
        if numeric_wanted != isinstance(dtype, T.NumericType):
            raise DataValidationError(
                f"{source}: column `{name}` is {dtype.simpleString()} but must be {expected[name].simpleString()}; "
                "run 01_acquire (or `python -m lib validate`) on the source first"
            )


def _is_parquet(source: str) -> bool:
    return source.rstrip("/").endswith(".parquet") or os.path.isdir(source)


def read_raw(spark, source: str):
    """Raw transactions from Parquet (01_acquire's output) or CSV, always with the explicit schema."""
    _check_input(source, spark)
    reader = spark.read.schema(spark_schema())
    if _is_parquet(source):
        return reader.parquet(source)
    return reader.option("header", True).option("mode", "FAILFAST").csv(source)


def even_split_bytes(spark, source: str) -> int | None:
    """A split size that gives every core the same share of a local CSV, or None (keep Spark's).

    Spark cuts files into splits of at most 128 MB: a 475 MB file becomes 4 tasks, and on 2 cores the
    last round runs one short task while the other core idles. Here the number of splits is a
    multiple of the cores and all splits are the same size. Parquet inputs split by row group: left alone.
    """
    if "://" in source or _is_parquet(source):
        return None
    size = Path(source).stat().st_size
    cores = spark.sparkContext.defaultParallelism
    configured = spark.conf.get("spark.sql.files.maxPartitionBytes")  # "134217728b", "128m", ...
    default = spark.sparkContext._jvm.org.apache.spark.network.util.JavaUtils.byteStringAsBytes(configured)
    rounds = max(1, math.ceil(size / (default * cores)))
    return max(1, math.ceil(size / (rounds * cores)))


@contextmanager
def _session_conf(spark, key: str, value) -> Iterator[None]:
    """Set a SQL conf for the duration of the block (None: leave it), then restore the previous value."""
    if value is None:
        yield
        return
    previous = spark.conf.get(key, None)
    spark.conf.set(key, str(value))
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)


def _required(raw):
    """``raw``, failing the job where a column it reads is null, naming the column(s) and the row.

    An empty CSV field parses as null even in FAILFAST mode; without this it would become null features.
    One predicate, whose message is built only for a bad row, so good rows pay ten null checks.
    """
    used = [c for c in raw.columns if c in (*KEPT_COLUMNS, *INPUT_COLUMNS)]
    empty = F.concat_ws(", ", *[F.when(F.col(c).isNull(), F.lit(f"`{c}`")) for c in used])
    row = F.to_json(F.struct(*[F.col(c) for c in raw.columns]))
    bad = F.raise_error(F.concat(F.lit("empty value in column(s) "), empty, F.lit(" of the row "), row))
    return raw.filter(F.when(reduce(operator.or_, [F.col(c).isNull() for c in used]), bad).otherwise(F.lit(True)))


def build_features(raw, windows: SplitWindows, label_delay: int = LABEL_DELAY_STEPS):
    """Kept raw columns, every feature of the spec, every entity feature (labels visible ``label_delay``
    steps after their transaction), and the split label, in the input's order."""
    raw = _required(raw)
    split = (
        F.when(F.col("step") <= windows.train_end, "train")
        .when(F.col("step") <= windows.validation_end, "validation")
        .otherwise("test")
    )
    # each row's input partition and place in it (fixed by the input split), to restore after the shuffles
    placed = raw.withColumn("_part", F.spark_partition_id()).withColumn("_row", F.monotonically_increasing_id())
    remembered = entity_features(placed, label_delay, keys=tuple(placed.columns))
    rows = remembered.repartition(raw.rdd.getNumPartitions(), "_part").sortWithinPartitions("_row")
    return rows.select(
        *[F.col(c) for c in KEPT_COLUMNS],
        *feature_columns(rows),
        *[F.col(e.name) for e in ENTITY_FEATURES],
        split.alias("split"),
    )


def run_job(
    spark,
    source: str | Path,
    out: str | Path,
    windows: SplitWindows,
    input_sha256: str | None = None,
    label_delay: int = LABEL_DELAY_STEPS,
) -> dict:
    """Run the feature job; write ``out/split=*/`` Parquet and ``out/manifest.json`` atomically."""
    source, out = str(source), Path(out)
    if "://" not in source and not Path(source).exists():
        raise DataValidationError(f"{source}: not found; run 01_acquire first or point RAW_PATH at the raw data")
    began = time.perf_counter()
    raw = read_raw(spark, source)
    split_bytes = even_split_bytes(spark, source)
    with atomic.staged_dir(out) as tmp, _session_conf(spark, "spark.sql.files.maxPartitionBytes", split_bytes):
        try:
            build_features(raw, windows, label_delay).write.partitionBy("split").parquet(str(tmp))
        except Exception as exc:  # Spark wraps parse errors of FAILFAST reads in its own exceptions
            raise DataValidationError(
                f"{source}: the Spark job could not read it: {str(exc).splitlines()[0][:500]}\n"
                f"Find the bad rows with `python -m lib validate {source}`."
            ) from exc
        job_seconds = time.perf_counter() - began
        stable_file_names(tmp)
        counts = _split_counts(tmp)
        manifest = {
            "feature_spec_version": FEATURE_SPEC_VERSION,
            "features": describe(),
            "feature_sets": {k: list(v) for k, v in FEATURE_SETS.items()},
            "entity_features": describe_entities(),
            "label_delay_steps": label_delay,
            "kept_columns": list(KEPT_COLUMNS),
            "label": "isFraud",
            "windows": windows.as_dict(),
            "splits": counts,
            "rows": sum(c["rows"] for c in counts.values()),
            "input": project_relative(source),
            "input_sha256": input_sha256 or (file_sha256(Path(source)) if Path(source).is_file() else None),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))  # same data -> same bytes
    return {**manifest, "spark_master": spark.sparkContext.master, "job_seconds": round(job_seconds, 2)}


def _split_counts(folder: Path) -> dict[str, dict]:
    """Rows, frauds and fraud rate per split, read from the written Parquet (not a second pass over the input)."""
    counts = {}
    for split in SPLITS:
        files = sorted((folder / f"split={split}").glob("*.parquet"))
        rows = frauds = 0
        for f in files:
            table = pq.read_table(f, columns=["isFraud"])
            rows += table.num_rows
            frauds += int(table.column("isFraud").to_numpy().sum())
        counts[split] = {"rows": rows, "frauds": frauds, "fraud_rate": frauds / rows if rows else 0.0}
    return counts
