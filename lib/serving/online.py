"""The online feature store (issue 34): each account's recent history in Redis, read at decision time.

The offline features (``lib.data.entity``, 02) and these are one spec (``lib.features.ENTITY_FEATURES``) and
one rule (``lib.features.history``): a transaction at step ``s`` sees its accounts' transactions at steps
before ``s`` and the labels of step ``t`` from step ``t + label_delay`` on. The store keeps what that needs
per account, bucketed by step, and the reader applies the rule: buckets of step ``s`` itself (written by
another partition, or by the transaction's own micro-batch) and labels that came early are never counted.

One Redis hash per account (``<prefix>d:<nameDest>`` for destinations, ``<prefix>o:<nameOrig>`` for origins):

* ``n<step>`` transactions, ``m<step>`` their amount in whole millionths (summed exactly, as Spark's
  decimals are), ``y<step>`` confirmed frauds among them (the labels), ``s<step>:<sender>`` one field per
  distinct sender (destinations only), ``_first`` the first step seen, ``_low`` the oldest bucket kept;
* a write (``record``, one Lua script call per batch, atomic) adds to a bucket, drops buckets that
  left the longest window and sets the key to expire ``ttl_steps`` steps after the account's last write
  (``step_seconds`` a step: an hour for PaySim). An account idle that long is forgotten: the only place the
  store differs from 02, which remembers a first step for ever (``steps_since_first`` then reads -1, not
  the cap);
* ``<prefix>t:<step>`` maps each transaction id of a step to its destination (after a ``0``, a ``1`` once its
  label counted), so that a label (which names a transaction and its step) reaches the destination's bucket;
  a label counts once however often it comes.

Reads are one pipelined round trip per request or micro-batch (``HGETALL`` of each distinct account);
writes one ``MULTI`` round trip per micro-batch, with the stream's consumed offsets in the same transaction
(``applied``) so that a batch delivered again after a rebalance is not counted twice.
"""

import hashlib
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from lib.contract import encode_json
from lib.errors import ServiceUnavailable
from lib.features import ENTITY_FEATURES, SINCE_CAP, EntityFeature
from lib.serving.buckets import Buckets, parse_account, value_one

STEP_SECONDS = 3600.0  # a PaySim step is an hour
KINDS = {"nameDest": "d", "nameOrig": "o"}

_RECORD = """
local groups = cjson.decode(ARGV[1])
for i, g in ipairs(groups) do
  local key, step = KEYS[i], g[1]
  redis.call('HINCRBY', key, 'n' .. step, g[2])
  redis.call('HINCRBY', key, 'm' .. step, g[3])
  for _, sender in ipairs(g[7]) do redis.call('HSET', key, 's' .. step .. ':' .. sender, 1) end
  if g[6] == 1 then redis.call('HSETNX', key, '_first', step) end
  local keep = step - g[4]
  local low = tonumber(redis.call('HGET', key, '_low'))
  if not low then
    redis.call('HSET', key, '_low', step)
  elseif low < keep then
    local lowest = step
    for _, name in ipairs(redis.call('HKEYS', key)) do
      local at = tonumber(string.match(name, '^[nmys](%d+)'))
      if at then
        if at < keep then redis.call('HDEL', key, name) elseif at < lowest then lowest = at end
      end
    end
    redis.call('HSET', key, '_low', lowest)
  end
  redis.call('PEXPIRE', key, g[5])
end
"""

_LABEL = """
local entry = redis.call('HGET', KEYS[1], ARGV[1])
if not entry or string.sub(entry, 1, 1) ~= '0' then return 0 end
local destination = string.sub(entry, 2)
redis.call('HSET', KEYS[1], ARGV[1], '1' .. destination)
local key = ARGV[3] .. destination
local low = tonumber(redis.call('HGET', key, '_low'))
if not low or tonumber(ARGV[2]) < low then return 0 end
redis.call('HINCRBY', key, 'y' .. ARGV[2], 1)
return 1
"""


