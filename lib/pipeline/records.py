"""What each pipeline step hands on: one dataclass per notebook, each number's unit declared with its field.

A pipeline notebook ends with ``outputs.record(records.Acquire(...))``; the runner keeps the record as
JSON in ``outputs.json`` and MLflow, and ``load(name, values)`` reads it back typed for the verdicts,
the run page and the tests. Fields every step may fill: ``data_outputs`` (the step cache's data, see
``lib.pipeline.cache``), ``mlflow_tags`` and ``links`` (files in the run folder).
"""

import dataclasses
import types
from dataclasses import dataclass, field
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

from lib.model.evaluate import Scorecard
from lib.monitoring.drift import Quality
from lib.monitoring.skew import SkewSummary
from lib.monitoring.stream_report import LiveAlerts, MemoryCheck, StreamSummary
from lib.units import ChangePct, Count, PerSecond, Rate, Score, Seconds


@dataclass(kw_only=True)
class StepRecord:
    data_outputs: dict[str, dict] = field(default_factory=dict)  # {label: {"path", "sha256"}}
    mlflow_tags: dict[str, Any] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # {label: path in the run folder}


@dataclass(kw_only=True)
class Acquire(StepRecord):
    source: str
    engine: str
    raw_path: str
    raw_sha256: str
    rows: Count
    frauds: Count
    fraud_rate: Rate
    type_counts: dict[str, int]
    frauds_vs_expected_pct: ChangePct  # against the published fraud rate of the full data set
    signatures: dict[str, float]  # percent of each balance signature in this data
    signatures_within_5pp: bool
    recurrence: dict[str, float]  # percent of each recurrence signature over steps 1-8 (NaN: no such rows)
    recurrence_off: list[str]  # recurrence signatures measured on enough rows and more than 10 points off


@dataclass
class Split:
    rows: Count
    frauds: Count


@dataclass(kw_only=True)
class Preprocess(StepRecord):
    processed_path: str
    spark_master: str
    feature_spec_version: str
    n_features: Count
    n_entity_features: Count  # each account's history, point in time (lib.data.entity)
    rows: Count
    job_seconds: Seconds
    input_sha256: str
    splits: dict[str, Split]  # train, validation, test


@dataclass(kw_only=True)
class Version(StepRecord):
    dvc_versions: dict[str, dict]  # {target: {"md5", ...}}
    dvc_remote: str
    dvc_s3_endpoint_url: str
    git_commit: str | None


@dataclass
class Trained:
    validation_auprc: Score
    best_iteration: Count | None  # trees - 1 (XGBoost) or the best epoch (Keras)
    train_seconds: Seconds
    mlflow_run_id: str


@dataclass(kw_only=True)
class Train(StepRecord):
    models_path: str
    training_data_sha256: str
    feature_spec_version: str
    trainer: str
    candidates: dict[str, Trained]


@dataclass(kw_only=True)
class Evaluate(StepRecord):
    bundle_path: str
    bundle_store: str
    challenger: str  # the candidate submitted to the registry gate
    challenger_version: str | None  # None: nothing new was registered
    champion_version: str
    promoted: bool
    promotion: str
    gate_reason: str
    champion_candidate: str
    champion_threshold: Score
    champion: Scorecard  # the champion's bundle on the test window, at its own threshold
    champion_reference_auprc: Score
    challenger_reference_auprc: Score | None
    reference_rows: Count
    reference_frauds: Count
    scorecards: dict[str, Scorecard]  # every candidate on the test window
    shap_top_features: list[str]
    entity_ablation: dict[str, float]  # AUPRC per "window · variant": each feature set with and without entity features
    prequential_auprc: dict[str, float]  # mean AUPRC over the prequential folds, per variant


@dataclass(kw_only=True)
class Stream(StepRecord):
    stream_rate: PerSecond  # offered by the replay; 0: as fast as possible
    offered_per_s: PerSecond  # what the replay achieved
    summary: StreamSummary  # throughput and latency of the scored results
    alerts: LiveAlerts  # the alerts topic against the replayed rows' labels, and the dead letters
    model_version: str
    labels_joined: Count
    live_recall: Rate
    live_precision: Rate
    memory: MemoryCheck | None = None  # the online store's served vectors against 02's rule (None: ONLINE_STORE off)


@dataclass(kw_only=True)
class DriftReport(StepRecord):
    current: str
    reference_rows: Count
    current_rows: Count
    drift_share: Rate
    drift_detected: bool
    drifted_features: list[str]
    drift_threshold: Score
    drift_share_limit: Rate
    drift_scores: dict[str, float]
    quality_reference: Quality
    quality_current: Quality
    attribution_reference: dict[str, float]  # mean |TreeSHAP contribution| per feature (log-odds)
    attribution_current: dict[str, float]
    retrain_reasons: list[str]
    pushed_to: str | None
    report_dir: str
    skew: SkewSummary | None = None  # served entity vectors against 02's (None: 06 ran without the online store)


T = TypeVar("T")
STEPS: dict[str, type[StepRecord]] = {
    "01_acquire": Acquire,
    "02_preprocess": Preprocess,
    "03_version": Version,
    "04_train": Train,
    "05_evaluate": Evaluate,
    "06_stream": Stream,
    "07_drift_report": DriftReport,
}


def _typed(kind: Any, value: Any) -> Any:
    """``value`` (plain JSON) as ``kind``: dataclasses and ``{name: dataclass}`` built, the rest as it is."""
    if get_origin(kind) in (Union, types.UnionType):  # X | None
        options = [k for k in get_args(kind) if k is not type(None)]
        return None if value is None else _typed(options[0], value)
    if isinstance(kind, type) and dataclasses.is_dataclass(kind) and isinstance(value, dict):
        return build(kind, value)
    if get_origin(kind) is dict and isinstance(value, dict):
        item = get_args(kind)[1]
        return {k: _typed(item, v) for k, v in value.items()}
    return value


def build(cls: type[T], values: dict[str, Any]) -> T:
    """A ``cls`` dataclass from its plain JSON ``values`` (``outputs.json``); an unknown or missing field raises."""
    hints = get_type_hints(cls)
    known = set(hints) - {name for name in hints if name.startswith("_")}
    unknown = sorted(set(values) - known - {"verdict"})
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {unknown}; the record was written by other code")
    return cls(**{k: _typed(hints[k], v) for k, v in values.items() if k in known})


def load(name: str, values: dict[str, Any]) -> StepRecord | None:
    """The typed record of pipeline step ``name`` (``01_acquire`` …) from its outputs; None for another notebook."""
    return build(STEPS[name], values) if name in STEPS else None
