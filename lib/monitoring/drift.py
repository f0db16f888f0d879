"""Data drift and classification quality: the training window (reference) vs a later window (current).

Evidently (pinned at 0.7.x: its API changed across releases) computes the per-feature drift and
renders the HTML reports; this module chooses the columns and tests, reads the results back into
plain numbers and pushes them to a Prometheus Pushgateway for the ``FraudDataDrift`` alert.

Columns are the model's features computed from raw rows by the one feature spec, except the
calendar features (``hour_of_day``, ``day``): two different windows of time differ there by
construction, not because the data drifted. Continuous features are compared with the normed
Wasserstein distance, flags and one-hot columns with the Jensen-Shannon distance; a feature drifts
when its distance reaches ``threshold``, and the data drifted when the share of drifted features
reaches ``drift_share``.
"""

from dataclasses import asdict, astuple, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lib import atomic, features
from lib.data import processed
from lib.data.acquire import read_window
from lib.errors import ParameterError, PipelineError
from lib.quality import average_precision
from lib.serving.scoring import Scorer
from lib.units import Rate, Score, Unit

CALENDAR_FEATURES = ("hour_of_day", "day")
LABEL = "isFraud"


def monitored_features(feature_set: str) -> tuple[list[str], list[str]]:
    """(continuous, categorical) features of ``feature_set`` that drift is measured on."""
    names = [n for n in features.feature_names(feature_set) if n not in CALENDAR_FEATURES]
    kinds = {f.name: f.dtype for f in features.FEATURES}
    return [n for n in names if kinds[n] != "int8"], [n for n in names if kinds[n] == "int8"]


def window_frame(raw_path: str | Path, window: tuple[int, int], feature_set: str, rows: int, seed: int) -> pd.DataFrame:
    """Features (by the spec), ``transaction_id``, ``step`` and the label of a step window; a seeded
    sample of ``rows`` rows when the window is larger (0 = all)."""
    table = read_window(raw_path, *window)
    if table.num_rows == 0:
        raise ParameterError(f"{raw_path}: no transactions in steps {window[0]}-{window[1]}")
    if rows and table.num_rows > rows:
        keep = np.sort(np.random.default_rng(seed).choice(table.num_rows, rows, replace=False))
        table = table.take(keep)
    columns = {n: table.column(n).to_numpy(zero_copy_only=False) for n in table.column_names}
    frame = pd.DataFrame(features.compute(columns, feature_set), columns=features.feature_names(feature_set))
    for name in ("transaction_id", "step", LABEL):
        frame[name] = columns[name]
    return frame


def stream_frame(
    raw_path: str | Path, window: tuple[int, int], feature_set: str, results_path: str | Path, rows: int, seed: int
) -> pd.DataFrame:
    """What the stream scored (06_stream's results): the raw rows it scored, with the stream's own
    ``fraud_probability`` and decision as the predictions; a seeded sample of ``rows`` (0 = all)."""
    scored = pd.read_parquet(results_path, columns=["transaction_id", "fraud_probability", "is_fraud"])
    scored = scored.drop_duplicates("transaction_id")  # at-least-once: a re-scored batch gives the same answer twice
    frame = window_frame(raw_path, window, feature_set, 0, seed).merge(
        scored, on="transaction_id", validate="one_to_one"
    )
    if frame.empty:
        raise ParameterError(
            f"{results_path}: none of its transactions are in steps {window[0]}-{window[1]} of {raw_path}"
        )
    if rows and len(frame) > rows:
        frame = frame.iloc[np.sort(np.random.default_rng(seed).choice(len(frame), rows, replace=False))]
    return frame.assign(prediction=frame.pop("is_fraud").astype(int)).reset_index(drop=True)


CURRENT_CHOICES = ("test", "stream")


