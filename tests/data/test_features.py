"""One feature spec, two evaluators: Spark in batch and NumPy in the scoring core give the same matrix."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from lib import features
from lib.data.acquire import write_batches
from lib.errors import DataValidationError, ParameterError
from lib.data.entity import entity_features
from lib.data.preprocess import LABEL_DELAY_STEPS, _session_conf, even_split_bytes, feature_columns, run_job
from lib.data.spark import spark_session
from lib.data.processed import SPLITS, SplitWindows, load_split, read_manifest
from lib.schema import RAW_SCHEMA
from lib.data.simulate import simulate_batches
from tests.conftest import REAL_SAMPLE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spark():
    session = spark_session("local[2]", driver_memory="2g", app_name="tests")
    yield session
    session.stop()


@pytest.fixture(scope="module")
def raw_rows(tmp_path_factory) -> pa.Table:
    """The real sample, simulated rows, and edge cases (zero and huge balances, merchants, step 743)."""
    real = pacsv.read_csv(
        REAL_SAMPLE, convert_options=pacsv.ConvertOptions(column_types=dict(zip(RAW_SCHEMA.names, RAW_SCHEMA.types)))
    )
    simulated = pa.Table.from_batches(list(simulate_batches(30_000, seed=2)))
    edge = pa.Table.from_pylist(
        [
            dict(step=743, type="TRANSFER", amount=92445516.64, nameOrig="C1", oldbalanceOrg=0.0, newbalanceOrig=0.0,
                 nameDest="C2", oldbalanceDest=0.0, newbalanceDest=0.0, isFraud=1, isFlaggedFraud=1),
            dict(step=1, type="PAYMENT", amount=0.0, nameOrig="C3", oldbalanceOrg=0.004, newbalanceOrig=0.0,
                 nameDest="M4", oldbalanceDest=0.0, newbalanceDest=0.0, isFraud=0, isFlaggedFraud=0),
            dict(step=24, type="CASH_IN", amount=1e-2, nameOrig="C5", oldbalanceOrg=1e9, newbalanceOrig=1e9 + 1e-2,
                 nameDest="C6", oldbalanceDest=3.3, newbalanceDest=0.0, isFraud=0, isFlaggedFraud=0),
        ],
        schema=RAW_SCHEMA,
    )  # fmt: skip
    return pa.concat_tables([real.cast(RAW_SCHEMA), simulated, edge])


def numpy_matrix(table: pa.Table, feature_set: str = "full") -> np.ndarray:
    columns = {c: table.column(c).to_numpy(zero_copy_only=False) for c in features.INPUT_COLUMNS}
    return features.compute(columns, feature_set)


def spark_matrix(spark, table: pa.Table) -> np.ndarray:
    """The job's own feature expressions on ``table``, rows in input order."""
    frame = spark.createDataFrame(table.append_column("row_id", pa.array(np.arange(table.num_rows))).to_pandas())
    result = frame.select("row_id", *feature_columns(frame)).orderBy("row_id").toPandas()
    return result.drop(columns="row_id")[list(features.feature_names("full"))].to_numpy(dtype=np.float64)


def test_spark_and_numpy_features_are_identical(spark, raw_rows):
    batch, spark_side = numpy_matrix(raw_rows), spark_matrix(spark, raw_rows)
    assert batch.shape == spark_side.shape == (raw_rows.num_rows, len(features.FEATURES))
    np.testing.assert_allclose(spark_side, batch, rtol=0, atol=1e-9)
    # the flags really vary on this data (a constant column would prove little)
    assert all(len(np.unique(batch[:, j])) > 1 for j in range(batch.shape[1]))


def test_one_transaction_and_records_path(raw_rows):
    records = raw_rows.slice(0, 50).to_pylist()
    one_by_one = np.vstack([features.compute(features.columns_from_records([r])) for r in records])
    together = features.compute(features.columns_from_records(records))
    np.testing.assert_array_equal(one_by_one, together)
    np.testing.assert_array_equal(together, numpy_matrix(raw_rows.slice(0, 50)))


