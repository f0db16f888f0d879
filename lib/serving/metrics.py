"""Prometheus metrics of the scoring paths (Prometheus naming: base units, ``_seconds``, ``_total``).

Each app builds its own ``CollectorRegistry`` and hands it in, so several apps (and tests) can live
in one process without sharing counters. Served by several worker processes (``serve --workers N``),
the API's values live in prometheus-client's multiprocess files instead (``PROMETHEUS_MULTIPROC_DIR``,
set before the workers start), and every worker's ``/metrics`` answers with all workers' sums.
"""

import collections
import os
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from lib.atomic import pid_running
from lib.contract import Explained, Reason

STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
T = TypeVar("T")
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SCORE_BUCKETS = (0.001, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class BatchHistogram:
    """A Prometheus histogram with one label value that also takes a whole batch at a time (NumPy).

    prometheus-client's ``Histogram.observe`` takes one value per call (a lock and a bucket scan each);
    a 10,000-transaction batch would spend more time there than in the model. ``observe`` counts the
    batch per bucket with NumPy and adds each count to the histogram's own bucket values once, so the
    exposition, and multiprocess mode (``serve --workers N``), stay prometheus-client's.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        label: tuple[str, str],
        buckets: Sequence[float],
        registry: CollectorRegistry | None,
    ) -> None:
        self.child = Histogram(name, documentation, [label[0]], buckets=buckets, registry=registry).labels(label[1])
        # the histogram's own bounds and values (non-cumulative per bucket, +Inf last), as its observe() uses them
        self.bounds = np.asarray(self.child._upper_bounds[:-1], dtype=np.float64)

    def observe(self, values: np.ndarray) -> None:
        counts = np.bincount(np.searchsorted(self.bounds, values, side="left"), minlength=len(self.bounds) + 1)
        for bucket, count in zip(self.child._buckets, counts.tolist(), strict=True):
            if count:
                bucket.inc(count)
        self.child._sum.inc(float(values.sum()))

    def observe_one(self, value: float) -> None:
        self.child.observe(value)


def multiprocess() -> bool:
    """Whether this process is one of several workers sharing their metrics (prometheus-client's
    multiprocess mode, which reads this variable when it is imported)."""
    return "PROMETHEUS_MULTIPROC_DIR" in os.environ


@contextmanager
def shared_values() -> Iterator[Path]:
    """A folder for the workers' multiprocess metric files, set as ``PROMETHEUS_MULTIPROC_DIR`` for as long as
    they run: the one that variable names, emptied of an earlier run's files, or a temporary one."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    folder = Path(given) if given else Path(tempfile.mkdtemp(prefix="fraud-api-metrics-"))
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):  # counts of processes that are gone would be added to the new ones
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    try:
        yield folder
    finally:
        if not given:
            shutil.rmtree(folder, ignore_errors=True)


_SUMMED = ("counter", "histogram", "summary")  # values that sum across processes: a dead worker's still count