def frames(
    raw_path: str | Path,
    processed_path: str | Path,
    scorer: Scorer,
    current: str,
    stream_results: str | Path,
    rows: int,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(reference, current), each with the bundle's predictions: the training window vs the test window
    (``current="test"``) or exactly what 06_stream scored, with its own scores (``"stream"``)."""
    if current not in CURRENT_CHOICES:
        raise ParameterError(f"CURRENT={current!r}: use 'test' (the test window) or 'stream' (what 06_stream scored)")
    feature_set = scorer.info.feature_set
    train, test = processed.window(processed_path, "train"), processed.window(processed_path, "test")
    reference = add_predictions(window_frame(raw_path, train, feature_set, rows, seed), scorer)
    if current == "test":
        return reference, add_predictions(window_frame(raw_path, test, feature_set, rows, seed), scorer)
    return reference, stream_frame(raw_path, test, feature_set, stream_results, rows, seed)


def save_reports(report_dir: Path, snapshots: dict[str, Any], dashboards: Path) -> dict[str, str]:
    """Evidently snapshots as HTML (``{file name: snapshot}``) and a copy of the Grafana dashboards, written
    to ``report_dir`` atomically; returns ``{label: path relative to report_dir's parent}`` for the run page."""
    import shutil

    with atomic.staged_dir(report_dir) as staging:
        staging.mkdir()
        for name, snapshot in snapshots.items():
            snapshot.save_html(str(staging / name))
        shutil.copytree(dashboards, staging / "dashboards")
    base = report_dir.name
    links = {
        f"{name.removesuffix('.html').replace('_', ' ')} report (Evidently)": f"{base}/{name}" for name in snapshots
    }
    links.update(
        {f"Grafana dashboard {p.name}": f"{base}/dashboards/{p.name}" for p in sorted(dashboards.glob("*.json"))}
    )
    return links


@dataclass
class DriftSummary:
    share: float  # of monitored features that drifted
    drifted: list[str]
    detected: bool
    threshold: float
    drift_share: float
    scores: dict[str, float]  # distance per feature
    methods: dict[str, str]

    def as_outputs(self) -> dict:
        return {f"drift_{k}": v for k, v in asdict(self).items()}


def drift_report(
    reference: pd.DataFrame, current: pd.DataFrame, feature_set: str, threshold: float, drift_share: float
):
    """(Evidently snapshot, DriftSummary) of the monitored features."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    continuous, categorical = monitored_features(feature_set)
    definition = DataDefinition(numerical_columns=continuous, categorical_columns=categorical)
    preset = DataDriftPreset(
        columns=continuous + categorical, num_method="wasserstein", cat_method="jensenshannon",
        threshold=threshold, drift_share=drift_share,
    )  # fmt: skip
    snapshot = Report([preset]).run(
        Dataset.from_pandas(current[continuous + categorical], data_definition=definition),
        Dataset.from_pandas(reference[continuous + categorical], data_definition=definition),
    )
    scores, methods = {}, {}
    for metric in snapshot.dict()["metrics"]:
        name = metric["metric_name"]
        if name.startswith("ValueDrift("):
            column = name.split("column=", 1)[1].split(",", 1)[0]
            scores[column] = float(metric["value"])
            methods[column] = name.split("method=", 1)[1].split(",", 1)[0]
    missing = set(continuous + categorical) - set(scores)
    if missing:
        raise PipelineError(
            f"Evidently returned no drift score for {sorted(missing)}; check the pinned evidently version "
            "(requirements.lock) against lib/monitoring/drift.py"
        )
    drifted = sorted(c for c, score in scores.items() if score >= threshold)
    share = len(drifted) / len(scores)
    return snapshot, DriftSummary(share, drifted, share >= drift_share, threshold, drift_share, scores, methods)


def scores_table(summary: DriftSummary) -> pd.DataFrame:
    """Per feature: distance, method and whether it drifted, largest first."""
    table = pd.DataFrame({"distance": summary.scores, "method": summary.methods})
    table["drifted"] = table.distance >= summary.threshold
    table = table.sort_values("distance", ascending=False)
    table.attrs["units"] = {"distance": Unit.SCORE}
    return table


def plot_scores(summary: DriftSummary):
    """Drift distance by feature against the threshold (drifted features in red)."""
    table = scores_table(summary)
    ax = table.distance.plot.barh(figsize=(8, 6), color=["#b00020" if d else "#4472c4" for d in table.drifted])
    ax.axvline(summary.threshold, color="black", linestyle="--", label=f"threshold {summary.threshold}")
    ax.invert_yaxis()
    ax.set(xlabel="drift distance (reference → current)", title="Drift by feature")
    ax.legend()
    return ax.figure


def attribution(scorer: Scorer, reference: pd.DataFrame, current: pd.DataFrame) -> pd.DataFrame:
    """Attribution drift: per feature, the mean absolute TreeSHAP contribution (log-odds) of the bundle over
    each window's rows, and its share of all features' (what the model leans on); ``share change`` in
    percentage points, the largest shift first. Data drift says the inputs moved; this says whether the
    model's reasons moved with them (a feature can drift where the model never looks)."""
    names = list(scorer.info.features)
    means = {
        window: np.abs(scorer.contributions(frame[names].to_numpy())).mean(axis=0)
        for window, frame in (("reference", reference), ("current", current))
    }
    table = pd.DataFrame(means, index=pd.Index(names, name="feature"))
    for window in ("reference", "current"):
        table[f"{window} share"] = table[window] / table[window].sum()
    table["share change"] = (table["current share"] - table["reference share"]) * 100
    table = table.reindex(table["share change"].abs().sort_values(ascending=False).index)
    table.attrs["units"] = {"reference": Unit.SCORE, "current": Unit.SCORE, "reference share": Unit.RATE,
                            "current share": Unit.RATE, "share change": Unit.PP}  # fmt: skip
    return table


def plot_attribution(table: pd.DataFrame, top: int = 12):
    """Mean |contribution| per feature, reference beside current (the ``top`` features by either)."""
    shown = table.loc[table[["reference", "current"]].max(axis=1).nlargest(top).index, ["reference", "current"]]
    ax = shown.plot.barh(figsize=(8, 6), color=["#4472c4", "#ed7d31"])
    ax.invert_yaxis()
    ax.set(xlabel="mean |TreeSHAP contribution| (log-odds)", title="What the model leans on, by window")
    return ax.figure


def add_predictions(frame: pd.DataFrame, scorer: Scorer) -> pd.DataFrame:
    """``fraud_probability`` and ``prediction`` of the serving bundle (its features and threshold)."""
    probability, decision = scorer.score_features(frame[list(scorer.info.features)].to_numpy())
    return frame.assign(fraud_probability=probability, prediction=decision.astype(int))


@dataclass
class Quality:
    """How the bundle does on one window at its threshold."""

    fraud_rate: Rate
    alert_rate: Rate
    auprc: Score
    precision: Rate  # 0 without alerts
    recall: Rate  # NaN without frauds
    mean_score: Score

    def minus(self, other: "Quality") -> "Quality":
        """The change from ``other`` to this window, field by field."""
        return Quality(*(a - b for a, b in zip(astuple(self), astuple(other), strict=True)))


def quality(frame: pd.DataFrame) -> Quality:
    y, predicted = frame[LABEL].to_numpy().astype(bool), frame["prediction"].to_numpy().astype(bool)
    caught = int(np.count_nonzero(y & predicted))
    return Quality(
        fraud_rate=float(y.mean()),
        alert_rate=float(predicted.mean()),
        auprc=average_precision(y, frame["fraud_probability"].to_numpy()),
        precision=caught / int(predicted.sum()) if predicted.any() else 0.0,
        recall=caught / int(y.sum()) if y.any() else float("nan"),
        mean_score=float(frame["fraud_probability"].mean()),
    )


def quality_report(reference: pd.DataFrame, current: pd.DataFrame):
    """(Evidently classification snapshot, the reference window's ``Quality``, the current one's) at the
    bundle's threshold."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Report
    from evidently.presets import ClassificationPreset

    definition = DataDefinition(
        classification=[BinaryClassification(target=LABEL, prediction_labels="prediction", pos_label=1)],
        numerical_columns=["fraud_probability"],
    )
    columns = [LABEL, "prediction", "fraud_probability"]
    snapshot = Report([ClassificationPreset()]).run(
        Dataset.from_pandas(current[columns], data_definition=definition),
        Dataset.from_pandas(reference[columns], data_definition=definition),
    )
    return snapshot, quality(reference), quality(current)


def push(
    gateway: str, summary: DriftSummary, reference: Quality, current: Quality, model_version: str,
    attributions: pd.DataFrame | None = None, job: str = "fraud_drift_report", skew: Any = None,
) -> None:  # fmt: skip
    """Push the drift summary to a Prometheus Pushgateway (replacing the job's previous push)."""
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    registry = CollectorRegistry()
    Gauge("fraud_drift_share", "Share of monitored features that drifted", registry=registry).set(summary.share)
    Gauge("fraud_drift_detected", "1 when the drift share reached its limit", registry=registry).set(
        int(summary.detected)
    )
    Gauge("fraud_drift_share_limit", "Drift share at which drift is detected", registry=registry).set(
        summary.drift_share
    )
    score = Gauge("fraud_drift_feature_score", "Drift distance per feature", ["feature", "method"], registry=registry)
    for feature, value in summary.scores.items():
        score.labels(feature, summary.methods[feature]).set(value)
    metric = Gauge("fraud_drift_quality", "Classification quality by window", ["window", "metric"], registry=registry)
    for window, values in (("reference", reference), ("current", current)):
        for name, value in asdict(values).items():
            if np.isfinite(value):
                metric.labels(window, name).set(value)
    if skew is not None:  # lib.monitoring.skew.SkewSummary
        from lib.monitoring.skew import push_gauges

        push_gauges(registry, skew)
    if attributions is not None:
        mean = Gauge("fraud_attribution_mean_abs", "Mean |TreeSHAP contribution| per feature by window (log-odds)",
                     ["window", "feature"], registry=registry)  # fmt: skip
        for feature, row in attributions.iterrows():
            for window in ("reference", "current"):
                mean.labels(window, str(feature)).set(float(row[window]))
    Gauge("fraud_drift_model_version", "Model version the report judged", ["model_version"], registry=registry).labels(
        model_version
    ).set(1)
    Gauge("fraud_drift_report_timestamp_seconds", "When the report ran", registry=registry).set_to_current_time()
    push_to_gateway(gateway, job=job, registry=registry, timeout=10)
