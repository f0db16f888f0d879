"""A real Apache Kafka broker (KRaft) on 127.0.0.1 for the stream tests, and helpers to run the scorer."""

import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

from lib.data.acquire import read_window
from lib.stream import kafka as stream
from lib.stream import process as scorer_process


@pytest.fixture
def topics(kafka) -> stream.Topics:
    """Fresh topics per test on the shared broker."""
    topics = stream.Topics(f"t{uuid.uuid4().hex[:8]}.")
    stream.ensure_topics(kafka.bootstrap, topics, partitions=4)
    return topics


@pytest.fixture(scope="session")
def window(raw_table, tmp_path_factory):
    """Raw transactions with ids, in step order (what 06_stream replays), as (key, value) messages."""
    import pyarrow.parquet as pq

    path = tmp_path_factory.mktemp("stream-raw") / "transactions.parquet"
    pq.write_table(raw_table, path)
    table = read_window(path, 1, 743, limit=20_000)
    return table, stream.encode_transactions(table)


def start_scorer(bootstrap: str, topics: stream.Topics, bundle: Path, *extra: str):
    return scorer_process.start_scorer_process(bootstrap, topics, bundle, "--batch-size", "1000", *extra)


def replay_in_background(bootstrap: str, topic: str, messages, rate: float) -> Future:
    """Replay on a thread; ``.result()`` re-raises anything the producer raised."""
    executor = ThreadPoolExecutor(1)
    future = executor.submit(stream.replay, bootstrap, topic, messages, rate)
    executor.shutdown(wait=False)
    return future
