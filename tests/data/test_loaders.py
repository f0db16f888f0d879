"""Loaders: local CSV/Parquet, fsspec URLs (the hf:// code path, pointed at local files), seeded sampling."""

import numpy as np
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
    assert from_csv["raw_sha256"] == from_parquet["raw_sha256"] == from_url["raw_sha256"]
    assert from_csv["rows"] == 19_999


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
    assert a["rows"] == 1000 and a["raw_sha256"] == b["raw_sha256"] != c["raw_sha256"]
    steps = pq.read_table(tmp_path / "a.parquet", columns=["step"]).column("step").to_numpy()
    assert (np.diff(steps) >= 0).all()  # input order kept
    full = acquire(str(REAL_SAMPLE), tmp_path / "full.parquet", rows=0, seed=5)
    assert full["rows"] == 19_999 and set(_amounts(tmp_path / "a.parquet")) <= set(_amounts(tmp_path / "full.parquet"))


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
