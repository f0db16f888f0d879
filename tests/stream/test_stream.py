"""The stream scorer on a real Kafka broker: every transaction accounted for, through faults."""

import collections
import gc
import hashlib
import os
import signal
import subprocess
import sys
import time

import orjson
import pytest
from prometheus_client import CollectorRegistry

from lib.config import PROJECT_ROOT
from lib.local.kafka import LocalBroker
from lib.monitoring import stream_report
from lib.serving import scoring
from lib.serving.remote import HttpScorer
from lib.serving.scoring import Served
from lib.stream import kafka as stream
from lib.stream import process as scorer_process
from lib.stream import scorer as stream_scorer
from lib.stream.metrics import StreamMetrics
from tests.stream.conftest import replay_in_background, start_scorer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MALFORMED = [
    b"{not json",
    b"",
    None,  # a tombstone
    orjson.dumps({"step": 5}),  # fields missing
    orjson.dumps({"step": 5, "type": "WIRE", "amount": 1.0, "nameOrig": "C1", "oldbalanceOrg": 0.0,
                  "newbalanceOrig": 0.0, "nameDest": "C2", "oldbalanceDest": 0.0, "newbalanceDest": 0.0}),
    orjson.dumps({"step": 5, "type": "PAYMENT", "amount": "lots", "nameOrig": "C1", "oldbalanceOrg": 0.0,
                  "newbalanceOrig": 0.0, "nameDest": "M2", "oldbalanceDest": 0.0, "newbalanceDest": 0.0}),
    orjson.dumps({"step": 5, "type": "PAYMENT", "amount": -3.0, "nameOrig": "C1", "oldbalanceOrg": 0.0,
                  "newbalanceOrig": 0.0, "nameDest": "M2", "oldbalanceDest": 0.0, "newbalanceDest": 0.0, "x": 1}),
]  # fmt: skip


def transaction_ids(messages) -> list[str]:
    return [orjson.loads(value)["transaction_id"] for _, value in messages]


def scored_ids(bootstrap: str, topic: str, expect: int, timeout: float = 120.0) -> collections.Counter:
    """How often each transaction_id appears in the scores topic, once ``expect`` distinct ids are seen."""
    counts: collections.Counter = collections.Counter()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = collections.Counter(
            orjson.loads(m.value())["transaction_id"] for m in stream.read_topic(bootstrap, topic, idle=1.0)
        )
        if len(counts) >= expect:
            break
    return counts


def assert_all_accounted(counts: collections.Counter, ids: list[str]) -> None:
    missing = set(ids) - set(counts)
    assert not missing, f"{len(missing)} of {len(ids)} transactions have no result, e.g. {sorted(missing)[:5]}"
    assert set(counts) == set(ids), "results for transactions that were never produced"


