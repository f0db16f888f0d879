"""Real-time scoring on Kafka: replay transactions in, score micro-batches, write results out.

Topics (one set per pipeline run or user): ``<prefix>transactions`` in; ``<prefix>scores`` (every
result, keyed by ``transaction_id``), ``<prefix>alerts`` (results above the threshold) and
``<prefix>dead-letter`` (messages the contract refuses, with the reason) out; ``<prefix>labels``
(delayed labels, keyed like their transactions) in, and ``<prefix>scores.shadow`` (the challenger's
results, when one runs in shadow) out; see ``lib.stream.live``.

Delivery is at-least-once: the scorer commits its input offsets only after every output of the
micro-batch is acknowledged by the broker (``acks=all``, idempotent producer). A scorer killed
between the two re-scores that batch on restart, so a result can appear twice, never zero times;
results carry ``transaction_id`` (or ``topic/partition/offset`` when the message had none) to
recognise duplicates.

The Kafka client is confluent-kafka (librdkafka): on this 2-core machine kafka-python produced
~16,600 messages/s against librdkafka's ~164,000, and the scorer has to consume, produce and score
on the same cores. The replay producer keys messages by ``nameOrig`` so an account's transactions
stay in order within a partition.
"""

import itertools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from lib.contract import encode_json
from lib.errors import ParameterError, PipelineError


class StreamError(PipelineError):
    """The stream cannot go on without losing messages (outputs not acknowledged, broker gone)."""


@dataclass(frozen=True)
class Topics:
    prefix: str = "paysim."

    @property
    def transactions(self) -> str:
        return f"{self.prefix}transactions"

    @property
    def scores(self) -> str:
        return f"{self.prefix}scores"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}alerts"

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}dead-letter"

    @property
    def labels(self) -> str:
        """Delayed labels, keyed like their transactions (``stream replay --label-delay-steps``)."""
        return f"{self.prefix}labels"

    @property
    def shadow(self) -> str:
        """The challenger's results on the same transactions (shadow mode): never alerts, never served."""
        return f"{self.prefix}scores.shadow"

    @property
    def all(self) -> list[str]:
        return [self.transactions, self.scores, self.alerts, self.dead_letter, self.labels, self.shadow]


def client_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    # librdkafka logs through Python logging instead of printing to stderr. Metadata is refreshed every
    # 10 s (default 5 min): after a broker restart a client can keep a stale broker list ("new leader-1
    # not found in cache", confluentinc/librdkafka#4976) and deliver nothing until the next refresh.
    return {
        "bootstrap.servers": bootstrap,
        "logger": logging.getLogger("lib.stream.librdkafka"),
        "topic.metadata.refresh.interval.ms": 10_000,
        **extra,
    }


