"""Per-account memory, offline (issue 33, part 1, in progress): windowed features of a transaction's
destination and origin accounts, and label-delayed fraud counts, point in time, in Spark.

The rule, stated here once (``history``) and held by tests with mutants:

* a transaction at step ``s`` sees the transactions of its accounts at steps before ``s``, never its own
  step: rows of one step have no order in PaySim (a user's timestamped data maps onto steps by
  flooring its time to the hour since its first hour, as ``step`` is defined in ``lib.schema``);
* the label of a transaction at step ``t`` is visible from step ``t + label_delay`` on (the stream's
  ``--label-delay-steps`` and 06's ``LABEL_DELAY_STEPS``: the replay publishes it before the first
  transaction of that step), so a label-delayed feature at ``s`` counts steps ``t <= s - max(label_delay, 1)``.

History before the data's first step is empty: early transactions see less, as a new deployment would.
Not yet in 02's output, in any candidate or in serving: those are the rest of issue 33 and issue 34.
"""

from dataclasses import dataclass
from typing import Literal

Entity = Literal["nameDest", "nameOrig"]
Aggregation = Literal["count", "sum", "mean", "distinct_senders", "steps_since_first", "frauds"]

EXACT = "decimal(38,6)"  # amounts summed exactly (to a millionth): the same bits in any partitioning, on any cluster
SINCE_CAP = 720  # steps since first seen, capped at 30 days; an account never seen before is NEVER_SEEN
NEVER_SEEN = -1


@dataclass(frozen=True)
class EntityFeature:
    """One feature of an account's history: ``aggregation`` of its transactions (incoming for ``nameDest``,
    outgoing for ``nameOrig``) over the ``window`` steps before the transaction's (None: all history)."""

    name: str
    entity: Entity
    aggregation: Aggregation
    window: int | None
    needs_labels: bool = False


def _windows(entity: Entity, prefix: str, aggregations: tuple[Aggregation, ...], windows: tuple[int, ...]):
    return tuple(EntityFeature(f"{prefix}_{a}_{w}", entity, a, w) for w in windows for a in aggregations)


ENTITY_FEATURES: tuple[EntityFeature, ...] = (
    *_windows("nameDest", "dest", ("count", "sum", "mean"), (1, 24, 168)),
    EntityFeature("dest_distinct_senders_24", "nameDest", "distinct_senders", 24),
    EntityFeature("dest_steps_since_first", "nameDest", "steps_since_first", None),
    EntityFeature("dest_frauds_168", "nameDest", "frauds", 168, needs_labels=True),
    *_windows("nameOrig", "orig", ("count", "sum"), (24,)),
)


def history(feature: EntityFeature, label_delay: int) -> tuple[int | None, int]:
    """The steps a transaction at step ``s`` may see for ``feature``, as offsets from ``s`` (first, last;
    first None: from the beginning): the rule of this module's docstring."""
    last = -max(label_delay, 1) if feature.needs_labels else -1
    return (-feature.window if feature.window is not None else None), last


def entity_features(
    frame,
    label_delay: int,
    spec: tuple[EntityFeature, ...] = ENTITY_FEATURES,
    keys: tuple[str, ...] = ("transaction_id",),
):
    """``frame`` (raw transactions) -> its ``keys`` columns and one column per feature of ``spec``. Each
    account's transactions are bucketed by step once, the windows run over those buckets (a range over
    steps), and the buckets join back on (account, step)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if label_delay < 0:
        raise ValueError(f"label_delay must be >= 0 (got {label_delay})")
    result = frame.select(*dict.fromkeys((*keys, "step", "nameDest", "nameOrig")))
    for entity in ("nameDest", "nameOrig"):
        features = [f for f in spec if f.entity == entity]
        if not features:
            continue
        senders = [F.collect_set("nameOrig").alias("senders")] if any(
            f.aggregation == "distinct_senders" for f in features
        ) else []  # fmt: skip
        buckets = frame.groupBy(entity, "step").agg(
            F.count(F.lit(1)).alias("n"),
            F.sum(F.col("amount").cast(EXACT)).alias("amount"),
            F.sum(F.col("isFraud").cast("long")).alias("frauds"),
            *senders,
        )
        columns, window = [F.col(entity), F.col("step")], Window.partitionBy(entity).orderBy("step")
        for feature in features:
            first, last = history(feature, label_delay)
            seen = window.rangeBetween(Window.unboundedPreceding if first is None else first, last)
            columns.append(_aggregate(feature, seen, first, last).alias(feature.name))
        result = result.join(buckets.select(*columns), [entity, "step"], "left")
    return result.select(*keys, *(f.name for f in spec))


def _aggregate(feature: EntityFeature, seen, first: int | None, last: int):
    from pyspark.sql import functions as F

    if first is not None and first > last:  # nothing is visible yet (a label delay longer than the window)
        return F.lit(0).cast("long" if feature.aggregation != "mean" else "double")
    count = F.coalesce(F.sum("n").over(seen), F.lit(0)).cast("long")
    total = F.coalesce(F.sum("amount").over(seen), F.lit(0).cast(EXACT))
    match feature.aggregation:
        case "count":
            return count
        case "sum":
            return total.cast("double")
        case "mean":
            return F.when(count > 0, total.cast("double") / count).otherwise(F.lit(0.0))
        case "frauds":
            return F.coalesce(F.sum("frauds").over(seen), F.lit(0)).cast("long")
        case "distinct_senders":
            return F.size(F.array_distinct(F.flatten(F.collect_list("senders").over(seen)))).cast("long")
        case "steps_since_first":
            since = F.col("step") - F.min("step").over(seen)
            return F.when(since.isNull(), F.lit(NEVER_SEEN)).otherwise(F.least(since, F.lit(SINCE_CAP))).cast("long")
    raise ValueError(f"unknown aggregation {feature.aggregation!r}")
