"""MLflow record of a pipeline run: one MLflow run per pipeline run id, resumed with it."""

from pathlib import Path

from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from lib import outputs as nb_outputs
from lib.config import Settings

RUN_ID_TAG = "pipeline_run_id"


class PipelineTracker:
    """Creates (or reopens) the MLflow run of a pipeline run and logs notebooks, reports and metrics."""

    def __init__(self, settings: Settings, run_id: str, mlflow_run_id: str | None = None) -> None:
        self.client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
        self.tracking_uri = settings.mlflow_tracking_uri
        experiment = self.client.get_experiment_by_name(settings.mlflow_experiment)
        if experiment is None:
            artifact_root = settings.mlflow_artifact_root if self.tracking_uri.startswith("sqlite:") else None
            experiment_id = self.client.create_experiment(settings.mlflow_experiment, artifact_location=artifact_root)
        else:
            experiment_id = experiment.experiment_id
        self.experiment_id = experiment_id
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
