"""Prometheus metrics of the scoring paths (Prometheus naming: base units, ``_seconds``, ``_total``).

Each app builds its own ``CollectorRegistry`` and hands it in, so several apps (and tests) can live
in one process without sharing counters.
"""

import bisect
import threading

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, Info
from prometheus_client.core import HistogramMetricFamily

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SCORE_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class BatchHistogram:
    """A Prometheus histogram with one label value, updated a whole batch at a time with NumPy.

    prometheus-client's ``Histogram.observe`` takes one value per call (a lock and a bucket search
    each); a 10,000-transaction batch would spend more time there than in the model.
    """

    def __init__(self, name: str, documentation: str, label: tuple[str, str], buckets, registry) -> None:
        self.name, self.documentation, self.label = name, documentation, label
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self.edges = self.bounds.tolist()
        self.counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # the last one is +Inf
        self.total = 0.0
        self.lock = threading.Lock()
        registry.register(self)

    def observe(self, values: np.ndarray) -> None:
        counts = np.bincount(np.searchsorted(self.bounds, values, side="left"), minlength=len(self.counts))
        with self.lock:
            self.counts += counts
            self.total += float(values.sum())

    def observe_one(self, value: float) -> None:
        """One value without NumPy's per-call cost (a single request)."""
        i = bisect.bisect_left(self.edges, value)
        with self.lock:
            self.counts[i] += 1
            self.total += value

    def collect(self):
        with self.lock:
            cumulative, total = np.cumsum(self.counts), self.total
        family = HistogramMetricFamily(self.name, self.documentation, labels=[self.label[0]])
        buckets = [(f"{b:g}", int(c)) for b, c in zip(self.bounds, cumulative[:-1], strict=True)]
        family.add_metric([self.label[1]], [*buckets, ("+Inf", int(cumulative[-1]))], total)
        yield family


class ScoringMetrics:
    """What every scoring path reports: the model it serves, the scores it gives, the decisions it takes."""

    def __init__(self, registry: CollectorRegistry, source: str) -> None:
        self.registry = registry
        self.source = source
        self.model = Info("fraud_model", "The model being served", registry=registry)
        self.score = BatchHistogram(
            "fraud_prediction_score", "Fraud probability of scored transactions", ("source", source),
            SCORE_BUCKETS, registry,
        )  # fmt: skip
        self.decisions = Counter(
            "fraud_decisions", "Scored transactions by decision", ["source", "outcome"], registry=registry
        )
        self.frauds, self.genuine = (self.decisions.labels(source, outcome) for outcome in ("fraud", "genuine"))

    def set_model(self, info) -> None:
        self.model.info(
            {
                "model_name": info.model_name,
                "model_version": info.model_version,
                "feature_spec_version": info.feature_spec_version,
                "threshold": f"{info.threshold:.6g}",
            }
        )

    def observe(self, probabilities: np.ndarray, decisions: np.ndarray) -> None:
        """Record the scores and decisions of a batch."""
        self.score.observe(np.asarray(probabilities, dtype=np.float64))
        frauds = int(np.count_nonzero(decisions))
        self.frauds.inc(frauds)
        self.genuine.inc(len(probabilities) - frauds)

    def observe_results(self, results: list[dict]) -> None:
        """Record the scoring core's answers (``Scorer.score_records``)."""
        if len(results) == 1:
            self.score.observe_one(results[0]["fraud_probability"])
            (self.frauds if results[0]["is_fraud"] else self.genuine).inc()
            return
        self.observe(
            np.fromiter((r["fraud_probability"] for r in results), np.float64, len(results)),
            np.fromiter((r["is_fraud"] for r in results), bool, len(results)),
        )


class ApiMetrics(ScoringMetrics):
    """HTTP metrics of the FastAPI twin on top of the scoring metrics."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__(registry, "api")
        self.requests = Counter(
            "fraud_api_requests", "HTTP requests by route, method and status", ["route", "method", "status"],
            registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "fraud_api_request_duration_seconds", "HTTP request latency by route, method and status",
            ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=registry,
        )  # fmt: skip
        self._children: dict[tuple[str, str, str], tuple] = {}  # routes x methods x statuses: a few dozen

    def observe_request(self, route: str, method: str, status: str, seconds: float) -> None:
        """Count and time one request (the label lookups, done once per combination, cost more than both)."""
        labels = (route, method, status)
        children = self._children.get(labels)
        if children is None:
            children = self._children[labels] = (self.requests.labels(*labels), self.latency.labels(*labels))
        children[0].inc()
        children[1].observe(seconds)
