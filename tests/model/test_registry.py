"""The champion gate in a real MLflow registry (SQLite store): only a better challenger moves ``champion``."""

import pytest
from mlflow.tracking import MlflowClient

from lib.model import registry


@pytest.fixture
def client(tracking_uri):
    return MlflowClient(tracking_uri)


def new_version(client, name, tmp_path):
    experiment = client.get_experiment_by_name("gate-tests") or client.get_experiment(
        client.create_experiment("gate-tests", artifact_location=(tmp_path / "artifacts").as_uri())
    )
    run = client.create_run(experiment.experiment_id)
    return registry.register(client, name, (tmp_path / "model").as_uri(), run.info.run_id, {"test_auprc": "n/a"})


def aliases(client, name):
    return {alias: str(client.get_model_version_by_alias(name, alias).version) for alias in ("champion", "challenger")}


def test_first_model_becomes_champion_worse_does_not_move_it_better_does(client, tmp_path):
    name = f"gate-{tmp_path.name}"
    first = registry.gate(client, name, new_version(client, name, tmp_path), 0.90, None)
    assert first.promoted and "first model" in first.reason
    assert aliases(client, name) == {"champion": "1", "challenger": "1"}

    worse = registry.gate(client, name, new_version(client, name, tmp_path), 0.85, 0.90)
    assert not worse.promoted and worse.champion_version == "1" and "<=" in worse.reason
    assert aliases(client, name) == {"champion": "1", "challenger": "2"}
    assert client.get_model_version(name, "2").tags["gate_decision"] == "rejected"

    tie = registry.gate(client, name, new_version(client, name, tmp_path), 0.90, 0.90)
    assert not tie.promoted  # equal is not better: the champion stays

    better = registry.gate(client, name, new_version(client, name, tmp_path), 0.95, 0.90, "re-scored on test")
    assert better.promoted and better.champion_version == "4" and "re-scored on test" in better.reason
    assert aliases(client, name) == {"champion": "4", "challenger": "4"}
    assert client.get_model_version(name, "4").tags["gate_reason"] == better.reason