def ensure_topics(bootstrap: str, topics: Topics, partitions: int = 4) -> None:
    """Create the topics if missing; scores keep the broker's append time (the latency clock); labels have
    the transactions' partition count, so a label reaches the member that scored its transaction."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(client_config(bootstrap))
    try:
        existing = set(admin.list_topics(timeout=15).topics)
    except KafkaException as exc:
        raise StreamError(
            f"no Kafka broker answered at {bootstrap} within 15 s ({exc.args[0].str() if exc.args else exc}); "
            "start one (python -m lib kafka-local start) or check --bootstrap / KAFKA_BOOTSTRAP_SERVERS"
        ) from None
    wanted = [
        NewTopic(topics.transactions, partitions, 1),
        NewTopic(topics.scores, partitions, 1, config={"message.timestamp.type": "LogAppendTime"}),
        NewTopic(topics.alerts, 1, 1),
        NewTopic(topics.dead_letter, 1, 1),
        NewTopic(topics.labels, partitions, 1),
        NewTopic(topics.shadow, partitions, 1, config={"message.timestamp.type": "LogAppendTime"}),
    ]
    missing = [t for t in wanted if t.topic not in existing]
    for name, future in (admin.create_topics(missing, operation_timeout=30) if missing else {}).items():
        try:
            future.result()
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise StreamError(f"could not create topic {name} on {bootstrap}: {exc}") from None


class Producer:
    """An idempotent ``acks=all`` producer that raises if any message it sent was not acknowledged."""

    def __init__(self, bootstrap: str, topics: tuple[str, ...] = (), **config: Any) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka import Producer as KafkaProducer

        self.failures: list[str] = []
        self._refused = KafkaException
        self._producer = KafkaProducer(
            client_config(
                bootstrap,
                # only a failed delivery calls back into Python: an acknowledged one costs nothing there,
                # and flush() still waits for every message to be acknowledged or failed
                **{"enable.idempotence": True, "acks": "all", "linger.ms": 5, "compression.type": "lz4",
                   "queue.buffering.max.messages": 2_000_000, "delivery.report.only.error": True, **config},
            )
        )  # fmt: skip
        for topic in topics:  # learn the partition leaders now, not while the first messages wait
            self._producer.list_topics(topic, timeout=30)

    def _delivered(self, err: Any, msg: Any) -> None:
        if err is not None:
            self.failures.append(f"{msg.topic()}: {err}")

    def send(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Produce one message, stamped by librdkafka with the time it is produced (the Kafka timestamp)."""
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=self._delivered)
                return
            except BufferError:  # local queue full: serve delivery reports and try again
                self._producer.poll(0.05)
            except self._refused as exc:
                raise StreamError(f"could not produce to {topic}: {exc}") from None

    def send_all(self, topic: str, messages: Iterable[tuple[bytes | None, bytes]]) -> None:
        """``send`` each ``(key, value)`` of ``messages``, without a Python call per message on the way."""
        produce, delivered = self._producer.produce, self._delivered
        for key, value in messages:
            try:
                produce(topic, value, key, on_delivery=delivered)
            except (BufferError, self._refused):  # the local queue is full: send waits for room (or says why not)
                self.send(topic, key, value)

    def tick(self, topic: str, step: int) -> None:
        """A watermark tick for ``step`` to every partition of ``topic`` (``lib.stream.watermark``)."""
        from lib.stream.watermark import tick_headers

        for partition in self._producer.list_topics(topic, timeout=30).topics[topic].partitions:
            self._producer.produce(topic, b"", None, partition=partition, headers=tick_headers(step),
                                   on_delivery=self._delivered)  # fmt: skip

    def poll(self) -> None:
        self._producer.poll(0)

    def flush(self, timeout: float = 120.0) -> None:
        """Wait until every message sent so far is acknowledged; raise if any was refused or is still pending."""
        pending = self._producer.flush(timeout)
        failures, self.failures = self.failures, []
        if pending or failures:
            raise StreamError(
                f"{pending} messages not acknowledged within {timeout:.0f} s and {len(failures)} refused "
                f"({'; '.join(failures[:3])}); the input offsets stay uncommitted, so they will be re-read"
            )


# --- replay -----------------------------------------------------------------------------------------


INPUT_FIELDS = ("transaction_id", "step", "type", "amount", "nameOrig", "oldbalanceOrg", "newbalanceOrig",
                "nameDest", "oldbalanceDest", "newbalanceDest")  # fmt: skip


@dataclass
class ReplayStats:
    messages: int
    seconds: float
    labels: int = 0

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else float("nan")


def encode_transactions(table: Any) -> list[tuple[bytes, bytes]]:
    """(key, value) per row: key ``nameOrig``, value the contract's JSON (labels left out)."""
    columns = [table.column(name).to_pylist() for name in INPUT_FIELDS]
    keys = table.column("nameOrig").to_pylist()
    return [
        (key.encode(), encode_json(dict(zip(INPUT_FIELDS, row, strict=True))))
        for key, row in zip(keys, zip(*columns, strict=True), strict=True)
    ]


