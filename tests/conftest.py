"""Shared fixtures. Tests are grouped by what they check: code/, data/, integration/ (and nbval runs notebooks/)."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import nbformat
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lib import features
from lib.config import PROJECT_ROOT, Settings
from lib.data.processed import KEPT_COLUMNS, SplitWindows
from lib.data.simulate import simulate_table

REAL_SAMPLE = PROJECT_ROOT / "data" / "reference" / "paysim_real_sample.csv"
GIT = ["git", "-c", "user.name=tests", "-c", "user.email=tests@localhost", "-c", "commit.gpgsign=false"]


def copy_project(dest: Path) -> Path:
    """A copy of this checkout's working tree (tracked files and untracked ones git does not ignore),
    committed as one git revision, for tests that run the pipeline: its data/, runs/, mlflow.db,
    mlartifacts/ and DVC cache are the copy's, never the checkout's. Run it with ``PYTHONPATH=<copy>``
    so that the copy's ``lib`` comes before the editable install's."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=PROJECT_ROOT, capture_output=True, check=True
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = PROJECT_ROOT / name
        if source.is_symlink() or source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name, follow_symlinks=False)
    for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "the checkout under test"]):
        subprocess.run([*GIT, *command], cwd=dest, check=True, capture_output=True)
    return dest


def project_env(project: Path, **extra: str) -> dict[str, str]:
    """The environment a user's shell gives commands run in ``project`` (a copy): its lib first, its own HOME."""
    return {
        "PATH": f"{PROJECT_ROOT / '.venv' / 'bin'}:/usr/bin:/bin",
        "PYTHONPATH": str(project),
        "HOME": str(project / ".home"),
        # the Kafka jars 06_stream's embedded broker needs stay in the real cache (fetched once)
        "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")),
        **extra,
    }


SHARED_SAMPLE = PROJECT_ROOT.parent / "shared" / "data" / "paysim_real_sample.csv"


def steps(run_dir: Path) -> dict:
    """A run's recorded outputs (``runs/<id>/outputs.json``), each pipeline step's as its typed record."""
    from lib.pipeline import records

    recorded = json.loads((run_dir / "outputs.json").read_text())
    return {name: records.load(name, values) for name, values in recorded.items()}


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory) -> str:
    """One SQLite MLflow store for the test session (creating its tables takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture
def make_settings(tmp_path, tracking_uri):
    """Settings pointing runs, notebooks and MLflow artifacts at temporary folders."""

    def make(notebooks_dir: Path, params_dir: Path | None = None) -> Settings:
        return Settings(
            runs_dir=tmp_path / "runs",
            notebooks_dir=notebooks_dir,
            params_dir=params_dir or PROJECT_ROOT / "params",
            mlflow_tracking_uri=tracking_uri,
            mlflow_artifact_root=(tmp_path / "artifacts").as_uri(),
            mlflow_experiment=f"test-{tmp_path.name}",
        )

    return make


def write_notebook(path: Path, parameters: str, *cells: str) -> Path:
    """A small pipeline-style notebook: a tagged parameters cell, then code cells."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(parameters)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem}"), params]
    nb.cells += [nbformat.v4.new_code_cell(c) for c in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))
    return path


