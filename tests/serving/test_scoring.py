"""The scoring core and ``python -m lib score``: one bundle, the shared feature spec, the same numbers as training."""

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from lib.config import PROJECT_ROOT
from lib.model import train
from lib.serving import scoring
from tests.conftest import REAL_SAMPLE
from tests.conftest import bundle_info as info

pytestmark = pytest.mark.slow


def test_scores_from_raw_rows_equal_the_training_path(processed, raw_table, bundle):
    """Raw transactions through the scoring core give the probabilities the model gave on Spark-style features."""
    scorer = scoring.Scorer.from_folder(bundle)
    test = train.load_matrix(processed, "test")
    rows = raw_table.column("step").to_numpy() > 350
    raw = raw_table.filter(pa.array(rows))
    columns = {name: raw.column(name).to_numpy(zero_copy_only=False) for name in raw.column_names}
    probability, decision = scorer.score_columns(columns)
    np.testing.assert_allclose(probability, scorer.booster.inplace_predict(test.X), atol=1e-7)
    np.testing.assert_array_equal(decision, probability >= 0.2)
    records = raw.slice(0, 50).to_pylist()
    for i, record in enumerate(records):
        record["transaction_id"] = f"t{i}"
    results = scorer.score_records(records)
    assert [r.transaction_id for r in results] == [f"t{i}" for i in range(50)]
    np.testing.assert_allclose([r.fraud_probability for r in results], probability[:50], atol=1e-7)
    assert {r.model_version for r in results} == {"3"} and results[0].threshold == 0.2


def test_bundle_is_native_files_and_refuses_another_feature_spec(bundle, tmp_path):
    booster = scoring.load_bundle(bundle)[1]
    assert sorted(p.name for p in bundle.iterdir()) == ["bundle.json", "model.so", "model.ubj"]
    assert json.loads((bundle / "bundle.json").read_text())["created"]
    other = scoring.export_bundle(tmp_path / "old", booster, info(feature_spec_version="fs-0000000000"))
    with pytest.raises(scoring.BundleError, match=r"fs-0000000000.*retrain"):
        scoring.load_bundle(other)
    with pytest.raises(scoring.BundleError, match="not a serving bundle"):
        scoring.load_bundle(tmp_path)
    with pytest.raises(scoring.BundleError, match="not the 'realtime_safe' set"):
        scoring.export_bundle(tmp_path / "bad", booster, info(feature_set="realtime_safe"))
    assert not (tmp_path / "bad").exists()


def test_one_transaction_through_the_compiled_trees_equals_the_booster(bundle, raw_table):
    """100,000 rows (the real sample and simulated ones) one at a time and as one batch: the booster's
    probabilities and decisions, bit for bit (so a transaction gets the same answer alone and in a batch)."""
    from lib import features

    scorer = scoring.Scorer.from_folder(bundle)
    assert scorer.predictor == "tl2cgen"
    real = pacsv.read_csv(REAL_SAMPLE)
    columns = features.INPUT_COLUMNS
    records = [
        *real.select(columns).to_pylist(),
        *raw_table.select(columns).slice(0, 100_000 - real.num_rows).to_pylist(),
    ]
    assert len(records) == 100_000
    matrix = features.compute(features.columns_from_records(records))
    rows = np.array([features.compute_one(r) for r in records])
    np.testing.assert_array_equal(rows, matrix)  # the scalar path computes the batch path's features exactly
    expected = scorer.booster.inplace_predict(matrix.astype(np.float32)).astype(np.float64)
    results = [scorer.score_records([r])[0] for r in records]
    assert [r.fraud_probability for r in results] == expected.tolist()
    assert [r.is_fraud for r in results] == (expected >= scorer.info.threshold).tolist()
    assert {type(r.fraud_probability) for r in results} == {float}
    assert scorer.compiled.batches
    probability, decision = scorer.score_features(matrix)
    assert probability.tolist() == expected.tolist()
    assert decision.tolist() == (expected >= scorer.info.threshold).tolist()
    with pytest.raises(ValueError, match="rows of 21 features"):
        scorer.compiled.probabilities(matrix[:, :20])


def test_the_compiled_library_is_checked_and_optional(bundle, tmp_path):
    """An altered model.so is refused by name; one built for another machine, or none, serves with the booster."""
    import shutil

    record = pacsv.read_csv(REAL_SAMPLE).slice(0, 1).to_pylist()[0]
    expected = scoring.Scorer.from_folder(bundle).score_records([record])[0].fraud_probability
    altered = shutil.copytree(bundle, tmp_path / "altered")
    (altered / "model.so").write_bytes((altered / "model.so").read_bytes() + b"\0")
    with pytest.raises(scoring.BundleError, match=r"model.so: missing, or its SHA-256"):
        scoring.Scorer.from_folder(altered)
    elsewhere = shutil.copytree(bundle, tmp_path / "elsewhere")
    meta = json.loads((elsewhere / "bundle.json").read_text())
    (elsewhere / "bundle.json").write_text(
        json.dumps({**meta, "compiled": {**meta["compiled"], "machine": "darwin-arm64"}})
    )
    plain = scoring.export_bundle(
        tmp_path / "plain", scoring.load_bundle(bundle)[1], info(threshold=0.2), compile=False
    )
    assert json.loads((plain / "bundle.json").read_text())["compiled"] is None
    for folder in (elsewhere, plain):
        scorer = scoring.Scorer.from_folder(folder)
        assert scorer.predictor == "xgboost"
        assert scorer.score_records([record])[0].fraud_probability == expected