# every hash of a read in one script call: one command to pack, not one per account (replies stay flat lists)
_READ = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HGETALL', key) end
return out
"""

_RECORD_SHA, _LABEL_SHA = (hashlib.sha1(script.encode()).hexdigest() for script in (_RECORD, _LABEL))


class StoreUnavailable(ServiceUnavailable):
    """The online store cannot be reached or refused a command."""


@dataclass(frozen=True)
class ServedVectors:
    """Entity vectors as served (``matrix`` rows, in ``spec`` order) for transactions ``ids`` at ``steps``;
    ``share`` of them (the same ones in every run: by id) go to the store's log of served vectors."""

    ids: Sequence[Any]
    steps: Sequence[int]
    matrix: np.ndarray
    share: float


@dataclass
class OnlineStore:
    """The entity features of ``spec`` in the Redis at ``url``: ``read`` at decision time, ``record`` after."""

    url: str
    label_delay: int
    step_seconds: float = STEP_SECONDS
    prefix: str = "fraud:"
    spec: tuple[EntityFeature, ...] = ENTITY_FEATURES
    timeout: float = 1.0  # seconds for a connection or an answer
    log_limit: int = 100_000  # entries of the served-vectors log (a Redis stream trimmed to about this many)

    def __post_init__(self) -> None:
        import redis

        if self.label_delay < 0:
            raise ValueError(f"label_delay must be >= 0 (got {self.label_delay})")
        self.client = redis.Redis.from_url(self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout)
        self._aclient: Any = None  # redis.asyncio's, made on first use (on the event loop that uses it)
        self.entities = tuple(e for e in KINDS if any(f.entity == e for f in self.spec))
        windows = {e: [f.window or 0 for f in self.spec if f.entity == e] for e in self.entities}
        self.horizon = {e: max(windows[e]) for e in self.entities}  # buckets older than this are never read
        self.remembers_first = {e: any(f.aggregation == "steps_since_first" and f.entity == e for f in self.spec)
                                for e in self.entities}  # fmt: skip
        self.ttl_steps = {
            e: max(self.horizon[e], SINCE_CAP if self.remembers_first[e] else 0) + self.label_delay
            for e in self.entities
        }
        self.label_steps = (
            self.horizon.get("nameDest", 0) + self.label_delay
        )  # how long a transaction's label can count

    def key(self, entity: str, account: str) -> str:
        return f"{self.prefix}{KINDS[entity]}:{account}"

    def _ms(self, steps: int) -> int:
        return max(int(steps * self.step_seconds * 1000), 1)

    def _fail(self, exc: Exception, doing: str) -> StoreUnavailable:
        return StoreUnavailable(f"the online store at {self.url} failed while {doing}: {type(exc).__name__}: {exc}")

    def read(self, columns: Mapping[str, Sequence[Any]]) -> np.ndarray:
        """The entity features (rows x ``spec``, float64) of transactions with ``step``, ``nameDest`` and
        ``nameOrig``: one round trip, each distinct account read once."""
        ordered, keys = self._reading(columns)
        raw = self._run(lambda pipe: pipe.eval(_READ, len(keys), *keys), "reading features")
        return self._vectors(columns, ordered, raw[0])

    async def aread(self, columns: Mapping[str, Sequence[Any]]) -> np.ndarray:
        """``read`` on the event loop (the FastAPI twin: other requests go on while Redis answers)."""
        ordered, keys = self._reading(columns)
        raw = await self._arun(lambda pipe: pipe.eval(_READ, len(keys), *keys), "reading features")
        return self._vectors(columns, ordered, raw[0])

    def _reading(self, columns: Mapping[str, Sequence[Any]]) -> tuple[list[tuple[str, str]], list[str]]:
        """The distinct (entity, account) pairs of a read and their keys."""
        ordered = list({(e, a) for e in self.entities for a in columns[e]})
        return ordered, [self.key(*k) for k in ordered]

    def _run(self, fill: Callable[[Any], Any], doing: str, transaction: bool = False) -> list[Any]:
        """The commands ``fill`` puts in a pipeline, in one round trip (``MULTI`` with ``transaction``)."""
        import redis

        pipe = self.client.pipeline(transaction=transaction)
        fill(pipe)
        try:
            return list(pipe.execute())
        except (redis.RedisError, OSError) as exc:
            raise self._fail(exc, doing) from exc

    async def _arun(self, fill: Callable[[Any], Any], doing: str, transaction: bool = False) -> list[Any]:
        import redis

        pipe = self._async().pipeline(transaction=transaction)
        fill(pipe)
        try:
            return list(await pipe.execute())
        except (redis.RedisError, OSError) as exc:
            raise self._fail(exc, doing) from exc

    def _async(self) -> Any:
        """redis.asyncio's client, made on first use (on the event loop that uses it)."""
        if self._aclient is None:
            import redis.asyncio

            self._aclient = redis.asyncio.Redis.from_url(self.url, socket_timeout=self.timeout,
                                                        socket_connect_timeout=self.timeout)  # fmt: skip
        return self._aclient

    def _vectors(
        self, columns: Mapping[str, Sequence[Any]], ordered: list[tuple[str, str]], raw: list[Any]
    ) -> np.ndarray:
        steps = np.asarray(columns["step"], np.int64)
        matrix = np.empty((len(steps), len(self.spec)), np.float64)
        if len(steps) == 1:  # a single request: no arrays
            accounts = {key: parse_account(r) for key, r in zip(ordered, raw, strict=True)}
            step = int(steps[0])
            for j, f in enumerate(self.spec):
                matrix[0, j] = value_one(f, accounts[f.entity, columns[f.entity][0]], step, self.label_delay)
            return matrix
        for entity in self.entities:
            mine = [i for i, (e, _) in enumerate(ordered) if e == entity]
            index = {ordered[i][1]: k for k, i in enumerate(mine)}
            buckets = Buckets([raw[i] for i in mine])
            account = np.fromiter((index[a] for a in columns[entity]), np.int64, len(steps))
            for j, feature in enumerate(self.spec):
                if feature.entity == entity:
                    matrix[:, j] = buckets.values(feature, account, steps, self.label_delay)
        return matrix

    def record(
        self,
        columns: Mapping[str, Sequence[Any]],
        ids: Sequence[str] | None = None,
        applied: Mapping[str, int] | None = None,
        now: int | None = None,
        served: "ServedVectors | None" = None,
    ) -> None:
        """Add transactions (``step``, ``amount``, ``nameOrig``, ``nameDest``) to their accounts' buckets, index
        their ``ids`` for the labels, and set ``applied`` (the stream's offsets): one atomic round trip. Keys
        expire ``ttl_steps`` after the step written, counted from step ``now`` (default: that step: the stream
        writes a step while it lasts); a bucket already expired at ``now`` is not written. ``served``: the vectors
        read for these transactions, logged (``log``) in the same round trip."""
        self._run(self._recording(columns, ids, applied, now, served), "recording transactions", transaction=True)

    async def arecord(
        self,
        columns: Mapping[str, Sequence[Any]],
        ids: Sequence[str] | None = None,
        served: "ServedVectors | None" = None,
    ) -> None:
        """``record`` on the event loop."""
        await self._arun(self._recording(columns, ids, None, None, served), "recording transactions", transaction=True)

    def _recording(
        self,
        columns: Mapping[str, Sequence[Any]],
        ids: Sequence[str] | None,
        applied: Mapping[str, int] | None,
        now: int | None,
        served: "ServedVectors | None",
    ) -> Callable[[Any], None]:
        """What ``record`` puts in its pipeline."""
        groups: dict[tuple[str, str, int], list[Any]] = {}
        index: dict[int, dict[Any, Any]] = defaultdict(dict)
        for i in range(len(columns["step"])):
            step, micros = int(columns["step"][i]), round(float(columns["amount"][i]) * 1e6)
            for entity in self.entities:
                group = groups.setdefault((entity, columns[entity][i], step), [0, 0, set()])
                group[0] += 1
                group[1] += micros
                if entity == "nameDest":
                    group[2].add(columns["nameOrig"][i])
            if ids is not None and ids[i] and "nameDest" in self.entities:  # "0": its label not counted yet
                index[step][ids[i]] = "0" + columns["nameDest"][i]
        distinct = any(f.aggregation == "distinct_senders" for f in self.spec)

        def fill(pipe: Any) -> None:
            keys, batch = [], []  # one script call for the batch; its groups in one JSON argument (counts as text)
            for (entity, account, step), (n, micros, senders) in groups.items():
                ttl = self.ttl_steps[entity] - (0 if now is None else now - step)
                if ttl > 0:
                    keys.append(self.key(entity, account))
                    batch.append((step, str(n), str(micros), self.horizon[entity], self._ms(ttl),
                                  int(self.remembers_first[entity]), sorted(senders) if distinct else ()))  # fmt: skip
            pipe.script_load(_RECORD)  # in the same MULTI: never NOSCRIPT (a restarted Redis), never half a batch
            if keys:
                pipe.evalsha(_RECORD_SHA, len(keys), *keys, orjson.dumps(batch))
            for step, mapping in index.items():
                ttl = self.label_steps - (0 if now is None else now - step)
                if ttl > 0:
                    pipe.hset(f"{self.prefix}t:{step}", mapping=mapping)
                    pipe.pexpire(f"{self.prefix}t:{step}", self._ms(ttl))
            if applied:
                pipe.hset(f"{self.prefix}applied", mapping=dict[Any, Any](applied))
            if served is not None:
                self._log(pipe, served)

        return fill

    def label(self, frauds: Sequence[tuple[str, int]]) -> int:
        """Count confirmed frauds (transaction id, its step) in their destinations' buckets; returns how many
        counted (a label of an unknown, expired or already counted transaction adds nothing)."""
        if not frauds or "nameDest" not in self.entities:
            return 0

        def fill(pipe: Any) -> None:
            pipe.script_load(_LABEL)
            for tid, step in frauds:
                pipe.evalsha(_LABEL_SHA, 1, f"{self.prefix}t:{step}", tid, step, f"{self.prefix}d:")

        return sum(self._run(fill, "recording labels")[1:])

    def backfill(self, columns: Mapping[str, Sequence[Any]], chunk: int = 20_000) -> int:
        """Load past transactions (``step``, ``amount``, ``nameOrig``, ``nameDest``, ``transaction_id``, ``isFraud``;
        in step order), their labels counted, as the stream would have left them at the step after the last:
        a new deployment starts warm. Returns how many frauds counted."""
        steps = [int(s) for s in columns["step"]]
        if steps != sorted(steps):
            raise ValueError("backfill needs its transactions in step order")
        now = steps[-1] + 1 if steps else 0
        for lo in range(0, len(steps), chunk):
            part = {c: columns[c][lo : lo + chunk] for c in ("step", "amount", "nameOrig", "nameDest")}
            self.record(part, columns["transaction_id"][lo : lo + chunk], now=now)
        ids, frauds = columns["transaction_id"], columns["isFraud"]
        labelled = [(ids[i], steps[i]) for i in range(len(steps)) if frauds[i]]
        return sum(self.label(labelled[lo : lo + chunk]) for lo in range(0, len(labelled), chunk))

    def log(self, served: "ServedVectors") -> None:
        """Append the sampled ones of ``served`` to the bounded log of served vectors (``served_log``)."""
        self._run(lambda pipe: self._log(pipe, served), "logging served features")

    async def alog(self, served: "ServedVectors") -> None:
        await self._arun(lambda pipe: self._log(pipe, served), "logging served features")

    def _log(self, pipe: Any, served: "ServedVectors") -> None:
        cut, names = served.share * 2**32, [f.name for f in self.spec]
        for tid, step, row in zip(served.ids, served.steps, served.matrix.tolist(), strict=True):
            if tid and zlib.crc32(str(tid).encode()) < cut:  # by id: a transaction without one is not logged
                vector = {"transaction_id": str(tid), "step": int(step), "features": dict(zip(names, row, strict=True))}
                pipe.xadd(f"{self.prefix}served", {"v": encode_json(vector)}, maxlen=self.log_limit, approximate=True)

    def served_log(self, count: int | None = None) -> list[dict[str, Any]]:
        """The logged vectors, oldest first (at most ``log_limit``, about: Redis trims whole nodes)."""
        entries: Any = self.client.xrange(f"{self.prefix}served", count=count)
        return [orjson.loads(fields[b"v"]) for _, fields in entries]

    def stats(self) -> dict[str, int]:
        """Keys by kind under the prefix and the server's memory (one SCAN: seconds for millions of keys)."""
        counts = dict.fromkeys(("destinations", "origins", "index_steps", "other_keys"), 0)
        kinds = {"d": "destinations", "o": "origins", "t": "index_steps", "s": "other_keys"}
        start = len(self.prefix)
        for key in self.client.scan_iter(match=f"{self.prefix}*", count=10_000):
            counts[kinds.get(key[start : start + 1].decode(), "other_keys")] += 1
        memory: dict[str, Any] = self.client.info("memory")
        return {**counts, "used_memory_bytes": int(memory["used_memory"])}

    def applied(self) -> dict[str, int]:
        """The stream's offsets whose transactions are recorded, by ``topic:partition``."""
        raw: dict[bytes, bytes] = self.client.hgetall(f"{self.prefix}applied")  # type: ignore[assignment]
        return {k.decode(): int(v) for k, v in raw.items()}


