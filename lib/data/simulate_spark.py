"""01 on Spark: the simulator's blocks of steps as Spark tasks, each validated and written to Parquet by an executor.

The driver plans the blocks (counts per step and type, the frauds, one child seed each: kilobytes,
whatever the row count) and sends each to a task, which generates its rows with the very code of
the NumPy path (``simulate_block``), checks them with the same validation and hands Arrow batches
to Spark's Parquet writer. Same seed and rows give the same rows as ``simulate_batches``: part file
``part-<block>`` holds block ``<block>``, so reading the folder in name order reads them in order.
The driver never holds the data; only the per-type counts come back.
"""

from pathlib import Path

from lib import atomic
from lib.data.simulate import BLOCK_ROWS, DriftScenario, plan_blocks, simulate_block
from lib.data.spark import spark_schema, stable_file_names
from lib.data.validate import Acquired, ValidationSummary, validate_batches
from lib.errors import DataValidationError
from lib.hashing import content_sha256


def _generator(blocks: list, offsets: list[int], drift: DriftScenario):
    """The mapInArrow function: block ids in, validated Arrow batches of those blocks out."""

    def generate(batches):
        for ids in batches:
            for i in ids.column(0).to_pylist():
                batch = simulate_block(blocks[i], drift)
                if not batch.num_rows:
                    continue
                summary = ValidationSummary(rows=offsets[i])  # rows numbered as in the whole simulation
                yield from validate_batches([batch], "simulator", summary)

    return generate


def simulate_parquet(
    spark,
    rows: int,
    seed: int,
    drift: DriftScenario | None,
    out: str | Path,
    block_rows: int = BLOCK_ROWS,
    mule_reuse: float = 0.0,
) -> Acquired:
    """Simulate ``rows`` transactions on ``spark`` into the Parquet folder ``out`` (atomically); what 01 records."""
    from pyspark.sql import functions as F

    drift = drift or DriftScenario()
    blocks = plan_blocks(rows, seed, block_rows, mule_reuse)
    offsets = [0]
    for block in blocks[:-1]:
        offsets.append(offsets[-1] + block.rows)
    frame = spark.range(0, len(blocks), 1, numPartitions=len(blocks)).mapInArrow(
        _generator(blocks, offsets, drift), spark_schema()
    )
    out = Path(out)
    with atomic.staged_dir(out) as tmp:
        try:
            frame.write.parquet(str(tmp))
        except Exception as exc:  # a task's DataValidationError arrives wrapped in Spark's own exception
            raise DataValidationError(f"simulating on Spark failed: {str(exc).splitlines()[0][:2000]}") from exc
        stable_file_names(tmp)
    counts = spark.read.parquet(str(out)).groupBy("type").agg(F.count("*").alias("n"), F.sum("isFraud").alias("f"))
    by_type = {row["type"]: (int(row["n"]), int(row["f"])) for row in counts.collect()}
    total = sum(n for n, _ in by_type.values())
    frauds = sum(f for _, f in by_type.values())
    return Acquired(
        raw_path=str(out),
        rows=total,
        frauds=frauds,
        fraud_rate=frauds / total,
        type_counts={t: n for t, (n, _) in sorted(by_type.items())},
        raw_sha256=content_sha256(out),
        engine=f"spark ({spark.sparkContext.master}, {len(blocks)} blocks)",
    )