def test_a_library_that_is_not_the_booster_bit_for_bit_is_not_kept(bundle, tmp_path, monkeypatch, caplog):
    """TL2cgen's own code (leaves as double literals, base score last) misses the booster in the last bit:
    export compares on probe rows, says so and serves with the booster."""
    from lib.serving import compiled

    monkeypatch.setattr(compiled, "_as_xgboost_sums", lambda source, base_margin: source)
    folder = scoring.export_bundle(tmp_path / "b", scoring.load_bundle(bundle)[1], info(threshold=0.2))
    assert json.loads((folder / "bundle.json").read_text())["compiled"] is None
    assert not (folder / "model.so").exists()
    assert "one row at a time, it differs from the booster on" in caplog.text
    assert scoring.Scorer.from_folder(folder).predictor == "xgboost"


def test_a_library_without_the_batch_loop_leaves_batches_to_the_booster(bundle):
    """A model.so exported before ``predict_rows`` (no such symbol) still scores single transactions with the
    compiled trees; batches go to the booster, with the same probabilities."""
    rows = pacsv.read_csv(REAL_SAMPLE).slice(0, 500).to_pylist()
    expected = [r.fraud_probability for r in scoring.Scorer.from_folder(bundle).score_records(rows)]
    older = scoring.Scorer.from_folder(bundle)
    older.compiled._rows, older.compiled.batches = None, False  # what CompiledModel finds in such a library
    older.compiled.probabilities = None  # so a batch that still reached it would fail
    assert older.predictor == "tl2cgen"
    assert [r.fraud_probability for r in older.score_records(rows)] == expected
    assert older.score_records(rows[:1])[0].fraud_probability == expected[0]


def score_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "lib", "score", *map(str, args)], cwd=PROJECT_ROOT, capture_output=True, text=True
    )


def test_score_cli_on_the_real_sample(bundle, tmp_path):
    done = score_cli("--input", REAL_SAMPLE, "--output", tmp_path / "scores.csv", "--model", bundle)
    assert done.returncode == 0, done.stderr
    scores = pacsv.read_csv(tmp_path / "scores.csv")
    sample = pacsv.read_csv(REAL_SAMPLE)
    assert scores.num_rows == sample.num_rows
    assert scores.column_names == [
        "step",
        "type",
        "amount",
        "nameOrig",
        "nameDest",
        "fraud_probability",
        "is_fraud",
        "isFraud",
    ]
    assert scores.column("nameOrig").to_pylist() == sample.column("nameOrig").to_pylist()
    assert "AUPRC" in done.stdout and f"{sample.num_rows:,} rows" in done.stdout


def test_score_cli_without_labels_and_with_bad_input(bundle, tmp_path):
    unlabeled = pacsv.read_csv(REAL_SAMPLE).drop_columns(["isFraud", "isFlaggedFraud"])
    pacsv.write_csv(unlabeled, tmp_path / "new.csv")
    done = score_cli("--input", tmp_path / "new.csv", "--output", tmp_path / "out.csv", "--model", bundle)
    assert done.returncode == 0, done.stderr
    assert "isFraud" not in pacsv.read_csv(tmp_path / "out.csv").column_names and "AUPRC" not in done.stdout

    pacsv.write_csv(unlabeled.drop_columns(["oldbalanceDest"]), tmp_path / "short.csv")
    done = score_cli("--input", tmp_path / "short.csv", "--output", tmp_path / "x.csv", "--model", bundle)
    assert done.returncode == 1 and "missing column(s) `oldbalanceDest`" in done.stderr
    assert not (tmp_path / "x.csv").exists()

    done = score_cli("--input", tmp_path / "new.csv", "--output", tmp_path / "x.csv", "--model", tmp_path)
    assert done.returncode == 1 and "not a serving bundle" in done.stderr


def test_score_cli_finds_the_champion_in_the_registry(tmp_path):
    env_uri = f"sqlite:///{tmp_path / 'empty.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "lib", "score", "--input", str(REAL_SAMPLE), "--output", str(tmp_path / "s.csv")],
        cwd=PROJECT_ROOT, capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "MLFLOW_TRACKING_URI": env_uri, "FRAUD_BUNDLE_STORE": str(tmp_path / "none")},
    )  # fmt: skip
    assert done.returncode == 1 and "alias 'champion'" in done.stderr and "05_evaluate" in done.stderr


@pytest.mark.parametrize("base_score", [0.3, 0.5])
def test_trees_compile_bit_for_bit_whatever_the_base_score(tmp_path, base_score):
    """XGBoost adds its base margin computed in float32, TL2cgen's literal was computed in double: for a base
    score of 0.3 they differ in the last bit and so did some probabilities, and the bundle lost its compiled
    trees; a leaf of exactly -0 was written ``-0f``, which gcc refuses. Both compile now, equal to the booster."""
    import xgboost as xgb

    from lib.serving import compiled

    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 21)).astype(np.float32)
    y = (X[:, 0] + X[:, 3] * X[:, 5] > 0.5).astype(int)
    params = {"objective": "binary:logistic", "max_depth": 6, "base_score": base_score}
    booster = xgb.train(params, xgb.DMatrix(X, label=y), 50)
    described = compiled.compile_booster(booster, tmp_path)
    assert described is not None and described.equal_to_booster_on == 4096
    library = compiled.CompiledModel(tmp_path / "model.so", 21)
    assert np.array_equal(library.probabilities(X[:1000]), booster.inplace_predict(X[:1000]))
