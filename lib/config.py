"""Settings in one place: read from the environment (and ``.env``), with defaults for one machine.

Apps, notebooks and the CLI read every setting through ``Settings``; the Chalice stage config and
the container environment feed it the same variables.
"""

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CHAMPION, CHALLENGER = "champion", "challenger"  # the registry aliases every path understands
REGISTRY_ALIASES = (CHAMPION, CHALLENGER)


# Known noise kept out of the reports and logs: TensorFlow's C++ and oneDNN lines, gRPC, tqdm's
# "IProgress not found" warning and bars, MLflow's artifact download bar and its INFO lines ("Creating
# initial MLflow database tables"). Set for the runner's own process and the notebooks' kernels, and for
# `python -m lib serve`; real warnings and errors still show.
QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "TF_ENABLE_ONEDNN_OPTS": "0",
    "GRPC_VERBOSITY": "ERROR",
    "TQDM_DISABLE": "1",
    "PYTHONWARNINGS": "ignore:IProgress not found",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
}


def _cache_root() -> Path:
    """The user's cache folder for this project (``$XDG_CACHE_HOME/fraud-mlops``): jars, bundles, runtimes."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fraud-mlops"


def comma_list(raw: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]`` (keys, hosts)."""
    return [part.strip() for part in raw.split(",") if part.strip()]


def _unprefixed(name: str) -> AliasChoices:
    """A setting read from its conventional variable (``KAFKA_BOOTSTRAP_SERVERS``) or ``FRAUD_<name>``."""
    return AliasChoices(name, f"FRAUD_{name}")


class Settings(BaseSettings):
    """Project settings. Environment variables win over these defaults."""

    model_config = SettingsConfigDict(
        env_prefix="FRAUD_", env_file=PROJECT_ROOT / ".env", extra="ignore", populate_by_name=True
    )

    runs_dir: Path = PROJECT_ROOT / "runs"
    notebooks_dir: Path = PROJECT_ROOT / "notebooks"
    params_dir: Path = PROJECT_ROOT / "params"
    cache_dir: Path = Field(default_factory=_cache_root)
    mlflow_tracking_uri: str = Field(
        default=f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}", validation_alias=_unprefixed("MLFLOW_TRACKING_URI")
    )
    mlflow_artifact_root: str = (PROJECT_ROOT / "mlartifacts").as_uri()
    mlflow_experiment: str = "fraud-detection-pipeline"
    kernel_name: str = "python3"
    # set by the runner for the notebooks' kernels, so models log under the pipeline's MLflow run
    pipeline_run_id: str = ""
    mlflow_parent_run_id: str = ""
    notebook: str = ""  # the notebook a kernel runs (relative to the project), set by the runner
    registered_model: str = "paysim-fraud-detector"
    # serving (FastAPI twin, Chalice app, stream scorer): lib.serving.source says what a model setting may name
    serving_model: str = "champion"  # a registry alias, a bundle store or folder, or an API's URL
    bundle_store: Path = PROJECT_ROOT / "data" / "bundles"  # where 05_evaluate publishes bundles and aliases
    # which model.so to load (docs/serving.md, "Who may write the bundle store"): "bundle", a library whose SHA-256 is
    # the one its bundle.json records; "registry", only one whose SHA-256 the registry's version tag records
    # (kept outside the store; where no registry can be asked, none is loaded); "never": the booster always
    compiled_models: Literal["bundle", "registry", "never"] = "bundle"
    serving_workers: int = Field(default=1, ge=1)  # `serve`: uvicorn worker processes (one per core)
    serving_reload_interval: float = Field(default=5.0, gt=0)  # `serve`: seconds between checks of a store's aliases
    api_keys: str = ""  # comma-separated; never committed (environment, .env, a Kubernetes Secret)
    api_keys_ssm_parameter: str = ""  # Lambda: an SSM SecureString holding the comma-separated keys
    api_keys_ttl_seconds: float = 300.0  # Lambda: how long a warm container trusts the SSM keys it read
    lambda_authorizer: bool = False  # `chalice deploy/package` of the prod stage: API Gateway checks keys first
    # services the pipeline talks to when they are set (empty: an embedded one, or none)
    kafka_bootstrap_servers: str = Field(default="", validation_alias=_unprefixed("KAFKA_BOOTSTRAP_SERVERS"))
    pushgateway_url: str = Field(default="", validation_alias=_unprefixed("PUSHGATEWAY_URL"))
    # the online feature store (lib.serving.online; docs/streaming.md): the APIs read each transaction's entity
    # features from it when set (unreachable: 503); with store_record they also record what they scored
    redis_url: str = Field(default="", validation_alias=_unprefixed("REDIS_URL"))
    store_record: bool = False
    store_log_share: float = Field(default=0.01, ge=0, le=1)  # of the served vectors logged for the skew check
    store_label_delay: int = Field(default=2, ge=0)  # lib.features.LABEL_DELAY_STEPS (tests/serving/test_online.py)
    store_step_seconds: float = Field(default=3600.0, gt=0)
    store_prefix: str = "fraud:"

    @property
    def bundle_cache(self) -> Path:
        """Where registry bundles are downloaded to."""
        return self.cache_dir / "bundles"

    def run_dir(self) -> Path | None:
        """This pipeline run's folder (``runs/<run id>``) when a notebook runs inside one, else None."""
        return self.runs_dir / self.pipeline_run_id if self.pipeline_run_id else None

    def api_key_list(self) -> list[str]:
        return comma_list(self.api_keys)


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
