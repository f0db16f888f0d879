"""The simulator: seeded and byte-reproducible, PaySim's semantics, a drift scenario that really drifts."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from lib.data import fidelity
from lib.data.acquire import validate_file, write_batches
from lib.hashing import file_sha256
from lib.errors import ParameterError
from lib.schema import RAW_SCHEMA, TRANSACTION_TYPES
from lib.data.simulate import FRAUD_CAP, N_STEPS, PUBLISHED_TYPE_COUNTS, DriftScenario, simulate_batches, simulate_table
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
