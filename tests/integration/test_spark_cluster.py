"""01, 02 and 04 on a real Spark standalone cluster (2 workers) give what they give on one machine."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import average_precision_score

from lib.config import PROJECT_ROOT
from lib.data.entity import entity_features
from lib.data.preprocess import run_job
from lib.data.processed import SplitWindows
from lib.data.simulate import simulate_batches, simulate_table
from lib.data.simulate_spark import simulate_parquet
from lib.data.spark import spark_session
from lib.errors import ParameterError
from lib.hashing import content_sha256
from lib.local.daemons import free_port
from lib.model import batch, train, train_spark
from lib.pipeline.runner import declared_parameters, load_profile
from lib.serving import scoring
from tests.conftest import REAL_SAMPLE, bundle_info, copy_project, steps
from tests.integration.conftest import run_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def default_profile() -> tuple[int, int, SplitWindows, dict]:
    """ROWS and SEED of params/default.yaml, 02's split windows and 04's XGBoost parameters, as the notebooks declare them."""
    profile = load_profile("default", PROJECT_ROOT / "params")
    windows = declared_parameters(PROJECT_ROOT / "notebooks" / "02_preprocess.ipynb")
    trained = declared_parameters(PROJECT_ROOT / "notebooks" / "04_train.ipynb")

    def value(declared, name):
        return eval(declared[name]["default"])

    params = dict(
        seed=value(trained, "TRAIN_SEED"), pos_weight=value(trained, "POS_WEIGHT"),
        max_rounds=value(trained, "XGB_MAX_ROUNDS"), early_stopping=value(trained, "XGB_EARLY_STOPPING_ROUNDS"),
        learning_rate=value(trained, "XGB_LEARNING_RATE"), max_depth=value(trained, "XGB_MAX_DEPTH"),
    )  # fmt: skip
    split = SplitWindows(value(windows, "TRAIN_END_STEP"), value(windows, "VALIDATION_END_STEP"))
    return profile["ROWS"], profile["SEED"], split, params


@pytest.fixture
def cluster_spark(spark_cluster):
    spark = spark_session(spark_cluster.master_url, "1g", "tests-cluster", "1500m")
    yield spark
    spark.stop()


@pytest.fixture(scope="module")
def default_data(spark_cluster, tmp_path_factory):
    """The default profile's raw data simulated on the cluster, and its features computed there and on local[*]."""
    rows, seed, windows, _ = default_profile()
    folder = tmp_path_factory.mktemp("default-data")
    spark = spark_session(spark_cluster.master_url, "1g", "tests-cluster", "1500m")
    try:
        simulate_parquet(spark, rows, seed, None, folder / "raw.parquet")
        run_job(spark, folder / "raw.parquet", folder / "processed-cluster", windows)
    finally:
        spark.stop()
    local = spark_session("local[*]", "2g", "tests-local")
    try:
        run_job(local, folder / "raw.parquet", folder / "processed-local", windows)
    finally:
        local.stop()
    return folder


def test_simulator_on_spark_gives_the_numpy_rows(cluster_spark, default_data, tmp_path):
    """Many blocks (tasks) on 2 workers: the same rows, in the same order, as the one-process simulator
    with the same block size; and the default profile's data (production block size) too."""
    out = tmp_path / "raw.parquet"
    summary = simulate_parquet(cluster_spark, 150_000, 7, None, out, block_rows=20_000)
    assert summary.engine.startswith("spark (spark://") and "blocks" in summary.engine
    parts = sorted(p.name for p in out.iterdir())
    assert len(parts) >= 7 and parts[0] == "part-00000.c000.lz4raw.parquet"
    on_spark = pq.read_table(out)
    numpy = pa.Table.from_batches(list(simulate_batches(150_000, 7, block_rows=20_000)))
    assert on_spark.schema.equals(numpy.schema) and on_spark.equals(numpy)
    assert summary.rows == 150_000 and summary.frauds == int(numpy.column("isFraud").to_numpy().sum())
    rows, seed, *_ = default_profile()
    assert pq.read_table(default_data / "raw.parquet").equals(simulate_table(rows, seed))


def test_preprocess_on_the_cluster_gives_the_local_bytes(default_data):
    assert content_sha256(default_data / "processed-local") == content_sha256(default_data / "processed-cluster")


