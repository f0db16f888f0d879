"""04 on a Spark cluster: XGBoost's own Spark estimator (``xgboost.spark.SparkXGBClassifier``).

The train and validation windows are read from the processed Parquet through Spark and never
collected to the driver. One XGBoost worker per executor trains on its partitions (XGBoost's own
collective), stopped early on the validation window (``validation_indicator_col``), with the
parameters and imbalance weighting of the local trainer. The result is the same native ``Booster``,
so the candidate, its bundle, the registry gate, the APIs and the stream do not change.

Validation AUPRC is computed by Spark too: the kept trees score the validation window on the
executors, and average precision is summed over the distinct scores in descending order, exactly as
scikit-learn computes it on one machine.
"""

import logging
import time
from pathlib import Path

import numpy as np
import xgboost as xgb

from lib.data.processed import read_manifest
from lib.data.spark import executors
from lib.features import feature_names
from lib.model.train import (
    LABEL,
    MIN_LOGLOSS_GAIN,
    Candidate,
    booster_params,
    early_stopping_rule,
    positive_weight,
    xgboost_candidate,
)

VALIDATION = "is_validation"
FEATURES = "features"


def windows_frame(spark, processed: str | Path, feature_set: str):
    """The train and validation windows as one DataFrame: the feature columns, the features as one float32
    array (``features``), the label and ``is_validation``.

    XGBoost gets the array column, not the list of columns: with a list, xgboost.spark 3.2 fails on any
    Arrow chunk that holds only train or only validation rows (``KeyError: 'values'`` in
    ``create_dmatrix_from_partitions``; the array path checks for empty chunks).
    """
    from pyspark.sql import functions as F

    names = list(feature_names(feature_set))
    splits = [str(Path(processed) / f"split={split}") for split in ("train", "validation")]
    frame = spark.read.option("basePath", str(processed)).parquet(*splits)  # the split column comes from the paths
    return frame.select(
        *names, F.array(*names).cast("array<float>").alias(FEATURES), F.col(LABEL).cast("int").alias(LABEL),
        (F.col("split") == "validation").alias(VALIDATION),
    )  # fmt: skip


def fit_xgboost(
    spark,
    processed: str | Path,
    feature_set: str,
    *,
    seed: int,
    pos_weight: str | float = "sqrt",
    max_rounds: int = 500,
    early_stopping: int = 30,
    learning_rate: float = 0.1,
    max_depth: int = 6,
    num_workers: int = 0,
) -> Candidate:
    """The XGBoost candidate of ``feature_set``, trained by ``num_workers`` Spark tasks (default: one per executor)."""
    from xgboost.spark import SparkXGBClassifier

    train_counts = read_manifest(processed)["splits"]["train"]
    weight = positive_weight(pos_weight, train_counts["frauds"], train_counts["rows"])
    params = booster_params(seed, weight, learning_rate, max_depth)
    del params["objective"]  # SparkXGBClassifier sets binary:logistic itself and refuses it as a parameter
    workers = num_workers or executors(spark)
    estimator = SparkXGBClassifier(
        features_col=FEATURES, label_col=LABEL, validation_indicator_col=VALIDATION,
        num_workers=workers, n_estimators=max_rounds, callbacks=[early_stopping_rule(early_stopping)], verbose=False,
        random_state=params.pop("seed"), **params,
    )  # fmt: skip
    logging.getLogger("XGBoost-PySpark").setLevel(logging.WARNING)  # no INFO line per training phase
    frame = windows_frame(spark, processed, feature_set)
    began = time.perf_counter()
    model = estimator.fit(frame)
    seconds = time.perf_counter() - began
    booster = model.get_booster()
    best = booster.best_iteration
    kept = booster[: best + 1]
    summary = model.training_summary
    history = {
        **{f"train_{k}": v for k, v in summary.train_objective_history.items()},
        **{f"validation_{k}": v for k, v in summary.validation_objective_history.items()},
    }
    logged = {
        **booster_params(seed, weight, learning_rate, max_depth), "eval_metric": "aucpr,logloss",
        "max_rounds": max_rounds, "pos_weight": pos_weight, "trainer": "spark", "num_workers": workers,
        "early_stopping": f"validation logloss, {early_stopping} rounds, min gain {MIN_LOGLOSS_GAIN}",
    }  # fmt: skip
    validation = frame.where(VALIDATION)
    auprc = spark_average_precision(score(validation, kept, feature_set))
    return xgboost_candidate(feature_set, logged, kept, history, best, auprc, seconds)


def score(frame, booster: xgb.Booster, feature_set: str):
    """``frame`` with ``p`` (the booster's float32 fraud probability) and the label ``y``, scored on the executors."""
    import pandas as pd

    raw = booster.save_raw("ubj")
    names = list(feature_names(feature_set))

    def predict(frames):
        model = xgb.Booster(model_file=bytearray(raw))
        model.set_param({"nthread": 1})
        for chunk in frames:
            probability = model.inplace_predict(chunk[names].to_numpy(np.float32))
            yield pd.DataFrame({"p": probability.astype(np.float32), "y": chunk[LABEL].to_numpy(np.int32)})

    return frame.select(*names, LABEL).mapInPandas(predict, "p float, y int")


def spark_average_precision(scored) -> float:
    """``lib.quality.average_precision`` of ``scored`` (columns ``p``, ``y``) computed by Spark where the
    predictions are, not on the driver: sum over distinct scores, highest first, of (frauds at that score /
    all frauds) * precision there (``tests/integration/test_spark_cluster.py`` holds the two equal)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    by_score = scored.groupBy("p").agg(F.sum("y").alias("tp"), F.count("*").alias("n"))
    upto = Window.orderBy(F.desc("p")).rowsBetween(Window.unboundedPreceding, Window.currentRow)
    cumulative = by_score.select("tp", F.sum("tp").over(upto).alias("ctp"), F.sum("n").over(upto).alias("cn"))
    row = cumulative.agg(F.sum(F.col("tp") * F.col("ctp") / F.col("cn")).alias("s"), F.sum("tp").alias("frauds"))
    totals = row.first()
    return float(totals["s"] / totals["frauds"]) if totals["frauds"] else float("nan")
