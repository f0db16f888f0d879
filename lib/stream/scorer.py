"""The stream scorer: a consumer-group member that scores micro-batches of transactions from Kafka.

Per micro-batch: validate every message with the APIs' contract, score the valid ones with the
shared scoring core (in-process, or ``--via-http`` through the FastAPI twin's batch route), write
each result to the scores topic (and the alerts topic above the threshold), refused messages to the
dead-letter topic with the reason, wait until the broker acknowledged all of it, then commit the
input offsets (at-least-once; see ``lib.stream``) and go on to the next batch while the commit's
answer comes.

Served from a bundle store (``lib.serving.bundles``), it also scores every micro-batch with the
registry's challenger, in shadow (its results go to the shadow topic, never to scores or alerts),
and switches to a new champion between micro-batches when the store's aliases move. Delayed labels
from the labels topic are joined to both models' results (``lib.stream.live``): live performance per
model version, as Prometheus metrics and as the evidence ``registry promote --evidence live`` reads
from ``/live``.
"""

import gc
import hashlib
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lib.config import CHALLENGER, CHAMPION
from lib.contract import RequestError, encode_json, parse_label, parse_message
from lib.features import columns_from_records
from lib.serving.online import OnlineStore, StoreUnavailable
from lib.serving.scoring import Explain, Served
from lib.serving.source import ModelSource
from lib.stream.kafka import Producer, StreamError, Topics, client_config
from lib.stream.live import LabelJoin
from lib.stream.memory import Memory
from lib.stream.metrics import StreamMetrics
from lib.stream.watermark import tick_step

log = logging.getLogger(__name__)

ASSIGNED = "assigned"  # what the scorer prints when the group hands it partitions
REFUSALS = {400: "not valid JSON", 413: "too large for a transaction", 422: "does not follow the transaction contract"}
Refused = tuple[Any, str, list[dict[str, Any]]]  # a refused message, why, and the errors its dead letter names
KEPT_BYTES = 4096  # of a refused message's value (and key) copied into its dead letter: a letter always fits


def dead_letter(msg: Any, reason: str, errors: list[dict[str, Any]]) -> bytes:
    """The dead letter of a refused message: why, where it was, and its value, cut to ``KEPT_BYTES`` with
    its size and sha256 so that a letter always fits the topic (one too large could stop the stream)."""
    value = msg.value() or b""
    letter = {
        "reason": reason,
        "errors": errors,
        "topic": msg.topic(),
        "partition": msg.partition(),
        "offset": msg.offset(),
        "value": value[:KEPT_BYTES].decode("utf-8", errors="replace"),
        "value_bytes": len(value),
        "value_sha256": hashlib.sha256(value).hexdigest(),
        "truncated": len(value) > KEPT_BYTES,
    }
    return encode_json(letter)


def _stamped(results: list[Any], stamps: list[int]) -> list[bytes]:
    """The results as the scores topic carries them: JSON, with their input's produce time."""
    for result, ms in zip(results, stamps, strict=True):
        result.produced_at_ms = ms
    return [encode_json(r) for r in results]


YOUNG_GENERATION = 10_000  # container objects allocated between two of the collector's youngest passes (Python's: 700)


@contextmanager
def collector_for_batches(young: int) -> Iterator[None]:
    """The cyclic garbage collector set for micro-batches inside the block, as it was after.

    * Its first threshold at ``young`` (``gc.set_threshold``). A micro-batch (the benchmark's 5,000
      messages) allocates a few container objects per message (the client's messages, the results), all
      held until the batch is done: at Python's 700 the collector makes dozens of young passes per batch,
      and what survives them (the whole batch) is walked again by the older generations' passes (the
      throughput at each threshold: docs/benchmarks.md). Cycles are still collected, one young pass per
      ``young`` objects.
    * What the process holds when the loop starts (modules, the model, the clients: hundreds of thousands
      of objects) collected once, then frozen (``gc.freeze``): a full collection no longer walks it, nor
      pauses every message in flight while it does.
    """
    saved = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(young, *saved[1:])
    try:
        yield
    finally:
        gc.set_threshold(*saved)
        gc.unfreeze()


