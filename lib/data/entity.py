"""Per-account memory, offline (issue 33): the entity features of ``lib.features`` (windowed features of a
transaction's destination and origin accounts, and label-delayed fraud counts) computed point in time, in Spark.

The rule, stated once in ``lib.features.history`` and held by tests with mutants:

* a transaction at step ``s`` sees the transactions of its accounts at steps before ``s``, never its own
  step: rows of one step have no order in PaySim (a user's timestamped data maps onto steps by
  flooring its time to the hour since its first hour, as ``step`` is defined in ``lib.schema``);
* the label of a transaction at step ``t`` is visible from step ``t + label_delay`` on (the stream's
  ``--label-delay-steps`` and 06's ``LABEL_DELAY_STEPS``: the replay publishes it before the first
  transaction of that step), so a label-delayed feature at ``s`` counts steps ``t <= s - max(label_delay, 1)``.

History before the data's first step is empty: early transactions see less, as a new deployment would.
"""

import numpy as np

from lib.features import ENTITY_FEATURES, NEVER_SEEN, SINCE_CAP, EntityFeature, history

EXACT = "decimal(38,6)"  # amounts summed exactly (to a millionth): the same bits in any partitioning, on any cluster


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


def entity_columns(
    columns: dict[str, np.ndarray], label_delay: int, spec: tuple[EntityFeature, ...] = ENTITY_FEATURES
) -> dict[str, np.ndarray]:
    """The same features as ``entity_features``, by NumPy, for transactions held in memory (a file scored as
    it is, 05's real rows): ``columns`` has ``step``, ``amount``, ``nameOrig``, ``nameDest`` and ``isFraud``; each
    feature comes back as an array in the rows' order. Amounts are summed as whole millionths, as Spark's
    decimals are (int64 running totals, whose differences stay exact even where a total wraps around), so
    the values are Spark's; distinct senders are counted row by row: meant for files, not for the month."""
    if label_delay < 0:
        raise ValueError(f"label_delay must be >= 0 (got {label_delay})")
    step = np.asarray(columns["step"], dtype=np.int64)
    micros = np.rint(np.asarray(columns["amount"], dtype=np.float64) * 1e6).astype(np.int64)
    fraud = np.asarray(columns["isFraud"], dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    for entity in ("nameDest", "nameOrig"):
        features = [f for f in spec if f.entity == entity]
        if not features:
            continue
        account = np.unique(np.asarray(columns[entity]).astype(str), return_inverse=True)[1].astype(np.int64)
        # one bucket per (account, step), keyed account * steps + step: sorted by account, then step
        steps = int(step.max()) + 1
        buckets, row_bucket = np.unique(account * steps + step, return_inverse=True)
        b_account, b_step = buckets // steps, buckets % steps
        totals = {"n": np.ones(len(step), np.int64), "amount": micros, "frauds": fraud}
        running = {}
        for name, values in totals.items():
            per_bucket = np.zeros(len(buckets), np.int64)
            np.add.at(per_bucket, row_bucket, values)
            with np.errstate(over="ignore"):
                running[name] = np.concatenate([[0], np.cumsum(per_bucket)])
        first_of_account = np.searchsorted(b_account, b_account, side="left")  # per bucket: its account's first
        for feature in features:
            first, last = history(feature, label_delay)
            # the buckets of the row's account with step in [s + first, s + last]: a range of bucket indices
            hi = np.searchsorted(buckets, account * steps + step + last, side="right")
            if first is None:
                lo = first_of_account[row_bucket]
            else:
                lo = np.searchsorted(buckets, account * steps + np.maximum(step + first, 0), side="left")
            lo = np.minimum(lo, hi)  # nothing visible (also where s + last falls before the account's range)
            count = running["n"][hi] - running["n"][lo]
            with np.errstate(over="ignore"):
                total = (running["amount"][hi] - running["amount"][lo]) / 1e6
            out[feature.name] = _numpy_aggregate(feature, count, total, running, lo, hi, b_step, step, columns, row_bucket)
    return {f.name: out[f.name] for f in spec}


def _numpy_aggregate(feature, count, total, running, lo, hi, b_step, step, columns, row_bucket) -> np.ndarray:
    match feature.aggregation:
        case "count":
            return count
        case "sum":
            return total
        case "mean":
            return np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        case "frauds":
            return (running["frauds"][hi] - running["frauds"][lo]).astype(np.int64)
        case "steps_since_first":
            since = step - b_step[np.minimum(lo, len(b_step) - 1)]  # lo: the account's first bucket
            return np.where(hi > lo, np.minimum(since, SINCE_CAP), NEVER_SEEN).astype(np.int64)
        case "distinct_senders":
            senders = np.asarray(columns["nameOrig"]).astype(str)
            by_bucket: dict[int, set[str]] = {}
            for row, bucket in enumerate(row_bucket.tolist()):
                by_bucket.setdefault(bucket, set()).add(senders[row])
            return np.array(
                [len(set().union(*(by_bucket[b] for b in range(a, z)))) for a, z in zip(lo.tolist(), hi.tolist(), strict=True)],
                dtype=np.int64,
            )
    raise ValueError(f"unknown aggregation {feature.aggregation!r}")