def chromium_paths() -> tuple[str, str] | None:
    """Debian's Chromium + ChromeDriver, or the Chrome + driver that GitHub's Ubuntu runners carry."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not driver and os.environ.get("CHROMEWEBDRIVER"):
        driver = shutil.which("chromedriver", path=os.environ["CHROMEWEBDRIVER"])
    return (browser, driver) if browser and driver else None


@pytest.fixture
def browser(tmp_path):
    """Headless Debian Chromium driven by Selenium (no browser download)."""
    paths = chromium_paths()
    if paths is None:
        message = "Chromium not installed: apt-get install chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(paths[1]), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


# Processed splits for model and API tests, built without Spark by the NumPy evaluator of the same
# feature spec, in the Spark job's layout (``split=<name>/*.parquet`` with the kept columns and every
# feature); tests/data/test_features.py proves the two evaluators agree, so these tests need no JVM.
def write_processed(raw: pa.Table, folder, windows: SplitWindows | None = None) -> None:
    columns = {name: raw.column(name).to_numpy(zero_copy_only=False) for name in raw.column_names}
    matrix = features.compute(columns, "full")
    step = columns["step"]
    for split, (lo, hi) in (windows or SplitWindows(300, 350)).as_dict().items():
        rows = (step >= lo) & (step <= hi)
        table = {c: pa.array(columns[c][rows]) for c in KEPT_COLUMNS}
        for j, spec in enumerate(features.FEATURES):
            values = matrix[rows, j]
            table[spec.name] = pa.array(values.astype(np.int8) if spec.dtype == "int8" else values)
        (folder / f"split={split}").mkdir(parents=True)
        pq.write_table(pa.table(table), folder / f"split={split}" / "part-00000.parquet")


@pytest.fixture(scope="session")
def raw_table() -> pa.Table:
    return simulate_table(120_000, seed=11)


@pytest.fixture(scope="session")
def processed(tmp_path_factory, raw_table):
    folder = tmp_path_factory.mktemp("processed")
    write_processed(raw_table, folder)
    return folder


def bundle_info(**changes):
    """The metadata of a test bundle (the ``bundle.json`` contract), with ``changes`` applied."""
    from lib.serving.scoring import BundleInfo

    values = dict(
        model_name="paysim-fraud-detector", model_version="3", feature_set="full",
        feature_spec_version=features.FEATURE_SPEC_VERSION, features=list(features.feature_names("full")),
        threshold=0.5, training_data_sha256="abc", candidate="xgboost_full", test_auprc=0.99,
    )  # fmt: skip
    return BundleInfo(**{**values, **changes})


@pytest.fixture(scope="session")
def bundle(processed, tmp_path_factory) -> Path:
    """A serving bundle of a small XGBoost model trained on ``processed`` (what 05_evaluate exports)."""
    from lib.model import train
    from lib.serving import scoring

    windows = {s: train.load_matrix(processed, s) for s in ("train", "validation")}
    candidate = train.fit_xgboost(windows["train"], windows["validation"], seed=5, max_rounds=80)
    info = bundle_info(candidate=candidate.name, threshold=0.2)
    return scoring.export_bundle(tmp_path_factory.mktemp("bundle") / "bundle", candidate.model, info)


@pytest.fixture(scope="session")
def model_versions(processed, bundle, tmp_path_factory):
    """Bundles v1 (no skill: trained on shuffled labels) and v2 (the test bundle's model), as 05 exports
    them. Simulated frauds are easy: any model trained on the true labels catches every one of them."""
    import dataclasses

    from lib.model import train
    from lib.serving import scoring

    folder = tmp_path_factory.mktemp("versions")
    rng = np.random.default_rng(0)
    windows = {s: train.load_matrix(processed, s) for s in ("train", "validation")}
    shuffled = {s: dataclasses.replace(w, y=rng.permutation(w.y)) for s, w in windows.items()}
    weak = train.fit_xgboost(shuffled["train"], shuffled["validation"], seed=5, max_rounds=10)
    strong = scoring.Scorer.from_folder(bundle).booster
    return {
        version: scoring.export_bundle(folder / f"v{version}", model, bundle_info(model_version=version, threshold=0.2))
        for version, model in (("1", weak.model), ("2", strong))
    }


@pytest.fixture(scope="session")
def kafka(tmp_path_factory):
    """A real Apache Kafka broker (KRaft, one node) on 127.0.0.1 for the session."""
    from lib.local.kafka import LocalBroker

    with LocalBroker(tmp_path_factory.mktemp("kafka")) as broker:
        yield broker


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A real Redis (Debian's redis-server) on 127.0.0.1 for the session, as ``redis-local`` runs it."""
    from lib.local.redis import LocalRedis

    with LocalRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def online_store(redis_server, request):
    """An ``OnlineStore`` on the session's Redis under a key prefix of the test's own (``label_delay`` 3)."""
    from lib.serving.online import OnlineStore

    return OnlineStore(redis_server.url, label_delay=3, prefix=f"t{abs(hash(request.node.nodeid))}:")


@pytest.fixture(scope="session")
def spark_cluster(tmp_path_factory):
    """A real Spark standalone cluster on 127.0.0.1: a master and 2 workers (1 core, 2 GB each), as
    ``python -m lib spark-local start`` runs it."""
    from lib.local.spark import LocalCluster

    with LocalCluster(tmp_path_factory.mktemp("spark-cluster"), workers=2, cores=1, memory="2g") as cluster:
        yield cluster