def test_entity_features_on_the_cluster_are_the_local_ones(spark_cluster, default_data):
    """Per-account windows over the default data: the same values, bit for bit, on 2 workers as on local[*]."""
    raw, keys = str(default_data / "raw.parquet"), ("step", "nameOrig", "nameDest", "amount")
    computed = {}
    for name, master in (("cluster", spark_cluster.master_url), ("local", "local[*]")):
        spark = spark_session(master, "1g", f"tests-{name}", "1500m")
        try:
            computed[name] = entity_features(spark.read.parquet(raw), 2, keys=keys).toPandas()
        finally:
            spark.stop()
    here, on_cluster = computed["local"], computed["cluster"]
    assert len(here) == len(on_cluster) > 0 and here["dest_count_168"].sum() > 0

    def ordered(frame):
        return frame.sort_values(list(frame.columns)).reset_index(drop=True)

    assert ordered(here).equals(ordered(on_cluster))


def test_xgboost_on_spark_matches_the_local_trainer_and_its_bundle_scores_real_rows(
    cluster_spark, default_data, tmp_path
):
    processed = default_data / "processed-cluster"
    *_, params = default_profile()
    on_spark = train_spark.fit_xgboost(cluster_spark, processed, "full", **params)
    windows = {s: train.load_matrix(processed, s) for s in ("train", "validation")}
    local = train.fit_xgboost(windows["train"], windows["validation"], **params)
    assert on_spark.params["num_workers"] == 2 and on_spark.params["trainer"] == "spark"
    # the AUPRC Spark computed is scikit-learn's, on the trees it kept
    driver_side = average_precision_score(
        windows["validation"].y, on_spark.model.inplace_predict(windows["validation"].X)
    )
    assert on_spark.validation_auprc == pytest.approx(driver_side, abs=1e-9)
    assert abs(on_spark.validation_auprc - local.validation_auprc) <= 0.002, (
        on_spark.validation_auprc,
        local.validation_auprc,
    )
    assert on_spark.best_iteration >= 9, "tens of trees, not one"
    assert {"validation_logloss", "validation_aucpr"} <= set(on_spark.history)
    bundle = scoring.export_bundle(tmp_path / "bundle", on_spark.model, bundle_info(candidate=on_spark.name))
    scored = batch.score_file(scoring.Scorer.from_folder(bundle), str(REAL_SAMPLE), tmp_path / "scores.csv")
    assert scored["rows"] == 19_999 and scored["frauds"] == 81 and scored["auprc"] > 0.5


@pytest.mark.parametrize(
    ("master", "message"),
    [
        (f"spark://127.0.0.1:{free_port()}", "no Spark master accepts connections there"),
        ("spark://nohost", "is not HOST:PORT"),
        ("sprak://127.0.0.1:7077", "is not a Spark master URL"),
        ("local[two]", "is not a Spark master URL"),
    ],
)
def test_a_bad_or_unreachable_master_is_refused_with_its_name(master, message):
    with pytest.raises(ParameterError, match=message) as refused:
        spark_session(master, "1g", "tests-bad-master")
    assert master in str(refused.value)


def test_the_pipeline_runs_01_to_05_on_the_cluster(spark_cluster, tmp_path):
    """The README's run command with SPARK_MASTER on the cluster: 01 simulates there, 02 computes the
    features there, 04 trains XGBoost there (TRAINER=spark); 05 gates and exports as always."""
    project = copy_project(tmp_path / "project")
    run_pipeline(
        project, "--until", "05_evaluate", "-p", "ROWS=60000", "-p", f"SPARK_MASTER={spark_cluster.master_url}",
        "-p", "TRAINER=spark", "-p", "MLP_EPOCHS=1", "-p", "SPARK_DRIVER_MEMORY=1g",
    )  # fmt: skip

    outputs = steps(project / "runs" / "latest")
    assert outputs["01_acquire"].engine.startswith(f"spark ({spark_cluster.master_url}")
    assert outputs["02_preprocess"].spark_master == spark_cluster.master_url
    assert outputs["04_train"].trainer == "spark" and outputs["05_evaluate"].champion_version == "1"
    assert (project / "data" / "raw" / "transactions.parquet").is_dir()  # written by the executors
    bundle = scoring.Scorer.from_folder(project / "data" / "bundle")
    assert bundle.info.candidate.startswith("xgboost_") and np.isfinite(outputs["05_evaluate"].champion.auprc)
