"""Per-account features equal a brute-force reference that states the point-in-time rule on its own (plain
Python over every pair of transactions), and mutants of the rule are caught: in Spark (02), in NumPy (files)
and from the online store (a real Redis, fed as a stream feeds it)."""

import math
from collections import defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from lib.data import entity
from lib.serving import buckets, online
from lib.data.entity import entity_columns, entity_features
from lib.features import ENTITY_FEATURES, NEVER_SEEN, SINCE_CAP
from lib.data.spark import spark_session
from tests.conftest import REAL_SAMPLE

pytestmark = pytest.mark.slow

DELAY = 3
COLUMNS = ("transaction_id", "step", "amount", "nameOrig", "nameDest", "isFraud")


@pytest.fixture(scope="module")
def spark():
    session = spark_session("local[2]", driver_memory="2g", app_name="tests")
    yield session
    session.stop()


def recurring(rows: int = 4_000, seed: int = 7) -> list[dict]:
    """Few accounts over many steps: every window, the cap of 'steps since first' and the label delay
    all see history (PaySim's own senders almost never recur)."""
    rng = np.random.default_rng(seed)
    steps = np.sort(rng.integers(1, 744, rows))
    return [
        {"transaction_id": f"r{i}", "step": int(steps[i]), "amount": round(float(rng.gamma(2, 900)), 2),
         "nameOrig": f"C{rng.integers(40)}", "nameDest": f"C{rng.integers(60) + 100}", "isFraud": int(rng.random() < 0.08)}
        for i in range(rows)
    ]  # fmt: skip


def real(rows: int = 4_000) -> list[dict]:
    """The first real PaySim rows (steps 1 and 2): destinations recur there within hours."""
    table = pacsv.read_csv(REAL_SAMPLE).slice(0, rows)
    return [{**{c: r[c] for c in COLUMNS[1:]}, "transaction_id": f"p{i}"} for i, r in enumerate(table.to_pylist())]


def reference(rows: list[dict], delay: int) -> dict[str, dict[str, float]]:
    """Each feature by its definition: for a transaction at step s, the account's transactions at steps
    t < s within the window (s - t <= window), and for labels only those with t + delay <= s."""
    by_account = defaultdict(list)
    for row in rows:
        by_account["nameDest", row["nameDest"]].append(row)
        by_account["nameOrig", row["nameOrig"]].append(row)
    out = {}
    for row in rows:
        s, values = row["step"], {}
        for f in ENTITY_FEATURES:
            seen = [
                o for o in by_account[f.entity, row[f.entity]]
                if o["step"] < s and (f.window is None or s - o["step"] <= f.window)
                and (not f.needs_labels or o["step"] + delay <= s)
            ]  # fmt: skip
            amounts = [o["amount"] for o in seen]
            values[f.name] = {
                "count": len(seen),
                "sum": sum(amounts),
                "mean": sum(amounts) / len(amounts) if amounts else 0.0,
                "frauds": sum(o["isFraud"] for o in seen),
                "distinct_senders": len({o["nameOrig"] for o in seen}),
                "steps_since_first": min(s - min(o["step"] for o in seen), SINCE_CAP) if seen else NEVER_SEEN,
            }[f.aggregation]
        out[row["transaction_id"]] = values
    return out


