"""The verdict each pipeline notebook ends on: one or two sentences built from what it recorded.

``outputs.record(verdicts.<step>, **values)`` shows the sentence above the folded record and stores
it as ``verdict``, so the run page can show the same words.
"""

# A window with fewer frauds than this gives AUPRC, early stopping and a cost threshold little to stand on.
FEW_FRAUDS = 50


def _pct(value: float | None) -> str:
    """A share as percent (None: recorded as not a number, e.g. precision without alerts)."""
    if value is None:
        return "n/a"
    return f"{100 * value:.2f} %" if value >= 0.0001 or value == 0 else f"{100 * value:.4f} %"


def acquire(o: dict) -> str:
    fidelity = (
        "its balance signatures are all within 5 percentage points of real PaySim"
        if o["signatures_within_5pp"]
        else "some balance signatures are more than 5 percentage points from real PaySim (see the fidelity table)"
    )
    return (
        f"{o['rows']:,} transactions from {o['source']}, {o['frauds']:,} of them frauds ({_pct(o['fraud_rate'])}); "
        f"every row passed validation and {fidelity}."
    )


def preprocess(o: dict) -> str:
    windows = ", ".join(
        f"{s} {o[f'{s}_rows']:,} rows / {o[f'{s}_frauds']:,} frauds" for s in ("train", "validation", "test")
    )
    thin = [s for s in ("validation", "test") if o[f"{s}_frauds"] < FEW_FRAUDS]
    warning = f" Few frauds in the {' and '.join(thin)} window: read its metrics with care." if thin else ""
    return (
        f"{o['rows']:,} rows became {o['n_features']} features (spec {o['feature_spec_version']}) in "
        f"{o['job_seconds']:.1f} s on {o['spark_master']}; {windows}.{warning}"
    )


def version(o: dict) -> str:
    hashes = ", ".join(f"{target} {v['md5'][:12]}" for target, v in o["dvc_versions"].items())
    return (
        f"Data versioned with DVC ({hashes}) and pushed to {o['dvc_remote']}; bring it back with "
        "`python run_pipeline.py --data-version <this run id> --from 02_preprocess`."
    )


def train(o: dict) -> str:
    scores = {k.removesuffix("_validation_auprc"): v for k, v in o.items() if k.endswith("_validation_auprc")}
    best = max(scores, key=scores.get)
    trees = o.get("xgboost_full_best_iteration")
    kept = f"; xgboost_full keeps {trees + 1} trees" if trees is not None else ""
    return f"{len(scores)} candidates trained; best on validation: {best} (AUPRC {scores[best]:.4f}){kept}."


def evaluate(o: dict) -> str:
    if o["challenger_version"] is None:
        gate = f"{o['challenger']} was not registered: {o['gate_reason']}"
    else:
        outcome = "promoted" if o["promoted"] else "not promoted"
        gate = f"challenger v{o['challenger_version']} ({o['challenger']}) {outcome}: {o['gate_reason']}"
    return (
        f"Champion: {o['champion_candidate']} v{o['champion_version']}, test AUPRC {o['champion_test_auprc']:.4f} and "
        f"{o['champion_reference_auprc']:.4f} on {o['reference_rows']:,} real PaySim rows; at its threshold "
        f"{o['champion_threshold']:.4f} it raises {o['champion_alerts_per_day']:,.0f} alerts a day, catches "
        f"{_pct(o['champion_recall'])} of the test window's frauds and saves {o['champion_saved_vs_no_model']:,.0f} "
        f"against no model. {gate[0].upper()}{gate[1:]}."
    )


def stream(o: dict) -> str:
    paced = o["stream_rate"] > 0
    latency = (
        f"p99 latency {o['stream_latency_p99_ms']:,.0f} ms at {o['stream_offered_per_s']:,.0f}/s offered"
        if paced
        else f"p99 {o['stream_latency_p99_ms']:,.0f} ms from an unpaced replay (a backlog draining, not latency)"
    )
    return (
        f"{o['stream_transactions']:,} transactions through Kafka, every one scored ({o['stream_dead_letters']:,} dead "
        f"letters), {o['stream_end_to_end_per_s']:,.0f}/s end to end, {latency}; alerts: precision "
        f"{_pct(o['stream_alert_precision'])}, recall {_pct(o['stream_fraud_recall'])}."
    )


def drift_report(o: dict) -> str:
    found = "Drift detected" if o["drift_detected"] else "No drift"
    drifted = ", ".join(o["drifted_features"][:4]) or "none"
    return (
        f"{found}: {len(o['drifted_features'])} of {len(o['drift_scores'])} monitored features drifted "
        f"(share {o['drift_share']:.2f}, limit {o['drift_share_limit']}; {drifted}); recall at the threshold "
        f"{_pct(o['quality_recall_reference'])} on the training window, {_pct(o['quality_recall_current'])} now."
    )
