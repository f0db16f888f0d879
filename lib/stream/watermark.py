"""The stream's event-time watermark: when every partition has passed a step (issue 34).

A transaction at step ``s`` is scored with its accounts' state of the steps before ``s``, so it may be
scored only once **every** partition of the transactions topic, whichever scorer process of the group
reads it, has recorded all of its transactions before ``s`` in the online store, and every partition of
the labels topic has delivered the labels due by ``s`` (``lib.features.history``). Each scorer records how
far each of its partitions has come in one Redis hash per group (``<prefix>watermark:<group>``, fields
``<topic>:<partition>``, raised only), and holds back a transaction until the slowest partition allows it.

How far a partition has come is what its messages say, in order: a partition whose last message was at
step ``s`` has delivered everything before ``s`` (the replay publishes in step order, keyed by account).
A partition with nothing to say for a step would hold everyone back, so producers send **ticks**: a
message with the ``fraud-watermark`` header (its value the step, no body) to every partition when a step
begins, after the labels due by then (``stream replay --ticks``), the punctuation Kafka Streams and Flink
sources rely on as well. A scorer without a store skips ticks.
"""

from collections import deque
from collections.abc import Iterable
from typing import Any

from lib.schema import MAX_STEP

TICK_HEADER = "fraud-watermark"
UNSEEN = -(2**62)  # a partition nothing was heard from yet: it holds every step back

_RAISE = """
for i = 1, #ARGV, 2 do
  local now = tonumber(redis.call('HGET', KEYS[1], ARGV[i]))
  if not now or now < tonumber(ARGV[i + 1]) then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return redis.call('HGETALL', KEYS[1])
"""


def tick_step(msg: Any) -> int | None:
    """The step a tick message announces, or None for any other message. A header whose value is not a step of
    the contract (1..MAX_STEP) makes no tick (a raised watermark cannot come down): the message is then read as
    a transaction, and its empty body goes to the dead-letter topic with the reason."""
    headers = msg.headers()
    if not headers:
        return None
    for name, value in headers:
        if name == TICK_HEADER:
            text = value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
            return int(text) if text.isdigit() and 1 <= int(text) <= MAX_STEP else None
    return None


def tick_headers(step: int) -> list[tuple[str, str | bytes | None]]:
    return [(TICK_HEADER, str(step).encode())]


class Watermark:
    """How far every partition of ``topics`` (name -> partition count) has come, shared by a group in Redis."""

    def __init__(self, client: Any, key: str, topics: dict[str, int]) -> None:
        self.key, self.topics = key, topics
        self._raise = client.register_script(_RAISE)

    def exchange(self, passed: Iterable[tuple[str, int, int]]) -> dict[str, int]:
        """Raise ``(topic, partition, step)`` (the step a partition has fully delivered) and return, per topic,
        the lowest step over all of its partitions (``UNSEEN`` while one was never heard from): one round trip."""
        args = [a for topic, partition, step in passed for a in (f"{topic}:{partition}", step)]
        raw = self._raise(keys=[self.key], args=args)
        known = {raw[i].decode(): int(raw[i + 1]) for i in range(0, len(raw), 2)}
        return {
            topic: min(known.get(f"{topic}:{p}", UNSEEN) for p in range(count)) for topic, count in self.topics.items()
        }


