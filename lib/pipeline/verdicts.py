"""The verdict each pipeline notebook ends on: one or two sentences built from its typed record.

``outputs.record(records.<Step>(...))`` shows the sentence above the folded record and stores it as
``verdict``, so the run page can show the same words.
"""

from collections.abc import Callable
from typing import Any

from lib.pipeline import records
from lib.pipeline.formats import show
from lib.units import Unit

# A window with fewer frauds than this gives AUPRC, early stopping and a cost threshold little to stand on.
FEW_FRAUDS = 50


def acquire(o: records.Acquire) -> str:
    fidelity = (
        "its balance signatures are all within 5 percentage points of real PaySim"
        if o.signatures_within_5pp
        else "some balance signatures are more than 5 percentage points from real PaySim (see the fidelity table)"
    )
    recurring = (
        f"accounts recur as in real PaySim's first 8 hours, except {', '.join(o.recurrence_off)}"
        if o.recurrence_off
        else "accounts recur as in real PaySim's first 8 hours (where there are enough rows to tell)"
    )
    return (
        f"{o.rows:,} transactions from {o.source}, {o.frauds:,} of them frauds ({show(o.fraud_rate, Unit.RATE)}); "
        f"every row passed validation, {fidelity}, and {recurring}."
    )


def preprocess(o: records.Preprocess) -> str:
    windows = ", ".join(f"{name} {s.rows:,} rows / {s.frauds:,} frauds" for name, s in o.splits.items())
    thin = [name for name in ("validation", "test") if o.splits[name].frauds < FEW_FRAUDS]
    warning = f" Few frauds in the {' and '.join(thin)} window: read its metrics with care." if thin else ""
    return (
        f"{o.rows:,} rows became {o.n_features} row features and {o.n_entity_features} entity features "
        f"(spec {o.feature_spec_version}) in "
        f"{o.job_seconds:.1f} s on {o.spark_master}; {windows}.{warning}"
    )


def version(o: records.Version) -> str:
    hashes = ", ".join(f"{target} {v['md5'][:12]}" for target, v in o.dvc_versions.items())
    return (
        f"Data versioned with DVC ({hashes}) and pushed to {o.dvc_remote}; bring it back with "
        "`python run_pipeline.py --data-version <this run id> --from 02_preprocess`."
    )


def train(o: records.Train) -> str:
    best = max(o.candidates, key=lambda name: o.candidates[name].validation_auprc)
    xgboost = o.candidates.get("xgboost_full")
    kept = (
        f"; xgboost_full keeps {xgboost.best_iteration + 1} trees"
        if xgboost and xgboost.best_iteration is not None
        else ""
    )
    return (
        f"{len(o.candidates)} candidates trained; best on validation: {best} "
        f"(AUPRC {o.candidates[best].validation_auprc:.4f}){kept}."
    )


def evaluate(o: records.Evaluate) -> str:
    if o.challenger_version is None:
        gate = f"{o.challenger} was not registered: {o.gate_reason}"
    else:
        outcome = "promoted" if o.promoted else "not promoted"
        gate = f"challenger v{o.challenger_version} ({o.challenger}) {outcome}: {o.gate_reason}"
    card = o.champion
    memory = ", ".join(
        f"{o.entity_ablation[f'test window · {v}+entity'] - o.entity_ablation[f'test window · {v}']:+.4f} ({v})"
        for v in dict.fromkeys(k.split(" · ")[1].removesuffix("+entity") for k in o.entity_ablation)
    )
    return (
        f"Champion: {o.champion_candidate} v{o.champion_version}, test AUPRC {card.auprc:.4f} and "
        f"{o.champion_reference_auprc:.4f} on {o.reference_rows:,} real PaySim rows; at its threshold "
        f"{o.champion_threshold:.4f} it raises {card.alerts_per_day:,.0f} alerts a day, catches "
        f"{show(card.recall, Unit.RATE)} of the test window's frauds and saves {card.saved_vs_no_model:,.0f} "
        f"against no model. {gate[0].upper()}{gate[1:]}. Entity features change the test AUPRC by {memory}."
    )


def stream(o: records.Stream) -> str:
    summary, alerts = o.summary, o.alerts
    latency = (
        f"p99 latency {summary.warm_latency_p99_ms:,.0f} ms at {o.offered_per_s:,.0f}/s offered once the scorer was "
        f"warm ({summary.latency_p99_ms:,.0f} ms with its first second)"
        if o.stream_rate > 0
        else f"p99 {summary.latency_p99_ms:,.0f} ms from an unpaced replay (a backlog draining, not latency)"
    )
    return (
        f"{summary.transactions:,} transactions through Kafka, every one scored ({alerts.dead_letters:,} dead "
        f"letters), {summary.end_to_end_per_s:,.0f}/s end to end, {latency}; alerts: precision "
        f"{show(alerts.alert_precision, Unit.RATE)}, recall {show(alerts.fraud_recall, Unit.RATE)}."
    ) + (
        f" Per-account memory from the online store: {o.memory.equal:,} of {o.memory.logged:,} served entity vectors "
        "equal to 02's."
        if o.memory is not None
        else ""
    )


def drift_report(o: records.DriftReport) -> str:
    found = "Drift detected" if o.drift_detected else "No drift"
    drifted = ", ".join(o.drifted_features[:4]) or "none"
    return (
        f"{found}: {len(o.drifted_features)} of {len(o.drift_scores)} monitored features drifted "
        f"(share {o.drift_share:.2f}, limit {o.drift_share_limit}; {drifted}); recall at the threshold "
        f"{show(o.quality_reference.recall, Unit.RATE)} on the training window, "
        f"{show(o.quality_current.recall, Unit.RATE)} now."
    ) + (
        f" Training/serving skew: {o.skew.mismatched:,} of {o.skew.checked:,} served entity vectors differ from 02's."
        if o.skew is not None
        else ""
    )


VERDICTS: dict[type, Callable[[Any], str]] = {
    records.Acquire: acquire,
    records.Preprocess: preprocess,
    records.Version: version,
    records.Train: train,
    records.Evaluate: evaluate,
    records.Stream: stream,
    records.DriftReport: drift_report,
}


def of(record: records.StepRecord) -> str:
    """The verdict of a step's record."""
    return VERDICTS[type(record)](record)