def test_every_transaction_scored_alerts_and_dead_letters(kafka, topics, window, bundle):
    """1 % malformed messages mixed in: all in the dead-letter topic with a reason; the scorer goes on."""
    _, messages = window
    messages = messages[:10_000]
    mixed = []
    for i, message in enumerate(messages):
        mixed.append(message)
        if i % 100 == 0:
            mixed.append((b"bad", MALFORMED[(i // 100) % len(MALFORMED)]))
    bad = len(mixed) - len(messages)
    stream.replay(kafka.bootstrap, topics.transactions, mixed)

    scorer = scoring.Scorer.from_folder(bundle)
    metrics = StreamMetrics(CollectorRegistry())
    worker = stream_scorer.StreamScorer(kafka.bootstrap, scorer, topics, group_id="g1", batch_size=500, metrics=metrics)
    worker.run(until=lambda w: w.scored + w.dead_letters >= len(mixed), idle_timeout=60)
    assert (worker.scored, worker.dead_letters) == (len(messages), bad)

    results = stream_report.results_frame(stream.read_topic(kafka.bootstrap, topics.scores, expect=len(messages)))
    assert sorted(results.transaction_id) == sorted(transaction_ids(messages))
    # the same answers as the scoring core called directly (the contract every path shares)
    records = [orjson.loads(v) for _, v in messages]
    expected = {r.transaction_id: r for r in scorer.score_records(records)}
    for row in results.itertuples():
        assert row.fraud_probability == expected[row.transaction_id].fraud_probability
        assert row.is_fraud == expected[row.transaction_id].is_fraud
        assert row.reasons == expected[row.transaction_id].reasons  # an alert's reasons, as every path gives them
    assert (results.latency_ms >= 0).all()

    alerts = [orjson.loads(m.value()) for m in stream.read_topic(kafka.bootstrap, topics.alerts, idle=1.0)]
    assert sorted(a["transaction_id"] for a in alerts) == sorted(results.transaction_id[results.is_fraud])
    assert alerts, "the test window has frauds above the threshold"
    assert all(a["reasons"] == expected[a["transaction_id"]].reasons and a["reasons"] for a in alerts)

    letters = [orjson.loads(m.value()) for m in stream.read_topic(kafka.bootstrap, topics.dead_letter, expect=bad)]
    assert len(letters) == bad
    assert all(letter["reason"] and letter["topic"] == topics.transactions for letter in letters)
    by_value = {letter["value"]: letter for letter in letters}
    assert by_value["{not json"]["reason"] == "not valid JSON"
    assert {"field": "type", "reason": "Input should be 'CASH_IN', 'CASH_OUT', 'DEBIT', 'PAYMENT' or 'TRANSFER'"} in (
        by_value[MALFORMED[4].decode()]["errors"]
    )
    fields = {e["field"] for e in by_value[MALFORMED[6].decode()]["errors"]}
    assert fields == {"amount", "x"}

    assert metrics.messages.labels("scored")._value.get() == len(messages)
    assert metrics.messages.labels("dead_letter")._value.get() == bad


def test_scorer_killed_mid_stream_loses_nothing(kafka, topics, window, bundle):
    """SIGKILL the scorer while transactions flow, start a new one: every transaction gets a result."""
    _, messages = window
    ids = transaction_ids(messages)
    first = start_scorer(kafka.bootstrap, topics, bundle)  # running: the transactions arrive while it scores
    replaying = replay_in_background(kafka.bootstrap, topics.transactions, messages, rate=2500)
    try:
        seen = stream.read_topic(kafka.bootstrap, topics.scores, expect=2000, timeout=60, idle=60)
        assert len(seen) >= 2000, first.stdout.read() if first.poll() is not None else "no results"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert len(stream.read_topic(kafka.bootstrap, topics.scores, idle=0.5)) < len(messages), "killed too late"
    second = start_scorer(kafka.bootstrap, topics, bundle)
    try:
        replaying.result(timeout=120)
        counts = scored_ids(kafka.bootstrap, topics.scores, expect=len(ids))
    finally:
        output = scorer_process.stop_scorer_process(second)  # SIGTERM: a clean stop, exit code 0
    assert_all_accounted(counts, ids)
    assert "stopped:" in output


def test_broker_restarted_mid_stream_loses_nothing(tmp_path, window, bundle, monkeypatch):
    """Stop the broker under the producer and the scorer, start it again: every transaction gets a result.

    Its cluster id starts with "-" (1 in 64 random ids do): formatting must not read it as an option.
    """
    from lib.local import kafka as kafka_local

    random_id = kafka_local._cluster_id
    monkeypatch.setattr(kafka_local, "_cluster_id", lambda: "-" + random_id()[1:])
    _, messages = window
    messages = messages[:12_000]
    ids = transaction_ids(messages)
    with LocalBroker(tmp_path / "kafka") as broker:
        topics = stream.Topics("restart.")
        stream.ensure_topics(broker.bootstrap, topics)
        scorer = start_scorer(broker.bootstrap, topics, bundle)
        try:
            replaying = replay_in_background(broker.bootstrap, topics.transactions, messages, rate=3000)
            time.sleep(1.5)
            broker.stop()
            time.sleep(2)
            broker.start()
            try:
                replaying.result(timeout=180)
            except stream.StreamError as error:  # seen once in CI: say what the broker was doing
                raise AssertionError(f"{error}\nbroker log (last lines):\n{broker._tail()}") from error
            counts = scored_ids(broker.bootstrap, topics.scores, expect=len(ids), timeout=180)
        finally:
            scorer_process.stop_scorer_process(scorer)
        assert_all_accounted(counts, ids)


class SlowFirstBatch:
    """Scores like the bundle, but its first batch outlasts the group's poll interval (a GC pause, a stall);
    its own model source (``lib.serving.source.ModelSource``), as a bundle's ``Scorer`` is."""

    reload_interval = None

    def __init__(self, scorer, stall: float) -> None:
        self.scorer, self.stall, self.info = scorer, stall, scorer.info
        self.current = Served(self)

    def check(self) -> bool:
        return False

    def score_batch(self, columns, ids, explain="alerts"):
        if self.stall:
            time.sleep(self.stall)
            self.stall = 0
        return self.scorer.score_batch(columns, ids, explain)


def test_a_commit_the_group_refused_is_scored_again_not_fatal(kafka, topics, window, bundle):
    """The group drops a member that stalls past max.poll.interval.ms: its commit is refused; it rejoins and goes on."""
    _, messages = window
    messages = messages[:3000]
    stream.replay(kafka.bootstrap, topics.transactions, messages)
    metrics = StreamMetrics(CollectorRegistry())
    worker = stream_scorer.StreamScorer(
        kafka.bootstrap, SlowFirstBatch(scoring.Scorer.from_folder(bundle), stall=9.0), topics, batch_size=500,
        metrics=metrics, consumer_settings={"session.timeout.ms": 6000, "max.poll.interval.ms": 6000},
    )  # fmt: skip
    worker.run(idle_timeout=15)
    assert metrics.errors.labels("commit")._value.get() == 1  # the stalled batch's commit, refused
    counts = scored_ids(kafka.bootstrap, topics.scores, expect=len(messages))
    assert_all_accounted(counts, transaction_ids(messages))
    assert sum(counts.values()) > len(messages)  # the refused batch was delivered and scored again


def test_a_commit_that_fails_otherwise_stops_the_scorer_before_it_commits_more(kafka, topics, window, bundle):
    """Commits are answered through ``on_commit`` while the next batch is read: an answer other than the group
    moving on (here the one librdkafka gives without the group's ACL) stops the scorer at its next commit, and
    that batch's offsets stay uncommitted, so it is read again."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    _, messages = window
    stream.replay(kafka.bootstrap, topics.transactions, messages[:1000])
    worker = stream_scorer.StreamScorer(kafka.bootstrap, scoring.Scorer.from_folder(bundle), topics, batch_size=200)
    worker._committed(KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED), None)
    with pytest.raises(KafkaException, match="GROUP_AUTHORIZATION_FAILED"):
        worker.run(idle_timeout=15)
    assert worker.scored > 0
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": worker.group_id})
    try:
        partitions = [TopicPartition(topics.transactions, p) for p in range(4)]
        assert {tp.offset for tp in consumer.committed(partitions, timeout=30)} == {-1001}  # none committed
    finally:
        consumer.close()


def test_the_loop_sets_the_collector_for_micro_batches_and_restores_it(kafka, topics, bundle):
    """Inside the loop: the young generation at YOUNG_GENERATION, and what the process held at the start frozen."""
    before, frozen, during = gc.get_threshold(), gc.get_freeze_count(), []
    worker = stream_scorer.StreamScorer(kafka.bootstrap, scoring.Scorer.from_folder(bundle), topics, batch_size=500)
    worker.run(until=lambda _: during.append((gc.get_threshold(), gc.get_freeze_count())) or len(during) > 2)
    assert {t[0] for t, _ in during} == {stream_scorer.YOUNG_GENERATION} and during[0][0][1:] == before[1:]
    assert min(count for _, count in during) > 10_000 + frozen  # the modules, the model, the clients
    assert (gc.get_threshold(), gc.get_freeze_count()) == (before, frozen)


def test_labels_read_ahead_of_their_transactions_pause_until_the_results_catch_up(kafka, topics, window, bundle):
    """A label is a third of a transaction's bytes, so with both topics full each fetch brings about three
    labels per transaction, ahead of their results. The labels partitions pause while the join's early
    store (300 here) is past half full: every label is joined, none dropped as ``unmatched`` (without the
    pause, 2,326 of the 3,000 were)."""
    from lib.stream.live import LabelJoin

    table, messages = window
    table, messages = table.slice(0, 3000), messages[:3000]
    labels = stream.DelayedLabels.of(table, topics.labels, delay_steps=0)
    small = {"batch.size": 2048}  # record batches of a few kB, so a fetch of 8 kB a partition takes a few
    stream.replay(kafka.bootstrap, topics.labels, labels.messages, **small)  # all in before any transaction is read
    stream.replay(kafka.bootstrap, topics.transactions, messages, **small)
    worker = stream_scorer.StreamScorer(
        kafka.bootstrap, scoring.Scorer.from_folder(bundle), topics, group_id="paced", batch_size=100,
        live=LabelJoin(capacity=3000), consumer_settings={"max.partition.fetch.bytes": 8192},
    )  # fmt: skip
    worker.run(until=lambda w: w.live.counts["joined"] + w.live.counts["unmatched"] >= 3000, idle_timeout=60)
    assert worker.live.counts == {"joined": 3000, "duplicate": 0, "expired": 0, "unmatched": 0}
    assert worker.scored == 3000


def test_two_scorers_share_the_partitions(kafka, topics, window, bundle):
    """Scaling out: two members of one group split the partitions and together score everything once."""
    _, messages = window
    messages = messages[:8000]
    scorers = [start_scorer(kafka.bootstrap, topics, bundle, "--group", "pair") for _ in range(2)]
    try:
        time.sleep(4)  # both join before the data arrives, so both get partitions
        stream.replay(kafka.bootstrap, topics.transactions, messages)
        counts = scored_ids(kafka.bootstrap, topics.scores, expect=len(messages))
    finally:
        outputs = [scorer_process.stop_scorer_process(p) for p in scorers]
    assert_all_accounted(counts, transaction_ids(messages))
    shares = [int(out.split("stopped: ")[1].split(" scored")[0].replace(",", "")) for out in outputs]
    assert sum(shares) == len(messages) and min(shares) > 0, outputs


def test_via_http_scores_through_the_api(kafka, topics, window, bundle, tmp_path):
    """--via-http: the same results through the FastAPI twin's batch route."""
    from tests.integration.conftest import free_port, wait_for

    _, messages = window
    messages = messages[:3000]
    port = free_port()
    env = {**os.environ, "FRAUD_API_KEYS": "stream-key"}
    api = subprocess.Popen(
        [sys.executable, "-m", "lib", "serve", "--port", str(port), "--model", str(bundle)],
        cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        import urllib.request

        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz").status == 200, "API", process=api)
        stream.replay(kafka.bootstrap, topics.transactions, messages)
        worker = stream_scorer.StreamScorer(
            kafka.bootstrap, HttpScorer(f"http://127.0.0.1:{port}", "stream-key"), topics
        )
        worker.run(until=lambda w: w.scored >= len(messages), idle_timeout=60)
    finally:
        api.terminate()
        api.wait()
    results = stream_report.results_frame(stream.read_topic(kafka.bootstrap, topics.scores, expect=len(messages)))
    expected = scoring.Scorer.from_folder(bundle).score_records([orjson.loads(v) for _, v in messages])
    assert dict(zip(results.transaction_id, results.fraud_probability, strict=True)) == {
        r.transaction_id: r.fraud_probability for r in expected
    }
    # the API's reasons, through its Arrow answer, are the core's
    assert dict(zip(results.transaction_id, results.reasons, strict=True)) == {
        r.transaction_id: r.reasons for r in expected
    }
    assert any(r.reasons for r in expected)


def test_oversized_messages_are_dead_lettered_and_never_block_the_partition(kafka, window, bundle):
    """The probe's 1 MB message (and a 5 MB one) on a transactions topic that accepts 6 MB: each goes to the
    dead-letter topic, whose default 1 MB limit its truncated copy fits; every other message is scored
    and the partition's lag comes back to 0 (before, the scorer exited on the dead letter, for good)."""
    import uuid

    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    topics = stream.Topics(f"big{uuid.uuid4().hex[:6]}.")
    admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
    created = admin.create_topics([NewTopic(topics.transactions, 1, 1, config={"max.message.bytes": str(6 << 20)})])
    created[topics.transactions].result()
    stream.ensure_topics(kafka.bootstrap, topics, partitions=1)
    _, messages = window
    messages = list(messages[:3000])
    poison = {}
    for position, size in ((500, 1 << 20), (2000, 5 << 20)):
        value = orjson.dumps({**orjson.loads(messages[position][1]), "nameOrig": "C" + "x" * size})
        poison[len(value)] = value
        messages.insert(position, (b"poison", value))
    stream.replay(kafka.bootstrap, topics.transactions, messages, **{"message.max.bytes": 7 << 20})

    scorer = scoring.Scorer.from_folder(bundle)
    worker = stream_scorer.StreamScorer(kafka.bootstrap, scorer, topics, group_id="big", batch_size=500)
    worker.run(until=lambda w: w.scored + w.dead_letters >= len(messages), idle_timeout=60)
    assert (worker.scored, worker.dead_letters) == (len(messages) - 2, 2)
    letters = [orjson.loads(m.value()) for m in stream.read_topic(kafka.bootstrap, topics.dead_letter, expect=2)]
    assert sorted(letter["value_bytes"] for letter in letters) == sorted(poison)
    for letter in letters:
        assert letter["reason"] == "too large for a transaction" and letter["truncated"] is True
        assert len(letter["value"]) == stream_scorer.KEPT_BYTES
        assert letter["value_sha256"] == hashlib.sha256(poison[letter["value_bytes"]]).hexdigest()
    scored = {
        orjson.loads(m.value())["transaction_id"]
        for m in stream.read_topic(kafka.bootstrap, topics.scores, expect=len(messages) - 2)
    }
    assert scored == set(transaction_ids([m for m in messages if m[0] != b"poison"]))
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "big"})
    try:
        committed = consumer.committed([TopicPartition(topics.transactions, 0)], timeout=30)[0].offset
        _, high = consumer.get_watermark_offsets(TopicPartition(topics.transactions, 0), timeout=30)
    finally:
        consumer.close()
    assert committed == high == len(messages)  # lag 0


def test_a_message_the_broker_refuses_stops_the_batch_with_its_reason(kafka):
    """Only failed deliveries call back (``delivery.report.only.error``): one must still fail the flush, so
    the batch's offsets stay uncommitted; acknowledged ones flush quietly."""
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = f"small-{time.time_ns()}"
    admin = AdminClient(stream.client_config(kafka.bootstrap))
    admin.create_topics([NewTopic(topic, 1, 1, config={"max.message.bytes": "1024"})])[topic].result()
    producer = stream.Producer(kafka.bootstrap, (topic,))
    producer.send(topic, b"k", b"a small message")
    producer.flush(30)
    producer.send(topic, b"k", os.urandom(4096))  # random: lz4 cannot bring it under the topic's limit
    with pytest.raises(stream.StreamError, match=rf"0 messages not acknowledged .* and 1 refused \({topic}: "):
        producer.flush(30)
    producer.flush(30)  # the failure was reported once; nothing is left pending
