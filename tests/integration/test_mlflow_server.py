"""04_train + 05_evaluate logging into a real ``mlflow server`` backed by PostgreSQL, as a team would run it."""

import json
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from lib.config import PROJECT_ROOT
from tests.conftest import REAL_SAMPLE, copy_project, steps
from tests.integration.conftest import run_pipeline

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MODEL = "paysim-fraud-detector"


@pytest.fixture(scope="module")
def trained(mlflow_server, tmp_path_factory):
    home = copy_project(tmp_path_factory.mktemp("server-run"))
    args = [f"--only={nb}" for nb in ("01_acquire", "02_preprocess", "04_train", "05_evaluate")]
    env = {"MLFLOW_TRACKING_URI": mlflow_server}
    run_pipeline(home, *args, "-p", "ROWS=60000", "-p", "MLP_EPOCHS=2", "--force", env=env)
    # a different model (slower learning rate, XGBoost only): registered as v2 and gated against v1 re-scored
    again = run_pipeline(
        home, "--only=04_train", "--only=05_evaluate", "-p", "XGB_LEARNING_RATE=0.05", "-p", "TRAIN_MLP=false", env=env
    )
    return home, {"BUNDLE_PATH": home / "data" / "bundle"}, again.stdout


def test_candidates_are_nested_runs_with_curves_models_and_lineage(mlflow_server, trained):
    home, _, _ = trained
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("fraud-detection-pipeline")
    runs = client.search_runs([experiment.experiment_id])
    first_run_id = json.loads(sorted((home / "runs").glob("2*/run.json"))[0].read_text())["mlflow_run_id"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == first_run_id]
    assert sorted(r.info.run_name for r in children) == [
        "keras_mlp_full", "keras_mlp_realtime_safe", "xgboost_full", "xgboost_realtime_safe",
    ]  # fmt: skip
    for child in children:
        assert child.data.tags["feature_spec_version"].startswith("fs-")
        assert len(child.data.tags["training_data_sha256"]) == 64
        assert 0 < child.data.metrics["validation_auprc"] <= 1
        curve = "validation_aucpr" if child.info.run_name.startswith("xgboost") else "validation_auprc"
        assert len(client.get_metric_history(child.info.run_id, curve)) >= 2
    xgb_run = next(r for r in children if r.info.run_name == "xgboost_full")
    model = client.search_logged_models(
        [experiment.experiment_id], filter_string=f"source_run_id='{xgb_run.info.run_id}'"
    )
    assert model and model[0].name == "model"


def test_registry_gate_and_champion_bundle_through_the_server(mlflow_server, trained, tmp_path):
    home, paths, second = trained
    assert "05_evaluate done" in second
    client = MlflowClient(mlflow_server)
    assert str(client.get_model_version_by_alias(MODEL, "challenger").version) == "2"
    assert client.get_model_version(MODEL, "1").tags["gate_decision"] == "promoted"
    decision = client.get_model_version(MODEL, "2").tags["gate_decision"]
    champion = str(client.get_model_version_by_alias(MODEL, "champion").version)
    outputs = steps(home / "runs" / "latest")["05_evaluate"]
    assert decision in {"promoted", "rejected"} and outputs.promoted is (decision == "promoted")
    assert champion == outputs.champion_version == ("2" if outputs.promoted else "1")
    assert "re-scored" in outputs.gate_reason
    assert client.get_model_version(MODEL, "2").tags["gate_reason"] == outputs.gate_reason
    assert json.loads((paths["BUNDLE_PATH"] / "bundle.json").read_text())["model_version"] == champion

    done = subprocess.run(
        [sys.executable, "-m", "lib", "score", "--input", str(REAL_SAMPLE), "--output", str(tmp_path / "s.csv")],
        cwd=PROJECT_ROOT, capture_output=True, text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "MLFLOW_TRACKING_URI": mlflow_server,
             "FRAUD_BUNDLE_STORE": str(tmp_path / "no-store")},  # the champion fetched from the registry
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{MODEL} v{champion}" in done.stdout and "AUPRC" in done.stdout
