"""A seeded, vectorised PaySim-style transaction simulator.

The shape comes from two places: the published totals of the full PaySim data set (type mix,
fraud counts, the 10,000,000 cap, ``isFlaggedFraud``) and the real rows in
``data/reference/paysim_real_sample.csv`` (per-type amount and balance quantiles, the balance
quirks, how destination accounts recur). Rows are generated in blocks of whole steps, each from its
own child random stream, so memory stays bounded whatever the row count and the same seed always
gives the same bytes.

Accounts recur as in PaySim (``_destinations``): senders almost never (each a fresh id); a
destination account is born at some step with a popularity, and later transactions pick it by
looking back a few steps (most within the same or the previous step, a tail over days). Its name is
a function of (birth step, slot), so blocks generated apart (Spark tasks) name it alike with no
shared state. Frauds: the cash-out agent is an ordinary destination; the mule receiving the
TRANSFER is an ordinary account in some thefts, a fresh one in the others, and with ``mule_reuse``
a recurring mule that collects several thefts over a week (0 by default: PaySim's mules never
receive two frauds).
"""

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lib.errors import ParameterError
from lib.schema import N_STEPS, RAW_SCHEMA, TRANSACTION_TYPES

FULL_ROWS = 6_362_620
FRAUD_CAP = 10_000_000.0
LARGEST_AMOUNT = 92_445_516.64
PUBLISHED_TYPE_COUNTS = {
    "CASH_OUT": 2_237_500,
    "PAYMENT": 2_151_495,
    "CASH_IN": 1_399_284,
    "TRANSFER": 532_909,
    "DEBIT": 41_432,
}
PUBLISHED_FRAUDS = 8_213
PUBLISHED_FLAGGED = 16

# Transactions per hour of day (hour = step % 24), read off the first day of the real data (steps 1-8 are
# the real sample's counts; the first day is simulated with exactly these counts at full size).
_HOUR_VOLUME = np.array(
    [4500, 2708, 1014, 552, 565, 665, 1660, 6837, 21097, 37628, 35991, 40696,
     36153, 37515, 41485, 44609, 41324, 43361, 49579, 51352, 40625, 30000, 18000, 9000],
    dtype=float,
)  # fmt: skip
_LAST_BUSY_STEP = 404  # volume drops sharply after this step in the real data
_LATE_VOLUME_FACTOR = 0.012

