"""What a run page says first: how the run went, in the figures a fraud team looks at, from ``outputs.json``.

Each card is a title, one headline and a few lines; a step that did not run (or ran in another run
and was not selected) gives no card. The candidates table puts every candidate's key metrics side by side.
"""

from dataclasses import dataclass, field

from lib.pipeline import formats, records
from lib.units import Unit


@dataclass
class Card:
    title: str
    headline: str
    lines: list[str] = field(default_factory=list)
    tone: str = "neutral"  # "good", "bad" or "neutral": how the card is coloured


def cards(outputs: dict) -> list[Card]:
    """The summary cards of a run, in pipeline order."""
    steps = {name: records.load(name, values) for name, values in outputs.items()}
    found = []
    for build in (_data, _champion, _gate, _stream, _drift):
        card = build(steps)
        if card is not None:
            found.append(card)
    return found


def _data(steps: dict) -> Card | None:
    acquired, split = steps.get("01_acquire"), steps.get("02_preprocess")
    if acquired is None:
        return None
    lines = [f"source: {acquired.source} ({acquired.engine})"]
    if split is not None:
        lines.append(" · ".join(f"{name} {s.rows:,} rows / {s.frauds:,} frauds" for name, s in split.splits.items()))
    shown = formats.shown(acquired)
    return Card("Data", f"{shown.rows} transactions, {shown.frauds} frauds ({shown.fraud_rate})", lines)


def _champion(steps: dict) -> Card | None:
    e = steps.get("05_evaluate")
    if e is None:
        return None
    card, shown = formats.shown(e.champion), formats.shown(e)
    return Card(
        "Champion",
        f"{e.champion_candidate} v{e.champion_version}",
        [
            f"test AUPRC {card.auprc} · on {shown.reference_rows} real PaySim rows {shown.champion_reference_auprc}",
            f"threshold {shown.champion_threshold}: {card.alerts_per_day} alerts/day, recall {card.recall}, "
            f"precision {card.precision}",
            f"money saved vs no model: {card.saved_vs_no_model}",
        ],
        "good",
    )


def _gate(steps: dict) -> Card | None:
    e = steps.get("05_evaluate")
    if e is None:
        return None
    if e.challenger_version is None:
        headline = "no new version"
    else:
        headline = f"challenger v{e.challenger_version} {'promoted' if e.promoted else 'not promoted'}"
    lines = [e.gate_reason]
    if e.challenger_reference_auprc is not None:
        lines.append(f"challenger on the real PaySim rows: AUPRC {formats.shown(e).challenger_reference_auprc}")
    return Card("Registry gate", headline, lines, "good" if e.promoted else "neutral")


def _stream(steps: dict) -> Card | None:
    s = steps.get("06_stream")
    if s is None:
        return None
    shown, summary, alerts, paced = (
        formats.shown(s),
        formats.shown(s.summary),
        formats.shown(s.alerts),
        s.stream_rate > 0,
    )
    latency = (
        f"latency once warm: p99 {summary.warm_latency_p99_ms}; over the whole run p50 {summary.latency_p50_ms}, "
        f"p99 {summary.latency_p99_ms}"
        if paced
        else f"latency p50 {summary.latency_p50_ms}, p99 {summary.latency_p99_ms}: a backlog draining, not "
        "per-transaction latency"
    )
    lines = [
        f"{summary.end_to_end_per_s} end to end "
        + (f"at {shown.stream_rate} offered" if paced else "(replayed as fast as possible)"),
        latency,
        f"alerts: precision {alerts.alert_precision}, recall {alerts.fraud_recall}",
    ]
    if s.memory is not None:
        memory = formats.shown(s.memory)
        lines.append(
            f"online store: {memory.equal} of {memory.logged} served entity vectors equal to 02's; "
            f"{memory.destinations} destinations, Redis {s.memory.store_mib:,.1f} MiB"
        )
    ok = s.alerts.dead_letters == 0 and s.summary.results >= s.summary.transactions
    ok = ok and (s.memory is None or s.memory.equal == s.memory.logged)
    headline = f"{summary.transactions} scored on Kafka, {alerts.dead_letters} dead letters"
    return Card("Stream", headline, lines, "good" if ok else "bad")


def _drift(steps: dict) -> Card | None:
    d = steps.get("07_drift_report")
    if d is None:
        return None
    drifted = ", ".join(d.drifted_features[:4]) or "none"
    lines = [f"{len(d.drifted_features)} of {len(d.drift_scores)} features drifted ({drifted})",
             f"share {d.drift_share:.2f}, limit {d.drift_share_limit} · current = {d.current}"]  # fmt: skip
    if d.skew is not None:
        lines.append(f"skew: {d.skew.mismatched:,} of {d.skew.checked:,} served entity vectors differ from 02's")
    return Card(
        "Drift",
        "drift detected" if d.drift_detected else "no drift",
        lines,
        "bad" if d.drift_detected or (d.skew is not None and d.skew.mismatched) else "good",
    )


CANDIDATE_COLUMNS = (
    ("validation_auprc", "validation AUPRC"), ("auprc", "test AUPRC"), ("roc_auc", "ROC-AUC"),
    ("recall", "recall"), ("precision", "precision"), ("threshold", "threshold"), ("alerts", "alerts"),
    ("saved_vs_no_model", "saved vs no model"),
)  # fmt: skip


def candidates(outputs: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows): every candidate 05 judged, with its key metrics and 04's rounds and seconds."""
    header = ["candidate", *(label for _, label in CANDIDATE_COLUMNS), "trees / epochs", "train s"]
    if "05_evaluate" not in outputs:
        return header, []
    judged = records.build(records.Evaluate, outputs["05_evaluate"])
    trained = records.build(records.Train, outputs["04_train"]) if "04_train" in outputs else None
    rows = []
    for name, card in sorted(judged.scorecards.items()):
        shown = formats.shown(card).__dict__
        row = [name + (" (champion)" if name == judged.champion_candidate else "")]
        row += [shown[key] for key, _ in CANDIDATE_COLUMNS]
        fit = trained.candidates.get(name) if trained else None
        best = fit.best_iteration if fit else None
        row += [
            formats.show(best + 1 if best is not None else None, Unit.COUNT),
            formats.show(fit.train_seconds if fit else None, Unit.SECONDS),
        ]
        rows.append(row)
    return header, rows