def test_realtime_safe_drops_after_the_fact_features(raw_rows):
    safe = features.feature_names("realtime_safe")
    assert not any("newbalance" in n or n in ("balance_error_orig", "balance_error_dest", "orig_zero_after",
                                              "dest_unchanged_zero") for n in safe)  # fmt: skip
    full = numpy_matrix(raw_rows)
    index = [features.feature_names("full").index(n) for n in safe]
    np.testing.assert_array_equal(numpy_matrix(raw_rows, "realtime_safe"), full[:, index])
    for f in features.FEATURES:  # no feature that reads a post-transaction balance escapes the flag
        probe = {c: np.zeros(1) if c != "type" else np.array(["CASH_IN"], dtype=object) for c in features.INPUT_COLUMNS}
        probe["nameDest"] = np.array(["C1"], dtype=object)
        base = f.compute(features.NumpyBackend(probe))
        for post in ("newbalanceOrig", "newbalanceDest"):
            moved = dict(probe, **{post: np.array([123.0])})
            if not np.array_equal(f.compute(features.NumpyBackend(moved)), base):
                assert f.after_the_fact, f"{f.name} reads {post} but is not marked after_the_fact"


def test_job_output_matches_numpy_and_splits_respect_time(spark, raw_rows, tmp_path):
    source = write_batches(raw_rows.to_batches(), tmp_path / "raw.parquet")
    windows = SplitWindows(train_end=5, validation_end=300)
    manifest = run_job(spark, source, tmp_path / "processed", windows)
    names = list(features.feature_names("full"))
    parts = {s: load_split(tmp_path / "processed", s) for s in SPLITS}
    steps = {s: parts[s].column("step").to_numpy() for s in SPLITS}
    assert steps["train"].max() <= 5 < steps["validation"].min()
    assert steps["validation"].max() <= 300 < steps["test"].min()
    assert sum(len(v) for v in steps.values()) == raw_rows.num_rows == manifest["rows"]
    for s in SPLITS:
        assert manifest["splits"][s]["rows"] == len(steps[s])
        assert manifest["splits"][s]["frauds"] == int(parts[s].column("isFraud").to_numpy().sum())
    # the written matrix equals the NumPy one, as multisets of rows (Spark may reorder rows)
    np.testing.assert_allclose(
        written_matrix(tmp_path / "processed"), sorted_rows(numpy_matrix(raw_rows)), rtol=0, atol=1e-9
    )
    on_disk = read_manifest(tmp_path / "processed")
    assert on_disk["feature_spec_version"] == features.FEATURE_SPEC_VERSION and on_disk["windows"]["test"] == [301, 743]
    assert [f["name"] for f in on_disk["features"]] == names
    # after the shuffles of the account windows, every row is back in the input's order, with its accounts' history
    raw_steps, raw_amounts = raw_rows.column("step").to_numpy(), raw_rows.column("amount").to_numpy()
    for split, (first, last) in on_disk["windows"].items():
        in_window = (raw_steps >= first) & (raw_steps <= last)
        assert np.array_equal(parts[split].column("amount").to_numpy(), raw_amounts[in_window]), split
    entity = [e["name"] for e in on_disk["entity_features"]]
    assert entity == [e.name for e in features.ENTITY_FEATURES] and on_disk["label_delay_steps"] == LABEL_DELAY_STEPS
    frame = spark.createDataFrame(raw_rows.to_pandas())
    expected = entity_features(frame, LABEL_DELAY_STEPS, keys=("step", "amount", "nameDest")).drop("nameDest").toPandas()
    written = pa.concat_tables([parts[split].select(["step", "amount", *entity]) for split in SPLITS]).to_pandas()
    pd.testing.assert_frame_equal(
        written.sort_values(list(written.columns), ignore_index=True),
        expected.sort_values(list(written.columns), ignore_index=True), check_dtype=False,
    )  # fmt: skip


def sorted_rows(matrix: np.ndarray) -> np.ndarray:
    return matrix[np.lexsort(matrix.T[::-1])]


def written_matrix(processed) -> np.ndarray:
    """The job's feature matrix over all splits, rows sorted (Spark may reorder rows)."""
    names = features.feature_names("full")
    parts = [load_split(processed, s) for s in SPLITS]
    return sorted_rows(
        np.vstack([np.column_stack([p.column(n).to_numpy().astype(np.float64) for n in names]) for p in parts])
    )


