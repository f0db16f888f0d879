"""A stream scorer's per-account memory (issue 34): the online store it reads each transaction's entity
features from and records it in, behind the group's watermark (``lib.stream.watermark``).

What a member does per micro-batch, for ``lib.stream.scorer.StreamScorer``: hold the batch's transactions and
fraud labels (``Gate``); exchange how far its partitions have come with the group (one Redis round trip);
count the labels the watermark allows; then, step by step, read the allowed transactions' entity vectors
(one pipelined round trip), and record them with their offsets and a share of the vectors for the log of
served vectors (one ``MULTI``). What is held is not
committed: a member that stops hands it to the next owner of its partitions, which reads it again.
"""

import time
from typing import Any

from lib.serving.online import OnlineStore, ServedVectors, StoreUnavailable
from lib.stream.kafka import Producer, StreamError, Topics
from lib.stream.metrics import StreamMetrics
from lib.stream.watermark import Gate, Watermark


class Memory:
    """The store and the gate of one scorer process."""

    def __init__(
        self,
        store: OnlineStore,
        consumer: Any,
        producer: Producer,
        topics: Topics,
        group: str,
        metrics: StreamMetrics | None,
        features_share: float,
        max_held: int,
    ) -> None:
        self.store, self.consumer, self.producer, self.topics = store, consumer, producer, topics
        self.metrics, self.features_share, self.max_held = metrics, features_share, max_held
        counts = {t: len(consumer.list_topics(t, timeout=30).topics[t].partitions)
                  for t in (topics.transactions, topics.labels)}  # fmt: skip
        watermark = Watermark(store.client, f"{store.prefix}watermark:{group}", counts)
        self.gate = Gate(watermark, topics.transactions, topics.labels, store.label_delay)
        self._paused: set[int] = set()  # transactions partitions paused while too much of them is held
        self._applied: dict[str, int] | None = None  # the store's recorded offsets, read again after each assignment
        self._held_since: float | None = None
        self._late_counted = 0  # of gate.late_count, in the metrics

    def assigned(self) -> None:
        """New partitions (they come unpaused): the recorded offsets are read again before the next record."""
        self._paused.clear()
        self._applied = None

    def commit_offsets(self, positions: list[Any]) -> list[Any]:
        """The consumer's positions, each stopped at its partition's first held message."""
        offsets = []
        for tp in positions:
            first = self.gate.first_held(tp.topic, tp.partition)
            tp.offset = tp.offset if first is None else first
            if tp.offset >= 0:
                offsets.append(tp)
        return offsets

    def admit(self, valid: list[Any], sources: list[Any]) -> tuple[list[Any], list[Any]]:
        """Hold the batch's transactions and return those the group's watermark allows (its fraud labels counted
        first), step by step: each step's rows read from the store (their entity features), then recorded (a share
        of the vectors logged) with their offsets (a batch delivered again is not counted twice)."""
        store, gate = self.store, self.gate
        released: tuple[list[Any], list[Any]] = ([], [])
        began = time.perf_counter()
        try:
            gate.hold(valid, sources)
            while True:  # again after recording: the group learns how far this member came
                frauds, groups = gate.release()
                if not (frauds or groups):
                    break
                store.label([(x.transaction_id, x.step) for x in frauds])
                self._record_steps(groups, released)
        except StoreUnavailable as exc:  # nothing of the batch is committed: it is delivered again after a restart
            if self.metrics:
                self.metrics.errors.labels("store").inc()
                self.metrics.store_errors.inc()
            raise StreamError(str(exc)) from exc
        if self.metrics:
            if released[0]:
                self.metrics.store_latency.observe(time.perf_counter() - began)
            self.metrics.late.inc(gate.late_count - self._late_counted)
            self.metrics.held.set(gate.held_count())
        self._late_counted = gate.late_count
        self._pace_held()
        return released

    def _record_steps(self, groups: list[tuple[list[Any], list[Any]]], released: tuple[list[Any], list[Any]]) -> None:
        """Each step's rows read from the store, then recorded (with their offsets), then added to ``released``."""
        store = self.store
        if self._applied is None:
            self._applied = store.applied()
        applied = self._applied
        for records, messages in groups:
            columns = {c: [getattr(r, c) for r in records] for c in ("step", "amount", "nameOrig", "nameDest")}
            matrix = store.read(columns)
            fresh = [i for i, m in enumerate(messages) if m.offset() > applied.get(f"{m.topic()}:{m.partition()}", -1)]
            offsets: dict[str, int] = {}
            for m in messages:
                where = f"{m.topic()}:{m.partition()}"
                offsets[where] = max(offsets.get(where, -1), m.offset())
            ids = [records[i].transaction_id for i in fresh]
            served = ServedVectors([r.transaction_id for r in records], columns["step"], matrix, self.features_share)
            store.record({c: [v[i] for i in fresh] for c, v in columns.items()}, ids, offsets, served=served)
            applied.update(offsets)
            released[0].extend(records)
            released[1].extend(messages)

    def _pace_held(self) -> None:
        """Pause a transactions partition while more than ``max_held`` of it waits for the watermark; resume it
        below half. Say which partitions hold the watermark back when messages have waited 10 s."""
        from confluent_kafka import TopicPartition

        gate, topic = self.gate, self.topics.transactions
        for partition in {*(p for t, p in gate.held if t == topic), *self._paused}:
            count = gate.held_count(topic, partition)
            paused = partition in self._paused
            if (count > self.max_held and not paused) or (count <= self.max_held // 2 and paused):
                (self.consumer.resume if paused else self.consumer.pause)([TopicPartition(topic, partition)])
                self._paused ^= {partition}
        if not gate.held_count():
            self._held_since = None
        elif self._held_since is None:
            self._held_since = time.monotonic()
        elif time.monotonic() - self._held_since > 10:
            print(f"waiting for the watermark: {gate.waiting_for()}", flush=True)
            self._held_since = time.monotonic()