@dataclass(frozen=True)
class DelayedLabels:
    """The labels of replayed transactions, each published once the replay reaches ``delay_steps`` steps
    (simulated hours) after its transaction; a seeded ``missing_share`` of them never arrives."""

    topic: str
    steps: np.ndarray  # the step of each replayed transaction, in replay order
    due: np.ndarray  # the step each label is due at, ascending
    messages: list[tuple[bytes, bytes]]  # (key: the transaction's key, value) in ``due`` order

    @classmethod
    def of(cls, table: Any, topic: str, delay_steps: int, missing_share: float = 0.0, seed: int = 0) -> "DelayedLabels":
        if delay_steps < 0 or not 0 <= missing_share < 1:
            raise ParameterError(
                f"--label-delay-steps must be >= 0 (got {delay_steps}) and --label-missing-share in [0, 1) "
                f"(got {missing_share})"
            )
        steps = table.column("step").to_numpy()
        arrives = np.random.default_rng(seed).random(len(steps)) >= missing_share
        order = np.flatnonzero(arrives)[np.argsort(steps[arrives], kind="stable")]
        ids, labels, keys = (table.column(c).to_pylist() for c in ("transaction_id", "isFraud", "nameOrig"))
        messages = [
            (keys[i].encode(), encode_json({"transaction_id": ids[i], "isFraud": int(labels[i]), "step": int(steps[i])}))
            for i in order.tolist()
        ]  # fmt: skip
        return cls(topic, steps, steps[order] + delay_steps, messages)


def replay(
    bootstrap: str,
    topic: str,
    messages: list[tuple[bytes, bytes]],
    rate: float = 0.0,
    labels: DelayedLabels | None = None,
    steps: np.ndarray | None = None,
    labels_topic: str | None = None,
    **config: Any,
) -> ReplayStats:
    """Produce ``messages`` in order at ``rate`` per second (0 = as fast as possible), each stamped
    with its produce time (the Kafka message timestamp); returns once all are acknowledged.
    ``labels``: publish each label when the replay reaches its due step (the rest after the last
    transaction: the clock runs on). ``steps`` (each message's step): as each step begins, after the labels
    due by then, a watermark tick to every partition of the labels topic (``labels``' or ``labels_topic``: a
    scorer with a store waits for both topics) and of ``topic`` (``lib.stream.watermark``). ``config``:
    librdkafka producer settings."""
    producer = Producer(
        bootstrap, (topic, *([labels.topic] if labels else [labels_topic] if labels_topic else [])), **config
    )
    # a label can be due between any two transactions; paced: small bursts; else chunks of 1,000
    chunk = 1 if labels is not None else 64 if rate else 1000
    starts = set(range(0, len(messages), chunk))
    if steps is not None:  # a step's first message starts a chunk of its own
        starts |= {0, *(np.flatnonzero(np.diff(steps)) + 1).tolist()}
    bounds = [*sorted(starts), len(messages)]
    pending = 0  # the next label to publish
    began = time.perf_counter()
    for start, end in itertools.pairwise(bounds):
        if labels is not None:
            while pending < len(labels.messages) and labels.due[pending] <= labels.steps[start]:
                producer.send(labels.topic, *labels.messages[pending])
                pending += 1
        if steps is not None and (start == 0 or steps[start] != steps[start - 1]):
            for ticked in [t for t in (labels.topic if labels else labels_topic, topic) if t]:
                producer.tick(ticked, int(steps[start]))
        if rate:  # sleep until this burst is due
            delay = began + start / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        producer.send_all(topic, messages[start:end])  # stamped with the time each is produced
        if start // 1000 != end // 1000:
            producer.poll()
    if labels is not None:
        producer.send_all(labels.topic, labels.messages[pending:])
    producer.flush()
    return ReplayStats(len(messages), time.perf_counter() - began, len(labels.messages) if labels else 0)


# --- reading results back ---------------------------------------------------------------------------


def read_topic(bootstrap: str, topic: str, expect: int = 0, timeout: float = 60.0, idle: float = 3.0) -> list[Any]:
    """Every message of ``topic`` (from the start), as confluent-kafka messages.

    Reads by partition assignment (no consumer group, so no rebalance wait). Stops when ``expect``
    messages have been read (if given), after ``idle`` seconds without a new one, or at ``timeout``.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        client_config(bootstrap, **{"group.id": "reader", "enable.auto.commit": False, "enable.partition.eof": False})
    )
    found: list[Any] = []
    try:
        partitions = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = last = time.monotonic()
        deadline += timeout
        while time.monotonic() < deadline:
            batch = consumer.consume(10_000, 0.1)
            fresh = [m for m in batch if m.error() is None]
            if fresh:
                found.extend(fresh)
                last = time.monotonic()
            if expect and len(found) >= expect:
                break
            if time.monotonic() - last > idle:
                break
    finally:
        consumer.close()
    return found