def test_csv_is_read_in_even_splits_and_gives_the_same_features(spark, raw_rows, tmp_path):
    """A CSV is cut into a multiple of the cores' count of equal splits, not 128 MB ones and a stub."""
    csv = tmp_path / "raw.csv"
    pacsv.write_csv(raw_rows, csv)
    size, cores = csv.stat().st_size, spark.sparkContext.defaultParallelism
    with _session_conf(spark, "spark.sql.files.maxPartitionBytes", size // 5):  # Spark alone: 6 splits, 1 a stub
        split = even_split_bytes(spark, str(csv))
        assert split is not None and -(-size // split) % cores == 0 and size / split > 5
        with _session_conf(spark, "spark.sql.files.maxPartitionBytes", split):
            blocks = spark.read.text(str(csv)).select(F.input_file_block_start(), F.input_file_block_length())
            lengths = sorted(length for _, length in blocks.distinct().collect())
        assert len(lengths) % cores == 0 and sum(lengths) == size and lengths[-1] - lengths[0] < len(lengths)
        run_job(spark, csv, tmp_path / "from_csv", SplitWindows(300, 350))
    assert spark.conf.get("spark.sql.files.maxPartitionBytes", None) is None  # the session is as it was
    run_job(
        spark,
        write_batches(raw_rows.to_batches(), tmp_path / "raw.parquet"),
        tmp_path / "from_parquet",
        SplitWindows(300, 350),
    )
    np.testing.assert_array_equal(written_matrix(tmp_path / "from_csv"), written_matrix(tmp_path / "from_parquet"))
    assert even_split_bytes(spark, str(tmp_path / "raw.parquet")) is None


def test_bad_input_is_named_and_nothing_is_written(spark, raw_rows, tmp_path):
    out = tmp_path / "processed"
    missing = tmp_path / "missing.parquet"
    pq.write_table(raw_rows.drop_columns(["oldbalanceDest"]), missing)
    with pytest.raises(DataValidationError, match="oldbalanceDest"):
        run_job(spark, missing, out, SplitWindows(300, 350))
    wrong = tmp_path / "wrong.parquet"
    pq.write_table(raw_rows.set_column(2, "amount", pa.array(["x"] * raw_rows.num_rows)), wrong)
    with pytest.raises(DataValidationError, match="`amount` is string"):
        run_job(spark, wrong, out, SplitWindows(300, 350))
    bad_csv = tmp_path / "bad.csv"
    lines = (REAL_SAMPLE.read_text().splitlines())[:50]
    fields = lines[20].split(",")
    lines[20] = ",".join([*fields[:2], "abc", *fields[3:]])
    bad_csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError, match="bad.csv"):
        run_job(spark, bad_csv, out, SplitWindows(300, 350))
    lines[20] = ",".join([*fields[:2], "", *fields[3:]])  # an empty field parses as null: refused, row named
    bad_csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError, match=f"empty value in column.s. `amount` of the row .*{fields[3]}"):
        run_job(spark, bad_csv, out, SplitWindows(300, 350))
    assert not out.exists() and [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_split_windows_must_be_ordered():
    with pytest.raises(ParameterError, match="TRAIN_END_STEP"):
        SplitWindows(400, 300)
    with pytest.raises(ParameterError):
        SplitWindows(0, 10)
    assert json.dumps(SplitWindows(1, 2).as_dict())


def test_same_input_same_processed_bytes_in_any_checkout(spark, raw_rows, tmp_path, monkeypatch):
    """Two checkouts of the project in different folders, the same raw data: the same processed bytes."""
    import shutil

    from lib import config
    from lib.hashing import content_sha256

    source = write_batches(raw_rows.to_batches(), tmp_path / "raw.parquet")
    for checkout in ("a", "b-elsewhere"):
        root = (tmp_path / checkout).resolve()
        (root / "data").mkdir(parents=True)
        shutil.copy(source, root / "data" / "raw.parquet")
        monkeypatch.setattr(config, "PROJECT_ROOT", root)
        manifest = run_job(spark, root / "data" / "raw.parquet", root / "processed", SplitWindows(300, 350))
        assert manifest["input"] == "data/raw.parquet"
        assert config.project_relative("s3://bucket/data/raw.csv") == "s3://bucket/data/raw.csv"
    a, b = tmp_path / "a" / "processed", tmp_path / "b-elsewhere" / "processed"
    assert content_sha256(a) == content_sha256(b)
    assert sorted(p.relative_to(a) for p in a.rglob("*")) == sorted(p.relative_to(b) for p in b.rglob("*"))
    # across JVMs too: a column chunk listing several encodings lists them in a per-JVM hash order
    for part in a.rglob("*.parquet"):
        meta = pq.ParquetFile(part).metadata
        for g in range(meta.num_row_groups):
            chunks = [meta.row_group(g).column(i) for i in range(meta.num_columns)]
            assert all(len(c.encodings) == 1 for c in chunks), [(c.path_in_schema, c.encodings) for c in chunks]
