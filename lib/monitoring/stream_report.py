"""What the stream produced, read back for reports: results with their latencies, throughput, saved results."""

import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from lib import atomic
from lib.contract import TOP_REASONS
from lib.data.acquire import read_window
from lib.local.daemons import free_port
from lib.quality import performance
from lib.stream.kafka import DelayedLabels, ReplayStats, Topics, encode_transactions, read_topic, replay
from lib.stream.process import start_scorer_process, stop_scorer_process
from lib.units import Count, Ms, PerSecond, Rate, Unit


def results_frame(messages: list) -> pd.DataFrame:
    """Score messages as a DataFrame: the result fields, ``appended_ms`` (the broker's append time)
    and ``latency_ms`` (append time - the transaction's produce time)."""
    rows = [orjson.loads(m.value()) for m in messages]
    frame = pd.DataFrame(rows)
    frame["appended_ms"] = [m.timestamp()[1] for m in messages]
    frame["latency_ms"] = frame["appended_ms"] - frame["produced_at_ms"]
    return frame


@dataclass(frozen=True)
class StreamSummary:
    """Throughput and latency of the scored results: end to end = first produce to last append."""

    transactions: Count
    results: Count  # more than transactions where a batch was scored again (at-least-once)
    end_to_end_per_s: PerSecond
    latency_p50_ms: Ms
    latency_p95_ms: Ms
    latency_p99_ms: Ms
    latency_max_ms: Ms
    # p99 of the transactions produced after the first second: a broker started for the run answers its
    # first second several times slower than the rest (measured in docs/streaming.md)
    warm_latency_p99_ms: Ms


WARM_AFTER_MS = 1000


def summarize(results: pd.DataFrame) -> StreamSummary:
    """``StreamSummary`` of scored results (``results_frame``)."""
    span_s = (results.appended_ms.max() - results.produced_at_ms.min()) / 1000
    latency = results.latency_ms.to_numpy()
    p50, p95, p99 = (float(np.percentile(latency, q)) for q in (50, 95, 99))
    warm = latency[(results.produced_at_ms - results.produced_at_ms.min()).to_numpy() >= WARM_AFTER_MS]
    transactions = int(results.transaction_id.nunique())
    return StreamSummary(
        transactions=transactions,
        results=len(results),
        end_to_end_per_s=transactions / span_s if span_s > 0 else float("nan"),
        latency_p50_ms=p50,
        latency_p95_ms=p95,
        latency_p99_ms=p99,
        latency_max_ms=float(latency.max()),
        warm_latency_p99_ms=float(np.percentile(warm, 99)) if len(warm) else float("nan"),
    )


def save_results(results: pd.DataFrame, path: str | Path) -> Path:
    """The scored results (``results_frame``) as Parquet, written atomically (07_drift_report can judge them)."""
    columns = [
        "transaction_id",
        "fraud_probability",
        "is_fraud",
        "threshold",
        "model_version",
        "reasons",
        "produced_at_ms",
        "appended_ms",
        "latency_ms",
    ]
    with atomic.staged_file(path) as tmp:
        results[columns].to_parquet(tmp, index=False)
    return Path(path)


@dataclass
class StreamRun:
    """One replay of a window through the stream scorer process, read back."""

    replay: ReplayStats
    results: pd.DataFrame
    summary: StreamSummary
    metrics: dict[str, float]  # the scorer's own Prometheus counters and gauges at the end
    scorer_output: str  # everything the scorer process printed (librdkafka's transient retries included)
    live: dict | None = None  # the scorer's /live answer once the delayed labels are in (None: no labels)

    @property
    def scorer_summary(self) -> str:
        """The scorer's last word: ``stopped: N scored, M dead letters``."""
        return next((line for line in reversed(self.scorer_output.splitlines()) if line.startswith("stopped:")), "")