# Quantile knots (probabilities _Q) of the genuine rows in the real sample, per type.
_Q = np.array([0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1])
_AMOUNT_KNOTS = {
    "CASH_IN": [58, 3388, 14730, 25520, 49120, 74950, 103800, 137400, 171200, 213400, 264900, 343300, 416800, 608700, 1.8e6],
    "CASH_OUT": [71, 3389, 13290, 27880, 54690, 81710, 109300, 139400, 178300, 224900, 279800, 362800, 440100, 565200, 1e7],
    "DEBIT": [31, 182, 394, 633, 1142, 1727, 2345, 2984, 3623, 4348, 5423, 7375, 8728, 12510, 5.7e5],
    "PAYMENT": [2, 116, 592, 1156, 2377, 3508, 4827, 6285, 7938, 9972, 12780, 17810, 23120, 36730, 2.4e5],
    "TRANSFER": [1222, 7193, 30840, 58600, 127500, 194900, 296800, 406500, 553900, 723300, 1003000, 1475000, 1895000, 2679000, LARGEST_AMOUNT],
}  # fmt: skip
_ORIG_KNOTS = {  # non-zero origin balances before the transaction
    "CASH_IN": [7, 760, 15000, 52060, 660100, 1695000, 2636000, 3647000, 4633000, 5876000, 7189000, 8752000, 10410000, 16720000, 3.8e7],
    "CASH_OUT": [1, 111, 426, 1914, 9122, 14120, 20640, 29060, 46160, 71660, 131600, 319100, 627000, 1818000, 3.8e7],
    "DEBIT": [70, 123, 533, 1174, 8525, 11470, 19620, 24740, 34790, 51460, 92640, 157800, 259100, 680200, 2.4e6],
    "PAYMENT": [1, 114, 359, 1153, 6887, 11540, 19910, 27100, 40930, 62030, 106700, 249400, 469400, 1601000, 4.3e7],
    "TRANSFER": [7, 68, 229, 753, 6536, 11600, 19910, 28430, 41380, 61780, 103700, 215300, 481500, 1197000, 3.8e7],
}  # fmt: skip
_DEST_KNOTS = {  # non-zero destination balances before the transaction
    "CASH_IN": [23, 2136, 20880, 47860, 107600, 189600, 282700, 419300, 631500, 1109000, 2248000, 6620000, 10700000, 17200000, 3.5e8],
    "CASH_OUT": [14, 690, 14120, 31030, 83010, 149800, 247300, 388900, 581900, 900900, 1566000, 5266000, 8979000, 15400000, 3.5e8],
    "DEBIT": [232, 1442, 5228, 9438, 12170, 18910, 26110, 41610, 58300, 100600, 257600, 829900, 2051000, 10620000, 2.4e8],
    "TRANSFER": [7, 198, 4100, 11360, 36140, 90910, 245300, 585300, 1068000, 1968000, 4321000, 8410000, 12210000, 17100000, 3.5e8],
}  # fmt: skip
_DEST_RATIO_KNOTS = {  # (newbalanceDest - oldbalanceDest) / amount, clipped to the 1%..99% range
    "CASH_IN": [-22.4, -22.4, -5.55, -3.31, -1.888, -1.193, -1.0, -1.0, -0.666, 0.0, 2.087, 10.06, 22.92, 113.0, 113.0],
    "CASH_OUT": [-12.1, -12.1, -3.75, -1.881, -0.515, 0.340, 1.0, 1.233, 2.452, 4.377, 9.239, 18.91, 35.6, 212.1, 212.1],
    "DEBIT": [-396.5, -396.5, -131.6, -44.62, -17.14, -4.739, -1.273, 1.0, 1.0, 1.0, 3.744, 61.64, 357.5, 2571.0, 2571.0],
    "TRANSFER": [-6.55, -6.55, -1.409, -0.336, 0.273, 0.886, 1.0, 1.186, 1.731, 2.507, 4.064, 7.253, 13.99, 47.86, 47.86],
}  # fmt: skip
_ORIG_ZERO = {"CASH_IN": 0.005, "CASH_OUT": 0.60, "DEBIT": 0.03, "PAYMENT": 0.22, "TRANSFER": 0.45}
_DEST_ZERO = {"CASH_IN": 0.033, "CASH_OUT": 0.058, "DEBIT": 0.0, "TRANSFER": 0.122}
_DEST_EXACT = {"CASH_IN": 0.18, "CASH_OUT": 0.09, "DEBIT": 0.27, "TRANSFER": 0.105}  # dest moves by exactly amount
_DEST_STILL = 0.004  # genuine destination balance that does not move
_CASH_IN_ADDS_UP = 0.84

# Fraud: the victim's whole balance leaves in chunks of at most FRAUD_CAP.
_FRAUD_Q = np.array([0, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.972, 1])
_FRAUD_BALANCE_KNOTS = [120, 5e3, 2.5e4, 1.3e5, 4.4e5, 1.5e6, 4.5e6, 7.5e6, 1e7, 5e7]
_MULE_DEST_ZERO = 0.92  # the mule account receiving the TRANSFER shows 0 -> 0 balances
_CASHOUT_DEST_ZERO = 0.38
_CASHOUT_DEST_EXACT = 0.43
_CASHOUT_LOW_BALANCE = 0.04  # fraud CASH_OUT whose recorded origin balance is below the amount
_FLAG_THRESHOLD = 200_000.0

BLOCK_ROWS = 1_000_000