class Gate:
    """What a scorer holds until the group's watermark allows it, and how far its own partitions have come.

    * A transaction at step ``s`` waits until every transactions partition has passed ``s - 1`` and every
      labels partition has delivered the labels due by ``s``.
    * A fraud label of step ``t`` waits until every transactions partition has passed ``t``, so that its
      transaction is recorded (and indexed) wherever it was scored; until then its partition has not
      delivered it (``passed``).

    ``release`` gives the labels to count first, then the transactions in step groups, lowest step first:
    a group is read from the store, scored and recorded before the next is read.
    """

    def __init__(self, watermark: Watermark, transactions: str, labels: str, label_delay: int) -> None:
        self.watermark, self.transactions, self.labels, self.label_delay = watermark, transactions, labels, label_delay
        # (topic, partition) -> (record, message) in arrival order: steps never go down within a partition, so
        # the first is the lowest and what is released comes off the front
        self.held: dict[tuple[str, int], deque[tuple[Any, Any]]] = {}
        # (topic, partition) -> how far it announced: the highest step of a transactions partition; for a labels
        # partition the highest step whose due labels it has all delivered
        self.seen: dict[tuple[str, int], int] = {}
        self.limit = UNSEEN  # the highest step the group's watermark allowed at the last exchange
        self.last: dict[tuple[str, int], int] = {}  # the step of each partition's last transaction
        self.late: list[tuple[Any, Any]] = []  # transactions of a step their partition had passed: not held back
        self.late_count = 0

    def _saw(self, msg: Any, step: int) -> None:
        where = (msg.topic(), msg.partition())
        self.seen[where] = max(self.seen.get(where, UNSEEN), step)

    def tick(self, msg: Any, step: int) -> None:
        self._saw(msg, step)

    def label(self, msg: Any, record: Any) -> None:
        """A label of step ``t`` says its partition delivered the labels due before ``t + label_delay``; a fraud
        label is held for the store."""
        if record.step is None:
            return
        if record.isFraud:
            self.held.setdefault((msg.topic(), msg.partition()), deque()).append((record, msg))
        self._saw(msg, record.step + self.label_delay - 1)

    def hold(self, records: list[Any], messages: list[Any]) -> None:
        for record, msg in zip(records, messages, strict=True):
            where = (msg.topic(), msg.partition())
            if record.step < self.last.get(where, UNSEEN):  # after a later step of its partition: late, not held
                self.late.append((record, msg))
                self.late_count += 1
                continue
            self.held.setdefault(where, deque()).append((record, msg))
            self.last[where] = record.step
            self._saw(msg, record.step)

    def held_count(self, topic: str | None = None, partition: int | None = None) -> int:
        return sum(len(rows) for (t, p), rows in self.held.items() if topic in (None, t) and partition in (None, p))

    def first_held(self, topic: str, partition: int) -> int | None:
        """The offset of the partition's first held message (where its commit stops), or None."""
        rows = self.held.get((topic, partition))
        offsets = [msg.offset() for _, msg in self.late if (msg.topic(), msg.partition()) == (topic, partition)]
        return min([*offsets, rows[0][1].offset()] if rows else offsets) if rows or offsets else None

    def passed(self) -> list[tuple[str, int, int]]:
        """(topic, partition, step) for each partition heard from: the step it has fully delivered."""
        out = []
        for (topic, partition), step in self.seen.items():
            rows = self.held.get((topic, partition))
            if topic == self.labels:  # a held label of step t is delivered once applied, before step t + delay
                out.append(
                    (topic, partition, min(step, rows[0][0].step + max(self.label_delay, 1) - 1) if rows else step)
                )
            else:
                out.append((topic, partition, min(step, rows[0][0].step) - 1 if rows else step - 1))
        return out

    def release(self) -> tuple[list[Any], list[tuple[list[Any], list[Any]]]]:
        """Exchange the watermark and take out what it allows: the fraud labels to count, then (records,
        messages) per step, lowest first (late transactions first of all)."""
        low = self.watermark.exchange(self.passed())
        self.limit = min(low[self.transactions] + 1, low[self.labels])
        labels: list[Any] = []
        groups: dict[int, tuple[list[Any], list[Any]]] = {}
        late, self.late = self.late, []
        for record, msg in late:
            group = groups.setdefault(UNSEEN + record.step, ([], []))  # before any step group
            group[0].append(record)
            group[1].append(msg)
        for (topic, _), rows in self.held.items():
            bound = low[self.transactions] if topic == self.labels else self.limit
            while rows and rows[0][0].step <= bound:
                record, msg = rows.popleft()
                if topic == self.labels:
                    labels.append(record)
                else:
                    group = groups.setdefault(record.step, ([], []))
                    group[0].append(record)
                    group[1].append(msg)
        return labels, [groups[step] for step in sorted(groups)]

    def forget(self, partitions: list[Any]) -> None:
        """Partitions (``TopicPartition``s) the group took away: their held messages go again to their next owner."""
        for tp in partitions:
            for kept in (self.held, self.seen, self.last):
                kept.pop((tp.topic, tp.partition), None)
        self.late = [
            (r, m)
            for r, m in self.late
            if (m.topic(), m.partition()) not in {(t.topic, t.partition) for t in partitions}
        ]

    def waiting_for(self) -> str:
        """Which partitions hold the watermark back, for a scorer that waits long."""
        return f"held {self.held_count():,} messages above step {self.limit}; partitions: {self.passed()}"
