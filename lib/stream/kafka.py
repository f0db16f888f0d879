"""Real-time scoring on Kafka: replay transactions in, score micro-batches, write results out.

Topics (one set per pipeline run or user): ``<prefix>transactions`` in; ``<prefix>scores`` (every
result, keyed by ``transaction_id``), ``<prefix>alerts`` (results above the threshold) and
``<prefix>dead-letter`` (messages the contract refuses, with the reason) out.

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

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from lib.config import Settings
from lib.errors import PipelineError


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
    def all(self) -> list[str]:
        return [self.transactions, self.scores, self.alerts, self.dead_letter]


def client_config(bootstrap: str, **extra: Any) -> dict:
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
    """Create the four topics if missing; scores keep the broker's append time (the latency clock)."""
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
    ]
    missing = [t for t in wanted if t.topic not in existing]
    for name, future in (admin.create_topics(missing, operation_timeout=30) if missing else {}).items():
        try:
            future.result()
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise StreamError(f"could not create topic {name} on {bootstrap}: {exc}") from None


@contextmanager
def broker(settings: Settings, data_dir: str | Path | None = None) -> Iterator[str]:
    """Bootstrap servers: ``KAFKA_BOOTSTRAP_SERVERS`` when set, else an embedded broker for the block."""
    if settings.kafka_bootstrap_servers:
        yield settings.kafka_bootstrap_servers
        return
    import tempfile

    from lib.stream.local import LocalBroker

    with tempfile.TemporaryDirectory(prefix="kafka-", dir=data_dir) as folder, LocalBroker(Path(folder)) as local:
        yield local.bootstrap


class Producer:
    """An idempotent ``acks=all`` producer that raises if any message it sent was not acknowledged."""

    def __init__(self, bootstrap: str, topics: tuple[str, ...] = (), **config: Any) -> None:
        from confluent_kafka import Producer as KafkaProducer

        self.failures: list[str] = []
        self._producer = KafkaProducer(
            client_config(
                bootstrap,
                **{"enable.idempotence": True, "acks": "all", "linger.ms": 5, "compression.type": "lz4",
                   "queue.buffering.max.messages": 2_000_000, **config},
            )
        )  # fmt: skip
        for topic in topics:  # learn the partition leaders now, not while the first messages wait
            self._producer.list_topics(topic, timeout=30)

    def _delivered(self, err, msg) -> None:
        if err is not None:
            self.failures.append(f"{msg.topic()}: {err}")

    def send(self, topic: str, key: bytes | None, value: bytes, timestamp_ms: int = 0) -> None:
        from confluent_kafka import KafkaException

        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=self._delivered, timestamp=timestamp_ms)
                return
            except BufferError:  # local queue full: serve delivery reports and try again
                self._producer.poll(0.05)
            except KafkaException as exc:
                raise StreamError(f"could not produce to {topic}: {exc}") from None

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

    @property
    def rate(self) -> float:
        return self.messages / self.seconds if self.seconds else float("nan")


def encode_transactions(table) -> list[tuple[bytes, bytes]]:
    """(key, value) per row: key ``nameOrig``, value the contract's JSON (labels left out)."""
    columns = [table.column(name).to_pylist() for name in INPUT_FIELDS]
    keys = table.column("nameOrig").to_pylist()
    return [
        (key.encode(), orjson.dumps(dict(zip(INPUT_FIELDS, row, strict=True))))
        for key, row in zip(keys, zip(*columns, strict=True), strict=True)
    ]


def replay(
    bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]], rate: float = 0.0, **config: Any
) -> ReplayStats:
    """Produce ``messages`` in order at ``rate`` per second (0 = as fast as possible), each stamped
    with its produce time (the Kafka message timestamp); returns once all are acknowledged.
    ``config``: librdkafka producer settings (e.g. ``{"compression.type": "none"}``)."""
    producer = Producer(bootstrap, (topic,), **config)
    began = time.perf_counter()
    for i, (key, value) in enumerate(messages):
        if rate and i % 64 == 0:  # pace in small bursts: sleep until this message is due
            due = began + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        producer.send(topic, key, value, timestamp_ms=int(time.time() * 1000))
        if i % 1000 == 0:
            producer.poll()
    producer.flush()
    return ReplayStats(len(messages), time.perf_counter() - began)


# --- reading results back ---------------------------------------------------------------------------


def read_topic(bootstrap: str, topic: str, expect: int = 0, timeout: float = 60.0, idle: float = 3.0) -> list:
    """Every message of ``topic`` (from the start), as confluent-kafka messages.

    Reads by partition assignment (no consumer group, so no rebalance wait). Stops when ``expect``
    messages have been read (if given), after ``idle`` seconds without a new one, or at ``timeout``.
    """
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer(
        client_config(bootstrap, **{"group.id": "reader", "enable.auto.commit": False, "enable.partition.eof": False})
    )
    found: list = []
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
