"""The simulator: seeded and byte-reproducible, PaySim's semantics, a drift scenario that really drifts."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from lib.data import fidelity
from lib.data.acquire import validate_file, write_batches
from lib.hashing import file_sha256
from lib.errors import ParameterError
from lib.schema import RAW_SCHEMA, TRANSACTION_TYPES
from lib.data.simulate import (
    FRAUD_CAP,
    FULL_ROWS,
    N_STEPS,
    PUBLISHED_TYPE_COUNTS,
    DriftScenario,
    plan_blocks,
    simulate_batches,
    simulate_block,
    simulate_table,
)
from tests.conftest import REAL_SAMPLE

ROWS = 300_000


@pytest.fixture(scope="module")
def cols():
    table = simulate_table(ROWS, seed=7)
    return {c: table.column(c).to_numpy(zero_copy_only=False) for c in table.column_names}


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_same_seed_same_bytes(tmp_path, suffix):
    a = write_batches(simulate_batches(20_000, seed=3), tmp_path / f"a{suffix}")
    b = write_batches(simulate_batches(20_000, seed=3), tmp_path / f"b{suffix}")
    c = write_batches(simulate_batches(20_000, seed=4), tmp_path / f"c{suffix}")
    assert file_sha256(a) == file_sha256(b) != file_sha256(c)
    assert validate_file(str(a)).rows == 20_000


def test_blocks_do_not_change_the_data():
    small_blocks = list(simulate_batches(30_000, seed=5, block_rows=2_000))
    assert len(small_blocks) > 5
    assert sum(b.num_rows for b in small_blocks) == 30_000
    steps = np.concatenate([b.column("step").to_numpy() for b in small_blocks])
    assert (np.diff(steps) >= 0).all() and steps.min() >= 1 and steps.max() <= N_STEPS


def test_schema_and_exact_type_counts(cols):
    assert list(cols) == RAW_SCHEMA.names
    total = sum(PUBLISHED_TYPE_COUNTS.values())
    for t in TRANSACTION_TYPES:
        assert abs((cols["type"] == t).sum() - ROWS * PUBLISHED_TYPE_COUNTS[t] / total) <= 1


def test_fraud_follows_paysim(cols):
    fraud = cols["isFraud"] == 1
    assert set(cols["type"][fraud]) == {"TRANSFER", "CASH_OUT"}
    assert abs(fraud.sum() / (ROWS * 8213 / 6_362_620) - 1) < 0.1
    assert cols["amount"][fraud].max() <= FRAUD_CAP
    assert (cols["isFlaggedFraud"][~fraud] == 0).all()
    # frauds are spread over the whole month, genuine volume is not
    assert np.median(cols["step"][fraud]) > np.median(cols["step"][~fraud]) + 50
    # each fraud TRANSFER is followed by its CASH_OUT of the same amount
    idx = np.flatnonzero(fraud & (cols["type"] == "TRANSFER"))
    idx = idx[idx + 1 < ROWS]
    follows = (cols["type"][idx + 1] == "CASH_OUT") & (cols["amount"][idx + 1] == cols["amount"][idx])
    assert follows.mean() > 0.95


def test_paysim_balance_mechanics(cols):
    payment = cols["type"] == "PAYMENT"
    assert np.char.startswith(cols["nameDest"][payment].astype(str), "M").all()
    assert (cols["oldbalanceDest"][payment] == 0).all() and (cols["newbalanceDest"][payment] == 0).all()
    assert not np.char.startswith(cols["nameDest"][~payment].astype(str), "M").any()
    assert np.char.startswith(cols["nameOrig"].astype(str), "C").all()
    for c in ("amount", "oldbalanceOrg", "newbalanceOrig", "oldbalanceDest", "newbalanceDest"):
        assert (cols[c] >= 0).all(), c


def test_signatures_match_the_real_sample(cols):
    real = fidelity.load_columns(REAL_SAMPLE)
    table = fidelity.signature_table(cols, real)
    assert table["within_5pp"].all(), table


@pytest.fixture(scope="module")
def first_hours_full_size():
    """Steps 1-8 of a full-size (6,362,620-row) simulation: its first block, about 35,000 rows there."""
    batch = simulate_block(plan_blocks(FULL_ROWS, seed=42)[0])
    return {c: batch.column(c).to_numpy(zero_copy_only=False) for c in batch.schema.names}


def test_accounts_recur_like_the_real_rows(first_hours_full_size):
    """At full size, every recurrence signature of steps 1-8 has enough rows and lies within 10 points of the real
    rows (genuine destinations recur, mules less, fraud CASH_OUTs pair with their TRANSFER, senders never)."""
    table = fidelity.recurrence_table(first_hours_full_size, fidelity.first_hours(REAL_SAMPLE))
    assert (table["within"] == "yes").all(), table
    assert table.loc["genuine_tc_dest_recurs", "this_data_pct"] > table.loc["fraud_dest_recurs", "this_data_pct"] + 10


def test_the_first_hours_have_the_real_volume(first_hours_full_size):
    """Steps 1-7 at full size within 10 % of the real rows' counts (step 8 of the sample is cut short)."""
    simulated = np.bincount(first_hours_full_size["step"], minlength=9)[1:8]
    real = np.bincount(fidelity.first_hours(REAL_SAMPLE)["step"], minlength=9)[1:8]
    assert np.all(np.abs(simulated / real - 1) < 0.10), (simulated, real)


