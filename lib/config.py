"""Settings in one place: read from the environment (and ``.env``), with defaults for one machine."""

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Project settings. Environment variables win over these defaults."""

    model_config = SettingsConfigDict(env_prefix="FRAUD_", env_file=PROJECT_ROOT / ".env", extra="ignore")

    runs_dir: Path = PROJECT_ROOT / "runs"
    notebooks_dir: Path = PROJECT_ROOT / "notebooks"
    params_dir: Path = PROJECT_ROOT / "params"
    mlflow_tracking_uri: str = Field(
        default=f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}",
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "FRAUD_MLFLOW_TRACKING_URI"),
    )
    mlflow_artifact_root: str = (PROJECT_ROOT / "mlartifacts").as_uri()
    mlflow_experiment: str = "fraud-detection-pipeline"
    kernel_name: str = "python3"
    # set by the runner for the notebooks' kernels, so models log under the pipeline's MLflow run
    pipeline_run_id: str = ""
    mlflow_parent_run_id: str = ""
    registered_model: str = "paysim-fraud-detector"
    # serving (FastAPI twin, Chalice app, stream scorer)
    serving_model: str = "champion"  # a registry alias of registered_model, or a bundle folder
    bundle_cache: Path = Path.home() / ".cache" / "fraud-mlops" / "bundles"
    api_keys: str = ""  # comma-separated; never committed (environment, .env, a Kubernetes Secret)

    def run_dir(self) -> Path | None:
        """This pipeline run's folder (``runs/<run id>``) when a notebook runs inside one, else None."""
        return self.runs_dir / self.pipeline_run_id if self.pipeline_run_id else None

    def api_key_list(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()


def resolve(path: str | Path) -> Path:
    """A path parameter as given, or relative to the project root (so notebooks run from any cwd)."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else PROJECT_ROOT / path


def project_relative(path: str | Path) -> str:
    """``path`` relative to the project root when inside it, else as given (URLs too): what outputs record of a path.

    Outputs that name their input (manifests) then hash the same in every checkout of the project.
    """
    if "://" in str(path):
        return str(path)
    try:
        return Path(path).resolve().relative_to(PROJECT_ROOT).as_posix()
    except ValueError:
        return str(path)
