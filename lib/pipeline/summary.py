"""What a run page says first: how the run went, in the figures a fraud team looks at, from ``outputs.json``.

Each card is a title, one headline and a few lines; a step that did not run (or ran in another run
and was not selected) gives no card. The candidates table puts every candidate's key metrics side by side.
"""

from dataclasses import dataclass, field

from lib.pipeline.formats import show


@dataclass
class Card:
    title: str
    headline: str
    lines: list[str] = field(default_factory=list)
    tone: str = "neutral"  # "good", "bad" or "neutral": how the card is coloured


def cards(outputs: dict) -> list[Card]:
    """The summary cards of a run, in pipeline order."""
    found = []
    for build in (_data, _champion, _gate, _stream, _drift):
        card = build(outputs)
        if card is not None:
            found.append(card)
    return found


def _data(o: dict) -> Card | None:
    acquired, split = o.get("01_acquire"), o.get("02_preprocess")
    if not acquired:
        return None
    lines = [f"source: {acquired.get('source', '?')} ({acquired.get('engine', 'numpy')})"]
    if split:
        lines.append(
            " · ".join(
                f"{s} {split[f'{s}_rows']:,} rows / {split[f'{s}_frauds']:,} frauds"
                for s in ("train", "validation", "test")
            )
        )
    return Card(
        "Data",
        f"{acquired['rows']:,} transactions, {acquired['frauds']:,} frauds ({show('rate', acquired['fraud_rate'])})",
        lines,
    )


def _champion(o: dict) -> Card | None:
    e = o.get("05_evaluate")
    if not e or "champion_reference_auprc" not in e:
        return None
    return Card(
        "Champion",
        f"{e['champion_candidate']} v{e['champion_version']}",
        [
            f"test AUPRC {show('auprc', e['champion_test_auprc'])} · on {e['reference_rows']:,} real PaySim rows "
            f"{show('auprc', e['champion_reference_auprc'])}",
            f"threshold {show('threshold', e['champion_threshold'])}: {e['champion_alerts_per_day']:,.0f} alerts/day, "
            f"recall {show('recall', e['champion_recall'])}, precision {show('precision', e['champion_precision'])}",
            f"money saved vs no model: {show('saved', e['champion_saved_vs_no_model'])}",
        ],
        "good",
    )


def _gate(o: dict) -> Card | None:
    e = o.get("05_evaluate")
    if not e:
        return None
    if e.get("challenger_version") is None:
        headline = "no new version"
    else:
        headline = f"challenger v{e['challenger_version']} {'promoted' if e['promoted'] else 'not promoted'}"
    lines = [e["gate_reason"]]
    if e.get("challenger_reference_auprc") is not None:
        lines.append(f"challenger on the real PaySim rows: AUPRC {show('auprc', e['challenger_reference_auprc'])}")
    return Card("Registry gate", headline, lines, "good" if e["promoted"] else "neutral")


def _stream(o: dict) -> Card | None:
    s = o.get("06_stream")
    if not s:
        return None
    paced = s.get("stream_rate", 0) > 0
    lines = [
        f"{show('per_s', s['stream_end_to_end_per_s'])} end to end "
        + (f"at {show('per_s', s['stream_rate'])} offered" if paced else "(replayed as fast as possible)"),
        f"latency p50 {show('ms', s['stream_latency_p50_ms'])}, p99 {show('ms', s['stream_latency_p99_ms'])}"
        + ("" if paced else ": a backlog draining, not per-transaction latency"),
        f"alerts: precision {show('precision', s['stream_alert_precision'])}, recall {show('recall', s['stream_fraud_recall'])}",
    ]
    ok = s["stream_dead_letters"] == 0 and s["stream_results"] >= s["stream_transactions"]
    headline = f"{s['stream_transactions']:,} scored on Kafka, {s['stream_dead_letters']:,} dead letters"
    return Card("Stream", headline, lines, "good" if ok else "bad")


def _drift(o: dict) -> Card | None:
    d = o.get("07_drift_report")
    if not d:
        return None
    drifted = ", ".join(d["drifted_features"][:4]) or "none"
    lines = [f"{len(d['drifted_features'])} of {len(d['drift_scores'])} features drifted ({drifted})",
             f"share {d['drift_share']:.2f}, limit {d['drift_share_limit']} · current = {d['current']}"]  # fmt: skip
    return Card(
        "Drift",
        "drift detected" if d["drift_detected"] else "no drift",
        lines,
        "bad" if d["drift_detected"] else "good",
    )


CANDIDATE_COLUMNS = (
    ("validation_auprc", "validation AUPRC"), ("auprc", "test AUPRC"), ("roc_auc", "ROC-AUC"),
    ("recall", "recall"), ("precision", "precision"), ("threshold", "threshold"), ("alerts", "alerts"),
    ("saved_vs_no_model", "saved vs no model"),
)  # fmt: skip


def candidates(outputs: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows): every candidate 05 judged, with its key metrics and 04's rounds and seconds."""
    judged, trained = outputs.get("05_evaluate", {}), outputs.get("04_train", {})
    names = sorted(k.removesuffix("_roc_auc") for k in judged if k.endswith("_roc_auc"))
    header = ["candidate", *(label for _, label in CANDIDATE_COLUMNS), "trees / epochs", "train s"]
    rows = []
    for name in names:
        row = [name + (" (champion)" if name == judged.get("champion_candidate") else "")]
        row += [show(key, judged.get(f"{name}_{key}")) for key, _ in CANDIDATE_COLUMNS]
        best = trained.get(f"{name}_best_iteration")
        row += [
            show("trees", best + 1 if best is not None else None),
            show("seconds", trained.get(f"{name}_train_seconds")),
        ]
        rows.append(row)
    return header, rows
