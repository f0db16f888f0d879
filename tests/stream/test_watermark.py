"""The gate's rule on its own (the group's exchange through a real Redis): what a member holds, what it says it has
passed, and what it lets out. The stream end to end: tests/stream/test_memory.py."""

from types import SimpleNamespace

import pytest
import redis

from lib.schema import MAX_STEP
from lib.stream.watermark import TICK_HEADER, UNSEEN, Gate, Watermark, tick_headers, tick_step

pytestmark = pytest.mark.slow

TX, LABELS = "t.transactions", "t.labels"


class Msg:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self._where = (topic, partition, offset)

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int:
        return self._where[2]


def row(step: int, tid: str = "x", fraud: int = 0) -> SimpleNamespace:
    return SimpleNamespace(step=step, transaction_id=tid, isFraud=fraud)


@pytest.fixture
def gates(redis_server, request):
    """Two members of one group: one reads partition 0 of both topics, the other partition 1."""
    client = redis.Redis.from_url(redis_server.url)
    watermark = Watermark(client, f"wm:{request.node.name}", {TX: 2, LABELS: 2})
    return Gate(watermark, TX, LABELS, 2), Gate(watermark, TX, LABELS, 2)


def steps(groups) -> list[list[int]]:
    return [[r.step for r in records] for records, _ in groups]


def test_a_step_waits_for_every_partition_of_the_group(gates):
    a, b = gates
    for gate, partition in ((a, 0), (b, 1)):
        gate.tick(Msg(LABELS, partition, 0), 10)
    a.hold([row(5), row(6)], [Msg(TX, 0, 0), Msg(TX, 0, 1)])
    assert a.release() == ([], [])  # partition 1 never heard from
    b.hold([row(5)], [Msg(TX, 1, 0)])
    assert steps(b.release()[1]) == [[5]]  # partition 0 holds step 5, partition 1 step 5: both passed 4
    assert steps(a.release()[1]) == [[5]]  # step 6 waits: partition 1 has not shown a step after 5
    b.tick(Msg(TX, 1, 1), 7)
    b.release()  # says so
    assert steps(a.release()[1]) == [[6]]
    assert a.first_held(TX, 0) is None and a.passed() == [(LABELS, 0, 10), (TX, 0, 5)]


def test_a_transaction_after_a_later_step_of_its_partition_is_late_not_held(gates):
    a, _ = gates
    a.hold([row(8), row(3)], [Msg(TX, 0, 0), Msg(TX, 0, 1)])
    assert a.late_count == 1 and steps(a.release()[1]) == [[3]]
    assert a.first_held(TX, 0) == 0


def test_a_fraud_label_waits_until_its_step_is_passed_everywhere(gates):
    a, b = gates
    a.label(Msg(LABELS, 0, 0), row(5, "f", fraud=1))
    a.label(Msg(LABELS, 0, 1), row(5, "g", fraud=0))  # genuine: only says how far the partition came
    assert a.passed() == [(LABELS, 0, 6)]  # the fraud of step 5 counts from step 7: delivered up to 6
    assert a.release()[0] == []
    for gate, partition in ((a, 0), (b, 1)):
        gate.tick(Msg(TX, partition, 0), 6)
        gate.tick(Msg(LABELS, partition, 1), 6)
    b.release()
    labels, _ = a.release()
    assert [x.transaction_id for x in labels] == ["f"] and a.first_held(LABELS, 0) is None
    assert a.limit > UNSEEN


@pytest.mark.parametrize("value", [b"x", b"", b"-3", b"0", str(MAX_STEP + 1).encode(), b"1e9", b"\xff"])
def test_a_tick_that_names_no_step_of_the_contract_is_no_tick(value):
    """It would raise the watermark for good; read as a transaction instead, it is dead-lettered."""
    tick = SimpleNamespace(headers=lambda: [(TICK_HEADER, value)])
    assert tick_step(tick) is None
    assert tick_step(SimpleNamespace(headers=lambda: tick_headers(42))) == 42
    assert tick_step(SimpleNamespace(headers=lambda: None)) is None
