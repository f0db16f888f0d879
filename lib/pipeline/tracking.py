"""MLflow record of a pipeline run: one MLflow run per pipeline run id, resumed with it."""

from pathlib import Path

from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

from lib.config import Settings
from lib.model.tracking import RUN_ID_TAG, ensure_experiment
from lib.pipeline import outputs as nb_outputs


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
        """The executed notebook, its HTML, the files it linked (``links``: reports in the run folder),
        its numeric outputs as metrics and its ``mlflow_tags``."""
        if executed.exists():
            self.client.log_artifact(self.mlflow_run_id, str(executed), "notebooks")
        if html is not None:
            self.client.log_artifact(self.mlflow_run_id, str(html), "reports")
        for href in outputs.get("links", {}).values():
            linked = executed.parent / href
            if linked.is_file():
                self.client.log_artifact(self.mlflow_run_id, str(linked), f"reports/{Path(href).parent.as_posix()}")
        for key, (value, _unit) in nb_outputs.figures(name, outputs).items():
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
