"""Shared fixtures. Tests are grouped by what they check: code/, data/, integration/ (and nbval runs notebooks/)."""

import os
import shutil
from pathlib import Path

import nbformat
import pytest

from lib.config import PROJECT_ROOT, Settings

REAL_SAMPLE = PROJECT_ROOT / "data" / "reference" / "paysim_real_sample.csv"
SHARED_SAMPLE = PROJECT_ROOT.parent / "shared" / "data" / "paysim_real_sample.csv"


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
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
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
