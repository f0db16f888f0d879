"""Training/serving skew of the per-account features (issue 34): the entity vectors the online store served
(06_stream's sample, ``lib.monitoring.stream_report.memory_check``) against 02's rule computed offline for the
same transactions. Equal is the contract: any mismatch is skew, counted per feature; Evidently's drift preset
compares the two distributions as well (a report to read when they differ), and the share of mismatched vectors
goes to the Pushgateway for the ``FraudFeatureSkew`` alert."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from lib.features import ENTITY_FEATURES
from lib.units import Count, Rate

OFFLINE = "offline_"  # the prefix of the offline vector's columns beside the served ones


@dataclass(frozen=True)
class SkewSummary:
    checked: Count  # served vectors compared
    mismatched: Count  # of those, different from the offline vector in at least one feature
    mismatch_share: Rate
    drift_share: Rate  # Evidently: share of the features whose served distribution drifted from the offline one
    by_feature: dict[str, int] = field(default_factory=dict)  # mismatches per feature


def skew_report(path: str | Path, threshold: float = 0.1) -> tuple[Any, SkewSummary] | None:
    """(Evidently snapshot, SkewSummary) of 06's saved served vectors; None when there are none (no store)."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    path = Path(path)
    frame = pd.read_parquet(path) if path.exists() else pd.DataFrame()
    if frame.empty:
        return None
    names = [f.name for f in ENTITY_FEATURES]
    served = frame[names].astype(float)
    offline = frame[[OFFLINE + n for n in names]].set_axis(names, axis=1).astype(float)
    differs = served.ne(offline)
    definition = DataDefinition(numerical_columns=names)
    preset = DataDriftPreset(columns=names, num_method="wasserstein", threshold=threshold)
    snapshot = Report([preset]).run(
        Dataset.from_pandas(served, data_definition=definition),
        Dataset.from_pandas(offline, data_definition=definition),
    )
    drifted = [
        m
        for m in snapshot.dict()["metrics"]
        if m["metric_name"].startswith("ValueDrift(") and float(m["value"]) >= threshold
    ]
    mismatched = int(differs.any(axis=1).sum())
    return snapshot, SkewSummary(
        checked=len(frame),
        mismatched=mismatched,
        mismatch_share=mismatched / len(frame),
        drift_share=len(drifted) / len(names),
        by_feature={n: int(v) for n, v in differs.sum().items() if v},
    )


def push_gauges(registry: Any, summary: SkewSummary) -> None:
    """The skew's gauges, into the drift report's push (``lib.monitoring.drift.push``)."""
    from prometheus_client import Gauge

    Gauge("fraud_feature_skew_share", "Share of served entity vectors that differ from 02's", registry=registry).set(
        summary.mismatch_share
    )
    Gauge("fraud_feature_skew_checked", "Served entity vectors compared with 02's", registry=registry).set(
        summary.checked
    )