@dataclass(frozen=True)
class DriftScenario:
    """From ``start_step`` on, scale genuine amounts and/or change how fraudsters operate.

    ``fraud_pattern``: ``"none"`` keeps PaySim's full-balance takeover; ``"partial_drain"`` makes
    fraudsters take only 30-90% of the balance, which breaks the whole-balance signature.
    """

    start_step: int = 0
    amount_factor: float = 1.0
    fraud_pattern: str = "none"

    def __post_init__(self) -> None:
        if self.fraud_pattern not in ("none", "partial_drain"):
            raise ParameterError(
                f"DRIFT_FRAUD_PATTERN={self.fraud_pattern!r} is unknown; use 'none' or 'partial_drain'"
            )
        if self.start_step < 0 or self.start_step > N_STEPS:
            raise ParameterError(f"DRIFT_START_STEP={self.start_step} must be 0 (no drift) or 1..{N_STEPS}")
        if self.amount_factor <= 0:
            raise ParameterError(f"DRIFT_AMOUNT_FACTOR={self.amount_factor} must be > 0")

    @property
    def active(self) -> bool:
        return self.start_step > 0 and (self.amount_factor != 1.0 or self.fraud_pattern != "none")


def step_weights() -> np.ndarray:
    """Relative transaction volume of steps 1..743: the real first day (steps 1..24, as read), then a
    daily cycle, a slow ramp, a late drop."""
    steps = np.arange(1, N_STEPS + 1)
    day = np.minimum((steps - 1) // 24 + 1, 17)
    weights = _HOUR_VOLUME[steps % 24] * (9 + day)
    weights[steps > _LAST_BUSY_STEP] *= _LATE_VOLUME_FACTOR
    first_day = _HOUR_VOLUME[steps[:24] % 24] / FULL_ROWS
    weights[24:] *= (1 - first_day.sum()) / weights[24:].sum()
    weights[:24] = first_day
    return weights / weights.sum()


def _quantile_sample(rng: np.random.Generator, knots: list[float], n: int, q: np.ndarray = _Q) -> np.ndarray:
    """Inverse-CDF sampling, log-linear between the quantile knots."""
    return np.exp(np.interp(rng.random(n), q, np.log(np.asarray(knots, dtype=float))))


def _ratio_sample(rng: np.random.Generator, knots: list[float], n: int) -> np.ndarray:
    return np.interp(rng.random(n), _Q, np.asarray(knots, dtype=float))


def _plan(rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-step genuine counts by type, plus fraud victims' balances and steps."""
    fraud_rows_target = round(rows * PUBLISHED_FRAUDS / FULL_ROWS)
    # Victims are drawn until their chunked TRANSFER + CASH_OUT rows reach the target.
    balances = _quantile_sample(rng, _FRAUD_BALANCE_KNOTS, fraud_rows_target + 2, _FRAUD_Q)
    chunks = np.ceil(balances / FRAUD_CAP).astype(np.int64)
    n_victims = int(np.searchsorted(np.cumsum(2 * chunks), fraud_rows_target))
    balances, chunks = balances[:n_victims], chunks[:n_victims]
    fraud_steps = rng.integers(1, N_STEPS + 1, n_victims)  # fraud is spread evenly over the month

    fraud_per_type = int(chunks.sum())  # as many fraud TRANSFERs as fraud CASH_OUTs
    total = sum(PUBLISHED_TYPE_COUNTS.values())
    genuine = np.zeros((N_STEPS, len(TRANSACTION_TYPES)), dtype=np.int64)
    weights = step_weights()
    exact = {t: rows * PUBLISHED_TYPE_COUNTS[t] / total for t in TRANSACTION_TYPES}
    counts = {t: int(np.floor(v)) for t, v in exact.items()}
    for t in sorted(exact, key=lambda t: exact[t] - counts[t], reverse=True)[: rows - sum(counts.values())]:
        counts[t] += 1
    for j, t in enumerate(TRANSACTION_TYPES):
        n = counts[t] - (fraud_per_type if t in ("TRANSFER", "CASH_OUT") else 0)
        genuine[:, j] = rng.multinomial(max(n, 0), weights)
    return genuine, balances, fraud_steps


def _names(ids: np.ndarray, prefix: str | np.ndarray) -> pa.Array:
    digits = pc.cast(pa.array(ids), pa.string())
    prefixes = pa.array(prefix) if isinstance(prefix, np.ndarray) else pa.scalar(prefix)
    return pc.binary_join_element_wise(prefixes, digits, "")


def _fresh(rng: np.random.Generator, n: int) -> np.ndarray:
    """Ids of accounts seen once (senders, merchants, fresh mules), in PaySim's 7-10 digit range."""
    return rng.integers(1_000_000, 2_147_483_647, n)


def _account(kind: int, born: np.ndarray, slot: np.ndarray) -> np.ndarray:
    """The id of slot ``slot`` of the accounts born at step ``born`` (``kind`` 0: destinations, 1: recurring
    mules): the same in every block, so recurring accounts need no state shared between blocks."""
    key = (kind * (2 * N_STEPS + 1) + (born + N_STEPS).astype(np.uint64)) * np.uint64(1 << 32) + slot.astype(np.uint64)
    mixed = (key * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(29)  # Fibonacci hashing, mod 2^64
    return 1_000_000 + (mixed % np.uint64(2_146_000_000)).astype(np.int64)


# How destinations recur (calibrated on the real rows of steps 1-8; lib.data.fidelity.recurrence): a transaction
# at step s picks an account born at step s - lookback; born at step b are about C-rows(b) / _ROWS_PER_DEST
# accounts, the first slots far more popular than the last (slot = pool * u ** _POPULARITY).
_LOOKBACK = np.array([0.38, 0.42, 0.04, 0.03, 0.02, 0.02, 0.01, 0.01])  # steps 0..7 back; the rest log-uniform
_LOOKBACK_TAIL = N_STEPS
_ROWS_PER_DEST = 8.0
_POPULARITY = 1.6
_MULE_FROM_DESTS = 0.38  # mules that are ordinary destination accounts (real sample: 15 of 39); the rest fresh
_MULE_WEEK = 168  # a recurring mule collects thefts over the steps of one week
_THEFTS_PER_MULE = 5  # a recurring mule's thefts in its week, on average


def dest_pools(rows: int) -> np.ndarray:
    """Destination accounts born at each step ``b`` of a ``rows``-row simulation, at index ``b + 743``:
    steps 1..743, and before the data's first step the accounts that already existed (as many per step
    as the month's mean), so early transactions do not crowd onto step 1's accounts."""
    c_share = 1 - PUBLISHED_TYPE_COUNTS["PAYMENT"] / sum(PUBLISHED_TYPE_COUNTS.values())
    born = step_weights() * rows * c_share / _ROWS_PER_DEST
    return np.maximum(1, np.round(np.concatenate([np.full(N_STEPS + 1, born.mean()), born]))).astype(np.int64)


def _destinations(rng, step: np.ndarray, pools: np.ndarray) -> np.ndarray:
    """Recurring destination ids for transactions at ``step``."""
    n = len(step)
    near = rng.choice(len(_LOOKBACK), n, p=_LOOKBACK / _LOOKBACK.sum())
    tail = rng.random(n) < 1 - _LOOKBACK.sum()
    far = np.exp(rng.uniform(np.log(len(_LOOKBACK)), np.log(_LOOKBACK_TAIL), n)).astype(np.int64)  # log-uniform
    back = np.where(tail, far, near)
    born = step - back
    slot = np.floor(pools[born + N_STEPS] * rng.random(n) ** _POPULARITY).astype(np.int64)
    return _account(0, born, slot)


def _genuine(rng, type_code: np.ndarray, steps: np.ndarray, drift: DriftScenario) -> dict[str, np.ndarray]:
    n = len(type_code)
    cols = {k: np.zeros(n) for k in ("amount", "oldbalanceOrg", "newbalanceOrig", "oldbalanceDest", "newbalanceDest")}
    for j, t in enumerate(TRANSACTION_TYPES):
        idx = np.flatnonzero(type_code == j)
        m = len(idx)
        if m == 0:
            continue
        amount = _quantile_sample(rng, _AMOUNT_KNOTS[t], m)
        orig = np.where(rng.random(m) < _ORIG_ZERO[t], 0.0, _quantile_sample(rng, _ORIG_KNOTS[t], m))
        if t == "CASH_IN":
            new_orig = np.where(rng.random(m) < _CASH_IN_ADDS_UP, orig + amount, orig)
        else:  # the account cannot go below zero: a larger amount leaves a balance that does not add up
            new_orig = np.maximum(orig - amount, 0.0)
        if t == "PAYMENT":  # merchants: destination balances are always 0
            dest = new_dest = np.zeros(m)
        else:
            dest = np.where(rng.random(m) < _DEST_ZERO[t], 0.0, _quantile_sample(rng, _DEST_KNOTS[t], m))
            ratio = _ratio_sample(rng, _DEST_RATIO_KNOTS[t], m)
            ratio = np.where(dest == 0, np.abs(ratio), ratio)
            u = rng.random(m)
            exact = dest - amount if t == "CASH_IN" else dest + amount
            new_dest = np.where(u < _DEST_EXACT[t], exact, dest + amount * ratio)
            new_dest = np.where(u > 1 - _DEST_STILL, dest, np.maximum(new_dest, 0.0))
        for k, v in zip(cols, (amount, orig, new_orig, dest, new_dest), strict=True):
            cols[k][idx] = v
    if drift.active and drift.amount_factor != 1.0:
        late = steps >= drift.start_step
        scaled = cols["amount"][late] * drift.amount_factor
        delta = scaled - cols["amount"][late]
        cols["amount"][late] = scaled
        sign = np.where(type_code[late] == TRANSACTION_TYPES.index("CASH_IN"), 1.0, -1.0)
        cols["newbalanceOrig"][late] = np.maximum(cols["newbalanceOrig"][late] + sign * delta, 0.0)
    return cols


def _fraud(rng, balances: np.ndarray, chunks: np.ndarray, steps: np.ndarray, drift: DriftScenario):
    """TRANSFER chunks from each victim to a mule, each followed by the mule's CASH_OUT."""
    victim = np.repeat(np.arange(len(balances)), chunks)
    chunk_no = np.arange(len(victim)) - np.repeat(np.cumsum(chunks) - chunks, chunks)
    step = steps[victim]
    old_orig = balances[victim] - chunk_no * FRAUD_CAP
    amount = np.minimum(old_orig, FRAUD_CAP)
    drained = rng.uniform(0.3, 0.9, len(victim))  # drawn always, so drift changes nothing before its step
    if drift.active and drift.fraud_pattern == "partial_drain":  # take only part of each chunk
        amount = np.where(step >= drift.start_step, amount * drained, amount)
    new_orig = old_orig - amount
    n = len(victim)

    flagged = (amount > _FLAG_THRESHOLD) & (rng.random(n) < _flag_probability())
    new_orig = np.where(flagged, old_orig, new_orig)  # the flagged transfer was blocked

    mule_zero = rng.random(n) < _MULE_DEST_ZERO
    mule_old = np.where(mule_zero, 0.0, _quantile_sample(rng, _DEST_KNOTS["TRANSFER"], n))
    mule_new = np.where(mule_zero | flagged, mule_old, mule_old + amount)

    low = rng.random(n) < _CASHOUT_LOW_BALANCE
    cash_old = np.where(low, amount * rng.random(n) * (rng.random(n) < 0.5), amount)
    agent_old = np.where(rng.random(n) < _CASHOUT_DEST_ZERO, 0.0, _quantile_sample(rng, _DEST_KNOTS["CASH_OUT"], n))
    u = rng.random(n)
    ratio = _ratio_sample(rng, _DEST_RATIO_KNOTS["CASH_OUT"], n)
    agent_new = np.where(u < _CASHOUT_DEST_EXACT, agent_old + amount, np.maximum(agent_old + amount * ratio, 0.0))
    agent_new = np.where(agent_old == 0, agent_old + amount, agent_new)  # never 0 -> 0 for the cash-out agent

    transfer = {
        "amount": amount, "oldbalanceOrg": old_orig, "newbalanceOrig": new_orig,
        "oldbalanceDest": mule_old, "newbalanceDest": mule_new, "isFlaggedFraud": flagged,
    }  # fmt: skip
    cash_out = {
        "amount": amount, "oldbalanceOrg": cash_old, "newbalanceOrig": np.zeros(n),
        "oldbalanceDest": agent_old, "newbalanceDest": agent_new, "isFlaggedFraud": np.zeros(n, bool),
    }  # fmt: skip
    return step, chunk_no, transfer, cash_out


def _flag_probability() -> float:
    # share of fraud TRANSFERs above the threshold, estimated from the balance knots (~0.45)
    share_large = 1 - np.interp(np.log(_FLAG_THRESHOLD), np.log(_FRAUD_BALANCE_KNOTS), _FRAUD_Q)
    return PUBLISHED_FLAGGED / (PUBLISHED_FRAUDS / 2 * share_large)


def _block(rng, block: "Block", drift: DriftScenario) -> pa.RecordBatch:
    """All rows of the block's steps, ordered by step."""
    genuine, step_lo, fraud = block.genuine, block.first_step, block.fraud
    per_step = genuine.sum(axis=1)
    g_step = np.repeat(np.arange(step_lo, step_lo + len(genuine)), per_step)
    g_type = (
        np.concatenate([np.repeat(np.arange(len(TRANSACTION_TYPES)), row) for row in genuine])
        if len(genuine)
        else np.zeros(0, np.int64)
    )
    g = _genuine(rng, g_type, g_step, drift)
    f_step, f_chunk, transfer, cash_out = _fraud(rng, fraud["balances"], fraud["chunks"], fraud["steps"], drift)
    nf, ng = len(f_step), len(g_step)
    t_transfer, t_cash_out = TRANSACTION_TYPES.index("TRANSFER"), TRANSACTION_TYPES.index("CASH_OUT")

    # Sort key inside a step: random for genuine rows; a fraud CASH_OUT right after its TRANSFER.
    f_key = rng.random(nf)
    order_key = np.concatenate([rng.random(ng), f_key + f_chunk * 2e-12, f_key + f_chunk * 2e-12 + 1e-12])
    step = np.concatenate([g_step, f_step, f_step])
    order = np.lexsort((order_key, step))

    def col(name: str) -> np.ndarray:
        return np.concatenate([g[name], transfer[name], cash_out[name]])[order]

    type_code = np.concatenate([g_type, np.full(nf, t_transfer), np.full(nf, t_cash_out)])[order]
    is_fraud = np.concatenate([np.zeros(ng, np.int8), np.ones(2 * nf, np.int8)])[order]
    flagged = np.concatenate([np.zeros(ng, bool), transfer["isFlaggedFraud"], np.zeros(nf, bool)])[order]
    n = ng + 2 * nf
    is_payment = type_code == TRANSACTION_TYPES.index("PAYMENT")
    ordered_step = step[order]
    dest = np.where(is_payment, _fresh(rng, n), _destinations(rng, ordered_step, block.pools))
    mule = np.concatenate([np.zeros(ng, bool), np.ones(nf, bool), np.zeros(nf, bool)])[order]
    fresh_mule = mule & (rng.random(n) >= _MULE_FROM_DESTS)
    dest = np.where(fresh_mule, _fresh(rng, n), dest)
    ring = _account(1, ordered_step // _MULE_WEEK, rng.integers(0, block.mules_per_week, n))
    dest = np.where(mule & (rng.random(n) < block.mule_reuse), ring, dest)
    columns = {
        "step": pa.array(ordered_step.astype(np.int32)),
        "type": pa.DictionaryArray.from_arrays(pa.array(type_code.astype(np.int8)), TRANSACTION_TYPES).cast(
            pa.string()
        ),
        "amount": pa.array(np.round(col("amount"), 2)),
        "nameOrig": _names(_fresh(rng, n), "C"),
        "oldbalanceOrg": pa.array(np.round(col("oldbalanceOrg"), 2)),
        "newbalanceOrig": pa.array(np.round(col("newbalanceOrig"), 2)),
        "nameDest": _names(dest, np.where(is_payment, "M", "C")),
        "oldbalanceDest": pa.array(np.round(col("oldbalanceDest"), 2)),
        "newbalanceDest": pa.array(np.round(col("newbalanceDest"), 2)),
        "isFraud": pa.array(is_fraud),
        "isFlaggedFraud": pa.array(flagged.astype(np.int8)),
    }
    return pa.RecordBatch.from_arrays(list(columns.values()), schema=RAW_SCHEMA)


@dataclass(frozen=True)
class Block:
    """Whole steps ``first_step``.. of the simulation and everything needed to generate their rows anywhere
    (this process or a Spark task): genuine counts per step and type, the frauds, its own random stream."""

    first_step: int
    genuine: np.ndarray
    fraud: dict[str, np.ndarray]
    seed: np.random.SeedSequence
    pools: np.ndarray  # destination accounts born per step (``dest_pools``)
    mule_reuse: float = 0.0
    mules_per_week: int = 1  # recurring mules active in each week

    @property
    def rows(self) -> int:
        return int(self.genuine.sum() + 2 * self.fraud["chunks"].sum())


def plan_blocks(rows: int, seed: int, block_rows: int = BLOCK_ROWS, mule_reuse: float = 0.0) -> list[Block]:
    """The simulation's blocks of whole steps (at most ``block_rows`` rows each, unless one step has more);
    ``mule_reuse``: the share of thefts whose mule is a recurring one (0..1)."""
    if rows < 1:
        raise ParameterError(f"ROWS={rows} must be a positive number of transactions")
    if not 0 <= mule_reuse <= 1:
        raise ParameterError(f"MULE_REUSE={mule_reuse} must be a share between 0 and 1")
    root = np.random.SeedSequence(seed)
    plan_seed, *block_seeds = root.spawn(N_STEPS + 1)
    genuine, balances, fraud_steps = _plan(rows, np.random.default_rng(plan_seed))
    chunks = np.ceil(balances / FRAUD_CAP).astype(np.int64)
    fraud_per_step = np.bincount(fraud_steps, weights=2 * chunks, minlength=N_STEPS + 1)[1:]
    rows_per_step = genuine.sum(axis=1) + fraud_per_step
    blocks, lo, pools = [], 0, dest_pools(rows)
    recurring_per_week = chunks.sum() * mule_reuse * _MULE_WEEK / N_STEPS  # thefts sent to recurring mules
    mules = max(1, round(recurring_per_week / _THEFTS_PER_MULE))
    while lo < N_STEPS:
        hi = lo + 1
        while hi < N_STEPS and rows_per_step[lo : hi + 1].sum() <= block_rows:
            hi += 1
        in_block = (fraud_steps >= lo + 1) & (fraud_steps <= hi)
        fraud = {"balances": balances[in_block], "chunks": chunks[in_block], "steps": fraud_steps[in_block]}
        blocks.append(Block(lo + 1, genuine[lo:hi], fraud, block_seeds[lo], pools, mule_reuse, mules))
        lo = hi
    return blocks


def simulate_block(block: Block, drift: DriftScenario | None = None) -> pa.RecordBatch:
    """The rows of one block, ordered by step."""
    rng = np.random.default_rng(block.seed)
    return _block(rng, block, drift or DriftScenario())


def simulate_batches(
    rows: int, seed: int, drift: DriftScenario | None = None, block_rows: int = BLOCK_ROWS, mule_reuse: float = 0.0
) -> Iterator[pa.RecordBatch]:
    """Yield the simulated transactions in step order, in blocks of whole steps."""
    for block in plan_blocks(rows, seed, block_rows, mule_reuse):
        batch = simulate_block(block, drift)
        if batch.num_rows:
            yield batch


def simulate_table(rows: int, seed: int, drift: DriftScenario | None = None, mule_reuse: float = 0.0) -> pa.Table:
    """All simulated rows as one Arrow table (for small sizes and tests)."""
    return pa.Table.from_batches(list(simulate_batches(rows, seed, drift, mule_reuse=mule_reuse)), schema=RAW_SCHEMA)
