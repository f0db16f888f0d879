"""The README's run command on a small size: a finished run whose index links every report, checked in Chromium."""

import json
import subprocess
import sys

import pytest

from lib.config import PROJECT_ROOT
from lib.runner import discover

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    """``python run_pipeline.py`` as a user runs it, with runs and MLflow in a temporary folder."""
    home = tmp_path_factory.mktemp("pipeline")
    env = {
        "PATH": f"{PROJECT_ROOT / '.venv' / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "FRAUD_RUNS_DIR": str(home / "runs"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "FRAUD_MLFLOW_ARTIFACT_ROOT": (home / "artifacts").as_uri(),
    }
    command = [sys.executable, "run_pipeline.py", "-p", "ROWS=50000", "-p", f"RAW_PATH={home / 'raw.parquet'}"]
    done = subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout + done.stderr
    return home / "runs" / "latest", done.stdout


def test_run_record_is_complete(pipeline_run):
    run_dir, stdout = pipeline_run
    assert "finished" in stdout and "cell 1/" in stdout  # plain progress lines when not a TTY
    names = [p.stem for p in discover(PROJECT_ROOT / "notebooks")]
    index = (run_dir / "index.html").read_text()
    for name in names:
        assert (run_dir / f"{name}.ipynb").exists() and (run_dir / f"{name}.html").exists()
        assert f'href="{name}.html"' in index
    acquired = json.loads((run_dir / "outputs.json").read_text())["01_acquire"]
    assert acquired["rows"] == 50_000 and acquired["signatures_within_5pp"] is True


@pytest.mark.browser
def test_index_and_every_linked_report_load_in_chromium(pipeline_run, browser):
    run_dir, _ = pipeline_run
    broken_images = "return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
    browser.get((run_dir / "index.html").as_uri())
    assert "Pipeline run" in browser.title
    links = [a.get_attribute("href") for a in browser.find_elements("tag name", "a")]
    reports = [href for href in links if href.endswith((".html", ".ipynb", ".json", ".yaml"))]
    assert len([r for r in reports if r.endswith(".html")]) == len(discover(PROJECT_ROOT / "notebooks"))
    assert browser.execute_script(broken_images) == []
    for href in reports:
        browser.get(href)
        body = browser.find_element("tag name", "body").text
        assert body.strip(), f"{href} rendered empty"
        assert "ERR_FILE_NOT_FOUND" not in browser.page_source, href
        if href.endswith(".html"):
            assert browser.execute_script(broken_images) == [], href
            images = browser.execute_script("return document.images.length")
            if "01_acquire" in href:
                assert images >= 2  # the fidelity plots are really there
