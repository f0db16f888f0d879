"""Processed splits for model tests, built without Spark by the NumPy evaluator of the same feature spec.

The layout is the Spark job's (``split=<name>/*.parquet`` with the kept columns and every feature);
``tests/data/test_features.py`` proves the two evaluators agree, so these tests need no JVM.
"""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lib import features
from lib.preprocess import KEPT_COLUMNS, SplitWindows
from lib.simulate import simulate_table


def write_processed(raw: pa.Table, folder, windows: SplitWindows | None = None) -> None:
    columns = {name: raw.column(name).to_numpy(zero_copy_only=False) for name in raw.column_names}
    matrix = features.compute(columns, "full")
    step = columns["step"]
    for split, (lo, hi) in (windows or SplitWindows(300, 350)).as_dict().items():
        rows = (step >= lo) & (step <= hi)
        table = {c: pa.array(columns[c][rows]) for c in KEPT_COLUMNS}
        for j, spec in enumerate(features.FEATURES):
            values = matrix[rows, j]
            table[spec.name] = pa.array(values.astype(np.int8) if spec.dtype == "int8" else values)
        (folder / f"split={split}").mkdir(parents=True)
        pq.write_table(pa.table(table), folder / f"split={split}" / "part-00000.parquet")


@pytest.fixture(scope="session")
def raw_table() -> pa.Table:
    return simulate_table(120_000, seed=11)


@pytest.fixture(scope="session")
def processed(tmp_path_factory, raw_table):
    folder = tmp_path_factory.mktemp("processed")
    write_processed(raw_table, folder)
    return folder
