"""05's ablation: the entity features reach the models, and they help where the data carries memory.

Recurring mules (``mule_reuse=1``) with fraudsters who no longer empty the account (``partial_drain``
from the first step) and no after-the-fact balances (``realtime_safe``): a row alone says less, a
destination's confirmed frauds say more. On PaySim's own mechanism they add nothing (docs/training.md).
"""

import math

import pytest

from lib.data.acquire import write_batches
from lib.data.preprocess import run_job
from lib.data.processed import SplitWindows
from lib.data.simulate import DriftScenario, simulate_batches
from lib.data.spark import spark_session
from lib.model import ablation
from tests.conftest import REAL_SAMPLE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def recurring_mules(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mules")
    raw = simulate_batches(150_000, 42, DriftScenario(1, 1.0, "partial_drain"), mule_reuse=1.0)
    source = write_batches(raw, folder / "raw.parquet")
    spark = spark_session("local[2]", driver_memory="2g", app_name="tests")
    try:
        run_job(spark, source, folder / "processed", SplitWindows(250, 400))
    finally:
        spark.stop()
    return folder / "processed"


def test_memory_helps_where_mules_recur(recurring_mules):
    settings = ablation.Settings(
        seed=42, pos_weight="sqrt", max_rounds=500, learning_rate=0.1, max_depth=6, review_cost=50.0,
        target_fpr=0.001, alert_budget=100, label_delay=2,
    )  # fmt: skip
    table, models = ablation.ablation(recurring_mules, ("realtime_safe",), REAL_SAMPLE, settings)
    assert list(table.index) == [
        (w, v) for v in ("realtime_safe", "realtime_safe+entity") for w in ("test window", "real rows")
    ]
    assert table.loc[("real rows", "realtime_safe"), "rows"] == 19_999
    assert models["realtime_safe+entity"].num_features() == models["realtime_safe"].num_features() + len(
        ablation.ENTITY
    )
    auprc = table["auprc"]
    assert auprc["test window", "realtime_safe+entity"] > auprc["test window", "realtime_safe"]
    folds = ablation.prequential(recurring_mules, ("realtime_safe",), models, settings)
    assert len(folds) == 2 * ablation.FOLDS and not folds["auprc"].map(math.isnan).any()
    summary = ablation.prequential_summary(folds)
    assert summary.loc["realtime_safe+entity", "mean"] > summary.loc["realtime_safe", "mean"] + 0.02
    # each fold trains only on steps before its test window less the label delay: the first fold's test window
    # starts where validation starts (step 251)
    assert folds["test_steps"].iloc[0] == "251-322"
