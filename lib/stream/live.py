"""Delayed labels joined to the stream's results, and live performance per model version.

Confirmed labels (chargebacks, investigations) arrive on the labels topic long after the decision,
keyed like their transaction (``nameOrig``), so with the same partition count and the range assignor
a label reaches the consumer-group member that scored its transaction. ``LabelJoin`` keeps, per
member, in memory and bounded:

* results waiting for their label (``capacity``): when full, the oldest is dropped and counted as
  ``expired`` (its label never came in time; one that comes later is counted as ``unmatched``);
* labels that came before their result (``capacity // 10``): the oldest beyond that is ``unmatched``;
* ids already labelled (``capacity``), so a second label for one is a ``duplicate``, never a second
  sample;
* the rolling window of the last ``window`` labelled results, with every served version's
  probability, from which precision, recall and AUPRC per version are computed.

A member that restarts starts with an empty store: the labels of results it scored before are then
``unmatched`` (counted, never silent).
"""

from collections import OrderedDict, deque
from dataclasses import dataclass
from itertools import islice, repeat
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from lib.quality import performance

OUTCOMES = ("joined", "duplicate", "expired", "unmatched")


@dataclass(frozen=True)
class Joined:
    label: int
    versions: tuple[str, ...]
    probabilities: tuple[float, ...]


class LabelJoin:
    """Results joined to their delayed labels by ``transaction_id``, in bounded memory (see the module)."""

    def __init__(self, capacity: int = 100_000, window: int = 20_000) -> None:
        self.capacity, self.window_size = capacity, window
        self.early_limit = max(capacity // 10, 1)  # labels kept waiting for their result
        # a plain dict (in insertion order: the oldest first): a third of an OrderedDict's cost per result
        self.waiting: dict[str, tuple[tuple[str, ...], tuple[float, ...]]] = {}
        self.early: OrderedDict[str, int] = OrderedDict()
        self.labelled: OrderedDict[str, None] = OrderedDict()
        self.window: deque[Joined] = deque(maxlen=window)
        self.thresholds: dict[str, float] = {}
        self.counts = dict.fromkeys(OUTCOMES, 0)

    def add_results(self, ids: list[str], scored: dict[str, tuple[np.ndarray, float]]) -> None:
        """Results of one micro-batch: ``{version: (probabilities, threshold)}`` for the same ``ids``."""
        versions = tuple(scored)
        for version, (_, threshold) in scored.items():
            self.thresholds[version] = threshold
        waiting, early, labelled = self.waiting, self.early, self.labelled
        probabilities = zip(*(scored[v][0].tolist() for v in versions), strict=True)
        if not early and labelled.keys().isdisjoint(ids) and waiting.keys().isdisjoint(ids):
            # the usual batch: new results, all waiting (one update, not a lookup per result)
            waiting.update(zip(ids, zip(repeat(versions), probabilities), strict=True))
        else:
            self._add_one_by_one(ids, versions, probabilities)
        expired = len(waiting) - self.capacity
        if expired > 0:  # the oldest, found in one pass
            for transaction in list(islice(waiting, expired)):
                del waiting[transaction]
            self.counts["expired"] += expired

    def _add_one_by_one(self, ids: list[str], versions: tuple[str, ...], probabilities: Any) -> None:
        waiting, early, labelled = self.waiting, self.early, self.labelled
        for transaction, scores in zip(ids, probabilities, strict=True):
            if transaction in labelled:
                continue  # re-scored after a redelivery: its label is already in the window
            label = early.pop(transaction, None)
            if label is not None:
                self._join(transaction, label, versions, scores)
                continue
            waiting.pop(transaction, None)  # re-scored before its label came: the newest result waits, as the newest
            waiting[transaction] = (versions, scores)

    def add_label(self, transaction: str, label: int) -> None:
        result = self.waiting.pop(transaction, None)
        if result is not None:
            self._join(transaction, label, *result)
        elif transaction in self.labelled:
            self.counts["duplicate"] += 1
        else:
            self.early[transaction] = label
            if len(self.early) > self.early_limit:
                self.early.popitem(last=False)
                self.counts["unmatched"] += 1

    def _join(self, transaction: str, label: int, versions: tuple[str, ...], probabilities: tuple[float, ...]) -> None:
        self.window.append(Joined(int(label), versions, probabilities))
        self.labelled[transaction] = None
        if len(self.labelled) > self.capacity:
            self.labelled.popitem(last=False)
        self.counts["joined"] += 1

    def evidence(self, versions: list[str]) -> dict[str, Any]:
        """The window's results scored by every one of ``versions``: labels and each one's probabilities."""
        labels: list[int] = []
        columns: dict[str, list[float]] = {v: [] for v in versions}
        for joined in self.window:
            if all(v in joined.versions for v in versions):
                labels.append(joined.label)
                for v in versions:
                    columns[v].append(joined.probabilities[joined.versions.index(v)])
        return {
            "labels": labels,
            "probabilities": columns,
            "thresholds": {v: self.thresholds.get(v) for v in versions},
        }

    def performance(self, version: str) -> dict[str, Any]:
        """Live performance of ``version`` over the window's results it scored."""
        window = self.evidence([version])
        return performance(np.array(window["labels"]), np.array(window["probabilities"][version]),
                           self.thresholds.get(version, 0.5))  # fmt: skip


class LiveMetrics:
    """The label join and live performance as Prometheus metrics; the version label only ever holds the
    versions being served (at most two), so the series stay bounded as models come and go."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Counter, Gauge

        self.labels = Counter(
            "fraud_stream_labels", "Delayed labels by outcome (joined, duplicate, expired result, unmatched label)",
            ["outcome"], registry=registry,
        )  # fmt: skip
        self.stored = Gauge(
            "fraud_stream_label_store", "Entries held by the label join (results waiting, early labels)", ["kind"],
            registry=registry,
        )  # fmt: skip
        names = {
            "labelled": "Labelled results in the live window", "frauds": "Labelled frauds in the live window",
            "precision": "Alert precision over the live window", "recall": "Fraud recall over the live window",
            "auprc": "AUPRC over the live window",
        }  # fmt: skip
        self.gauges = {
            key: Gauge(f"fraud_live_{key}", doc, ["model_version", "role"], registry=registry)
            for key, doc in names.items()
        }
        self.shown: set[tuple[str, str]] = set()
        self.counted = dict.fromkeys(OUTCOMES, 0)
        for outcome in OUTCOMES:
            self.labels.labels(outcome)

    def update(self, join: LabelJoin, roles: dict[str, str]) -> None:
        """Refresh from ``join`` for the versions served now (``{version: role}``); drop the others."""
        for outcome, count in join.counts.items():
            self.labels.labels(outcome).inc(count - self.counted[outcome])
            self.counted[outcome] = count
        self.stored.labels("results").set(len(join.waiting))
        self.stored.labels("labels").set(len(join.early))
        shown = set(roles.items())
        for version, role in shown:
            figures = join.performance(version)
            for key, gauge in self.gauges.items():
                gauge.labels(version, role).set(figures[key])
        for stale in self.shown - shown:
            for gauge in self.gauges.values():
                gauge.remove(*stale)
        self.shown = shown
