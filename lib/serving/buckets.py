"""Entity features from the step buckets the online store keeps per account (``lib.serving.online``): the
reader's half of ``lib.features.history``, for a micro-batch (arrays and binary searches, as
``lib.data.entity.entity_columns`` reads rows) and for a single request (plain Python: a tenth of the time).
Both are held to the brute-force reference and its mutants by ``tests/data/test_entity.py``."""

from collections.abc import Sequence
from typing import Any

import numpy as np

from lib.features import NEVER_SEEN, SINCE_CAP, EntityFeature, history

_KINDS = {ord("n"): 0, ord("m"): 1, ord("y"): 2}
_NEVER = np.iinfo(np.int64).max  # the first step of an account never seen: after any step


def parse_account(raw: Sequence[bytes]) -> tuple[dict[int, list[Any]], int]:
    """One account's hash (``HGETALL``'s reply: name, value, name, value, ...) as ``{step: [transactions,
    millionths, frauds, senders or None]}`` and its first step."""
    found: dict[int, list[Any]] = {}
    first = _NEVER
    for name, value in zip(raw[::2], raw[1::2], strict=True):
        kind = _KINDS.get(name[0])
        if kind is not None:
            found.setdefault(int(name[1:]), [0, 0, 0, None])[kind] = int(value)
        elif name[0] == ord("s"):
            at, sender = name[1:].split(b":", 1)
            bucket = found.setdefault(int(at), [0, 0, 0, None])
            bucket[3] = (bucket[3] or set()) | {sender}
        elif name == b"_first":
            first = int(value)
    return found, first


def value_one(feature: EntityFeature, account: tuple[dict[int, list[Any]], int], step: int, label_delay: int) -> float:
    """``feature`` of one transaction at ``step`` from its account (``parse_account``): what ``Buckets.values``
    gives, without arrays (a single request: a tenth of the time)."""
    first, last = history(feature, label_delay)
    lo, hi = (-1 if first is None else step + first), step + last
    found, born = account
    match feature.aggregation:
        case "steps_since_first":
            return float(min(step - born, SINCE_CAP)) if born <= hi else float(NEVER_SEEN)
        case "distinct_senders":
            return float(len(set().union(*(b[3] for t, b in found.items() if lo <= t <= hi and b[3]))))
    count = sum(b[0] for t, b in found.items() if lo <= t <= hi)
    column = {"count": 0, "sum": 1, "mean": 1, "frauds": 2}[feature.aggregation]
    total = sum(b[column] for t, b in found.items() if lo <= t <= hi)
    if feature.aggregation in ("sum", "mean"):
        money = total / 1e6
        return money if feature.aggregation == "sum" else (money / count if count else 0.0)
    return float(total)


class Buckets:
    """The buckets of the accounts of one read, as arrays sorted by (account, step), with running totals:
    a window of any row is two binary searches (the way ``lib.data.entity.entity_columns`` reads rows)."""

    def __init__(self, raws: Sequence[Sequence[bytes]]) -> None:
        accounts: list[int] = []
        steps: list[int] = []
        totals: list[tuple[int, int, int]] = []
        senders: list[set[bytes]] = []
        self.first = np.full(len(raws), _NEVER, np.int64)
        for a, raw in enumerate(raws):
            found, self.first[a] = parse_account(raw)
            for step, (n, m, y, who) in found.items():
                accounts.append(a)
                steps.append(step)
                totals.append((n, m, y))
                senders.append(who or set())
        self.span = (max(steps) if steps else 0) + 2
        keys = np.asarray(accounts, np.int64) * self.span + np.asarray(steps, np.int64)
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        table = np.asarray(totals, np.int64).reshape(-1, 3)[order]
        with np.errstate(over="ignore"):  # running totals may wrap; their differences stay exact
            self.running = np.vstack([np.zeros((1, 3), np.int64), np.cumsum(table, axis=0)])
        self.senders = [senders[i] for i in order.tolist()]

    def values(self, feature: EntityFeature, account: np.ndarray, step: np.ndarray, label_delay: int) -> np.ndarray:
        """``feature`` for rows of ``account`` (indices into the raws) at ``step``, by ``history``'s rule."""
        first, last = history(feature, label_delay)
        base = account * self.span
        top = np.minimum(step + last, self.span - 1)  # past the newest bucket: the same as the newest
        hi = np.searchsorted(self.keys, base + np.maximum(top, -1), side="right")
        lo = np.searchsorted(self.keys, base + (0 if first is None else np.maximum(step + first, 0)), side="left")
        lo = np.minimum(lo, hi)
        match feature.aggregation:
            case "count" | "sum" | "mean" | "frauds":
                column = {"count": 0, "sum": 1, "mean": 1, "frauds": 2}[feature.aggregation]
                with np.errstate(over="ignore"):
                    got: np.ndarray = self.running[hi, column] - self.running[lo, column]
                if feature.aggregation == "sum":
                    return np.asarray(got / 1e6)
                if feature.aggregation == "mean":
                    count = self.running[hi, 0] - self.running[lo, 0]
                    return np.asarray(np.divide(got / 1e6, count, out=np.zeros(len(got)), where=count > 0))
                return np.asarray(got, np.float64)
            case "distinct_senders":
                return np.array([len(set().union(*self.senders[a:z])) for a, z in zip(lo.tolist(), hi.tolist(), strict=True)],
                                np.float64)  # fmt: skip
            case "steps_since_first":
                born = self.first[account]
                seen = born <= step + last
                return np.where(seen, np.minimum(step - np.where(seen, born, 0), SINCE_CAP), NEVER_SEEN).astype(
                    np.float64
                )
        raise ValueError(f"unknown aggregation {feature.aggregation!r}")