def test_destinations_recur_across_blocks():
    """An account's name does not depend on which block (Spark task) generated the row: destinations seen in an
    earlier block come back in every later one (blocks of 5,000 rows span about 40 steps here, and most picks look
    back a step or two, so a few percent; names drawn per block would give none)."""
    blocks = list(simulate_batches(60_000, seed=5, block_rows=5_000))
    earlier: set[str] = set()
    returning = []
    for batch in blocks:
        dest = batch.column("nameDest").to_pylist()
        returning.append(np.mean([d in earlier for d in dest if d.startswith("C")]))
        earlier.update(dest)
    assert min(returning[1:]) > 0.02, returning


def test_recurring_mules_are_a_parameter():
    """``mule_reuse``: the share of thefts sent to a recurring mule; at 0 (PaySim) a mule almost never receives two."""

    def repeat_mules(reuse: float) -> float:
        table = simulate_table(400_000, seed=3, mule_reuse=reuse)
        fraud = table.column("isFraud").to_numpy() == 1
        transfer = table.column("type").to_numpy(zero_copy_only=False) == "TRANSFER"
        mules = table.column("nameDest").to_numpy(zero_copy_only=False)[fraud & transfer]
        _, index, counts = np.unique(mules, return_inverse=True, return_counts=True)
        return float((counts[index] > 1).mean())

    assert repeat_mules(0.0) < 0.05 and repeat_mules(0.6) > 0.4
    with pytest.raises(ParameterError, match="MULE_REUSE"):
        next(simulate_batches(1_000, 1, mule_reuse=1.5))


def test_volume_curve_has_nights_and_a_late_drop(cols):
    per_step = np.bincount(cols["step"], minlength=N_STEPS + 1)[1:]
    hours = (np.arange(1, N_STEPS + 1) % 24)[:400]
    day, night = per_step[:400][(hours >= 10) & (hours <= 20)].mean(), per_step[:400][hours <= 5].mean()
    assert day > 10 * night
    assert per_step[:400].sum() > 50 * per_step[410:].sum()


def test_drift_scenario_changes_only_the_later_steps():
    base = simulate_table(100_000, seed=11)
    drifted = simulate_table(100_000, seed=11, drift=DriftScenario(300, 2.0, "partial_drain"))
    step = base.column("step").to_numpy()
    early, late = step < 300, step >= 300
    a0, a1 = base.column("amount").to_numpy(), drifted.column("amount").to_numpy()
    fraud = base.column("isFraud").to_numpy() == 1
    assert np.array_equal(a0[early], a1[early])
    assert np.allclose(a1[late & ~fraud], 2 * a0[late & ~fraud], rtol=1e-6, atol=0.01)
    whole = np.abs(a1 - drifted.column("oldbalanceOrg").to_numpy()) < 0.01
    stolen = fraud & (base.column("type").to_numpy(zero_copy_only=False) == "TRANSFER")
    assert whole[late & stolen].mean() < 0.1 < 0.9 < whole[early & stolen].mean()  # the takeover no longer empties


def test_bad_parameters_are_named():
    with pytest.raises(ParameterError, match="DRIFT_FRAUD_PATTERN"):
        DriftScenario(10, 1.0, "sideways")
    with pytest.raises(ParameterError, match="DRIFT_START_STEP"):
        DriftScenario(900)
    with pytest.raises(ParameterError, match="ROWS"):
        next(simulate_batches(0, 1))


def test_parquet_row_groups_are_blocks(tmp_path):
    out = write_batches(simulate_batches(50_000, seed=1, block_rows=10_000), tmp_path / "x.parquet")
    assert pq.ParquetFile(out).metadata.num_row_groups >= 5


def test_the_documented_mule_recipe_runs(tmp_path):
    """docs/data.md's `simulate --mule-reuse 0.5` writes valid rows; a share outside 0..1 is refused by name."""
    import subprocess
    import sys
    from pathlib import Path

    def simulate(*extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lib", "simulate", "--rows", "200000", *extra],
                              cwd=Path(__file__).parents[2], capture_output=True, text=True, timeout=300)  # fmt: skip

    made = simulate("--out", str(tmp_path / "mules.parquet"), "--mule-reuse", "0.5")
    assert made.returncode == 0, made.stderr
    assert validate_file(str(tmp_path / "mules.parquet")).rows == 200_000
    refused = simulate("--out", str(tmp_path / "bad.parquet"), "--mule-reuse", "1.5")
    assert refused.returncode != 0 and "MULE_REUSE=1.5" in refused.stderr
    assert not (tmp_path / "bad.parquet").exists()
