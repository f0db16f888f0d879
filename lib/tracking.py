"""MLflow record of a pipeline run: one MLflow run per pipeline run id, resumed with it."""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import numpy as np
from mlflow.entities import Metric, RunStatus
from mlflow.tracking import MlflowClient

from lib import outputs as nb_outputs
from lib.config import Settings

RUN_ID_TAG = "pipeline_run_id"


def ensure_experiment(client: MlflowClient, settings: Settings) -> str:
    """The id of the project's experiment, created on first use (local artifact root with SQLite)."""
    experiment = client.get_experiment_by_name(settings.mlflow_experiment)
    if experiment is not None:
        return experiment.experiment_id
    artifact_root = settings.mlflow_artifact_root if settings.mlflow_tracking_uri.startswith("sqlite:") else None
    return client.create_experiment(settings.mlflow_experiment, artifact_location=artifact_root)


class PipelineTracker:
    """Creates (or reopens) the MLflow run of a pipeline run and logs notebooks, reports and metrics."""

    def __init__(self, settings: Settings, run_id: str, mlflow_run_id: str | None = None) -> None:
        self.client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
        self.tracking_uri = settings.mlflow_tracking_uri
        self.experiment_id = experiment_id = ensure_experiment(self.client, settings)
        if mlflow_run_id:
            self.client.update_run(mlflow_run_id, status="RUNNING")
            self.mlflow_run_id = mlflow_run_id
        else:
            run = self.client.create_run(experiment_id, run_name=run_id, tags={RUN_ID_TAG: run_id})
            self.mlflow_run_id = run.info.run_id

    def log_params(self, params: dict, tags: dict) -> None:
        logged = self.client.get_run(self.mlflow_run_id).data.params
        for key, value in params.items():
            if key not in logged:
                self.client.log_param(self.mlflow_run_id, key, value)
            elif logged[key] != str(value):  # MLflow params are immutable: a resumed run records the change
                self.client.set_tag(self.mlflow_run_id, f"override.{key}", str(value))
        for key, value in tags.items():
            self.client.set_tag(self.mlflow_run_id, key, value)

    def log_notebook(self, executed: Path, html: Path | None, outputs: dict, name: str) -> None:
        if executed.exists():
            self.client.log_artifact(self.mlflow_run_id, str(executed), "notebooks")
        if html is not None:
            self.client.log_artifact(self.mlflow_run_id, str(html), "reports")
        for key, value in nb_outputs.headline_metrics(outputs).items():
            self.client.log_metric(self.mlflow_run_id, f"{name}.{key}", value)
        for key, value in outputs.get("mlflow_tags", {}).items():  # e.g. the DVC data versions
            self.client.set_tag(self.mlflow_run_id, key, str(value))

    def finish(self, run_dir: Path, files: list[Path], ok: bool) -> None:
        for path in files:
            if path.exists():
                self.client.log_artifact(self.mlflow_run_id, str(path), "run")
        status = RunStatus.to_string(RunStatus.FINISHED if ok else RunStatus.FAILED)
        self.client.set_terminated(self.mlflow_run_id, status=status)

    def describe(self) -> dict:
        return {"tracking_uri": self.tracking_uri, "experiment_id": self.experiment_id, "run_id": self.mlflow_run_id}


def find_pipeline_run(tracking_uri: str, experiment: str, run_id: str):
    """The MLflow run of a pipeline run id (None if there is none)."""
    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.{RUN_ID_TAG} = '{run_id}'")
    return runs[0] if runs else None


def kernel_environment(settings: Settings, run_id: str, mlflow_run_id: str) -> dict[str, str]:
    """What a notebook's kernel needs to log into this pipeline run (read back by ``Settings``)."""
    return {
        "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "FRAUD_MLFLOW_EXPERIMENT": settings.mlflow_experiment,
        "FRAUD_MLFLOW_ARTIFACT_ROOT": settings.mlflow_artifact_root,
        "FRAUD_PIPELINE_RUN_ID": run_id,
        "FRAUD_MLFLOW_PARENT_RUN_ID": mlflow_run_id,
        "FRAUD_RUNS_DIR": str(settings.runs_dir),
    }


@contextmanager
def candidate_run(settings: Settings, name: str, tags: dict | None = None) -> Iterator[str]:
    """An active MLflow run for one model, nested under the pipeline's run when the runner started us.

    Opened on its own in JupyterLab (no ``FRAUD_MLFLOW_PARENT_RUN_ID``), the notebook gets top-level runs.
    """
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    experiment_id = ensure_experiment(MlflowClient(settings.mlflow_tracking_uri), settings)
    run_tags = {**({RUN_ID_TAG: settings.pipeline_run_id} if settings.pipeline_run_id else {}), **(tags or {})}
    parent = settings.mlflow_parent_run_id or None
    with mlflow.start_run(experiment_id=experiment_id, run_name=name, parent_run_id=parent, tags=run_tags) as run:
        yield run.info.run_id


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
        import keras
        from mlflow import keras as mlflow_keras

        # mlflow.keras.log_model(input_example=...) writes the example before creating the model folder
        # (mlflow/mlflow#16183, open), so the example is logged beside the model instead.
        info = mlflow_keras.log_model(
            candidate.model, name="model", signature=infer_signature(example, candidate.predict(example)),
            pip_requirements=[f"keras=={keras.__version__}"],
        )  # fmt: skip
        mlflow.log_dict({"columns": list(candidate.features), "data": example.tolist()}, "model_input_example.json")
    return info.model_uri