COLUMNS = ("step", "amount", "nameOrig", "nameDest")


@dataclass
class OnlineFeatures:
    """What a request does with the store (the FastAPI twin, the Chalice app): each transaction's entity vector
    read at its step; with ``record``, the transactions recorded after they are read (a deployment without the
    stream keeps its memory so: the API sees each transaction once, in step order); ``log_share`` of the
    vectors logged. The store unreachable: ``StoreUnavailable`` (the apps answer 503)."""

    store: OnlineStore
    record: bool = False
    log_share: float = 0.01

    @classmethod
    def from_settings(cls, settings: Any) -> "OnlineFeatures | None":
        if not settings.redis_url:
            return None
        store = OnlineStore(settings.redis_url, settings.store_label_delay, settings.store_step_seconds,
                            settings.store_prefix)  # fmt: skip
        return cls(store, settings.store_record, settings.store_log_share)

    def serve(self, columns: Mapping[str, Any], ids: Sequence[Any]) -> np.ndarray:
        """The vectors of transactions (``columns``: at least ``COLUMNS``), step by step, lowest first: with
        ``record`` a later step of the same request sees an earlier one. One round trip per step read, one per
        step recorded (with its log lines), or one for the log lines of the request."""
        matrix = np.empty((len(columns["step"]), len(self.store.spec)), np.float64)
        for rows, part, part_ids in _by_step(columns, ids):
            matrix[rows] = self.store.read(part)
            served = ServedVectors(part_ids, part["step"], matrix[rows], self.log_share)
            if self.record:
                self.store.record(part, part_ids, served=served)
            elif self.log_share > 0:
                self.store.log(served)
        return matrix

    async def aserve(self, columns: Mapping[str, Any], ids: Sequence[Any]) -> np.ndarray:
        """``serve`` on the event loop (the FastAPI twin)."""
        matrix = np.empty((len(columns["step"]), len(self.store.spec)), np.float64)
        for rows, part, part_ids in _by_step(columns, ids):
            matrix[rows] = await self.store.aread(part)
            served = ServedVectors(part_ids, part["step"], matrix[rows], self.log_share)
            if self.record:
                await self.store.arecord(part, part_ids, served=served)
            elif self.log_share > 0:
                await self.store.alog(served)
        return matrix


def _by_step(
    columns: Mapping[str, Any], ids: Sequence[Any]
) -> Iterator[tuple[np.ndarray, dict[str, list[Any]], list[Any]]]:
    """(row indices, their ``COLUMNS``, their ids) for each step of a request, lowest first."""
    steps = np.asarray(columns["step"], np.int64)
    for step in np.unique(steps).tolist():
        rows = np.flatnonzero(steps == step) if len(steps) > 1 else np.zeros(1, np.intp)
        picked = rows.tolist()
        yield rows, {c: [columns[c][i] for i in picked] for c in COLUMNS}, [ids[i] for i in picked]