def compact_dead_workers(folder: Path) -> int:
    """Fold the metric files of workers that are gone into one file per type (``counter_dead.db`` …), so the
    folder holds a file set per live worker plus one, not two more files per worker ever started (2,000 dead
    workers: 16 MB and 0.3 s a scrape). Their counts still add to the totals; their live gauges are dropped,
    as prometheus-client's ``mark_process_dead`` does. Returns the number of files folded or dropped."""
    import fcntl

    from prometheus_client import mmap_dict

    mmaped: Any = mmap_dict.MmapedDict  # prometheus-client's own file format (untyped)
    done = 0
    with open(folder / ".compact.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # workers starting together fold one after the other
        dead: dict[str, list[Path]] = {}
        for path in folder.glob("*_*.db"):
            kind, _, pid = path.stem.rpartition("_")
            if pid.isdigit() and int(pid) != os.getpid() and not pid_running(int(pid)):
                dead.setdefault(kind, []).append(path)
        for kind, paths in dead.items():
            if kind.split("_")[0] not in _SUMMED:  # a gauge of a process that is gone
                for path in paths:
                    path.unlink(missing_ok=True)
                done += len(paths)
                continue
            folded = folder / f"{kind}_dead.db"
            totals: dict[str, float] = {}
            for path in ([folded] if folded.exists() else []) + paths:
                for key, value, *_ in mmaped.read_all_values_from_file(str(path)):
                    totals[key] = totals.get(key, 0.0) + value
            staging = folder / f".{kind}_dead.db.tmp"
            staging.unlink(missing_ok=True)
            merged = mmaped(str(staging))
            for key, value in totals.items():
                merged.write_value(key, value, 0.0)
            merged.close()
            staging.rename(folded)  # then the folded files go: between the two, a scrape counts them twice
            for path in paths:
                path.unlink(missing_ok=True)
            done += len(paths)
    return done


class ScoringMetrics:
    """What every scoring path reports: the model it serves, the scores it gives, the decisions it takes.

    ``shared``: the counters and histograms are one worker's share of multiprocess values, which
    ``registry`` collects from every worker's files (``MultiProcessCollector``) instead of holding them.
    The model's ``Info`` stays per process (the multiprocess mode has no Info): each worker names its own.
    """

    def __init__(self, registry: CollectorRegistry, source: str, shared: bool = False) -> None:
        self.registry = registry
        self.source = source
        # where the counters and histograms register: None, in multiprocess mode (prometheus-client's rule)
        self.values = values = None if shared else registry
        if shared:
            from prometheus_client.multiprocess import MultiProcessCollector

            compact_dead_workers(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        self.model = Info("fraud_model", "The model being served", registry=registry)
        self.score = BatchHistogram(
            "fraud_prediction_score", "Fraud probability of scored transactions", ("source", source),
            SCORE_BUCKETS, values,
        )  # fmt: skip
        self.decisions = Counter(
            "fraud_decisions", "Scored transactions by decision", ["source", "outcome"], registry=values
        )
        self.frauds, self.genuine = (self.decisions.labels(source, outcome) for outcome in ("fraud", "genuine"))
        self.reasons = Counter(
            "fraud_alert_reasons", "Reasons given with alerts, by code (lib.features.Says)", ["source", "code"],
            registry=values,
        )  # fmt: skip
        # a new version that cannot be loaded: the previous one keeps serving (lib.serving.bundles.LiveModels)
        self.reload_failing = Gauge(
            "fraud_model_reload_failing", "1 while the newest model version cannot be loaded (the previous serves)",
            ["source"], registry=values, multiprocess_mode="livemax",
        ).labels(source)  # fmt: skip
        self.reload_failures = Counter(
            "fraud_model_reload_failures", "Checks that found a new model version and could not load it", ["source"],
            registry=values,
        ).labels(source)  # fmt: skip

        # the online feature store (lib.serving.online): each request's or micro-batch's round trips, and failures
        self.store_latency = Histogram(
            "fraud_store_duration_seconds", "Online store work of one request or micro-batch (reads, records, log)",
            ["source"], buckets=STORE_BUCKETS, registry=values,
        ).labels(source)  # fmt: skip
        self.store_errors = Counter(
            "fraud_store_errors", "Requests or micro-batches the online store failed", ["source"], registry=values
        ).labels(source)

    def stored(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` against the online store, timed; a failure counted, then raised."""
        began = time.perf_counter()
        try:
            return work(*args)
        except Exception:
            self.store_errors.inc()
            raise
        finally:
            self.store_latency.observe(time.perf_counter() - began)

    async def astored(self, work: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``stored`` for a coroutine function."""
        began = time.perf_counter()
        try:
            return await work(*args)
        except Exception:
            self.store_errors.inc()
            raise
        finally:
            self.store_latency.observe(time.perf_counter() - began)

    def reload_checked(self, failure: str | None) -> None:
        """After a check of the model source: whether its newest version failed to load."""
        self.reload_failing.set(1 if failure else 0)
        if failure:
            self.reload_failures.inc()

    def set_model(self, info: Any) -> None:
        self.model.info(
            {
                "model_name": info.model_name,
                "model_version": info.model_version,
                "feature_spec_version": info.feature_spec_version,
                "threshold": f"{info.threshold:.6g}",
            }
        )

    def observe(self, probabilities: np.ndarray, decisions: np.ndarray, reasons: Explained | None = None) -> None:
        """Record the scores and decisions of a batch, and the reasons its alerts were given."""
        self.score.observe(np.asarray(probabilities, dtype=np.float64))
        frauds = int(np.count_nonzero(decisions))
        self.frauds.inc(frauds)
        self.genuine.inc(len(probabilities) - frauds)
        if reasons:
            self._count_reasons(given for row, given in reasons.items() if decisions[row])

    def _count_reasons(self, alerts: Iterable[list[Reason]]) -> None:
        for code, times in collections.Counter(r["code"] for given in alerts for r in given).items():
            self.reasons.labels(self.source, code).inc(times)

    def observe_results(self, results: list[Any]) -> None:
        """Record the scoring core's answers (``contract.PredictionRecord``s)."""
        if len(results) == 1:
            result = results[0]
            self.score.observe_one(result.fraud_probability)
            (self.frauds if result.is_fraud else self.genuine).inc()
            if result.is_fraud and result.reasons:
                self._count_reasons([result.reasons])
            return
        decisions = np.fromiter((r.is_fraud for r in results), bool, len(results))
        self.observe(np.fromiter((r.fraud_probability for r in results), np.float64, len(results)), decisions)
        self._count_reasons(r.reasons for r in results if r.is_fraud)


class ApiMetrics(ScoringMetrics):
    """HTTP metrics of the FastAPI twin on top of the scoring metrics."""

    def __init__(self, registry: CollectorRegistry, shared: bool = False) -> None:
        super().__init__(registry, "api", shared)
        self.requests = Counter(
            "fraud_api_requests", "HTTP requests by route, method and status", ["route", "method", "status"],
            registry=self.values,
        )  # fmt: skip
        self.latency = Histogram(
            "fraud_api_request_duration_seconds", "HTTP request latency by route, method and status",
            ["route", "method", "status"], buckets=LATENCY_BUCKETS, registry=self.values,
        )  # fmt: skip
        self._children: dict[tuple[str, str, str], tuple[Any, ...]] = {}  # routes x methods x statuses: a few dozen

    def observe_request(self, route: str, method: str, status: str, seconds: float) -> None:
        """Count and time one request (the label lookups, done once per combination, cost more than both)."""
        labels = (route, method, status)
        children = self._children.get(labels)
        if children is None:
            children = self._children[labels] = (self.requests.labels(*labels), self.latency.labels(*labels))
        children[0].inc()
        children[1].observe(seconds)
