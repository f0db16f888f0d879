"""Loaders: local CSV/Parquet, fsspec URLs (the hf:// code path, pointed at local files), seeded sampling."""

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from lib.data.acquire import acquire, is_url, read_batches, sample_rows
from lib.errors import SourceError
from lib.data.simulate import DriftScenario
from tests.conftest import REAL_SAMPLE


def _amounts(path) -> np.ndarray:
    return pq.read_table(path, columns=["amount"]).column("amount").to_numpy()


def test_csv_parquet_and_url_give_the_same_rows(tmp_path):
    from_csv = acquire(str(REAL_SAMPLE), tmp_path / "a.parquet", rows=0, seed=1)
    pq.write_table(pacsv.read_csv(REAL_SAMPLE), tmp_path / "sample.parquet")
    from_parquet = acquire(str(tmp_path / "sample.parquet"), tmp_path / "b.parquet", rows=0, seed=1)
    url = REAL_SAMPLE.as_uri()  # file:// goes through fsspec like hf:// and s3:// do
    assert is_url(url)
    from_url = acquire(url, tmp_path / "c.parquet", rows=0, seed=1)
    assert from_csv.raw_sha256 == from_parquet.raw_sha256 == from_url.raw_sha256
    assert from_csv.rows == 19_999


def test_unreachable_url_and_missing_file_are_named(tmp_path):
    with pytest.raises(SourceError, match="nope.csv: not found"):
        list(read_batches(str(tmp_path / "nope.csv")))
    with pytest.raises(SourceError, match="unknown file type"):
        read_batches("transactions.xlsx")
    with pytest.raises(SourceError, match="memory://missing/x.csv"):
        list(read_batches("memory://missing/x.csv"))


def test_seeded_sample_is_uniform_ordered_and_reproducible(tmp_path):
    a = acquire(str(REAL_SAMPLE), tmp_path / "a.parquet", rows=0, seed=5, sample_size=1000)
    b = acquire(str(REAL_SAMPLE), tmp_path / "b.parquet", rows=0, seed=5, sample_size=1000)
    c = acquire(str(REAL_SAMPLE), tmp_path / "c.parquet", rows=0, seed=6, sample_size=1000)
    assert a.rows == 1000 and a.raw_sha256 == b.raw_sha256 != c.raw_sha256
    steps = pq.read_table(tmp_path / "a.parquet", columns=["step"]).column("step").to_numpy()
    assert (np.diff(steps) >= 0).all()  # input order kept
    full = acquire(str(REAL_SAMPLE), tmp_path / "full.parquet", rows=0, seed=5)
    assert full.rows == 19_999 and set(_amounts(tmp_path / "a.parquet")) <= set(_amounts(tmp_path / "full.parquet"))


def test_sampling_across_batches_matches_one_batch():
    batches = list(read_batches(str(REAL_SAMPLE)))
    one = list(sample_rows(iter(batches), 500, seed=9))
    small = pacsv.read_csv(REAL_SAMPLE).to_batches(max_chunksize=777)
    many = list(sample_rows(iter(small), 500, seed=9))
    assert sum(b.num_rows for b in many) == 500 == sum(b.num_rows for b in one)
    # uniform over the file, not its first rows
    steps = np.concatenate([b.column("step").to_numpy() for b in many])
    assert steps.max() >= 7


def test_drift_only_for_the_simulator(tmp_path):
    with pytest.raises(SourceError, match="DRIFT_START_STEP=0"):
        acquire(str(REAL_SAMPLE), tmp_path / "x.parquet", rows=0, seed=1, drift=DriftScenario(5, 2.0))


def test_class_sample_takes_the_seeded_rows_of_each_class_across_files(tmp_path):
    from lib.data.processed import class_sample

    rng = np.random.default_rng(3)
    labels = (rng.random(25_000) < 0.01).astype("int8")
    folder = tmp_path / "split=train"
    folder.mkdir()
    for i, (lo, hi) in enumerate([(0, 7_000), (7_000, 7_001), (7_001, 25_000)]):  # rows cross file boundaries
        pq.write_table(pa.table({"row": np.arange(lo, hi), "isFraud": labels[lo:hi]}), folder / f"part-{i}.parquet")
    sample = class_sample(tmp_path, "train", rows_per_class=1_000, seed=4)
    # the reference: the same seeded ranks, taken from the whole label column at once
    expected_rng = np.random.default_rng(4)
    genuine = np.flatnonzero(labels == 0)
    expected = np.sort(np.concatenate([expected_rng.choice(genuine, 1_000, replace=False), np.flatnonzero(labels)]))
    assert (sample["row"].to_numpy() == expected).all()
    assert sample["isFraud"].sum() == labels.sum() < 1_000  # every fraud while there are fewer
    few = class_sample(tmp_path, "train", rows_per_class=50, seed=4)
    assert few["isFraud"].value_counts().to_dict() == {0: 50, 1: 50}


def test_the_fidelity_sample_is_bounded_and_spans_the_month(tmp_path):
    from lib.data import fidelity
    from lib.data.simulate import simulate_table

    table = simulate_table(60_000, seed=2)
    pq.write_table(table, tmp_path / "raw.parquet", row_group_size=7_000)  # row groups larger than a share
    sample = fidelity.load_columns(tmp_path / "raw.parquet", max_rows=10_000)
    assert 9_000 <= len(sample["step"]) <= 10_000
    last_group_starts = table.column("step")[56_000].as_py()
    assert sample["step"].min() == 1 and sample["step"].max() >= last_group_starts  # the first and last row group
    everything = fidelity.load_columns(tmp_path / "raw.parquet", max_rows=100_000)
    assert len(everything["step"]) == 60_000
