"""MLflow records of model candidates: one run per candidate (nested under the pipeline's run), curves, models."""

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager

import mlflow
import numpy as np
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from lib.config import Settings
from lib.model.evaluate import Scorecard

RUN_ID_TAG = "pipeline_run_id"


# MLflow 3's UI shows an experiment as model training (runs, metrics, models) when this tag says so;
# without it, it may infer the GenAI view (traces, prompts) and open there.
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def ensure_experiment(client: MlflowClient, settings: Settings) -> str:
    """The id of the project's experiment, created on first use (local artifact root with SQLite)."""
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is not None:
        return experiment.experiment_id
    artifact_root = settings.mlflow_artifact_root if settings.mlflow_tracking_uri.startswith("sqlite:") else None
    return client.create_experiment(settings.mlflow_experiment, artifact_location=artifact_root, tags=EXPERIMENT_KIND)


@contextmanager
def candidate_run(settings: Settings, name: str, tags: dict | None = None) -> Iterator[str]:
    """An active MLflow run for one model, nested under the pipeline's run when the runner started us.

    Opened on its own in JupyterLab (no ``FRAUD_MLFLOW_PARENT_RUN_ID``), the notebook gets top-level runs.
    """
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    experiment_id = ensure_experiment(MlflowClient(settings.mlflow_tracking_uri), settings)
    run_tags = {**({RUN_ID_TAG: settings.pipeline_run_id} if settings.pipeline_run_id else {}), **(tags or {})}
    if settings.notebook:  # the notebook is the run's source (MLflow would name the kernel's launcher)
        run_tags.update({"mlflow.source.name": settings.notebook, "mlflow.source.type": "NOTEBOOK"})
    parent = settings.mlflow_parent_run_id or None
    with mlflow.start_run(experiment_id=experiment_id, run_name=name, parent_run_id=parent, tags=run_tags) as run:
        yield run.info.run_id


def log_test_metrics(client: MlflowClient, records: dict[str, dict], scorecard: dict[str, Scorecard]) -> None:
    """Each candidate's test-window scorecard on its own MLflow run (``test_auprc``, ...), to sort runs by."""
    for name, card in scorecard.items():
        metrics = [
            Metric(f"test_{k}", float(v), int(time.time() * 1000), 0)
            for k, v in dataclasses.asdict(card).items()
            if k != "validation_auprc" and v is not None
        ]
        client.log_batch(records[name]["mlflow_run_id"], metrics=metrics)


def log_history(client: MlflowClient, mlflow_run_id: str, history: dict[str, list[float]]) -> None:
    """Per-iteration (or per-epoch) curves as metric steps, in batches MLflow accepts."""
    now = int(time.time() * 1000)
    metrics = [Metric(key, float(v), now, step) for key, values in history.items() for step, v in enumerate(values)]
    for start in range(0, len(metrics), 1000):
        client.log_batch(mlflow_run_id, metrics=metrics[start : start + 1000])


def log_candidate(run_id: str, candidate, example: np.ndarray, tags: dict[str, str]) -> str:
    """Params, curves, tags and the model (native format, signature, input example) of one candidate.

    Runs inside ``candidate_run``; returns the logged model's URI (``models:/<model_id>``).
    """
    import pandas as pd
    from mlflow.models import infer_signature

    client = MlflowClient(mlflow.get_tracking_uri())
    mlflow.log_params(candidate.params)
    log_history(client, run_id, candidate.history)
    mlflow.log_metrics(
        {"validation_auprc": candidate.validation_auprc, "best_iteration": candidate.best_iteration,
         "train_seconds": candidate.train_seconds}
    )  # fmt: skip
    mlflow.set_tags({"candidate": candidate.name, "kind": candidate.kind, "feature_set": candidate.feature_set, **tags})
    if candidate.kind == "xgboost":  # column-based signature: `mlflow models serve` accepts named columns
        import xgboost as xgb
        from mlflow import xgboost as mlflow_xgboost

        frame = pd.DataFrame(example, columns=list(candidate.features))
        info = mlflow_xgboost.log_model(
            candidate.model, name="model", signature=infer_signature(frame, candidate.predict(example)),
            input_example=frame, model_format="ubj", pip_requirements=[f"xgboost=={xgb.__version__}"],
        )  # fmt: skip
    else:  # Keras models take one float32 tensor (features in the feature set's order)
        from mlflow import keras as mlflow_keras

        from lib.model.train import keras_module

        keras = keras_module()

        # mlflow.keras.log_model(input_example=...) writes the example before creating the model folder
        # (mlflow/mlflow#16183, open), so the example is logged beside the model instead.
        info = mlflow_keras.log_model(
            candidate.model, name="model", signature=infer_signature(example, candidate.predict(example)),
            pip_requirements=[f"keras=={keras.__version__}"],
        )  # fmt: skip
        mlflow.log_dict({"columns": list(candidate.features), "data": example.tolist()}, "model_input_example.json")
    return info.model_uri


def log_candidates(settings: Settings, candidates: list, examples: dict[str, np.ndarray], lineage: dict) -> dict:
    """One MLflow run per candidate (``log_candidate``); returns ``{name: {mlflow_run_id, model_uri, **lineage}}``.

    ``examples`` holds a few validation rows per feature set, logged as each model's input example.
    """
    records = {}
    for candidate in candidates:
        with candidate_run(settings, candidate.name, lineage) as mlflow_run_id:
            model_uri = log_candidate(mlflow_run_id, candidate, examples[candidate.feature_set], lineage)
        records[candidate.name] = {"mlflow_run_id": mlflow_run_id, "model_uri": model_uri, **lineage}
    return records