@dataclass
class StreamScorer:
    """A consumer-group member: poll micro-batches, validate, score, write results, then commit."""

    bootstrap: str
    # a bundle's Scorer, a bundle store's LiveModels (champion and shadow challenger, reloaded when its aliases
    # move) or an API's HttpScorer: lib.serving.source.resolve_model
    models: ModelSource
    topics: Topics = field(default_factory=Topics)
    group_id: str = "fraud-scorer"
    batch_size: int = 2000
    batch_timeout: float = 0.02  # seconds to wait for a micro-batch to fill
    metrics: StreamMetrics | None = None
    live: LabelJoin = field(default_factory=LabelJoin)
    consumer_settings: dict[str, Any] = field(default_factory=dict)  # librdkafka settings over the defaults below
    reasons: Explain = "alerts"  # which results carry their reasons ("none": --no-reasons)
    # the online feature store (lib.serving.online): each transaction read at decision time, recorded after, held
    # until the group's watermark allows it (lib.stream.watermark); None: no per-account memory
    store: OnlineStore | None = None
    features_share: float = 0.0  # of the served entity vectors logged in the store (the skew check's)
    max_held: int = 50_000  # transactions held per partition before it is paused until the watermark moves

    def __post_init__(self) -> None:
        from confluent_kafka import Consumer

        self.stopping = threading.Event()
        self._commit_failure = None  # a commit's answer that must stop the scorer (see _committed)
        self._labels_paused = False  # see _pace_labels
        self.consumer = Consumer(
            client_config(
                self.bootstrap,
                **{"group.id": self.group_id, "enable.auto.commit": False, "auto.offset.reset": "earliest",
                   "enable.partition.eof": False, "fetch.wait.max.ms": 10, "session.timeout.ms": 10000,
                   "heartbeat.interval.ms": 1000,
                   # partition i of transactions and of labels go to the same member (same keys, same counts)
                   "partition.assignment.strategy": "range", "on_commit": self._committed, **self.consumer_settings},
            )
        )  # fmt: skip
        topics = self.topics
        self.producer = Producer(self.bootstrap, (topics.scores, topics.alerts, topics.dead_letter, topics.shadow))
        self.memory = None if self.store is None else Memory(
            self.store, self.consumer, self.producer, topics, self.group_id, self.metrics, self.features_share,
            self.max_held,
        )  # fmt: skip
        self.consumer.subscribe([topics.transactions, topics.labels], on_assign=self._assigned, on_revoke=self._revoked)
        self.scored = 0
        self.dead_letters = 0
        # who this member is: a promotion counts each member's window once, however many addresses name it
        self.identity = f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:12]}"
        self._lag_checked = self._live_shown = self._reload_checked = 0.0
        self._reload_failure: str | None = None
        self.lock = threading.Lock()  # the label join, between the consumer loop and /live

    @property
    def served(self) -> Served:
        """The models this micro-batch is scored with (one read: a swap never splits a batch)."""
        return self.models.current

    def _assigned(self, _consumer: Any, partitions: list[Any]) -> None:
        self._labels_paused = False  # partitions come assigned unpaused
        if self.memory is not None:
            self.memory.assigned()
        print(f"{ASSIGNED} {len(partitions)} partition(s) of {self.topics.transactions}", flush=True)

    def _revoked(self, _consumer: Any, partitions: list[Any]) -> None:
        if self.memory is not None:
            self.memory.gate.forget(partitions)

    def _validate(self, messages: list[Any]) -> tuple[list[Any], list[Any], list[Refused]]:
        """(valid transactions as ``TransactionRecord``s, their messages, refused messages with why)."""
        valid, sources, invalid = [], [], []
        for msg in messages:
            tick = tick_step(msg)
            if tick is not None:
                if self.memory is not None:
                    self.memory.gate.tick(msg, tick)
                continue
            try:
                record = parse_message(msg.value())
            except RequestError as exc:
                invalid.append((msg, REFUSALS[exc.http_status], exc.detail))
                continue
            if not record.transaction_id:  # results must be recognisable: fall back to the message's address
                record.transaction_id = f"{msg.topic()}/{msg.partition()}/{msg.offset()}"
            valid.append(record)
            sources.append(msg)
        return valid, sources, invalid

    def _labels(self, messages: list[Any]) -> tuple[list[Any], list[Refused]]:
        """(valid labels as ``LabelRecord``s, refused messages with why); ticks go to the gate."""
        labels, invalid = [], []
        for msg in messages:
            tick = tick_step(msg)
            if tick is not None:
                if self.memory is not None:
                    self.memory.gate.tick(msg, tick)
                continue
            try:
                label = parse_label(msg.value())
            except RequestError as exc:  # validated like a transaction: dead-lettered, never coerced
                invalid.append((msg, "does not follow the label contract", exc.detail))
                continue
            labels.append(label)
            if self.memory is not None:
                self.memory.gate.label(msg, label)
        return labels, invalid

    def _remember(self, ids: list[str], results: list[Any], shadow: list[Any] | None) -> None:
        """Both models' probabilities of this batch, for the label join (by the version each result names)."""
        n = len(results)
        probabilities = np.fromiter((r.fraud_probability for r in results), np.float64, n)
        challenger = np.fromiter((r.fraud_probability for r in shadow), np.float64, n) if shadow else None
        versions = [r.model_version for r in results]
        for version in dict.fromkeys(versions):  # one, unless the API swapped models within a batch (an HttpScorer)
            rows = np.arange(n) if versions.count(version) == n else np.flatnonzero(np.array(versions) == version)
            scored = {version: (probabilities[rows], results[versions.index(version)].threshold)}
            if shadow and challenger is not None:
                scored[shadow[0].model_version] = (challenger[rows], shadow[0].threshold)
            with self.lock:
                self.live.add_results(ids if len(rows) == n else [ids[i] for i in rows], scored)

    def process(self, messages: list[Any]) -> None:
        """Score one micro-batch and write its outputs; returns once all are acknowledged."""
        transactions = [m for m in messages if m.topic() == self.topics.transactions]
        labels, invalid_labels = self._labels([m for m in messages if m.topic() == self.topics.labels])
        valid, sources, invalid = self._validate(transactions)
        invalid += invalid_labels
        topics, send_all, served = self.topics, self.producer.send_all, self.served
        if self.memory is not None:
            valid, sources = self.memory.admit(valid, sources)
        if valid:  # the columns once, for the champion and the challenger
            columns, ids = columns_from_records(valid, attributes=True), [r.transaction_id for r in valid]
            results = served.champion.score_batch(columns, ids, self.reasons)
            shadow = served.challenger.score_batch(columns, ids, "none") if served.challenger else None
            stamps = [m.timestamp()[1] for m in sources]
            keys = [i.encode() for i in ids]
            values = _stamped(results, stamps)
            send_all(topics.scores, zip(keys, values, strict=True))
            send_all(topics.alerts, [(k, v) for k, v, r in zip(keys, values, results, strict=True) if r.is_fraud])
            if shadow:
                send_all(topics.shadow, zip(keys, _stamped(shadow, stamps), strict=True))
            self._remember(ids, results, shadow)
        with self.lock:
            for label in labels:
                self.live.add_label(label.transaction_id, label.isFraud)
        send_all(topics.dead_letter, [((m.key() or b"")[:KEPT_BYTES], dead_letter(m, why, e)) for m, why, e in invalid])
        self.producer.flush()
        self.scored += len(valid)
        self.dead_letters += len(invalid)
        if self.metrics and valid:
            now_ms = time.time() * 1000
            self.metrics.observe_results(results)
            self.metrics.end_to_end.observe((now_ms - np.array(stamps, np.float64)) / 1000)
        if self.metrics:
            self.metrics.messages.labels("scored").inc(len(valid))
            self.metrics.messages.labels("dead_letter").inc(len(invalid))

    def _pace_labels(self) -> None:
        """Flow control of the labels topic: a fetch brings more (small) labels than transactions, and a label
        read before its result waits in the join's bounded early store. Past half of it, the labels partitions
        pause (librdkafka fetches again on resume what it had of them) until below a quarter, or until no
        transaction is left to read (labels whose transaction never comes still flow, counted ``unmatched``)."""
        early, limit = len(self.live.early), self.live.early_limit
        if self._labels_paused:
            if early >= limit // 4 and self._transactions_behind():
                return
        elif early <= limit // 2 or not self._transactions_behind():
            return
        labels = [tp for tp in self.consumer.assignment() if tp.topic == self.topics.labels]
        (self.consumer.resume if self._labels_paused else self.consumer.pause)(labels)
        self._labels_paused = not self._labels_paused

    def _transactions_behind(self) -> bool:
        """Whether an assigned transactions partition has messages not read yet (by the last fetch)."""
        mine = [tp for tp in self.consumer.assignment() if tp.topic == self.topics.transactions]
        for tp in self.consumer.position(mine):
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            if high > max(tp.offset, 0):
                return True
        return False

    def _commit(self) -> None:
        """Commit the batch's offsets without waiting for the broker's answer (``_committed`` gets it).

        The batch's results are acknowledged already, so what the commit adds is only its round trip:
        the next batch is consumed meanwhile (on a full topic, waiting for the answer took a tenth of the
        scorer's time). Commits are sent in order, so a later one covers an earlier one; on close the
        client waits for those still in flight. Raises, before committing more, what ``_committed`` found fatal.
        """
        from confluent_kafka import KafkaException

        if self._commit_failure is not None:
            raise KafkaException(self._commit_failure)
        try:
            if self.memory is None:
                self.consumer.commit(asynchronous=True)
            elif offsets := self.memory.commit_offsets(self.consumer.position(self.consumer.assignment())):
                self.consumer.commit(
                    offsets=offsets, asynchronous=True
                )  # what is held is delivered again after a restart
        except KafkaException as exc:  # refused by the client at once (no answer will come)
            self._committed(exc.args[0], None)

    def _committed(self, error: Any, _partitions: Any) -> None:
        """The broker's answer to a commit (librdkafka's ``on_commit``, served while consuming). A group that
        moved on (broker restart, rebalance) is not fatal: the results are already written; offsets the group
        refused are delivered again after the rejoin and scored again (at-least-once: the duplicates carry
        the same ``transaction_id``). Anything else stops the scorer at its next commit."""
        from confluent_kafka import KafkaError

        if error is None or error.code() == KafkaError._NO_OFFSET:
            return
        rejoin = (KafkaError._ASSIGNMENT_LOST, KafkaError.REBALANCE_IN_PROGRESS,
                  KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID, KafkaError._MAX_POLL_EXCEEDED)  # fmt: skip
        if error.code() not in rejoin or error.fatal():
            log.error("commit failed (%s): the scorer stops at its next commit", error.str())
            self._commit_failure = self._commit_failure or error
            return
        if self.metrics:
            self.metrics.errors.labels("commit").inc()
        log.warning("commit refused (%s): the batch is delivered again after the rejoin", error.str())

    def _update_lag(self) -> None:
        now = time.monotonic()
        if not self.metrics or now - self._lag_checked < 1.0:
            return
        self._lag_checked = now
        for tp in self.consumer.assignment():
            _, high = self.consumer.get_watermark_offsets(tp, cached=True)
            position = self.consumer.position([tp])[0].offset
            if high >= 0 and position >= 0:
                self.metrics.lag.labels(tp.topic, str(tp.partition)).set(max(high - position, 0))

    @collector_for_batches(YOUNG_GENERATION)  # while the loop runs
    def run(self, idle_timeout: float | None = None, until: Callable[["StreamScorer"], bool] | None = None) -> None:
        """Score until ``stop()`` (SIGTERM), ``until(self)`` is true, or ``idle_timeout`` s without messages."""
        from confluent_kafka import KafkaError

        last_message = time.monotonic()
        try:
            while not self.stopping.is_set() and not (until and until(self)):
                messages = self.consumer.consume(self.batch_size, self.batch_timeout)
                good = []
                for msg in messages:
                    error = msg.error()
                    if error is None:
                        good.append(msg)
                    elif error.code() != KafkaError._PARTITION_EOF:
                        if self.metrics:
                            self.metrics.errors.labels("consume").inc()
                        if error.fatal():
                            raise StreamError(f"consumer error: {error}")
                        log.warning("consumer error (retried by the client): %s", error)
                if good or (
                    self.memory is not None and self.memory.gate.held_count()
                ):  # held rows wait for other members
                    began = time.perf_counter()
                    try:
                        self.process(good)
                    except StreamError as exc:
                        if self.metrics and not isinstance(exc.__cause__, StoreUnavailable):
                            self.metrics.errors.labels("produce").inc()
                        raise
                    self._commit()
                    if self.metrics:
                        self.metrics.batch_latency.observe(time.perf_counter() - began)
                if good:
                    last_message = time.monotonic()
                elif idle_timeout is not None and time.monotonic() - last_message > idle_timeout:
                    break
                if self.memory is None:  # with a store the labels always flow: the watermark waits for them
                    self._pace_labels()
                self._update_lag()
                self._reload()
                self._show_live()
        finally:
            self._show_live(force=True)
            self.consumer.close()  # leaves the group at once, so partitions move to the other members

    def _reload(self) -> None:
        """Between micro-batches: a new champion or challenger when the store's aliases moved. A new version
        that cannot be loaded leaves the loaded pair scoring (``failure``, said once, and a metric)."""
        now, interval = time.monotonic(), self.models.reload_interval
        if interval is None or now - self._reload_checked < interval:
            return
        self._reload_checked = now
        try:
            swapped = self.models.check()
        except Exception as exc:  # a source that raises is a failed check, never a stopped scorer
            self.models.failure, swapped = f"{type(exc).__name__}: {exc}", False
        if swapped:
            if self.metrics:
                self.metrics.set_model(self.models.current.champion.info)
            print(f"serving {describe(self.models.current)}", flush=True)
        failure = self.models.failure
        if self.metrics:
            self.metrics.reload_checked(failure)
        if failure and failure != self._reload_failure:
            print(f"still serving {describe(self.models.current)}: {failure}", flush=True)
        self._reload_failure = failure

    def roles(self) -> dict[str, str]:
        """``{version: role}`` of the models served now."""
        champion, challenger = self.models.current.versions
        return {champion: CHAMPION, **({challenger: CHALLENGER} if challenger else {})}

    def _show_live(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self.metrics or (not force and now - self._live_shown < 1.0):
            return
        self._live_shown = now
        roles = self.roles()
        with self.lock:
            self.metrics.live.update(self.live, roles)

    def evidence(self) -> dict[str, Any]:
        """What ``/live`` answers: the served versions and the labelled window they were both scored on."""
        roles = self.roles()
        versions = sorted(roles, key=lambda v: roles[v] != CHAMPION)
        with self.lock:
            window = self.live.evidence(versions)
            counts = {**self.live.counts, "waiting_for_result": len(self.live.early)}
            waiting = len(self.live.waiting)
        return {"roles": roles, "window": window, "labels": counts, "results_waiting": waiting, "group": self.group_id,
                "scorer": self.identity}  # fmt: skip

    def stop(self, *_: Any) -> None:
        self.stopping.set()

    def stop_on_sigterm(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)


def describe(served: Served) -> str:
    champion, challenger = served.versions
    name = served.champion.info.model_name
    return f"{name} v{champion}" + (f" with v{challenger} in shadow" if challenger else "")