def served(store: online.OnlineStore, rows: list[dict], delay: int, one: bool = False) -> dict[str, dict[str, float]]:
    """The online store's features, fed as a stream would feed it and harder: step by step, half of each
    step's rows recorded before the step is read (another partition's), the rest after; each label counted
    as soon as its transaction is recorded (early: only the reader's rule keeps it out until its delay).
    ``one``: each transaction read alone (a single request's path) instead of the step's batch."""
    store = online.OnlineStore(store.url, delay, prefix=store.prefix + f"{delay}:")
    by_step = defaultdict(list)
    for row in rows:
        by_step[row["step"]].append(row)
    out = {}

    def columns(batch):
        return {c: [r[c] for r in batch] for c in ("step", "amount", "nameOrig", "nameDest")}

    for step in sorted(by_step):
        batch = by_step[step]
        before, after = batch[: len(batch) // 2], batch[len(batch) // 2 :]
        if before:
            store.record(columns(before), [r["transaction_id"] for r in before])
        matrix = [store.read(columns([row]))[0] for row in batch] if one else store.read(columns(batch))
        for row, values in zip(batch, matrix, strict=True):
            out[row["transaction_id"]] = {f.name: v.item() for f, v in zip(store.spec, values, strict=True)}
        if after:
            store.record(columns(after), [r["transaction_id"] for r in after])
        store.label([(r["transaction_id"], step) for r in batch if r["isFraud"]])
    return out


def computed(spark, rows: list[dict], delay: int) -> dict[str, dict[str, float]]:
    """Spark's features (``spark`` a session), NumPy's (``spark`` None: ``entity_columns``) or the online
    store's (``spark`` an ``OnlineStore``), by transaction."""
    if isinstance(spark, online.OnlineStore):
        return served(spark, rows, delay, one=spark.prefix.startswith("one-"))
    if spark is None:
        table = pa.Table.from_pylist(rows)
        values = entity_columns({c: table.column(c).to_numpy(zero_copy_only=False) for c in COLUMNS}, delay)
        return {r["transaction_id"]: {k: v[i].item() for k, v in values.items()} for i, r in enumerate(rows)}
    frame = spark.createDataFrame(pa.Table.from_pylist(rows).select(list(COLUMNS)).to_pandas())
    return {r["transaction_id"]: r.asDict() for r in entity_features(frame, delay).collect()}


@pytest.fixture(params=["spark", "numpy", "online", "online-one"])
def engine(request):
    """The evaluators of the entity features: Spark's (02), NumPy's (files, 05's real rows) and the online
    store's (the stream and the APIs), for batches and for one transaction at a time."""
    if request.param.startswith("online"):
        store = request.getfixturevalue("online_store")
        return online.OnlineStore(store.url, store.label_delay, prefix=("one-" if "one" in request.param else "") + store.prefix)
    return request.getfixturevalue("spark") if request.param == "spark" else None


def differences(expected: dict, got: dict) -> list[tuple[str, str, float, float]]:
    assert expected.keys() == got.keys()
    return [
        (tid, name, want, got[tid][name])
        for tid, values in expected.items()
        for name, want in values.items()
        if not math.isclose(want, got[tid][name], rel_tol=1e-12, abs_tol=1e-9)
    ]


@pytest.mark.parametrize("rows", [recurring, real], ids=["recurring", "real"])
def test_each_evaluator_equals_the_brute_force_reference(engine, rows):
    data = rows()
    assert differences(reference(data, DELAY), computed(engine, data, DELAY)) == []


def test_the_windows_see_history_in_the_test_data(spark):
    """The reference test proves something only if the features are not all zero."""
    data = recurring()
    expected = reference(data, DELAY)
    for f in ENTITY_FEATURES:
        values = [v[f.name] for v in expected.values()]
        assert len(set(values)) > 2, f.name
    assert any(v["dest_steps_since_first"] == SINCE_CAP for v in expected.values())


MUTANTS = {
    "its own step included": lambda f, d: (None if f.window is None else -f.window, 0),
    "the window shifted by one step": lambda f, d: (None if f.window is None else -f.window - 1, -2),
    "labels without their delay": lambda f, d: (None if f.window is None else -f.window, -1),
}


@pytest.mark.parametrize("mutant", MUTANTS, ids=list(MUTANTS))
def test_a_mutant_of_the_rule_is_caught(engine, monkeypatch, mutant):
    data = recurring(1_500)
    monkeypatch.setattr(buckets if isinstance(engine, online.OnlineStore) else entity, "history", MUTANTS[mutant])
    wrong = differences(reference(data, DELAY), computed(engine, data, DELAY))
    assert wrong, f"{mutant}: Spark's features still equal the reference"


def test_a_label_is_counted_from_its_visibility_step_on(engine):
    rows = [
        {"transaction_id": "fraud", "step": 10, "amount": 5.0, "nameOrig": "C1", "nameDest": "C9", "isFraud": 1},
        *({"transaction_id": f"at{s}", "step": s, "amount": 1.0, "nameOrig": "C2", "nameDest": "C9", "isFraud": 0}
          for s in (10, 11, 12, 13, 14)),
    ]  # fmt: skip
    got = computed(engine, rows, DELAY)
    assert [got[f"at{s}"]["dest_frauds_168"] for s in (10, 11, 12, 13, 14)] == [0, 0, 0, 1, 1]
    assert [got[f"at{s}"]["dest_count_1"] for s in (10, 11, 12, 13, 14)] == [0, 2, 1, 1, 1]
    assert got["fraud"]["dest_steps_since_first"] == NEVER_SEEN and got["at14"]["dest_steps_since_first"] == 4