def scrape(url: str, prefixes: tuple[str, ...] = ("fraud_",)) -> dict[str, float]:
    """A Prometheus endpoint's samples whose names start with ``prefixes``, as ``{name{labels}: value}``."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(prefixes) and not sample.name.endswith(("_bucket", "_created")):
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                found[f"{sample.name}{{{labels}}}" if labels else sample.name] = float(sample.value)
    return found


def score_window(
    bootstrap: str,
    topics: Topics,
    bundle: Path,
    messages: list[tuple[bytes, bytes]],
    rate: float,
    *scorer_args: str,
    labels: DelayedLabels | None = None,
    steps: np.ndarray | None = None,
) -> StreamRun:
    """Start the scorer process (its own consumer group), replay ``messages`` at ``rate`` (and their
    delayed ``labels``; watermark ticks at each of ``steps``), read every result back, read the scorer's
    metrics and, once every label has reached it, its live evidence; stop it (SIGTERM: it commits and
    leaves the group)."""
    port = free_port()
    process = start_scorer_process(
        bootstrap, topics, bundle, "--group", f"scorer-{topics.prefix}", "--metrics-port", str(port), *scorer_args
    )
    evidence = None
    try:
        replayed = replay(bootstrap, topics.transactions, messages, rate, labels, steps, topics.labels)
        scored = read_topic(bootstrap, topics.scores, expect=len(messages), timeout=600)
        metrics = scrape(f"http://127.0.0.1:{port}/metrics", ("fraud_stream_messages", "fraud_stream_consumer_lag"))
        if labels is not None:
            evidence = _live_once_labelled(f"http://127.0.0.1:{port}/live", replayed.labels)
    finally:
        output = stop_scorer_process(process)
    results = results_frame(scored)
    return StreamRun(replayed, results, summarize(results), metrics, output, evidence)


def _live_once_labelled(url: str, published: int, timeout: float = 120.0) -> dict:
    """The scorer's ``/live`` answer once it has accounted for every published label (or at ``timeout``)."""
    import json
    import time

    deadline = time.monotonic() + timeout
    while True:
        with urllib.request.urlopen(url, timeout=10) as response:
            answer = json.loads(response.read())
        counts = answer["labels"]
        seen = counts["joined"] + counts["duplicate"] + counts["unmatched"] + counts["waiting_for_result"]
        if seen >= published or time.monotonic() > deadline:
            return answer
        time.sleep(0.5)


def live_table(answer: dict) -> pd.DataFrame:
    """Live performance per model version from a scorer's ``/live`` answer (its labelled window)."""
    window = answer["window"]
    rows = {
        f"v{version} ({role})": performance(
            np.array(window["labels"]), np.array(window["probabilities"][version]), window["thresholds"][version]
        )
        for version, role in answer["roles"].items()
    }
    table = pd.DataFrame.from_dict(rows, orient="index")
    counts = dict.fromkeys(("labelled", "frauds", "alerts"), Unit.COUNT)
    table.attrs["units"] = {**counts, "precision": Unit.RATE, "recall": Unit.RATE, "auprc": Unit.SCORE}
    return table


def window_messages(raw_path: str | Path, steps: tuple[int, int], limit: int = 0):
    """A step window of the raw data: its replay messages (labels left out), its labels by
    ``transaction_id``, and the table itself (for ``DelayedLabels``)."""
    table = read_window(raw_path, *steps, limit)
    labels = pd.Series(table.column("isFraud").to_numpy(), index=table.column("transaction_id").to_pylist())
    return encode_transactions(table), labels, table


@dataclass(frozen=True)
class MemoryCheck:
    """The online store after the run: the served vectors it logged against 02's rule computed offline for the
    same transactions (``lib.data.entity.entity_columns`` over the raw data: equal to Spark's, tested)."""

    logged: Count  # served vectors in the store's log (the --log-features share of the window)
    equal: Count  # of those, equal to the offline vector in every feature
    equal_share: Rate
    destinations: Count
    origins: Count
    store_mib: float  # Redis's used memory


def warm_store(url: str, raw_path: str | Path, first_step: int, label_delay: int, prefix: str) -> Any:
    """An ``OnlineStore`` at ``url`` under ``prefix``, backfilled with the raw transactions before ``first_step``
    (``store backfill``: the stream goes on from there)."""
    from lib.serving.online import OnlineStore

    store = OnlineStore(url, label_delay, prefix=prefix)
    if first_step > 1:
        history = read_window(raw_path, 1, first_step - 1)
        names = ("step", "amount", "nameOrig", "nameDest", "transaction_id", "isFraud")
        store.backfill({c: history.column(c).to_pylist() for c in names})
    return store


