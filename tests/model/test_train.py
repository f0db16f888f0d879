"""Training candidates: reproducible XGBoost, a Keras MLP fed by tf.data, native (non-pickle) model files."""

import json

import numpy as np
import pytest

from lib.errors import ParameterError
from lib.model import mlp, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def windows(processed):
    return {
        fs: {split: train.load_matrix(processed, split, fs) for split in ("train", "validation")}
        for fs in ("full", "realtime_safe")
    }


def fit(windows, feature_set="full", seed=7, **kw):
    return train.fit_xgboost(windows[feature_set]["train"], windows[feature_set]["validation"], seed=seed, **kw)


def test_load_matrix_reads_the_feature_set_in_spec_order(processed):
    safe = train.load_matrix(processed, "train", "realtime_safe")
    full = train.load_matrix(processed, "train", "full")
    assert safe.features == train.feature_names("realtime_safe") and safe.X.dtype == np.float32
    assert safe.X.shape[1] < full.X.shape[1] and "log_newbalance_orig" not in safe.features
    np.testing.assert_array_equal(safe.X[:, 0], full.X[:, 0])
    assert len(safe.y) == len(safe.step) == len(safe.amount) and safe.frauds > 0
    with pytest.raises(ParameterError, match="unknown split"):
        train.load_matrix(processed, "holdout")
    with pytest.raises(ParameterError, match="run 02_preprocess first"):
        train.load_matrix(processed / "nowhere", "train")


def test_same_seed_and_data_give_the_same_xgboost_metrics(windows):
    first, second = fit(windows, max_rounds=60), fit(windows, max_rounds=60)
    assert first.best_iteration == second.best_iteration
    assert first.validation_auprc == pytest.approx(second.validation_auprc, abs=1e-6)
    for name, values in first.history.items():
        np.testing.assert_allclose(values, second.history[name], atol=1e-6)
    X = windows["full"]["validation"].X
    np.testing.assert_allclose(first.predict(X), second.predict(X), atol=1e-6)


def test_xgboost_stops_early_on_validation_auprc_and_keeps_only_the_best_trees(windows):
    candidate = fit(windows, "realtime_safe", max_rounds=400, early_stopping=10)
    rounds = len(candidate.history["validation_aucpr"])
    assert rounds < 400 and rounds == candidate.best_iteration + 11  # stopped 10 rounds after the best
    assert candidate.model.num_boosted_rounds() == candidate.best_iteration + 1
    assert candidate.validation_auprc > 0.8
    assert candidate.params["scale_pos_weight"] == pytest.approx(
        np.sqrt((windows["full"]["train"].y == 0).sum() / windows["full"]["train"].frauds)
    )


def test_positive_weight_policies():
    window = (1, 100)  # one fraud in 100 transactions
    assert train.positive_weight("sqrt", *window) == pytest.approx(np.sqrt(99))
    assert train.positive_weight("balanced", *window) == 99 and train.positive_weight("none", *window) == 1
    assert train.positive_weight(2.5, *window) == 2.5 and train.positive_weight("3", *window) == 3
    for bad in ("heavy", -1, 0):
        with pytest.raises(ParameterError, match="POS_WEIGHT"):
            train.positive_weight(bad, *window)
    with pytest.raises(ParameterError, match="no frauds"):
        train.positive_weight("sqrt", 0, 10)


def test_tf_data_streams_every_row_once_per_epoch_shuffled_differently(processed, windows):
    dataset = mlp.parquet_dataset(processed, "train", "realtime_safe", batch_size=4096, seed=3, chunk_rows=20_000)
    epochs = [[(x.numpy(), y.numpy()) for x, y in dataset] for _ in range(2)]
    expected = windows["realtime_safe"]["train"]
    for batches in epochs:
        X = np.concatenate([x for x, _ in batches])
        assert X.shape == expected.X.shape and max(len(x) for x, _ in batches) == 4096
        assert np.concatenate([y for _, y in batches]).sum() == expected.frauds
        np.testing.assert_allclose(np.sort(X[:, 0]), np.sort(expected.X[:, 0]))
    assert not np.array_equal(epochs[0][0][0], epochs[1][0][0])  # another order in the second epoch


def test_mlp_trains_and_models_round_trip_in_native_formats(processed, windows, tmp_path):
    network = mlp.fit_mlp(
        processed, windows["full"]["train"], windows["full"]["validation"], seed=1, epochs=3, batch_size=1024
    )
    assert network.kind == "keras" and len(network.history["validation_auprc"]) <= 3
    assert 0 < network.validation_auprc <= 1 and network.model.layers[0].name == "normalise"
    booster = fit(windows, max_rounds=30)
    train.save_candidates([booster, network], tmp_path / "models", {booster.name: {"mlflow_run_id": "abc"}})
    files = sorted(p.name for p in (tmp_path / "models").rglob("*") if p.is_file())
    assert files == ["candidates.json", "model.keras", "model.ubj"]  # native formats, no pickle
    listing = json.loads((tmp_path / "models" / "candidates.json").read_text())
    assert listing[0]["mlflow_run_id"] == "abc" and listing[1]["feature_set"] == "full"
    X = windows["full"]["validation"].X
    for (loaded, _), original in zip(train.load_candidates(tmp_path / "models"), (booster, network), strict=True):
        np.testing.assert_allclose(loaded.predict(X), original.predict(X), atol=1e-6)
    with pytest.raises(ParameterError, match="run 04_train first"):
        train.load_candidates(tmp_path / "elsewhere")


def test_a_window_without_frauds_is_refused_with_the_fix(windows):
    train_window = windows["full"]["train"]
    quiet = train.SplitMatrix(
        "validation", "full", train_window.features, train_window.X[:100], np.zeros(100, np.int8),
        train_window.step[:100], train_window.amount[:100], train_window.flagged[:100],
    )  # fmt: skip
    with pytest.raises(
        ParameterError, match=r"validation window has 100 transactions and no frauds.*VALIDATION_END_STEP"
    ):
        train.fit_xgboost(train_window, quiet, seed=1)