def memory_check(store: Any, raw_path: str | Path, last_step: int, saved: Path) -> MemoryCheck:
    """Compare the store's served log with the offline vectors; save the log (with the offline vectors beside it,
    ``offline_<feature>``) as Parquet for 07's skew check."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from lib.data.entity import entity_columns

    logged = pd.DataFrame(store.served_log())
    names = [f.name for f in store.spec]
    frame = pd.DataFrame(index=pd.Index([], name="transaction_id"))
    equal = 0
    if len(logged):
        logged = logged.drop_duplicates("transaction_id", keep="last")
        table = read_window(raw_path, 1, last_step)
        # the rows of the logged transactions' accounts only: an account's features come from its own rows alone
        mine = pc.is_in(table.column("transaction_id"), pa.array(list(logged["transaction_id"]), pa.string()))
        table = table.filter(
            pc.or_(
                *(pc.is_in(table.column(c), pc.unique(table.column(c).filter(mine))) for c in ("nameDest", "nameOrig"))
            )
        )
        columns = {
            c: table.column(c).to_numpy(zero_copy_only=False)
            for c in ("step", "amount", "nameOrig", "nameDest", "isFraud")
        }
        offline = pd.DataFrame(
            entity_columns(columns, store.label_delay), index=table.column("transaction_id").to_pylist()
        )
        served = pd.DataFrame(list(logged["features"]), index=logged["transaction_id"])[names]
        expected = offline.loc[served.index, names]
        equal = int((served.to_numpy() == expected.to_numpy()).all(axis=1).sum())
        frame = served.join(expected.add_prefix("offline_"))
        frame.index.name = "transaction_id"
    saved.parent.mkdir(parents=True, exist_ok=True)
    with atomic.staged_file(saved) as staging:
        frame.reset_index().to_parquet(staging, index=False)
    stats = store.stats()
    return MemoryCheck(
        logged=len(frame), equal=equal, equal_share=equal / len(frame) if len(frame) else float("nan"),
        destinations=stats["destinations"], origins=stats["origins"], store_mib=stats["used_memory_bytes"] / 2**20,
    )  # fmt: skip


@dataclass(frozen=True)
class LiveAlerts:
    """The alerts topic against the labels of the replayed rows, and the dead letters."""

    alerts: Count
    true_alerts: Count
    alert_precision: Rate
    fraud_recall: Rate
    frauds_in_window: Count
    dead_letters: Count


def live_alerts(bootstrap: str, topics: Topics, results: pd.DataFrame, labels: pd.Series) -> LiveAlerts:
    """The alerts and dead-letter topics against the labels of the replayed rows (joined by ``transaction_id``)."""
    alerts = (
        results_frame(read_topic(bootstrap, topics.alerts, idle=1.0)) if results.is_fraud.any() else results.iloc[:0]
    )
    alerted = alerts.drop_duplicates("transaction_id")  # at-least-once: a re-scored batch alerts twice
    true_alerts = int(labels.reindex(alerted.transaction_id).sum())
    frauds = int(labels.sum())
    return LiveAlerts(
        alerts=len(alerted),
        true_alerts=true_alerts,
        alert_precision=true_alerts / len(alerted) if len(alerted) else float("nan"),
        fraud_recall=true_alerts / frauds if frauds else float("nan"),
        frauds_in_window=frauds,
        dead_letters=len(read_topic(bootstrap, topics.dead_letter, idle=1.0)),
    )


def top_alerts(results: pd.DataFrame, window: Any, count: int = 10) -> pd.DataFrame:
    """The ``count`` highest-scored alerts as an analyst reads them: the transaction, its score, its label (known
    here after the fact) and its reasons in words, each with its contribution toward fraud (log-odds)."""
    alerts = results[results.is_fraud].drop_duplicates("transaction_id").nlargest(count, "fraud_probability")
    raw = window.select(["transaction_id", "type", "amount", "nameOrig", "nameDest", "isFraud"]).to_pandas()
    table = alerts[["transaction_id", "fraud_probability", "reasons"]].merge(raw, on="transaction_id", how="left")
    for rank in range(TOP_REASONS):
        table[f"reason {rank + 1}"] = [
            f"{r[rank]['text']} (+{r[rank]['contribution']:.2f})" if len(r) > rank else "" for r in table.reasons
        ]
    table = table.drop(columns="reasons").set_index("transaction_id")
    table = table.rename(columns={"isFraud": "label (known later)"})
    table.attrs["units"] = {"fraud_probability": Unit.SCORE, "amount": Unit.MONEY}
    return table


def plot_latency(results: pd.DataFrame):
    """Produce-to-result latency histogram, and results appended per second over the run."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.5))
    left.hist(results.latency_ms, bins=60)
    left.set(title="produce → result appended (ms)", xlabel="ms", ylabel="transactions")
    per_second = results.groupby(results.appended_ms // 1000).size()
    right.plot(per_second.index - per_second.index.min(), per_second.to_numpy(), marker=".")
    right.set(title="results appended per second", xlabel="second of the run", ylabel="transactions/s")
    fig.tight_layout()
    return fig
